"""Tiny, valid contract objects built in code, stand-in weights, and S3 test credentials and clients, for tests."""
import contextlib
import hashlib
import json
import os
import socket
from pathlib import Path

import numpy as np

import contracts
from contracts.format import MANIFEST, canonical_json, sha256
from contracts.result import depth_grid, request_id_for

CALIBRATION = {"top_depth": 1000.0, "bottom_depth": 1100.0, "depth_unit": "ft",
               "curves": [{"name": "GR", "left": 0, "right": 150, "scale": "linear", "unit": "gAPI"},
                          {"name": "ILD", "left": 0.2, "right": 2000, "scale": "log", "unit": "ohmm"}]}
MODEL_VERSION = "0" * 64


TRACING = {"min_coverage": 0.5, "revision": "test"}


def _parts(image: bytes, calibration, width: int, height: int, seed: int, version: str = "2"):
    cal = contracts.Calibration.from_dict(CALIBRATION if calibration is None else calibration, version=version)
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
    return cal, inp, mask, curves


def make_result(image: bytes = b"scan bytes", calibration=None, width: int = 120, height: int = 400,
                seed: int = 0, tracing: dict = TRACING) -> contracts.Digitisation:
    """A v2 result: curve 1 bridged over depth points 100..129, curve 2 over 0..4 and 290..299."""
    cal, inp, mask, curves = _parts(image, calibration, width, height, seed)
    observed = {n: np.ones(contracts.N_DEPTH, bool) for n in cal.names}
    observed[cal.names[0]][100:130] = False
    observed[cal.names[1]][list(range(5)) + list(range(290, 300))] = False
    return contracts.Digitisation.create(calibration=cal, model_version=MODEL_VERSION, input=inp, curves=curves,
                                         mask=mask, observed=observed, tracing=tracing)


def make_v1_result(image: bytes = b"scan bytes", calibration=None, width: int = 120,
                   height: int = 400, seed: int = 0) -> contracts.Digitisation:
    """A contract v1 result as v1 writers made it (read-only now: only serialise / validate take it)."""
    cal, inp, mask, curves = _parts(image, calibration, width, height, seed, version="1")
    rid = request_id_for(inp.sha256, cal, MODEL_VERSION, None, version="1")
    return contracts.Digitisation(rid, depth_grid(cal), curves, mask, cal, MODEL_VERSION, inp,
                                  {n: 0.9 for n in cal.names}, {"min_coverage": 0.5}, {}, "1")


def restamp(objects: dict[str, bytes]) -> dict[str, bytes]:
    """Recompute the manifest's object table, so a test can break exactly one other rule."""
    m = json.loads(objects[MANIFEST])
    m["objects"] = {n: {"bytes": len(b), "sha256": sha256(b)} for n, b in sorted(objects.items()) if n != MANIFEST}
    return {**objects, MANIFEST: canonical_json(m)}


def edit_manifest(objects: dict[str, bytes], **fields) -> dict[str, bytes]:
    m = json.loads(objects[MANIFEST])
    m.update(fields)
    return {**objects, MANIFEST: canonical_json(m)}


def ink_detector(path) -> str:
    """Weights that mark every inked pixel as both curves with probability exactly 0.5 (background logit
    10 - 100 * ink, curve logits 0) and paper as background: tracing then follows the longest dark vertical
    structure, so clean scans give a result and blank paper gives CurveNotFound. A stand-in for trained
    weights, deterministic, through the real checkpoint format and preflight. Returns its model version."""
    import torch

    from digitiser.checkpoint import save_weights
    from digitiser.model import Segmenter, SegmenterConfig

    config = SegmenterConfig()
    net = Segmenter(config)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
        for conv in (net.stem[0].conv, net.stem[1].conv, net.ups[-1].conv.conv):  # identity on channel 0
            conv.weight[0, 0, 1, 1] = 1.0
        net.head.weight[0, 0] = -100.0
        net.head.bias[0] = 10.0
    return save_weights(net, config, path)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIADIGITISERTEST7Q2",
                    "AWS_SECRET_ACCESS_KEY": "dgt-secret-9f3c1e7a5b2d4086", "AWS_DEFAULT_REGION": "us-east-1"}


def make_s3fs(endpoint: str):
    """An S3FileSystem on `endpoint` that never answers from a cache: no instance cache (each call builds a
    new object, so tests do not share one) and no listings cache (with it on, `exists`/`ls` miss objects
    another writer created after the first listing, and still report ones it deleted). Credentials come
    from the standard chain (the environment `s3_server` set), never from arguments."""
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def child_processes(pid: int) -> dict[int, str]:
    """{pid: command line} of `pid`'s child processes (Linux /proc), for tests that kill one of them."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            pass   # exited while we looked
    return found


@contextlib.contextmanager
def serving(config, name: str):
    """Serve the app built from `config` as application `name` on a free loopback port; yields its base URL
    and shuts Serve down afterwards (needs a running Ray, e.g. the `ray_local` fixture)."""
    from ray import serve

    from serve_app import build_app
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config), name=name, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
