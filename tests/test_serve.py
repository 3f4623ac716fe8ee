"""The online route end to end: the real Serve app on the session's local Ray, over HTTP on 127.0.0.1.

Two apps share one Serve instance (started once for this module, shut down at its end):
- "main" at /: a local results root, small upload limits (so limit tests stay cheap), default batching;
- "tight" at /tight: an S3 root in a bucket that does not exist (every write fails) and queues of one,
  for the storage-failure and overload tests.

Weights: the main app runs the shipped segmenter (an "ink detector" built here stands in while none is
shipped, see `builders.ink_detector`); the happy-path tests use clean scans those weights are checked to digitise
(`easy_scans`), so they test serving rather than how far the model generalises. The tight app always runs
the ink detector, so every inked scan reaches its failing store.
"""
import concurrent.futures
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import torch
import yaml

import contracts
from digitiser import Digitiser, TracingParams
from digitiser.checkpoint import sha256_file
from digitiser.predictor import native_bfloat16
from digitiser.synth import digitisable_scans, render_scan
from serve_app import BatchingConfig, ServeConfig, build_app
from builders import free_port as _free_port

MAX_BYTES = 1 << 20        # the main app's upload limits
MAX_PIXELS = 2_000_000
CONFIG_YAML = Path(__file__).parent.parent / "serve_app" / "config.yaml"
TRACING = TracingParams().to_dict()   # the apps' tracer (no overrides): request ids cover it


@dataclass(frozen=True)
class Server:
    url: str              # the main app
    store: str            # its results root (a local folder)
    model_version: str
    tight_store: str      # the tight app's results root: s3://<bucket that does not exist>/results


# ----------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def server(ray_local, s3_server, weights, ink_weights, tmp_path_factory):
    from ray import serve

    port = _free_port()
    store = str(tmp_path_factory.mktemp("serve") / "results")
    main = ServeConfig(store=store, weights=weights, loopback_only=True, ingress_num_cpus=0.25,
                       max_image_bytes=MAX_BYTES, max_image_pixels=MAX_PIXELS, batch_wait_timeout_s=0.1)
    # The tight app always runs the ink detector: every inked scan reaches the (failing) commit.
    tight_store = f"s3://missing-{uuid.uuid4().hex[:12]}/results"
    tight = ServeConfig(store=tight_store, weights=ink_weights, loopback_only=True,
                        storage_options={"endpoint_url": s3_server},
                        segmenter_num_cpus=0.25, ingress_num_cpus=0.1, max_batch_size=1,
                        segmenter_max_ongoing_requests=1, segmenter_max_queued_requests=1,
                        ingress_max_ongoing_requests=4, ingress_max_queued_requests=1, retry_after_s=3)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run_many([serve.RunTarget(build_app(main), name="serve-test", route_prefix="/"),
                        serve.RunTarget(build_app(tight), name="serve-test-tight", route_prefix="/tight")])
        yield Server(f"http://127.0.0.1:{port}", store, sha256_file(weights), tight_store)
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def easy_scans(weights) -> list:
    """Four clean 400 x 200 scans these weights digitise, checked here with the same weights, so the
    happy-path tests test serving, not how far the model generalises. Torch on one thread, as in the replica."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = digitisable_scans(Digitiser(weights), 4, tries=40, height=400, width=200)
        if len(found) == 4:
            return found
    finally:
        torch.set_num_threads(threads)
    pytest.fail(f"the weights {weights} digitise only {len(found)} of 40 clean 400 x 200 synthetic scans")


def _scan(seed: int, height: int = 400, width: int = 200):
    return render_scan(seed, height=height, width=width, style="clean")


def _post(url: str, image: bytes, calibration=None, as_file: bool = True, path: str = "/v1/digitise"):
    files = {"image": ("scan.png", image, "image/png")}
    data = {}
    if calibration is not None:
        text = calibration if isinstance(calibration, str) else json.dumps(calibration)
        if as_file:
            files["calibration"] = ("calibration.json", text, "application/json")
        else:
            data["calibration"] = text
    return requests.post(url + path, files=files, data=data, timeout=120)


def _post_many(url: str, payloads, path: str = "/v1/digitise") -> list:
    with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(lambda p: _post(url, *p, path=path), payloads))


def _stats(server: Server, prefix: str = "") -> dict:
    return requests.get(f"{server.url}{prefix}/v1/stats", timeout=30).json()


def _png(gray: np.ndarray) -> bytes:
    return cv2.imencode(".png", gray)[1].tobytes()


def _files_under(folder: str) -> dict[str, int]:
    """relative path -> mtime_ns of every file under `folder`."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()}


def _assert_json_error(r, status: int, error: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] == error and body["detail"], body
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


@pytest.fixture(scope="module")
def committed(server, easy_scans):
    """One scan posted once: (scan, response body)."""
    scan = easy_scans[0]
    r = _post(server.url, scan.encoded, scan.calibration)
    assert r.status_code == 200, r.text
    return scan, r.json()


# ----------------------------------------------------------------------------- the happy path

def test_healthz_once_the_model_passed_its_preflight(server):
    r = requests.get(f"{server.url}/healthz", timeout=30)
    assert r.status_code == 200
    assert r.json()["model_version"] == server.model_version and r.json()["tracing"] == TRACING
    assert r.json()["precision"] == "bfloat16"   # the shipped weights' arithmetic (MODEL_CARD.md, "bfloat16")
    kernels = "bfloat16" if native_bfloat16(torch.device("cpu")) else "bfloat16 on float32 kernels"
    assert r.json()["arithmetic"] == kernels   # the replica's CPU decides which kernels compute it


def test_openapi_describes_the_upload(server):
    assert requests.get(f"{server.url}/docs", timeout=30).status_code == 200
    spec = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    body = spec["paths"]["/v1/digitise"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(body["schema"]["properties"]) == {"image", "calibration"}
    assert "/v1/results/{request_id}" in spec["paths"]


def test_valid_request_returns_the_committed_result(server, committed):
    scan, body = committed
    calibration = contracts.Calibration.from_dict(scan.calibration)
    assert body["request_id"] == contracts.request_id(scan.encoded, calibration, server.model_version, TRACING)
    assert body["model_version"] == server.model_version
    stored = contracts.load(server.store, body["request_id"])
    assert body["curves"] == {name: values.tolist() for name, values in stored.curves.items()}
    assert body["depth"] == stored.depth.tolist() and len(body["depth"]) == contracts.N_DEPTH
    assert body["coverage"] == stored.coverage and body["bridged"] == stored.bridged
    assert body["contract_version"] == "2"
    assert set(body["objects"]) == set(contracts.object_names(calibration))
    assert all(os.path.isfile(key) for key in body["objects"].values())


def test_image_without_calibration_commits_with_the_defaults(server, easy_scans):
    """The README's first curl: no calibration part at all."""
    scan = easy_scans[1]
    r = _post(server.url, scan.encoded)
    assert r.status_code == 200, r.text
    stored = contracts.load(server.store, r.json()["request_id"])
    assert stored.calibration == contracts.Calibration()
    assert r.json()["depth"][0] == 0.0 and r.json()["depth"][-1] == 1.0


def test_calibration_with_only_the_required_fields_commits(server, easy_scans):
    """A sidecar as people write them: depths and curve names, no units, no scales."""
    scan = easy_scans[1]
    calibration = {"top_depth": 880.0, "bottom_depth": 1110.0, "curves": [{"name": "DT"}, {"name": "PHI"}]}
    r = _post(server.url, scan.encoded, calibration)
    assert r.status_code == 200, r.text
    stored = contracts.load(server.store, r.json()["request_id"])
    assert stored.calibration.depth_unit == "" and stored.calibration.names == ["DT", "PHI"]


def _sheet(scan, top: int = 150, left: int = 180) -> bytes:
    """The scan placed in a larger white sheet, with a depth column's line and ticks beside it."""
    sheet = np.full((700, left + 240), 255, np.uint8)
    sheet[:, 40], sheet[::50, 30:50] = 0, 0
    sheet[top:top + scan.image.shape[0], left:left + scan.image.shape[1]] = scan.image
    return _png(sheet)


def _sheet_calibration(scan, top_depth: float, bottom_depth: float) -> dict:
    """Window on the scan's columns; ties: 4 rows per unit of depth, depth 1000 at sheet row 150."""
    return {"window": {"left_px": 180, "right_px": 180 + scan.image.shape[1]}, "curves": scan.calibration["curves"],
            "depth_ties": [{"row": 100, "depth": 987.5}, {"row": 600, "depth": 1112.5}],
            "top_depth": top_depth, "bottom_depth": bottom_depth}


def test_a_sheet_request_digitises_its_window(server, easy_scans):
    scan = easy_scans[2]
    r = _post(server.url, _sheet(scan), _sheet_calibration(scan, 1000.0, 1099.75))
    assert r.status_code == 200, r.text
    stored = contracts.load(server.store, r.json()["request_id"])
    assert stored.mask.shape == scan.image.shape and stored.input.width == 420
    assert r.json()["depth"][0] == 1000.0 and r.json()["depth"][-1] == 1099.75


def test_a_sheet_interval_outside_the_image_is_422(server, easy_scans):
    scan = easy_scans[2]
    body = _assert_json_error(_post(server.url, _sheet(scan), _sheet_calibration(scan, 1000.0, 1200.0)), 422,
                              "bad_calibration")
    assert "outside the scan's rows 0..699" in body["detail"]


def test_get_result_returns_what_post_returned(server, committed):
    _, body = committed
    r = requests.get(f"{server.url}/v1/results/{body['request_id']}", timeout=30)
    assert r.status_code == 200 and r.json() == body


def test_calibration_as_a_form_field_gives_the_same_request(server, committed):
    scan, body = committed
    r = _post(server.url, scan.encoded, scan.calibration, as_file=False)
    assert r.status_code == 200 and r.json()["request_id"] == body["request_id"]


def test_repeated_request_gets_the_same_id_and_writes_nothing(server, committed):
    scan, body = committed
    before, written = _files_under(server.store), _stats(server)["ingress"]["commits_written"]
    for _ in range(2):
        r = _post(server.url, scan.encoded, scan.calibration)
        assert r.status_code == 200 and r.json() == body
    assert _files_under(server.store) == before  # same objects, same mtimes
    assert _stats(server)["ingress"]["commits_written"] == written


def test_concurrent_identical_requests_are_committed_once(server, easy_scans):
    scan = easy_scans[1]
    written = _stats(server)["ingress"]["commits_written"]
    responses = _post_many(server.url, [(scan.encoded, scan.calibration)] * 8)
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    ids = {r.json()["request_id"] for r in responses}
    assert len(ids) == 1
    assert _stats(server)["ingress"]["commits_written"] == written + 1
    assert contracts.is_committed(server.store, ids.pop())


def test_concurrent_requests_form_batches(server):
    scans = [_scan(100 + i, height=256, width=128) for i in range(32)]
    before = _stats(server)["segmenter"]
    responses = _post_many(server.url, [(s.encoded, s.calibration) for s in scans])
    assert {r.status_code for r in responses} <= {200, 422}, [r.text for r in responses if r.status_code >= 500]
    after = _stats(server)["segmenter"]
    assert after["scans"] - before["scans"] == 32
    assert after["batches"] - before["batches"] < 32
    assert after["max_batch_formed"] > 1 and after["max_batch_size"] == 16


def test_a_client_that_gives_up_leaves_nothing_half_written(server, easy_scans):
    """Cancelled before the work started: nothing is written. After: the shielded work finishes and commits
    whole. Either way no partial result is ever visible, and a retry gets the committed answer."""
    scan = easy_scans[3]
    rid = contracts.request_id(scan.encoded, contracts.Calibration.from_dict(scan.calibration),
                               server.model_version, TRACING)
    files = {"image": ("s.png", scan.encoded), "calibration": ("c.json", json.dumps(scan.calibration))}
    took = []   # give up a third of the way through a (warm) request like it, however fast this machine is
    for extra in (1.5, 2.5):
        t0, fresh = time.monotonic(), dict(scan.calibration, bottom_depth=scan.calibration["bottom_depth"] + extra)
        assert _post(server.url, scan.encoded, fresh).status_code == 200
        took.append(time.monotonic() - t0)
    give_up_s = min(took) / 3
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{server.url}/v1/digitise", files=files, timeout=(10, give_up_s))
    seen, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline and (not seen or _stats(server)["ingress"]["inflight"]):
        seen.append(requests.get(f"{server.url}/v1/results/{rid}", timeout=30).status_code)
        time.sleep(0.2)
    assert set(seen) <= {404, 200}, seen  # never corrupt or partial on the way
    folder = Path(server.store) / rid
    assert not folder.exists() or contracts.is_committed(server.store, rid)
    assert _post(server.url, scan.encoded, scan.calibration).json()["request_id"] == rid


# ----------------------------------------------------------------------------- bad input

def _calibration(**changes) -> dict:
    cal = {"top_depth": 1000.0, "bottom_depth": 1100.0, "depth_unit": "ft",
           "curves": [{"name": "GR", "left": 0, "right": 150}, {"name": "ILD", "left": 0.2, "right": 2000,
                                                                 "scale": "log"}]}
    cal.update(changes)
    return cal


def _log_curve(left):
    return [{"name": "GR"}, {"name": "ILD", "left": left, "right": 2000, "scale": "log"}]


BAD_CALIBRATIONS = {
    "unknown_field": _calibration(top=1),
    "unknown_curve_field": _calibration(curves=[{"name": "GR", "colour": "red"}, {"name": "ILD"}]),
    "top_equals_bottom": _calibration(bottom_depth=1000.0),
    "non_positive_log_bound": _calibration(curves=_log_curve(0)),
    "negative_log_bound": _calibration(curves=_log_curve(-1)),
    "path_in_curve_name": _calibration(curves=[{"name": "../x"}, {"name": "ILD"}]),
    "not_an_object": [1, 2],
    "nan_depth": '{"top_depth": NaN, "bottom_depth": 1}',
}


@pytest.mark.parametrize("case", sorted(BAD_CALIBRATIONS))
def test_calibration_breaking_the_contract_is_422(server, committed, case):
    scan, _ = committed
    body = _assert_json_error(_post(server.url, scan.encoded, BAD_CALIBRATIONS[case]), 422, "bad_calibration")
    assert "contract" in body["detail"]


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe", "1000..1100"])
def test_calibration_not_json_is_422(server, committed, text):
    scan, _ = committed
    _assert_json_error(_post(server.url, scan.encoded, text), 422, "calibration_not_json")


def test_not_an_image_is_415(server):
    _assert_json_error(_post(server.url, b"depth,value\n1000,50\n"), 415, "not_image")


def test_truncated_image_is_400(server, committed):
    scan, _ = committed
    _assert_json_error(_post(server.url, scan.encoded[: len(scan.encoded) // 2]), 400, "corrupt")


def test_image_over_the_byte_limit_is_413(server):
    data = b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES)  # within the body cap, over the image limit
    _assert_json_error(_post(server.url, data), 413, "too_large")


def test_body_over_the_limit_is_refused_before_it_is_read(server):
    _assert_json_error(_post(server.url, bytes(3 * MAX_BYTES)), 413, "too_large")


def test_image_over_the_pixel_limit_is_413(server):
    big = np.full((1500, 1500), 255, np.uint8)  # 2.25 Mpx in a few kB of PNG
    body = _assert_json_error(_post(server.url, _png(big)), 413, "too_large")
    assert "1500 x 1500" in body["detail"]


def test_missing_image_part_is_422(server):
    r = requests.post(f"{server.url}/v1/digitise", files={"calibration": ("c.json", "{}")}, timeout=30)
    _assert_json_error(r, 422, "missing_image")


def test_body_that_is_not_multipart_is_415(server, committed):
    scan, _ = committed
    r = requests.post(f"{server.url}/v1/digitise", data=scan.encoded, headers={"content-type": "image/png"},
                      timeout=30)
    _assert_json_error(r, 415, "not_multipart")


def test_malformed_multipart_is_400(server):
    r = requests.post(f"{server.url}/v1/digitise", data=b"--nope\r\nnot a part",
                      headers={"content-type": "multipart/form-data; boundary=xyz"}, timeout=30)
    _assert_json_error(r, 400, "bad_multipart")


def test_curve_not_found_is_422_with_the_coverage(server):
    blank = np.full((300, 150), 245, np.uint8)
    body = _assert_json_error(_post(server.url, _png(blank), _calibration()), 422, "curve_not_found")
    assert body["curve"] in {"GR", "ILD"} and body["coverage"] < body["min_coverage"]
    assert not contracts.is_committed(server.store, body["request_id"])


# ----------------------------------------------------------------------------- reading results

@pytest.mark.parametrize("rid", ["abc", "0" * 31 + "G", "A" * 32, "0" * 33, "..."])
def test_malformed_result_id_is_400(server, rid):
    _assert_json_error(requests.get(f"{server.url}/v1/results/{rid}", timeout=30), 400, "bad_request_id")


def test_unknown_route_is_404_in_the_error_format(server):
    _assert_json_error(requests.get(f"{server.url}/v1/results/..%2F..%2Fetc", timeout=30), 404, "not_found")
    _assert_json_error(requests.get(f"{server.url}/v1/digitise", timeout=30), 405, "method_not_allowed")


def test_unknown_result_is_404(server):
    _assert_json_error(requests.get(f"{server.url}/v1/results/{'0' * 32}", timeout=30), 404, "not_committed")


def test_corrupt_result_is_409_and_posting_again_rewrites_it(server, easy_scans):
    scan = easy_scans[2]
    rid = _post(server.url, scan.encoded, scan.calibration).json()["request_id"]
    name = f"{scan.calibration['curves'][0]['name']}.csv"
    path = Path(server.store) / rid / name
    path.write_bytes(path.read_bytes().replace(b"depth,value", b"depth,VALUE"))
    body = _assert_json_error(requests.get(f"{server.url}/v1/results/{rid}", timeout=30), 409, "corrupt")
    assert body["object"] == name and body["reason"]
    assert _post(server.url, scan.encoded, scan.calibration).status_code == 200
    assert requests.get(f"{server.url}/v1/results/{rid}", timeout=30).status_code == 200


# ----------------------------------------------------------------------------- storage failure, overload

def test_storage_failure_is_503_with_retry_after_and_nothing_committed(server, committed, s3_client):
    scan, _ = committed
    r = _post(server.url, scan.encoded, scan.calibration, path="/tight/v1/digitise")
    body = _assert_json_error(r, 503, "storage_unavailable")
    assert r.headers["retry-after"] == "3"
    assert _stats(server, "/tight")["ingress"]["commits_written"] == 0
    fs = s3_client
    assert not contracts.is_committed(server.tight_store, body["request_id"], fs=fs)
    assert not fs.exists(server.tight_store.split("/")[2])  # not even the bucket: nothing half-written


def test_overload_is_503_with_retry_after(server):
    scans = [_scan(200 + i, height=256, width=128) for i in range(12)]  # distinct: no single flight
    responses = _post_many(server.url, [(s.encoded, s.calibration) for s in scans], path="/tight/v1/digitise")
    assert [r.status_code for r in responses] == [503] * 12
    assert all(r.headers.get("retry-after") == "3" for r in responses)
    kinds = {r.json()["error"] if r.headers["content-type"].startswith("application/json") else "proxy_queue_full"
             for r in responses}
    assert kinds <= {"storage_unavailable", "overloaded", "proxy_queue_full"}
    assert kinds & {"overloaded", "proxy_queue_full"}


# ----------------------------------------------------------------------------- configuration (no Ray)

def test_config_yaml_uses_only_current_serve_keys():
    from ray.serve.config import AutoscalingConfig, BackpressureConfig
    from ray.serve.schema import (DeploymentSchema, HTTPOptionsSchema, RayActorOptionsSchema,
                                  ServeApplicationSchema, ServeDeploySchema)
    from serve_app.ingress import Ingress
    from serve_app.segmenter import Segmenter

    raw = yaml.safe_load(CONFIG_YAML.read_text())
    ServeDeploySchema.model_validate(raw)  # Serve ignores unknown keys silently, hence the checks below
    assert set(raw) <= set(ServeDeploySchema.model_fields)
    assert set(raw["http_options"]) <= set(HTTPOptionsSchema.model_fields)
    assert raw["http_options"]["host"] == "127.0.0.1"
    (app,) = raw["applications"]
    assert set(app) <= set(ServeApplicationSchema.model_fields)
    assert app["import_path"] == "serve_app:build_app"
    config = ServeConfig.model_validate(app["args"])
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {Segmenter.name, Ingress.name}
    for d in deployments.values():
        assert set(d) <= set(DeploymentSchema.model_fields)
        assert set(d["autoscaling_config"]) <= set(AutoscalingConfig.model_fields)
        assert set(d["backpressure_config"]) <= set(BackpressureConfig.model_fields)
        assert set(d["ray_actor_options"]) <= set(RayActorOptionsSchema.model_fields)
    segmenter = deployments[Segmenter.name]
    batching = BatchingConfig.model_validate(segmenter["user_config"])
    assert segmenter["max_ongoing_requests"] >= 2 * batching.max_batch_size
    assert segmenter["ray_actor_options"]["num_gpus"] == config.num_gpus == 1


def test_a_busy_segmenter_waits_longer_for_a_fuller_batch():
    """The next batch's wait: the base timeout for a lone request, up to a fraction of a full batch's forward
    pass once a batch's worth of requests is inside the replica (serve_app/segmenter.py)."""
    from serve_app.segmenter import Segmenter
    seg = object.__new__(Segmenter.func_or_class)
    seg.batching = BatchingConfig(max_batch_size=16, batch_wait_timeout_s=0.05, busy_wait_fraction=0.5)
    seg.inside, seg.scan_forward_s = 3, 0.125
    assert seg._next_wait() == 0.05
    seg.inside = 20
    assert seg._next_wait() == 1.0
    seg.scan_forward_s = 0.001            # a fast model: never below the base
    assert seg._next_wait() == 0.05
    seg.batching, seg.scan_forward_s = BatchingConfig(busy_wait_fraction=0), 0.125
    assert seg._next_wait() == 0.05


def test_batches_form_when_the_model_is_free():
    """What arrives while a batch is in the model forms the next batch together (serve_app/batcher.py)."""
    import asyncio

    from serve_app.batcher import Batcher
    seen = []

    async def run(items):
        seen.append(list(items))
        await asyncio.sleep(0.2)   # the model is busy
        return [i * 10 for i in items]

    async def main():
        b = Batcher(run, max_batch_size=4, wait_s=lambda: 0.0)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.05)   # batch [0] is running
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 7)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50, 60]
    assert seen == [[0], [1, 2, 3, 4], [5, 6]]


def test_config_yaml_repeats_only_what_serve_config_makes_of_its_args():
    """Values written twice in config.yaml (args, and the deployment options that override build_app's)
    are one setting: the copy must equal what ServeConfig derives."""
    from serve_app.ingress import Ingress
    from serve_app.segmenter import Segmenter
    (app,) = yaml.safe_load(CONFIG_YAML.read_text())["applications"]
    config = ServeConfig.model_validate(app["args"])
    deployments = {d["name"]: d for d in app["deployments"]}
    segmenter, ingress = deployments[Segmenter.name], deployments[Ingress.name]
    assert segmenter["user_config"] == config.batching.model_dump()
    assert segmenter["max_ongoing_requests"] == config.segmenter_ongoing
    assert segmenter["max_queued_requests"] == config.segmenter_max_queued_requests
    assert ingress["max_ongoing_requests"] == config.ingress_max_ongoing_requests
    assert ingress["max_queued_requests"] == config.ingress_max_queued_requests
    assert {d["backpressure_config"]["retry_after_s"] for d in deployments.values()} == {config.retry_after_s}
    assert segmenter["ray_actor_options"] == {"num_cpus": config.segmenter_num_cpus, "num_gpus": config.num_gpus}
    assert ingress["ray_actor_options"] == {"num_cpus": config.ingress_num_cpus}
    assert "segmenter.bin" not in CONFIG_YAML.read_text()


@pytest.mark.parametrize("bad", [{"max_batch_size": 17}, {"segmenter_max_ongoing_requests": 8},
                                 {"tracing": {"min_cover": 0.5}}, {"max_image_pixels": 2**31}, {"bogus": 1}])
def test_config_rejects_unusable_settings(bad):
    with pytest.raises(ValueError):
        ServeConfig(**bad)


def test_a_replica_lost_mid_request_is_a_503_with_retry_after():
    """A segmenter replica that dies before answering (node lost, process killed) acknowledged nothing: the
    client is told to retry (the multi-node test kills one under load)."""
    from ray.exceptions import ActorDiedError
    from serve_app.http import to_api_error
    err = to_api_error(ActorDiedError(), retry_after_s=2)
    assert (err.status, err.error, err.headers()) == (503, "unavailable", {"Retry-After": "2"})


def test_build_app_accepts_a_dict():
    assert build_app({"store": "s3://bucket/results", "max_batch_size": 8}) is not None


def test_cli_arguments_make_a_loopback_config_with_an_absolute_store(tmp_path, monkeypatch):
    import argparse
    from cli.commands import serve_config as config_from_args
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(host="127.0.0.1", port=8000, store="results/serve", replicas=2, num_gpus=0.5,
                              max_batch_size=8, weights="w.pt")
    config = config_from_args(args)
    assert config.store == str(tmp_path / "results" / "serve") and config.loopback_only
    assert (config.replicas, config.num_gpus, config.max_batch_size, config.weights) == (2, 0.5, 8, "w.pt")
    assert config.segmenter_ongoing == 16


def test_an_unexpected_exception_is_a_500_whose_log_line_names_the_cause(caplog):
    from serve_app.http import log_failure, to_api_error
    try:
        try:
            raise OSError("disk on fire")
        except OSError as e:
            raise RuntimeError("the commit step broke") from e
    except RuntimeError as e:
        exc = e
    err = to_api_error(exc, retry_after_s=3)
    assert (err.status, err.error) == (500, "internal") and "disk" not in err.detail  # nothing internal leaks
    logger = logging.getLogger("ray.serve.serve_app.http")
    logger.addHandler(caplog.handler)   # Serve's loggers do not propagate to the root
    try:
        log_failure(err, exc, "ab" * 16)
    finally:
        logger.removeHandler(caplog.handler)
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    line = record.getMessage()
    assert "abab" in line and "500" in line and "RuntimeError: the commit step broke" in line
    assert "OSError: disk on fire" in line and record.exc_info is not None


# ----------------------------------------------------------------------------- the two routes agree

def test_both_routes_take_their_device_from_the_gpus_ray_grants():
    """Not from what torch sees: on a GPU node a CPU replica beside a CPU batch job must compute the same
    bytes (CPU and CUDA logits differ in the last bits, and so do the traced values)."""
    from batch_jobs import JobConfig
    assert ServeConfig().segmenter_device == JobConfig(src="in", dst="out").actor_device == "cpu"
    assert ServeConfig(num_gpus=1).segmenter_device == JobConfig(src="in", dst="out", num_gpus=1).actor_device \
        == "cuda"


def test_batch_route_writes_byte_identical_objects(server, easy_scans, weights, tmp_path):
    """The same scans through HTTP and through the Ray Data job give the same objects, byte for byte."""
    from batch_jobs import JobConfig, convert

    src = tmp_path / "src"
    src.mkdir()
    ids = []
    for i, scan in enumerate(easy_scans[:3]):
        r = _post(server.url, scan.encoded, scan.calibration)
        assert r.status_code == 200, r.text
        ids.append(r.json()["request_id"])
        (src / f"scan{i}.png").write_bytes(scan.encoded)
        (src / f"scan{i}.json").write_text(json.dumps(scan.calibration))
    dst = str(tmp_path / "dst")
    # small CPU reservations: the job shares the test Ray with the running Serve apps
    summary = convert(JobConfig(src=str(src), dst=dst, weights=weights, cpus_per_replica=0.25, io_cpus=0.1))
    assert summary.committed == len(ids) and summary.failed == 0
    for rid in ids:
        assert contracts.read_objects(dst, rid) == contracts.read_objects(server.store, rid)


def test_no_valid_request_in_this_module_met_an_internal_error(server):
    """Runs last in the module: every request above was answered without a 500."""
    outcomes = _stats(server)["ingress"]["outcomes"]
    assert not any(k.endswith("internal") for k in outcomes), outcomes
