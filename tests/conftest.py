"""Shared fixtures: a tiny tokenizer, a tiny random Llama-family model saved as a local folder, a small corpus.

Nothing here touches the network: the tokenizer is trained in memory on the corpus text.
"""

from __future__ import annotations

import pytest
from tiny_llama import save_tiny_llama, synthetic_text


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
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_texts)


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    from transcoders.models import load_model

    return load_model(tiny_model_dir)
