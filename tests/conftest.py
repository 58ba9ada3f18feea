"""Shared fixtures: a tiny tokenizer, a tiny random Llama-family model saved as a local folder, a small corpus.

Nothing here touches the network: the tokenizer is trained in memory on the corpus text.
"""

from __future__ import annotations

import random

import pytest
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
        for i in range(n):
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


@pytest.fixture(scope="session")
def tiny_texts() -> list[str]:
    return synthetic_text(400)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory, tiny_texts) -> str:
    """A local .jsonl corpus of synthetic English-like documents."""
    import json

    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in tiny_texts))
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_texts) -> str:
    """A 3-layer randomly initialised Llama saved with its tokenizer, loadable with load_model(path)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(tiny_texts)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from transcoders.models import load_model

    return load_model(tiny_model_dir)
