"""The digitiser core: decode a scan, segment it (batched), trace the curves, build the contract result."""
from digitiser.checkpoint import CheckpointError
from digitiser.imageio import BadImage, DecodedScan, ImageLimits, decode_scan
from digitiser.predictor import DEFAULT_WEIGHTS, MAX_BATCH, Digitiser, TilePolicy
from digitiser.tracing import CurveNotFound, TracingParams

__all__ = ["Digitiser", "TilePolicy", "TracingParams", "CurveNotFound", "BadImage", "DecodedScan", "ImageLimits",
           "decode_scan", "CheckpointError", "DEFAULT_WEIGHTS", "MAX_BATCH"]
