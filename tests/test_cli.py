"""The `muvera` CLI: each subcommand against the library it wraps, and its bad-input paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import format_version

from muvera import FDEConfig, FDEEncoder, Index, MuveraError, maxsim
from muvera.cli import main
from muvera.eval import load_beir, ndcg_at_k

pytest.importorskip("transformers")
pytest.importorskip("hnswlib")

TEXTS = {
    "d1": ("Cats", "the cat sat on the mat"),
    "d2": ("Dogs", "a dog ran in the park"),
    "d3": ("Greeting", "hello world"),
    "d4": ("Numbers", "one two three four five"),
    "d5": ("More numbers", "six seven eight nine ten"),
    "d6": ("Muvera", "muvera vectors fast"),
    "d7": ("Documents", "query document one"),
    "d8": ("Parks", "the park in the world"),
}
QUERIES = {"q1": "the cat on the mat", "q2": "dog park", "q3": "six seven", "q4": "fast vectors"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 2, "d8": 1}, "q3": {"d5": 1}, "q4": {"d6": 1}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from model_fixtures import pylate_model

    directory = tmp_path_factory.mktemp("cli") / "model"
    pylate_model(directory, n_dense=1)
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    from muvera import ColBERT

    return ColBERT(model_dir, device="cpu")


@pytest.fixture
def beir(tmp_path) -> Path:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in TEXTS.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items())
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        + "".join(f"{q}\t{d}\t{g}\n" for q, docs in QRELS.items() for d, g in docs.items())
    )
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_then_search_matches_the_library(capsys, tmp_path, beir, model, model_dir):
    code, out, _ = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--num-repetitions", "4")  # fmt: skip
    assert code == 0 and "indexed 8 documents" in out
    index = Index.open(tmp_path / "ix", mode="r")
    assert len(index) == 8 and index.encoder.config.num_repetitions == 4
    assert index.metadata["model"] == str(model_dir.resolve())
    assert index.records.payloads[0] == {"title": "Cats", "text": TEXTS["d1"][1]}

    queries = ["the cat on the mat", "six seven"]
    code, out, _ = run(capsys, "search", tmp_path / "ix", *queries, "-k", "3", "--json",
                       "--device", "cpu")  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    expected = index.search(model.encode_queries(queries), k=3, candidates=100)
    for line, query, ids, scores in zip(lines, queries, expected.ids, expected.scores, strict=True):
        assert line["query"] == query
        assert [r["id"] for r in line["results"]] == list(ids)
        np.testing.assert_allclose([r["score"] for r in line["results"]], scores, rtol=1e-5)
        assert line["results"][0]["title"] == TEXTS[ids[0]][0]

    code, out, _ = run(
        capsys, "search", tmp_path / "ix", "hello world", "--exact", "--device", "cpu"
    )
    exact = maxsim(model.encode_queries(["hello world"]), [index.tokens(d) for d in index.ids])
    assert code == 0 and out.splitlines()[1].split()[2] == index.ids[int(exact.argmax())]
    assert out.startswith("query: hello world")


def test_index_hnsw_quantization_option(capsys, tmp_path, beir, model_dir):
    code, out, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--num-repetitions", "4", "--hnsw-quantization",
                       "none", "--ef", "40")  # fmt: skip
    assert code == 0, err
    assert "indexed 8 documents" in out
    store = Index.open(tmp_path / "ix", mode="r").store
    assert (store.quantization, store.ef, store.quantized) == ("none", 40, False)
    assert store.graph_vectors  # hnswlib's float32 search needs them


@pytest.mark.parametrize(("flag", "section"), [("off", None), ("16384", {"count": 16384})])
def test_index_token_cells_option(capsys, tmp_path, beir, model_dir, flag, section):
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--num-repetitions", "4", "--store", "exact",
                       "--token-cells", flag)  # fmt: skip
    assert code == 0, err
    assert Index.open(tmp_path / "ix", mode="r").manifest["tokens"].get("cells") == section


@pytest.mark.parametrize("flag", [[], ["--graph-vectors"]])
def test_index_graph_vectors_option(capsys, tmp_path, beir, model_dir, flag):
    """Graph files without hnswlib's vectors by default, with them on request: the same
    search either way."""
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--num-repetitions", "4", *flag)  # fmt: skip
    assert code == 0, err
    index = Index.open(tmp_path / "ix", mode="r")
    assert index.store.graph_vectors is bool(flag)
    assert index.manifest["store"]["entry"]["graph_vectors"] is bool(flag)
    code, out, err = run(capsys, "search", tmp_path / "ix", "the cat", "--json", "--device",
                         "cpu")  # fmt: skip
    assert code == 0 and json.loads(out)["results"], err


def test_index_token_dtype_int8_then_search(capsys, tmp_path, beir, model, model_dir):
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--token-dtype", "int8")  # fmt: skip
    assert code == 0, err
    index = Index.open(tmp_path / "ix", mode="r")
    assert index.manifest["tokens"]["dtype"] == "int8"
    assert index.manifest["format_version"] == format_version(index.manifest, 4)
    encoded = model.encode_documents([f"{t} {x}".strip() for t, x in TEXTS.values()])
    for doc, want in zip(TEXTS, encoded, strict=True):  # codes within half a step (1/254)
        np.testing.assert_allclose(index.tokens(doc), want, rtol=0, atol=1 / 254 + 1e-6)
    code, out, err = run(capsys, "search", tmp_path / "ix", "the cat on the mat", "--json",
                         "--device", "cpu")  # fmt: skip
    want = index.search(model.encode_queries(["the cat on the mat"]), k=10)
    assert code == 0, err
    assert [r["id"] for r in json.loads(out)["results"]] == list(want.ids[0])


def test_index_token_dtype_residual4lm_then_search(capsys, tmp_path, beir, model_dir):
    """The CLI passes residual4lm through: the manifest says it (format version 10) and
    the index answers a search like its own API does."""
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--token-dtype", "residual4lm")  # fmt: skip
    assert code == 0, err
    with Index.open(tmp_path / "ix", mode="r") as index:
        assert index.manifest["tokens"]["dtype"] == "residual4lm"
        assert index.manifest["format_version"] == format_version(index.manifest, 10)
        assert len(index) == len(TEXTS)
    code, out, err = run(capsys, "search", tmp_path / "ix", "the cat on the mat", "--json",
                         "--device", "cpu")  # fmt: skip
    assert code == 0 and json.loads(out)["results"], err


def test_index_encodes_and_adds_in_chunks_under_one_commit(
    capsys, tmp_path, beir, model, model_dir, monkeypatch
):
    from muvera.cli import common

    monkeypatch.setattr(common, "_ADD_CHUNK", 3)  # 8 documents: chunks of 3, 3, 2
    seen = []
    real = model.__class__.encode_documents

    def counting(self, texts, **kw):
        seen.append(len(texts))
        return real(self, texts, **kw)

    monkeypatch.setattr(model.__class__, "encode_documents", counting)
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu")  # fmt: skip
    assert code == 0, err
    assert seen == [3, 3, 2]
    with Index.open(tmp_path / "ix", mode="r") as index:
        assert len(index) == 8 and index.manifest["generation"] == 1  # one commit
        want = model.encode_documents([f"{t} {x}".strip() for t, x in TEXTS.values()])
        for doc, tokens in zip(TEXTS, want, strict=True):
            np.testing.assert_allclose(index.tokens(doc), tokens, atol=1e-3)


def test_index_calibration_option(capsys, tmp_path, beir, model_dir):
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--calibration", "off")  # fmt: skip
    assert code == 0, err
    assert Index.open(tmp_path / "ix", mode="r").calibration["reason"] == "calibration='off'"
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "c",
                       "--device", "cpu", "--calibration", "centre")  # fmt: skip
    assert code == 2 and "at least 1000 token vectors" in err  # 8 short documents
    assert not (tmp_path / "c").exists()


def test_index_and_add_pool_document_tokens(capsys, tmp_path, beir, model, model_dir):
    from muvera.models.pooling import pool_tokens

    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu", "--pool-factor", "2")  # fmt: skip
    assert code == 0, err
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"_id": "x1", "title": "", "text": TEXTS["d1"][1]}) + "\n")
    code, _, err = run(capsys, "add", tmp_path / "ix", extra, "--device", "cpu")
    assert code == 0, err
    with Index.open(tmp_path / "ix", mode="r") as index:
        assert index.metadata["pool_factor"] == 2
        for doc_id, text in (("d1", " ".join(TEXTS["d1"])), ("x1", TEXTS["d1"][1])):
            expected = pool_tokens(model.encode_documents([text.strip()]), 2)[0]
            assert index.tokens(doc_id).shape == expected.shape
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "b",
                       "--device", "cpu", "--pool-factor", "0.5")  # fmt: skip
    assert code == 2 and "pool_factor" in err


def test_eval_table_json_and_plot(capsys, tmp_path, beir, model, model_dir):
    pytest.importorskip("matplotlib")
    code, out, _ = run(capsys, "eval", beir, "--model", model_dir, "--candidates", "2,4,100",
                       "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png",
                       "--store", "exact", "--device", "cpu")  # fmt: skip
    assert code == 0
    assert "| exact |" in out and "| rerank@4 |" in out and "| rerank@8 |" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert [r["stage"] for r in result["rows"]] == ["exact", "fde", "rerank@2", "rerank@4",
                                                    "rerank@8"]  # fmt: skip
    assert result["documents"] == 8 and result["queries"] == 4 and result["store"] == "exact"
    # the exact row is exact MaxSim scored with trec_eval's nDCG@10
    corpus, queries, qrels = load_beir(beir)
    texts = [(corpus[d]["title"] + " " + corpus[d]["text"]).strip() for d in corpus]
    scores = maxsim(model.encode_queries(list(queries.values())), model.encode_documents(texts))
    run_ = {q: dict(zip(corpus, map(float, row), strict=True))
            for q, row in zip(queries, scores, strict=True)}  # fmt: skip
    assert result["rows"][0]["ndcg_at_10"] == pytest.approx(ndcg_at_k(run_, qrels, 10), abs=1e-6)
    # re-ranking every document is exact MaxSim again
    assert result["rows"][-1]["ndcg_at_10"] == pytest.approx(result["rows"][0]["ndcg_at_10"])
    assert result["rows"][-1]["exact_top10_found"] == 1.0
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --index keeps the index, and a second run reuses it (and its recorded model)
    args = ("eval", beir, "--index", tmp_path / "kept", "--candidates", "4", "--device", "cpu")
    assert run(capsys, *args, "--model", model_dir)[0] == 0
    code, out, _ = run(capsys, *args)
    assert code == 0 and "| rerank@4 |" in out


def test_encode_multivectors_and_fdes(capsys, tmp_path, beir, model, model_dir):
    code, out, _ = run(capsys, "encode", beir, "--model", model_dir, "--out", tmp_path / "mv.npz",
                       "--device", "cpu")  # fmt: skip
    assert code == 0 and "wrote 8 multi-vectors" in out
    with np.load(tmp_path / "mv.npz") as z:
        texts = [(t + " " + x).strip() for t, x in TEXTS.values()]
        expected = model.encode_documents(texts)
        assert list(z["ids"]) == list(TEXTS)
        parts = np.split(z["tokens"], np.cumsum(z["lengths"])[:-1])
        for got, want in zip(parts, expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    queries = tmp_path / "q.txt"
    queries.write_text("the cat\nfast vectors\n")
    code, _, _ = run(capsys, "encode", queries, "--queries", "--fde", "--model", model_dir,
                     "--out", tmp_path / "q.npy", "--device", "cpu", "--seed", "7")  # fmt: skip
    assert code == 0
    encoder = FDEEncoder(FDEConfig(dimension=model.dimension, seed=7))
    expected = encoder.encode_queries(model.encode_queries(["the cat", "fast vectors"]))
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), expected, rtol=1e-5, atol=1e-6)

    code, _, _ = run(capsys, "encode", beir, "--fde", "--model", model_dir, "--out",
                     tmp_path / "d.npz", "--device", "cpu")  # fmt: skip
    with np.load(tmp_path / "d.npz") as z:
        assert z["fdes"].shape == (8, 10240) and list(z["ids"]) == list(TEXTS)
        assert FDEConfig.from_dict(json.loads(str(z["config"]))).dimension == model.dimension


def test_demo_with_a_given_model_and_corpus(capsys, tmp_path, beir, model_dir):
    code, out, _ = run(capsys, "demo", "--model", model_dir, "--corpus", beir, "--out",
                       tmp_path / "demo", "--candidates", "2,8", "--device", "cpu")  # fmt: skip
    assert code == 0
    assert "query q1: the cat on the mat" in out
    assert "| rerank@8 |" in out and "ColBERT-trained model" in out
    assert Index.open(tmp_path / "demo", mode="r").metadata["model"] == str(model_dir.resolve())


def test_demo_default_corpus_ships_in_the_package():
    corpus, queries, qrels = load_beir(Path(__file__).resolve().parents[1] / "muvera" / "data"
                                       / "scifact-sample")  # fmt: skip
    assert len(corpus) == 500 and len(queries) == 50
    assert all(d in corpus for judged in qrels.values() for d in judged)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "{tmp}/missing.jsonl", "--model", "{model}", "--out", "{tmp}/o"],
         "no such file: {tmp}/missing.jsonl"),
        (["index", "{tmp}/bad.jsonl", "--model", "{model}", "--out", "{tmp}/o"],
         "bad.jsonl:2: malformed JSON"),
        (["index", "{tmp}/dup.jsonl", "--model", "{model}", "--out", "{tmp}/o"],
         "dup.jsonl:2: duplicate id 'a'"),
        (["index", "{tmp}/ok.jsonl", "--model", "{tmp}/no-such-model", "--out", "{tmp}/o"],
         "model directory '{tmp}/no-such-model' does not exist"),
        (["search", "{tmp}/nothing", "query"], "no muvera index at {tmp}/nothing"),
        (["search", "{tmp}/future", "query"], "has format version 99"),
        (["eval", "{tmp}/nothing", "--model", "{model}"], "no BEIR folder at {tmp}/nothing"),
        (["encode", "{tmp}/ok.jsonl", "--model", "{model}", "--out", "{tmp}/x.npy"],
         "multi-vectors are ragged"),
        (["index", "{tmp}/ok.jsonl", "--model", "{model}", "--out", "{tmp}/o", "--store",
          "qdrant"], "needs exactly one of --qdrant-url or --qdrant-path"),
        (["index", "{tmp}/ok.jsonl", "--model", "{model}", "--out", "{tmp}/o", "--store",
          "exact", "--ef", "50"], "--ef needs --store hnswlib"),
        (["index", "{tmp}/ok.jsonl", "--model", "{model}", "--out", "{tmp}/o", "--store",
          "exact", "--hnsw-quantization", "none"], "--hnsw-quantization needs --store hnswlib"),
        (["index", "{tmp}/ok.jsonl", "--model", "{model}", "--out", "{tmp}/o", "--store",
          "exact", "--graph-vectors"], "--graph-vectors needs --store hnswlib"),
        (["index", "{tmp}/ok.jsonl", "--model", "{model}", "--out", "{tmp}/o", "--store",
          "qdrant", "--qdrant-path", "{tmp}/q", "--token-cells", "1024"],
         "--token-cells needs a local store"),
    ],
)  # fmt: skip
def test_bad_input_one_line_exit_2(capsys, tmp_path, model_dir, argv, message):
    (tmp_path / "bad.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    (tmp_path / "dup.jsonl").write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    (tmp_path / "ok.jsonl").write_text('{"_id": "a", "text": "the cat"}\n')
    future = Index.create(tmp_path / "future", FDEConfig(dimension=4), store="exact")
    future.close()
    manifest = json.loads((tmp_path / "future" / "manifest.json").read_text())
    manifest["format_version"] = 99
    (tmp_path / "future" / "manifest.json").write_text(json.dumps(manifest))

    fill = {"tmp": str(tmp_path), "model": str(model_dir)}
    code, _, err = run(capsys, *[a.format(**fill) for a in argv])
    assert code == 2
    assert err.startswith("muvera: error: ") and message.format(**fill) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing half-built


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(MuveraError, match="no muvera index"):
        main(["--debug", "search", str(tmp_path / "nothing"), "query"])


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["search"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["eval", "x", "--candidates", "10,zero"])
    assert info.value.code == 2
    assert "'zero' is not an integer" in capsys.readouterr().err


def test_a_failed_build_leaves_no_index_behind(capsys, tmp_path, beir, model_dir, monkeypatch):
    from muvera.models import ColBERT

    def fail(self, texts, **kwargs):
        raise MuveraError("encoding failed on purpose")

    monkeypatch.setattr(ColBERT, "encode_documents", fail)
    code, _, err = run(capsys, "index", beir, "--model", model_dir, "--out", tmp_path / "ix",
                       "--device", "cpu")  # fmt: skip
    assert code == 2 and "encoding failed on purpose" in err
    assert not (tmp_path / "ix").exists()


def test_encode_queries_from_a_beir_folder(capsys, tmp_path, beir, model, model_dir):
    code, _, _ = run(capsys, "encode", beir, "--queries", "--model", model_dir, "--out",
                     tmp_path / "q.npz", "--device", "cpu")  # fmt: skip
    assert code == 0
    with np.load(tmp_path / "q.npz") as z:
        assert list(z["ids"]) == list(QUERIES)
        expected = model.encode_queries(list(QUERIES.values()))
        assert z["tokens"].shape[0] == sum(len(t) for t in expected)


def test_add_delete_info_and_a_batch_search_to_a_trec_run(capsys, tmp_path, beir, model,
                                                          model_dir):  # fmt: skip
    """The index grows with `add` (every corpus field kept), refuses known ids without
    --upsert, loses documents with `delete`, is described by `info`, and a file of queries
    becomes a TREC run equal to the library's results."""
    out = tmp_path / "ix"
    code, _, _ = run(capsys, "index", beir, "--model", beir.parent / "nothing", "--out", out)
    assert code == 2  # (no such model folder: nothing created)
    assert not out.exists()
    model_path = str(model_dir.resolve())
    code, _, _ = run(capsys, "index", beir, "--model", model_path, "--out", out, "--device",
                     "cpu", "--num-repetitions", "4")  # fmt: skip
    assert code == 0
    more = tmp_path / "more.jsonl"
    more.write_text(
        json.dumps(
            {
                "_id": "d9",
                "title": "Birds",
                "text": "a bird in the sky",
                "year": 2020,
                "tags": ["x"],
            }
        )
        + "\n"
        + json.dumps({"id": "d10", "text": "fish swim", "lang": "en"})
        + "\n"
    )
    code, stdout, _ = run(capsys, "add", out, more, "--device", "cpu")
    assert code == 0 and "2 new; 10 in all" in stdout
    with Index.open(out, mode="r") as index:
        assert index.get(["d9"])[0].payload == {
            "title": "Birds", "text": "a bird in the sky", "year": 2020, "tags": ["x"]
        }  # fmt: skip
    code, _, err = run(capsys, "add", out, more, "--device", "cpu")
    assert code == 2 and "pass --upsert" in err
    more.write_text(json.dumps({"_id": "d9", "text": "a bird", "year": 2021}) + "\n")
    code, stdout, _ = run(capsys, "add", out, more, "--upsert", "--device", "cpu")
    assert code == 0 and "0 new; 10 in all" in stdout

    queries = tmp_path / "queries.tsv"
    queries.write_text("id\ttext\n" + "".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    run_file = tmp_path / "run.trec"
    code, _, _ = run(capsys, "search", out, "--queries", queries, "--out", run_file, "-k", "3",
                     "--device", "cpu")  # fmt: skip
    assert code == 0
    lines = [line.split() for line in run_file.read_text().splitlines()]
    with Index.open(out, mode="r") as index:
        expected = index.search(model.encode_queries(list(QUERIES.values())), k=3)
    want = [
        [q, "Q0", str(d), str(r + 1), s]
        for q, ids, scores in zip(QUERIES, expected.ids, expected.scores, strict=True)
        for r, (d, s) in enumerate(zip(ids, scores, strict=True))
    ]
    assert [line[:4] for line in lines] == [w[:4] for w in want]
    np.testing.assert_allclose([float(x[4]) for x in lines], [w[4] for w in want], atol=1e-5)
    assert all(line[5] == "muvera" for line in lines)

    code, stdout, _ = run(capsys, "delete", out, "d1", "d10")
    assert code == 0 and "deleted 2 documents" in stdout and "(8 left)" in stdout
    code, _, err = run(capsys, "delete", out, "d1")
    assert code == 2 and "unknown ids" in err
    code, stdout, _ = run(capsys, "delete", out, "d1", "d2", "--missing-ok")
    assert code == 0 and "deleted 1 documents" in stdout
    code, stdout, _ = run(capsys, "info", out, "--json")
    info = json.loads(stdout)
    assert info["documents"] == 7 and info["store"] == "hnswlib" and info["model"] == model_path
    assert info["fde"]["num_repetitions"] == 4 and info["bytes"] == sum(info["files"].values())
    code, stdout, _ = run(capsys, "info", out)
    assert (
        code == 0
        and "documents  7 (str ids; 4 deleted or replaced" in stdout
        and "KiB per document" in stdout
        and "calibration none (" in stdout
        and "token cells on, not fitted yet" in stdout  # 7 documents: too few tokens
        and "200 candidates by default" in stdout
    )
    assert info["token_cells"].startswith("on, not fitted") and info["default_candidates"] == 200

    code, _, err = run(capsys, "eval", beir, "--index", out, "--device", "cpu")
    assert code == 2 and "lacks" in err  # d1 and d2 are gone
    code, _, err = run(capsys, "search", out, "q", "--queries", queries)
    assert code == 2 and "not both" in err


def test_progress_lines_when_stderr_is_not_a_terminal(capsys):
    from muvera.models.tokenizer import progress_callback, progress_lines

    update = progress_lines(10, "encoding documents", interval=0.0)
    for _ in range(5):
        update(2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and err[-1].startswith("encoding documents: 10/10 (100%)")
    update = progress_lines(1000, "encoding", interval=3600.0)  # steady interval: quiet
    update(10)
    update(10)
    assert capsys.readouterr().err == ""
    update(980)  # the end is always printed
    assert "1,000/1,000" in capsys.readouterr().err
    callback = progress_callback(3, "x")  # pytest's stderr is not a terminal: lines
    assert callback.__qualname__.startswith("progress_lines")


def _token_npz(path, doc_ids, docs, *, compressed=False, **override):
    members = {
        "ids": np.array(doc_ids),
        "lengths": np.array([len(d) for d in docs], np.int64),
        "tokens": np.concatenate(docs).astype(np.float16),
    }
    members.update(override)
    (np.savez_compressed if compressed else np.savez)(path, **members)
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_add_a_token_file_streams_it_in_chunks_under_one_commit(
    capsys, tmp_path, monkeypatch, compressed
):
    from muvera.cli import common

    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((n, 16)).astype(np.float32) for n in (3, 1, 5, 2, 4, 6, 2)]
    ids = [f"t{i}" for i in range(len(docs))]
    with Index.create(tmp_path / "ix", FDEConfig(dimension=16), store="hnswlib") as index:
        index.add(["x"], [docs[0]])
        generation = index.manifest["generation"]
    monkeypatch.setattr(common, "_ADD_CHUNK", 3)
    source = _token_npz(tmp_path / "t.npz", ids, docs, compressed=compressed)
    code, out, err = run(capsys, "add", tmp_path / "ix", source)
    assert code == 0, err
    assert "added 7 documents" in out
    with Index.open(tmp_path / "ix", mode="r") as index:
        assert index.manifest["generation"] == generation + 1 and len(index) == 8
        for doc_id, doc in zip(ids, docs, strict=True):
            np.testing.assert_array_equal(index.tokens(doc_id), doc.astype(np.float16))
    code, _, err = run(capsys, "add", tmp_path / "ix", source)
    assert code == 2 and "7 ids are already in the index" in err
    code, out, err = run(capsys, "add", tmp_path / "ix", source, "--upsert")
    assert code == 0 and "(0 new; 8 in all)" in out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lengths": np.array([3, 1], np.int64)}, "2 lengths"),
        ({"lengths": np.array([3, 1, -1], np.int64)}, "token counts >= 0"),
        ({"tokens": np.zeros((9, 16), np.float16)}, "the lengths and the index need"),
        ({"tokens": np.zeros((8, 15), np.float16)}, "the lengths and the index need"),
        ({"tokens": np.zeros((8, 16), np.int8)}, "float32 or float16"),
        ({"ids": np.array([[1, 2, 3]])}, "1-D array of ints or strings"),
        ({"ids": np.array([{}, {}, {}], dtype=object)}, "cannot read ids"),
        ({"tokens": np.full((8, 16), np.nan, np.float32)}, "NaN"),
    ],
)
def test_add_a_bad_token_file_fails_cleanly(capsys, tmp_path, override, message):
    with Index.create(tmp_path / "ix", FDEConfig(dimension=16), store="exact") as index:
        index.add(["x"], [np.ones((2, 16), np.float32)])
    docs = [np.ones((n, 16), np.float32) for n in (3, 1, 4)]
    source = _token_npz(tmp_path / "t.npz", ["a", "b", "c"], docs, **override)
    code, _, err = run(capsys, "add", tmp_path / "ix", source)
    assert code == 2 and message in err, err
    with Index.open(tmp_path / "ix", mode="r") as index:
        assert index.ids == ["x"]  # nothing added
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    code, _, err = run(capsys, "add", tmp_path / "ix", tmp_path / "junk.npz")
    assert code == 2 and "cannot read" in err
