"""Helpers shared by the subcommands: status lines, models, index building, evaluation."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MuveraError
from ..fde import FDEConfig

# documents encoded and added at a time by `index` / `add` (inside one bulk commit): bounds
# the memory of their token vectors whatever the corpus size
_ADD_CHUNK = 4096


class _Status:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = not quiet  # a bar on a terminal, else lines at a steady interval

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)


_FDE_FIELDS = (
    "num_repetitions",
    "num_simhash_projections",
    "projection_type",
    "projection_dimension",
    "fill_empty_partitions",
    "final_projection_dimension",
    "seed",
)


def _fde_config(args: argparse.Namespace, dimension: int) -> FDEConfig:
    """The FDE options given on the command line (FDEConfig's defaults where none)."""
    given = {f: getattr(args, f) for f in _FDE_FIELDS if hasattr(args, f)}
    return FDEConfig(dimension=dimension, **given)


def _load_model(name: str, args: argparse.Namespace, recorded: dict[str, Any] | None = None) -> Any:
    """A ColBERT from ``name``; ``recorded`` options (from an index) unless flags override."""
    from ..models import ColBERT

    recorded = recorded if isinstance(recorded, dict) else {}
    # An index folder can come from anyone: of its recorded options only the dtype is taken,
    # and running code shipped with a model takes the caller's own --trust-remote-code.
    options: dict[str, Any] = {
        k: recorded[k] for k in ("dtype",) if isinstance(recorded.get(k), str)
    }
    if recorded.get("trust_remote_code") and not args.trust_remote_code:
        raise MuveraError(
            f"the index's model {name} was loaded with --trust-remote-code (it runs code "
            "shipped in the model folder); an index cannot turn that on: pass "
            "--trust-remote-code yourself if you trust that folder"
        )
    if args.trust_remote_code:
        options["trust_remote_code"] = True
    if args.dtype:
        options["dtype"] = args.dtype
    return ColBERT(name, device=args.device, batch_size=args.batch_size, **options)


def _model_name(name: str) -> str:
    """An absolute path for a local directory (so the index works from anywhere), else the id."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _store_options(args: argparse.Namespace) -> dict[str, Any] | None:
    quantization = getattr(args, "hnsw_quantization", None)
    vectors = getattr(args, "graph_vectors", None)
    for flag, value in (
        ("--ef", args.ef), ("--hnsw-quantization", quantization), ("--graph-vectors", vectors)
    ):  # fmt: skip
        if value is not None and args.store != "hnswlib":
            raise MuveraError(f"{flag} needs --store hnswlib")
    cells = getattr(args, "token_cells", None)
    if args.store != "qdrant":
        if args.qdrant_url or args.qdrant_path:
            raise MuveraError("--qdrant-url/--qdrant-path need --store qdrant")
        local = {
            "ef": args.ef, "quantization": quantization, "graph_vectors": vectors,
            "token_cells": None if cells is None else cells != "off" and int(cells),
        }  # fmt: skip
        return {k: v for k, v in local.items() if v is not None} or None
    if cells is not None:
        raise MuveraError("--token-cells needs a local store (--store hnswlib or exact)")
    if bool(args.qdrant_url) == bool(args.qdrant_path):
        raise MuveraError("--store qdrant needs exactly one of --qdrant-url or --qdrant-path")
    options: dict[str, Any] = {"collection": args.collection}
    if args.qdrant_url:
        options["url"] = args.qdrant_url
    else:
        options["path"] = str(Path(args.qdrant_path).resolve())
    return options


def _build_index(
    args: argparse.Namespace,
    model: Any,
    corpus: dict[str, dict[str, Any]],
    out: Path,
    status: _Status,
    *,
    keep_text: bool = True,
) -> Any:
    """Encode ``corpus`` with ``model`` into a new index at ``out`` (store options from
    ``args`` where it has them: the demo's namespace has none and gets the defaults)."""
    from ..index import Index

    if not corpus:
        raise MuveraError("the corpus has no documents")
    store = getattr(args, "store", "hnswlib")
    created = not out.exists()
    index = Index.create(
        out,
        _fde_config(args, model.dimension),
        store=store,
        store_options=_store_options(args) if hasattr(args, "qdrant_url") else None,
        token_dtype=getattr(args, "token_dtype", "float16"),
        calibration=getattr(args, "calibration", "auto"),
        metadata={
            "model": _model_name(args.model),
            "model_options": {"trust_remote_code": bool(args.trust_remote_code)},
            "pool_factor": getattr(args, "pool_factor", 1.0),
        },
    )
    try:
        _add_corpus(index, model, corpus, status, keep_text=keep_text, upsert=False,
                    pool_factor=getattr(args, "pool_factor", 1.0))  # fmt: skip
    except BaseException:
        index.close()
        if created:  # a half-built index would only block the next attempt
            shutil.rmtree(out, ignore_errors=True)
        raise
    return index


def _add_corpus(
    index: Any,
    model: Any,
    corpus: dict[str, dict[str, Any]],
    status: _Status,
    *,
    keep_text: bool,
    upsert: bool,
    pool_factor: float = 1.0,
) -> None:
    """Encode ``corpus`` and add (or upsert) it: every field of a record goes into its
    payload (``keep_text=False``: all but title and text)."""
    from ..eval import document_text

    ids = list(corpus)
    texts = [document_text(corpus[d]) for d in ids]
    drop = () if keep_text else ("title", "text")
    payloads = [{k: v for k, v in corpus[d].items() if k not in drop} or None for d in ids]
    if not upsert:  # checked before minutes of encoding
        _refuse_present(index, ids)
    status(f"encoding {len(ids):,} documents ...")
    encode_s = index_s = 0.0
    with index.bulk():  # chunks bound the memory; one commit at the end
        for start in range(0, len(ids), _ADD_CHUNK):
            part = slice(start, start + _ADD_CHUNK)
            t0 = time.perf_counter()
            tokens = model.encode_documents(
                texts[part], show_progress=status.progress, pool_factor=pool_factor
            )
            t1 = time.perf_counter()
            (index.upsert if upsert else index.add)(ids[part], tokens, payloads[part])
            encode_s, index_s = encode_s + t1 - t0, index_s + time.perf_counter() - t1
            if len(ids) > _ADD_CHUNK:
                status(f"{min(start + _ADD_CHUNK, len(ids)):,} / {len(ids):,} documents")
        t1 = time.perf_counter()
    index_s += time.perf_counter() - t1  # the commit
    status(
        f"encoded in {encode_s:.1f} s ({len(ids) / max(encode_s, 1e-9):.1f} documents/s); "
        f"FDEs + {index.manifest['store']['kind']} index in {index_s:.1f} s -> {index.path}"
    )


def _refuse_present(index: Any, ids: list[Any]) -> None:
    """A MuveraError when any of ``ids`` is in ``index`` (an add without --upsert)."""
    present = [d for d in ids if d in index]
    if present:
        raise MuveraError(
            f"{len(present):,} ids are already in the index (e.g. {present[0]!r}); "
            "pass --upsert to replace them"
        )


def _payloads(hits: Any) -> list[list[dict[str, Any] | None]]:
    return hits.payloads or [[None] * hits.ids.shape[1] for _ in range(hits.ids.shape[0])]


def _read_texts(path: Path, queries: bool) -> tuple[list[str], list[str]]:
    """(ids, texts) from a .txt file (one text a line, ids are line numbers from 0), a JSONL
    file, or a BEIR folder (its corpus, or its queries with ``queries``)."""
    from ..eval import document_text, load_corpus, load_queries

    if path.suffix == ".txt":
        if not path.is_file():
            raise MuveraError(f"no such file: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        return [str(i) for i in range(len(lines))], lines
    if queries:
        found = load_queries(path)
        return list(found), list(found.values())
    corpus = load_corpus(path)
    return list(corpus), [document_text(d) for d in corpus.values()]


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _evaluate(
    args: argparse.Namespace,
    model: Any,
    index: Any,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    candidates: Sequence[int],
    status: _Status,
) -> Any:
    from ..eval import compare_stages

    qids = list(queries)
    status(f"encoding {len(qids):,} queries ...")
    tokens = model.encode_queries([queries[q] for q in qids])
    status("running exact MaxSim, FDE-only and FDE + re-rank, one query at a time ...")
    return compare_stages(index, tokens, qids, qrels, candidates)
