"""The result of one request and the request id that names it."""
import json
import re
from dataclasses import dataclass, field

import numpy as np

from contracts.calibration import N_DEPTH, Calibration
from contracts.files import sha256

CONTRACT_VERSION = "1"
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

    depth:    (300,) float64, depth_unit, linspace(top_depth, bottom_depth, 300); point k is image row k*(H-1)/299.
    curves:   {name: (300,) float64 in the curve's unit}, in calibration order (curve 1, curve 2).
    mask:     HxW uint8 at the input's resolution: 0 background, 1 curve 1, 2 curve 2.
    coverage: {name: fraction of depth points observed rather than bridged}.
    tracing:  the tracing parameters (JSON object), recorded so "same result" is checkable.
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

    @classmethod
    def create(cls, *, calibration: Calibration, model_version: str, input: InputInfo,
               curves: dict[str, np.ndarray], mask: np.ndarray, coverage: dict[str, float],
               tracing: dict) -> "Digitisation":
        """Build a result, deriving its request id and depth grid from the calibration."""
        rid = request_id_for(input.sha256, calibration, model_version)
        return cls(rid, depth_grid(calibration), curves, mask, calibration, model_version, input, coverage, tracing)


def depth_grid(calibration: Calibration) -> np.ndarray:
    return np.linspace(calibration.top_depth, calibration.bottom_depth, N_DEPTH)


def request_id(image_bytes: bytes, calibration, model_version: str) -> str:
    """The deterministic key of a request: a hash of everything its result depends on."""
    return request_id_for(sha256(image_bytes), calibration, model_version)


def request_id_for(input_sha256: str, calibration, model_version: str) -> str:
    if not isinstance(calibration, Calibration):
        calibration = Calibration.from_dict(calibration)
    key = {"contract_version": CONTRACT_VERSION, "model_version": model_version,
           "input_sha256": input_sha256, "calibration": calibration.to_dict()}
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return sha256(canonical.encode())[:32]
