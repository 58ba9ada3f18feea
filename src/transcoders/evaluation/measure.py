"""Evaluate dictionaries on held-out text: sparsity, reconstruction, and fidelity when spliced in.

Two passes over the evaluation split:

1. per batch, the clean model (recording each layer's MLP input and output) and the
   model with every dictionary spliced in at once: CE clean / spliced, KL(clean ‖ spliced),
   and per dictionary L0, FVU, MSE and feature firing counts (from the clean MLP input);
2. the model with those MLPs mean-ablated (mean MLP output over the split) and zero-ablated.

Both passes start at the lowest replaced layer: the clean pass records the residual stream entering that
block, and the spliced and ablated forwards skip the blocks below it (they are unchanged there) and read the
recording instead (``--full-forwards`` runs them from the embeddings: the same numbers, more compute).

Special-token (BOS) positions are not reconstructed: training never sees them, and
their MLP output keeps the model's own value in every condition. Next-token losses
are averaged over positions whose target is an ordinary token.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.activations import special_token_ids
from ..data.packing import load_split
from ..dictionary import Dictionary
from ..dictionary.clt import blocks, check_whole_clt, reconstruct
from ..dictionary.runs import METRICS_FILE, open_runs
from ..models import LoadedModel, load_model, patch_mlp
from ..models.hooks import first_input, start_at
from ..paths import atomic_write_json
from .config import EvalConfig

DENSE_THRESHOLD = 0.1


@dataclass
class _Acc:
    """Running sums for one dictionary."""

    width: int
    n: int = 0
    l0: float = 0.0
    sq_err: float = 0.0
    sum_y: torch.Tensor | None = None
    sum_y2: float = 0.0
    fired: torch.Tensor | None = None

    def add(self, y: torch.Tensor, y_hat: torch.Tensor, z: torch.Tensor) -> None:
        self.n += y.shape[0]
        self.l0 += (z > 0).sum().item()
        self.sq_err += (y - y_hat).pow(2).sum().item()
        sy = y.sum(0, dtype=torch.float64)
        self.sum_y = sy if self.sum_y is None else self.sum_y + sy
        self.sum_y2 += y.double().pow(2).sum().item()
        f = (z > 0).sum(0)
        self.fired = f if self.fired is None else self.fired + f

    def metrics(self) -> dict:
        assert self.sum_y is not None and self.fired is not None, "no tokens were added"
        total_var = self.sum_y2 - (self.sum_y.pow(2).sum().item() / self.n)
        freq = self.fired.double() / self.n
        return {
            "l0": self.l0 / self.n,
            "fvu": self.sq_err / total_var,
            "mse": self.sq_err / self.n,
            "dead_fraction": (freq == 0).double().mean().item(),
            "dense_fraction": (freq > DENSE_THRESHOLD).double().mean().item(),
            "n_tokens": self.n,
        }


class _NextTokenLoss:
    """Sum of next-token CE over positions whose target is an ordinary token."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.n = 0

    def add(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        lp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        ce = -lp.gather(-1, targets[:, 1:, None]).squeeze(-1)
        self.sum += ce[valid].sum().item()
        self.n += int(valid.sum())
        return lp

    @property
    def mean(self) -> float:
        return self.sum / max(self.n, 1)


def evaluate(
    runs: Sequence[str | Path],
    cfg: EvalConfig | None = None,
    *,
    lm: LoadedModel | None = None,
    ctx_len: int | None = None,
    progress: bool = True,
    write: bool = True,
    **settings: Any,
) -> dict:
    """Evaluate runs on held-out text.

    ``cfg`` (or its fields as keywords, e.g. ``tokens=8192``) says what to read and how to splice: every run in at
    once (one per layer), and with ``each`` also each run alone (a per-layer table; ``each_only`` for runs that
    share a layer, like a sweep's). The clean pass, the per-dictionary metrics and the ablations of each layer set
    are computed once and shared. ``ctx_len`` defaults to the runs' training context length.

    Returns ``{"runs": {path: metrics (+ "alone": fidelity)}, "fidelity": together-fidelity or None,
    "groups": [fidelity per spliced group]}``; with ``write``, each run's ``metrics.json``.
    """
    cfg = replace(cfg or EvalConfig(), **settings)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    opened = open_runs(runs, one_per_layer=cfg.together, what="evaluate", clt=True)
    check_whole_clt(opened.configs, "evaluate")
    lm = lm or load_model(opened.model)
    dicts = opened.load(expect_model=lm.name)
    for d in dicts:
        lm.adapter.check_layer(d.cfg.layer)
    ctx_len = ctx_len or opened.ctx_len or 128
    n_ctx = max(1, cfg.tokens // ctx_len)
    contexts = load_split(cfg.corpus, lm.tokenizer, "eval", ctx_len=ctx_len, max_tokens=n_ctx * ctx_len,
                          text_column=cfg.text_column)
    ev = _Evaluation(lm, dicts, _splice_groups(len(dicts), cfg), contexts.tokens[:n_ctx], cfg.batch,
                     reuse=not cfg.full_forwards)
    ev.run(progress)
    result = ev.result(opened.dirs, cfg)
    if write:
        for r in opened.dirs:
            m = result["runs"][str(r)]
            fid = result["fidelity"] or m["alone"]
            atomic_write_json(r / METRICS_FILE, {**m, "fidelity": fid, "spliced_with": fid["spliced_runs"]})
    return result


def _splice_groups(n_runs: int, cfg: EvalConfig) -> list[list[int]]:
    """Which runs go in together in each spliced pass: all of them, and/or each alone (once, for a single run)."""
    groups = [list(range(n_runs))] if cfg.together else []
    if cfg.alone and not (cfg.together and n_runs == 1):
        groups += [[i] for i in range(n_runs)]
    return groups


class _Evaluation:
    """The running sums of one evaluation: per dictionary, per spliced group and per ablated layer set."""

    def __init__(self, lm: LoadedModel, dicts: list[Dictionary], groups: list[list[int]], ids: torch.Tensor,
                 batch: int, reuse: bool = True):
        self.lm, self.dicts, self.groups, self.ids, self.batch = lm, dicts, groups, ids, batch
        self.layers = [d.cfg.layer for d in dicts]
        self.all_layers = sorted(set(self.layers))
        # a cross-layer transcoder: a group replaces its layers' MLP outputs, each read from every CLT layer below
        self.clt = any(d.cfg.kind == "clt" for d in dicts)
        self.layer_sets = sorted({self.group_layers(g) for g in groups})
        # the blocks whose clean input is recorded (per batch) for the edited passes to start from
        lows = {self.all_layers[0]} if self.clt else {ls[0] for ls in self.layer_sets}
        self.starts = sorted(low for low in lows if low > 0) if reuse else []
        self.resid: list[dict[int, torch.Tensor]] = []
        self.tuple_output = False  # what the model's blocks return (a one-tuple before transformers 4.54)
        self.special = torch.tensor(sorted(special_token_ids(lm.tokenizer)), dtype=torch.long)
        self.accs = [_Acc(d.width) for d in dicts]
        self.ce_clean = _NextTokenLoss()
        self.ce_spliced = [_NextTokenLoss() for _ in groups]
        self.kl_sum = [0.0 for _ in groups]
        self.ce_mean = {ls: _NextTokenLoss() for ls in self.layer_sets}
        self.ce_zero = {ls: _NextTokenLoss() for ls in self.layer_sets}

    def group_layers(self, g: list[int]) -> tuple[int, ...]:
        return tuple(sorted({self.layers[i] for i in g}))

    def batches(self):
        for s in range(0, self.ids.shape[0], self.batch):
            ids = self.ids[s : s + self.batch]
            keep = ~torch.isin(ids, self.special)  # positions that get reconstructed
            yield ids, keep, keep[:, 1:]  # ... and the next-token targets that count

    def start(self, b: int, layers: tuple[int, ...]) -> tuple[int, torch.Tensor, bool] | None:
        """Where an edited pass of batch ``b`` that changes ``layers`` can start: its lowest layer, from the
        clean pass's recording (None: from the embeddings)."""
        low = self.all_layers[0] if self.clt else layers[0]  # a CLT's lower layers write into the replaced ones
        return (low, self.resid[b][low], self.tuple_output) if low in self.starts else None

    def run(self, progress: bool) -> None:
        steps = (self.ids.shape[0] + self.batch - 1) // self.batch
        bar = tqdm(total=steps * (1 + len(self.groups) + 2 * len(self.layer_sets)), desc="eval", unit="fwd",
                   disable=not progress, dynamic_ncols=True)
        with torch.inference_mode():
            out_sum = {layer: torch.zeros((), dtype=torch.float64) for layer in self.all_layers}
            out_n = 0
            for b, (ids, keep, valid) in enumerate(self.batches()):  # pass 1: clean, then each spliced group
                rec = self.clean_and_spliced(b, ids, keep, valid, bar)
                for layer in self.all_layers:
                    out_sum[layer] = out_sum[layer] + rec[layer][1][keep].sum(0, dtype=torch.float64)
                out_n += int(keep.sum())
            means = {layer: (s / out_n).float() for layer, s in out_sum.items()}
            for b, (ids, keep, valid) in enumerate(self.batches()):  # pass 2: mean- and zero-ablation of each group's MLPs
                self.ablations(b, ids, keep, valid, means, bar)
        bar.close()

    def clean_and_spliced(self, b, ids, keep, valid, bar) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """The clean forward (recording every layer's MLP input and output, and the residual stream entering each
        start block), each spliced group's forward, and each dictionary's reconstruction metrics on the clean MLP
        inputs; returns the MLP recordings."""
        rec: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.resid.append({})
        with ExitStack() as st:
            for layer in self.starts:
                st.enter_context(_record_block_input(self, self.lm.adapter.layer(layer), layer))
            lp_clean = _forward(self.lm, ids, {layer: _recorder(rec, layer) for layer in self.all_layers},
                                self.ce_clean, valid)
        bar.update()
        for gi, g in enumerate(self.groups):
            if self.clt:
                edits = _clt_splicers(self.dicts, set(self.group_layers(g)), keep)
            else:
                edits = {self.layers[i]: _splicer(self.dicts[i], keep, self.lm.adapter.mlp(self.layers[i])) for i in g}
            lp_spl = _forward(self.lm, ids, edits, self.ce_spliced[gi], valid, self.start(b, self.group_layers(g)))
            kl = (lp_clean.exp() * (lp_clean - lp_spl)).sum(-1)
            self.kl_sum[gi] += kl[valid].sum().item()
            bar.update()
        recon = reconstruct(self.dicts, {L: rec[L][0][keep] for L in self.all_layers}) if self.clt else {}
        for d, acc in zip(self.dicts, self.accs):
            x, y = (t[keep] for t in d.cfg.pick(*rec[d.cfg.layer]))
            z = d.encode(x)
            acc.add(y, recon[d.cfg.layer] if self.clt else d.decode(z, x), z)
        return rec

    def ablations(self, b, ids, keep, valid, means: dict[int, torch.Tensor], bar) -> None:
        for ls in self.layer_sets:
            for loss, fill in ((self.ce_mean[ls], means), (self.ce_zero[ls], None)):
                edits = {layer: _ablator(fill[layer] if fill is not None else None, keep) for layer in ls}
                _forward(self.lm, ids, edits, loss, valid, self.start(b, ls))
                bar.update()

    def fidelity(self, gi: int, run_dirs: list[Path], corpus: str) -> dict:
        ls = self.group_layers(self.groups[gi])
        c, sp = self.ce_clean.mean, self.ce_spliced[gi].mean
        mn, zr = self.ce_mean[ls].mean, self.ce_zero[ls].mean
        return {
            "ce_clean": c, "ce_spliced": sp, "ce_mean_ablated": mn, "ce_zero_ablated": zr, "ce_increase": sp - c,
            "ce_recovered_mean": _recovered(mn, sp, c), "ce_recovered_zero": _recovered(zr, sp, c),
            "kl_clean_spliced": self.kl_sum[gi] / max(self.ce_clean.n, 1), "n_eval_tokens": int(self.ids.numel()),
            "n_loss_positions": self.ce_clean.n, "corpus": corpus, "spliced_layers": list(ls),
            "spliced_runs": [str(run_dirs[i]) for i in self.groups[gi]],
        }

    def result(self, run_dirs: list[Path], cfg: EvalConfig) -> dict:
        fids = [self.fidelity(gi, run_dirs, cfg.corpus) for gi in range(len(self.groups))]
        out: dict = {"runs": {}, "fidelity": fids[0] if cfg.together else None, "groups": fids}
        for i, (r, d, acc) in enumerate(zip(run_dirs, self.dicts, self.accs)):
            m = {"layer": d.cfg.layer, "kind": d.cfg.kind, "activation": d.cfg.activation, "width": d.width,
                 **acc.metrics()}
            alone = next((f for gi, f in enumerate(fids) if self.groups[gi] == [i]), None) if cfg.alone else None
            if alone is not None:
                m["alone"] = alone
            out["runs"][str(r)] = m
        return out


def _forward(lm: LoadedModel, ids: torch.Tensor, edits: dict, loss: _NextTokenLoss, valid: torch.Tensor,
             start: tuple[int, torch.Tensor, bool] | None = None) -> torch.Tensor:
    """One forward with ``edits`` ({layer: fn(mlp_in, mlp_out)}) patched in, from the embeddings or from
    ``start`` = (block, its recorded input, whether blocks return tuples); adds to ``loss``; returns log-probs."""
    with ExitStack() as st:
        if start is not None:
            layer, resid, tuple_output = start
            st.enter_context(start_at(lm, layer, resid, tuple_output=tuple_output))
        for layer, fn in edits.items():
            st.enter_context(patch_mlp(lm, layer, fn))
        return loss.add(lm.model(input_ids=ids).logits, ids, valid)


@contextmanager
def _record_block_input(ev: _Evaluation, block: torch.nn.Module, layer: int) -> Iterator[None]:
    """While active, the input of ``block`` goes into ``ev.resid[-1][layer]``, and whether blocks return a tuple
    into ``ev.tuple_output``."""

    def pre(module, args, kwargs):
        ev.resid[-1][layer] = first_input(args, kwargs).detach()

    def post(module, args, output):
        ev.tuple_output = isinstance(output, tuple)

    handles = [block.register_forward_pre_hook(pre, with_kwargs=True), block.register_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _recorder(rec: dict, layer: int):
    def fn(mlp_in: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        rec[layer] = (mlp_in.detach(), mlp_out.detach())
        return mlp_out

    return fn


def _splicer(d: Dictionary, keep: torch.Tensor, mlp: torch.nn.Module):
    """Replace the MLP output by the dictionary's at ordinary positions.

    A transcoder or an MLP-out SAE gives the new MLP output directly; an MLP-in SAE's
    reconstruction is fed through the real MLP (``forward`` skips the module's hooks).
    """
    feeds_mlp = d.cfg.hook_out.endswith(".in")

    def fn(mlp_in: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        x, _ = d.cfg.pick(mlp_in, mlp_out)
        new = d(x.to(d.W_enc.dtype))
        if feeds_mlp:
            new = mlp.forward(new.to(mlp_in.dtype))
        return torch.where(keep[..., None], new.to(mlp_out.dtype), mlp_out)

    return fn


def _clt_splicers(dicts: list[Dictionary], replaced: set[int], keep: torch.Tensor) -> dict:
    """Edits that replace the MLP outputs of the ``replaced`` layers by a cross-layer transcoder's reconstruction:
    every CLT layer up to the highest replaced one reads its MLP input in this forward and adds its blocks for the
    replaced layers to what they will output (the forward reaches them later)."""
    pending: dict[int, torch.Tensor] = {}
    first, top = min(d.cfg.layer for d in dicts), max(replaced)

    def make(d: Dictionary):
        layer = d.cfg.layer

        def fn(mlp_in: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
            if layer == first:
                pending.clear()  # a new forward
            for m, y in blocks(d, d(mlp_in.to(d.W_enc.dtype))).items():
                if m in replaced:
                    pending[m] = y if m not in pending else pending[m] + y
            if layer not in replaced:
                return mlp_out
            return torch.where(keep[..., None], pending.pop(layer).to(mlp_out.dtype), mlp_out)

        return fn

    return {d.cfg.layer: make(d) for d in dicts if d.cfg.layer <= top}


def _ablator(value: torch.Tensor | None, keep: torch.Tensor):
    def fn(mlp_in: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        fill = torch.zeros_like(mlp_out) if value is None else value.to(mlp_out.dtype).expand_as(mlp_out)
        return torch.where(keep[..., None], fill, mlp_out)

    return fn


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    denom = ablated - clean
    return (ablated - spliced) / denom if abs(denom) > 1e-12 else float("nan")


def format_table(result: dict) -> str:
    """One row per dictionary; then the fidelity of splicing them all in; then, if measured, each alone."""
    lines = []
    hdr = f"{'run':<32} {'layer':>5} {'kind':<16} {'width':>6} {'L0':>7} {'FVU':>7} {'MSE':>9} {'dead':>6} {'dense':>6}"
    lines += [hdr, "-" * len(hdr)]
    for r, m in result["runs"].items():
        lines.append(
            f"{_short(r):<32} {m['layer']:>5} {m['kind'] + '/' + m['activation']:<16} {m['width']:>6} {m['l0']:>7.1f} "
            f"{m['fvu']:>7.3f} {m['mse']:>9.4g} {m['dead_fraction']:>6.1%} {m['dense_fraction']:>6.1%}"
        )
    f = result["fidelity"]
    if f is not None:
        what = "transcoder spliced in" if len(f["spliced_layers"]) == 1 else "all spliced in"
        lines.append("")
        lines.append(f"Next-token CE on {f['n_loss_positions']:,} held-out positions ({f['corpus']} corpus), "
                     f"layers {f['spliced_layers']} replaced together:")
        rows = [("clean model", f["ce_clean"]), (what, f["ce_spliced"]), ("MLP mean-ablated", f["ce_mean_ablated"]),
                ("MLP zero-ablated", f["ce_zero_ablated"])]
        for name, v in rows:
            lines.append(f"  {name:<24} {v:8.4f} nats")
        lines.append(f"  {'CE increase (spliced)':<24} {f['ce_increase']:8.4f} nats")
        lines.append(f"  {'CE recovered vs mean-abl':<24} {f['ce_recovered_mean']:8.1%}")
        lines.append(f"  {'CE recovered vs zero-abl':<24} {f['ce_recovered_zero']:8.1%}")
        lines.append(f"  {'KL(clean || spliced)':<24} {f['kl_clean_spliced']:8.4f} nats/token")
    alone = [(r, m) for r, m in result["runs"].items() if "alone" in m]
    if alone:
        a0 = alone[0][1]["alone"]
        lines.append("")
        lines.append(f"Each spliced in alone (clean CE {a0['ce_clean']:.4f} nats on {a0['n_loss_positions']:,} positions):")
        hdr = (f"{'run':<32} {'layer':>5} {'L0':>7} {'FVU':>7} {'CE spliced':>10} {'CE incr':>8} {'rec mean':>8} "
               f"{'rec zero':>8} {'KL':>7}")
        lines += [hdr, "-" * len(hdr)]
        for r, m in alone:
            a = m["alone"]
            lines.append(f"{_short(r):<32} {m['layer']:>5} {m['l0']:>7.1f} {m['fvu']:>7.3f} {a['ce_spliced']:>10.4f} "
                         f"{a['ce_increase']:>8.4f} {a['ce_recovered_mean']:>8.1%} {a['ce_recovered_zero']:>8.1%} "
                         f"{a['kl_clean_spliced']:>7.4f}")
    return "\n".join(lines)


def _short(r: str) -> str:
    return r if len(r) <= 32 else "…" + r[-31:]
