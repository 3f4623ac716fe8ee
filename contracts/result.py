"""The result of one request and the request id that names it."""
import json
import re
from dataclasses import dataclass, field

import numpy as np

from contracts.calibration import N_DEPTH, Calibration
from contracts.files import sha256

CONTRACT_VERSION = "2"          # what commit writes
READABLE_VERSIONS = ("1", "2")  # what load, validate and audit accept
REQUEST_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class InputInfo:
    """The input scan as received: sha256 of its bytes, byte count, pixel size, format (png/jpeg/tiff)."""
    sha256: str
    bytes: int
    width: int
    height: int
    format: str

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes, "width": self.width,
                "height": self.height, "format": self.format}


@dataclass
class Digitisation:
    """One digitised track, everything that goes to storage.

    depth:    (300,) float64, depth_unit, linspace(top_depth, bottom_depth, 300).
    curves:   {name: (300,) float64 in the curve's unit}, in calibration order (curve 1, curve 2).
    mask:     uint8 class mask of the track (v1: the whole input): 0 background, 1 curve 1, 2 curve 2.
    coverage: {name: fraction of depth points observed rather than bridged}.
    tracing:  the tracing parameters and the tracer's revision (JSON object).
    bridged:  {name: [[first, last], ...]} (v2) depths (as written in the CSVs) of each run of depth points
              where the curve was bridged rather than observed, in grid order; {} for a v1 result.
    contract_version: the contract the result was made under ("1" results are read-only).
    """
    request_id: str
    depth: np.ndarray
    curves: dict[str, np.ndarray]
    mask: np.ndarray
    calibration: Calibration
    model_version: str
    input: InputInfo
    coverage: dict[str, float] = field(default_factory=dict)
    tracing: dict = field(default_factory=dict)
    bridged: dict[str, list] = field(default_factory=dict)
    contract_version: str = CONTRACT_VERSION

    @classmethod
    def create(cls, *, calibration: Calibration, model_version: str, input: InputInfo,
               curves: dict[str, np.ndarray], mask: np.ndarray, observed: dict[str, np.ndarray],
               tracing: dict) -> "Digitisation":
        """Build a v2 result, deriving its request id, depth grid, coverage and bridged intervals.
        observed: {name: (300,) bool}, True where the curve was observed at that depth point."""
        rid = request_id_for(input.sha256, calibration, model_version, tracing)
        depth = depth_grid(calibration)
        flags = {n: np.asarray(observed[n], dtype=bool) for n in calibration.names}
        assert all(f.shape == (N_DEPTH,) for f in flags.values()), "observed must be (300,) bool per curve"
        coverage = {n: float(f.mean()) for n, f in flags.items()}
        bridged = {n: bridged_intervals(depth, f) for n, f in flags.items()}
        return cls(rid, depth, curves, mask, calibration, model_version, input, coverage, tracing, bridged)


def depth_grid(calibration: Calibration) -> np.ndarray:
    return np.linspace(calibration.top_depth, calibration.bottom_depth, N_DEPTH)


def written_depth(d: float) -> float:
    """A depth as the CSVs write it (`%.6f`), as a number: what a reader compares the CSV's column with."""
    return float("%.6f" % d) + 0.0


def bridged_intervals(depth: np.ndarray, observed: np.ndarray) -> list[list[float]]:
    """[[first, last], ...]: the written depths of the first and last point of each run of unobserved points."""
    runs, k = [], 0
    missing = ~np.asarray(observed, dtype=bool)
    while k < len(missing):
        if missing[k]:
            j = k
            while j + 1 < len(missing) and missing[j + 1]:
                j += 1
            runs.append([written_depth(depth[k]), written_depth(depth[j])])
            k = j
        k += 1
    return runs


def request_id(image_bytes: bytes, calibration, model_version: str, tracing: dict) -> str:
    """The deterministic key of a request: a hash of everything its result depends on (v2: the contract
    version, the model version, the tracer's revision and parameters, the input and the calibration)."""
    return request_id_for(sha256(image_bytes), calibration, model_version, tracing)


def request_id_for(input_sha256: str, calibration, model_version: str, tracing: dict | None,
                   version: str = CONTRACT_VERSION) -> str:
    """The id under contract `version`; v1 ids (read-only now) did not cover the tracer (tracing ignored)."""
    if not isinstance(calibration, Calibration):
        calibration = Calibration.from_dict(calibration, version=version)
    key = {"contract_version": version, "model_version": model_version,
           "input_sha256": input_sha256, "calibration": calibration.to_dict()}
    if version != "1":
        assert isinstance(tracing, dict), "a v2 request id covers the tracing parameters and revision"
        key["tracing"] = tracing
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return sha256(canonical.encode())[:32]
