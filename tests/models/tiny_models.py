"""Tiny randomly initialised models, one per supported family (and variant), built from configs: no downloads.

Every 1-D parameter (norm weights and biases, projection biases) gets random noise, because fresh models have
all norms equal to the identity-ish default and all biases zero: then naming the wrong norm or dropping a bias
would go unnoticed by the tests.
"""

from __future__ import annotations

import torch
import transformers as tf

from transcoders.models import LoadedModel

VOCAB = 128
# hidden 32, 4 query heads sharing 2 key/value heads (GQA) unless the family has no GQA
_LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=2,
)

CONFIGS = {
    "llama": lambda: tf.LlamaConfig(**_LLAMA_LIKE, attention_bias=True, tie_word_embeddings=False),
    "mistral": lambda: tf.MistralConfig(**_LLAMA_LIKE),
    "qwen2": lambda: tf.Qwen2Config(**_LLAMA_LIKE),  # biases on q/k/v
    # head_dim * n_heads (64) != hidden (32): catches code that assumes d_head = d_model / n_heads
    "qwen3": lambda: tf.Qwen3Config(**_LLAMA_LIKE, head_dim=16),
    "gemma": lambda: tf.GemmaConfig(**{**_LLAMA_LIKE, "num_key_value_heads": 1}, head_dim=8),  # multi-query
    "gemma2": lambda: tf.Gemma2Config(**_LLAMA_LIKE, head_dim=8, final_logit_softcapping=5.0),
    "gemma3_text": lambda: tf.Gemma3TextConfig(**_LLAMA_LIKE, head_dim=8, final_logit_softcapping=5.0),
    "gemma3": lambda: tf.Gemma3Config(  # multimodal wrapper: the text model sits at model.model.language_model
        text_config={**_LLAMA_LIKE, "head_dim": 8},
        vision_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14,
        ),
        mm_tokens_per_image=1,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
        image_token_index=VOCAB - 1,
    ),
    "gpt2": lambda: tf.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, n_inner=48, bos_token_id=0, eos_token_id=1
    ),
    "gpt_neox-parallel": lambda: tf.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=64, use_parallel_residual=True, rotary_pct=0.5, bos_token_id=0, eos_token_id=1,
    ),
    "gpt_neox-sequential": lambda: tf.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=64, use_parallel_residual=False, bos_token_id=0, eos_token_id=1,
    ),
}  # fmt: skip

KINDS = list(CONFIGS)


def build_tiny(kind: str, seed: int = 0, attn_implementation: str = "eager") -> tf.PreTrainedModel:
    """A tiny random causal LM of one kind; eager attention so that attention patterns are returned."""
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS[kind](), attn_implementation=attn_implementation)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def make_tiny_lm(kind: str, **kw) -> LoadedModel:
    return LoadedModel.from_hf(build_tiny(kind, **kw), name=f"tiny-{kind}")
