"""``transcoders tune``: find the sparsity and width that reach a faithfulness target, then train that dictionary.

From one cached harvest (``OUT/activations``), short proxy runs (``--proxy-tokens`` each, ``OUT/proxy/``) measure
the target metric against L0:

1. the L0 ladder (``--ladder``; k for topk/batchtopk, the λ controller's target L0 for relu/jumprelu) at the
   starting width (``--width``, else ``--expansion`` x d_model); when no rung reaches the target, the width doubles
   (up to ``--max-expansion`` x d_model) and the ladder runs again;
2. ``--refine`` bisection steps (geometric) between the last rung that misses and the first that reaches;
3. the width halves while that L0 still reaches the target (the narrowest width at that L0);
4. the final dictionary trains on the full ``--tokens`` at the chosen width and L0 (``OUT/final``) and is evaluated
   on the same held-out tokens as the proxies.

Every run is evaluated alone, on the same ``--eval-tokens`` held-out tokens: CE recovered is against mean ablation
of that MLP, as in ``transcoders eval``. The measured curve, the choice and the final run's figures go to
``OUT/tune.json`` and ``OUT/tune.png``. Proxy runs see fewer tokens than the final one, so the final dictionary
usually does a little better than its proxy: the choice errs on the safe side. A killed tune resumes: rerun it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path

from ..dictionary import activation
from ..dictionary import runs as R
from ..errors import TranscodersError
from ..evaluation import EvalConfig, evaluate
from ..models import LoadedModel, load_model
from ..paths import atomic_write_json
from ..training import TRAIN_CONFIG_FILE, TrainConfig, read_train_config, train
from .config import TUNE_FILE, TUNE_PLOT, SweepGrid, TuneTarget
from .report import save_png
from .sweep import _say, run_sweep


class _Search:
    """The proxy runs measured so far, each a single-point sweep (resumable) under ``OUT/proxy/``."""

    def __init__(self, base: TrainConfig, t: TuneTarget, lm: LoadedModel, progress: bool):
        self.base, self.t, self.lm, self.progress = base, t, lm, progress
        self.key, self.target, self.sense = t.metric()
        self.uses_k = activation(base.activation).uses_k
        self.points: list[dict] = []

    def reaches(self, row: dict) -> bool:
        v = row[self.key]
        return v >= self.target if self.sense == "ge" else v <= self.target

    def probe(self, width: int, l0s: list[int]) -> list[dict]:
        """Proxy runs at ``width`` for each L0 in ``l0s``; their rows (in ``l0s`` order), also kept in the curve."""
        name = f"w{width}-l0-" + "-".join(map(str, l0s))
        axis = SweepGrid(kinds=self.base.kind if self.base.kind != "sae" else f"sae-{self.base.sae_site}",
                         ks=",".join(map(str, l0s)) if self.uses_k else "",
                         target_l0s="" if self.uses_k else ",".join(map(str, l0s)),
                         widths=str(width), eval_tokens=self.t.eval_tokens)
        res = run_sweep(replace(self.base, out=str(Path(self.base.out) / "proxy" / name)), axis,
                        progress=self.progress, lm=self.lm)
        by_l0 = {int(r["k"] if self.uses_k else r["target_l0"]): r for r in res["rows"]}
        rows = [by_l0[v] for v in l0s]
        for v, r in zip(l0s, rows):
            self.points.append({"width": width, "l0_setting": v, **{k: r[k] for k in (
                "l0", "fvu", "ce_recovered_mean", "ce_recovered_zero", "kl_clean_spliced", "dead_fraction",
                "dense_fraction", "ce_clean", "ce_spliced", "ce_mean_ablated")}, "reaches": self.reaches(r),
                "run": str(Path(self.base.out) / "proxy" / name / r["run"])})
        return rows


def _ints(s: str, what: str) -> list[int]:
    try:
        vals = sorted({int(v) for v in str(s).split(",") if v.strip()})
    except ValueError:
        raise TranscodersError(f"{what} takes whole numbers separated by commas, e.g. 8,16,32; got {s!r}") from None
    if not vals or vals[0] < 1:
        raise TranscodersError(f"{what} needs positive whole numbers, e.g. 8,16,32; got {s!r}")
    return vals


def run_tune(base: TrainConfig, t: TuneTarget, *, progress: bool = True, lm: LoadedModel | None = None) -> dict:
    """Search, train the final dictionary, write ``tune.json`` and ``tune.png``; returns what tune.json holds."""
    key, target, sense = t.metric()
    ladder = _ints(t.ladder, "--ladder")
    if "," in base.layers or "-" in base.layers or base.layers == "all":
        raise TranscodersError(f"tune works on one layer at a time: give --layers N (got {base.layers!r})")
    out = Path(base.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = lm or load_model(base.model)
    d_model = lm.adapter.d_model
    proxy = replace(base, tokens=t.proxy_tokens, cache_activations=base.cache_activations or str(out / R.ACTIVATIONS_DIR))
    s = _Search(proxy, t, lm, progress)

    width = base.dictionary_width(d_model)
    while True:  # 1. the ladder, widening until a rung reaches the target
        rows = s.probe(width, ladder)
        ok = [v for v, r in zip(ladder, rows) if s.reaches(r)]
        if ok:
            break
        if width * 2 > t.max_expansion * d_model:
            _write(out, t, s, None, None)
            best = max(s.points, key=lambda p: p[key] if sense == "ge" else -p[key])
            raise TranscodersError(
                f"no L0 up to {ladder[-1]} reaches {key} {target:g} at widths up to {width} (best: {best[key]:.3f} at "
                f"width {best['width']}, L0 {best['l0']:.1f}; the curve is in {out / TUNE_FILE}): lower the target, "
                f"or extend --ladder / --max-expansion / --proxy-tokens")
        width *= 2
    hi = ok[0]
    lo = max((v for v in ladder if v < hi), default=0)
    for _ in range(t.refine):  # 2. bisect between the last miss and the first hit
        mid = round(math.sqrt(lo * hi)) if lo else hi // 2
        if not lo < mid < hi:
            break
        if s.reaches(s.probe(width, [mid])[0]):
            hi = mid
        else:
            lo = mid
    while width // 2 >= d_model:  # 3. the narrowest width (halving) at which that L0 still reaches it
        if not s.reaches(s.probe(width // 2, [hi])[0]):
            break
        width //= 2
    _say(progress, f"tune: width {width}, L0 {hi} reach {key} {target:g} in the proxy runs; training the final "
                   f"dictionary on {base.tokens:,} tokens")
    final = _train_final(base, width, hi, out / "final", lm, progress, s.uses_k)
    res = evaluate([final], EvalConfig(corpus=base.corpus, text_column=base.text_column, tokens=t.eval_tokens),
                   lm=lm, ctx_len=base.ctx_len, progress=progress)
    m = res["runs"][str(final)]
    f = res["fidelity"]
    final_row = {"run": str(final), "width": width, "l0_setting": hi, "l0": m["l0"], "fvu": m["fvu"],
                 "ce_recovered_mean": f["ce_recovered_mean"], "ce_recovered_zero": f["ce_recovered_zero"],
                 "kl_clean_spliced": f["kl_clean_spliced"], "dead_fraction": m["dead_fraction"],
                 "dense_fraction": m["dense_fraction"]}
    final_row["reaches"] = s.reaches(final_row)
    return _write(out, t, s, {"width": width, "l0": hi}, final_row)


def _train_final(base: TrainConfig, width: int, l0: int, out: Path, lm: LoadedModel, progress: bool,
                 uses_k: bool) -> Path:
    cfg = replace(base, width=width, out=str(out), **({"k": l0} if uses_k else {"target_l0": float(l0)}))
    same = (out / TRAIN_CONFIG_FILE).is_file() and read_train_config(out) == cfg
    if not (same and R.finished_runs(out)):  # a final run made for another choice (or other flags) is replaced
        resume = same and R.in_training(out)
        train(cfg, resume=resume, overwrite=not resume, progress=progress, lm=lm)
    (run,) = R.finished_runs(out)
    return run


def _write(out: Path, t: TuneTarget, s: _Search, chosen: dict | None, final: dict | None) -> dict:
    key, target, sense = t.metric()
    record = {"target": {"metric": key, "value": target, "reach": "at least" if sense == "ge" else "at most"},
              "search": asdict(t), "train": asdict(s.base), "curve": s.points, "chosen": chosen, "final": final}
    atomic_write_json(out / TUNE_FILE, record)
    plot_curve(record, out / TUNE_PLOT)
    return record


def plot_curve(record: dict, path: Path) -> None:
    """The target metric against L0, one line per width, the target as a dashed line, the choice and the final
    run marked."""
    # lazy, deliberately: matplotlib takes a second to import and only sweeps and tune draw plots
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    key, target = record["target"]["metric"], record["target"]["value"]
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for width in sorted({p["width"] for p in record["curve"]}):
        pts = sorted((p["l0"], p[key]) for p in record["curve"] if p["width"] == width)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"proxy runs, width {width}")
    ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
    if record.get("final"):
        f = record["final"]
        ax.plot([f["l0"]], [f[key]], marker="*", ms=14, color="crimson", ls="",
                label=f"final: width {f['width']}, L0 {f['l0']:.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("L0 (active features per token)")
    ax.set_ylabel({"ce_recovered_mean": "CE recovered (vs mean ablation)", "fvu": "FVU"}[key])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)
