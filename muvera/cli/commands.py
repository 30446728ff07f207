"""The ``index``, ``search``, ``eval`` and ``encode`` subcommands."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import MuveraError
from .common import (
    _build_index,
    _evaluate,
    _fde_config,
    _load_model,
    _payloads,
    _read_texts,
    _shorten,
    _Status,
)

_SEARCH_BATCH = 256  # queries per search call of a batch run


def _cmd_index(args: argparse.Namespace, status: _Status) -> int:
    from ..eval import load_corpus

    corpus = load_corpus(args.corpus)
    model = _load_model(args.model, args)
    index = _build_index(args, model, corpus, args.out, status, keep_text=not args.no_text)
    index.close()
    print(f"indexed {len(corpus):,} documents into {args.out}")
    return 0


def _open_with_model(path: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """An index opened read-only, and the model it records (``--model`` overrides)."""
    from ..index import Index

    ef = getattr(args, "ef", None)
    index = Index.open(path, mode="r", store_options=None if ef is None else {"ef": ef})
    meta = index.metadata
    name = args.model or meta.get("model")
    if not name:
        raise MuveraError(f"index {path} records no model; pass --model")
    return index, _load_model(name, args, None if args.model else meta.get("model_options"))


def _read_queries(path: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a queries file: ``.tsv`` (id, tab, text; a header line is skipped),
    ``.txt`` (one query a line, ids from 0), BEIR ``queries.jsonl`` or a BEIR folder."""
    from ..eval import load_queries

    if path.suffix in (".tsv", ".txt"):
        if not path.is_file():
            raise MuveraError(f"no such file: {path}")
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.suffix == ".txt":
            return [str(i) for i in range(len(lines))], lines
        rows = [line.split("\t", 1) for line in lines]
        if rows and rows[0][0].strip().lower() in ("id", "qid", "query-id", "query_id", "_id"):
            rows = rows[1:]
        bad = next((i for i, r in enumerate(rows) if len(r) != 2), None)
        if bad is not None:
            raise MuveraError(f"{path}: line {bad + 1} is not 'id<TAB>text'")
        return [r[0].strip() for r in rows], [r[1] for r in rows]
    found = load_queries(path)
    return list(found), list(found.values())


def _cmd_search(args: argparse.Namespace, status: _Status) -> int:
    if bool(args.queries) == bool(args.queries_file):
        raise MuveraError("give query texts, or --queries FILE (not both)")
    if args.queries_file:
        qids, texts = _read_queries(args.queries_file)
        if not texts:
            raise MuveraError(f"{args.queries_file} has no queries")
    else:
        qids, texts = [str(i) for i in range(len(args.queries))], list(args.queries)
    index, model = _open_with_model(args.index, args)
    status(f"encoding {len(texts):,} queries ...")
    tokens = model.encode_queries(texts, show_progress=status.progress and len(texts) > 100)
    ids, scores, payloads = [], [], []
    for start in range(0, len(texts), _SEARCH_BATCH):  # batches: both cores, bounded memory
        part = tokens[start : start + _SEARCH_BATCH]
        if args.exact:
            hits = index.search_exact(part, k=args.k, with_payloads=True)
        else:
            hits = index.search(part, k=args.k, candidates=args.candidates,
                                rerank=not args.no_rerank, with_payloads=True)  # fmt: skip
        ids += hits.ids.tolist()
        scores += hits.scores.tolist()
        payloads += _payloads(hits)
    if args.out is not None or args.trec:
        lines = [
            f"{qid} Q0 {doc_id} {rank + 1} {score:.6f} muvera"
            for qid, row, row_scores in zip(qids, ids, scores, strict=True)
            for rank, (doc_id, score) in enumerate(zip(row, row_scores, strict=True))
            if score != -np.inf
        ]
        text = "\n".join(lines) + ("\n" if lines else "")
        if args.out is None:
            print(text, end="")
        else:
            args.out.write_text(text)
            status(f"wrote {len(lines):,} results of {len(qids):,} queries to {args.out}")
        return 0
    for qi, query in enumerate(texts):
        results = []
        for rank, (doc_id, score) in enumerate(zip(ids[qi], scores[qi], strict=True)):
            if score == -np.inf:
                break
            payload = payloads[qi][rank] or {}
            results.append({"rank": rank + 1, "id": doc_id, "score": float(score), **payload})
        if args.json:
            print(json.dumps({"id": qids[qi], "query": query, "results": results}, default=str))
            continue
        print(f"query: {query}")
        for r in results:
            title = r.get("title") or r.get("text", "")
            print(f"  {r['rank']:>3}. {r['score']:8.3f}  {r['id']}  {_shorten(str(title), 90)}")
    return 0


def _cmd_eval(args: argparse.Namespace, status: _Status) -> int:
    from ..eval import load_beir

    corpus, queries, qrels = load_beir(args.beir, args.split)
    if not queries:
        raise MuveraError(f"{args.beir}: no queries have judgements in qrels/{args.split}.tsv")
    if args.max_queries:
        queries = dict(list(queries.items())[: args.max_queries])
        qrels = {q: qrels[q] for q in queries}
    with tempfile.TemporaryDirectory(prefix="muvera-eval-") as tmp:
        if args.index is not None and (args.index / "manifest.json").is_file():
            index, model = _open_with_model(args.index, args)
            missing = [d for d in corpus if d not in index]
            if missing:
                raise MuveraError(
                    f"index {args.index} lacks {len(missing):,} documents of {args.beir} "
                    f"(e.g. {missing[0]!r}); it was not built from this corpus"
                )
            if len(index) > len(corpus):  # extra documents would take places in the rankings
                extra = next(d for d in index.ids if d not in corpus)
                raise MuveraError(
                    f"index {args.index} holds {len(index) - len(corpus):,} documents that "
                    f"{args.beir} does not (e.g. {extra!r}); evaluate on an index of this "
                    "corpus only"
                )
        else:
            if not args.model:
                raise MuveraError("eval needs --model (or --index with an existing index)")
            model = _load_model(args.model, args)
            out = args.index if args.index is not None else Path(tmp) / "index"
            index = _build_index(args, model, corpus, out, status, keep_text=False)
        try:
            report = _evaluate(args, model, index, queries, qrels, args.candidates, status)
        finally:
            index.close()
    print(
        f"{args.beir.name}: {report.documents:,} documents, {report.queries:,} queries "
        f"(split {args.split}); latency per query after text encoding"
    )
    print(report.to_markdown())
    if args.json_out:
        result = {
            "dataset": str(args.beir),
            "split": args.split,
            "model": getattr(model, "name", None),
            "muvera_version": __version__,
            "fde": index.encoder.config.to_dict(),
            "store": index.manifest["store"]["kind"],
            **report.to_dict(),
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if args.plot:
        print(f"wrote {report.plot(args.plot)}")
    return 0


def _cmd_encode(args: argparse.Namespace, status: _Status) -> int:
    suffix = args.out.suffix
    if suffix not in (".npz", ".npy"):
        raise MuveraError(f"--out must end in .npz or .npy, got {args.out.name!r}")
    if suffix == ".npy" and not args.fde:
        raise MuveraError("multi-vectors are ragged: write them to .npz (or pass --fde)")
    ids, texts = _read_texts(args.input, args.queries)
    if not texts:
        raise MuveraError(f"{args.input} has no texts")
    model = _load_model(args.model, args)
    what = "queries" if args.queries else "documents"
    status(f"encoding {len(texts):,} {what} with {model} ...")
    encode = model.encode_queries if args.queries else model.encode_documents
    tokens = encode(texts, show_progress=status.progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.fde:
        from ..fde import FDEEncoder

        config = _fde_config(args, model.dimension)
        encoder = FDEEncoder(config)
        fdes = encoder.encode_queries(tokens) if args.queries else encoder.encode_documents(tokens)
        if suffix == ".npy":
            np.save(args.out, fdes)
        else:
            np.savez(args.out, ids=np.array(ids), fdes=fdes, config=json.dumps(config.to_dict()))
        print(f"wrote {fdes.shape[0]:,} FDEs of {fdes.shape[1]:,} dims to {args.out}")
        return 0
    dtype = np.float16 if args.half else np.float32
    np.savez(
        args.out,
        ids=np.array(ids),
        lengths=np.array([t.shape[0] for t in tokens], dtype=np.int64),
        tokens=np.concatenate(tokens).astype(dtype),
    )
    total = sum(t.shape[0] for t in tokens)
    print(
        f"wrote {len(tokens):,} multi-vectors ({total:,} tokens x {model.dimension}) to {args.out}"
    )
    return 0
