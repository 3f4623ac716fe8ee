"""The one serialiser: a `Digitisation` to the bytes of its objects, and back.

Objects of a request (contract v1), all under `<root>/<request_id>/`:
  <curve>.csv    header `depth,value`, 300 rows, numbers as `%.6f`, `\n` line ends
  curves.las     LAS 2.0 (lasio): DEPT plus both curves, same numbers as the CSVs
  mask.png       8-bit single-channel PNG at the input's size: 0 background, 1 curve 1, 2 curve 2
  manifest.json  written last: what the result depends on, and every other object's size and sha256
"""
import io
import json
import math

import cv2
import lasio
import numpy as np

from contracts.calibration import Calibration
from contracts.errors import ContractViolation
from contracts.files import sha256  # noqa: F401 (contracts.format.sha256: the manifest's hash)
from contracts.result import CONTRACT_VERSION, Digitisation, InputInfo

MANIFEST = "manifest.json"
MASK = "mask.png"
LAS = "curves.las"
CSV_HEADER = "depth,value"
NUMBER_FORMAT = "%.6f"
LAS_DEPTH_MNEMONIC = "DEPT"
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6]


def csv_name(curve: str) -> str:
    return f"{curve}.csv"


def object_names(calibration: Calibration) -> list[str]:
    """Every object of a request, in write order (the manifest last)."""
    return [csv_name(n) for n in calibration.names] + [LAS, MASK, MANIFEST]


def format_number(x: float) -> str:
    s = NUMBER_FORMAT % x
    return "0.000000" if s == "-0.000000" else s  # one spelling of zero


def canonical_json(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True, allow_nan=False) + "\n").encode()


def serialise(result: Digitisation) -> dict[str, bytes]:
    """All objects of a result as bytes, keyed by object name, manifest included (and last)."""
    cal = result.calibration
    depth = [format_number(d) for d in result.depth]
    objects, columns = {}, {}
    for name in cal.names:
        columns[name] = [format_number(v) for v in np.asarray(result.curves[name], dtype=np.float64)]
        rows = [f"{d},{v}" for d, v in zip(depth, columns[name])]
        objects[csv_name(name)] = ("\n".join([CSV_HEADER, *rows]) + "\n").encode()
    objects[LAS] = _las_bytes(result, depth, columns)
    objects[MASK] = _png_bytes(result.mask)
    objects[MANIFEST] = canonical_json(manifest_dict(result, objects))
    return objects


def manifest_dict(result: Digitisation, objects: dict[str, bytes]) -> dict:
    return {
        "contract_version": CONTRACT_VERSION,
        "request_id": result.request_id,
        "model_version": result.model_version,
        "input": result.input.to_dict(),
        "calibration": result.calibration.to_dict(),
        "tracing": result.tracing,
        "coverage": {n: _coverage(result.coverage.get(n), n) for n in result.calibration.names},
        "objects": {n: {"bytes": len(b), "sha256": sha256(b)} for n, b in sorted(objects.items()) if n != MANIFEST},
    }


def _coverage(v, name: str) -> float:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1):
        raise ContractViolation(f"coverage of {name} must be a fraction in [0, 1], got {v!r}")
    return round(float(v), 6)


def _las_bytes(result: Digitisation, depth: list[str], columns: dict[str, list[str]]) -> bytes:
    """LAS 2.0 built from the CSVs' own numbers, so both say exactly the same thing."""
    las = lasio.LASFile()
    las.append_curve(LAS_DEPTH_MNEMONIC, np.array(depth, dtype=np.float64), unit=result.calibration.depth_unit)
    for spec in result.calibration.curves:
        las.append_curve(spec.name, np.array(columns[spec.name], dtype=np.float64), unit=spec.unit)
    text = io.StringIO()
    las.write(text, version=2.0, fmt=NUMBER_FORMAT)
    return text.getvalue().replace("\r\n", "\n").encode()


def _png_bytes(mask: np.ndarray) -> bytes:
    assert mask.ndim == 2 and mask.dtype == np.uint8, f"mask must be HxW uint8, got {mask.shape} {mask.dtype}"
    ok, buf = cv2.imencode(".png", mask, _PNG_PARAMS)
    assert ok, "PNG encoding failed"
    return buf.tobytes()


def parse(objects: dict[str, bytes]) -> Digitisation:
    """Objects (already validated) back into a `Digitisation`."""
    m = json.loads(objects[MANIFEST])
    cal = Calibration.from_dict(m["calibration"])
    depth, curves = None, {}
    for name in cal.names:
        table = np.loadtxt(io.BytesIO(objects[csv_name(name)]), delimiter=",", skiprows=1, dtype=np.float64)
        depth, curves[name] = table[:, 0], table[:, 1]
    mask = cv2.imdecode(np.frombuffer(objects[MASK], np.uint8), cv2.IMREAD_UNCHANGED)
    return Digitisation(m["request_id"], depth, curves, mask, cal, m["model_version"], InputInfo(**m["input"]),
                        m["coverage"], m["tracing"])
