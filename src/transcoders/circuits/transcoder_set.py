"""A transcoder set: one transcoder per MLP layer of one model, loaded as a unit, or a cross-layer transcoder.

``transcoders train --layers all --out DIR`` writes one (``DIR/layer_NN/`` run folders). A set may also cover only
some layers: circuits then treat the MLPs without a transcoder as frozen error terms (their whole output is an
error node), which is exact but explains less.

A cross-layer transcoder (``train --kind clt``) is a set too: layer i's features read MLP i's input and write one
decoder block to MLP i's output and to every later layer's of the CLT. Circuits see both through one view,
:meth:`TranscoderSet.writers`: which layers' features write into MLP m's output, through which decoder block. A
per-layer transcoder is the case where the only writer of MLP m is transcoder m.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from ..dictionary import Dictionary, load_dictionary, read_config
from ..dictionary import runs as R
from ..dictionary.clt import check_whole_clt
from ..errors import CheckpointError, CircuitError


class Writer(NamedTuple):
    """Features of layer ``source`` writing into one MLP's output: ``W [width, d_model]`` (a view of the decoder),
    ``b [d_model]``."""

    source: int
    W: Tensor
    b: Tensor


class TranscoderSet:
    """``{layer: transcoder}`` for one model; every member reads ``blocks.L.mlp.in`` and imitates ``blocks.L.mlp.out``
    (a CLT's layer: that and later layers' MLP outputs)."""

    def __init__(self, transcoders: dict[int, Dictionary], *, model: str, path: Path | None = None):
        if not transcoders:
            raise CircuitError("a transcoder set needs at least one transcoder")
        for layer, tc in transcoders.items():
            cfg = tc.cfg
            if cfg.kind not in ("transcoder", "skip-transcoder", "clt"):
                raise CircuitError(
                    f"layer {layer} holds a {cfg.kind}, not a transcoder: circuits need transcoders "
                    "(train them with `transcoders train --layers all --kind transcoder`)"
                )
            if (cfg.hook_in, cfg.hook_out) != (f"blocks.{layer}.mlp.in", f"blocks.{layer}.mlp.out"):
                raise CircuitError(
                    f"layer {layer}'s transcoder maps {cfg.hook_in} -> {cfg.hook_out}; circuits need "
                    f"blocks.{layer}.mlp.in -> blocks.{layer}.mlp.out"
                )
        try:
            check_whole_clt([tc.cfg for tc in transcoders.values()], "trace")
        except CheckpointError as err:
            raise CircuitError(str(err)) from None
        self.transcoders = dict(sorted(transcoders.items()))
        self.model = model
        self.path = path
        self.is_clt = any(tc.cfg.kind == "clt" for tc in self.transcoders.values())
        self._writers: dict[int, list[Writer]] = {}
        for i, tc in self.transcoders.items():
            blocks = tc.W_dec.view(tc.width, len(tc.cfg.targets), -1)
            biases = tc.b_dec.view(len(tc.cfg.targets), -1)
            for j, m in enumerate(tc.cfg.targets):
                self._writers.setdefault(m, []).append(Writer(i, blocks[:, j], biases[j]))

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> TranscoderSet:
        """A set folder (``layer_NN/`` run folders inside) or a single run folder."""
        path = Path(path)
        if not path.is_dir():
            raise CircuitError(f"{path} does not exist: train a set with `transcoders train --layers all --out {path}`")
        runs = [path] if R.is_run(path) else R.layer_runs(path)
        if not runs:
            raise CircuitError(f"{path} holds no finished transcoders (neither a run nor a set of layer runs): train "
                               f"a set with `transcoders train --layers all --out {path}`")
        configs = {run: read_config(run) for run in runs}
        models = {cfg.model for cfg in configs.values()}
        if len(models) > 1:
            raise CircuitError(f"{path} mixes transcoders of different models ({', '.join(sorted(models))}): use one model's set")
        transcoders: dict[int, Dictionary] = {}
        for run, cfg in configs.items():
            if cfg.layer in transcoders:
                raise CircuitError(f"{path} holds two transcoders for layer {cfg.layer}: keep one")
            transcoders[cfg.layer] = load_dictionary(run, device=device).eval()
        for tc in transcoders.values():
            tc.requires_grad_(False)
        return cls(transcoders, model=models.pop(), path=path)

    @property
    def layers(self) -> list[int]:
        return list(self.transcoders)

    def __contains__(self, layer: int) -> bool:
        return layer in self.transcoders

    def __getitem__(self, layer: int) -> Dictionary:
        return self.transcoders[layer]

    def get(self, layer: int) -> Dictionary | None:
        return self.transcoders.get(layer)

    def writers(self, layer: int) -> list[Writer]:
        """Whose features write into MLP ``layer``'s output (none: the MLP is a frozen error term)."""
        return self._writers.get(layer, [])

    def targets(self, layer: int) -> list[int]:
        """The MLP outputs that layer ``layer``'s features write into (its own; a CLT's: later ones too)."""
        return self.transcoders[layer].cfg.targets

    def decode(self, layer: int, codes: dict[int, Tensor], x: Tensor | None = None) -> Tensor | None:
        """MLP ``layer``'s output as the set reconstructs it from the codes ``{source layer: [..., width]}`` of every
        writer (and ``x``, the MLP's input, for a skip transcoder's skip path); None when nothing writes there."""
        ws = self.writers(layer)
        if not ws:
            return None
        y = codes[ws[0].source].to(ws[0].W.dtype) @ ws[0].W + ws[0].b
        for w in ws[1:]:
            y = y + codes[w.source].to(w.W.dtype) @ w.W + w.b
        tc = self.transcoders.get(layer)
        if tc is not None and tc.W_skip is not None:
            assert x is not None, "a skip transcoder needs its input to decode"
            y = y + x.to(tc.W_skip.dtype) @ tc.W_skip.T
        return y

    def check_model(self, n_layers: int, d_model: int) -> None:
        for layer, tc in self.transcoders.items():
            if not 0 <= layer < n_layers:
                raise CircuitError(f"the set has a transcoder for layer {layer}, but the model has layers 0-{n_layers - 1}")
            if (tc.cfg.d_in, tc.cfg.d_out) != (d_model, d_model * len(tc.cfg.targets)):
                raise CircuitError(
                    f"layer {layer}'s transcoder is {tc.cfg.d_in} -> {tc.cfg.d_out} wide but the model's d_model is "
                    f"{d_model}: the set was trained for another model"
                )
            if max(tc.cfg.targets) >= n_layers:
                raise CircuitError(f"layer {layer}'s transcoder writes to layers {tc.cfg.targets}, but the model has "
                                   f"layers 0-{n_layers - 1}")

    def __repr__(self) -> str:
        return f"TranscoderSet(model={self.model!r}, layers={self.layers}{', clt' if self.is_clt else ''})"
