"""Calibration: how a track image maps to depth and curve values (contract v2; v1 calibrations still parse).

A calibration is JSON; absent fields take the contract defaults. `Calibration.from_dict` is the only way in,
and it rejects anything the contract forbids, so every `Calibration` object is valid.

v2 adds rules that v1 lacked, each one a request v1 would accept and then fail or mangle: numbers of
magnitude at most 1e15 (beyond it `%.6f` prints digits a float64 does not hold, and differences overflow),
depth points that stay distinct at six decimals, and no curve named like the LAS depth curve in any case.
A stored v1 manifest is parsed with `version="1"`, under the v1 rules, so no v1 result becomes invalid.
"""
import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from contracts.errors import expect as _expect
from contracts.sheet import N_DEPTH, DepthTie, TrackBox, Window, parse_ties, parse_window, track_box

N_CURVES = 2
CURVE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
RESERVED_NAMES = {"mask", "manifest", "curves"}  # they would shadow mask.png, manifest.json, curves.las
LAS_INDEX = "DEPT"  # the LAS depth curve's mnemonic: a curve of that name would be a duplicate there
SCALES = ("linear", "log")
_TOP_FIELDS = {"top_depth", "bottom_depth", "depth_unit", "curves"}
_SHEET_FIELDS = {"window", "depth_ties"}  # v2: a track inside a whole sheet (contracts/sheet.py)
_CURVE_FIELDS = {"name", "left", "right", "scale", "unit"}
_MAX_UNIT = 32
MAX_MAGNITUDE = 1e15
VERSIONS = ("1", "2")


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
    """The depth interval (depth_unit; without ties, the depths of the first and last image rows), the two
    curves' scales (curves[0] is curve 1, drawn solid, class 1; curves[1] curve 2, dashed or dotted, class 2),
    and optionally where the track lies in a whole sheet (window, depth_ties: see contracts/sheet.py)."""
    top_depth: float = 0.0
    bottom_depth: float = 1.0
    depth_unit: str = ""
    curves: tuple[CurveSpec, ...] = (CurveSpec("curve1"), CurveSpec("curve2"))
    window: Window | None = None                     # v2: the track's columns in a whole sheet
    depth_ties: tuple[DepthTie, ...] | None = None   # v2: rows of known depth, sorted by row

    @classmethod
    def from_dict(cls, d: dict | None, version: str = "2") -> "Calibration":
        """A valid calibration from its JSON object (None: all defaults), under the rules of contract
        `version` ("2" for requests; "1" only to read stored v1 manifests). Raises ContractViolation."""
        assert version in VERSIONS, f"unknown contract version {version!r}"
        d = {} if d is None else d
        _expect(isinstance(d, dict), "calibration must be a JSON object")
        _no_unknown(d, _TOP_FIELDS if version == "1" else _TOP_FIELDS | _SHEET_FIELDS, "calibration")
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
        window = parse_window(d["window"]) if "window" in d else None
        ties = parse_ties(d["depth_ties"], _number) if "depth_ties" in d else None
        calibration = cls(top, bottom, unit, curves, window, ties)
        if version != "1":
            _v2_rules(calibration)
        return calibration

    def to_dict(self) -> dict:
        """The normalised calibration: every v1 field present, numbers as floats; `window` and `depth_ties`
        (ties sorted by row) only when given, so a calibration without them normalises as in v1."""
        d = {"top_depth": self.top_depth, "bottom_depth": self.bottom_depth, "depth_unit": self.depth_unit,
             "curves": [asdict(c) for c in self.curves]}
        if self.window is not None:
            d["window"] = self.window.to_dict()
        if self.depth_ties is not None:
            d["depth_ties"] = [t.to_dict() for t in self.depth_ties]
        return d

    def box(self, width: int, height: int) -> TrackBox:
        """Where the track lies in a `width` x `height` input and its depth points' rows (contracts/sheet.py).
        Raises ContractViolation when the window or the depth interval lies outside the image."""
        return track_box(self.window, self.depth_ties, self.top_depth, self.bottom_depth, width, height)

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
    _expect(name.lower() not in RESERVED_NAMES and name != LAS_INDEX,
            f"{where}.name {name!r} is reserved ({sorted(RESERVED_NAMES | {LAS_INDEX})})")
    left = _number(c.get("left", 0.0), f"{where}.left")
    right = _number(c.get("right", 1.0), f"{where}.right")
    _expect(left != right, f"{where}: left and right are both {left}: the scale must span a range")
    scale = c.get("scale", "linear")
    _expect(scale in SCALES, f"{where}.scale {scale!r} must be one of {SCALES}")
    if scale == "log":
        _expect(left > 0 and right > 0, f"{where}: a log scale needs left and right > 0, got {left}..{right}")
    return CurveSpec(name, left, right, scale, _unit(c.get("unit", ""), f"{where}.unit"))


def _v2_rules(cal: "Calibration"):
    numbers = {"top_depth": cal.top_depth, "bottom_depth": cal.bottom_depth}
    for i, c in enumerate(cal.curves):
        numbers.update({f"curves[{i}].left": c.left, f"curves[{i}].right": c.right})
        _expect(c.name.lower() != LAS_INDEX.lower(), f"curves[{i}].name {c.name!r} is reserved: in a LAS read "
                                                     f"with upper-case mnemonics it would duplicate {LAS_INDEX}")
    numbers.update({f"depth_ties[{i}].depth": t.depth for i, t in enumerate(cal.depth_ties or ())})
    numbers.update({f"depth_ties[{i}].row": t.row for i, t in enumerate(cal.depth_ties or ())})
    for field, v in numbers.items():
        _expect(abs(v) <= MAX_MAGNITUDE, f"{field} is {v!r}: numbers must lie within +-{MAX_MAGNITUDE:g}")
    written = ["%.6f" % d for d in np.linspace(cal.top_depth, cal.bottom_depth, N_DEPTH)]
    _expect(len(set(written)) == N_DEPTH,
            f"top_depth {cal.top_depth!r} and bottom_depth {cal.bottom_depth!r} are too close: the {N_DEPTH} depth "
            "points must differ at 6 decimals (a range of at least about 0.0003)")


def _number(v, field: str) -> float:
    _expect(isinstance(v, (int, float)) and not isinstance(v, bool), f"{field} must be a number, got {v!r}")
    _expect(math.isfinite(v), f"{field} must be finite, got {v!r}")
    return float(v) + 0.0  # + 0.0 turns -0.0 into 0.0, so equal calibrations hash equally


def _unit(v, field: str) -> str:
    """A unit as a LAS 2.0 line can carry it: the unit field ends at the first space, and readers take a
    period next to the one after the mnemonic as part of the mnemonic."""
    _expect(isinstance(v, str) and len(v) <= _MAX_UNIT and v.isprintable() and "," not in v
            and not any(ch.isspace() for ch in v) and ".." not in v and not v.startswith(".") and not v.endswith("."),
            f"{field} must be a printable string of at most {_MAX_UNIT} characters without commas, spaces, "
            f"\"..\", or a \".\" at either end (e.g. \"g/cm3\", \"ohm.m\"), got {v!r}")
    return v


def _no_unknown(d: dict, allowed: set, where: str):
    unknown = sorted(set(d) - allowed)
    _expect(not unknown, f"{where} has unknown fields {unknown}; allowed: {sorted(allowed)}")
