"""A tiny English-like corpus, a BPE tokenizer trained on it in memory, and tiny random Llamas saved as local
folders: what the session fixtures (conftest.py) build. Nothing here touches the network."""

from __future__ import annotations

import random

import torch

WORDS = (
    "the a one some every river city king year war music model paper cat dog tree light house road ship star "
    "runs sees makes takes builds finds keeps loses wins opens walks sings reads writes grows falls rises "
    "old new red small great long dark early late quiet bright cold warm green high low first last and but "
    "then when because after before while in on of to from with over under near"
).split()


def synthetic_text(n_docs: int, seed: int = 0, words_per_doc: tuple[int, int] = (20, 120)) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        n = rng.randint(*words_per_doc)
        sent, out = [], []
        for _ in range(n):
            sent.append(rng.choice(WORDS))
            if len(sent) > 4 and rng.random() < 0.2:
                out.append(" ".join(sent).capitalize() + ".")
                sent = []
        if sent:
            out.append(" ".join(sent).capitalize() + ".")
        docs.append(" ".join(out))
    return docs


def build_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<s>", "</s>", "<unk>"], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def save_tiny_llama(folder, texts: list[str], n_layers: int = 3) -> str:
    """A randomly initialised Llama of ``n_layers`` saved with its tokenizer into ``folder``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(texts)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)
