"""Exact late-interaction scoring (MaxSim / Chamfer similarity)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from . import native
from .batch import Batch, is_torch_tensor, prepare_batch
from .errors import MuveraError
from .token_codes import QuantizedTokens, centre_terms

__all__ = ["compiled_maxsim", "maxsim", "maxsim_pairs", "maxsim_spans"]

_BLOCK_ELEMENTS = 1 << 24  # similarity entries per numpy block (64 MiB of float32)
_GPU_BLOCK_ELEMENTS = 1 << 27  # on a GPU (512 MiB): fewer, larger kernels
_NATIVE_BLOCK_TOKENS = 1 << 18  # document tokens per call of the compiled kernel
_NATIVE_WORK_PER_THREAD = 1 << 23  # multiply-adds that pay for one more thread


def maxsim_spans(
    tokens: npt.NDArray[Any] | QuantizedTokens,
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    query_offsets: npt.NDArray[np.int64],
    *,
    checked: bool = False,
) -> npt.NDArray[np.float32]:
    """Exact MaxSim of queries against documents stored as spans of token rows.

    ``tokens`` float32/float16 ``(rows, d)`` or a
    :class:`~muvera.token_codes.QuantizedTokens` is read in place (a memory map is fine):
    document ``j`` is rows ``offsets[j] .. offsets[j] + lengths[j]``. ``queries`` float32
    ``(query rows, d)``, query ``i`` being rows ``query_offsets[i] .. query_offsets[i+1]``.
    Returns float32 ``(n_queries, n_documents)`` with :func:`maxsim`'s conventions.

    Runs the compiled kernel when it is built and can read ``tokens`` in place (2-D,
    C-contiguous, float32 or float16; no similarity matrix, float16 converted on the fly),
    else numpy in bounded blocks. Spans that do not fit the arrays raise
    :class:`~muvera.MuveraError`; ``checked=True`` skips those checks for spans this package
    computed itself (an index's re-rank, :func:`maxsim`'s chunks).

    >>> toks = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    >>> maxsim_spans(toks, np.array([0, 2]), np.array([2, 1]), toks[:2], np.array([0, 2]))
    array([[2., 2.]], dtype=float32)
    """
    if not checked:
        offsets, lengths, queries, query_offsets = _check_spans(
            tokens, offsets, lengths, queries, query_offsets
        )
    kernel = _kernel_for(tokens)
    if kernel is not None:
        out = np.empty((query_offsets.shape[0] - 1, offsets.shape[0]), dtype=np.float32)
        threads = _threads(int(lengths.sum()) * queries.shape[0] * tokens.shape[1])
        _residual_status(
            kernel.maxsim(tokens, offsets, lengths, queries, query_offsets, out, threads)
        )
        centre = getattr(tokens, "centre", None)
        if centre is not None:  # the kernel scored r = x - centre
            out += centre_terms(queries, query_offsets, centre)[:, None]
        return out
    return _spans_numpy(tokens, offsets, lengths, queries, query_offsets)


def maxsim_pairs(
    tokens: npt.NDArray[Any] | QuantizedTokens,
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    pair_query: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    query_offsets: npt.NDArray[np.int64],
    *,
    checked: bool = False,
) -> npt.NDArray[np.float32]:
    """Exact MaxSim of (query, document) pairs: ``out[p]`` is query ``pair_query[p]``
    against the span ``offsets[p] .. offsets[p] + lengths[p]`` of ``tokens``.

    The re-rank of a batch (each query against its own candidates) in one call: the compiled
    kernel shares all pairs between its threads; numpy scores query by query. Inputs and
    conventions as :func:`maxsim_spans`; returns float32 ``(n_pairs,)``.

    >>> toks = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    >>> maxsim_pairs(toks, np.array([0, 2]), np.array([1, 1]), np.array([1, 0]),
    ...              toks[:2], np.array([0, 1, 2]))
    array([0., 1.], dtype=float32)
    """
    if not checked:
        offsets, lengths, queries, query_offsets = _check_spans(
            tokens, offsets, lengths, queries, query_offsets
        )
        pair_query = np.asarray(pair_query)
        n_q = query_offsets.shape[0] - 1
        if (
            pair_query.shape != offsets.shape
            or pair_query.dtype.kind not in "iu"
            or (pair_query.size and (pair_query.min() < 0 or pair_query.max() >= n_q))
        ):
            raise MuveraError(f"maxsim: pair_query must be one query number (0 .. {n_q}) a pair")
    # always copied when strided (np.nonzero's results of a 2-D array are views)
    pair_query = np.ascontiguousarray(pair_query, dtype=np.int64)
    out = np.empty(offsets.shape[0], dtype=np.float32)
    kernel = _kernel_for(tokens)
    if kernel is not None:
        q_lengths = np.diff(query_offsets)
        threads = _threads(int((lengths * q_lengths[pair_query]).sum()) * tokens.shape[1])
        _residual_status(
            kernel.maxsim_pairs(
                tokens, offsets, lengths, pair_query, queries, query_offsets, out, threads
            )
        )
        centre = getattr(tokens, "centre", None)
        if centre is not None:  # the kernel scored r = x - centre
            out += centre_terms(queries, query_offsets, centre)[pair_query]
        return out
    for q in np.unique(pair_query).tolist():
        sel = np.flatnonzero(pair_query == q)
        query = queries[query_offsets[q] : query_offsets[q + 1]]
        bounds = np.array([0, query.shape[0]], dtype=np.int64)
        out[sel] = _spans_numpy(tokens, offsets[sel], lengths[sel], query, bounds)[0]
    return out


def _residual_status(status: int) -> None:
    if status == -2:
        raise MuveraError(
            "maxsim: a residual token row's cell is out of range or missing (damaged cell codes)"
        )


def _kernel_for(tokens: Any) -> native.NativeLibrary | None:
    """The compiled kernels when they should score and can read ``tokens`` in place (2-D,
    C-contiguous float32 or float16, or quantized rows), else None."""
    if isinstance(tokens, QuantizedTokens):
        readable = tokens.rows.dtype == np.uint8 and tokens.rows.flags.c_contiguous
        return compiled_maxsim() if readable else None
    readable = tokens.dtype in (np.float32, np.float16) and tokens.flags.c_contiguous
    return compiled_maxsim() if readable else None


def _threads(work: int) -> int:
    """Threads worth starting for ``work`` multiply-adds."""
    return max(1, min(native.default_threads(), work // _NATIVE_WORK_PER_THREAD))


def compiled_maxsim() -> native.NativeLibrary | None:
    """The compiled kernels when they should compute MaxSim (a SIMD variant is loaded),
    else None: numpy computes it."""
    kernel = native.load()
    return kernel if kernel is not None and kernel.maxsim_preferred else None


def _check_spans(
    tokens: npt.NDArray[Any] | QuantizedTokens,
    offsets: Any,
    lengths: Any,
    queries: Any,
    query_offsets: Any,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.int64]
]:
    if tokens.ndim != 2:
        raise MuveraError(f"maxsim: tokens must be 2-D (rows, d), got shape {tokens.shape}")
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
    return offsets, lengths, queries, query_offsets


def _gather_spans(
    tokens: npt.NDArray[Any] | QuantizedTokens,
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """The spans' rows as one float32 array: a slice when they lie next to each other."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros((0, tokens.shape[1]), np.float32)
    if np.array_equal(offsets[1:], offsets[:-1] + lengths[:-1]):
        return np.asarray(tokens[int(offsets[0]) : int(offsets[0]) + total], dtype=np.float32)
    spans = zip(offsets.tolist(), lengths.tolist(), strict=True)
    return np.concatenate([tokens[o : o + n] for o, n in spans]).astype(np.float32, copy=False)


def _spans_numpy(
    tokens: npt.NDArray[Any] | QuantizedTokens,
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    query_offsets: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """numpy MaxSim of spans: documents in blocks of about ``_BLOCK_ELEMENTS`` similarity
    entries, one product per block, then a segmented max and a segmented sum."""
    n_q, n_docs = query_offsets.shape[0] - 1, offsets.shape[0]
    out = np.zeros((n_q, n_docs), dtype=np.float32)
    q_lengths = np.diff(query_offsets)
    q_nonempty = q_lengths > 0
    Q = queries[: int(query_offsets[-1])]
    if n_q == 0 or n_docs == 0 or Q.shape[0] == 0:
        return out  # no query tokens: every score is 0
    block = max(1, _BLOCK_ELEMENTS // Q.shape[0])
    ends = np.cumsum(lengths)
    first = 0
    while first < n_docs:
        stop = int(np.searchsorted(ends, ends[first] - lengths[first] + block, side="right"))
        stop = min(max(stop, first + 1), n_docs)
        part_lengths = lengths[first:stop]
        sims = _gather_spans(tokens, offsets[first:stop], part_lengths) @ Q.T
        per_token = _segment_max(sims, part_lengths)  # (docs, query tokens)
        scores = np.zeros((stop - first, n_q), dtype=np.float32)
        starts = query_offsets[:-1][q_nonempty]
        scores[:, q_nonempty] = np.add.reduceat(per_token, starts, axis=1)
        out[:, first:stop] = scores.T
        first = stop
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
    queries = qb.whole(numpy=True)
    if nq == 0 or nd == 0 or queries.tokens.shape[0] == 0:
        return result
    q_offsets = queries.offsets
    compiled = compiled_maxsim() is not None  # no similarity matrix in memory: larger chunks
    block = _NATIVE_BLOCK_TOKENS if compiled else max(1, _BLOCK_ELEMENTS // queries.tokens.shape[0])
    for chunk in db.chunks(block):
        stop = chunk.start + chunk.lengths.shape[0]
        tokens = np.ascontiguousarray(chunk.tokens, dtype=np.float32)
        result[:, chunk.start : stop] = maxsim_spans(
            tokens, chunk.offsets[:-1], chunk.lengths, queries.tokens, q_offsets, checked=True
        )
    return result


def _maxsim_torch(qb: Batch, db: Batch) -> Any:
    import torch

    device = qb.device if qb.backend == "torch" else db.device
    nq, nd = len(qb), len(db)
    result = torch.zeros((nq, nd), dtype=torch.float32, device=device)
    Q = qb.whole().tokens
    if nq == 0 or nd == 0 or Q.shape[0] == 0:
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
