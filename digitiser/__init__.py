"""The digitiser core: decode a scan, segment it (batched), trace the curves, build the contract result.

Names resolve lazily, so `digitise audit` or `digitise synth` do not pay for importing torch."""
import importlib

_EXPORTS = {
    "Digitiser": "digitiser.predictor", "TilePolicy": "digitiser.predictor", "DEFAULT_WEIGHTS": "digitiser.predictor",
    "MAX_BATCH": "digitiser.predictor", "TracingParams": "digitiser.tracing", "CurveNotFound": "digitiser.tracing",
    "BadImage": "digitiser.imageio", "DecodedScan": "digitiser.imageio", "ImageLimits": "digitiser.imageio",
    "decode_scan": "digitiser.imageio", "CheckpointError": "digitiser.checkpoint", "cut_track": "digitiser.track",
    "build_result": "digitiser.result",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'digitiser' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
