"""The ``muvera`` command line: thin wrappers over the library.

Subcommands: ``index`` (texts to a searchable index), ``search``, ``eval`` (exact MaxSim
vs FDE-only vs FDE + re-rank on a BEIR folder), ``encode`` (texts to multi-vectors or
FDEs in ``.npz``/``.npy``) and ``demo`` (the whole job, offline). Heavy imports (torch,
transformers) happen inside the subcommands. Errors print one line and exit with code 2;
``--debug`` shows the traceback instead.
"""

from .main import main

__all__ = ["main"]
