"""The ``muvera`` argument parser: subcommands and their options."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._version import __version__
from ..fde import FDEConfig


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
    group.add_argument(
        "--calibration",
        choices=("auto", "centre", "off"),
        default="auto",
        help="centre the tokens' FDEs on the corpus mean: auto (default) when the first "
        "batch's tokens share a large common component",
    )


def _add_store_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("store")
    group.add_argument("--store", choices=("hnswlib", "exact", "qdrant"), default="hnswlib")
    group.add_argument("--qdrant-url", help="Qdrant server or cluster URL (store qdrant)")
    group.add_argument("--qdrant-path", help="Qdrant local-mode directory (store qdrant)")
    group.add_argument("--collection", default="muvera", help="Qdrant collection name")
    group.add_argument(
        "--token-dtype", choices=(
            "float16", "float32", "int8", "int4", "residual4", "residual4lm", "residual2"
        ),
        default="float16",
        help="token storage: int8/int4 keep codes with a scale per token (about 1/2 and 1/4 "
        "of float16's bytes), residual4 int4 codes of each token's difference from its "
        "token cell's centroid (int4's size, closer to float16; hnswlib and exact stores), "
        "residual4lm residual4's bytes decoding to Lloyd-Max levels with a least-squares "
        "scale (0.57 of residual4's squared error), residual2 the same differences in 2 "
        "bits a value (half of residual4's bytes)",
    )  # fmt: skip
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
    group.add_argument(
        "--token-cells",
        choices=("off", "1024", "2048", "4096", "8192", "16384", "32768", "65536"),
        help="token cells fitted by local stores (default 8192; more cells rank candidates "
        "and code residuals finer at a larger corpus; off: none, FDE candidates only)",
    )
    group.add_argument(
        "--graph-vectors",
        action="store_const",
        const=True,
        help="keep hnswlib's float32 copy of the FDEs in the graph files (default with int8 "
        "codes: without it, a quarter of the bytes)",
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
    p.add_argument("--pool-factor", type=float, default=1.0,
                   help="pool each document's tokens to about 1/N as PyLate does (default 1: "
                   "none); later `add`s use the same")  # fmt: skip
    _add_model_args(p, required=True)
    _add_fde_args(p)
    _add_store_args(p)

    p = sub.add_parser("add", help="encode more documents into an existing index")
    p.add_argument("index", type=Path, help="index directory (from `muvera index`)")
    p.add_argument("corpus", type=Path, help="BEIR folder or JSONL file (_id/id, title, text), "
                   "or a .npz of token vectors from `muvera encode` (no model needed)")  # fmt: skip
    p.add_argument("--upsert", action="store_true", help="replace documents whose ids exist")
    p.add_argument("--no-text", action="store_true", help="do not keep title/text in payloads")
    p.add_argument("--pool-factor", type=float, help="default: the index's (see `index`)")
    _add_model_args(p, required=False)

    p = sub.add_parser("delete", help="delete documents from an index by id")
    p.add_argument("index", type=Path, help="index directory")
    p.add_argument("ids", nargs="*", help="document ids")
    p.add_argument("--ids-file", type=Path, help="a file of ids, one a line")
    p.add_argument("--missing-ok", action="store_true", help="skip ids the index lacks")

    p = sub.add_parser("info", help="what an index holds: documents, model, FDE, store, sizes")
    p.add_argument("index", type=Path, help="index directory")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("search", help="search an index with query texts or a file of queries")
    p.add_argument("index", type=Path, help="index directory (from `muvera index`)")
    p.add_argument("queries", nargs="*", help="query texts")
    p.add_argument(
        "--queries",
        type=Path,
        dest="queries_file",
        help="a file of queries: .tsv (id<TAB>text), .txt, BEIR queries.jsonl or folder",
    )
    p.add_argument("--out", type=Path, help="write a TREC run file (qid Q0 doc rank score tag)")
    p.add_argument("--trec", action="store_true", help="print the TREC run on stdout")
    p.add_argument("-k", type=_positive, default=10, help="results per query")
    p.add_argument(
        "--candidates", type=_positive, default=None,
        help="documents re-ranked (default: 100 with token cells, else 200)",
    )  # fmt: skip
    p.add_argument("--no-rerank", action="store_true", help="FDE scores only")
    p.add_argument("--exact", action="store_true", help="brute-force exact MaxSim instead")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--ef", type=_positive, help="hnswlib search breadth for this search")
    _add_model_args(p, required=False)

    p = sub.add_parser("serve", help="serve an index over HTTP (search, add, delete, get)")
    p.add_argument("index", type=Path, help="index directory")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=_positive, default=8000)
    p.add_argument("--writable", action="store_true", help="allow POST/DELETE /documents")
    p.add_argument("--api-key", help="require this key (X-API-Key; default $MUVERA_API_KEY)")
    p.add_argument("--no-model", action="store_true", help="token-vector requests only")
    p.add_argument(
        "--max-request-bytes", type=_positive, default=32 * 1024 * 1024, help="body size cap"
    )
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
