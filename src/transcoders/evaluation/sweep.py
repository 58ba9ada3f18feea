"""Sweeps: train a grid of dictionaries from one cached harvest, evaluate them on the same held-out
tokens, and write a results table (CSV + Markdown) and Pareto plots.

The grid is kinds × sparsity × widths. Sparsity is k for TopK/BatchTopK, else target L0 (the λ
controller) or λ itself. Every run reads the same on-disk activation cache, so the model runs once
for the whole sweep; a killed sweep resumes: finished runs are kept, an interrupted one continues
from its checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..dictionary.module import USES_K, USES_PENALTY
from ..errors import TranscodersError
from ..paths import atomic_write_bytes, atomic_write_json
from ..training.config import TrainConfig, opt

SWEEP_FILE = "sweep.json"
RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"
PLOT_CE, PLOT_FVU = "pareto_ce.png", "pareto_fvu.png"


@dataclass
class SweepGrid:
    """The axes of a sweep; every other flag of ``transcoders train`` applies to all its runs."""

    kinds: str = opt("transcoder,skip-transcoder,sae", "comma list of kinds (transcoder, skip-transcoder, sae)")
    ks: str = opt("16,32,64", "comma list of k for --activation topk/batchtopk")
    l1s: str = opt("", "comma list of λ for relu/jumprelu (used when --target-l0s is empty)")
    target_l0s: str = opt("", "comma list of target L0 for relu/jumprelu (the λ controller lands each)")
    widths: str = opt("", "comma list of widths (empty: --expansion x d_model)")
    eval_tokens: int = opt(32768, "held-out tokens every run is evaluated on")


def _floats(s: str) -> list[float]:
    return [float(v) for v in str(s).split(",") if v.strip()]


def grid_configs(base: TrainConfig, grid: SweepGrid) -> list[tuple[str, TrainConfig]]:
    """``(name, config)`` for every point of the grid; names are the run folders' names."""
    kinds = [k.strip() for k in grid.kinds.split(",") if k.strip()]
    for k in kinds:
        if k not in ("transcoder", "skip-transcoder", "sae"):
            raise TranscodersError(f"unknown kind {k!r} in --kinds: use transcoder, skip-transcoder, sae")
    if base.activation in USES_K:
        axis = [("k", int(v)) for v in _floats(grid.ks)]
    elif grid.target_l0s:
        axis = [("target_l0", v) for v in _floats(grid.target_l0s)]
    elif grid.l1s:
        axis = [("l1", v) for v in _floats(grid.l1s)]
    else:
        raise TranscodersError(f"--activation {base.activation} needs --target-l0s (e.g. 16,32,64) or --l1s to sweep over")
    widths = [int(w) for w in _floats(grid.widths)] or [base.width]
    if not axis:
        raise TranscodersError("the sparsity axis of the sweep is empty: give --ks, --target-l0s or --l1s")
    out = []
    for kind in kinds:
        for name, value in axis:
            for width in widths:
                tag = {"k": f"k{value}", "target_l0": f"l0-{value:g}", "l1": f"l1-{value:g}"}[name]
                run = f"{kind}-{base.activation}-{tag}" + (f"-w{width}" if width else "")
                cfg = replace(base, kind=kind, width=width, out=str(Path(base.out) / run), **{name: value})
                out.append((run, cfg))
    return out


def run_sweep(base: TrainConfig, grid: SweepGrid, *, progress: bool = True, lm=None) -> dict:
    """Train (or resume, or skip) every run of the grid, evaluate all of them, write the report."""
    from ..models import load_model
    from ..training.trainer import CHECKPOINT_FILE, _finished_dirs, train
    from .evaluate import evaluate

    out = Path(base.out)
    out.mkdir(parents=True, exist_ok=True)
    if not base.cache_activations:
        base = replace(base, cache_activations=str(out / "activations"))
    configs = grid_configs(base, grid)
    sweep_file = out / SWEEP_FILE
    record = {"train": asdict(base), "grid": asdict(grid), "runs": [name for name, _ in configs]}
    if sweep_file.exists():
        old = json.loads(sweep_file.read_text())
        if old.get("train") != record["train"] or old.get("grid") != record["grid"]:
            raise TranscodersError(f"{out} holds a sweep with other settings ({SWEEP_FILE}): use another --out, or delete it")
    atomic_write_json(sweep_file, record)
    lm = lm or load_model(base.model)
    n = len(configs)
    for i, (name, cfg) in enumerate(configs, 1):
        run = Path(cfg.out)
        if _finished_dirs(run) and not (run / CHECKPOINT_FILE).exists():
            _say(progress, f"[{i}/{n}] {name}: already trained")
            continue
        resume = (run / CHECKPOINT_FILE).exists()
        _say(progress, f"[{i}/{n}] {name}: {'resuming' if resume else 'training'}")
        train(cfg, resume=resume, overwrite=not resume, progress=progress, lm=lm)
    runs = [d for _, cfg in configs for d in _finished_dirs(Path(cfg.out))]
    _say(progress, f"evaluating {len(runs)} runs on the same {grid.eval_tokens:,} held-out tokens")
    res = evaluate(runs, lm=lm, corpus=base.corpus, text_column=base.text_column, tokens=grid.eval_tokens,
                   ctx_len=base.ctx_len, together=False, each=True, progress=progress)
    rows = results_rows(res, configs)
    write_report(out, rows)
    return {"rows": rows, "eval": res}


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


COLUMNS = ["run", "layer", "kind", "activation", "width", "k", "l1", "target_l0", "l0", "fvu", "mse", "ce_clean",
           "ce_spliced", "ce_increase", "ce_mean_ablated", "ce_zero_ablated", "ce_recovered_mean", "ce_recovered_zero",
           "kl_clean_spliced", "dead_fraction", "dense_fraction"]


def results_rows(res: dict, configs: list[tuple[str, TrainConfig]]) -> list[dict]:
    by_dir = {str(Path(cfg.out)): (name, cfg) for name, cfg in configs}
    rows = []
    for path, m in res["runs"].items():
        p = Path(path)
        name, cfg = by_dir.get(str(p)) or by_dir[str(p.parent)]
        a = m["alone"]
        rows.append({
            "run": name if str(p) in by_dir else f"{name}/{p.name}", "layer": m["layer"], "kind": m["kind"],
            "activation": m["activation"], "width": m["width"],
            "k": cfg.k if cfg.activation in USES_K else "", "l1": cfg.l1 if cfg.activation in USES_PENALTY else "",
            "target_l0": cfg.target_l0 or "", "l0": m["l0"], "fvu": m["fvu"], "mse": m["mse"],
            **{k: a[k] for k in ("ce_clean", "ce_spliced", "ce_increase", "ce_mean_ablated", "ce_zero_ablated",
                                 "ce_recovered_mean", "ce_recovered_zero", "kl_clean_spliced")},
            "dead_fraction": m["dead_fraction"], "dense_fraction": m["dense_fraction"],
        })
    rows.sort(key=lambda r: (r["layer"], r["kind"], r["l0"]))
    return rows


def write_report(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(out / RESULTS_CSV, buf.getvalue().encode())
    atomic_write_bytes(out / RESULTS_MD, markdown_table(rows).encode())
    plot_pareto(rows, out / PLOT_CE, out / PLOT_FVU)


def markdown_table(rows: list[dict]) -> str:
    head = "| layer | kind | act | width | sparsity | L0 | FVU | CE spliced | CE increase | CE rec. (mean-abl) | KL | dead |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sp = f"k={r['k']}" if r["k"] != "" else (f"target L0 {r['target_l0']:g}" if r["target_l0"] != "" else f"λ={r['l1']:g}")
        lines.append(
            f"| {r['layer']} | {r['kind']} | {r['activation']} | {r['width']} | {sp} | {r['l0']:.1f} | {r['fvu']:.3f} | "
            f"{r['ce_spliced']:.4f} | {r['ce_increase']:.4f} | {r['ce_recovered_mean']:.1%} | {r['kl_clean_spliced']:.4f} | {r['dead_fraction']:.1%} |"
        )
    if rows:
        by_layer = {}
        for r in rows:
            by_layer.setdefault(r["layer"], r)
        lines.append("")
        for layer, r in by_layer.items():
            lines.append(f"Layer {layer}: clean CE {r['ce_clean']:.4f} nats, MLP mean-ablated {r['ce_mean_ablated']:.4f}, "
                         f"zero-ablated {r['ce_zero_ablated']:.4f}.")
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list[dict], ce_path: Path, fvu_path: Path) -> None:
    """L0 vs CE (with clean and mean-ablation lines) and L0 vs FVU; one panel per layer, one curve per kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({r["layer"] for r in rows})
    for path, key, label in ((ce_path, "ce_spliced", "next-token CE with the MLP replaced (nats)"), (fvu_path, "fvu", "FVU")):
        fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 4.2), squeeze=False)
        for ax, layer in zip(axes[0], layers):
            lr = [r for r in rows if r["layer"] == layer]
            for kind in sorted({r["kind"] for r in lr}):
                pts = sorted((r["l0"], r[key]) for r in lr if r["kind"] == kind)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kind)
            if key == "ce_spliced":
                ax.axhline(lr[0]["ce_clean"], color="black", ls="--", lw=1, label="clean model")
                ax.axhline(lr[0]["ce_mean_ablated"], color="grey", ls=":", lw=1, label="MLP mean-ablated")
            ax.set_xscale("log")
            ax.set_xlabel("L0 (active features per token)")
            ax.set_ylabel(label)
            ax.set_title(f"layer {layer}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())

