"""Adapters against the models' own forward passes, for every family.

The block test rebuilds every block from the adapter's parts (norms, attention output, MLP) and checks each
intermediate against what the real forward computed, from the embedding rows to the logits, so an adapter that
names a wrong module (or forgets a norm, a scale or a bias) fails here.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import KINDS, build_tiny, make_tiny_lm

from transcoders.errors import ModelError
from transcoders.models import SUPPORTED_FAMILIES, Adapter, LoadedModel, adapter_for, capture
from transcoders.models.adapters import HOOK_POINTS

ATOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, atol=ATOL, rtol=1e-4)


def all_points(adapter: Adapter) -> list[str]:
    return [f"blocks.{L}.{p}" for L in range(adapter.n_layers) for p in HOOK_POINTS]


@torch.no_grad()
def test_blocks_rebuilt_from_adapter_parts(lm: LoadedModel, input_ids):
    a = lm.adapter
    acts = capture(lm, input_ids, all_points(a), stop_early=False)
    out = lm.model(input_ids=input_ids, output_hidden_states=True)

    # the residual stream starts as scaled embedding rows (+ learned positions)
    resid0 = a.embed().weight[input_ids] * a.embed_scale
    if a.pos_embed() is not None:
        resid0 = resid0 + a.pos_embed().weight[torch.arange(input_ids.shape[1])]
    assert close(acts["blocks.0.resid.pre"], resid0)

    for L in range(a.n_layers):
        blk = {p: acts[f"blocks.{L}.{p}"] for p in HOOK_POINTS}
        resid_pre = blk["resid.pre"]
        assert close(resid_pre, out.hidden_states[L])  # HF's own record of the block inputs
        assert close(blk["attn.in"], a.attn_in_norm(L)(resid_pre))
        attn = blk["attn.out"] if a.attn_out_norm(L) is None else a.attn_out_norm(L)(blk["attn.out"])
        resid_mid = resid_pre if a.parallel_residual else resid_pre + attn
        assert close(blk["resid.mid"], resid_mid)
        # the MLP input really is the pre-MLP norm's output, and the MLP maps it to the recorded output
        assert close(blk["mlp.in"], a.mlp_in_norm(L)(resid_mid))
        assert close(a.mlp(L)(blk["mlp.in"]), blk["mlp.out"])
        mlp = blk["mlp.out"] if a.mlp_out_norm(L) is None else a.mlp_out_norm(L)(blk["mlp.out"])
        assert close(blk["resid.post"], resid_mid + mlp + (attn if a.parallel_residual else 0))
        if L + 1 < a.n_layers:
            assert torch.equal(blk["resid.post"], acts[f"blocks.{L + 1}.resid.pre"])

    # ...and the last residual gives the logits
    final = acts[f"blocks.{a.n_layers - 1}.resid.post"]
    assert close(a.logits(final), out.logits)
    by_hand = a.final_norm()(final) @ a.unembed()
    if a.unembed_bias() is not None:
        by_hand = by_hand + a.unembed_bias()
    if a.logit_softcap is not None:
        assert not close(by_hand, out.logits)  # the softcap matters in these tiny models...
        by_hand = a.logit_softcap * torch.tanh(by_hand / a.logit_softcap)
    assert close(by_hand, out.logits)  # ...and is the only thing between the final norm and the logits
    # logits before the softcap (what circuits attribute) give the model's own next-token probabilities
    raw = a.logits(final, softcap=False)
    assert close(raw, by_hand if a.logit_softcap is None else a.final_norm()(final) @ a.unembed()
                 + (0 if a.unembed_bias() is None else a.unembed_bias()))
    assert close(a.probabilities(raw), out.logits.softmax(-1))


@torch.no_grad()
def test_ov_weights_rebuild_attention_output(lm: LoadedModel, input_ids):
    """Attention output = sum over heads of pattern @ (x W_V + b_V) @ W_O, plus b_O, for x the normalised input."""
    a = lm.adapter
    seen = {}

    def hook(module, args, kwargs, output):
        seen["x"] = args[0] if args else kwargs["hidden_states"]  # [batch, seq, d_model]
        seen["out"], seen["pattern"] = output[0], output[1]  # [batch, seq, d_model], [batch, head, q, k]

    for L in range(a.n_layers):
        handle = a.attn(L).register_forward_hook(hook, with_kwargs=True)
        try:
            lm.model(input_ids=input_ids)
        finally:
            handle.remove()
        W_V, W_O = a.ov_weights(L)
        b_V, b_O = a.ov_biases(L)
        assert W_V.shape == (a.n_heads, a.d_model, a.d_head)
        assert W_O.shape == (a.n_heads, a.d_head, a.d_model)
        assert seen["pattern"].shape[1] == a.n_heads
        v = torch.einsum("bkd,hde->bhke", seen["x"], W_V)  # [batch, head, key, d_head]
        if b_V is not None:
            assert b_V.shape == (a.n_heads, a.d_head)
            v = v + b_V[None, :, None, :]
        z = seen["pattern"] @ v  # [batch, head, query, d_head]
        rebuilt = torch.einsum("bhqe,hed->bqd", z, W_O)
        if b_O is not None:
            rebuilt = rebuilt + b_O
        assert close(rebuilt, seen["out"]), f"layer {L}"


def test_dimensions_match_the_modules(lm: LoadedModel):
    a = lm.adapter
    assert a.n_layers == 3
    assert a.d_model == a.embed().weight.shape[1] == a.unembed().shape[0]
    assert a.vocab_size == a.unembed().shape[1] == a.embed().weight.shape[0]
    x = torch.randn(1, 2, a.d_model)
    for L in range(a.n_layers):
        assert a.mlp(L)(x).shape == x.shape
        # every MLP matrix maps between d_model and d_mlp (Linear [out, in] or GPT-2 Conv1D [in, out])
        assert all(set(p.shape) == {a.d_model, a.d_mlp} for p in a.mlp(L).parameters() if p.ndim == 2)
    W_V, _ = a.ov_weights(0)
    assert W_V.shape == (a.n_heads, a.d_model, a.d_head)


def test_gemma_decision_mlp_out_is_before_post_norm():
    """Gemma 2/3: mlp.out is the MLP module's own output; the post-feedforward norm stays in the model."""
    lm = make_tiny_lm("gemma2")
    a = lm.adapter
    layer = a.layer(1)
    assert a.mlp(1) is layer.mlp
    assert a.mlp_in_norm(1) is layer.pre_feedforward_layernorm
    assert a.mlp_out_norm(1) is layer.post_feedforward_layernorm
    assert a.attn_out_norm(1) is layer.post_attention_layernorm
    assert a.embed_scale == pytest.approx(32**0.5)
    assert make_tiny_lm("gemma").adapter.mlp_out_norm(0) is None  # Gemma 1 has no sandwich norms


def test_supported_families_cover_every_test_model():
    types = {t for ts in SUPPORTED_FAMILIES.values() for t in ts}
    assert {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "gemma", "gemma2", "gemma3_text"} <= types
    for kind in KINDS:
        model = build_tiny(kind)
        assert model.config.model_type in types
        assert adapter_for(model).family in SUPPORTED_FAMILIES


def test_unknown_model_type_is_a_model_error():
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_config(
        tf.OPTConfig(vocab_size=64, hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                     word_embed_proj_dim=16, max_position_embeddings=32)
    )  # fmt: skip
    for call in (lambda: adapter_for(model), lambda: LoadedModel.from_hf(model)):
        with pytest.raises(ModelError, match="'opt' is not supported.*llama"):
            call()


def test_bad_layer_and_bad_names_are_model_errors():
    a = make_tiny_lm("llama").adapter
    message = "layer 3 is out of range: this model has layers 0-2"
    for call in (
        lambda: a.check_layer(3),
        lambda: a.layer(3),
        lambda: a.mlp(3),
        lambda: a.ov_weights(3),
        lambda: a.hook_point("blocks.3.mlp.in"),
    ):
        with pytest.raises(ModelError, match=message):
            call()
    with pytest.raises(ModelError, match="layer -1 is out of range"):
        a.hook_point("blocks.-1.resid.pre")
    for name in ("blocks.0.mlp.middle", "mlp.in", "blocks.x.mlp.in", "blocks.0.mlp.in.extra"):
        with pytest.raises(ModelError, match="unknown hook point"):
            a.hook_point(name)


def test_hook_point_modules():
    a = make_tiny_lm("gpt2").adapter
    blocks = a.model.transformer.h
    assert a.hook_point("blocks.2.mlp.in") == (blocks[2].mlp, "input")
    assert a.hook_point("blocks.2.mlp.out") == (blocks[2].mlp, "output")
    assert a.hook_point("blocks.1.resid.pre") == (blocks[1], "input")
    assert a.hook_point("blocks.1.resid.post") == (blocks[1], "output")
    assert a.hook_point("blocks.0.attn.out") == (blocks[0].attn, "output")
    assert a.hook_point("blocks.0.resid.mid") == (blocks[0].ln_2, "input")
