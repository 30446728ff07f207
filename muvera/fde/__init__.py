"""Fixed Dimensional Encodings: the config, the reference's random matrices, and the encoder
with its numpy, compiled and torch steps sharing one prepared plan."""

from .config import FDEConfig
from .encoder import FDEEncoder
from .matrices import FDEMatrices, draw_matrices
from .plan import FDEPlan

__all__ = ["FDEConfig", "FDEEncoder", "FDEMatrices", "FDEPlan", "draw_matrices"]
