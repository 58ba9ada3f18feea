"""Evaluate dictionaries on held-out text: sparsity, reconstruction, and fidelity when spliced in.

Two passes over the evaluation split:

1. per batch, the clean model (recording each layer's MLP input and output) and the
   model with every dictionary spliced in at once: CE clean / spliced, KL(clean ‖ spliced),
   and per dictionary L0, FVU, MSE and feature firing counts (from the clean MLP input);
2. the model with those MLPs mean-ablated (mean MLP output over the split) and zero-ablated.

Special-token (BOS) positions are not reconstructed: training never sees them, and
their MLP output keeps the model's own value in every condition. Next-token losses
are averaged over positions whose target is an ordinary token.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.activations import special_token_ids
from ..dictionary import Dictionary, load_dictionary, read_config
from ..errors import CheckpointError
from ..paths import atomic_write_json

METRICS_FILE = "metrics.json"
DENSE_THRESHOLD = 0.1


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders; a set folder (``layer_NN/`` inside) stands for all its runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").exists():
            out.append(p)
        elif sorted(p.glob("layer_*/config.json")):
            out.extend(sorted(q.parent for q in p.glob("layer_*/config.json")))
        else:
            read_config(p)  # raises the right one-line error
    return out


@dataclass
class _Acc:
    """Running sums for one dictionary."""

    width: int
    n: int = 0
    l0: float = 0.0
    sq_err: float = 0.0
    sum_y: torch.Tensor | None = None
    sum_y2: float = 0.0
    fired: torch.Tensor = field(default=None)

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

    def __init__(self):
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
    runs: list[str | Path],
    *,
    lm=None,
    corpus: str = "default",
    text_column: str = "text",
    tokens: int = 32768,
    ctx_len: int | None = None,
    batch: int = 8,
    together: bool = True,
    each: bool = False,
    progress: bool = True,
    write: bool = True,
) -> dict:
    """Evaluate runs on held-out text.

    ``together``: splice every run in at once (one per layer). ``each``: also splice each run in alone
    (a per-layer table; a sweep's runs, several on one layer, use only this). The clean pass, the
    per-dictionary metrics and the ablations of each layer set are computed once and shared.

    Returns ``{"runs": {path: metrics (+ "alone": fidelity)}, "fidelity": together-fidelity or None,
    "groups": [fidelity per spliced group]}``.
    """
    from ..data.packing import load_split
    from ..models import load_model

    run_dirs = expand_runs(runs)
    cfgs = [read_config(r) for r in run_dirs]
    models = {c.model for c in cfgs}
    if len(models) != 1:
        raise CheckpointError(f"runs were trained on different models {sorted(models)}: evaluate them separately")
    layers = [c.layer for c in cfgs]
    if together and len(set(layers)) != len(layers):
        raise CheckpointError(f"two runs replace the same layer ({layers}): splice one dictionary per layer, or evaluate each alone (--each)")
    groups: list[list[int]] = ([list(range(len(run_dirs)))] if together else []) + ([[i] for i in range(len(run_dirs))] if each else [])
    if together and each and len(run_dirs) == 1:
        groups = groups[:1]
    lm = lm or load_model(cfgs[0].model)
    dicts: list[Dictionary] = [load_dictionary(r, expect_model=lm.name) for r in run_dirs]
    for d in dicts:
        lm.adapter.check_layer(d.cfg.layer)
    ctx_len = ctx_len or _train_ctx_len(run_dirs[0]) or 128
    n_ctx = max(1, tokens // ctx_len)
    contexts = load_split(corpus, lm.tokenizer, "eval", ctx_len=ctx_len, max_tokens=n_ctx * ctx_len, text_column=text_column)
    ids_all = contexts.tokens[:n_ctx]
    special = torch.tensor(sorted(special_token_ids(lm.tokenizer)), dtype=torch.long)

    accs = [_Acc(d.width) for d in dicts]
    all_layers = sorted(set(layers))
    layer_sets = sorted({tuple(sorted({layers[i] for i in g})) for g in groups})
    ce_clean = _NextTokenLoss()
    ce_spliced = [_NextTokenLoss() for _ in groups]
    kl_sum = [0.0 for _ in groups]
    ce_mean = {ls: _NextTokenLoss() for ls in layer_sets}
    ce_zero = {ls: _NextTokenLoss() for ls in layer_sets}
    out_sum = {layer: 0.0 for layer in all_layers}
    out_n = 0
    steps = (ids_all.shape[0] + batch - 1) // batch
    bar = tqdm(total=steps * (1 + len(groups) + 2 * len(layer_sets)), desc="eval", unit="fwd", unit_scale=False,
               disable=not progress, dynamic_ncols=True)

    def batches():
        for s in range(0, ids_all.shape[0], batch):
            ids = ids_all[s : s + batch]
            keep = ~torch.isin(ids, special)  # positions that get reconstructed
            valid = keep[:, 1:]  # next-token targets that count
            yield ids, keep, valid

    with torch.inference_mode():
        # pass 1: clean (recording every layer's MLP input and output), then each spliced group
        for ids, keep, valid in batches():
            rec: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            lp_clean = _forward(lm, ids, {layer: _recorder(rec, layer) for layer in all_layers}, ce_clean, valid)
            bar.update()
            for gi, g in enumerate(groups):
                edits = {dicts[i].cfg.layer: _splicer(dicts[i], keep, lm.adapter.mlp(dicts[i].cfg.layer)) for i in g}
                lp_spl = _forward(lm, ids, edits, ce_spliced[gi], valid)
                kl = (lp_clean.exp() * (lp_clean - lp_spl)).sum(-1)
                kl_sum[gi] += kl[valid].sum().item()
                del lp_spl, kl
                bar.update()
            del lp_clean
            for d, acc in zip(dicts, accs):
                mlp_in, mlp_out = rec[d.cfg.layer]
                x, y = (t[keep] for t in d.cfg.pick(mlp_in, mlp_out))
                z = d.encode(x)
                acc.add(y, d.decode(z, x), z)
            for layer in all_layers:
                out_sum[layer] = out_sum[layer] + rec[layer][1][keep].sum(0, dtype=torch.float64)
            out_n += int(keep.sum())
        means = {layer: (s / out_n).float() for layer, s in out_sum.items()}
        # pass 2: mean- and zero-ablation of each group's MLPs
        for ids, keep, valid in batches():
            for ls in layer_sets:
                for loss, fill in ((ce_mean[ls], means), (ce_zero[ls], None)):
                    edits = {layer: _ablator(fill[layer] if fill is not None else None, keep) for layer in ls}
                    _forward(lm, ids, edits, loss, valid)
                    bar.update()
    bar.close()

    def fidelity(gi: int) -> dict:
        ls = tuple(sorted({layers[i] for i in groups[gi]}))
        c, sp, mn, zr = ce_clean.mean, ce_spliced[gi].mean, ce_mean[ls].mean, ce_zero[ls].mean
        return {
            "ce_clean": c, "ce_spliced": sp, "ce_mean_ablated": mn, "ce_zero_ablated": zr, "ce_increase": sp - c,
            "ce_recovered_mean": _recovered(mn, sp, c), "ce_recovered_zero": _recovered(zr, sp, c),
            "kl_clean_spliced": kl_sum[gi] / max(ce_clean.n, 1), "n_eval_tokens": int(ids_all.numel()),
            "n_loss_positions": ce_clean.n, "corpus": corpus, "spliced_layers": list(ls),
            "spliced_runs": [str(run_dirs[i]) for i in groups[gi]],
        }

    fids = [fidelity(gi) for gi in range(len(groups))]
    together_fid = fids[0] if together else None
    result = {"runs": {}, "fidelity": together_fid, "groups": fids}
    for i, (r, d, acc) in enumerate(zip(run_dirs, dicts, accs)):
        m = {"layer": d.cfg.layer, "kind": d.cfg.kind, "activation": d.cfg.activation, "width": d.width, **acc.metrics()}
        alone = next((f for gi, f in enumerate(fids) if groups[gi] == [i]), None) if each else None
        if alone is not None:
            m["alone"] = alone
        result["runs"][str(r)] = m
        if write:
            saved = {**m, "fidelity": together_fid or alone, "spliced_with": (together_fid or alone)["spliced_runs"]}
            atomic_write_json(r / METRICS_FILE, saved)
    return result


def _forward(lm, ids: torch.Tensor, edits: dict, loss: "_NextTokenLoss", valid: torch.Tensor) -> torch.Tensor:
    """One forward with ``edits`` ({layer: fn(mlp_in, mlp_out)}) patched in; adds to ``loss``; returns log-probs."""
    from ..models import patch_mlp

    with ExitStack() as st:
        for layer, fn in edits.items():
            st.enter_context(patch_mlp(lm, layer, fn))
        return loss.add(lm.model(input_ids=ids).logits, ids, valid)


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


def _ablator(value: torch.Tensor | None, keep: torch.Tensor):
    def fn(mlp_in: torch.Tensor, mlp_out: torch.Tensor) -> torch.Tensor:
        fill = torch.zeros_like(mlp_out) if value is None else value.to(mlp_out.dtype).expand_as(mlp_out)
        return torch.where(keep[..., None], fill, mlp_out)

    return fn


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    denom = ablated - clean
    return (ablated - spliced) / denom if abs(denom) > 1e-12 else float("nan")


def _train_ctx_len(run_dir: Path) -> int | None:
    for p in (run_dir / "train_config.json", run_dir.parent / "train_config.json"):
        if p.exists():
            try:
                return int(json.loads(p.read_text()).get("ctx_len"))
            except (ValueError, TypeError, json.JSONDecodeError):
                return None
    return None


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
        lines.append(f"Next-token CE on {f['n_loss_positions']:,} held-out positions ({f['corpus']} corpus), layers {f['spliced_layers']} replaced together:")
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
        hdr = f"{'run':<32} {'layer':>5} {'L0':>7} {'FVU':>7} {'CE spliced':>10} {'CE incr':>8} {'rec mean':>8} {'rec zero':>8} {'KL':>7}"
        lines += [hdr, "-" * len(hdr)]
        for r, m in alone:
            a = m["alone"]
            lines.append(f"{_short(r):<32} {m['layer']:>5} {m['l0']:>7.1f} {m['fvu']:>7.3f} {a['ce_spliced']:>10.4f} "
                         f"{a['ce_increase']:>8.4f} {a['ce_recovered_mean']:>8.1%} {a['ce_recovered_zero']:>8.1%} {a['kl_clean_spliced']:>7.4f}")
    return "\n".join(lines)


def _short(r: str) -> str:
    return r if len(r) <= 32 else "…" + r[-31:]
