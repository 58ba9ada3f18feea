"""Tokenise documents and pack them into fixed-length contexts that each start with BOS.

The token stream is every document's tokens (without the tokenizer's own special tokens), each document
preceded by one BOS. A context is ``[BOS] + the next ctx_len - 1 stream tokens``; when the next stream
token is already a document-separating BOS, that BOS opens the context and is not doubled. So every
context starts with exactly one BOS (models behave oddly without an attention sink at position 0), short
documents share contexts, and long ones continue over several, each continuation restarting with BOS.
The last, partial context is dropped.

Each context keeps its spans ``(start, source, doc_id)``: where each document piece begins. A piece starts
at its separating BOS, so the BOS before a document belongs to that document.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import io
import json
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

import torch

from transcoders.data.corpus import DEFAULT_SOURCES, Document, iter_split, local_corpus_files
from transcoders.errors import CorpusError
from transcoders.paths import atomic_write_bytes, cache_dir

Span = tuple[int, str, str]  # (start position in the context, source, doc_id)

CACHE_FORMAT = 1  # bump when the packing or the cache file layout changes


@dataclass
class Contexts:
    tokens: torch.Tensor  # [n_contexts, ctx_len] int64
    spans: list[list[Span]]  # per context, the document pieces in it, in order

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def doc_at(self, i: int, pos: int) -> tuple[str, str]:
        """(source, doc_id) of the token at position ``pos`` of context ``i``."""
        spans = self.spans[i]
        k = bisect.bisect_right([start for start, _, _ in spans], pos) - 1
        _, source, doc_id = spans[max(k, 0)]
        return source, doc_id


def bos_token_id(tokenizer) -> int | None:
    """The separator: BOS, else EOS (GPT-2-style tokenizers use ``<|endoftext|>`` for both), else none."""
    for name in ("bos_token_id", "eos_token_id"):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            return int(token_id)
    return None


def text_ids(tokenizer, text: str, max_len: int | None = None) -> list[int]:
    """One text's token ids as training contexts present text: the separator (:func:`bos_token_id`) first, then the
    text's own tokens, cut to ``max_len`` in all."""
    bos = bos_token_id(tokenizer)
    ids = ([bos] if bos is not None else []) + list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids[:max_len] if max_len else ids


def iter_contexts(
    docs: Iterable[Document], tokenizer, ctx_len: int = 128, *, batch_docs: int = 256
) -> Iterator[tuple[list[int], list[Span]]]:
    """Pack ``docs`` in order into contexts of ``ctx_len`` tokens; yields ``(tokens, spans)``.

    Documents are tokenised ``batch_docs`` at a time (one call of a fast tokenizer is much quicker than
    one per document). Raises :class:`CorpusError` at the end if not even one context could be filled.
    """
    if ctx_len < 2:
        raise ValueError(f"ctx_len must be at least 2 (one BOS and one token), not {ctx_len}")
    packer = _Packer(ctx_len, bos_token_id(tokenizer))
    n_contexts = 0
    docs = iter(docs)
    while batch := list(islice(docs, batch_docs)):
        for doc, ids in zip(batch, _tokenize(tokenizer, [d.text for d in batch])):
            for context in packer.add(doc, ids):
                n_contexts += 1
                yield context
    if n_contexts == 0:
        raise CorpusError(
            f"the corpus is too short for one context: it has {packer.n_tokens} tokens "
            f"(with document separators) and a context holds {ctx_len}: use more text or a shorter context"
        )


def pack_contexts(
    docs: Iterable[Document], tokenizer, ctx_len: int = 128, *, max_tokens: int | None = None
) -> Contexts:
    """All contexts of ``docs`` as one tensor, stopping once ``n_contexts * ctx_len >= max_tokens``."""
    flat = array("q")
    spans: list[list[Span]] = []
    for ids, context_spans in iter_contexts(docs, tokenizer, ctx_len):
        flat.extend(ids)
        spans.append(context_spans)
        if max_tokens is not None and len(flat) >= max_tokens:
            break
    tokens = torch.frombuffer(flat, dtype=torch.int64).clone().view(-1, ctx_len)
    return Contexts(tokens, spans)


def load_split(
    corpus: str,
    tokenizer,
    split: Literal["train", "eval"],
    *,
    ctx_len: int = 128,
    max_tokens: int | None = None,
    eval_fraction: float = 0.02,
    text_column: str = "text",
    seed: int = 0,
    cache: bool = True,
) -> Contexts:
    """Packed contexts of one split of ``corpus``.

    Results for the default corpus and for local files are cached under ``cache_dir()/tokens`` (keyed by
    everything that changes the result, including the files' sizes and modification times and the
    tokenizer's full definition), because tokenising the default corpus takes a while. Streams from the
    Hugging Face hub are never cached: they cannot be fingerprinted without reading them.
    """
    settings = {
        "split": split,
        "ctx_len": ctx_len,
        "max_tokens": max_tokens,
        "eval_fraction": eval_fraction,
        "text_column": text_column,
        "seed": seed,
    }
    path = _cache_path(corpus, tokenizer, settings) if cache else None
    if path is not None and (cached := _read_cache(path)) is not None:
        return cached
    docs = iter_split(corpus, split, eval_fraction=eval_fraction, text_column=text_column, seed=seed)
    contexts = pack_contexts(docs, tokenizer, ctx_len, max_tokens=max_tokens)
    if path is not None:
        _write_cache(path, contexts)
    return contexts


class _Packer:
    """Turns (document, token ids) into full contexts, carrying the unfinished one between documents."""

    def __init__(self, ctx_len: int, bos: int | None):
        self.ctx_len = ctx_len
        self.bos = bos
        self.n_tokens = 0  # stream tokens seen, separators included
        self.ids: list[int] = []
        self.spans: list[Span] = []

    def add(self, doc: Document, ids: list[int]) -> Iterator[tuple[list[int], list[Span]]]:
        if not ids:
            return
        self.n_tokens += len(ids) + (self.bos is not None)
        if self.ids:  # mid-context: the document's separating BOS goes here
            self._open_piece(doc)
            if len(self.ids) == self.ctx_len:  # the separator filled the context
                yield self._flush()
        i = 0
        while i < len(ids):
            if not self.ids:  # a fresh context: its BOS doubles as the separator when the document starts here
                self._open_piece(doc)
            take = min(self.ctx_len - len(self.ids), len(ids) - i)
            self.ids.extend(ids[i : i + take])
            i += take
            if len(self.ids) == self.ctx_len:
                yield self._flush()

    def _open_piece(self, doc: Document) -> None:
        self.spans.append((len(self.ids), doc.source, doc.doc_id))
        if self.bos is not None:
            self.ids.append(self.bos)

    def _flush(self) -> tuple[list[int], list[Span]]:
        context = (self.ids, self.spans)
        self.ids, self.spans = [], []
        return context


def _tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens; special-token strings inside the text are split like plain text,
    so a document that mentions ``<|endoftext|>`` cannot inject a separator."""
    return tokenizer(
        texts, add_special_tokens=False, split_special_tokens=True, return_attention_mask=False, verbose=False
    )["input_ids"]


# ---------------------------------------------------------------------------------------------------------
# Cache


def _cache_path(corpus: str, tokenizer, settings: dict) -> Path | None:
    """``cache_dir()/tokens/<hash of everything the result depends on>.pt``; None if the corpus has no fingerprint."""
    corpus_id = _corpus_fingerprint(corpus)
    if corpus_id is None:
        return None
    parts = {"format": CACHE_FORMAT, "corpus": corpus_id, "tokenizer": _tokenizer_fingerprint(tokenizer), **settings}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "tokens" / f"{key}.pt"


def _corpus_fingerprint(corpus: str):
    if corpus == "default":
        versions = {}
        for dist, _ in DEFAULT_SOURCES.values():
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                return None  # iter_documents will raise the helpful error
        return ["default", versions]
    path = Path(corpus).expanduser()
    if not path.exists():
        return None
    files = local_corpus_files(path) if path.is_dir() else [path]
    return [str(path.resolve())] + [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _tokenizer_fingerprint(tokenizer) -> str:
    """The fast tokenizer's full JSON definition (two tokenizers with one name can differ), else name and size."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = backend.to_str()
    else:
        definition = f"{type(tokenizer).__name__}:{getattr(tokenizer, 'name_or_path', '')}:{len(tokenizer)}"
    definition += f":bos={bos_token_id(tokenizer)}"
    return hashlib.sha256(definition.encode()).hexdigest()


def _write_cache(path: Path, contexts: Contexts) -> None:
    """Spans are stored as an int table plus a list of distinct documents: compact and weights_only-loadable."""
    doc_index: dict[tuple[str, str], int] = {}
    rows = array("q")
    for i, spans in enumerate(contexts.spans):
        for start, source, doc_id in spans:
            rows.extend((i, start, doc_index.setdefault((source, doc_id), len(doc_index))))
    payload = {
        "tokens": contexts.tokens,
        "span_rows": torch.frombuffer(rows, dtype=torch.int64).clone().view(-1, 3),
        "docs": [list(d) for d in doc_index],
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:
        pass  # a read-only or full cache only costs speed


def _read_cache(path: Path) -> Contexts | None:
    """The cached contexts, or None if absent or unreadable (then they are rebuilt and rewritten)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        tokens, span_rows, docs = payload["tokens"], payload["span_rows"], payload["docs"]
    except Exception:
        return None
    spans: list[list[Span]] = [[] for _ in range(tokens.shape[0])]
    for i, start, d in span_rows.tolist():
        source, doc_id = docs[d]
        spans[i].append((start, source, doc_id))
    return Contexts(tokens, spans)
