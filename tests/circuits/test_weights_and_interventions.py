"""Weights-only tables against the frozen model's own direct effects, and interventions against ground truth."""

from __future__ import annotations

import copy

import pytest
import torch
from circuit_helpers import replacement_for

from transcoders.circuits import weights as W
from transcoders.circuits.interventions import Edit, Measure, feature_acts, intervene, parse_edit, random_edits, run_model
from transcoders.circuits.targets import parse_target
from transcoders.dictionary import directions as FW
from transcoders.errors import CircuitError


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma2", "llama+clt", "gemma2+clt"])
def rep(request):
    return replacement_for(request.param, skip_layers=())


@pytest.fixture(scope="module")
def fp(rep):
    return rep.trace([torch.randint(3, 120, (8,), generator=torch.Generator().manual_seed(2))])[0]


def proportional(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a = c · b`` for one positive c: weights-only scores leave out the norms' positive denominators."""
    cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
    return float(cos) > 1 - 1e-5


def test_deembedding_is_the_direct_token_path(rep, fp):
    pos, f = 3, 5
    v, _ = fp.feature_vector(0, f, pos)
    E = FW.embedding_matrix(rep.adapter)
    full = W.deembedding(rep, 0, f, k=E.shape[0])
    scores = torch.zeros(E.shape[0])
    for i, s in full.top:
        scores[i] = s
    assert proportional(scores, E @ v)


def test_ov_deembedding_is_the_frozen_head_path(rep, fp):
    L, f, pos, src, head = 2, 7, 6, 2, 1
    v, _ = fp.feature_vector(L, f, pos)
    child, _ = fp.attn_child(1, head, src, v, pos)  # what head 1.1 moves from token `src`, in the residual stream
    assert proportional(W.ov_back(rep, 1, head, W.encoder_direction(rep, L, f)), child)


def test_logit_effects_and_pullbacks_are_direct_effects(rep, fp):
    L, f, pos = 1, 4, 5
    effects = W.logit_effects(rep, L, f, k=rep.W_U.shape[1])
    got = torch.zeros(rep.W_U.shape[1])
    for i, s in effects.top:
        got[i] = s
    dec = written(rep, fp, L, pos)[f]
    frozen = torch.stack([fp.final_norm.back(rep.W_U[:, t], pos) @ dec for t in range(rep.W_U.shape[1])])
    assert proportional(got, frozen)
    pb = W.pullback(rep, 2, 3, 0, k=rep.tset[0].width)
    got = torch.zeros(rep.tset[0].width)
    for i, s in pb.top:
        got[i] = s
    v, _ = fp.feature_vector(2, 3, pos)
    dec0 = written(rep, fp, 0, pos, below=2)
    assert proportional(got, dec0 @ v)
    top = W.top_connections(rep, 0, 2, k=3)
    i, j, val = top[0]
    assert abs(val) >= abs(top[-1][2])
    full = (dec0 @ W.encoder_direction(rep, 2, j))[i]
    assert val == pytest.approx(float(full), rel=1e-4)


def written(rep, fp, L: int, pos: int, below: int | None = None) -> torch.Tensor:
    """``[width, d]``: what layer L's features write into the residual stream read by layer ``below``'s MLP (or the
    logits), through each post-MLP norm's gain (its denominator at ``pos`` divided out): one decoder block per
    MLP output written, summed (one block for a per-layer transcoder)."""
    out = 0
    for m in rep.tset.targets(L):
        if below is not None and m >= below:
            continue
        (w,) = [w for w in rep.tset.writers(m) if w.source == L]
        norm = fp.layers[m].mlp_out_norm
        out = out + (w.W if norm is None else norm.back(w.W, pos) / norm.inv[pos])
    return out


def test_no_edit_is_the_real_model_and_a_last_layer_edit_is_exact(rep, fp):
    ids = fp.ids
    with torch.no_grad():
        real = rep.lm.model(input_ids=ids[None]).logits[0, -1]
    clean = run_model(rep, ids).logits
    cap = rep.adapter.logit_softcap
    assert torch.allclose(torch.tanh(clean / cap) * cap if cap else clean, real, atol=1e-4)
    # clamp a last-layer feature at the last token: only the final norm lies between the edit and the logits
    L, T = rep.n_layers - 1, ids.numel()
    f = 11
    z = rep.tset[L].encode(fp.layers[L].mlp_in[T - 1])
    delta = (5.0 - z[f]) * rep.tset[L].W_dec[f]
    post = rep.adapter.mlp_out_norm(L)
    mlp_out = fp.layers[L].mlp_out[T - 1]
    write = (post(mlp_out + delta) - post(mlp_out)) if post is not None else delta
    expected = rep.adapter.final_norm()(fp.final[T - 1] + write) @ rep.W_U
    if rep.b_U is not None:
        expected = expected + rep.b_U
    edited = run_model(rep, ids, [Edit(L, f, -1, "clamp", 5.0)]).logits
    assert torch.allclose(edited, expected, atol=1e-4 * float(expected.abs().max()))
    # splicing the last layer's transcoder in: its output replaces the MLP's, the error is gone (a CLT's last
    # layer: what every layer's features write there)
    x = fp.layers[L].mlp_in[T - 1]
    codes = {w.source: rep.tset[w.source].encode(fp.layers[w.source].mlp_in[T - 1]) for w in rep.tset.writers(L)}
    tc_out = rep.tset.decode(L, codes, x)
    if not rep.tset.is_clt:
        assert torch.equal(tc_out, rep.tset[L].decode(z, x))
    write = (post(tc_out) - post(mlp_out)) if post is not None else tc_out - mlp_out
    expected = rep.adapter.final_norm()(fp.final[T - 1] + write) @ rep.W_U
    if rep.b_U is not None:
        expected = expected + rep.b_U
    spliced = run_model(rep, ids, splice=(L,)).logits
    assert torch.allclose(spliced, expected, atol=1e-4 * float(expected.abs().max()))
    assert not torch.allclose(spliced, clean, atol=1e-3 * float(expected.abs().max()))


def test_patches_and_ablations(rep, fp):
    ids = fp.ids
    top = int(fp.logits().argmax())
    m = Measure("logit", (top,))
    group = parse_target(fp, "logit:#5,#6-#7")  # a group target reads the same from the real model as from the frozen one
    assert Measure(group.label, group.tokens, group.coefs).value(rep, run_model(rep, ids)) == pytest.approx(
        group.value(fp), rel=1e-4, abs=1e-4)
    same = intervene(rep, ids, m, [Edit(1, None, None, "patch")], patch_ids=ids)
    assert same.edited == pytest.approx(same.clean, rel=1e-5)
    # patching layer 1 from another prompt == clamping every layer-1 feature to its value there
    other = torch.randint(3, 120, (8,), generator=torch.Generator().manual_seed(9))
    moved = intervene(rep, ids, m, [Edit(1, None, None, "patch")], patch_ids=other)
    theirs = feature_acts(rep, other, [1])[1]
    clamps = [Edit(1, f, p, "clamp", float(theirs[p, f])) for p in range(8) for f in range(theirs.shape[1])]
    clamped = intervene(rep, ids, m, clamps)
    assert moved.edited == pytest.approx(clamped.edited, rel=1e-5)
    assert abs(moved.edited - moved.clean) > 1e-6
    t = fp.layers[2]
    edits = [Edit(2, int(f), int(p), "zero") for f, p in zip(t.acts_idx[:5], t.acts_pos[:5])]
    out = intervene(rep, ids, Measure("f", layer=2, feature=int(t.acts_idx[0]), pos=int(t.acts_pos[0])), edits)
    assert out.edited == pytest.approx(out.clean)  # zeroing layer-2 features cannot move layer 2's own input


def test_random_control_draws_other_active_features_at_the_same_place(rep, fp):
    import random

    t = fp.layers[2]
    edits = [Edit(2, int(f), int(p), "zero") for f, p in zip(t.acts_idx[:4], t.acts_pos[:4])]
    active = set(zip(t.acts_idx.tolist(), t.acts_pos.tolist()))
    rng = random.Random(0)
    for _ in range(5):
        drawn = random_edits(fp, edits, rng)
        assert [(d.layer, d.pos) for d in drawn] == [(e.layer, e.pos) for e in edits]
        for d in drawn:
            assert (d.feature, d.pos) in active
            assert (2, d.feature, d.pos) not in {(e.layer, e.feature, e.pos) for e in edits} or \
                sum(p == d.pos for _, p in active) <= sum(e.pos == d.pos for e in edits)


def test_edit_specs():
    assert parse_edit("3:17@-1", "zero") == Edit(3, 17, -1, "zero", 0.0)
    assert parse_edit("3:17=2.5", "clamp") == Edit(3, 17, None, "clamp", 2.5)
    assert parse_edit("3:*@4*0.5", "scale") == Edit(3, None, 4, "scale", 0.5)
    for spec, op in (("3:17", "clamp"), ("3:17=1", "zero"), ("x", "zero"), ("3:17*2", "clamp")):
        with pytest.raises(CircuitError):
            parse_edit(spec, op)


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_a_clt_spliced_and_edited_is_evaluations_clt(family):
    """Interventions on a cross-layer transcoder against evaluation's own splicing of it (another implementation):
    every MLP replaced by the CLT gives the same logits, and zeroing a layer-0 feature everywhere is the CLT with that
    feature's decoder row removed from every block it writes (to all three layers)."""
    from contextlib import ExitStack

    from transcoders.evaluation.measure import _clt_splicers
    from transcoders.models.hooks import patch_mlp

    rep = replacement_for(f"{family}+clt")
    ids = torch.randint(3, 120, (8,), generator=torch.Generator().manual_seed(4))
    layers = tuple(range(rep.n_layers))
    cap = rep.adapter.logit_softcap

    def evaluations(dicts) -> torch.Tensor:
        with ExitStack() as stack, torch.no_grad():
            for L, fn in _clt_splicers(dicts, set(layers), torch.ones(1, ids.numel(), dtype=torch.bool)).items():
                stack.enter_context(patch_mlp(rep.lm, L, fn))
            return rep.lm.model(input_ids=ids[None]).logits[0, -1]

    def ours(edits=()) -> torch.Tensor:
        logits = run_model(rep, ids, list(edits), splice=layers).logits
        return torch.tanh(logits / cap) * cap if cap else logits

    dicts = list(rep.tset.transcoders.values())
    assert len(rep.tset.targets(0)) == rep.n_layers
    spliced = evaluations(dicts)
    assert torch.allclose(ours(), spliced, atol=1e-5 * float(spliced.abs().max()))
    fp = rep.trace(ids)[0]
    f = int(fp.layers[0].acts_idx[0])
    without = [copy.deepcopy(d) for d in dicts]
    with torch.no_grad():
        without[0].W_dec[f] = 0
    removed = evaluations(without)
    assert not torch.allclose(removed, spliced, atol=1e-3)
    assert torch.allclose(ours([Edit(0, f, None, "zero")]), removed, atol=1e-5 * float(removed.abs().max()))
    # in the real model (nothing spliced), the edit shifts every MLP output the feature writes to by its block
    z0: dict[str, torch.Tensor] = {}

    def shift(m: int):
        def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if m == 0:
                z0["z"] = rep.tset[0].encode(x[0])[:, f]
            (w,) = [w for w in rep.tset.writers(m) if w.source == 0]
            return y - (z0["z"][:, None] * w.W[f])[None]
        return fn

    with ExitStack() as stack, torch.no_grad():
        for m in layers:
            stack.enter_context(patch_mlp(rep.lm, m, shift(m)))
        by_hand = rep.lm.model(input_ids=ids[None]).logits[0, -1]
    edited = run_model(rep, ids, [Edit(0, f, None, "zero")]).logits
    edited = torch.tanh(edited / cap) * cap if cap else edited
    assert torch.allclose(edited, by_hand, atol=1e-5 * float(by_hand.abs().max()))
