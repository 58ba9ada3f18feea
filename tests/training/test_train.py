"""Training on a tiny random model: it learns, it writes a valid run folder, it resumes exactly after SIGKILL."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from transcoders.dictionary import load_dictionary
from transcoders.training import TrainConfig, train


def cfg_for(model_dir, corpus, out, **kw):
    base = dict(model=model_dir, corpus=corpus, layers="1", out=str(out), width=128, k=8, tokens=20480,
                batch_size=256, lr=3e-3, ctx_len=32, chunk_tokens=4096, forward_batch=16, checkpoint_every=10,
                dead_tokens=2048)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("activation", ["topk", "relu", "batchtopk", "jumprelu"])
def test_training_learns_and_reloads(tiny_model_dir, tiny_corpus, tmp_path, activation):
    from transcoders.data.activations import ActivationSource
    from transcoders.data.packing import load_split
    from transcoders.models import load_model

    cfg = cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "run", activation=activation, l1=1e-3 if activation == "relu" else 0)
    (run,) = train(cfg, progress=False)
    assert (run / "config.json").exists() and (run / "weights.safetensors").exists()
    assert not (run / "checkpoint.safetensors").exists()
    d = load_dictionary(run)
    assert d.cfg.layer == 1 and d.cfg.width == 128 and d.cfg.activation == activation
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    fvu = [e["layers"]["1"]["fvu"] for e in log]
    assert fvu[-1] < fvu[0], fvu  # it kept learning
    # The saved (scale-folded) dictionary works on raw activations of held-out text.
    lm = load_model(tiny_model_dir)
    ctx = load_split(tiny_corpus, lm.tokenizer, "eval", ctx_len=32, max_tokens=32 * 32)
    src = ActivationSource(lm, ctx, [1], chunk_contexts=32)
    x, y = src.harvest(ctx.tokens[:32])[1]
    with torch.no_grad():
        fvu_eval = ((y - d(x)).pow(2).sum() / (y - y.mean(0)).pow(2).sum()).item()
        l0 = (d.encode(x) > 0).sum(-1).float().mean().item()
    assert fvu_eval < 0.6
    if activation == "topk":
        assert l0 <= 8
    if activation == "batchtopk":
        assert 2 < l0 < 24  # the inference threshold keeps about k per token
    if activation == "jumprelu":
        assert 0 < l0 < 64 and d.thresholds().min() > 0
    assert x.shape[0] < 32 * 32  # special (BOS) positions were dropped


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_target_l0_steers_the_sparsity_penalty(tiny_model_dir, tiny_corpus, tmp_path, activation):
    """No λ chosen by hand: the controller moves λ until the training L0 sits at the target."""
    target = 12
    cfg = cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "run", activation=activation, target_l0=target, tokens=81920)
    (run,) = train(cfg, progress=False)
    log = [json.loads(line)["layers"]["1"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["l1"] != log[0]["l1"]  # λ moved
    final_l0 = sum(e["l0"] for e in log[-3:]) / 3
    assert abs(final_l0 - target) / target < 0.25, [round(e["l0"], 1) for e in log]


def test_sae_sites_and_skip_transcoder_train(tiny_model_dir, tiny_corpus, tmp_path):
    from transcoders.data.activations import ActivationSource
    from transcoders.data.packing import load_split
    from transcoders.models import load_model

    lm = load_model(tiny_model_dir)
    ctx = load_split(tiny_corpus, lm.tokenizer, "eval", ctx_len=32, max_tokens=32 * 32)
    mlp_in, mlp_out = ActivationSource(lm, ctx, [1], chunk_contexts=32).harvest(ctx.tokens[:32])[1]
    for name, kw, target, hooks in [
        ("sae-in", dict(kind="sae", sae_site="mlp-in"), mlp_in, ("blocks.1.mlp.in", "blocks.1.mlp.in")),
        ("sae-out", dict(kind="sae"), mlp_out, ("blocks.1.mlp.out", "blocks.1.mlp.out")),
        ("skip", dict(kind="skip-transcoder"), mlp_out, ("blocks.1.mlp.in", "blocks.1.mlp.out")),
    ]:
        (run,) = train(cfg_for(tiny_model_dir, tiny_corpus, tmp_path / name, tokens=8192, **kw), lm=lm, progress=False)
        d = load_dictionary(run)
        assert (d.cfg.hook_in, d.cfg.hook_out) == hooks
        x = mlp_out if hooks[0].endswith(".out") else mlp_in
        with torch.no_grad():
            fvu = ((target - d(x)).pow(2).sum() / (target - target.mean(0)).pow(2).sum()).item()
        assert fvu < 0.8, (name, fvu)
        if name == "skip":
            assert d.W_skip.abs().sum() > 0  # the skip path was learned from its zero init


def test_multi_layer_from_one_pass_writes_a_set(tiny_model_dir, tiny_corpus, tmp_path):
    cfg = cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "set", layers="0-2", tokens=4096)
    runs = train(cfg, progress=False)
    assert [r.name for r in runs] == ["layer_00", "layer_01", "layer_02"]
    assert [load_dictionary(r).cfg.layer for r in runs] == [0, 1, 2]


def test_activation_cache_gives_the_same_result(tiny_model_dir, tiny_corpus, tmp_path):
    cache = tmp_path / "acts"
    a = train(cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "a", tokens=8192, cache_activations=str(cache)), progress=False)[0]
    assert sorted(p.name for p in cache.glob("chunk_*.safetensors"))  # written on the first run
    mtimes = {p: p.stat().st_mtime_ns for p in cache.glob("chunk_*")}
    b = train(cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "b", tokens=8192, cache_activations=str(cache)), progress=False)[0]
    assert {p: p.stat().st_mtime_ns for p in cache.glob("chunk_*")} == mtimes  # read, not re-harvested
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def _cli(*args, env=None):
    return [sys.executable, "-m", "transcoders", *map(str, args)]


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_model_dir, tiny_corpus, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    common = ["--model", tiny_model_dir, "--corpus", tiny_corpus, "--layers", "1", "--width", "128", "--k", "8",
              "--tokens", "61440", "--batch-size", "256", "--ctx-len", "32", "--chunk-tokens", "4096",
              "--forward-batch", "16", "--checkpoint-every", "7", "--dead-tokens", "2048", "--quiet"]
    # the uninterrupted reference
    ref = tmp_path / "ref"
    subprocess.run(_cli("train", *common, "--out", ref), check=True, env=env, capture_output=True, timeout=600)
    # the same run, killed (SIGKILL) twice at checkpoints, then resumed to the end
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli("train", *common, "--out", run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kills = 0
    for attempt in range(2):
        ck = run / "checkpoint.safetensors"
        seen = ck.stat().st_mtime_ns if ck.exists() else None
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if ck.exists() and ck.stat().st_mtime_ns != seen:
                time.sleep(0.05 * attempt)  # second kill lands between checkpoints
                break
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        assert not (run / "config.json").exists(), "the run finished before it could be killed: make it longer"
        if attempt == 0:
            proc = subprocess.Popen(_cli("train", "--resume", run, "--quiet"), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    assert kills == 2
    res = subprocess.run(_cli("train", "--resume", run, "--quiet"), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    wr, wk = load_file(str(ref / "weights.safetensors")), load_file(str(run / "weights.safetensors"))
    assert wr.keys() == wk.keys()
    for k in wr:
        torch.testing.assert_close(wk[k], wr[k], rtol=1e-5, atol=1e-6)
    # resuming a finished run is a no-op, not an error
    again = subprocess.run(_cli("train", "--resume", run, "--quiet"), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished" in again.stdout


@pytest.mark.parametrize("activation,extra", [("relu", {"target_l0": 10}), ("jumprelu", {"target_l0": 10}), ("batchtopk", {})])
def test_resume_restores_controller_and_threshold_state(tiny_model_dir, tiny_corpus, tmp_path, monkeypatch, activation, extra):
    """A crash between checkpoints, then --resume: the λ controller's state, JumpReLU thresholds and the
    BatchTopK running threshold come back, so the result equals the uninterrupted run's."""
    import transcoders.training.trainer as T

    kw = dict(activation=activation, tokens=12288, checkpoint_every=10, **extra)
    (ref,) = train(cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "ref", **kw), progress=False)
    orig, calls = T.LayerState.step, {"n": 0}

    def crashing_step(self, *a):
        calls["n"] += 1
        if calls["n"] == 25:  # after the checkpoint at step 20
            raise KeyboardInterrupt
        return orig(self, *a)

    monkeypatch.setattr(T.LayerState, "step", crashing_step)
    cfg = cfg_for(tiny_model_dir, tiny_corpus, tmp_path / "run", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(T.LayerState, "step", orig)
    (run,) = train(cfg, resume=True, progress=False)
    wr, wk = load_file(str(ref / "weights.safetensors")), load_file(str(run / "weights.safetensors"))
    assert wr.keys() == wk.keys()
    for k in wr:
        torch.testing.assert_close(wk[k], wr[k], rtol=1e-5, atol=1e-6)


def test_many_layers_shrink_the_shuffle_buffer_to_fit_memory():
    from transcoders.training import TrainConfig
    from transcoders.training.trainer import CHUNK_BUDGET, chunk_tokens, layer_ranges

    cfg = TrainConfig()
    assert chunk_tokens(cfg, 1, 576) == cfg.chunk_tokens  # one layer: as asked
    n = chunk_tokens(cfg, 30, 576)  # the default model's 30 layers: 18 GB at the default would not fit
    assert n < cfg.chunk_tokens and n * 30 * 2 * 576 * 4 <= CHUNK_BUDGET
    assert layer_ranges(list(range(30))) == "0-29" and layer_ranges([2, 6, 7, 8]) == "2,6-8"


def test_a_chunk_used_in_part_is_harvested_in_part_and_resumes_the_same(tiny_model_dir, tiny_corpus):
    """Dropping BOS leaves a 32-context chunk a little short of 32 x 32 / 64 = 16 batches of 64 tokens; a run of 16
    batches must not harvest a whole second chunk for its last batch, and a resumed run sees the same batches."""
    from transcoders.data.activations import ActivationSource
    from transcoders.data.packing import load_split
    from transcoders.models import load_model

    lm = load_model(tiny_model_dir)
    ctx = load_split(tiny_corpus, lm.tokenizer, "train", ctx_len=32, max_tokens=32 * 96)
    src = ActivationSource(lm, ctx, [1], chunk_contexts=32)
    harvested = []
    real = src.harvest
    src.harvest = lambda tokens, layers=None: (harvested.append(tokens.shape[0]), real(tokens, layers))[1]
    full = list(itertools.islice(src.batches(64, remaining=16), 16))
    assert harvested[0] == 32 and 1 <= harvested[1] <= 4  # the second chunk: only the contexts its one batch needs
    assert [(c, b) for c, b, _ in full][-2:] == [(0, 14), (1, 0)]
    partial = harvested[1]
    # resume at batch 15 (chunk 1, batch 0) with one batch left: the same partial chunk, the same batch
    harvested.clear()
    (c, b, pairs), = itertools.islice(src.batches(64, start_chunk=1, start_batch=0, remaining=1), 1)
    assert (c, b) == (1, 0) and harvested == [partial]
    assert torch.equal(pairs[1][0], full[-1][2][1][0]) and torch.equal(pairs[1][1], full[-1][2][1][1])
