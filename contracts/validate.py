"""Contract v1 checked on bytes: the last gate before anything is written, and the first after a read."""
import io
import json
import math
import re

import cv2
import lasio
import numpy as np

from contracts.calibration import N_DEPTH, Calibration
from contracts.errors import ContractViolation, expect as _expect
from contracts.format import (CSV_HEADER, LAS, LAS_DEPTH_MNEMONIC, MANIFEST, MASK, canonical_json, csv_name,
                              format_number, object_names, sha256)
from contracts.result import CONTRACT_VERSION, REQUEST_ID, depth_grid, request_id_for

_ROW = re.compile(r"-?\d+\.\d{6},-?\d+\.\d{6}")
_SHA = re.compile(r"[0-9a-f]{64}")
_MANIFEST_FIELDS = {"contract_version", "request_id", "model_version", "input", "calibration", "tracing",
                    "coverage", "objects"}
_FORMATS = {"png", "jpeg", "tiff"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def validate(request_id: str, objects: dict[str, bytes]) -> None:
    """Raise `ContractViolation` unless `objects` is a complete, consistent v1 object set for `request_id`."""
    _expect(isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id) is not None,
            f"request id {request_id!r} must be 32 lowercase hex characters")
    _expect(MANIFEST in objects, "the object set has no manifest.json")
    m = _manifest(request_id, objects[MANIFEST])
    cal = Calibration.from_dict(m["calibration"])
    _expect(cal.to_dict() == m["calibration"], "manifest calibration is not in normalised form")
    expected = object_names(cal)
    _expect(sorted(objects) == sorted(expected), f"objects {sorted(objects)} != expected {sorted(expected)}")
    listed = {n: v for n, v in m["objects"].items()}
    _expect(sorted(listed) == sorted(set(expected) - {MANIFEST}),
            f"manifest lists {sorted(listed)}, expected {sorted(set(expected) - {MANIFEST})}")
    for name, meta in listed.items():
        data = objects[name]
        _expect(meta == {"bytes": len(data), "sha256": sha256(data)},
                f"{name}: {len(data)} bytes, sha256 {sha256(data)[:12]}… do not match the manifest's {meta}")
    _expect(set(m["coverage"]) == set(cal.names) and all(_fraction(v) for v in m["coverage"].values()),
            f"coverage must give a fraction in [0, 1] for each of {cal.names}, got {m['coverage']}")
    depth = [format_number(d) for d in depth_grid(cal)]
    columns = {n: validate_csv(n, objects[csv_name(n)], depth) for n in cal.names}
    _validate_las(objects[LAS], cal, depth, columns)
    _validate_mask(objects[MASK], m["input"]["height"], m["input"]["width"])


def _manifest(request_id: str, data: bytes) -> dict:
    try:
        m = json.loads(data, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ContractViolation(f"manifest.json does not parse as JSON: {e}") from e
    _expect(isinstance(m, dict) and set(m) == _MANIFEST_FIELDS,
            f"manifest fields must be exactly {sorted(_MANIFEST_FIELDS)}")
    _expect(canonical_json(m) == data, "manifest.json is not in canonical form (sorted keys, indent 1, final newline)")
    _expect(m["contract_version"] == CONTRACT_VERSION, f"contract_version {m['contract_version']!r} != {CONTRACT_VERSION!r}")
    _expect(m["request_id"] == request_id, f"manifest request_id {m['request_id']!r} != {request_id!r}")
    inp = m["input"]
    _expect(isinstance(inp, dict) and set(inp) == {"sha256", "bytes", "width", "height", "format"}
            and isinstance(inp["sha256"], str) and _SHA.fullmatch(inp["sha256"]) is not None
            and all(_positive_int(inp[k]) for k in ("bytes", "width", "height")) and inp["format"] in _FORMATS,
            f"manifest input must be {{sha256, bytes, width, height, format in {sorted(_FORMATS)}}}, got {inp}")
    _expect(isinstance(m["model_version"], str) and m["model_version"] != "", "model_version must be a non-empty string")
    _expect(isinstance(m["tracing"], dict), "tracing must be a JSON object")
    _expect(isinstance(m["objects"], dict) and isinstance(m["coverage"], dict), "objects and coverage must be objects")
    rid = request_id_for(inp["sha256"], Calibration.from_dict(m["calibration"]), m["model_version"])
    _expect(rid == request_id, f"request id {request_id} is not the hash of the manifest's inputs (expected {rid})")
    return m


def validate_csv(name: str, data: bytes, depth: list[str]) -> list[str]:
    """Check one curve CSV against the depth grid; return its value column (as written)."""
    where = csv_name(name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ContractViolation(f"{where} is not UTF-8: {e}") from e
    _expect("\r" not in text, f"{where} must use \\n line ends")
    _expect(text.endswith("\n"), f"{where} must end with a newline (is it cut short?)")
    lines = text[:-1].split("\n")
    _expect(lines[0] == CSV_HEADER, f"{where} header must be exactly {CSV_HEADER!r}, got {lines[0]!r}")
    rows = lines[1:]
    _expect(len(rows) == N_DEPTH, f"{where} has {len(rows)} data rows, must have exactly {N_DEPTH}")
    values = []
    for i, row in enumerate(rows):
        _expect(_ROW.fullmatch(row) is not None,
                f"{where} row {i + 1} {row!r} must be two finite numbers written as %.6f")
        d, v = row.split(",")
        _expect("-0.000000" not in (d, v), f"{where} row {i + 1}: negative zero must be written 0.000000")
        _expect(d == depth[i], f"{where} row {i + 1}: depth {d} is off the grid (expected {depth[i]}); "
                               "depth must be linspace(top_depth, bottom_depth, 300), strictly monotonic")
        values.append(v)
    return values


def _validate_las(data: bytes, cal: Calibration, depth: list[str], columns: dict[str, list[str]]):
    try:
        las = lasio.read(io.StringIO(data.decode("utf-8")), mnemonic_case="preserve")
    except Exception as e:  # lasio raises many types on malformed input
        raise ContractViolation(f"{LAS} does not parse with lasio: {e}") from e
    _expect(las.version.VERS.value == 2.0, f"{LAS} must be LAS 2.0")
    mnemonics = [c.mnemonic for c in las.curves]
    _expect(mnemonics == [LAS_DEPTH_MNEMONIC, *cal.names], f"{LAS} curves {mnemonics} != {[LAS_DEPTH_MNEMONIC, *cal.names]}")
    units = [c.unit for c in las.curves]
    _expect(units == [cal.depth_unit, *(c.unit for c in cal.curves)], f"{LAS} units {units} do not match the calibration")
    _expect(np.array_equal(las[LAS_DEPTH_MNEMONIC], np.array(depth, dtype=float)), f"{LAS} depth differs from the CSVs")
    for name, col in columns.items():
        _expect(np.array_equal(las[name], np.array(col, dtype=float)), f"{LAS} values of {name} differ from {csv_name(name)}")


def _validate_mask(data: bytes, height: int, width: int):
    _expect(data.startswith(_PNG_MAGIC), f"{MASK} is not a PNG")
    _expect(data.endswith(_PNG_END), f"{MASK} does not end with an IEND chunk (cut short?)")
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    _expect(mask is not None, f"{MASK} does not decode (truncated or corrupt)")
    _expect(mask.ndim == 2 and mask.dtype == np.uint8, f"{MASK} must be 8-bit single-channel, got {mask.dtype} {mask.shape}")
    _expect(mask.shape == (height, width), f"{MASK} is {mask.shape[1]}x{mask.shape[0]}, input is {width}x{height}")
    bad = np.setdiff1d(np.unique(mask), [0, 1, 2])
    _expect(bad.size == 0, f"{MASK} has values {bad.tolist()}; only 0 (background), 1 and 2 (curves) are allowed")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0
