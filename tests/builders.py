"""Tiny, valid contract objects built in code, for tests."""
import hashlib
import json

import numpy as np

import contracts
from contracts.format import MANIFEST, canonical_json, sha256

CALIBRATION = {"top_depth": 1000.0, "bottom_depth": 1100.0, "depth_unit": "ft",
               "curves": [{"name": "GR", "left": 0, "right": 150, "scale": "linear", "unit": "gAPI"},
                          {"name": "ILD", "left": 0.2, "right": 2000, "scale": "log", "unit": "ohmm"}]}
MODEL_VERSION = "0" * 64


def make_result(image: bytes = b"scan bytes", calibration=None, width: int = 120, height: int = 400,
                seed: int = 0) -> contracts.Digitisation:
    cal = contracts.Calibration.from_dict(CALIBRATION if calibration is None else calibration)
    rng = np.random.default_rng(seed)
    inp = contracts.InputInfo(hashlib.sha256(image).hexdigest(), len(image), width, height, "png")
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 3] = 1
    mask[::3, 2 * width // 3] = 2
    curves = {}
    for spec in cal.curves:
        f = rng.uniform(0, 1, contracts.N_DEPTH)
        if spec.scale == "log":
            curves[spec.name] = 10 ** (np.log10(spec.left) + f * (np.log10(spec.right) - np.log10(spec.left)))
        else:
            curves[spec.name] = spec.left + f * (spec.right - spec.left)
    return contracts.Digitisation.create(calibration=cal, model_version=MODEL_VERSION, input=inp, curves=curves,
                                         mask=mask, coverage={n: 0.9 for n in cal.names},
                                         tracing={"min_coverage": 0.5})


def restamp(objects: dict[str, bytes]) -> dict[str, bytes]:
    """Recompute the manifest's object table, so a test can break exactly one other rule."""
    m = json.loads(objects[MANIFEST])
    m["objects"] = {n: {"bytes": len(b), "sha256": sha256(b)} for n, b in sorted(objects.items()) if n != MANIFEST}
    return {**objects, MANIFEST: canonical_json(m)}


def edit_manifest(objects: dict[str, bytes], **fields) -> dict[str, bytes]:
    m = json.loads(objects[MANIFEST])
    m.update(fields)
    return {**objects, MANIFEST: canonical_json(m)}
