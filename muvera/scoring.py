"""Exact late-interaction scoring (MaxSim / Chamfer similarity)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import _native
from ._inputs import Batch, is_torch_tensor, prepare_batch
from .errors import MuveraError

__all__ = ["maxsim"]

_BLOCK_ELEMENTS = 1 << 24  # similarity entries per block (64 MiB of float32)
_GPU_BLOCK_ELEMENTS = 1 << 27  # on a GPU (512 MiB): fewer, larger kernels
_NATIVE_BLOCK_TOKENS = 1 << 18  # document tokens per call of the compiled kernel
_NATIVE_WORK_PER_THREAD = 1 << 23  # multiply-adds that pay for one more thread


def compiled_maxsim(tokens: npt.NDArray[Any]) -> _native.NativeKernel | None:
    """The compiled kernel if it is built and can read ``tokens`` in place (2-D,
    C-contiguous, float32 or float16), else None."""
    kernel = _native.load()
    readable = tokens.dtype in (np.float32, np.float16) and tokens.ndim == 2
    return kernel if readable and tokens.flags.c_contiguous else None


def maxsim_spans(
    tokens: npt.NDArray[Any],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    query_offsets: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32] | None:
    """Exact MaxSim with the compiled kernel, or None when it is not available.

    ``tokens`` float32/float16 ``(rows, d)`` is read in place (a memory map is fine):
    document ``j`` is rows ``offsets[j] .. offsets[j] + lengths[j]``. ``queries`` float32
    ``(query rows, d)``, query ``i`` being rows ``query_offsets[i] .. query_offsets[i+1]``.
    Returns float32 ``(n_queries, n_documents)`` with :func:`maxsim`'s conventions.
    Spans that do not fit the arrays raise :class:`~muvera.MuveraError`.
    """
    kernel = compiled_maxsim(tokens)
    if kernel is None:
        return None
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    query_offsets = np.ascontiguousarray(query_offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.shape != lengths.shape:
        raise MuveraError("maxsim: offsets and lengths must be 1-D arrays of one length")
    if lengths.size and (
        offsets.min() < 0 or lengths.min() < 0 or int((offsets + lengths).max()) > tokens.shape[0]
    ):
        raise MuveraError("maxsim: document spans fall outside the token matrix")
    if queries.ndim != 2 or queries.shape[1] != tokens.shape[1]:
        raise MuveraError(f"maxsim: queries must be (rows, {tokens.shape[1]}), got {queries.shape}")
    if (
        query_offsets.ndim != 1
        or query_offsets.size == 0
        or query_offsets[0] != 0
        or np.any(np.diff(query_offsets) < 0)
        or query_offsets[-1] > queries.shape[0]
    ):
        raise MuveraError("maxsim: query_offsets must rise from 0 to at most the query rows")
    return run_compiled_maxsim(kernel, tokens, offsets, lengths, queries, query_offsets)


def run_compiled_maxsim(
    kernel: _native.NativeKernel,
    tokens: npt.NDArray[Any],
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    query_offsets: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """:func:`maxsim_spans` on arguments known to be valid (C-contiguous, of those dtypes,
    spans inside ``tokens``; ``kernel`` from :func:`compiled_maxsim`): for spans this
    package computed itself, such as an index's re-ranking, once per query."""
    out = np.empty((query_offsets.shape[0] - 1, offsets.shape[0]), dtype=np.float32)
    work = int(lengths.sum()) * queries.shape[0] * tokens.shape[1]
    threads = max(1, min(_native.default_threads(), work // _NATIVE_WORK_PER_THREAD))
    kernel.maxsim(tokens, offsets, lengths, queries, query_offsets, out, threads)
    return out


def _infer_dimension(batch: Any, what: str) -> int:
    if is_torch_tensor(batch) or isinstance(batch, np.ndarray):
        if batch.ndim < 2:
            raise MuveraError(f"maxsim: {what} must be a list of 2-D arrays or a 3-D padded array")
        return int(batch.shape[-1])
    try:
        items = list(batch)
    except TypeError:
        raise MuveraError(
            f"maxsim: {what} must be a list of arrays, got {type(batch).__name__}"
        ) from None
    for item in items:
        shape = getattr(item, "shape", None) or np.shape(item)
        if len(shape) == 2:
            return int(shape[1])
    if items:
        raise MuveraError(f"maxsim: {what} item 0 must be 2-D (n_tokens, d)")
    return 0


def maxsim(
    queries: Any,
    documents: Any,
    *,
    query_lengths: Any = None,
    query_mask: Any = None,
    document_lengths: Any = None,
    document_mask: Any = None,
) -> Any:
    """Exact MaxSim (Chamfer) scores of every query against every document.

    ``score[i, j] = sum over tokens q of query i of max over tokens t of document j of <q, t>``.

    Parameters
    ----------
    queries, documents : list of ``(n_i, d)`` arrays, or padded ``(n, T, d)`` arrays
        numpy or torch (not mixed). Padded inputs take ``*_lengths`` or ``*_mask``;
        padding never takes part (it is never multiplied into a score).
    query_lengths, query_mask, document_lengths, document_mask : optional
        As for :meth:`muvera.FDEEncoder.encode_queries`.

    Returns
    -------
    float32 ``(n_queries, n_documents)`` (numpy, or torch on the inputs' device).
    A query with no tokens scores 0; a document with no tokens scores ``-inf`` against
    any query that has tokens. Work is done in blocks, so memory stays bounded.

    Examples
    --------
    >>> q = [np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)]
    >>> d = [np.array([[1.0, 0.0]], np.float32), np.array([[0.5, 0.5], [0.0, 2.0]], np.float32)]
    >>> maxsim(q, d).tolist()
    [[1.0, 2.5]]
    """
    dq = _infer_dimension(queries, "queries")
    dd = _infer_dimension(documents, "documents")
    if dq and dd and dq != dd:
        raise MuveraError(f"maxsim: query tokens have dimension {dq}, document tokens {dd}")
    dim = dq or dd or 1
    qb = prepare_batch(queries, dim, lengths=query_lengths, mask=query_mask, what="maxsim queries")
    db = prepare_batch(
        documents, dim, lengths=document_lengths, mask=document_mask, what="maxsim documents"
    )
    if qb.backend != db.backend and len(qb) and len(db):
        raise MuveraError("maxsim: queries and documents must both be numpy or both be torch")
    if "torch" in (qb.backend, db.backend):
        return _maxsim_torch(qb, db)
    return _maxsim_numpy(qb, db)


def _all_tokens(batch: Batch) -> Any:
    chunks = list(batch.chunks(1 << 62))
    return chunks[0].tokens if chunks else None


def _segment_max(
    sims: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Max over consecutive row segments of ``lengths`` (an empty segment gives -inf).

    Rows are reduced (not columns): numpy's reduceat is about twice as fast that way.
    """
    out = np.full((lengths.shape[0], sims.shape[1]), -np.inf, dtype=np.float32)
    nonempty = lengths > 0
    if nonempty.any():
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
        out[nonempty] = np.maximum.reduceat(sims, starts, axis=0)
    return out


def _maxsim_numpy(qb: Batch, db: Batch) -> npt.NDArray[np.float32]:
    nq, nd = len(qb), len(db)
    result = np.zeros((nq, nd), dtype=np.float32)
    if nq == 0 or nd == 0:
        return result
    Q = _all_tokens(qb)
    q_lengths = qb.lengths
    q_starts = np.concatenate([[0], np.cumsum(q_lengths)[:-1]])
    q_nonempty = q_lengths > 0
    if Q is None or Q.shape[0] == 0:
        return result
    q_offsets = np.concatenate([[0], np.cumsum(q_lengths)]).astype(np.int64)
    kernel = compiled_maxsim(Q)  # no similarity matrix in memory
    block = _NATIVE_BLOCK_TOKENS if kernel else max(1, _BLOCK_ELEMENTS // max(1, Q.shape[0]))
    for chunk in db.chunks(block):
        stop = chunk.start + chunk.lengths.shape[0]
        if kernel is not None:  # chunk tokens: float32 rows, concatenated by _inputs
            tokens = np.ascontiguousarray(chunk.tokens, dtype=np.float32)
            d_offsets = np.cumsum(chunk.lengths) - chunk.lengths
            result[:, chunk.start : stop] = run_compiled_maxsim(
                kernel, tokens, d_offsets, chunk.lengths, Q, q_offsets
            )
            continue
        sims = chunk.tokens @ Q.T  # (block tokens, query tokens)
        per_token = _segment_max(sims, chunk.lengths)  # (block docs, query tokens)
        scores = np.zeros((chunk.lengths.shape[0], nq), dtype=np.float32)
        scores[:, q_nonempty] = np.add.reduceat(per_token, q_starts[q_nonempty], axis=1)
        result[:, chunk.start : stop] = scores.T
    return result


def _maxsim_torch(qb: Batch, db: Batch) -> Any:
    import torch

    device = qb.device if qb.backend == "torch" else db.device
    nq, nd = len(qb), len(db)
    result = torch.zeros((nq, nd), dtype=torch.float32, device=device)
    Q = _all_tokens(qb)
    if nq == 0 or nd == 0 or Q is None or Q.shape[0] == 0:
        return result
    q_owner = torch.repeat_interleave(
        torch.arange(nq, device=device), torch.from_numpy(qb.lengths).to(device)
    )
    block = _GPU_BLOCK_ELEMENTS if torch.device(device).type == "cuda" else _BLOCK_ELEMENTS
    doc_tokens_per_block = max(1, block // max(1, Q.shape[0]))
    with torch.inference_mode():
        for chunk in db.chunks(doc_tokens_per_block):
            n_block = chunk.lengths.shape[0]
            lengths = torch.from_numpy(chunk.lengths).to(device)
            owner = torch.repeat_interleave(torch.arange(n_block, device=device), lengths)
            sims = Q @ chunk.tokens.T  # (Nq tokens, block tokens)
            per_token = torch.full((Q.shape[0], n_block), -torch.inf, device=device)
            index = owner[None, :].expand(Q.shape[0], -1)
            per_token.scatter_reduce_(1, index, sims, reduce="amax", include_self=True)
            scores = torch.zeros((nq, n_block), dtype=torch.float32, device=device)
            scores.index_add_(0, q_owner, per_token)
            result[:, chunk.start : chunk.start + n_block] = scores
    return result
