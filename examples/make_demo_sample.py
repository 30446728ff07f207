"""Rebuild ``muvera/data/scifact-sample`` (the offline demo's corpus) from BEIR SciFact.

Takes 50 test queries (a fixed random draw), every document they judge relevant, and
random other abstracts up to 500 documents. The full set lives in ``../shared/data/scifact``
for this project's machines; elsewhere, download BEIR's ``scifact.zip`` and pass ``--data``.

Usage: ``python examples/make_demo_sample.py [--data ../shared/data/scifact]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "muvera" / "data" / "scifact-sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--documents", type=int, default=500)
    args = parser.parse_args()
    rng = random.Random(2405_19504)
    qrels: dict[str, dict[str, str]] = {}
    lines = (args.data / "qrels" / "test.tsv").read_text().splitlines()
    for line in lines[1:]:
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = grade
    qids = sorted(rng.sample(sorted(qrels), args.queries), key=int)
    relevant = sorted({d for q in qids for d in qrels[q]}, key=int)
    corpus = [json.loads(x) for x in (args.data / "corpus.jsonl").read_text().splitlines()]
    others = [r["_id"] for r in corpus if r["_id"] not in set(relevant)]
    keep = set(relevant) | set(rng.sample(others, args.documents - len(relevant)))
    queries = {
        r["_id"]: r for r in map(json.loads, (args.data / "queries.jsonl").read_text().splitlines())
    }
    (OUT / "qrels").mkdir(parents=True, exist_ok=True)
    with (OUT / "corpus.jsonl").open("w") as fh:
        for r in corpus:
            if r["_id"] in keep:
                fh.write(
                    json.dumps({"_id": r["_id"], "title": r["title"], "text": r["text"]}) + "\n"
                )
    with (OUT / "queries.jsonl").open("w") as fh:
        for q in qids:
            fh.write(json.dumps({"_id": q, "text": queries[q]["text"]}) + "\n")
    with (OUT / "qrels" / "test.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, g in qrels[q].items():
                fh.write(f"{q}\t{d}\t{g}\n")
    print(f"{len(keep)} documents, {len(qids)} queries -> {OUT}")


if __name__ == "__main__":
    main()
