"""Track scales for synthetic curves: nice left/right values as a log analyst would pick them.

Positions are fractions of track width; values follow the contract (CONVENTIONS.md):
linear `v = left + f * (right - left)`, log `v = 10 ** (log10(left) + f * (log10(right) - log10(left)))`.
"""
import numpy as np

_LOG_PREFIXES = ("IL", "LL", "AF", "SN", "MLL", "PR", "SFL", "RXO", "RES", "MSFL", "LN", "AT", "RT")
_REVERSED_PREFIXES = ("DT", "NPHI", "NEU", "DPHI", "PHI")
_UNIT_NAMES = {"GAPI": "gAPI", "US/F": "us/ft", "G/C3": "g/cm3", "OHMM": "ohmm", "OHM/M": "ohmm",
               "OHM.M": "ohmm", "LPU": "pu", "G/CM3": "g/cm3", "M3/M3": "v/v", "MV": "mV", "IN": "in", "CPS": "cps", "MM": "mm"}

# Pairs for shapes that do not come from real logs: (name, unit, [(left, right), ...]) x 2, log grid?
_CATALOGUE = [
    (("GR", "gAPI", [(0, 150), (0, 100), (0, 200)]), ("SP", "mV", [(-100, 0), (-80, 20), (-160, 40)]), False),
    (("GR", "gAPI", [(0, 150), (0, 120)]), ("CALI", "in", [(6, 16), (4, 14)]), False),
    (("RHOB", "g/cm3", [(1.95, 2.95), (2.0, 3.0)]), ("NPHI", "v/v", [(0.45, -0.15), (0.6, 0.0)]), False),
    (("DT", "us/ft", [(140, 40), (189, 40), (240, 40)]), ("GR", "gAPI", [(0, 150), (0, 200)]), False),
    (("ILD", "ohmm", [(0.2, 2000), (0.2, 200), (1, 1000)]), ("SFLU", "ohmm", [(0.2, 2000), (0.2, 200)]), True),
    (("LLD", "ohmm", [(0.2, 20000), (2, 2000)]), ("LLS", "ohmm", [(0.2, 20000), (2, 2000)]), True),
    (("ILD", "ohmm", [(0.2, 2000)]), ("ILM", "ohmm", [(0.2, 2000)]), True),
]


def is_log(name: str) -> bool:
    """Resistivity-like curves are plotted on logarithmic scales."""
    return name.upper().startswith(_LOG_PREFIXES)


def unit_name(unit: str) -> str:
    """Normalised spelling of a LAS unit ("GAPI" -> "gAPI")."""
    return _UNIT_NAMES.get(unit.strip().upper(), unit.strip())


def _nice_step(x: float) -> float:
    """Smallest of 1, 2, 2.5, 5 x 10^k that is >= x."""
    e = 10.0 ** np.floor(np.log10(x))
    return float(next(m * e for m in (1, 2, 2.5, 5, 10) if m * e >= x * (1 - 1e-9)))


def _linear_scale(lo: float, hi: float, reversed_: bool, rng: np.random.Generator) -> tuple[float, float]:
    """Nice (left, right) holding [lo, hi] with a random margin; sometimes too narrow (curve clips)."""
    data_span = max(hi - lo, 1e-6 * max(1.0, abs(hi)))
    span = data_span * (rng.uniform(0.75, 1.0) if rng.random() < 0.15 else rng.uniform(1.1, 2.5))
    step = _nice_step(span / 10)
    centre = (lo + hi) / 2 + rng.uniform(-0.25, 0.25) * (span - data_span)
    left = float(np.round(np.floor((centre - span / 2) / step) * step, 10))
    if left < 0 <= lo:   # a positive quantity (GR, DT, density) gets a scale starting at 0, not below
        left = 0.0
    right = float(np.round(left + 10 * step, 10))
    if centre + span / 2 > right:
        left, right = float(np.round(left + step, 10)), float(np.round(right + step, 10))
    return (right, left) if reversed_ else (left, right)


def _log_scale(lo: float, hi: float, rng: np.random.Generator) -> tuple[float, float]:
    """(left, right) on whole decades starting at 1 or 2 x 10^k, for log10 data range [lo, hi]."""
    mant = float(rng.choice([1.0, 2.0]))
    e0 = np.floor(lo - np.log10(mant) - rng.uniform(0, 0.6))
    left = mant * 10.0 ** e0
    decades = int(np.clip(np.ceil(hi - np.log10(left) + rng.uniform(0, 0.5)), 1, 5))
    if rng.random() < 0.15 and decades > 1:
        decades -= 1   # too few decades: the curve runs off the right edge
    return float(np.round(left, 6)), float(np.round(left * 10.0 ** decades, 6))


def _position(v: np.ndarray, left: float, right: float, log: bool) -> np.ndarray:
    """Fraction of track width for values v (log10 values when log)."""
    if log:
        return (v - np.log10(left)) / (np.log10(right) - np.log10(left))
    return (v - left) / (right - left)


def choose_scales(names: list[str], w: np.ndarray, shared: bool, rng: np.random.Generator,
                  units: list[str] | None = None, typical: np.ndarray | None = None
                  ) -> tuple[list[dict], np.ndarray]:
    """Scales for two real curves.

    Args:
        names: the two mnemonics.
        w: (2, n) float64 values (log10 of the value for log curves).
        shared: both curves share one scale (same family, e.g. deep and shallow resistivity).
        units: the two units; "" when unknown.
        typical: (2, 2) typical [lo, hi] of each curve over its whole log (same space as w): a quiet
            window is not blown up to fill the track; the scale spans at least half the typical range.
    Returns:
        calibration curve entries, and (2, n) positions as fractions of track width.
    """
    units = units or ["", ""]
    log = is_log(names[0]) and is_log(names[1])
    curves, f = [], []
    for i, name in enumerate(names):
        lo, hi = (w.min(), w.max()) if shared else (w[i].min(), w[i].max())
        if typical is not None:
            need = 0.5 * float(typical[i][1] - typical[i][0]) - (hi - lo)
            lo, hi = (lo - need / 2, hi + need / 2) if need > 0 else (lo, hi)
        if i == 1 and shared:
            left, right = curves[0]["left"], curves[0]["right"]
        elif log:
            left, right = _log_scale(lo, hi, rng)
        else:
            vals = 10.0 ** np.array([lo, hi]) if is_log(name) else np.array([lo, hi])
            rev = rng.random() < (0.85 if name.upper().startswith(_REVERSED_PREFIXES) else 0.1)
            left, right = _linear_scale(float(vals[0]), float(vals[1]), rev, rng)
        v = w[i] if log or not is_log(name) else 10.0 ** w[i]
        curves.append({"name": name + "2" if i == 1 and name == names[0] else name, "left": left, "right": right,
                       "scale": "log" if log else "linear", "unit": unit_name(units[i])})
        f.append(_position(v, left, right, log))
    return curves, np.stack(f)


def catalogue_curves(rng: np.random.Generator) -> tuple[list[dict], bool]:
    """Names, units and scales for a synthetic (layered) pair; returns curve entries and log grid flag."""
    a, b, log = _CATALOGUE[int(rng.integers(len(_CATALOGUE)))]
    curves = []
    for name, unit, choices in (a, b):
        left, right = choices[int(rng.integers(len(choices)))]
        curves.append({"name": name, "left": float(left), "right": float(right),
                       "scale": "log" if log else "linear", "unit": unit})
    return curves, log
