"""Seeded, resumable training of the segmenter on synthetic scans.

Determinism: the batch for step s is a pure function of (config, s): scans come from the synthetic generator
with seeds drawn from `default_rng([seed, 0, s // scan_reuse])`, crops from `default_rng([seed, 1, s])`.
There is no data-loader state, so a checkpoint (weights, optimiser, RNG states, step) is all that a resume
needs, and a run killed at any point and resumed ends with the same weights, byte for byte, as an
uninterrupted one (CPU, same `threads`; torch deterministic algorithms on).

Run folder: config.json (the TrainConfig), ckpt_NNNNNN.pt + .sha256 (the last `keep_checkpoints`),
segmenter.pt + segmenter.pt.json (final shipped weights, see checkpoint.save_weights).
"""
import copy
import dataclasses
import importlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic

from contracts.files import atomic_write
from digitiser import checkpoint as ckpt
from digitiser.model import PRECISIONS, Segmenter, SegmenterConfig, autocast
from digitiser.predictor import ink_planes

log = logging.getLogger(__name__)

# Config fields that may differ between a run and its resume without changing the result.
_RESUME_MUTABLE = {"log_every", "eval_every"}


class TrainConfigError(ValueError):
    """The training config or run folder is not usable as asked (unknown field, resume mismatch, ...)."""


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 2800                       # ~40 min on this 2-core CPU at ~1.2 steps/s
    batch_size: int = 16
    crop: tuple[int, int] = (256, 128)      # (height, width) px of training crops; multiples of 2 ** levels
    lr: float = 3e-3                        # AdamW peak; linear warmup then cosine decay to lr * min_lr_frac
    min_lr_frac: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ce_weights: tuple[float, float, float] = (1.0, 5.0, 5.0)  # background, solid, dashed
    dice_weight: float = 1.0                # soft Dice on the two curve classes, added to the CE
    # CE weight of the ink of a line that is neither curve (a generator's third line: labelled background).
    # None: the background's. With (1, 5, 5) a pixel the model cannot tell apart from curve 2 is best read as
    # curve 2 at p = 5/6, so nothing pushes it to learn the difference; 5 makes such an error cost as much.
    distractor_weight: float | None = None
    p_crossing: float = 0.3                 # chance a crop is centred where the two curves meet
    p_curve: float = 0.5                    # ... else on a curve pixel; otherwise anywhere
    # ... else (drawn after the two above) on a curve pixel at the track edge: a curve pinned off-scale
    # along the edge overlaps the track border, rare and easily read as background (MODEL_CARD.md)
    p_edge: float = 0.0
    data_source: str = "digitiser.synth:render_scan"  # "module:function" with synth.render_scan's signature
    data_seeds: tuple[int, int] = (0, 1_000_000)       # training scan seeds are drawn from [lo, hi)
    scan_size: tuple[int, int] | None = None           # (h, w) of rendered scans; None = the generator's sizes
    scans_per_step: int = 4                 # distinct scans in a batch
    scan_reuse: int = 4                     # consecutive steps that crop the same scans (rendering is slow)
    eval_seeds: tuple[int, int] = (10_000_000, 10_000_008)  # held-out scans for per-class IoU, disjoint
    eval_every: int = 400                   # steps between held-out IoU logs; 0 = only at the end
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 25
    # torch CPU threads. Weights are reproducible for a fixed count only. 1, not 2: on a shared 2-core box
    # a busy neighbour makes 2 OpenMP threads ~3x slower than 1 (threads spin at every barrier).
    threads: int = 1
    device: str = "cpu"
    # The training steps' arithmetic: "bfloat16" runs the model's convs in bfloat16 (torch autocast; float32
    # weights, optimiser and loss): 1.7x the steps/s on a CPU with AVX-512 BF16 (MODEL_CARD.md, "bfloat16").
    # How the trained weights are read in eval is their own `model.precision`.
    precision: str = "float32"
    model: SegmenterConfig = field(default_factory=SegmenterConfig)
    # Fine-tuning: start from these exported weights (their model config must equal `model`) instead of a
    # seeded init. The sha256 pins the file, so the config still names exactly one result.
    init_weights: str | None = None
    init_sha256: str | None = None
    # ... and keep what they read right: where the init weights' own reading of a training pixel is its label,
    # add anchor_weight x the KL divergence of this model's class probabilities from theirs (0 = off). Every CPU
    # fine-tune without it lost curve 1 while learning its new data (MODEL_CARD.md, stages 10-14). Scale: the
    # mean KL over nearly all pixels of a crop is ~1e-3 after such a fine-tune, so 100 weighs it like the loss.
    anchor_weight: float = 0.0
    # ... except within this many pixels of a curve-2 label (0 = off), where later data teaches new line styles.
    # Measured: it barely frees them; the anchor holds through the shared weights (MODEL_CARD.md, stages 42-45).
    anchor_free_radius: int = 0
    # ... and anchor to the mean class probabilities of these frozen weights, [path, sha256] pairs (each read as
    # its own config says, mirror averaging included), instead of to the init weights': several readers
    # distilled into one network of the init's size (MODEL_CARD.md, "Distillation"). () = the init weights.
    anchor_from: tuple[tuple[str, str], ...] = ()
    # Chance that the model reads a crop degraded (`degrade`: ink lighter or darker, grey paper, blur, noise, JPEG)
    # while the anchor reads it clean: its target is what the anchor reads on the clean scan. 0 = off.
    p_degrade: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a JSON-style dict (lists for tuples, a dict for `model`); unknown keys are errors."""
        _check_keys(d, cls, "TrainConfig")
        d = dict(d)
        model = d.pop("model", {})
        _check_keys(model, SegmenterConfig, "TrainConfig.model")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        d["anchor_from"] = tuple(tuple(pair) for pair in d.get("anchor_from", ()))
        return cls(**d, model=SegmenterConfig(**model))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _check_keys(d: dict, cls, what: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise TrainConfigError(f"unknown {what} field(s) {sorted(unknown)}; valid: {sorted(names)}")


# ----------------------------------------------------------------------------- data

def resolve_source(spec: str):
    """'package.module:function' -> the function (called as f(seed, height=, width=) -> SynthScan-like)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise TrainConfigError(f"data_source {spec!r} is not an importable 'module:function' ({e})") from e


class ScanCache:
    """Renders scans and remembers the last few: one scan serves `scan_reuse` consecutive steps."""

    def __init__(self, render, scan_size, capacity: int, channels: int = 1, distractors: bool = False):
        self.render, self.scan_size, self.capacity, self.items = render, scan_size, capacity, {}
        self.channels, self.distractors = channels, distractors

    def get(self, seed: int) -> dict:
        """-> {"ink": CxHxW float32 in [0, 1] (1 = ink; C the model's input channels), "mask": HxW uint8
        (with `distractors`, DISTRACTOR on the ink of the scan's third line),
        "curve": (n, 2) rows/cols of curve pixels, "cross": (m, 2) rows/cols within 3 px of both curves,
        "edge": (k, 2) rows/cols of curve pixels in the two outermost columns on either side}."""
        if seed not in self.items:
            h, w = self.scan_size or (None, None)
            scan = self.render(seed, height=h, width=w)
            ink = ink_planes(scan.image, self.channels)
            mask = np.asarray(scan.mask, np.uint8)
            assert ink.shape[1:] == mask.shape, f"scan {seed}: image {ink.shape[1:]} vs mask {mask.shape}"
            k = np.ones((7, 7), np.uint8)
            cross = cv2.dilate((mask == 1).astype(np.uint8), k) & cv2.dilate((mask == 2).astype(np.uint8), k)
            curve = np.argwhere(mask > 0)
            if self.distractors and getattr(scan, "third", None) is not None:
                mask = mask.copy()
                mask[distractor_pixels(ink, mask, scan.third)] = DISTRACTOR
            edge = curve[(curve[:, 1] < 2) | (curve[:, 1] >= mask.shape[1] - 2)]
            if len(self.items) >= self.capacity:
                self.items.pop(next(iter(self.items)))
            self.items[seed] = {"ink": ink, "mask": mask,
                                "curve": curve, "cross": np.argwhere(cross > 0), "edge": edge}
        return self.items[seed]


DISTRACTOR = 3   # a training label, never a class: background ink of a line that is neither curve


def distractor_pixels(ink: np.ndarray, mask: np.ndarray, centreline: np.ndarray) -> np.ndarray:
    """HxW bool: the ink within 2 px of a third line's centreline (one column per row) that is not a curve's."""
    h, w = mask.shape
    near = np.zeros((h, w), np.uint8)
    pts = np.stack([np.clip(centreline, -1, w) * 16, np.arange(h) * 16], 1).round().astype(np.int32)
    cv2.polylines(near, [pts[:, None]], False, 1, thickness=5, shift=4)   # 1/16 px: sub-pixel centreline
    darkness = ink.max(0)
    return (near > 0) & (mask == 0) & (darkness > np.median(darkness) + 0.08)


def _crop(scan: dict, crop: tuple[int, int], rng, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """One (ch, cw) crop of ink and mask, centred on a crossing / curve pixel / edge pixel / anywhere; scans
    smaller than the crop are padded with blank paper (ink 0, class 0)."""
    ch, cw = crop
    h, w = scan["mask"].shape
    u = rng.random()
    cuts = np.cumsum([cfg.p_crossing, cfg.p_curve, cfg.p_edge])
    pool = next((scan[k] for k, cut in zip(("cross", "curve", "edge"), cuts) if u < cut), None)
    if pool is not None and len(pool):
        cy, cx = pool[rng.integers(len(pool))]
        y0 = int(cy) - ch // 2 + int(rng.integers(-ch // 4, ch // 4 + 1))
        x0 = int(cx) - cw // 2 + int(rng.integers(-cw // 4, cw // 4 + 1))
    else:
        y0, x0 = int(rng.integers(0, max(h - ch, 0) + 1)), int(rng.integers(0, max(w - cw, 0) + 1))
    y0, x0 = min(max(y0, 0), max(h - ch, 0)), min(max(x0, 0), max(w - cw, 0))
    ink = np.zeros((len(scan["ink"]), *crop), np.float32)
    mask = np.zeros(crop, np.uint8)
    part = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    ph, pw = scan["mask"][part].shape
    ink[:, :ph, :pw], mask[:ph, :pw] = scan["ink"][(slice(None), *part)], scan["mask"][part]
    if rng.random() < 0.5:  # flips keep line style (solid vs dashed) intact
        ink, mask = ink[:, :, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        ink, mask = ink[:, ::-1], mask[::-1]
    return ink, mask


def make_batch(cfg: TrainConfig, step: int, cache: ScanCache) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch for `step`, a pure function of (cfg, step). -> x (B, C, ch, cw) float32, y (B, ch, cw) int64."""
    group_rng = np.random.default_rng([cfg.seed, 0, step // cfg.scan_reuse])
    seeds = group_rng.integers(cfg.data_seeds[0], cfg.data_seeds[1], size=cfg.scans_per_step)
    rng = np.random.default_rng([cfg.seed, 1, step])
    pairs = [_crop(cache.get(int(seeds[i % len(seeds)])), cfg.crop, rng, cfg) for i in range(cfg.batch_size)]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return x, y


def batches(cfg: TrainConfig, start: int, workers: int = 0):
    """Yields make_batch(cfg, s) for s = start .. cfg.steps - 1. With workers > 0 the batches are made ahead
    in that many processes, one group of `scan_reuse` steps (which share their scans) per task, at most two
    tasks per worker in flight: the same bytes, since a batch is a pure function of (cfg, step). One process
    makes ~20 batches/s (bench/training_data.py): plenty for a CPU, fewer than a GPU can train on."""
    groups = _step_groups(start, cfg.steps, cfg.scan_reuse)
    made = _made_ahead(cfg, groups, workers) if workers > 0 else (_group_batches(cfg, *g) for g in groups)
    for group in made:
        yield from ((torch.from_numpy(x), torch.from_numpy(y)) for x, y in group)


def _step_groups(start: int, steps: int, reuse: int) -> list[tuple[int, int]]:
    """[first, stop) step ranges cut at multiples of `reuse` (a resume may start mid-group)."""
    cuts = [start, *range((start // reuse + 1) * reuse, steps, reuse), steps]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if a < b]


def _group_batches(cfg: TrainConfig, first: int, stop: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Batches of steps [first, stop), one group: its scans are rendered once. numpy, to pass between processes."""
    cache = ScanCache(resolve_source(cfg.data_source), cfg.scan_size, capacity=cfg.scans_per_step,
                      channels=cfg.model.in_channels, distractors=cfg.distractor_weight is not None)
    return [tuple(t.numpy() for t in make_batch(cfg, s, cache)) for s in range(first, stop)]


def _made_ahead(cfg: TrainConfig, groups, workers: int):
    """_group_batches of each group in order, computed by `workers` spawned processes, 2 tasks each ahead."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_data_worker_init)
    try:
        todo = iter(groups)
        pending = deque(pool.submit(_group_batches, cfg, *g) for g in itertools.islice(todo, 2 * workers))
        while pending:
            done = pending.popleft().result()
            if (group := next(todo, None)) is not None:
                pending.append(pool.submit(_group_batches, cfg, *group))
            yield done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _data_worker_init() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def degrade(x: np.ndarray, step_rng, p: float) -> np.ndarray:
    """x (B, C, h, w) ink in [0, 1], each crop with chance p as a worse scan of the same page would show it:
    ink lighter or darker (gamma, scale), grey paper, blur, noise, JPEG; parameters drawn per crop. Labels hold."""
    out = x.copy()
    for i in np.flatnonzero(step_rng.random(len(x)) < p):
        c = x[i] ** step_rng.uniform(0.7, 1.4) * step_rng.uniform(0.5, 1.0)
        c = c + step_rng.uniform(0.0, 0.12) * (1 - c)
        if step_rng.random() < 0.5:
            sigma = step_rng.uniform(0.3, 1.0)
            c = np.stack([cv2.GaussianBlur(plane, (0, 0), sigma) for plane in c])
        c = c + step_rng.normal(0.0, step_rng.uniform(0.0, 0.04), c.shape)
        if step_rng.random() < 0.4:
            c = np.stack([_jpeg(plane, int(step_rng.integers(30, 91))) for plane in c])
        out[i] = np.clip(c, 0, 1)
    return out


def _jpeg(plane: np.ndarray, quality: int) -> np.ndarray:
    """One ink plane through a JPEG of the grey image it stands for, and read back as the segmenter reads ink."""
    gray = np.clip(255 - plane * 255, 0, 255).round().astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "cv2 could not JPEG-encode a crop"
    return ink_planes(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE), 1)[0]


# ----------------------------------------------------------------------------- loss and schedule

def seg_loss(logits: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Class-weighted cross-entropy + soft Dice over classes 1 and 2. logits (B, 3, h, w), y (B, h, w) labels:
    the classes, or DISTRACTOR (background, weighted by cfg.distractor_weight)."""
    if cfg.distractor_weight is None and not logits.is_cuda:
        # torch's own reduction, so the recipes before distractor_weight reproduce byte for byte (CUDA's reducing
        # nll_loss2d has no deterministic kernel)
        weight = torch.tensor(cfg.ce_weights, dtype=logits.dtype, device=logits.device)
        ce = F.cross_entropy(logits, y, weight=weight)
    else:
        distractor = cfg.ce_weights[0] if cfg.distractor_weight is None else cfg.distractor_weight
        ce = weighted_ce(logits, y, torch.tensor([*cfg.ce_weights, distractor], dtype=logits.dtype,
                                                 device=logits.device))
    y = background(y)
    probs = logits.softmax(1)[:, 1:]                                     # (B, 2, h, w)
    onehot = torch.stack([y == 1, y == 2], 1).to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    dice = 1 - (2 * inter + 1) / (probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    return ce + cfg.dice_weight * dice.mean()


def anchor_loss(logits: torch.Tensor, anchor_logits: torch.Tensor, y: torch.Tensor,
                free_radius: int = 0) -> torch.Tensor:
    """Mean KL(anchor || model) over the pixels the anchor (the init weights, frozen) classifies as labelled,
    less those within free_radius pixels (a square) of a curve-2 label."""
    kept = anchor_logits.argmax(1) == y                                             # (B, h, w)
    if free_radius > 0:
        near_curve_2 = F.max_pool2d((y == 2).to(logits.dtype)[:, None], 2 * free_radius + 1, 1, free_radius)[:, 0]
        kept &= near_curve_2 == 0
    kept = kept.to(logits.dtype)
    kl = (anchor_logits.softmax(1) * (anchor_logits.log_softmax(1) - logits.log_softmax(1))).sum(1)
    return (kl * kept).sum() / kept.sum().clamp(min=1.0)


def weighted_ce(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(logits, y, weight=weight), reduced with deterministic ops (per-pixel loss, then sums);
    a DISTRACTOR label weighs weight[DISTRACTOR] and is read as background."""
    w = weight[y]
    return (F.cross_entropy(logits, background(y), reduction="none") * w).sum() / w.sum()


def background(y: torch.Tensor) -> torch.Tensor:
    """Labels as classes: DISTRACTOR pixels are background."""
    return y.masked_fill(y == DISTRACTOR, 0)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def heldout_scores(model: Segmenter, seeds, cache: ScanCache, device="cpu") -> tuple[np.ndarray, float | None]:
    """Per-class IoU (3,) float64 over whole held-out scans (zero-padded to the model's multiple), and the
    share of their third lines' ink (DISTRACTOR labels, with a `distractors` cache) read as a curve: None
    where the scans have none. The third line is background for the IoU."""
    was_training = model.training
    model.eval()
    inter, union, third, third_as_curve = np.zeros(3), np.zeros(3), 0, 0
    m = model.config.multiple
    for seed in seeds:
        scan = cache.get(int(seed))
        h, w = scan["mask"].shape
        x = np.zeros((len(scan["ink"]), -(-h // m) * m, -(-w // m) * m), np.float32)
        x[:, :h, :w] = scan["ink"]
        pred = model(torch.from_numpy(x)[None].to(device)).argmax(1)[0, :h, :w].cpu().numpy()
        on_third = scan["mask"] == DISTRACTOR
        third, third_as_curve = third + on_third.sum(), third_as_curve + (pred[on_third] > 0).sum()
        mask = np.where(on_third, 0, scan["mask"])
        for c in range(3):
            inter[c] += np.sum((pred == c) & (mask == c))
            union[c] += np.sum((pred == c) | (mask == c))
    model.train(was_training)
    return inter / np.maximum(union, 1), (third_as_curve / third if third else None)


# ----------------------------------------------------------------------------- training

def _setup_determinism(cfg: TrainConfig) -> torch.device:
    if cfg.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainConfigError(f"device {cfg.device!r} asked for but CUDA is not available; use 'cpu'")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    # By default deterministic mode also NaN-fills every new tensor: a third of a CPU training step here.
    # Our ops never read uninitialised memory, so results are the same without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
    return torch.device(cfg.device)


def _check_resume_config(saved: dict, cfg: TrainConfig, path) -> None:
    new, defaults = cfg.to_dict(), TrainConfig().to_dict()
    # a field added since the checkpoint was written had its default then
    saved = {**defaults, **saved, "model": {**defaults["model"], **saved.get("model", {})}}
    diff = {k: (saved.get(k), new[k]) for k in new if saved.get(k) != new[k] and k not in _RESUME_MUTABLE}
    if diff:
        raise TrainConfigError(f"--resume with a config that differs from the one in {path}: "
                               f"{ {k: f'{a!r} -> {b!r}' for k, (a, b) in diff.items()} }; "
                               f"resume without --config, or start a new --out folder")


def train(config: TrainConfig, out_dir, resume: bool = False, data_workers: int = 0) -> Path:
    """Train (or continue training) into run folder `out_dir`. Returns the final weights path
    (`out_dir/segmenter.pt`, written with checkpoint.save_weights). Sets process-global torch state:
    thread count and deterministic algorithms (meant for a process of its own, like `digitise train`).
    `data_workers` renders batches ahead in other processes (see `batches`): it changes speed, not weights."""
    cfg, out = config, Path(out_dir)
    m = cfg.model.multiple
    if cfg.crop[0] % m or cfg.crop[1] % m:
        raise TrainConfigError(f"crop {cfg.crop} must be multiples of 2 ** levels = {m}")
    if cfg.precision not in PRECISIONS:
        raise TrainConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {cfg.precision!r}")
    existing = ckpt.list_checkpoints(out) if out.exists() else []
    if existing and not resume:
        raise TrainConfigError(f"{out} already holds checkpoints (last {existing[-1].name}); "
                               f"pass --resume to continue, or choose a new --out folder")
    device = _setup_determinism(cfg)
    torch.manual_seed(cfg.seed)
    # a resume takes the weights from its checkpoint: the init file is read (and must exist) only at the start,
    # and on a resume only when the run is anchored to it
    model = (Segmenter(cfg.model) if existing else _initial_model(cfg)).to(device)
    if cfg.init_weights is not None and not existing:
        log.info("fine-tuning from %s (model version %s)", cfg.init_weights, cfg.init_sha256[:12])
    anchor = _anchor_model(cfg, device, start=None if existing else model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if existing:
        state = ckpt.load_training_checkpoint(existing[-1])
        _check_resume_config(state["train_config"], cfg, existing[-1])
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ckpt.restore_rng(state["rng"])
        start = state["step"]
        log.info("resuming from %s at step %d/%d", existing[-1].name, start, cfg.steps)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.json", (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())
    eval_cache = ScanCache(resolve_source(cfg.data_source), cfg.scan_size, channels=cfg.model.in_channels,
                           capacity=cfg.eval_seeds[1] - cfg.eval_seeds[0], distractors=True)
    log.info("training %d-param segmenter for %d steps (batch %d, crop %s) on %s, %s",
             model.num_params(), cfg.steps, cfg.batch_size, cfg.crop, device,
             f"{data_workers} data workers" if data_workers > 0 else "batches made in-process")
    model.train()
    t0, loss_sum, anchor_sum, n_loss = time.monotonic(), 0.0, 0.0, 0
    for step, (x, y) in enumerate(batches(cfg, start, data_workers), start=start):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        seen = x
        if cfg.p_degrade > 0:
            seen = torch.from_numpy(degrade(x.numpy(), np.random.default_rng([cfg.seed, 2, step]), cfg.p_degrade))
        x, seen, y = x.to(device), seen.to(device), y.to(device)
        with autocast(device.type, cfg.precision):
            logits = model(seen).float()
        loss = seg_loss(logits, y, cfg)
        if anchor is not None:
            with torch.no_grad():
                anchor_logits = anchor(x)
            held = cfg.anchor_weight * anchor_loss(logits, anchor_logits, background(y), cfg.anchor_free_radius)
            loss = loss + held
            anchor_sum += held.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        done = step + 1
        loss_sum, n_loss = loss_sum + loss.item(), n_loss + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rate = (done - start) / (time.monotonic() - t0)
            of_it = f" (anchor {anchor_sum / n_loss:.4f})" if anchor is not None else ""
            log.info("step %d/%d loss %.4f%s lr %.2e %.2f steps/s ETA %s", done, cfg.steps, loss_sum / n_loss, of_it,
                     lr_at(step, cfg), rate, _hms((cfg.steps - done) / rate))
            loss_sum, anchor_sum, n_loss = 0.0, 0.0, 0
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            _log_heldout(model, cfg, eval_cache, device, done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            state = {"step": done, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "rng": ckpt.capture_rng(), "train_config": cfg.to_dict(),
                     "model_config": dataclasses.asdict(cfg.model)}
            ckpt.save_training_checkpoint(ckpt.checkpoint_path(out, done), state)
            ckpt.prune_checkpoints(out, cfg.keep_checkpoints)
    _log_heldout(model, cfg, eval_cache, device, cfg.steps)
    final = out / "segmenter.pt"
    ckpt.save_weights(model, cfg.model, final)
    return final


def _initial_model(cfg: TrainConfig) -> Segmenter:
    if cfg.init_weights is None:
        return Segmenter(cfg.model)
    if not cfg.init_sha256:
        raise TrainConfigError("init_weights needs init_sha256 (the model version it starts from)")
    model = _pinned(cfg.init_weights, cfg.init_sha256, "init_weights")
    if model.config != cfg.model:
        raise TrainConfigError(f"init_weights {cfg.init_weights} is a {model.config}, the config asks {cfg.model}")
    return model.train()


def _pinned(path: str, sha256: str, what: str) -> Segmenter:
    model, version = ckpt.load_segmenter(path)
    if version != sha256:
        raise TrainConfigError(f"{what} {path} has model version {version}, the config pins {sha256}")
    return model


class MeanReader(torch.nn.Module):
    """Several segmenters as one: the log of their mean class probabilities (softmax gives the mean back)."""

    def __init__(self, models: list[Segmenter]):
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = sum(m(x).softmax(1) for m in self.models) / len(self.models)
        return mean.clamp_min(1e-30).log()


def _anchor_model(cfg: TrainConfig, device, start: Segmenter | None) -> torch.nn.Module | None:
    """The frozen reader that anchor_weight holds the model to, in eval mode: the anchor_from weights' mean, or
    the init weights: a copy of `start` (the model as a fresh run begins), or read again on a resume."""
    if cfg.anchor_weight <= 0:
        return None
    if cfg.anchor_from:
        anchor = MeanReader([_pinned(path, sha, "anchor_from") for path, sha in cfg.anchor_from])
        names = ", ".join(path for path, _ in cfg.anchor_from)
    elif cfg.init_weights is None:
        raise TrainConfigError("anchor_weight needs init_weights or anchor_from (the readings it keeps)")
    else:
        anchor, names = copy.deepcopy(start) if start is not None else _initial_model(cfg), cfg.init_weights
    anchor = anchor.to(device).eval()
    for p in anchor.parameters():
        p.requires_grad_(False)
    log.info("anchored to the right readings of %s (anchor_weight %g)", names, cfg.anchor_weight)
    return anchor


def _log_heldout(model, cfg, cache, device, step) -> np.ndarray:
    if cfg.eval_seeds[1] <= cfg.eval_seeds[0]:
        return np.zeros(3)
    iou, third = heldout_scores(model, range(*cfg.eval_seeds), cache, device)
    of_third = f"; third-line ink read as a curve {third:.1%}" if third is not None else ""
    log.info("step %d held-out IoU background %.3f solid %.3f dashed %.3f%s", step, *iou, of_third)
    return iou


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def load_config(path) -> TrainConfig:
    """A TrainConfig from a JSON recipe: TrainConfig fields, and optionally `"extends": "other.json"` (a path
    relative to this file) whose fields it overrides (`model` field by field). See training/recipes/."""
    try:
        return TrainConfig.from_dict(_recipe(Path(path), ()))
    except (OSError, ValueError, TypeError) as e:
        raise TrainConfigError(f"cannot read train config {path}: {e}") from e


def _recipe(path: Path, seen: tuple) -> dict:
    if path.resolve() in seen:
        raise ValueError(f"recipes extend each other in a loop: {[str(p) for p in seen]}")
    d = json.loads(path.read_text())
    parent = d.pop("extends", None)
    if parent is None:
        return d
    base = _recipe(path.parent / parent, (*seen, path.resolve()))
    model = {**base.get("model", {}), **d.pop("model", {})}
    return {**base, **d, **({"model": model} if model else {})}


def run(out: str | Path, config: TrainConfig | None = None, resume: bool = False, data_workers: int = 0,
        export: str | Path | None = None) -> Path:
    """`digitise train`: train into the run folder `out` and return the final checkpoint; with `export`, also
    write the final weights (+ sidecar) there. config None: the run folder's config.json when resuming, else
    TrainConfig(). Raises TrainConfigError or CheckpointError."""
    out = Path(out)
    if config is None:
        config = load_config(out / "config.json") if resume and (out / "config.json").exists() else TrainConfig()
    final = train(config, out, resume=resume, data_workers=data_workers)
    if export:
        model, version = ckpt.load_segmenter(final)
        ckpt.save_weights(model, model.config, export)
        log.info("exported %s (model version %s)", export, version)
    return final
