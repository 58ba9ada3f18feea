"""The frozen-linear replacement against ground truth, on a tiny random model of every family.

- run forwards with nothing edited, it reproduces the real model's residual stream, pre-activations and logits;
- one-hop contributions add up to each node's real pre-activation (or logit), and every child's value is what its
  own vector reads from the residual stream;
- every edge from the batched backward pass equals the change measured by perturbing that source in the frozen
  model (as circuit-tracer's tests do), and each row adds up to the target's value.
"""

from __future__ import annotations

import pytest
import torch

from transcoders.circuits import Replacement

REL = 1e-4


def close(a, b, scale=None):
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    scale = float(b.abs().max()) if scale is None else scale
    return float((a - b).abs().max()) <= REL * max(scale, 1.0)


def targets_of(rep: Replacement, fp, n_per_layer: int = 3):
    """Up to n active features per layer (at different positions), as (layer, feature, pos)."""
    out = []
    for L in rep.tset.layers:
        t = fp.layers[L]
        for j in range(min(n_per_layer, t.acts_pos.numel())):
            j = (j * 7919) % t.acts_pos.numel()
            out.append((L, int(t.acts_idx[j]), int(t.acts_pos[j])))
    return out


def test_frozen_forward_reproduces_the_model(rep: Replacement, prompts):
    fp = rep.trace(prompts)[0]
    out = fp.forward()
    for L in range(rep.n_layers):
        scale = float(fp.layers[L].resid_pre.abs().max())
        assert close(out["resid"][2 * L], fp.layers[L].resid_pre, scale), f"resid before block {L}"
        reads = fp.layers[L].resid_pre if rep.parallel else fp.layers[L].resid_mid
        assert close(out["resid"][rep.mid_stage(L)], reads, scale), f"resid read by MLP {L}"
        assert close(out["pre"][L], fp.pre_acts(L)), f"pre-activations of layer {L}"
    assert close(out["resid"][rep.final_stage], fp.final)
    with torch.no_grad():
        real = rep.lm.model(input_ids=prompts[0][None]).logits[0]
    logits = out["logits"]
    if rep.adapter.logit_softcap:
        logits = torch.tanh(logits / rep.adapter.logit_softcap) * rep.adapter.logit_softcap
    assert close(logits, real)
    # the summed writes are the residual stream too
    for L in range(rep.n_layers):
        assert close(fp.resid(2 * L), fp.layers[L].resid_pre)


def test_contributions_sum_to_the_real_pre_activation(rep: Replacement, prompts):
    fp = rep.trace(prompts)[1]
    for L, f, pos in targets_of(rep, fp):
        v, c = fp.feature_vector(L, f, pos)
        con = fp.contributions(v, rep.mid_stage(L), pos, c)
        real = float(fp.pre_acts(L)[pos, f])
        assert close(con.total(), real, abs(real)), (L, f, pos, con.total(), real)
        assert close(con.value, real, abs(real))
        # every child's vector reads its own contribution from the residual stream
        for Ls, (idx, contrib) in con.features.items():
            for i, cval in zip(idx.tolist()[:2], contrib.tolist()[:2]):
                cv, cc = fp.feature_child(Ls, i, v, rep.mid_stage(L), pos)
                got = float(cv @ fp.resid(rep.mid_stage(Ls))[pos]) + cc
                assert close(got, cval, abs(real)), ("feature child", Ls, i)
        for La, grid in con.attn.items():
            h, s = divmod(int(grid.abs().argmax()), grid.shape[1])
            cv, cc = fp.attn_child(La, h, s, v, pos)
            assert close(float(cv @ fp.resid(2 * La)[s]) + cc, float(grid[h, s]), abs(real)), ("attn child", La, h, s)
        for Lk, val in con.skip.items():
            cv, cc = fp.skip_child(Lk, v, pos)
            assert close(float(cv @ fp.resid(rep.mid_stage(Lk))[pos]) + cc, val, abs(real)), ("skip child", Lk)
    # a logit: the last position's real logit (before softcapping)
    tok = int(fp.logits().argmax())
    v, c = fp.logit_vector(rep.W_U[:, tok], fp.n_tokens - 1, 0.0 if rep.b_U is None else float(rep.b_U[tok]))
    con = fp.contributions(v, rep.final_stage, fp.n_tokens - 1, c)
    assert close(con.total(), float(fp.logits()[tok]))


def test_every_edge_equals_a_perturbation_of_the_frozen_model(rep: Replacement, prompts):
    fp = rep.trace(prompts, keep_bos=True)[0]  # every position's features and errors are nodes
    feats = targets_of(rep, fp, n_per_layer=4)
    rows = [(rep.mid_stage(L), pos, fp.feature_vector(L, f, pos)[0]) for L, f, pos in feats]
    consts = torch.tensor([fp.feature_vector(L, f, pos)[1] for L, f, pos in feats])
    tok = int(fp.logits().argmax())
    rows.append((rep.final_stage, fp.n_tokens - 1, fp.final_norm.back(rep.W_U[:, tok], fp.n_tokens - 1)))
    logit_const = float(fp.final_norm.const(rep.W_U[:, tok])) + (0.0 if rep.b_U is None else float(rep.b_U[tok]))
    consts = torch.cat([consts, torch.tensor([logit_const])])
    edges = fp.backward(rows, consts)

    base = fp.forward()

    def readout(out) -> torch.Tensor:
        vals = [out["pre"][L][pos, f] for L, f, pos in feats]
        return torch.stack(vals + [out["logits"][fp.n_tokens - 1, tok]])

    base_vals = readout(base)
    # each row adds up to its target's real value
    real = torch.stack([fp.pre_acts(L)[pos, f] for L, f, pos in feats] + [fp.logits()[tok]])
    assert close(edges.total(), real)
    assert close(base_vals, real)

    # features: doubling an activation moves every target by exactly that feature's edge
    for L in rep.tset.layers:
        t = fp.layers[L]
        for j in range(0, t.acts_pos.numel(), max(1, t.acts_pos.numel() // 5)):
            z = t.dense_acts(rep.tset[L].width)
            z[t.acts_pos[j], t.acts_idx[j]] *= 2
            moved = readout(fp.forward(acts={L: z})) - base_vals
            assert close(moved, edges.features[L][:, j], float(real.abs().max())), ("feature", L, j)
    # errors: doubling the error at (L, p)
    for L in range(rep.n_layers):
        for p in (0, fp.n_tokens // 2, fp.n_tokens - 1):
            e = fp.layers[L].error.clone()
            e[p] *= 2
            moved = readout(fp.forward(errors={L: e})) - base_vals
            assert close(moved, edges.errors[:, L, p], float(real.abs().max())), ("error", L, p)
    # tokens: doubling the embedding at p
    for p in range(fp.n_tokens):
        d = torch.zeros_like(fp.embeds)
        d[p] = fp.embeds[p]
        moved = readout(fp.forward(delta={0: d})) - base_vals
        assert close(moved, edges.tokens[:, p], float(real.abs().max())), ("token", p)


def test_a_batch_traces_like_single_prompts(rep: Replacement, prompts):
    both = rep.trace(prompts)
    alone = rep.trace([prompts[1]])[0]
    assert both[1].n_tokens == alone.n_tokens == prompts[1].numel()
    for L in range(rep.n_layers):
        assert close(both[1].layers[L].resid_mid, alone.layers[L].resid_mid)
        assert close(both[1].layers[L].pattern, alone.layers[L].pattern)
        assert torch.equal(both[1].layers[L].acts_idx, alone.layers[L].acts_idx)
    assert close(both[1].final, alone.final)


def test_a_layer_without_a_transcoder_is_an_error_term(prompts):
    from circuit_helpers import random_set, scaled_tiny_lm

    lm = scaled_tiny_lm("llama")
    rep = Replacement(lm, random_set(lm, layers=[0, 2]))
    fp = rep.trace(prompts)[0]
    assert torch.equal(fp.layers[1].error, fp.layers[1].mlp_out)
    L, f, pos = targets_of(rep, fp)[-1]
    assert L == 2
    v, c = fp.feature_vector(L, f, pos)
    con = fp.contributions(v, rep.mid_stage(L), pos, c)
    assert 1 not in con.features and 1 in con.error
    assert close(con.total(), float(fp.pre_acts(L)[pos, f]))


@pytest.mark.parametrize("activation", ["relu", "jumprelu"])
def test_other_activations(activation, prompts):
    from circuit_helpers import random_set, scaled_tiny_lm

    lm = scaled_tiny_lm("gpt2")
    rep = Replacement(lm, random_set(lm, activation=activation, skip_layers=()))
    fp = rep.trace(prompts)[0]
    feats = targets_of(rep, fp)
    assert feats, "some features must be active"
    for L, f, pos in feats:
        v, c = fp.feature_vector(L, f, pos)
        assert close(fp.contributions(v, rep.mid_stage(L), pos, c).total(), float(fp.pre_acts(L)[pos, f]))


def test_the_bos_position_is_a_constant_by_default(rep: Replacement, prompts):
    """As circuit-tracer: no feature or error nodes at position 0 (the same BOS state in every prompt); what they
    write moves into the bias, every other edge is unchanged, and each row still adds up to its real value."""
    keep, const = rep.trace(prompts, keep_bos=True)[0], rep.trace(prompts)[0]
    assert const.constant_pos == 0 and keep.constant_pos is None
    feats = [(L, f, pos) for L, f, pos in targets_of(rep, keep, n_per_layer=4) if pos > 0]
    rows = [(rep.mid_stage(L), pos, keep.feature_vector(L, f, pos)[0]) for L, f, pos in feats]
    consts = torch.tensor([keep.feature_vector(L, f, pos)[1] for L, f, pos in feats])
    e_keep, e_const = keep.backward(rows, consts), const.backward(rows, consts)
    real = torch.stack([keep.pre_acts(L)[pos, f] for L, f, pos in feats])
    assert close(e_const.total(), real) and close(e_keep.total(), real)
    bos_writes, n_bos = torch.zeros(len(rows)), 0
    for L in rep.tset.layers:
        tk, tc = keep.layers[L], const.layers[L]
        assert not (tc.acts_pos == 0).any()  # position 0's features are no nodes
        at_bos = tk.acts_pos == 0
        n_bos += int(at_bos.sum())
        assert torch.equal(tc.acts_idx, tk.acts_idx[~at_bos]) and torch.equal(tc.acts_pos, tk.acts_pos[~at_bos])
        assert close(e_const.features[L], e_keep.features[L][:, ~at_bos], float(real.abs().max()))
        bos_writes += e_keep.features[L][:, at_bos].sum(1)
    assert n_bos > 0 and (e_const.errors[:, :, 0] == 0).all()
    assert close(e_const.errors[:, :, 1:], e_keep.errors[:, :, 1:], float(real.abs().max()))
    assert close(e_const.tokens, e_keep.tokens, float(real.abs().max()))
    moved = e_keep.errors[:, :, 0].sum(1) + bos_writes
    assert close(e_const.bias, e_keep.bias + moved, float(real.abs().max()))
