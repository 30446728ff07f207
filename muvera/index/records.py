"""Per label: the document id, its payload and whether it is alive.

Labels are the store's row numbers, assigned in insertion order and never reused. Ids and
payloads are appended to ``records.jsonl`` (one JSON line per label; trusted up to the
committed length); a payload update appends a line ``{"label": L, "update": payload}``
(format version 2). Liveness is in the generation's state file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MuveraError
from ..files import AppendOnlyFile

__all__ = ["Records", "json_payload"]

Payload = dict[str, Any] | None
_MIN_ID, _MAX_ID = -(2**63), 2**63 - 1  # int ids are returned as int64


def json_payload(payload: Any, index: int, what: str = "payload") -> Payload:
    """``payload`` if it is None or a JSON-serialisable dict, else a MuveraError."""
    name = what if what != "payload" else f"payload {index}"
    if payload is None:
        return None
    if not isinstance(payload, dict):
        raise MuveraError(f"{name} must be a dict or None, got {type(payload).__name__}")
    try:
        json.dumps(payload, allow_nan=False)  # strict JSON: no NaN or infinity
    except (TypeError, ValueError, RecursionError) as exc:
        raise MuveraError(f"{name} is not JSON-serialisable ({exc})") from None
    return payload


class Records:
    """Ids, payloads and liveness of every label of an index."""

    def __init__(
        self,
        directory: Path,
        section: dict[str, Any],
        next_label: int,
        id_type: str | None,
        alive: npt.NDArray[np.bool_],
    ) -> None:
        self.file = AppendOnlyFile(directory / section["file"], int(section["bytes"]))
        self.next_label = int(next_label)
        self.id_type = id_type
        self.alive = alive
        self.label_ids: list[Any] = []
        self.payloads: list[Payload] = []
        self.updated = False  # holds payload updates (format version 2)
        for line in self.file.read_bytes().decode().splitlines():
            record = json.loads(line)
            if "update" in record:
                label = record["label"]
                if not isinstance(label, int) or not 0 <= label < len(self.label_ids):
                    raise MuveraError(f"{self.file.path}: an update of unknown label {label!r}")
                self.payloads[label] = json_payload(record["update"], label)
                self.updated = True
                continue
            self.label_ids.append(record["id"])
            self.payloads.append(record.get("payload"))
        if len(self.label_ids) != self.next_label or self.alive.size != self.next_label:
            raise MuveraError(f"index {directory} is inconsistent: records and state disagree")
        kinds = {type(x) for x in self.label_ids}
        expected: set[type] = {int} if id_type == "int" else {str} if id_type == "str" else set()
        if kinds - expected or (
            id_type == "int" and any(not _MIN_ID <= x <= _MAX_ID for x in self.label_ids)
        ):
            raise MuveraError(
                f"{self.file.path}: its ids are not the manifest's {id_type or 'no'} ids"
            )
        self.id_to_label = {self.label_ids[i]: i for i in np.flatnonzero(self.alive).tolist()}

    def __len__(self) -> int:
        return len(self.id_to_label)

    def section(self) -> dict[str, Any]:
        """The manifest's ``records`` section."""
        return {"file": self.file.path.name, "bytes": self.file.committed}

    @property
    def ids(self) -> list[Any]:
        """Ids of the live documents, in insertion order."""
        return [self.label_ids[i] for i in np.flatnonzero(self.alive).tolist()]

    def check_ids(self, ids: Any, n: int, *, new: bool) -> list[Any]:
        """``ids`` as a list of ``n`` unique ints or strings of this index's kind (``new``:
        none of them present yet)."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise MuveraError(f"ids must be a list of ints or strings, got {type(ids).__name__}")
        out: list[Any] = []
        for i, doc_id in enumerate(list(ids)):
            if isinstance(doc_id, np.integer):
                doc_id = int(doc_id)
            if isinstance(doc_id, np.str_):
                doc_id = str(doc_id)
            kind = (
                "int"
                if isinstance(doc_id, int) and not isinstance(doc_id, bool)
                else ("str" if isinstance(doc_id, str) else None)
            )
            if kind is None:
                raise MuveraError(f"id {i} must be an int or a str, got {type(doc_id).__name__}")
            if kind == "int" and (doc_id == -1 or not _MIN_ID <= doc_id <= _MAX_ID):
                raise MuveraError(
                    f"id {i} ({doc_id}) is outside int64, or is -1 (search results' padding)"
                )
            if self.id_type is not None and kind != self.id_type:
                raise MuveraError(f"id {i} is a {kind}, but this index uses {self.id_type} ids")
            out.append(doc_id)
        if len({type(x) for x in out}) > 1:
            raise MuveraError("ids mix ints and strings; use one kind per index")
        if len(out) != n:
            raise MuveraError(f"got {len(out)} ids for {n} documents")
        seen: set[Any] = set()
        for i, doc_id in enumerate(out):
            if doc_id in seen:
                raise MuveraError(f"id {doc_id!r} appears twice (item {i})")
            seen.add(doc_id)
            if new and doc_id in self.id_to_label:
                raise MuveraError(f"id {doc_id!r} (item {i}) is already in the index; use upsert()")
        return out

    @staticmethod
    def check_payloads(payloads: Any, n: int) -> list[Payload]:
        if payloads is None:
            return [None] * n
        if len(payloads) != n:
            raise MuveraError(f"got {len(payloads)} payloads for {n} documents")
        return [json_payload(p, i) for i, p in enumerate(payloads)]

    def new_labels(self, n: int) -> npt.NDArray[np.int64]:
        return np.arange(self.next_label, self.next_label + n, dtype=np.int64)

    def append(
        self, labels: npt.NDArray[np.int64], ids: list[Any], payloads: list[Payload]
    ) -> None:
        """Record new labels (from :meth:`new_labels`), alive."""
        if self.id_type is None and ids:
            self.id_type = "int" if isinstance(ids[0], int) else "str"
        lines = "".join(
            json.dumps({"label": label, "id": doc_id, "payload": payload}) + "\n"
            for label, doc_id, payload in zip(labels.tolist(), ids, payloads, strict=True)
        ).encode()
        start = self.file.append(lines)
        self.file.committed = start + len(lines)
        self.alive = np.concatenate([self.alive, np.ones(labels.size, dtype=bool)])
        self.label_ids.extend(ids)
        self.payloads.extend(payloads)
        for label, doc_id in zip(labels.tolist(), ids, strict=True):
            self.id_to_label[doc_id] = label
        self.next_label += labels.size

    def update(self, label: int, payload: Payload) -> None:
        """Replace the payload of a live label (appends an update line)."""
        line = (json.dumps({"label": label, "update": payload}) + "\n").encode()
        start = self.file.append(line)
        self.file.committed = start + len(line)
        self.payloads[label] = payload
        self.updated = True

    def remove(self, labels: npt.NDArray[np.int64]) -> None:
        self.alive[labels] = False
        for label in labels.tolist():
            del self.id_to_label[self.label_ids[label]]
