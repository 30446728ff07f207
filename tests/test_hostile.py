"""An index folder can come from anyone: what is read from disk is checked before it is
trusted (paths, fields, spans, graph lists, dimensions), every failure is a MuveraError,
and the writer tidies up after crashes and failed creates."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct

import numpy as np
import pytest

from muvera import FDEConfig, Index, MuveraError

D = 8
CONFIG = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2)


def _docs(n: int = 20, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    docs = [rng.standard_normal((int(m), D)).astype(np.float32) for m in rng.integers(2, 9, n)]
    return [x / np.linalg.norm(x, axis=1, keepdims=True) for x in docs]  # unit rows


def _index(tmp_path, store: str = "exact", name: str = "ix"):
    path = tmp_path / name
    with Index.create(path, CONFIG, store=store) as index:
        index.add(list(range(20)), _docs())
    return path


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "manifest.json").read_text())
    for dotted, value in changes.items():
        node = manifest
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tokens__file", "../outside.bin"),
        ("tokens__file", "/etc/passwd"),
        ("records__file", "sub/records.jsonl"),
        ("state", ".."),
        ("encoder", "../encoder.npz"),
        ("store__entry__state", "../../x.npz"),
    ],
)
def test_manifest_paths_are_confined_to_the_folder(tmp_path, field, value):
    path = _index(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep me")
    _edit_manifest(path, **{field: value})
    for mode in ("r", "a"):
        with pytest.raises(MuveraError, match="not a file name of the index"):
            Index.open(path, mode=mode)
    assert outside.read_bytes() == b"keep me"


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    path = _index(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 4096)
    (path / "tokens.bin").unlink()
    os.symlink(secret, path / "tokens.bin")
    with pytest.raises(MuveraError, match="links out of the index folder"):
        Index.open(path, mode="r")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generation", "7"),
        ("token_dimension", -8),
        ("fde_dimension", 0),
        ("next_label", True),
        ("records__bytes", -1),
        ("store__entry", [1, 2]),
        ("id_type", "float"),
        ("metadata", [1]),
    ],
)
def test_malformed_manifest_fields_are_errors(tmp_path, field, value):
    path = _index(tmp_path)
    _edit_manifest(path, **{field: value})
    with pytest.raises(MuveraError):
        Index.open(path, mode="r")


def test_an_encoder_from_another_index_is_refused(tmp_path):
    path = _index(tmp_path)
    other = tmp_path / "other"
    Index.create(other, FDEConfig(dimension=D, num_repetitions=3), store="exact").close()
    shutil.copy(other / "encoder.npz", path / "encoder.npz")
    with pytest.raises(MuveraError, match="does not match its manifest"):
        Index.open(path, mode="r")


@pytest.mark.parametrize("store", ["exact", "hnswlib"])
def test_token_spans_past_the_token_file_are_refused(tmp_path, store):
    """Crafted offsets would make the compiled MaxSim read past the memory map."""
    pytest.importorskip("hnswlib")
    path = _index(tmp_path, store)
    manifest = json.loads((path / "manifest.json").read_text())
    with np.load(path / manifest["state"]) as state:
        arrays = {k: state[k] for k in state.files}
    arrays["offsets"] = arrays["offsets"] + 10**6
    np.savez(path / manifest["state"], **arrays)
    with pytest.raises(MuveraError, match=r"run past the end of tokens\.bin"):
        Index.open(path, mode="r")


@pytest.mark.parametrize(
    "damage",
    ["truncate_state", "garbage_encoder", "garbage_records", "truncate_tokens", "empty_state"],
)
def test_damaged_files_are_muvera_errors(tmp_path, damage):
    path = _index(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    if damage == "truncate_state":
        data = (path / manifest["state"]).read_bytes()
        (path / manifest["state"]).write_bytes(data[: len(data) // 2])
    elif damage == "garbage_encoder":
        (path / "encoder.npz").write_bytes(b"PK\x03\x04" + os.urandom(200))
    elif damage == "garbage_records":
        data = (path / "records.jsonl").read_bytes()
        (path / "records.jsonl").write_bytes(b"\xff{not json" + data[10:])
    elif damage == "truncate_tokens":
        with (path / "tokens.bin").open("r+b") as fh:
            fh.truncate(10)
    else:
        (path / manifest["state"]).write_bytes(b"")
    with pytest.raises(MuveraError):
        Index.open(path, mode="r")


def test_graph_lists_that_break_the_walks_rules_are_refused(tmp_path):
    """A neighbour count above max_m0 would make the compiled walk read past a list."""
    pytest.importorskip("hnswlib")
    from muvera.stores.hnsw_graph import HEADER, LINKS_HEADER, LINKS_MAGIC

    path = _index(tmp_path, "hnswlib")
    manifest = json.loads((path / "manifest.json").read_text())
    graph = path / manifest["store"]["entry"]["file"]
    data = bytearray(graph.read_bytes())
    start = LINKS_HEADER.size if data.startswith(LINKS_MAGIC) else 0  # a links file
    max_m0 = HEADER.unpack_from(data, start)[9]
    struct.pack_into("<H", data, start + HEADER.size, max_m0 + 5)  # row 0's level-0 count
    graph.write_bytes(bytes(data))
    for options in (None, {"ef": 50}):
        with pytest.raises(MuveraError, match="longer than max_m0"):
            Index.open(path, mode="r", store_options=options)


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, -1])
def test_int_ids_must_fit_int64_and_not_be_the_padding(tmp_path, bad):
    with Index.create(tmp_path / "ix", CONFIG, store="exact") as index:
        with pytest.raises(MuveraError, match="outside int64"):
            index.add([bad], _docs(1))
        index.add([-2, 2**63 - 1], _docs(2))
        assert sorted(index.ids) == [-2, 2**63 - 1]


def test_payloads_and_metadata_must_be_strict_json(tmp_path):
    with Index.create(tmp_path / "ix", CONFIG, store="exact") as index:
        for bad in ({"x": float("nan")}, {"x": float("inf")}):
            with pytest.raises(MuveraError, match="not JSON-serialisable"):
                index.add([1], _docs(1), [bad])
            with pytest.raises(MuveraError, match="not JSON-serialisable"):
                index.update_metadata(bad)
        assert len(index) == 0


def test_a_failed_create_leaves_nothing_behind(tmp_path):
    pytest.importorskip("hnswlib")
    new = tmp_path / "new"
    with pytest.raises(MuveraError, match="bad options"):
        Index.create(new, CONFIG, store_options={"no_such_option": 1})
    assert not new.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MuveraError, match=r"M must be in \[2, 65536\]"):
        Index.create(empty, CONFIG, store_options={"M": 1})  # hnswlib fails to insert with 1
    assert list(empty.iterdir()) == []
    Index.create(empty, CONFIG).close()  # the retry works


def test_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = _index(tmp_path)
    finally:
        os.umask(old)
    for name in os.listdir(path):
        if name != ".lock":
            assert (path / name).stat().st_mode & 0o777 == 0o644, name


def test_the_writer_removes_what_a_crash_left_behind(tmp_path):
    path = _index(tmp_path)
    stale = [".manifest.json.abc123.tmp", "tokens-000099.bin", "state-000099.npz",
             "exact-000099.npz"]  # fmt: skip
    for name in stale:
        (path / name).write_bytes(b"x")
    (path / "notes.txt").write_text("mine")
    Index.open(path, mode="r").close()
    assert all((path / name).exists() for name in stale)  # a reader changes nothing
    with Index.open(path) as index:
        assert len(index) == 20
    assert not any((path / name).exists() for name in stale)
    assert (path / "notes.txt").read_text() == "mine"
    assert Index.open(path, mode="r").search([_docs()[3]], k=1).ids[0, 0] == 3


def test_index_metadata_cannot_turn_on_trust_remote_code(tmp_path, capsys):
    from muvera.cli import main

    path = _index(tmp_path)
    with Index.open(path) as index:
        index.update_metadata(
            {"model": str(tmp_path / "model"), "model_options": {"trust_remote_code": True}}
        )
    assert main(["search", str(path), "a question"]) == 2
    assert "cannot turn that on" in capsys.readouterr().err


def test_checksums_find_a_damaged_file_and_cost_only_what_a_commit_wrote(tmp_path):
    """An index created with checksums=True records a CRC-32 per file at every commit
    (carried forward over appended bytes: equal to a full recomputation); open(verify=True)
    and verify() name a file whose bytes changed; without checksums, verify says so."""
    from muvera.index.checksums import compute_checksums

    pytest.importorskip("hnswlib")
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(2, 9, 60)]
    path = tmp_path / "ix"
    config = FDEConfig(dimension=8, num_repetitions=2)
    with Index.create(path, config, store="hnswlib", checksums=True) as index:
        for start in range(0, 60, 20):
            index.add(list(range(start, start + 20)), docs[start : start + 20])
        index.upsert([3], [docs[4]])
        index.delete(list(range(40)))  # compacts: a new token file
        index.add([100], [docs[0]])
        manifest = index.manifest
    recorded = manifest["checksums"]
    assert set(recorded) == {p.name for p in path.iterdir() if p.name not in
                             ("manifest.json", ".lock")}  # fmt: skip
    assert recorded == compute_checksums(path, manifest, None)  # carried forward == full
    with Index.open(path, mode="r", verify=True) as index:
        index.verify()
        assert index.search([docs[50]], k=1).ids[0, 0] == 50
    for name in sorted(recorded):
        damaged = tmp_path / f"damaged-{name}"
        shutil.copytree(path, damaged)
        data = bytearray((damaged / name).read_bytes())
        data[len(data) // 2] ^= 0x10
        (damaged / name).write_bytes(bytes(data))
        with pytest.raises(MuveraError, match=re.escape(name)):
            Index.open(damaged, mode="r", verify=True)
    with Index.create(tmp_path / "plain", config, store="exact") as index:
        index.add([1], docs[:1])
        with pytest.raises(MuveraError, match="records no checksums"):
            index.verify()
