"""`transcoders tune` on the tiny model: it finds a planted target between two rungs of the L0 ladder."""

import json
from dataclasses import replace

import pytest

from transcoders.cli import main
from transcoders.errors import TranscodersError
from transcoders.sweeps import SweepGrid, run_sweep
from transcoders.sweeps.tune import TuneTarget, run_tune
from transcoders.training import TrainConfig, read_train_config

LADDER = [1, 2, 4, 8, 16]


def base_cfg(tiny_model_dir, tiny_corpus, out, **kw):
    base = dict(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(out), width=64, tokens=4096,
                batch_size=256, ctx_len=32, chunk_tokens=4096, forward_batch=16, checkpoint_every=1000)
    return TrainConfig(**{**base, **kw})


def test_tune_finds_a_planted_fvu_target(tiny_model_dir, tiny_corpus, tmp_path):
    """An independent sweep measures FVU along the ladder; the target is planted halfway between two rungs,
    so the answer lies between them (after one bisection step: the midpoint or the upper rung). The tune's proxy
    runs reproduce the sweep's figures, the choice reaches the target while the rung below misses, the width
    halves only while that still holds, and the final run is trained and evaluated."""
    proxy = dict(tokens=4096)
    sweep = run_sweep(base_cfg(tiny_model_dir, tiny_corpus, tmp_path / "sweep", **proxy),
                      SweepGrid(kinds="transcoder", ks=",".join(map(str, LADDER)), eval_tokens=32 * 8), progress=False)
    fvu = {int(r["k"]): r["fvu"] for r in sweep["rows"]}
    assert all(fvu[a] > fvu[b] for a, b in zip(LADDER, LADDER[1:])), fvu  # more features per token, less error
    lo, hi = 2, 4
    target = (fvu[lo] + fvu[hi]) / 2

    base = base_cfg(tiny_model_dir, tiny_corpus, tmp_path / "tune", tokens=8192)
    t = TuneTarget(target_fvu=target, proxy_tokens=proxy["tokens"], ladder=",".join(map(str, LADDER)), refine=1,
                   eval_tokens=32 * 8)
    rec = run_tune(base, t, progress=False)
    ladder_points = {p["l0_setting"]: p for p in rec["curve"] if p["width"] == 64}
    for k in LADDER:  # the proxy runs measured what the sweep measured (same data, seeds and held-out tokens)
        assert ladder_points[k]["fvu"] == pytest.approx(fvu[k], rel=1e-6)
    chosen = rec["chosen"]["l0"]
    assert lo < chosen <= hi
    mid = next(p for p in rec["curve"] if p["l0_setting"] == 3 and p["width"] == 64)  # round(sqrt(2 * 4))
    assert chosen == (3 if mid["fvu"] <= target else 4)
    narrower = [p for p in rec["curve"] if p["width"] < 64]
    assert [p["width"] for p in narrower][:1] == [32]  # halving was tried (down to d_model = 32 at most)
    assert rec["chosen"]["width"] == (32 if narrower[0]["reaches"] else 64)
    final = rec["final"]
    assert final["l0"] <= chosen + 1e-9 and final["width"] == rec["chosen"]["width"]
    assert (tmp_path / "tune" / "final" / "weights.safetensors").is_file()
    saved = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert saved["chosen"] == rec["chosen"] and saved["target"]["metric"] == "fvu"
    assert (tmp_path / "tune" / "tune.png").read_bytes()[:4] == b"\x89PNG"

    # rerunning resumes: nothing is retrained
    weights = {p: p.stat().st_mtime_ns for p in (tmp_path / "tune").rglob("weights.safetensors")}
    assert run_tune(base, t, progress=False)["chosen"] == rec["chosen"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "tune").rglob("weights.safetensors")} == weights
    # another target in the same folder reuses the proxy runs it shares and replaces the final run
    other = run_tune(base, replace(t, target_fvu=(fvu[4] + fvu[8]) / 2), progress=False)
    assert 4 < other["chosen"]["l0"] <= 8
    assert read_train_config(tmp_path / "tune" / "final").k == other["chosen"]["l0"]
    for path, mtime in weights.items():
        if "proxy" in str(path):
            assert path.stat().st_mtime_ns == mtime


def test_tune_cli_and_its_errors(tiny_model_dir, tiny_corpus, tmp_path, capsys):
    args = ["tune", "--model", tiny_model_dir, "--corpus", tiny_corpus, "--layers", "1", "--width", "64",
            "--tokens", "4096", "--proxy-tokens", "2048", "--batch-size", "256", "--ctx-len", "32", "--chunk-tokens",
            "2048", "--forward-batch", "16", "--eval-tokens", "256", "--ladder", "4,16", "--refine", "0", "--quiet"]
    assert main([*args, "--target-fvu", "0.999", "--out", str(tmp_path / "easy")]) == 0
    out = capsys.readouterr().out
    assert "chosen: width 32, L0 4" in out or "chosen: width 64, L0 4" in out  # a loose target: the first rung

    code = main([*args, "--target-fvu", "0.2", "--target-ce-recovered", "0.9", "--out", str(tmp_path / "both")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "exactly one target" in err

    code = main([*args, "--target-fvu", "1e-9", "--max-expansion", "2", "--out", str(tmp_path / "far")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "no L0 up to 16 reaches fvu" in err and "tune.json" in err
    assert json.loads((tmp_path / "far" / "tune.json").read_text())["chosen"] is None

    with pytest.raises(TranscodersError, match="one layer at a time"):
        run_tune(base_cfg(tiny_model_dir, tiny_corpus, tmp_path / "two", layers="0,1"), TuneTarget(target_fvu=0.5))
