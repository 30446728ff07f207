"""The library's one exception type."""

from __future__ import annotations

__all__ = ["MuveraError"]


class MuveraError(ValueError):
    """Raised for invalid input or configuration anywhere in muvera.

    It subclasses :class:`ValueError`, so ``except ValueError`` keeps working.
    """
