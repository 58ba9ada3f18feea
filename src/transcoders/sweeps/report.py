"""A sweep's report: one row per run (CSV and Markdown) and Pareto plots of L0 against CE and FVU."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..dictionary import activation
from ..dictionary import runs as R
from ..paths import atomic_write_bytes
from ..training import TrainConfig

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
            "run": name if str(p) in by_dir else f"{name}/{p.name}", "layer": m["layer"],
            "kind": m["kind"] + ("-mlp-in" if m["kind"] == "sae" and cfg.sae_site == "mlp-in" else ""),
            "activation": m["activation"], "width": m["width"],
            "k": cfg.k if activation(cfg.activation).uses_k else "",
            "l1": cfg.l1 if activation(cfg.activation).uses_penalty else "",
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
    atomic_write_bytes(out / R.RESULTS_CSV, buf.getvalue().encode())
    atomic_write_bytes(out / R.RESULTS_MD, markdown_table(rows).encode())
    plot_pareto(rows, out / R.PLOT_CE, out / R.PLOT_FVU)


def markdown_table(rows: list[dict]) -> str:
    head = "| layer | kind | act | width | sparsity | L0 | FVU | CE spliced | CE increase | CE rec. (mean-abl) | KL | dead |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sp = f"k={r['k']}" if r["k"] != "" else (f"target L0 {r['target_l0']:g}" if r["target_l0"] != "" else f"λ={r['l1']:g}")
        lines.append(
            f"| {r['layer']} | {r['kind']} | {r['activation']} | {r['width']} | {sp} | {r['l0']:.1f} | {r['fvu']:.3f} | "
            f"{r['ce_spliced']:.4f} | {r['ce_increase']:.4f} | {r['ce_recovered_mean']:.1%} | {r['kl_clean_spliced']:.4f} | "
            f"{r['dead_fraction']:.1%} |"
        )
    if rows:
        by_layer: dict[int, dict] = {}
        for r in rows:
            by_layer.setdefault(r["layer"], r)
        lines.append("")
        for layer, r in by_layer.items():
            lines.append(f"Layer {layer}: clean CE {r['ce_clean']:.4f} nats, MLP mean-ablated {r['ce_mean_ablated']:.4f}, "
                         f"zero-ablated {r['ce_zero_ablated']:.4f}.")
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list[dict], ce_path: Path, fvu_path: Path) -> None:
    """L0 vs CE (with clean and mean-ablation lines) and L0 vs FVU; one panel per layer, one curve per kind."""
    # lazy, deliberately: matplotlib takes a second to import and only sweeps draw plots
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

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
        save_png(fig, path)



def save_png(fig, path: Path) -> None:
    """Lay out, write atomically as PNG and close a matplotlib figure."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (matplotlib is imported lazily: only plots need it)

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
