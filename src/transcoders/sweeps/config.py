"""The settings of ``transcoders sweep`` (its grid) and ``transcoders tune`` (its target): a module that imports
nothing heavy, so the command line can build its parsers without torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TranscodersError
from ..flags import opt

TUNE_FILE = "tune.json"
TUNE_PLOT = "tune.png"


@dataclass
class TuneTarget:
    """What ``transcoders tune`` aims for and how it searches (its own flags; the rest are ``train``'s)."""

    target_ce_recovered: float = opt(0.0, "CE recovered (against mean ablation of the MLP) to reach, e.g. 0.9 (0: "
                                     "use --target-fvu)")
    target_fvu: float = opt(0.0, "fraction of variance unexplained to get under, e.g. 0.2 (0: use "
                            "--target-ce-recovered)")
    proxy_tokens: int = opt(250_000, "training tokens of each short proxy run")
    ladder: str = opt("8,16,32,64,128,256", "L0 values tried first, ascending (k of topk/batchtopk; the target L0 of "
                      "relu/jumprelu)")
    refine: int = opt(2, "bisection steps between the last L0 of the ladder that misses and the first that reaches")
    max_expansion: int = opt(32, "widen (doubling the width) up to this x d_model when no L0 of the ladder reaches "
                             "the target")
    eval_tokens: int = opt(16384, "held-out tokens every proxy run and the final run are evaluated on")

    def metric(self) -> tuple[str, float, str]:
        """(row key, target, 'ge' | 'le') for the chosen target; a one-line error unless exactly one is set."""
        if (self.target_ce_recovered > 0) == (self.target_fvu > 0):
            raise TranscodersError("give exactly one target: --target-ce-recovered (e.g. 0.9) or --target-fvu "
                                   "(e.g. 0.2)")
        if self.target_ce_recovered > 0:
            if self.target_ce_recovered >= 1:
                raise TranscodersError(f"--target-ce-recovered {self.target_ce_recovered:g} is out of reach: give a "
                                       "fraction below 1, e.g. 0.9")
            return "ce_recovered_mean", self.target_ce_recovered, "ge"
        return "fvu", self.target_fvu, "le"


@dataclass
class SweepGrid:
    """The axes of a sweep; every other flag of ``transcoders train`` applies to all its runs."""

    kinds: str = opt("transcoder,skip-transcoder,sae", "comma list of kinds (transcoder, skip-transcoder, sae, and "
                     "sae-mlp-in / sae-mlp-out for an SAE on that site whatever --sae-site says)")
    ks: str = opt("16,32,64", "comma list of k for --activation topk/batchtopk")
    l1s: str = opt("", "comma list of λ for relu/jumprelu (used when --target-l0s is empty)")
    target_l0s: str = opt("", "comma list of target L0 for relu/jumprelu (the λ controller lands each)")
    widths: str = opt("", "comma list of widths (empty: --expansion x d_model)")
    eval_tokens: int = opt(32768, "held-out tokens every run is evaluated on")
