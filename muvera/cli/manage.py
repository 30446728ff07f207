"""The ``add``, ``delete`` and ``info`` subcommands: an existing index, changed or described."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import MuveraError
from .common import _add_corpus, _load_model, _Status


def _open_writer(path: Path) -> Any:
    from ..index import Index

    return Index.open(path)


def _typed_ids(index: Any, ids: list[str]) -> list[Any]:
    """Command-line ids as the index's kind (ints for an index of int ids)."""
    if index.records.id_type != "int":
        return ids
    try:
        return [int(x) for x in ids]
    except ValueError:
        raise MuveraError(f"index {index.path} has integer ids; got {ids[:3]}") from None


def _cmd_add(args: argparse.Namespace, status: _Status) -> int:
    from ..eval import load_corpus

    if args.corpus.suffix == ".npz":
        return _add_token_file(args, status)
    corpus = load_corpus(args.corpus)
    if not corpus:
        raise MuveraError(f"{args.corpus} has no documents")
    with _open_writer(args.index) as index:
        meta = index.metadata
        name = args.model or meta.get("model")
        if not name:
            raise MuveraError(f"index {args.index} records no model; pass --model")
        model = _load_model(name, args, None if args.model else meta.get("model_options"))
        before = len(index)
        factor = args.pool_factor if args.pool_factor is not None else meta.get("pool_factor", 1)
        _add_corpus(index, model, corpus, status, keep_text=not args.no_text, upsert=args.upsert,
                    pool_factor=factor)  # fmt: skip
        added = len(index) - before
    print(
        f"{'upserted' if args.upsert else 'added'} {len(corpus):,} documents into {args.index} "
        f"({added:,} new; {len(index):,} in all)"
    )
    return 0


def _add_token_file(args: argparse.Namespace, status: _Status) -> int:
    """Precomputed token vectors (``muvera encode``'s .npz), streamed in chunks inside one
    bulk commit; no model is loaded."""
    from . import common
    from .token_file import read_token_file

    with _open_writer(args.index) as index:
        ids, chunks = read_token_file(args.corpus, index.token_dimension, common._ADD_CHUNK)
        if not args.upsert:  # checked before anything is added
            common._refuse_present(index, ids)
        before = len(index)
        with index.bulk():
            for done, (part_ids, tokens) in enumerate(chunks, 1):
                (index.upsert if args.upsert else index.add)(part_ids, tokens)
                status(f"{min(done * common._ADD_CHUNK, len(ids)):,} / {len(ids):,} documents")
        added = len(index) - before
        print(
            f"{'upserted' if args.upsert else 'added'} {len(ids):,} documents into {args.index} "
            f"({added:,} new; {len(index):,} in all)"
        )
    return 0


def _cmd_delete(args: argparse.Namespace, status: _Status) -> int:
    ids = list(args.ids)
    if args.ids_file:
        ids += [line.strip() for line in args.ids_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise MuveraError("no ids to delete (give them as arguments or with --ids-file)")
    with _open_writer(args.index) as index:
        typed = _typed_ids(index, ids)
        if args.missing_ok:
            typed = [x for x in typed if x in index]
        index.delete(typed)
        print(f"deleted {len(typed):,} documents from {args.index} ({len(index):,} left)")
    return 0


def _cmd_info(args: argparse.Namespace, status: _Status) -> int:
    from ..index import Index
    from ..index.info import describe

    with Index.open(args.index, mode="r") as index:
        info = describe(index)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"index      {info['path']}")
    print(
        f"documents  {info['documents']:,} ({info['id_type'] or 'no'} ids; "
        f"{info['labels'] - info['documents']:,} deleted or replaced)"
    )
    print(
        f"format     version {info['format_version']}, generation {info['generation']}, "
        f"written by muvera {info['library_version']}"
    )
    print(f"model      {info['model'] or '(none recorded)'}")
    fde = ", ".join(f"{k}={v}" for k, v in info["fde"].items())
    print(f"FDE        {info['fde_dimension']:,} dims ({fde})")
    params = ", ".join(f"{k}={v}" for k, v in info["store_parameters"].items())
    print(f"store      {info['store']} ({params}); tokens {info['token_dtype']}")
    calibration = info["calibration"] or {}
    print(
        f"checksums  {'recorded' if info['checksums'] else 'none'}; calibration "
        f"{calibration.get('kind', 'none')}"
        + (f" ({calibration['reason']})" if calibration.get("reason") else "")
    )
    print(
        f"search     token cells {info['token_cells']}; "
        f"{info['default_candidates']} candidates by default"
    )
    per_doc = info["bytes_per_document"]
    print(
        f"size       {info['bytes'] / 2**20:,.1f} MiB"
        + (f" ({per_doc / 1024:,.1f} KiB per document)" if per_doc else "")
    )
    for name, size in info["files"].items():
        print(f"  {name:<28} {size:>14,} bytes")
    return 0
