"""The Digitiser both routes call: tiling policy, batch invariance, tracing into a contract result."""
import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import contracts
from digitiser import CurveNotFound, Digitiser, TilePolicy, decode_scan, tracing
from digitiser.checkpoint import save_weights
from digitiser.model import Segmenter, SegmenterConfig
from digitiser.synth import render_scan


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Untrained weights: exercises the plumbing without depending on model quality."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "random.pt"
    save_weights(Segmenter(SegmenterConfig()), SegmenterConfig(), path)
    return path


@pytest.fixture(scope="module")
def random_digitiser(random_weights):
    return Digitiser(random_weights, device="cpu")


def test_a_grey_segmenter_reads_the_grey_of_a_colour_scan_and_a_colour_one_its_colour(random_digitiser, tmp_path):
    config = SegmenterConfig(in_channels=3)
    torch.manual_seed(0)
    save_weights(Segmenter(config), config, tmp_path / "colour.pt")
    colour_digitiser = Digitiser(tmp_path / "colour.pt", device="cpu")
    bgr = cv2.merge([np.full((300, 100), 235, np.uint8)] * 3)
    cv2.line(bgr, (50, 0), (60, 299), (60, 60, 230), 2)   # a red curve
    scan = decode_scan(cv2.imencode(".png", bgr)[1].tobytes())
    assert not random_digitiser.reads_colour and colour_digitiser.reads_colour
    assert np.array_equal(random_digitiser.segment_scans([scan])[0], random_digitiser.segment([scan.gray])[0])
    assert np.array_equal(colour_digitiser.segment_scans([scan])[0], colour_digitiser.segment([bgr])[0])
    grey = colour_digitiser.segment([scan.gray])[0]   # the same scan in grey: three equal planes, another answer
    assert not np.array_equal(colour_digitiser.segment_scans([scan])[0], grey)
    assert np.array_equal(grey, colour_digitiser.segment([cv2.merge([scan.gray] * 3)])[0])


def gray(seed, h, w, style="clean"):
    s = render_scan(seed, height=h, width=w, style=style)
    return s, decode_scan(s.encoded)


@pytest.mark.parametrize("shape", [(20, 10), (300, 100), (577, 385), (1500, 130)])
def test_probabilities_at_input_resolution(random_digitiser, shape):
    probs = random_digitiser.segment([np.full(shape, 255, np.uint8)])[0]
    assert probs.shape == (3, *shape) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=0), 1, atol=1e-5)


@pytest.fixture(scope="module")
def bfloat16_weights(tmp_path_factory):
    config = SegmenterConfig(precision="bfloat16")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "random_bf16.pt"
    save_weights(Segmenter(config), config, path)
    return path


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_scan_result_does_not_depend_on_batch_mates(random_weights, bfloat16_weights, precision):
    """In passes of several tiles (a GPU's 8; a CPU's default is 1 a pass) a scan's tiles meet other scans' tiles
    or blank ones: its probabilities must not change with them."""
    weights = random_weights if precision == "float32" else bfloat16_weights
    digitiser = Digitiser(weights, device="cpu", tiles=TilePolicy(chunk=4))
    grays = [gray(i, h, w)[1].gray for i, (h, w) in enumerate([(400, 120), (900, 300), (333, 77)])]
    batch = digitiser.segment(grays)
    for g, together in zip(grays, batch):
        assert np.array_equal(digitiser.segment([g])[0], together)
    assert all(np.array_equal(a, b) for a, b in zip(digitiser.segment(grays[::-1])[::-1], batch))


def test_bfloat16_on_a_device_without_its_kernels_runs_on_float32_ones(monkeypatch, bfloat16_weights):
    """On a CPU without AVX-512 BF16 or AMX the same bfloat16 arithmetic runs on float32 kernels (twice as fast as
    the emulated bfloat16 ones there), reading what bfloat16 kernels read to their last bits."""
    from digitiser import predictor
    monkeypatch.setattr(predictor, "native_bfloat16", lambda device: False)   # as on an AVX2-only CPU
    here = Digitiser(bfloat16_weights, device="cpu")
    there = Digitiser(bfloat16_weights, device="cpu")
    there.model.bfloat16_kernels = True   # as on a CPU with them (here, oneDNN emulates them)
    assert (here.arithmetic, there.arithmetic) == ("bfloat16 on float32 kernels", "bfloat16")
    assert here.model_version == there.model_version   # one model, one arithmetic
    grays = [gray(i, 400, 120)[1].gray for i in range(2)]
    for a, b in zip(here.segment(grays), there.segment(grays)):
        assert np.abs(a - b).max() < 5e-3


def test_probabilities_do_not_depend_on_the_cpus_a_segmenter_reserved():
    """torch's intra-op threads change a conv's last bits with their count (so would every traced value): a
    segmenter on 1, 2 or 3 CPUs must compute the same bytes, in parallel passes where it has several."""
    grays = [gray(i, 900, 300)[1].gray for i in range(6)]   # 12 tiles: passes to run side by side
    one = Digitiser(device="cpu", threads=1).segment(grays)
    for threads in (2, 3):
        several = Digitiser(device="cpu", threads=threads).segment(grays)
        assert all(np.array_equal(a, b) for a, b in zip(several, one))


def test_tracing_processes_load_no_torch():
    """A segmenter beside a GPU traces in a dozen processes: each imports the result builder, not the model."""
    code = ("import sys, numpy as np, contracts; from digitiser import decode_scan; from digitiser.synth import "
            "render_scan; from digitiser.tracer_pool import trace_scan; "
            "from digitiser.tracing import TracingParams; "
            "s = render_scan(3, height=400, width=200); scan = decode_scan(s.encoded); "
            "cal = contracts.Calibration.from_dict(s.calibration); box = cal.box(scan.width, scan.height); "
            "probs = np.zeros((3, *box.shape), np.float32); probs[0] = 1; "
            "assert trace_scan(scan, cal, probs, TracingParams(), 'm' * 64).not_found; "
            "assert 'torch' not in sys.modules, 'tracing imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_closed_tracer_pool_leaves_nothing_for_the_resource_tracker():
    """Ray kills an actor's child processes, its resource tracker among them, after Serve's graceful shutdown
    has closed the pool and before Python exits: the pool must free its queues in `close`, or a relaunched
    tracker prints a KeyError traceback for each of their semaphores as the replica stops."""
    code = ("import os, signal; from multiprocessing import resource_tracker as rt; "
            "from digitiser.tracer_pool import TracerPool; "
            "pool = TracerPool(1); pool.close(); "   # its worker has started and answered
            "os.kill(rt._resource_tracker._pid, signal.SIGKILL); os.waitpid(rt._resource_tracker._pid, 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "KeyError" not in done.stderr and "leak" not in done.stderr, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused_with_a_clear_error():
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        Digitiser(device="cuda")


def test_more_than_16_scans_is_refused(random_digitiser):
    with pytest.raises(AssertionError, match="at most 16"):
        random_digitiser.segment([np.zeros((16, 16), np.uint8)] * 17)


def test_model_version_is_sha256_of_the_weights_file(digitiser):
    from digitiser import DEFAULT_WEIGHTS
    assert digitiser.model_version == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()


def test_blank_scan_fails_with_curve_not_found(digitiser):
    blank = decode_scan(cv2.imencode(".png", np.full((400, 150), 250, np.uint8))[1].tobytes())
    cal = contracts.Calibration.from_dict({})
    with pytest.raises(CurveNotFound, match="coverage"):
        digitiser.finish(blank, cal, digitiser.segment_scans([blank])[0])


def test_clean_scan_digitises_into_a_valid_result(digitiser, tmp_path):
    synth, scan = gray(3, 800, 240)
    cal = contracts.Calibration.from_dict(synth.calibration)
    result = digitiser.finish(scan, cal, digitiser.segment_scans([scan])[0])
    assert result.request_id == contracts.request_id(synth.encoded, cal, digitiser.model_version, digitiser.tracing.to_dict())
    receipt = contracts.commit(result, str(tmp_path))
    back = contracts.load(str(tmp_path), receipt.request_id)
    assert back.tracing == digitiser.tracing.to_dict() and back.tracing["revision"] == tracing.REVISION
    for k, name in enumerate(cal.names):
        true = synth.values[:, k]
        span = abs(cal.curves[k].right - cal.curves[k].left)
        if cal.curves[k].scale == "log":
            err = np.abs(np.log10(back.curves[name]) - np.log10(true)) / abs(np.log10(cal.curves[k].right / cal.curves[k].left))
        else:
            err = np.abs(back.curves[name] - true) / span
        assert np.median(err) < 0.01, f"{name}: median error {np.median(err):.4f} of track width"
