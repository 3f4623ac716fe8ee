"""The result both routes commit, built from a scan's class probabilities: tracing plus the contract's record.
Torch-free, so the tracing processes (digitiser.tracer_pool) start without loading the model's framework."""
import numpy as np

import contracts
from digitiser.imageio import DecodedScan
from digitiser.tracing import TracingParams, to_values, trace_track
from digitiser.track import cut_track


def build_result(scan: DecodedScan, calibration: contracts.Calibration, probs: np.ndarray, *, model_version: str,
                 tracing: TracingParams) -> contracts.Digitisation:
    """Trace both curves in `probs` ((3, h, w) float32 class probabilities of the scan's track box, i.e. of
    `cut_track(scan, calibration).gray`) and build the result both routes commit. Raises
    tracing.CurveNotFound when a curve has too little coverage (no fabricated curve is ever written).
    Needs no model: a tracing process can run it."""
    box = calibration.box(scan.width, scan.height)
    assert probs.shape[1:] == box.shape, f"probs {probs.shape} are not of the track box {box.shape}: cut_track first"
    x_frac, observed, probs = trace_track(probs, cut_track(scan, calibration).gray, tracing, box.rows)
    curves = {spec.name: to_values(x_frac[:, k], spec.left, spec.right, spec.scale)
              for k, spec in enumerate(calibration.curves)}
    info = contracts.InputInfo(scan.sha256, scan.n_bytes, scan.width, scan.height, scan.format)
    return contracts.Digitisation.create(
        calibration=calibration, model_version=model_version, input=info, curves=curves,
        mask=probs.argmax(axis=0).astype(np.uint8), tracing=tracing.to_dict(),
        observed={spec.name: observed[:, k] for k, spec in enumerate(calibration.curves)})
