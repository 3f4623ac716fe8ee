"""Training: seeded determinism, SIGKILL + resume equals an uninterrupted run, checkpoint integrity.

Runs on a tiny stand-in scan generator (`stand_in_scan`, below) so the tests take seconds; the subprocess
tests reach it through `data_source="test_training:stand_in_scan"` with this folder on PYTHONPATH.
"""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.utils.deterministic

from cli import main as cli_main
from digitiser import checkpoint as ckpt
from digitiser import train as tr
from digitiser.model import SegmenterConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class StandInScan:
    image: np.ndarray  # HxW uint8, ink dark
    mask: np.ndarray   # HxW uint8 {0, 1, 2}


def stand_in_scan(seed: int, *, height=None, width=None, style=None) -> StandInScan:
    """A tiny scan: a solid and a dashed random polyline that cross, on light noisy paper."""
    rng = np.random.default_rng(seed)
    h, w = height or 64, width or 48
    mask = np.zeros((h, w), np.uint8)
    ys = np.arange(0, h + 8, 8)
    for cls in (2, 1):  # solid drawn last, on top
        xs = np.clip(w / 2 + np.cumsum(rng.normal(0, 4, len(ys))), 2, w - 3)
        pts = np.stack([xs, ys], 1).astype(np.int32)
        layer = np.zeros_like(mask)
        cv2.polylines(layer, [pts], False, 1, 1)
        if cls == 2:
            layer[(np.arange(h) // 4) % 2 == 1] = 0
        mask[layer > 0] = cls
    image = np.where(mask > 0, 40, 235).astype(np.int16) + rng.integers(-10, 10, (h, w))
    return StandInScan(np.clip(image, 0, 255).astype(np.uint8), mask)


def edge_scan(seed: int, *, height=None, width=None, style=None) -> StandInScan:
    """A 128 x 96 scan whose only curve pixels run along the left edge, rows 40-59 (a pinned curve)."""
    mask = np.zeros((height or 128, width or 96), np.uint8)
    mask[40:60, 0] = 1
    return StandInScan(np.where(mask > 0, 40, 235).astype(np.uint8), mask)


def tiny_config(**overrides) -> tr.TrainConfig:
    """A model of ~4k parameters on 32 px crops; 1 thread: tiny ops are slower with 2 on a busy machine."""
    base = dict(seed=3, steps=40, batch_size=4, crop=(32, 32), warmup_steps=4, checkpoint_every=4,
                keep_checkpoints=2, log_every=10, threads=1, data_source="test_training:stand_in_scan",
                data_seeds=(0, 50), scans_per_step=2, scan_reuse=2, eval_seeds=(100, 102),
                model=SegmenterConfig(base=4, levels=2, max_width=8))
    return tr.TrainConfig(**{**base, **overrides})


@pytest.fixture(autouse=True)
def _import_stand_in(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = True


def _cli(args, cfg_path, out, **popen):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(__file__).parent)])}
    cmd = [sys.executable, "-m", "cli", "train", "--config", str(cfg_path), "--out", str(out), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def _write_config(tmp_path, cfg) -> Path:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return path


# ----------------------------------------------------------------------------- data and config

def test_batch_depends_only_on_seed_and_step():
    cfg = tiny_config()
    render = tr.resolve_source(cfg.data_source)
    x1, y1 = tr.make_batch(cfg, 7, tr.ScanCache(render, None, 2))
    cache = tr.ScanCache(render, None, 2)
    tr.make_batch(cfg, 3, cache)  # a different history must not matter
    x2, y2 = tr.make_batch(cfg, 7, cache)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (4, 1, 32, 32) and x1.dtype == torch.float32 and y1.dtype == torch.int64


def test_batches_from_worker_processes_equal_those_made_in_process():
    cfg = tiny_config(steps=9, scan_reuse=2)
    cache = tr.ScanCache(tr.resolve_source(cfg.data_source), None, 2)
    made = list(tr.batches(cfg, start=3, workers=2))  # a resume mid-group: steps 3 | 4 5 | 6 7 | 8
    assert len(made) == 6
    for step, (x, y) in enumerate(made, start=3):
        ex, ey = tr.make_batch(cfg, step, cache)
        assert torch.equal(x, ex) and torch.equal(y, ey), f"step {step}"


def test_crops_prefer_curve_pixels():
    cfg = tiny_config(batch_size=64, crop=(16, 16))
    _, y = tr.make_batch(cfg, 0, tr.ScanCache(tr.resolve_source(cfg.data_source), None, 2))
    assert (y > 0).flatten(1).any(1).float().mean() > 0.7


def test_edge_crops_hold_the_curve_pinned_at_the_track_edge():
    cfg = tiny_config(batch_size=32, crop=(16, 16), p_crossing=0.0, p_curve=0.0, p_edge=1.0,
                      data_source="test_training:edge_scan")
    _, y = tr.make_batch(cfg, 0, tr.ScanCache(tr.resolve_source(cfg.data_source), None, 2))
    at_edge = (y[:, :, [0, -1]] > 0).flatten(1).any(1)  # crops may be flipped: either side
    assert bool(at_edge.all()), "every edge crop must hold pinned-curve pixels at its outer column"


def test_without_edge_crops_the_pinned_curve_is_mostly_missed():
    cfg = tiny_config(batch_size=32, crop=(16, 16), p_crossing=0.0, p_curve=0.0, p_edge=0.0,
                      data_source="test_training:edge_scan")
    _, y = tr.make_batch(cfg, 0, tr.ScanCache(tr.resolve_source(cfg.data_source), None, 2))
    assert (y > 0).flatten(1).any(1).float().mean() < 0.5


def colour_scan(seed: int, *, height=None, width=None, style=None) -> StandInScan:
    """stand_in_scan with its curves in red ink (BGR): what grey makes as light as a grid line."""
    scan = stand_in_scan(seed, height=height, width=width)
    bgr = np.repeat(scan.image[..., None], 3, axis=2)
    bgr[scan.mask > 0] = (40, 40, 220)
    return StandInScan(bgr, scan.mask)


def test_a_colour_segmenter_trains_on_the_scans_colour():
    grey, colour = (tiny_config(data_source="test_training:colour_scan", model=SegmenterConfig(
        base=4, levels=2, max_width=8, in_channels=c)) for c in (1, 3))
    render = tr.resolve_source(colour.data_source)
    xg, yg = tr.make_batch(grey, 5, tr.ScanCache(render, None, 4))
    xc, yc = tr.make_batch(colour, 5, tr.ScanCache(render, None, 4, channels=3))
    assert xg.shape == (4, 1, 32, 32) and xc.shape == (4, 3, 32, 32) and torch.equal(yg, yc)
    ink = xc.permute(0, 2, 3, 1)[yc > 0]   # (pixels, 3) ink per B, G, R plane: red ink is dark in B and G, light in R
    assert (ink[:, 0] > 0.7).all() and (ink[:, 2] < 0.2).all()
    assert torch.allclose(xg[:, 0], (xc * torch.tensor([0.114, 0.587, 0.299])[:, None, None]).sum(1), atol=3 / 255)


def test_crop_pads_scans_smaller_than_the_crop():
    cfg = tiny_config(crop=(128, 96))
    x, y = tr.make_batch(cfg, 0, tr.ScanCache(tr.resolve_source(cfg.data_source), None, 2))
    assert x.shape == (4, 1, 128, 96) and y.max() <= 2


def test_config_round_trips_through_json():
    cfg = tiny_config()
    assert tr.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


RECIPES = ROOT / "training" / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.json")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid_configs(path):
    """The model card's training commands must run as written: each config parses, its crops fit the
    network, a fine-tune pins the weights it starts from, and every pinned file the repository holds (the
    shipped weights, a committed teacher; not a run's output under runs/) still has its pinned bytes."""
    cfg = tr.load_config(path)
    assert cfg.crop[0] % cfg.model.multiple == 0 and cfg.crop[1] % cfg.model.multiple == 0
    assert (cfg.init_weights is None) == (cfg.init_sha256 is None)
    assert callable(tr.resolve_source(cfg.data_source))
    pins = list(cfg.anchor_from or []) + ([(cfg.init_weights, cfg.init_sha256)] if cfg.init_weights else [])
    for file, sha in pins:
        if not file.startswith("runs/"):
            assert ckpt.sha256_file(ROOT / file) == sha, f"{path.name} pins {file} at {sha[:12]}: the file changed"


def test_stage7_trains_on_generator_version_2_from_the_stage6_weights():
    """Issue 18 step 4: the breadth recipe fine-tunes stage 6's weights (pinned) on `render_scan_broad`;
    stages 1-6 keep generator version 1, so their data (and weights) are unchanged."""
    cfg = tr.load_config(RECIPES / "stage7.json")
    assert cfg.data_source == "digitiser.synth:render_scan_broad"
    assert cfg.init_weights == "runs/stage6/segmenter.pt" and cfg.init_sha256.startswith("55430149d481")
    assert all(tr.load_config(RECIPES / f"stage{i}.json").data_source == "digitiser.synth:render_scan"
               for i in range(1, 7))


def test_stage10_is_stage7_on_generator_version_3():
    cfg, base = tr.load_config(RECIPES / "stage10.json"), tr.load_config(RECIPES / "stage7.json")
    assert cfg.data_source == "digitiser.synth:render_scan_v3"
    assert (cfg.init_sha256, cfg.steps, cfg.lr) == (base.init_sha256, base.steps, base.lr)


def test_a_recipe_overrides_the_recipe_it_extends(tmp_path):
    (tmp_path / "base.json").write_text(json.dumps({"seed": 3, "steps": 7, "model": {"levels": 3, "base": 4}}))
    (tmp_path / "child.json").write_text(json.dumps({"extends": "base.json", "steps": 9, "model": {"levels": 2}}))
    cfg = tr.load_config(tmp_path / "child.json")
    assert (cfg.seed, cfg.steps, cfg.model.levels, cfg.model.base) == (3, 9, 2, 4)
    (tmp_path / "base.json").write_text(json.dumps({"extends": "child.json"}))
    with pytest.raises(tr.TrainConfigError, match="loop"):
        tr.load_config(tmp_path / "child.json")


def test_the_shipped_weights_recipe_pins_its_lineage():
    """stage16.json made the shipped weights: its chain of `extends` reaches a seeded init (stage1), it starts
    from stage 6 and each stage to stage 6 from the one before, each pinned by the sha256 of its parent."""
    chain, path = [], RECIPES / "stage16.json"
    while path:
        chain.append(path.stem)
        raw = json.loads(path.read_text())
        path = RECIPES / raw["extends"] if "extends" in raw else None
    assert chain == ["stage16", "stage12", "stage11", "stage7", "stage6", "stage5", "stage4", "stage3", "stage2",
                     "stage1"]
    assert tr.load_config(RECIPES / "stage1.json").init_weights is None
    assert tr.load_config(RECIPES / "stage6.json").init_sha256.startswith("3b0373db1f6d")
    stage16 = tr.load_config(RECIPES / "stage16.json")
    assert stage16.init_sha256.startswith("55430149d481") and stage16.anchor_weight == 100.0
    assert stage16.data_source == "digitiser.synth:render_scan_v4"


def test_unknown_config_field_is_refused():
    with pytest.raises(tr.TrainConfigError, match="stpes"):
        tr.TrainConfig.from_dict({"stpes": 10})


def test_loss_is_lower_for_the_right_answer():
    cfg = tiny_config()
    y = torch.randint(0, 3, (2, 16, 16))
    good = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float() * 10
    assert tr.seg_loss(good, y, cfg) < tr.seg_loss(-good, y, cfg)


def test_the_deterministic_cross_entropy_equals_torchs_weighted_mean():
    logits, y = torch.randn(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    weight = torch.tensor([1.0, 5.0, 5.0])
    torch.testing.assert_close(tr.weighted_ce(logits, y, weight),
                               torch.nn.functional.cross_entropy(logits, y, weight=weight))


def test_distractor_ink_is_background_that_costs_as_much_as_a_curve():
    """A third line's ink (label DISTRACTOR) is background; distractor_weight prices reading it as curve 2, which
    with the background's weight 1 against the curves' 5 is the cheaper guess wherever the two look alike."""
    y = torch.zeros(1, 8, 8, dtype=torch.int64)
    y[0, :, 2], y[0, :, 5] = 2, tr.DISTRACTOR                          # curve 2, and a line that is neither
    as_curve_2 = torch.zeros(1, 3, 8, 8)
    as_curve_2[0, 2, :, [2, 5]] = 1.0                                  # both read as curve 2, unsure
    plain = tiny_config(dice_weight=0.0)
    torch.testing.assert_close(tr.seg_loss(as_curve_2, y, dataclasses.replace(plain, distractor_weight=1.0)),
                               tr.seg_loss(as_curve_2, tr.background(y), plain))   # weight 1: plain background
    weighted = dataclasses.replace(plain, distractor_weight=5.0)
    right = as_curve_2.clone()
    right[0, 0, :, 5], right[0, 2, :, 5] = 1.0, 0.0
    assert tr.seg_loss(right, y, weighted) < tr.seg_loss(as_curve_2, y, weighted)
    gain = lambda cfg: float(tr.seg_loss(as_curve_2, y, cfg) - tr.seg_loss(right, y, cfg))  # noqa: E731
    assert gain(weighted) > 2 * gain(dataclasses.replace(plain, distractor_weight=1.0))
    assert tr.anchor_loss(right, right, tr.background(y)) == 0


def test_distractor_labels_cover_the_third_lines_ink_and_never_a_curve():
    from digitiser import synth
    seeds = [synth.scan_seed(26, i) for i in range(12)]
    scans = {seed: synth.render_scan_v6(seed, height=400, width=200) for seed in seeds}
    thirds = [seed for seed in seeds if scans[seed].third is not None]
    assert thirds, "version 6 draws a third line in a third of its tracks"
    cache = tr.ScanCache(synth.render_scan_v6, (400, 200), 12, distractors=True)
    for seed in seeds:
        scan, mask = scans[seed], cache.get(seed)["mask"]
        if scan.third is None:
            assert np.array_equal(mask, scan.mask)
            continue
        assert np.array_equal(mask[mask != tr.DISTRACTOR], scan.mask[mask != tr.DISTRACTOR])  # curves untouched
        rows = np.arange(400)
        on_line = mask[rows, np.clip(np.rint(scan.third).astype(int), 0, 199)]
        ink_on_line = cache.get(seed)["ink"].max(0)[rows, np.clip(np.rint(scan.third).astype(int), 0, 199)]
        inked = (scan.mask[rows, np.clip(np.rint(scan.third).astype(int), 0, 199)] == 0) & (ink_on_line > 0.5)
        assert (on_line[inked] == tr.DISTRACTOR).mean() > 0.9           # its dark ink is labelled
        line = np.full((400, 200), 255, np.uint8)                       # the centreline, 1 px thin
        cv2.polylines(line, [np.stack([np.rint(scan.third), rows], 1).astype(np.int32)[:, None]], False, 0)
        away = cv2.distanceTransform(line, cv2.DIST_L2, 5) > 4
        assert not ((mask == tr.DISTRACTOR) & away).any()               # and nothing away from it
    plain = tr.ScanCache(synth.render_scan_v6, (400, 200), 12)
    assert all(tr.DISTRACTOR not in plain.get(seed)["mask"] for seed in thirds)


class _Reads(torch.nn.Module):
    """A stand-in segmenter that reads every pixel as one class."""
    config = dataclasses.replace(SegmenterConfig(), levels=0)

    def __init__(self, c: int):
        super().__init__()
        self.c = c

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full(x[:, 0].shape, self.c), 3).permute(0, 3, 1, 2).float()


def test_the_held_out_log_says_how_much_third_line_ink_is_read_as_a_curve():
    from digitiser import synth
    seeds = [synth.scan_seed(26, i) for i in range(12)]
    cache = tr.ScanCache(synth.render_scan_v6, (200, 100), 12, distractors=True)
    iou, third = tr.heldout_scores(_Reads(2), seeds, cache)
    assert third == 1.0 and iou[0] == 0.0 and 0 < iou[2] < 1
    iou, third = tr.heldout_scores(_Reads(0), seeds, cache)
    assert third == 0.0 and iou[1] == iou[2] == 0.0 and iou[0] > 0.9   # third-line ink is background
    plain = [s for s in seeds if cache.get(s)["mask"].max() < tr.DISTRACTOR]
    assert plain and tr.heldout_scores(_Reads(0), plain, cache)[1] is None


def test_the_anchor_holds_only_the_pixels_the_init_weights_read_right():
    y = torch.randint(0, 3, (2, 16, 16))
    right = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float() * 4
    assert tr.anchor_loss(right, right, y) == 0                    # the same reading costs nothing
    assert tr.anchor_loss(-right, right, y) > 1                    # leaving a right reading costs
    wrong = torch.nn.functional.one_hot((y + 1) % 3, 3).permute(0, 3, 1, 2).float() * 4
    assert tr.anchor_loss(right, wrong, y) == 0                    # leaving a wrong one is free


def test_the_anchor_can_be_lifted_near_curve_2():
    y = torch.zeros(1, 16, 16, dtype=torch.long)
    y[0, :, 8] = 2                                                  # a curve-2 column
    right = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float() * 4
    left = right.clone()
    left[..., 5:12] = -right[..., 5:12]                             # the model leaves the readings at columns 5-11
    assert tr.anchor_loss(left, right, y) > 1
    assert tr.anchor_loss(left, right, y, free_radius=3) == 0       # all within 3 px of curve 2: free
    assert tr.anchor_loss(left, right, y, free_radius=2) > 0        # columns 5 and 11 are still held


# ----------------------------------------------------------------------------- training runs

def _as_if_stopped_at_the_first_checkpoint(run: Path) -> None:
    """Leave a finished run folder as a run killed after its first kept checkpoint: the later ones unsealed
    (their .sha256 gone) and no final weights."""
    for p in ckpt.list_checkpoints(run)[1:]:
        Path(str(p) + ".sha256").unlink()
    (run / "segmenter.pt").unlink()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh runs it there)")
def test_training_on_cuda_is_seeded_and_resumable(tmp_path):
    cfg = tiny_config(steps=12, device="cuda")
    full = tr.train(cfg, tmp_path / "full").read_bytes()
    assert tr.train(cfg, tmp_path / "again").read_bytes() == full
    tr.train(cfg, tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    assert tr.train(cfg, tmp_path / "part", resume=True).read_bytes() == full


def test_same_config_gives_identical_weights(tmp_path):
    cfg = tiny_config(steps=8)
    a = tr.train(cfg, tmp_path / "a").read_bytes()
    b = tr.train(cfg, tmp_path / "b").read_bytes()
    assert a == b


def test_data_workers_change_speed_not_weights(tmp_path):
    cfg = tiny_config(steps=8)
    a = tr.train(cfg, tmp_path / "a").read_bytes()
    assert tr.train(cfg, tmp_path / "b", data_workers=2).read_bytes() == a


def test_different_seed_gives_different_weights(tmp_path):
    a = tr.train(tiny_config(steps=4), tmp_path / "a").read_bytes()
    b = tr.train(tiny_config(steps=4, seed=4), tmp_path / "b").read_bytes()
    assert a != b


def test_final_weights_load_with_preflight(tmp_path):
    final = tr.train(tiny_config(steps=4), tmp_path / "run")
    model, version = ckpt.load_segmenter(final)
    assert version == ckpt.sha256_file(final) and not model.training


def test_fine_tuning_starts_from_the_pinned_weights(tmp_path):
    parent = tr.train(tiny_config(steps=4), tmp_path / "parent")
    version = ckpt.sha256_file(parent)
    cfg = tiny_config(steps=4, seed=1, init_weights=str(parent), init_sha256=version)
    zero_steps = tr.train(tiny_config(steps=0, init_weights=str(parent), init_sha256=version), tmp_path / "0")
    assert zero_steps.read_bytes() == parent.read_bytes()   # starts exactly where the parent ended
    child = tr.train(cfg, tmp_path / "child")
    assert child.read_bytes() != parent.read_bytes()
    assert tr.train(cfg, tmp_path / "again").read_bytes() == child.read_bytes()   # still deterministic


def test_fine_tuning_refuses_weights_other_than_the_pinned_ones(tmp_path):
    parent = tr.train(tiny_config(steps=4), tmp_path / "parent")
    with pytest.raises(tr.TrainConfigError, match="model version"):
        tr.train(tiny_config(init_weights=str(parent), init_sha256="0" * 64), tmp_path / "child")
    with pytest.raises(tr.TrainConfigError, match="init_sha256"):
        tr.train(tiny_config(init_weights=str(parent)), tmp_path / "child2")
    wider = tiny_config(init_weights=str(parent), init_sha256=ckpt.sha256_file(parent))
    wider.model = dataclasses.replace(wider.model, base=wider.model.base * 2)
    with pytest.raises(tr.TrainConfigError, match="config asks"):
        tr.train(wider, tmp_path / "child3")


def test_resuming_a_fine_tune_does_not_need_the_init_file(tmp_path):
    parent = tr.train(tiny_config(steps=4), tmp_path / "parent")
    cfg = tiny_config(steps=12, seed=1, init_weights=str(parent), init_sha256=ckpt.sha256_file(parent))
    full = tr.train(cfg, tmp_path / "full").read_bytes()
    tr.train(cfg, tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    parent.unlink()   # the checkpoint holds the weights now
    assert tr.train(cfg, tmp_path / "part", resume=True).read_bytes() == full


def test_an_anchored_fine_tune_stays_nearer_its_init_and_resumes_to_the_same_bytes(tmp_path):
    parent = tr.train(tiny_config(steps=4), tmp_path / "parent")
    init = dict(init_weights=str(parent), init_sha256=ckpt.sha256_file(parent), seed=1, lr=0.03)
    free = tr.train(tiny_config(steps=12, **init), tmp_path / "free")
    cfg = tiny_config(steps=12, anchor_weight=50.0, **init)
    anchored = tr.train(cfg, tmp_path / "anchored")
    x, y = tr.make_batch(cfg, 100, tr.ScanCache(tr.resolve_source(cfg.data_source), None, capacity=2))
    with torch.no_grad():
        parent_logits = ckpt.load_segmenter(parent)[0](x)
        drift = lambda path: float(tr.anchor_loss(ckpt.load_segmenter(path)[0](x), parent_logits, y))  # noqa: E731
    assert drift(anchored) < 0.5 * drift(free)   # what the parent read right, it still reads (nearly) so
    tr.train(cfg, tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    assert tr.train(cfg, tmp_path / "part", resume=True).read_bytes() == anchored.read_bytes()
    with pytest.raises(tr.TrainConfigError, match="anchor_weight needs init_weights or anchor_from"):
        tr.train(tiny_config(anchor_weight=1.0), tmp_path / "no_init")


def test_the_anchor_can_be_the_mean_of_other_readers(tmp_path):
    a, b = tr.train(tiny_config(steps=4), tmp_path / "a"), tr.train(tiny_config(steps=4, seed=1), tmp_path / "b")
    pins = ((str(a), ckpt.sha256_file(a)), (str(b), ckpt.sha256_file(b)))
    cfg = tiny_config(steps=12, seed=2, lr=0.03, init_weights=str(a), init_sha256=pins[0][1], anchor_weight=50.0,
                      anchor_from=pins)
    assert tr.TrainConfig.from_dict(cfg.to_dict()) == cfg          # a recipe's JSON lists name the same pins
    x, y = tr.make_batch(cfg, 100, tr.ScanCache(tr.resolve_source(cfg.data_source), None, capacity=2))
    readers = [ckpt.load_segmenter(path)[0] for path in (a, b)]
    with torch.no_grad():
        mean = tr.MeanReader(readers)(x)
        assert torch.allclose(mean.softmax(1), (readers[0](x).softmax(1) + readers[1](x).softmax(1)) / 2, atol=1e-6)
        gap = lambda path: float(tr.anchor_loss(ckpt.load_segmenter(path)[0](x), mean, y))  # noqa: E731
    distilled = tr.train(cfg, tmp_path / "distilled")
    held_to_init = tr.train(dataclasses.replace(cfg, anchor_from=()), tmp_path / "held_to_init")
    assert gap(distilled) < 0.7 * gap(held_to_init)   # it reads like the mean, not like its init alone
    with pytest.raises(tr.TrainConfigError, match="anchor_from .* has model version"):
        tr.train(dataclasses.replace(cfg, anchor_from=(pins[0], (str(b), "0" * 64))), tmp_path / "wrong_pin")


def test_a_checkpoint_written_before_a_config_field_existed_resumes(tmp_path):
    """A run resumed by newer code (fields added since, at their defaults) ends as the run would have."""
    cfg = tiny_config(steps=12)
    full = tr.train(cfg, tmp_path / "full").read_bytes()
    tr.train(cfg, tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    first = ckpt.list_checkpoints(tmp_path / "part")[0]
    state = ckpt.load_training_checkpoint(first)
    del state["train_config"]["anchor_from"], state["train_config"]["model"]["context"]
    ckpt.save_training_checkpoint(first, state)
    assert tr.train(cfg, tmp_path / "part", resume=True).read_bytes() == full


def test_degraded_crops_are_seeded_and_stay_ink():
    x = np.random.default_rng(0).random((6, 1, 32, 32), dtype=np.float32) ** 8   # mostly paper, some ink
    rng = lambda: np.random.default_rng([5, 2, 7])  # noqa: E731
    assert (tr.degrade(x, rng(), 0.0) == x).all()
    worse = tr.degrade(x, rng(), 1.0)
    assert worse.dtype == x.dtype and worse.shape == x.shape and 0 <= worse.min() and worse.max() <= 1
    assert all((worse[i] != x[i]).any() for i in range(len(x)))
    assert (tr.degrade(x, rng(), 1.0) == worse).all()                            # a pure function of the step


def test_a_degrading_fine_tune_differs_and_resumes_to_the_same_bytes(tmp_path):
    parent = tr.train(tiny_config(steps=4), tmp_path / "parent")
    init = dict(init_weights=str(parent), init_sha256=ckpt.sha256_file(parent), seed=1, anchor_weight=10.0)
    cfg = tiny_config(steps=12, p_degrade=0.7, **init)
    degraded = tr.train(cfg, tmp_path / "degraded").read_bytes()
    assert degraded != tr.train(tiny_config(steps=12, **init), tmp_path / "clean").read_bytes()
    tr.train(cfg, tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    assert tr.train(cfg, tmp_path / "part", resume=True).read_bytes() == degraded


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    tr.train(tiny_config(steps=4), tmp_path / "run")
    with pytest.raises(tr.TrainConfigError, match="--resume"):
        tr.train(tiny_config(steps=4), tmp_path / "run")


def test_resume_with_a_different_config_is_refused(tmp_path):
    tr.train(tiny_config(steps=4), tmp_path / "run")
    with pytest.raises(tr.TrainConfigError, match="lr"):
        tr.train(tiny_config(steps=8, lr=1e-2), tmp_path / "run", resume=True)


def test_resume_from_a_middle_checkpoint_matches(tmp_path):
    full = tr.train(tiny_config(steps=12), tmp_path / "full").read_bytes()
    tr.train(tiny_config(steps=12), tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    assert tr.train(tiny_config(steps=12), tmp_path / "part", resume=True).read_bytes() == full


def test_a_bfloat16_run_is_seeded_resumable_and_its_own(tmp_path):
    """bfloat16 steps (TrainConfig.precision) give other weights than float32's, the same ones on every run, and
    a resume from a middle checkpoint gives them too; the weights' own eval precision is untouched."""
    cfg = tiny_config(steps=12, precision="bfloat16")
    fast = tr.train(cfg, tmp_path / "full")
    assert fast.read_bytes() == tr.train(cfg, tmp_path / "again").read_bytes()
    assert fast.read_bytes() != tr.train(tiny_config(steps=12), tmp_path / "float32").read_bytes()
    tr.train(cfg, tmp_path / "part")
    _as_if_stopped_at_the_first_checkpoint(tmp_path / "part")
    assert tr.train(cfg, tmp_path / "part", resume=True).read_bytes() == fast.read_bytes()
    assert ckpt.load_segmenter(fast)[0].config.precision == "float32"
    with pytest.raises(tr.TrainConfigError, match="precision"):
        tr.train(tiny_config(steps=4, precision="float16"), tmp_path / "bad")


def test_only_the_last_checkpoints_are_kept(tmp_path):
    tr.train(tiny_config(steps=12), tmp_path / "run")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["ckpt_000008.pt", "ckpt_000012.pt"]


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    expected = tr.train(tiny_config(steps=60), tmp_path / "full").read_bytes()  # in-process: saves a start
    cfg = _write_config(tmp_path, tiny_config(steps=60))
    killed = _cli([], cfg, tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed").glob("ckpt_*.pt.sha256")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before exit/timeout"
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert not (tmp_path / "killed" / "segmenter.pt").exists(), "run finished before the kill"
    resumed = _cli(["--resume", "--export", str(tmp_path / "export.pt")], cfg, tmp_path / "killed")
    log = resumed.communicate(timeout=120)[0].decode()
    assert resumed.returncode == 0, log
    assert "resuming from ckpt_" in log
    assert (tmp_path / "killed" / "segmenter.pt").read_bytes() == expected
    assert (tmp_path / "export.pt").read_bytes() == expected


def test_progress_lines_report_rate_and_eta(tmp_path, caplog):
    caplog.set_level("INFO", logger="digitiser.train")
    tr.train(tiny_config(steps=10, log_every=5), tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert len(lines) == 2 and "step 5/10 loss" in lines[0] and "ETA" in lines[0]


def test_cli_resume_without_config_uses_the_run_folder_config(tmp_path):
    final = tr.train(tiny_config(steps=4), tmp_path / "run")
    before = final.read_bytes()
    args = ["train", "--out", str(tmp_path / "run"), "--resume", "--export", str(tmp_path / "w.pt")]
    assert cli_main(args) == 0
    assert final.read_bytes() == before == (tmp_path / "w.pt").read_bytes()


def test_cli_reports_a_bad_config_with_exit_code_2(tmp_path, caplog):
    (tmp_path / "cfg.json").write_text(json.dumps({"stpes": 4}))
    args = ["train", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "run")]
    assert cli_main(args) == 2
    assert "stpes" in caplog.text
