"""Calibration: how a track image maps to depth and curve values (contract v1).

A calibration is JSON; absent fields take the contract defaults. `Calibration.from_dict` is the only way in,
and it rejects anything the contract forbids, so every `Calibration` object is valid.
"""
import math
import re
from dataclasses import asdict, dataclass

from contracts.errors import expect as _expect

N_DEPTH = 300
N_CURVES = 2
CURVE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
RESERVED_NAMES = {"mask", "manifest", "curves"}  # they would shadow mask.png, manifest.json, curves.las
SCALES = ("linear", "log")
_TOP_FIELDS = {"top_depth", "bottom_depth", "depth_unit", "curves"}
_CURVE_FIELDS = {"name", "left", "right", "scale", "unit"}
_MAX_UNIT = 32


@dataclass(frozen=True)
class CurveSpec:
    """One curve's scale across the track: `left` at the track's left edge, `right` at its right edge
    (left > right is a reversed scale). On a log scale both must be > 0."""
    name: str
    left: float = 0.0
    right: float = 1.0
    scale: str = "linear"
    unit: str = ""


@dataclass(frozen=True)
class Calibration:
    """Depth of the top and bottom image rows (depth_unit) and the two curves' scales:
    curves[0] is curve 1 (drawn solid, class 1), curves[1] is curve 2 (dashed or dotted, class 2)."""
    top_depth: float = 0.0
    bottom_depth: float = 1.0
    depth_unit: str = ""
    curves: tuple[CurveSpec, ...] = (CurveSpec("curve1"), CurveSpec("curve2"))

    @classmethod
    def from_dict(cls, d: dict | None) -> "Calibration":
        d = {} if d is None else d
        _expect(isinstance(d, dict), "calibration must be a JSON object")
        _no_unknown(d, _TOP_FIELDS, "calibration")
        top = _number(d.get("top_depth", 0.0), "top_depth")
        bottom = _number(d.get("bottom_depth", 1.0), "bottom_depth")
        _expect(top != bottom, f"top_depth and bottom_depth are both {top}: the depth range must not be empty")
        unit = _unit(d.get("depth_unit", ""), "depth_unit")
        raw = d.get("curves", [{"name": "curve1"}, {"name": "curve2"}])
        _expect(isinstance(raw, list) and len(raw) == N_CURVES,
                f"curves must be a list of exactly {N_CURVES} curves (curve 1 solid, curve 2 dashed)")
        curves = tuple(_curve(c, i) for i, c in enumerate(raw))
        lowered = [c.name.lower() for c in curves]
        _expect(len(set(lowered)) == len(lowered),
                f"curve names must be distinct (ignoring case, for case-insensitive stores): {lowered}")
        return cls(top, bottom, unit, curves)

    def to_dict(self) -> dict:
        """The normalised calibration: every field present, numbers as floats."""
        return {"top_depth": self.top_depth, "bottom_depth": self.bottom_depth, "depth_unit": self.depth_unit,
                "curves": [asdict(c) for c in self.curves]}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.curves]


def _curve(c, i: int) -> CurveSpec:
    where = f"curves[{i}]"
    _expect(isinstance(c, dict), f"{where} must be a JSON object")
    _no_unknown(c, _CURVE_FIELDS, where)
    name = c.get("name", f"curve{i + 1}")
    _expect(isinstance(name, str) and CURVE_NAME.fullmatch(name) is not None,
            f"{where}.name {name!r} must match [A-Za-z0-9_-]{{1,32}} (it becomes a file name)")
    _expect(name.lower() not in RESERVED_NAMES, f"{where}.name {name!r} is reserved ({sorted(RESERVED_NAMES)})")
    left = _number(c.get("left", 0.0), f"{where}.left")
    right = _number(c.get("right", 1.0), f"{where}.right")
    _expect(left != right, f"{where}: left and right are both {left}: the scale must span a range")
    scale = c.get("scale", "linear")
    _expect(scale in SCALES, f"{where}.scale {scale!r} must be one of {SCALES}")
    if scale == "log":
        _expect(left > 0 and right > 0, f"{where}: a log scale needs left and right > 0, got {left}..{right}")
    return CurveSpec(name, left, right, scale, _unit(c.get("unit", ""), f"{where}.unit"))


def _number(v, field: str) -> float:
    _expect(isinstance(v, (int, float)) and not isinstance(v, bool), f"{field} must be a number, got {v!r}")
    _expect(math.isfinite(v), f"{field} must be finite, got {v!r}")
    return float(v) + 0.0  # + 0.0 turns -0.0 into 0.0, so equal calibrations hash equally


def _unit(v, field: str) -> str:
    _expect(isinstance(v, str) and len(v) <= _MAX_UNIT and v.isprintable() and "," not in v,
            f"{field} must be a printable string of at most {_MAX_UNIT} characters without commas, got {v!r}")
    return v


def _no_unknown(d: dict, allowed: set, where: str):
    unknown = sorted(set(d) - allowed)
    _expect(not unknown, f"{where} has unknown fields {unknown}; allowed: {sorted(allowed)}")
