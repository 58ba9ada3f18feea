"""Labelled texts for probing: the default corpus's own labels (news topics, and each document's source), or a
user's ``.jsonl`` of texts and labels."""

from __future__ import annotations

import random
from pathlib import Path

from ..data.corpus import iter_documents, read_texts
from ..errors import InterpError

__all__ = ["balanced", "default_tasks", "labelled_task"]


def balanced(items: list[tuple[str, str]], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to ``n`` items, as even across labels as they allow (seeded)."""
    rng = random.Random(seed)
    by: dict[str, list[tuple[str, str]]] = {}
    for it in items:
        by.setdefault(it[1], []).append(it)
    for v in by.values():
        rng.shuffle(v)
    out: list[tuple[str, str]] = []
    i = 0
    while len(out) < n and any(i < len(v) for v in by.values()):
        out += [v[i] for _, v in sorted(by.items()) if i < len(v)][: n - len(out)]
        i += 1
    return out


def default_tasks(n: int = 600, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """``topics``: BBC news articles by section (5 labels); ``sources``: documents of the default mix by source."""
    news, mixed = [], []
    for doc in iter_documents("default", seed=seed):
        mixed.append((doc.text, doc.source))
        if doc.source == "news":
            news.append((doc.text, doc.doc_id.split("/")[0]))
    return {"topics": balanced(news, n, seed), "sources": balanced(mixed, n, seed)}


def labelled_task(path: str | Path, text_column: str = "text", label_column: str = "label",
                  n: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """A user's labelled ``.jsonl``; one-line errors for a file with fewer than two labels."""
    rows = [(t, str(lab)) for t, lab in read_texts(path, text_column, label_column=label_column, what="labelled")]
    labels = sorted({lab for _, lab in rows})
    if len(labels) < 2:
        raise InterpError(f"labelled file {Path(path).name} has one class ({labels[0]!r}): probing needs texts of at "
                          "least two labels")
    return balanced(rows, n or len(rows), seed)
