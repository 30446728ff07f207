"""The commit of the hnswlib store that rewrites graph files (:mod:`.hnsw_parts` says when):
``HnswStore._merge``, kept apart to keep the store's module small."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .base import Labels
from .hnsw_links import save_graph
from .hnsw_parts import Part, batch_chunks, mark_deleted, seal_rows

__all__ = ["merge_graphs"]


def merge_graphs(store: Any, directory: Path, generation: int, keep: int) -> None:
    """Replace the graph files after the first ``keep`` by graphs of their rows and the
    rows added since the last commit, in order, each of at most
    :func:`~.hnsw_parts.seal_rows` rows (or its loaded file's): hnswlib loads the
    first of them and inserts the others' rows and the new ones after its own, on
    ``num_threads`` threads (in the order its threads reach them), and a full graph is
    written and freed before the next starts empty, so a commit holds one graph's
    float32 copy at a time. Dead rows are marked in each new file, and its codes file
    is written (the loaded file's rows keep their numbers and codes, the others are
    quantized from the new file). ``keep=0``: every graph rewritten."""
    parts = store._parts[keep:]
    first = parts[0].first if parts else store.count_in_parts()
    left = store.count - first  # rows still to place in a graph, loaded ones included
    limit = seal_rows(store.dimension)
    base = parts[0] if parts else None
    built: list[Part] = []
    if base is not None and base.index is not None:  # marks made since it was loaded
        index = base.index
        capacity = max(base.count, min(left, limit))
        index.resize_index(max(capacity, index.get_max_elements()))
    else:
        capacity = max(0 if base is None else base.count, min(left, limit))
        index = store._load_index(base, capacity, directory)
    held = 0 if base is None else base.count  # rows in the graph being built

    def finish() -> None:
        nonlocal index, held, first, left
        rows = np.asarray(index.get_ids_list(), np.int64)
        inside = (rows >= 0) & (rows < store._live.size)
        mark_deleted(index, rows[~inside | ~store._live[np.where(inside, rows, 0)]])
        name = f"hnsw-{generation:06d}" + (f"{len(built):02d}" if built else "")
        path = directory / f"{name}.bin"
        walk, links = not store._fallback, not store.graph_vectors
        loaded = base.graph if base is not None and not built else None
        codes, graph = save_graph(index, path, loaded, links, walk)
        part = Part(path, held, first, None, index if store._fallback else None, codes)
        index = None  # hnswlib's float32 copy is freed before the new graph is read
        store._open_part(part, graph)
        built.append(part)
        first, left = first + held, left - held

    def insert(labels: Labels, vectors: npt.NDArray[np.float32]) -> None:
        nonlocal index, held, capacity
        done = 0
        while done < labels.size:
            if held == capacity:  # full: written, and the next graph starts empty
                finish()
                capacity, held = min(left, limit), 0
                index = store._load_index(None, capacity, directory)
            take = min(labels.size - done, capacity - held)
            index.add_items(
                vectors[done : done + take], labels[done : done + take],
                num_threads=store.num_threads,
            )  # fmt: skip
            done, held = done + take, held + take

    for part in parts[1:]:
        for labels, vectors in part.vectors(store.dimension):
            insert(labels, vectors)
    while store._pending:  # each batch freed once inserted (a failed commit reloads)
        labels, batch = store._pending.pop(0)
        for start, fdes in batch_chunks(batch):
            insert(labels[start : start + fdes.shape[0]], fdes)
        del labels, batch
    store._held = 0
    if store._scratch is not None:  # every spilled row is in a graph now
        store._scratch.close()
        store._scratch = None
    finish()
    store._parts = store._parts[:keep] + built
    if keep == 0:
        store._unmarked = 0
