"""Side by side with EleutherAI's sparsify: the same TopK transcoder, the same tokens, alternating runs.

    .venv/bin/python bench/compare_sparsify/run.py [--tokens 262144] [--widths 4608,18432] [--repeats 2]

What it does, from a fresh clone (after `make install`):
1. makes sparsify's own virtual environment under bench/out/sparsify-venv (`pip install torch==2.13.0
   eai-sparsify`: torch pinned as ours, so nothing pulls a CUDA build);
2. exports the default model (its converted Hugging Face folder) and `--tokens` of the default corpus's training
   split, already tokenised and packed exactly as ours (ctx 128, BOS first), as a local `datasets` folder;
3. trains a TopK (k = 32) transcoder on layer 6's MLP (input: the MLP's input, target: its output) with each
   tool, alternating ours / theirs, `--repeats` times per width: same tokens, same context length, same
   tokens per optimiser step (32 contexts = 4,096 tokens), BOS excluded by both; everything else at each tool's
   defaults (sparsify: signum optimiser, full-model forward every step, as its users run it; ours: Adam, forward
   stopped after layer 6, shuffle buffer);
4. evaluates both results with our evaluator on the same held-out tokens (sparsify's through `transcoders
   import`), and prints per width: tokens/s of each and their ratio (medians), peak resident memory, FVU;
5. the dictionary step alone: both tools' training step on the same layer-6 activations already in memory
   (`step_ours.py`: our trainer's `LayerState.step`; `step_sparsify.py`: the body of sparsify's training hook with
   its defaults), alternating, `--repeats` times per width;
6. the machine's limit: fp32 matmul GFLOP/s measured for the shapes involved (bench/flops.py), and each tool's
   achieved fraction of it: the dictionary step alone counting its dense part (the encoder forward, 2·d·width FLOPs
   per token), our harvest alone (the forward through layers 0-6), and end to end counting the useful work (that
   truncated forward plus the dense dictionary step; sparsify's full-model forward is work it need not do).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
from flops import forward_flops_per_token, limit_shapes, matmul_gflops, topk_step_dense_flops_per_token  # noqa: E402

OUT = ROOT / "bench" / "out" / "compare_sparsify"
VENV = ROOT / "bench" / "out" / "sparsify-venv"
PY = sys.executable
LAYER, K, CTX, SEQS_PER_STEP = 6, 32, 128, 32


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, **kw)


def ensure_sparsify() -> Path:
    py = VENV / "bin" / "python"
    if py.is_file() and subprocess.run([str(py), "-c", "import sparsify"], capture_output=True).returncode == 0:
        return py
    print("installing eai-sparsify into", VENV, "(torch pinned to ours: 2.13.0)", flush=True)
    sh([sys.executable, "-m", "venv", str(VENV)])
    sh([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    sh([str(py), "-m", "pip", "install", "-q", "torch==2.13.0", "eai-sparsify"])
    return py


def export_inputs(tokens: int) -> tuple[Path, Path, int]:
    """The default model's HF folder, and a `datasets` folder of `tokens` training tokens in our packing."""
    from datasets import Dataset

    from transcoders.data.packing import bos_token_id, load_split
    from transcoders.models import load_model
    from transcoders.models.named import default_model_dir

    model_dir = default_model_dir()
    lm = load_model("default")
    bos = bos_token_id(lm.tokenizer)
    data_dir = OUT / f"data-{tokens}"
    if not (data_dir / "dataset_info.json").is_file():
        ctx = load_split("default", lm.tokenizer, "train", ctx_len=CTX, max_tokens=tokens)
        Dataset.from_dict({"input_ids": ctx.tokens.tolist()}).save_to_disk(str(data_dir))
    return model_dir, data_dir, bos


def measured(cmd: list[str], env=None) -> tuple[float, str]:
    """Wall seconds (process start to exit) and the child's stdout."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd[:4])} ...\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return wall, p.stdout


OURS = ("import resource, sys; from transcoders.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")


def run_ours(width: int, tokens: int, threads: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, "-c", OURS, "train", "--model", "default", "--corpus", "default",
           "--layers", str(LAYER), "--width", str(width), "--k", str(K), "--tokens", str(tokens), "--ctx-len", str(CTX),
           "--batch-size", str(SEQS_PER_STEP * CTX), "--threads", str(threads), "--out", str(out), "--quiet"]
    wall, stdout = measured(cmd)
    peak = int(stdout.split("PEAK_RSS_KIB")[-1].split()[0])
    return {"seconds": wall, "peak_rss_mib": peak / 1024, "tokens": tokens}


def run_theirs(py: Path, model_dir: Path, data_dir: Path, bos: int, width: int, threads: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    cmd = [str(py), str(Path(__file__).with_name("sparsify_driver.py")), str(model_dir), str(data_dir), str(out),
           str(LAYER), str(width), str(K), str(SEQS_PER_STEP), str(threads), str(bos)]
    wall, stdout = measured(cmd, env)
    res = json.loads(stdout.strip().splitlines()[-1])
    res["seconds"] = wall  # the same clock as ours: process start to exit
    return res


def harvest_acts(tokens: int) -> tuple[Path, float, float]:
    """Layer 6's (MLP input, MLP output) for `tokens` training tokens (BOS dropped), saved for the step-alone runs.
    Returns the file, our harvest's tokens/s and its FLOPs per token (the forward through layers 0-6)."""
    from safetensors.torch import save_file

    from transcoders.data.activations import ActivationSource
    from transcoders.data.packing import load_split
    from transcoders.models import load_model

    lm = load_model("default")
    contexts = load_split("default", lm.tokenizer, "train", ctx_len=CTX, max_tokens=tokens + 64 * CTX)
    src = ActivationSource(lm, contexts, [LAYER], chunk_contexts=tokens // CTX, forward_batch=SEQS_PER_STEP)
    ctx_tokens = src.chunk_tokens(0)
    src.harvest(ctx_tokens[:SEQS_PER_STEP])  # warm-up
    t0 = time.perf_counter()
    x, y = src.harvest(ctx_tokens)[LAYER]
    tps = ctx_tokens.numel() / (time.perf_counter() - t0)
    path = OUT / f"acts-layer{LAYER}-{tokens}.safetensors"
    save_file({"x": x.contiguous(), "y": y.contiguous()}, str(path))
    return path, tps, forward_flops_per_token(lm.adapter, LAYER, CTX)


def step_alone(py: str, script: str, acts: Path, width: int, steps: int, threads: int) -> float:
    p = sh([py, str(Path(__file__).with_name(script)), str(acts), str(width), str(K), str(SEQS_PER_STEP * CTX),
            str(steps), str(threads)], capture_output=True)
    return json.loads(p.stdout.strip().splitlines()[-1])["tokens_per_s"]


def fvu(run: Path, tokens: int) -> float:
    from transcoders.evaluation import evaluate

    res = evaluate([run], tokens=tokens, each=False, progress=False, write=False)
    return float(res["runs"][str(run)]["fvu"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=262_144, help="training tokens per run")
    ap.add_argument("--widths", default="4608,18432")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=16_384)
    ap.add_argument("--step-tokens", type=int, default=32_768, help="activations held in memory for the step-alone runs")
    ap.add_argument("--steps", type=int, default=16, help="timed steps per step-alone run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    py = ensure_sparsify()
    model_dir, data_dir, bos = export_inputs(args.tokens)
    widths = [int(w) for w in args.widths.split(",")]
    from transcoders.models import load_model

    a = load_model("default").adapter
    gflops = {name: matmul_gflops(*shape) for name, shape in limit_shapes(a.d_model, a.d_mlp, widths).items()}
    peak = max(gflops.values())
    print("fp32 matmul GFLOP/s: " + ", ".join(f"{n} {v:.1f}" for n, v in gflops.items()) + f"; limit {peak:.1f}", flush=True)
    acts, harvest_tps, fwd_flops = harvest_acts(args.step_tokens)
    print(f"our harvest alone: {harvest_tps:.0f} tok/s, {harvest_tps * fwd_flops / 1e9 / peak:.1%} of the limit", flush=True)
    rows = []
    for width in widths:
        step_o, step_t = [], []
        for r in range(args.repeats):
            step_o.append(step_alone(PY, "step_ours.py", acts, width, args.steps, args.threads))
            step_t.append(step_alone(str(py), "step_sparsify.py", acts, width, args.steps, args.threads))
            print(f"width {width} step alone {r + 1}: ours {step_o[-1]:.0f} tok/s, sparsify {step_t[-1]:.0f} tok/s", flush=True)
        ours, theirs = [], []
        for r in range(args.repeats):
            ours.append(run_ours(width, args.tokens, args.threads, OUT / f"ours-{width}"))
            print(f"width {width} repeat {r + 1}: ours {args.tokens / ours[-1]['seconds']:.0f} tok/s", flush=True)
            theirs.append(run_theirs(py, model_dir, data_dir, bos, width, args.threads, OUT / f"theirs-{width}"))
            print(f"width {width} repeat {r + 1}: sparsify {theirs[-1]['tokens'] / theirs[-1]['seconds']:.0f} tok/s", flush=True)
        sh([str(ROOT / ".venv" / "bin" / "transcoders"), "import", str(OUT / f"theirs-{width}" / "run"),
            str(OUT / f"theirs-{width}-imported"), "--model", "default", "--overwrite"], capture_output=True)
        o_tps = statistics.median(args.tokens / x["seconds"] for x in ours)
        t_tps = statistics.median(x["tokens"] / x["seconds"] for x in theirs)
        dense = topk_step_dense_flops_per_token(a.d_model, width)
        so, st = statistics.median(step_o), statistics.median(step_t)
        rows.append({"width": width, "step_ours_tps": so, "step_theirs_tps": st, "step_ratio": so / st,
                     "step_ours_frac": so * dense / 1e9 / peak, "step_theirs_frac": st * dense / 1e9 / peak,
                     "e2e_ours_frac": o_tps * (fwd_flops + dense) / 1e9 / peak,
                     "e2e_theirs_frac": t_tps * (fwd_flops + dense) / 1e9 / peak,
                     "ours_tps": o_tps, "theirs_tps": t_tps, "ratio": o_tps / t_tps,
                     "ours_mib": max(x["peak_rss_mib"] for x in ours), "theirs_mib": max(x["peak_rss_mib"] for x in theirs),
                     "ours_fvu": fvu(OUT / f"ours-{width}", args.eval_tokens),
                     "theirs_fvu": fvu(OUT / f"theirs-{width}-imported", args.eval_tokens)})
    print(f"\nTopK k={K} transcoder, default model layer {LAYER}, {args.tokens:,} tokens, ctx {CTX}, "
          f"{SEQS_PER_STEP * CTX} tokens/step, {args.threads} threads, median of {args.repeats} alternating runs; "
          f"FVU on {args.eval_tokens:,} held-out tokens (our evaluator for both)")
    print(f"{'width':>6} {'ours tok/s':>11} {'sparsify tok/s':>15} {'ratio':>6} {'ours MiB':>9} {'sparsify MiB':>13} "
          f"{'ours FVU':>9} {'sparsify FVU':>13}")
    for r in rows:
        print(f"{r['width']:>6} {r['ours_tps']:>11.0f} {r['theirs_tps']:>15.0f} {r['ratio']:>5.2f}x {r['ours_mib']:>9.0f} "
              f"{r['theirs_mib']:>13.0f} {r['ours_fvu']:>9.3f} {r['theirs_fvu']:>13.3f}")
    print(f"\nDictionary step alone ({args.step_tokens:,} layer-{LAYER} activations in memory, {args.steps} timed steps of "
          f"{SEQS_PER_STEP * CTX} tokens, median of {args.repeats}); fraction of the fp32 matmul limit ({peak:.1f} GFLOP/s "
          f"measured above) counting the dense encoder forward; end to end counting the forward through layers "
          f"0-{LAYER} plus that (our harvest alone: {harvest_tps:.0f} tok/s, {harvest_tps * fwd_flops / 1e9 / peak:.1%})")
    print(f"{'width':>6} {'ours tok/s':>11} {'sparsify tok/s':>15} {'ratio':>6} {'ours step':>10} {'sparsify step':>14} "
          f"{'ours e2e':>9} {'sparsify e2e':>13}")
    for r in rows:
        print(f"{r['width']:>6} {r['step_ours_tps']:>11.0f} {r['step_theirs_tps']:>15.0f} {r['step_ratio']:>5.2f}x "
              f"{r['step_ours_frac']:>10.1%} {r['step_theirs_frac']:>14.1%} {r['e2e_ours_frac']:>9.1%} "
              f"{r['e2e_theirs_frac']:>13.1%}")
    (OUT / "results.json").write_text(json.dumps({"matmul_gflops": gflops, "limit_gflops": peak,
                                                  "harvest_tps": harvest_tps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
