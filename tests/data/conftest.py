"""Fixtures for corpus and packing tests: tiny in-memory tokenizers, an isolated cache, the default corpus read once.

Nothing here reaches the network; the Hugging Face libraries are put in offline mode before they are used.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

TRAIN_TEXT = [
    "The river runs past the old city, and the king sees every ship.",
    "Music and light fill the quiet house when the first star rises.",
    "hello world, how are you doing today? I'm doing good!",
    "In 1962 the economy was racing to new records in consumer spending.",
]


def make_tokenizer(*, bos: bool = True):
    """A byte-level BPE (every string tokenises, nothing unknown) trained on four sentences in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>"] if bos else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>" if bos else None)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tokenizer_without_bos():
    return make_tokenizer(bos=False)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Token caches go to a fresh folder per test, never to the user's ~/.cache."""
    monkeypatch.setenv("TRANSCODERS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def default_docs():
    """Every document of the default corpus with seed 0, read once (about a second)."""
    from transcoders.data.corpus import iter_documents

    return list(iter_documents("default"))
