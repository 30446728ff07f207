"""muvera: multi-vector retrieval as cheap as single-vector search.

Fixed Dimensional Encodings (MUVERA, Jayaram et al., NeurIPS 2024) computed exactly as
Google's C++ reference does, batched and vectorised.
"""

from ._version import __version__
from .errors import MuveraError
from .fde import FDEConfig, FDEEncoder
from .index import Index, SearchResult
from .models import ColBERT, ColBERTSettings
from .scoring import maxsim

__all__ = [
    "ColBERT",
    "ColBERTSettings",
    "FDEConfig",
    "FDEEncoder",
    "Index",
    "MuveraError",
    "SearchResult",
    "__version__",
    "maxsim",
]
