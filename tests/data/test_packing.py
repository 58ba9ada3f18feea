"""Packing: BOS at the start of every context, document boundaries, spans, limits and the token cache."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch

from transcoders.data import packing
from transcoders.data.corpus import Document, is_eval_document
from transcoders.data.packing import Contexts, bos_token_id, iter_contexts, load_split, pack_contexts
from transcoders.errors import CorpusError

WORDS = "the river city king year war music cat dog tree light house ship star runs sees and but when in".split()


def make_docs(n: int, seed: int = 0, max_words: int = 60) -> list[Document]:
    rng = random.Random(seed)
    lengths = [rng.choice([1, 2, 5, 20, max_words]) for _ in range(n)]
    return [Document("src", f"d{i}", " ".join(rng.choices(WORDS, k=k))) for i, k in enumerate(lengths)]


def token_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_contexts(docs, tokenizer, ctx_len):
    """The packing rule written out plainly over the whole stream, to check the streaming packer against."""
    bos = tokenizer.bos_token_id
    stream, is_separator = [], []
    for doc in docs:
        stream += [bos] + token_ids(tokenizer, doc.text)
        is_separator += [True] + [False] * (len(stream) - len(is_separator) - 1)
    contexts, pos = [], 0
    while True:
        if pos < len(stream) and is_separator[pos]:
            ctx, pos = stream[pos : pos + ctx_len], pos + ctx_len
        else:
            ctx, pos = [bos] + stream[pos : pos + ctx_len - 1], pos + ctx_len - 1
        if len(ctx) < ctx_len:
            return contexts
        contexts.append(ctx)


@pytest.mark.parametrize("ctx_len", [2, 3, 7, 16, 64])
def test_contexts_follow_the_packing_rule(tokenizer, ctx_len):
    docs = make_docs(40)
    got = [ids for ids, _ in iter_contexts(docs, tokenizer, ctx_len, batch_docs=7)]
    assert got == reference_contexts(docs, tokenizer, ctx_len)
    bos = tokenizer.bos_token_id
    for ids in got:
        assert len(ids) == ctx_len and ids[0] == bos and (ctx_len == 2 or ids[1] != bos)


@pytest.mark.parametrize("ctx_len", [3, 16])
def test_spans_point_at_the_right_documents(tokenizer, ctx_len):
    """Every token of every context is the next token of the document its span names."""
    docs = make_docs(30, seed=1)
    texts = {d.doc_id: d.text for d in docs}
    bos = tokenizer.bos_token_id
    progress = {d.doc_id: 0 for d in docs}  # tokens of each document seen so far
    for ids, spans in iter_contexts(docs, tokenizer, ctx_len):
        assert spans[0][0] == 0 and [s for s, _, _ in spans] == sorted({s for s, _, _ in spans})
        ends = [s for s, _, _ in spans[1:]] + [ctx_len]
        for (start, source, doc_id), end in zip(spans, ends):
            assert source == "src"
            piece = ids[start:end]
            assert piece[0] == bos or start > 0  # a document starting mid-context opens with its separator
            if piece and piece[0] == bos:
                piece = piece[1:]
            expected = token_ids(tokenizer, texts[doc_id])
            assert piece == expected[progress[doc_id] : progress[doc_id] + len(piece)]
            progress[doc_id] += len(piece)
            if start > 0:
                assert ids[start] == bos  # document boundaries inside a context are BOS


def test_long_document_continues_with_bos_and_same_span(tokenizer):
    long_doc = Document("book", "moby", " ".join(["whale"] * 300))
    contexts = pack_contexts([long_doc, Document("book", "next", "the end")], tokenizer, ctx_len=32)
    assert len(contexts) >= 300 // 32
    assert all(spans[0] == (0, "book", "moby") for spans in contexts.spans[:-1])
    assert (contexts.tokens[:, 0] == tokenizer.bos_token_id).all()


def test_doc_at(tokenizer):
    docs = [Document("a", "1", "the cat"), Document("b", "2", "the dog and the tree")]
    boundary = 1 + len(token_ids(tokenizer, "the cat"))
    contexts = pack_contexts(docs, tokenizer, ctx_len=boundary + 3)
    assert contexts.spans[0] == [(0, "a", "1"), (boundary, "b", "2")]
    assert contexts.doc_at(0, 0) == contexts.doc_at(0, boundary - 1) == ("a", "1")
    assert contexts.doc_at(0, boundary) == contexts.doc_at(0, boundary + 2) == ("b", "2")


def test_tokenizer_without_bos_packs_plain_stream(tokenizer_without_bos):
    tok = tokenizer_without_bos
    assert bos_token_id(tok) is None
    docs = make_docs(10, seed=2)
    stream = [t for d in docs for t in token_ids(tok, d.text)]
    contexts = pack_contexts(docs, tok, ctx_len=8)
    assert contexts.tokens.flatten().tolist() == stream[: len(contexts) * 8]


def test_special_token_text_cannot_inject_bos(tokenizer):
    docs = [Document("s", "1", "the <s> cat <s> sees <s> the dog " * 5)]
    (ids, spans), *_ = iter_contexts(docs, tokenizer, ctx_len=16)
    assert ids.count(tokenizer.bos_token_id) == 1


def test_bos_token_id_falls_back_to_eos_then_none():
    assert bos_token_id(SimpleNamespace(bos_token_id=3, eos_token_id=5)) == 3
    assert bos_token_id(SimpleNamespace(bos_token_id=None, eos_token_id=5)) == 5
    assert bos_token_id(SimpleNamespace(bos_token_id=None, eos_token_id=None)) is None


def test_pack_contexts_tensor_and_max_tokens(tokenizer):
    docs = make_docs(60)
    everything = pack_contexts(docs, tokenizer, ctx_len=16)
    assert everything.tokens.dtype == torch.int64 and everything.tokens.shape[1] == 16
    assert len(everything.spans) == len(everything) > 5
    limited = pack_contexts(docs, tokenizer, ctx_len=16, max_tokens=40)
    assert len(limited) == 3  # stops at the first count with n * 16 >= 40
    assert torch.equal(limited.tokens, everything.tokens[:3]) and limited.spans == everything.spans[:3]


def test_too_short_corpus_raises_with_counts(tokenizer):
    with pytest.raises(CorpusError, match=r"it has \d+ tokens .* a context holds 128"):
        pack_contexts([Document("s", "1", "the cat")], tokenizer, ctx_len=128)


def test_ctx_len_below_two_is_rejected(tokenizer):
    with pytest.raises(ValueError):
        list(iter_contexts(make_docs(3), tokenizer, ctx_len=1))


# --- load_split and its cache ------------------------------------------------------------------------------


@pytest.fixture
def jsonl_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in make_docs(300, seed=3)))
    return path


def test_load_split_train_and_eval_share_no_document(tokenizer, jsonl_corpus):
    train = load_split(str(jsonl_corpus), tokenizer, "train", ctx_len=16, eval_fraction=0.2)
    evals = load_split(str(jsonl_corpus), tokenizer, "eval", ctx_len=16, eval_fraction=0.2)
    docs_of = lambda c: {(src, doc) for spans in c.spans for _, src, doc in spans}  # noqa: E731
    assert docs_of(train) and docs_of(evals) and not docs_of(train) & docs_of(evals)


def test_load_split_cache_hits_and_invalidates(tokenizer, jsonl_corpus, monkeypatch, isolated_cache):
    first = load_split(str(jsonl_corpus), tokenizer, "train", ctx_len=16)
    assert len(list((isolated_cache / "tokens").glob("*.pt"))) == 1

    def no_packing(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(packing, "pack_contexts", no_packing)
    cached = load_split(str(jsonl_corpus), tokenizer, "train", ctx_len=16)
    assert torch.equal(cached.tokens, first.tokens) and cached.spans == first.spans

    monkeypatch.undo()
    monkeypatch.setenv("TRANSCODERS_CACHE", str(isolated_cache))
    with jsonl_corpus.open("a") as f:
        f.write(json.dumps({"text": "a new document changes the file"}) + "\n")
    load_split(str(jsonl_corpus), tokenizer, "train", ctx_len=16)
    assert len(list((isolated_cache / "tokens").glob("*.pt"))) == 2


def test_load_split_default_corpus_small(tokenizer):
    contexts = load_split("default", tokenizer, "eval", ctx_len=64, max_tokens=64 * 40)
    assert isinstance(contexts, Contexts) and len(contexts) == 40
    docs = {(src, doc_id) for spans in contexts.spans for _, src, doc_id in spans}
    assert {src for src, _ in docs} <= {"wiki", "news", "chat", "speeches"}
    assert all(is_eval_document(Document(src, doc_id, "")) for src, doc_id in docs)
