"""torchrun on the CPU (gloo): two processes train what one process trains, and runs move between world sizes."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from transcoders.distributed import Group

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def common(model_dir, corpus, **kw):
    args = dict(model=model_dir, corpus=corpus, layers="1", width=128, k=8, tokens=12288, batch_size=256, ctx_len=32,
                chunk_tokens=2048, forward_batch=8, checkpoint_every=10, dead_tokens=2048, threads=1)
    args.update(kw)
    out = []
    for k, v in args.items():
        if v is True:
            out.append("--" + k.replace("_", "-"))
        else:
            out += ["--" + k.replace("_", "-"), str(v)]
    return out + ["--quiet"]


def one(*args):
    return [sys.executable, "-m", "transcoders", "train", *map(str, args)]


def two(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "transcoders", "train", *map(str, args)]


def run(cmd):
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def assert_same_weights(a, b, rtol=1e-4, atol=1e-5):
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=rtol, atol=atol, msg=k)


def test_two_ranks_with_batch_b_match_one_process_with_the_same_global_batch(tiny_model_dir, tiny_corpus, tmp_path):
    """Data parallel: each of 2 ranks trains on 128 of every 256-token batch, harvesting half of every chunk; the
    averaged gradients give the weights of one process on the whole batches. Dead features appear (AuxK on),
    several chunks are crossed."""
    args = common(tiny_model_dir, tiny_corpus)
    run(one(*args, "--out", tmp_path / "one"))
    run(two(*args, "--out", tmp_path / "two"))
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    logs = [(tmp_path / r / "train_log.jsonl").read_text().splitlines() for r in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) > 0  # rank 0 alone wrote the log
    assert not (tmp_path / "two" / "checkpoint.safetensors").exists()


def test_distribute_layers_gives_each_layer_what_one_process_gives(tiny_model_dir, tiny_corpus, tmp_path):
    args = common(tiny_model_dir, tiny_corpus, layers="0-2", tokens=6144)
    run(one(*args, "--out", tmp_path / "one"))
    res = run(two(*args, "--distribute-layers", "--out", tmp_path / "two"))
    for layer in range(3):
        assert_same_weights(tmp_path / "one" / f"layer_{layer:02d}", tmp_path / "two" / f"layer_{layer:02d}")
    import json

    last = json.loads((tmp_path / "two" / "train_log.jsonl").read_text().splitlines()[-1])
    assert sorted(last["layers"]) == ["0", "1", "2"]  # the log gathers every rank's layers
    assert "error" not in res.stderr.lower()


@pytest.mark.parametrize("layers,extra", [("1", []), ("0-1", ["--distribute-layers"])])
def test_a_two_rank_checkpoint_resumes_on_one_process(tiny_model_dir, tiny_corpus, tmp_path, layers, extra):
    args = common(tiny_model_dir, tiny_corpus, tokens=30720, checkpoint_every=5, layers=layers)
    run(one(*args, "--out", tmp_path / "ref"))
    out = tmp_path / "run"
    proc = subprocess.Popen(two(*args, *extra, "--out", out), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ck = out / "checkpoint.safetensors"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not ck.exists():
        time.sleep(0.01)
    assert proc.poll() is None, "the two-rank run ended before its first checkpoint: make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    proc.wait()
    assert not (out / "config.json").exists()
    res = subprocess.run([sys.executable, "-m", "transcoders", "train", "--resume", str(out), "--quiet"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    if layers == "1":
        assert_same_weights(tmp_path / "ref", out)
    else:  # each rank's layers were in the one checkpoint; one process takes them all up
        for name in ("layer_00", "layer_01"):
            assert_same_weights(tmp_path / "ref" / name, out / name)


def test_a_batch_that_does_not_split_over_the_ranks_is_a_one_line_error(tiny_model_dir, tiny_corpus, tmp_path):
    res = subprocess.run(two(*common(tiny_model_dir, tiny_corpus, batch_size=255), "--out", tmp_path / "r"), env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "error: --batch-size 255 does not split evenly over 2 ranks" in res.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_shares_cover_everything_once():
    for n in (0, 1, 5, 8, 13):
        for world in (1, 2, 3):
            parts = [Group(r, world).share(n) for r in range(world)]
            assert sum((list(range(n))[p] for p in parts), []) == list(range(n))
            assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_one_process_group_is_a_no_op():
    g = Group()
    t = torch.arange(6.0).reshape(3, 2)
    assert g.gather_rows(t) is t
    before = t.clone()
    g.average_([t])
    assert torch.equal(t, before)
    assert g.gather_objects("x") == ["x"] and g.broadcast_object(3) == 3
