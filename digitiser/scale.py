"""The one mapping between track-width fractions and curve values (docs/CONVENTIONS.md):
linear `v = left + f * (right - left)`, log `v = 10 ** (log10(left) + f * (log10(right) - log10(left)))`.
`left > right` (reversed scales) needs no special case. Nothing is clipped here."""
import numpy as np


def _check(left: float, right: float, scale: str) -> None:
    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
    if scale == "log" and not (left > 0 and right > 0):
        raise ValueError(f"log scale needs positive left and right values, got left={left}, right={right}: "
                         "fix the calibration")


def to_values(f, left: float, right: float, scale: str = "linear") -> np.ndarray:
    """Fractions of track width (any shape) -> float64 curve values in the curve's unit."""
    _check(left, right, scale)
    f = np.asarray(f, dtype=np.float64)
    if scale == "linear":
        return left + f * (right - left)
    lo, hi = np.log10(left), np.log10(right)
    return 10.0 ** (lo + f * (hi - lo))


def to_fractions(v, left: float, right: float, scale: str = "linear") -> np.ndarray:
    """Curve values (any shape) -> float64 fractions of track width (the inverse of to_values)."""
    _check(left, right, scale)
    v = np.asarray(v, dtype=np.float64)
    if scale == "linear":
        return (v - left) / (right - left)
    return (np.log10(v) - np.log10(left)) / (np.log10(right) - np.log10(left))
