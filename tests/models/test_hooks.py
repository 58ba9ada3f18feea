"""capture() and patch_mlp() on every family."""

from __future__ import annotations

import pytest
import torch
from tiny_models import make_tiny_lm

from transcoders.errors import ModelError
from transcoders.models import LoadedModel, StopForward, capture, patch_mlp
from transcoders.models.hooks import start_at


def no_hooks_left(lm: LoadedModel) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


def logits(lm: LoadedModel, input_ids) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=input_ids).logits


def test_stop_early_gives_the_full_forward_values_and_stops(lm: LoadedModel, input_ids):
    names = ["blocks.1.mlp.out", "blocks.0.mlp.in", "blocks.1.resid.mid"]  # deliberately out of order
    full = capture(lm, input_ids, names, stop_early=False)
    ran = []
    later = lm.adapter.layer(2).register_forward_pre_hook(lambda m, a: ran.append("block 2"))
    head = lm.model.get_output_embeddings().register_forward_pre_hook(lambda m, a: ran.append("unembedding"))
    try:
        early = capture(lm, input_ids, names)
    finally:
        later.remove()
        head.remove()
    assert ran == []
    assert list(early) == names
    for name in names:
        assert early[name].shape == (*input_ids.shape, lm.adapter.d_model)
        assert torch.equal(early[name], full[name])
        assert not early[name].requires_grad
    assert no_hooks_left(lm)


def test_capture_passes_the_attention_mask():
    lm = make_tiny_lm("llama")
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    masked = capture(lm, ids, ["blocks.0.attn.out"], attention_mask=mask)["blocks.0.attn.out"]
    unmasked = capture(lm, ids, ["blocks.0.attn.out"])["blocks.0.attn.out"]
    assert torch.allclose(masked[0], unmasked[0])  # full mask: same as none
    assert not torch.allclose(masked[1, 1:], unmasked[1, 1:])  # the padded token is hidden from the others


def test_capture_validates_names_before_running_and_cleans_up():
    lm = make_tiny_lm("gpt2")
    ids = torch.tensor([[3, 4, 5]])
    with pytest.raises(ModelError, match="layer 7 is out of range: this model has layers 0-2"):
        capture(lm, ids, ["blocks.0.mlp.in", "blocks.7.mlp.in"])
    with pytest.raises(ModelError, match="unknown hook point"):
        capture(lm, ids, ["blocks.0.mlp"])
    with pytest.raises(IndexError):  # a failing forward (token id beyond the vocabulary) still removes hooks
        capture(lm, torch.tensor([[10_000]]), ["blocks.2.mlp.out"])
    assert no_hooks_left(lm)


def test_stop_forward_is_an_exception():
    assert issubclass(StopForward, Exception)


def test_patch_mlp_identity_zero_and_nesting(lm: LoadedModel, input_ids):
    a = lm.adapter
    clean = logits(lm, input_ids)
    with patch_mlp(lm, 1, lambda i, o: o):
        assert torch.allclose(logits(lm, input_ids), clean, atol=1e-6)

    with patch_mlp(lm, 1, lambda i, o: torch.zeros_like(o)):
        patched = logits(lm, input_ids)
    assert not torch.allclose(patched, clean, atol=1e-4)

    # the same ablation done another way: the module's forward replaced outright
    mlp = a.mlp(1)
    mlp.forward = lambda x: torch.zeros_like(x)
    try:
        replaced = logits(lm, input_ids)
    finally:
        del mlp.forward  # back to the class's forward
    assert torch.allclose(patched, replaced, atol=1e-6)
    assert torch.allclose(logits(lm, input_ids), clean, atol=1e-6)  # nothing left behind

    # nested, two layers; fn sees the recorded MLP input
    seen = {}

    def double(i, o):
        seen["in"] = i
        return 2 * o

    with patch_mlp(lm, 0, lambda i, o: torch.zeros_like(o)), patch_mlp(lm, 2, double):
        both = logits(lm, input_ids)
    mlp0, mlp2 = a.mlp(0), a.mlp(2)
    mlp0.forward = lambda x: torch.zeros_like(x)
    mlp2.forward = lambda x: 2 * type(mlp2).forward(mlp2, x)
    try:
        expected = logits(lm, input_ids)
        mlp_in_2 = capture(lm, input_ids, ["blocks.2.mlp.in"])["blocks.2.mlp.in"]
    finally:
        del mlp0.forward, mlp2.forward
    assert torch.allclose(both, expected, atol=1e-5)
    assert torch.allclose(seen["in"], mlp_in_2, atol=1e-6)
    assert no_hooks_left(lm)


def test_starting_at_a_block_from_its_recorded_input_gives_the_full_forward(lm: LoadedModel, input_ids):
    """Blocks below the start are not run; with an edit at or above the start, the logits equal the full
    forward's with the same edit (what evaluation's spliced and ablated passes rely on)."""
    ran = []
    resid = capture(lm, input_ids, ["blocks.0.resid.post"])["blocks.0.resid.post"]
    zero = lambda i, o: torch.zeros_like(o)  # noqa: E731
    with patch_mlp(lm, 2, zero):
        full = logits(lm, input_ids)
    probe = lm.adapter.mlp(0).register_forward_pre_hook(lambda m, a: ran.append("block 0"))
    try:
        with start_at(lm, 1, resid), patch_mlp(lm, 2, zero):
            started = logits(lm, input_ids)
        with start_at(lm, 1, resid):
            clean_started = logits(lm, input_ids)
    finally:
        probe.remove()
    assert ran == []
    assert torch.allclose(started, full, atol=1e-5)
    assert torch.allclose(clean_started, logits(lm, input_ids), atol=1e-5)
    assert not torch.allclose(started, clean_started, atol=1e-4)  # the edit mattered
    ran.clear()
    probe = lm.adapter.mlp(0).register_forward_pre_hook(lambda m, a: ran.append("block 0"))
    try:
        logits(lm, input_ids)
    finally:
        probe.remove()
    assert ran == ["block 0"]  # the blocks are whole again
    assert no_hooks_left(lm)


def test_patch_mlp_bad_layer():
    lm = make_tiny_lm("gpt_neox-parallel")
    with pytest.raises(ModelError, match="layer 3 is out of range"):
        with patch_mlp(lm, 3, lambda i, o: o):
            pass
