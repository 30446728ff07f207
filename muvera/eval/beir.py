"""BEIR-format data: corpus, queries and qrels (``corpus.jsonl``, ``queries.jsonl``,
``qrels/<split>.tsv``), read strictly (duplicate or missing ids are errors)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import MuveraError

__all__ = [
    "document_text",
    "load_beir",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "read_jsonl_records",
]


def read_jsonl_records(path: str | Path) -> Iterator[dict[str, object]]:
    """Yield the JSON objects of a JSONL file; a malformed line raises with its number."""
    path = Path(path)
    if not path.is_file():
        raise MuveraError(f"no such file: {path}")
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MuveraError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise MuveraError(f"{path}:{number}: expected a JSON object")
            yield record


def _record_id(record: dict[str, object], path: Path, number: int) -> str:
    value = record.get("_id", record.get("id"))
    if value is None:
        raise MuveraError(f"{path}:{number}: record has no '_id' or 'id'")
    return str(value)


def load_corpus(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read documents: doc id -> the record's fields, in file order.

    ``path`` is a BEIR folder (its ``corpus.jsonl``) or a JSONL file whose records have
    ``_id`` or ``id``, ``text`` and optionally ``title`` (both strings, "" when missing);
    every other field is kept as it is (a payload for the index). A duplicate id or a
    record without an id raises with the line number.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise MuveraError(f"{path} is a folder without corpus.jsonl (not a BEIR folder)")
        path = path / "corpus.jsonl"
    corpus: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(read_jsonl_records(path), 1):
        doc_id = _record_id(record, path, number)
        if doc_id in corpus:
            raise MuveraError(f"{path}:{number}: duplicate id {doc_id!r}")
        fields: dict[str, Any] = {k: v for k, v in record.items() if k not in ("_id", "id")}
        fields["title"] = str(record.get("title") or "")
        fields["text"] = str(record.get("text") or "")
        corpus[doc_id] = fields
    return corpus


def load_queries(path: str | Path) -> dict[str, str]:
    """Read queries: query id -> text, in file order, from a BEIR ``queries.jsonl`` (or a
    BEIR folder). A duplicate id or a record without an id raises with the line number."""
    path = Path(path)
    if path.is_dir():
        path = path / "queries.jsonl"
    queries: dict[str, str] = {}
    for number, record in enumerate(read_jsonl_records(path), 1):
        query_id = _record_id(record, path, number)
        if query_id in queries:
            raise MuveraError(f"{path}:{number}: duplicate id {query_id!r}")
        queries[query_id] = str(record.get("text") or "")
    return queries


def document_text(document: Mapping[str, Any]) -> str:
    """``title + " " + text`` (stripped), the text BEIR encodes for a document."""
    return (str(document.get("title", "")) + " " + str(document.get("text", ""))).strip()


def load_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id  corpus-id  score`` with a header line)."""
    path = Path(path)
    if not path.is_file():
        raise MuveraError(f"no such file: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for number, row in enumerate(reader, 1):
            if not row or (number == 1 and not row[-1].strip().lstrip("-").isdigit()):
                continue  # blank line or header
            if len(row) < 3:
                raise MuveraError(f"{path}:{number}: expected 3 tab-separated columns")
            try:
                grade = int(row[-1])
            except ValueError:
                raise MuveraError(
                    f"{path}:{number}: relevance {row[-1]!r} is not an integer"
                ) from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir(
    directory: str | Path, split: str = "test"
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, dict[str, int]]]:
    """Load a BEIR folder: ``(corpus, queries, qrels)``.

    ``corpus`` maps doc id to ``{"title", "text"}``; ``queries`` maps query id to text,
    restricted to the queries of ``qrels/{split}.tsv``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MuveraError(f"no BEIR folder at {directory}")
    corpus = load_corpus(directory / "corpus.jsonl")
    qrels = load_qrels(directory / "qrels" / f"{split}.tsv")
    queries = {
        q: text for q, text in load_queries(directory / "queries.jsonl").items() if q in qrels
    }
    return corpus, queries, qrels
