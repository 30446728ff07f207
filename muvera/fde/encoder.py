"""FDEEncoder: multi-vector batches in, one float32 FDE row per item out."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import native
from .._version import __version__
from ..batch import Batch, prepare_batch
from ..errors import MuveraError
from ..files import atomic_write_bytes, check_format
from .compiled_steps import CompiledFDE
from .config import FDEConfig
from .matrices import FDEMatrices, draw_matrices
from .numpy_steps import NumpyFDE
from .plan import FDEPlan

__all__ = ["FDEEncoder"]

_FORMAT = "muvera.FDEEncoder"
_FORMAT_VERSION = 1
_DEFAULT_CHUNK_TOKENS = 16384
_KERNELS = ("auto", "native", "numpy")


class FDEEncoder:
    """Encodes multi-vector embeddings into Fixed Dimensional Encodings.

    Builds every random matrix of ``config`` once (exactly as Google's C++ reference draws
    them); encoding is vectorised over a whole batch and streamed in chunks of about
    ``chunk_tokens`` tokens so that memory stays bounded.

    Parameters
    ----------
    config : FDEConfig
    chunk_tokens : int, default 16384
        Tokens processed per internal chunk (whole items; an item longer than this is
        processed alone).
    kernel : {"auto", "native", "numpy"}, default "auto"
        CPU kernel for numpy input. ``"native"`` is the compiled C kernel built when the
        package is installed with a C compiler (about twice as fast for documents);
        ``"numpy"`` the pure numpy/scipy one; ``"auto"`` the compiled one when it is built
        (and ``MUVERA_NATIVE`` is not ``0``). Both give the reference's FDEs (they differ
        only in float32 rounding, ~1e-7 relative); torch input always runs on torch.

    Examples
    --------
    >>> enc = FDEEncoder(FDEConfig(dimension=4, num_repetitions=2, num_simhash_projections=1,
    ...                            projection_type="identity"))
    >>> q = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    >>> enc.encode_queries([q]).shape
    (1, 16)
    >>> enc.encode_documents([q, np.zeros((0, 4), np.float32)]).dtype
    dtype('float32')
    """

    def __init__(
        self,
        config: FDEConfig,
        *,
        chunk_tokens: int = _DEFAULT_CHUNK_TOKENS,
        kernel: str = "auto",
        _matrices: FDEMatrices | None = None,
    ) -> None:
        if not isinstance(config, FDEConfig):
            raise MuveraError(f"FDEEncoder needs an FDEConfig, got {type(config).__name__}")
        if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
            raise MuveraError(f"chunk_tokens must be a positive int, got {chunk_tokens!r}")
        if kernel not in _KERNELS:
            raise MuveraError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}")
        self.config = config
        self.chunk_tokens = chunk_tokens
        self.matrices = _matrices if _matrices is not None else draw_matrices(config)
        self.matrices.check(config)
        self.plan = FDEPlan.build(config, self.matrices)
        self._steps = self._cpu_steps(kernel)
        self._torch: dict[str, Any] = {}

    def _cpu_steps(self, kernel: str) -> NumpyFDE | CompiledFDE:
        """The compiled steps when built and fitting (``kernel`` "auto"/"native"), else numpy."""
        if kernel == "numpy":
            return NumpyFDE(self.plan)
        library = native.load()
        fits = CompiledFDE.fits(self.plan)
        if kernel == "native" and library is None:
            raise MuveraError(
                "kernel='native': the compiled FDE kernel is not available (not built, or "
                "MUVERA_NATIVE=0); reinstall muvera with a C compiler (cc) on PATH"
            )
        if kernel == "native" and not fits:
            raise MuveraError(
                f"kernel='native': the compiled FDE kernel does not take "
                f"2**{self.plan.k} partitions x {self.plan.d} dims"
            )
        if library is not None and fits:
            return CompiledFDE(self.plan, library)
        return NumpyFDE(self.plan)

    def __repr__(self) -> str:
        return f"FDEEncoder({self.config!r})"

    @property
    def kernel(self) -> str:
        """The CPU kernel in use: ``"native"`` (compiled) or ``"numpy"``."""
        return self._steps.name

    @property
    def output_dimension(self) -> int:
        """Length of each FDE row."""
        return self.config.output_dimension

    # -- encoding ------------------------------------------------------------------------
    def encode_queries(
        self, batch: Any, *, lengths: Any = None, mask: Any = None, out: Any = None
    ) -> Any:
        """Query FDEs: per partition, the **sum** of the projected tokens (never filled).

        Parameters
        ----------
        batch : sequence of array_like ``(n_i, dimension)``, array ``(n, T, dimension)``, or
            :class:`~muvera.batch.TokenBatch` (validated already: not checked again)
            Float tokens (float16/32/64; computed in float32). numpy arrays and torch
            tensors are accepted; an item with zero tokens gives a zero row.
        lengths : int array ``(n,)``, optional
            Valid tokens per item of a padded batch (a prefix of each row).
        mask : bool array ``(n, T)``, optional
            Valid tokens of a padded batch (any pattern). Without ``lengths``/``mask``
            every position of a padded batch is a token.
        out : array ``(n, output_dimension)`` float32, optional
            Written in place (e.g. a ``np.memmap``) and returned.

        Returns
        -------
        float32 ``(n, output_dimension)``: numpy for numpy input, a torch tensor on the
        input's device for torch input. Row ``i`` is item ``i``.
        """
        return self._encode(batch, lengths, mask, out, document=False)

    def encode_documents(
        self, batch: Any, *, lengths: Any = None, mask: Any = None, out: Any = None
    ) -> Any:
        """Document FDEs: per partition, the **mean** of the projected tokens, with empty
        partitions filled when ``config.fill_empty_partitions`` is set.

        Takes the same arguments and returns the same types as :meth:`encode_queries`.
        """
        return self._encode(batch, lengths, mask, out, document=True)

    def _encode(self, batch: Any, lengths: Any, mask: Any, out: Any, document: bool) -> Any:
        what = "encode_documents" if document else "encode_queries"
        prepared = prepare_batch(
            batch, self.config.dimension, lengths=lengths, mask=mask, what=what
        )
        n, D = len(prepared), self.output_dimension
        if prepared.backend == "torch":
            return self._encode_torch(prepared, out, document, what)
        if out is None:
            out = np.empty((n, D), dtype=np.float32)
        elif not isinstance(out, np.ndarray) or out.shape != (n, D) or out.dtype != np.float32:
            raise MuveraError(f"{what}: out must be a float32 numpy array of shape {(n, D)}")
        for chunk in prepared.chunks(self.chunk_tokens):
            stop = chunk.start + chunk.lengths.shape[0]
            out[chunk.start : stop] = self._steps.encode(chunk.tokens, chunk.lengths, document)
        return out

    def _encode_torch(self, prepared: Batch, out: Any, document: bool, what: str) -> Any:
        import torch

        from .torch_steps import TorchFDE

        key = str(prepared.device) if prepared.device is not None else "cpu"
        steps = self._torch.get(key)
        if steps is None:
            steps = self._torch[key] = TorchFDE(self.plan, key)
        n, D = len(prepared), self.output_dimension
        device = prepared.device if prepared.device is not None else torch.device("cpu")
        if out is None:
            out = torch.empty((n, D), dtype=torch.float32, device=device)
        elif (
            not isinstance(out, torch.Tensor)
            or tuple(out.shape) != (n, D)
            or out.dtype != torch.float32
            or out.device != device
        ):
            raise MuveraError(f"{what}: out must be a float32 tensor of shape {(n, D)} on {device}")
        for chunk in prepared.chunks(self.chunk_tokens):
            stop = chunk.start + chunk.lengths.shape[0]
            out[chunk.start : stop] = steps.encode(chunk.tokens, chunk.lengths, document)
        return out

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write config and materialised matrices to ``path`` (an ``.npz`` file, no pickle).

        The write is atomic: a crash leaves any previous file at ``path`` intact. A saved
        encoder reproduces its FDEs bit for bit even if the RNG code changes.
        """
        path = Path(path)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "library_version": __version__,
            "config": self.config.to_dict(),
        }
        m = self.matrices
        arrays: dict[str, Any] = {
            "meta_json": np.array(json.dumps(meta, sort_keys=True)),
            "simhash": m.simhash,
            "ams_indices": m.ams_indices,
            "ams_signs": m.ams_signs,
            "count_sketch_indices": m.count_sketch_indices,
            "count_sketch_signs": m.count_sketch_signs,
        }
        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, kernel: str = "auto") -> FDEEncoder:
        """Read an encoder written by :meth:`save` (``kernel`` as in the constructor).

        Raises :class:`~muvera.MuveraError` for a missing or foreign file, a newer format
        version, or matrices that do not fit the stored config.
        """
        path = Path(path)
        if not path.is_file():
            raise MuveraError(f"FDEEncoder.load: no file at {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta_json"]))
                arrays: dict[str, Any] = {
                    name: data[name] for name in data.files if name != "meta_json"
                }
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise MuveraError(
                f"FDEEncoder.load: {path} is not a saved FDEEncoder ({exc})"
            ) from None
        check_format(
            meta, _FORMAT, _FORMAT_VERSION, f"FDEEncoder.load: {path}", "a saved FDEEncoder"
        )
        if kernel not in _KERNELS:
            raise MuveraError(f"kernel must be one of {sorted(_KERNELS)}, got {kernel!r}")
        try:
            config = FDEConfig.from_dict(meta["config"])
            matrices = FDEMatrices(
                simhash=arrays["simhash"].astype(np.float32, copy=False),
                ams_indices=arrays["ams_indices"].astype(np.int64, copy=False),
                ams_signs=arrays["ams_signs"].astype(np.int8, copy=False),
                count_sketch_indices=arrays["count_sketch_indices"].astype(np.int64, copy=False),
                count_sketch_signs=arrays["count_sketch_signs"].astype(np.int8, copy=False),
            )
            matrices.check(config)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise MuveraError(f"FDEEncoder.load: {path} is damaged ({exc})") from None
        return cls(config, kernel=kernel, _matrices=matrices)
