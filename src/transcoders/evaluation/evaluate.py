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
    progress: bool = True,
    write: bool = True,
) -> dict:
    """Evaluate runs (spliced in together); returns ``{"runs": {path: metrics}, "fidelity": {...}}``."""
    from ..data.packing import load_split
    from ..models import load_model, patch_mlp

    run_dirs = expand_runs(runs)
    cfgs = [read_config(r) for r in run_dirs]
    models = {c.model for c in cfgs}
    if len(models) != 1:
        raise CheckpointError(f"runs were trained on different models {sorted(models)}: evaluate them separately")
    layers = [c.layer for c in cfgs]
    if len(set(layers)) != len(layers):
        raise CheckpointError(f"two runs replace the same layer ({layers}): splice one dictionary per layer")
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
    ce_clean, ce_spliced, ce_mean, ce_zero = _NextTokenLoss(), _NextTokenLoss(), _NextTokenLoss(), _NextTokenLoss()
    kl_sum = 0.0
    out_sum = {d.cfg.layer: 0.0 for d in dicts}
    out_n = 0
    steps = (ids_all.shape[0] + batch - 1) // batch
    bar = tqdm(total=2 * steps, desc="eval", unit="batch", disable=not progress, dynamic_ncols=True)

    def batches():
        for s in range(0, ids_all.shape[0], batch):
            ids = ids_all[s : s + batch]
            keep = ~torch.isin(ids, special)  # positions that get reconstructed
            valid = keep[:, 1:]  # next-token targets that count
            yield ids, keep, valid

    with torch.inference_mode():
        # pass 1: clean + spliced
        for ids, keep, valid in batches():
            rec: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            with ExitStack() as st:
                for d in dicts:
                    st.enter_context(patch_mlp(lm, d.cfg.layer, _recorder(rec, d.cfg.layer)))
                lp_clean = ce_clean.add(lm.model(input_ids=ids).logits, ids, valid)
            with ExitStack() as st:
                for d in dicts:
                    st.enter_context(patch_mlp(lm, d.cfg.layer, _splicer(d, keep, lm.adapter.mlp(d.cfg.layer))))
                lp_spl = ce_spliced.add(lm.model(input_ids=ids).logits, ids, valid)
            kl = (lp_clean.exp() * (lp_clean - lp_spl)).sum(-1)
            kl_sum += kl[valid].sum().item()
            del lp_clean, lp_spl, kl
            for d, acc in zip(dicts, accs):
                mlp_in, mlp_out = rec[d.cfg.layer]
                x, y = (t[keep] for t in d.cfg.pick(mlp_in, mlp_out))
                z = d.encode(x)
                acc.add(y, d.decode(z, x), z)
                out_sum[d.cfg.layer] = out_sum[d.cfg.layer] + mlp_out[keep].sum(0, dtype=torch.float64)
            out_n += int(keep.sum())
            bar.update()
        means = {layer: (s / out_n).float() for layer, s in out_sum.items()}
        # pass 2: mean- and zero-ablation of the same MLPs
        for ids, keep, valid in batches():
            for loss, fill in ((ce_mean, means), (ce_zero, None)):
                with ExitStack() as st:
                    for d in dicts:
                        value = fill[d.cfg.layer] if fill is not None else None
                        st.enter_context(patch_mlp(lm, d.cfg.layer, _ablator(value, keep)))
                    loss.add(lm.model(input_ids=ids).logits, ids, valid)
            bar.update()
    bar.close()

    fid = {
        "ce_clean": ce_clean.mean,
        "ce_spliced": ce_spliced.mean,
        "ce_mean_ablated": ce_mean.mean,
        "ce_zero_ablated": ce_zero.mean,
        "ce_increase": ce_spliced.mean - ce_clean.mean,
        "ce_recovered_mean": _recovered(ce_mean.mean, ce_spliced.mean, ce_clean.mean),
        "ce_recovered_zero": _recovered(ce_zero.mean, ce_spliced.mean, ce_clean.mean),
        "kl_clean_spliced": kl_sum / max(ce_clean.n, 1),
        "n_eval_tokens": int(ids_all.numel()),
        "n_loss_positions": ce_clean.n,
        "corpus": corpus,
        "spliced_layers": layers,
    }
    result = {"runs": {}, "fidelity": fid}
    for r, d, acc in zip(run_dirs, dicts, accs):
        m = {"layer": d.cfg.layer, "kind": d.cfg.kind, "activation": d.cfg.activation, "width": d.width, **acc.metrics()}
        result["runs"][str(r)] = m
        if write:
            atomic_write_json(r / METRICS_FILE, {**m, "fidelity": fid, "spliced_with": [str(x) for x in run_dirs]})
    return result


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
    """Two small tables: one row per dictionary, then the fidelity of splicing them all in."""
    lines = []
    hdr = f"{'run':<32} {'layer':>5} {'kind':<16} {'width':>6} {'L0':>7} {'FVU':>7} {'MSE':>9} {'dead':>6} {'dense':>6}"
    lines += [hdr, "-" * len(hdr)]
    for r, m in result["runs"].items():
        name = r if len(r) <= 32 else "…" + r[-31:]
        lines.append(
            f"{name:<32} {m['layer']:>5} {m['kind'] + '/' + m['activation']:<16} {m['width']:>6} {m['l0']:>7.1f} "
            f"{m['fvu']:>7.3f} {m['mse']:>9.4g} {m['dead_fraction']:>6.1%} {m['dense_fraction']:>6.1%}"
        )
    f = result["fidelity"]
    lines.append("")
    lines.append(f"Next-token CE on {f['n_loss_positions']:,} held-out positions ({f['corpus']} corpus), layers {f['spliced_layers']} replaced together:")
    rows = [
        ("clean model", f["ce_clean"]),
        ("transcoder spliced in", f["ce_spliced"]),
        ("MLP mean-ablated", f["ce_mean_ablated"]),
        ("MLP zero-ablated", f["ce_zero_ablated"]),
    ]
    for name, v in rows:
        lines.append(f"  {name:<24} {v:8.4f} nats")
    lines.append(f"  {'CE increase (spliced)':<24} {f['ce_increase']:8.4f} nats")
    lines.append(f"  {'CE recovered vs mean-abl':<24} {f['ce_recovered_mean']:8.1%}")
    lines.append(f"  {'CE recovered vs zero-abl':<24} {f['ce_recovered_zero']:8.1%}")
    lines.append(f"  {'KL(clean || spliced)':<24} {f['kl_clean_spliced']:8.4f} nats/token")
    return "\n".join(lines)
