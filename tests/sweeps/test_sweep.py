"""A small sweep on the tiny model: one harvest, every run trained and evaluated alike, report written."""

import csv

import pytest

from transcoders.cli import main
from transcoders.sweeps import SweepGrid, grid_configs, run_sweep
from transcoders.training import TrainConfig


def base_cfg(tiny_model_dir, tiny_corpus, out, **kw):
    base = dict(model=tiny_model_dir, corpus=tiny_corpus, layers="1", out=str(out), width=64, tokens=4096, batch_size=256,
                ctx_len=32, chunk_tokens=4096, forward_batch=16, checkpoint_every=1000)
    base.update(kw)
    return TrainConfig(**base)


def test_sweep_trains_the_grid_once_evaluates_all_and_resumes(tiny_model_dir, tiny_corpus, tmp_path):
    base = base_cfg(tiny_model_dir, tiny_corpus, tmp_path / "sweep")
    grid = SweepGrid(kinds="transcoder,sae", ks="4,8", eval_tokens=32 * 8)
    first = run_sweep(base, grid, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "results.csv")))
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"transcoder", "sae"}
    for r in rows:
        assert float(r["l0"]) <= int(r["k"]) + 1e-9
        assert float(r["ce_clean"]) == float(rows[0]["ce_clean"])  # the same held-out tokens for every run
    # one harvest fed every run
    chunks = sorted((tmp_path / "sweep" / "activations").glob("chunk_*.safetensors"))
    assert chunks
    for name in ("pareto_ce.png", "pareto_fvu.png"):
        assert (tmp_path / "sweep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 | sae | topk |" in (tmp_path / "sweep" / "results.md").read_text()
    # rerunning resumes: nothing is retrained, nor evaluated again (the report is not rewritten)
    weights = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("*/weights.safetensors")}
    assert len(weights) == 4
    report = tmp_path / "sweep" / "results.csv"
    written = report.stat().st_mtime_ns
    again = run_sweep(base, grid, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep").glob("*/weights.safetensors")} == weights
    assert report.stat().st_mtime_ns == written
    assert again["rows"] == first["rows"]
    # a run whose weights changed since (retrained, replaced) is evaluated anew: same weights, same numbers
    w = next(iter(weights))
    w.write_bytes(w.read_bytes())
    assert run_sweep(base, grid, progress=False)["rows"] == first["rows"]
    assert report.stat().st_mtime_ns != written
    # another grid in the same folder is refused rather than mixed in
    with pytest.raises(Exception, match="other settings"):
        run_sweep(base, SweepGrid(kinds="transcoder", ks="4", eval_tokens=32 * 8), progress=False)


def test_grid_axes_follow_the_activation(tmp_path):
    base = TrainConfig(out=str(tmp_path), activation="relu")
    names = [n for n, _ in grid_configs(base, SweepGrid(kinds="transcoder,sae", target_l0s="16,32"))]
    assert names == ["transcoder-relu-l0-16", "transcoder-relu-l0-32", "sae-relu-l0-16", "sae-relu-l0-32"]
    cfgs = dict(grid_configs(base, SweepGrid(kinds="sae", l1s="0.1,0.2", widths="64,128")))
    assert cfgs["sae-relu-l1-0.2-w128"].l1 == 0.2 and cfgs["sae-relu-l1-0.2-w128"].width == 128
    # SAEs on both sites in one sweep, whatever --sae-site says
    cfgs = dict(grid_configs(base, SweepGrid(kinds="sae,sae-mlp-in,sae-mlp-out", l1s="0.1")))
    assert [(c.kind, c.sae_site) for c in cfgs.values()] == [("sae", "mlp-out"), ("sae", "mlp-in"), ("sae", "mlp-out")]
    assert list(cfgs) == ["sae-relu-l1-0.1", "sae-mlp-in-relu-l1-0.1", "sae-mlp-out-relu-l1-0.1"]


def test_sweep_without_a_sparsity_axis_is_a_one_line_error(tmp_path, capsys):
    code = main(["sweep", "--activation", "relu", "--out", str(tmp_path / "s"), "--quiet"])
    assert code == 2
    assert "needs --target-l0s" in capsys.readouterr().err
