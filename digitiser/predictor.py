"""The digitiser: scan pixels in, `contracts.Digitisation` out. Both routes call exactly this.

Segmentation runs on fixed-size tiles in fixed-size chunks, so every forward pass has the same shape
whatever the batch holds: a scan's probabilities are then bit-identical whether it was segmented alone or
among 15 others (per-sample conv arithmetic does not depend on batch mates), which is what lets the online
and offline routes write byte-identical objects. The tile policy, for any input size:

  pad the scan by `margin` px of blank paper on every side, cut it into `tile_h x tile_w` tiles at a stride of
  (tile - 2*margin), run the model on chunks of `chunk` tiles (the last chunk padded with blank tiles), and
  keep each tile's centre. Output: class probabilities at the scan's own resolution.

On a CPU each forward pass runs on one torch thread, and a segmenter with several CPUs runs that many chunks
side by side: torch's own intra-op threads split a conv's reductions differently for each thread count, so the
probabilities (and then the traced curves) would depend on how many CPUs a replica or actor reserved.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

import contracts
from digitiser.checkpoint import load_segmenter
from digitiser.imageio import DecodedScan
from digitiser.result import build_result
from digitiser.tracing import TracingParams


DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "segmenter.pt"
MAX_BATCH = 16


def ink_planes(image: np.ndarray, channels: int) -> np.ndarray:
    """What the segmenter reads: (channels, H, W) float32 ink, high where ink is, 0 on white paper. image: HxW
    grey or HxWx3 BGR uint8. A grey model reads colour through cv2's grey; a colour model (3 channels, B, G, R)
    reads a grey image as three equal planes."""
    if channels == 1:
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return (1.0 - gray.astype(np.float32) / 255.0)[None]
    assert channels == 3, f"a segmenter reads 1 (grey) or 3 (BGR) channels, not {channels}"
    planes = image.transpose(2, 0, 1) if image.ndim == 3 else np.broadcast_to(image, (3, *image.shape))
    return 1.0 - planes.astype(np.float32) / 255.0


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic: a CPU without AVX-512 BF16 or AMX emulates it, 1.6x slower than
    float32 with AVX-512 and 7x with AVX2 alone (measured with ONEDNN_MAX_CPU_ISA); a GPU before Ampere too."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


@dataclass(frozen=True)
class TilePolicy:
    tile_h: int = 576
    tile_w: int = 384
    margin: int = 32      # context kept around each tile's centre; seams never see a cut stroke's end
    chunk: int | None = None   # tiles per forward pass, fixed per device so the pass shape never changes;
    # None: 1 on a CPU, where a tile's pass costs a third less alone than among 8 (whose activations, 56 MB a
    # tensor at full resolution, leave the caches) and a lone scan pays for no blank tiles; 8 on a GPU


class Digitiser:
    """Owns the segmenter (device, no-grad, tiling) and tracing. Thread-compatible, not thread-safe."""

    def __init__(self, weights=None, device: str | None = None, tracing: TracingParams = TracingParams(),
                 tiles: TilePolicy = TilePolicy(), threads: int | None = None):
        """threads: forward passes side by side on a CPU (default: torch's thread count, which Ray sets to the
        CPUs a worker reserved); sets torch's own thread count to 1 in this process (see the module doc)."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for (num_gpus > 0 chooses it), but torch {torch.__version__} "
                               "sees no CUDA device here: give this node a GPU, or set device 'cpu'")
        self.model, self.model_version = load_segmenter(weights or DEFAULT_WEIGHTS, device)
        self.device, self.tracing = torch.device(device), tracing
        self.tiles = replace(tiles, chunk=tiles.chunk or (1 if self.device.type == "cpu" else 8))
        self.threads = 1 if self.device.type != "cpu" else (threads or torch.get_num_threads())
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        self._passes = ThreadPoolExecutor(self.threads, "forward") if self.threads > 1 else None
        m = self.model.config.multiple
        assert tiles.tile_h % m == 0 and tiles.tile_w % m == 0, f"tiles must be multiples of {m}"
        # where the device only emulates bfloat16 kernels (2x float32's time on an AVX-512 CPU without BF16 or
        # AMX), the same bfloat16 arithmetic runs on float32 kernels instead (`model.conv2d`)
        self.model.bfloat16_kernels = native_bfloat16(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False  # the same algorithm every time
            torch.backends.cudnn.deterministic = True

    @property
    def arithmetic(self) -> str:
        """How the segmenter computes here: "float32", "bfloat16", or "bfloat16 on float32 kernels"."""
        return "bfloat16 on float32 kernels" if self.model.bfloat16_on_float32_kernels else self.model.config.precision

    @property
    def reads_colour(self) -> bool:
        return self.model.config.in_channels == 3

    def pixels(self, scan: DecodedScan) -> np.ndarray:
        """The pixels of `scan` this segmenter reads: a grey model the decoder's grey, a colour model the colour."""
        return scan.pixels if self.reads_colour else scan.gray

    def segment_scans(self, scans: list[DecodedScan]) -> list[np.ndarray]:
        """`segment` of the pixels each decoded scan offers this segmenter (`pixels`)."""
        return self.segment([self.pixels(scan) for scan in scans])

    def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Batched forward over up to 16 scans. images: HxW grey or HxWx3 BGR uint8 (ink dark). Returns per scan
        (3, H, W) float32 class probabilities at the scan's resolution."""
        assert len(images) <= MAX_BATCH, f"at most {MAX_BATCH} scans per batch, got {len(images)}"
        tiles, places = [], []
        for i, image in enumerate(images):
            for y, x, tile in self._tiles(image):
                tiles.append(tile)
                places.append((i, y, x))
        out = [np.zeros((3, *g.shape[:2]), np.float32) for g in images]
        t, c, m = self.tiles, self.tiles.chunk, self.tiles.margin
        chunks = [tiles[start:start + c] for start in range(0, len(tiles), c)]
        passes = self._passes.map(self._forward, chunks) if self._passes else map(self._forward, chunks)
        for start, probs in zip(range(0, len(tiles), c), passes):
            for (i, y, x), p in zip(places[start:start + c], probs):
                h = min(t.tile_h - 2 * m, out[i].shape[1] - y)
                w = min(t.tile_w - 2 * m, out[i].shape[2] - x)
                out[i][:, y:y + h, x:x + w] = p[:, m:m + h, m:m + w]
        return out

    def _tiles(self, image: np.ndarray):
        """Yield (y, x, tile) with (y, x) the top-left of the tile's kept centre in scan pixels."""
        t, m = self.tiles, self.tiles.margin
        ink = ink_planes(image, self.model.config.in_channels)   # the model sees ink as high, paper as 0
        step_h, step_w = t.tile_h - 2 * m, t.tile_w - 2 * m
        rows, cols = -(-ink.shape[1] // step_h), -(-ink.shape[2] // step_w)
        padded = np.zeros((len(ink), rows * step_h + 2 * m, cols * step_w + 2 * m), np.float32)
        padded[:, m:m + ink.shape[1], m:m + ink.shape[2]] = ink
        for r in range(rows):
            for c in range(cols):
                y, x = r * step_h, c * step_w
                yield y, x, padded[:, y:y + t.tile_h, x:x + t.tile_w]

    @torch.no_grad()
    def _forward(self, tiles: list[np.ndarray]) -> np.ndarray:
        t = self.tiles
        channels = self.model.config.in_channels
        batch = np.zeros((t.chunk, channels, t.tile_h, t.tile_w), np.float32)  # blank tiles pad the last chunk
        batch[:len(tiles)] = tiles
        logits = self.model(torch.from_numpy(batch).to(self.device))
        return torch.softmax(logits.float(), dim=1)[:len(tiles)].cpu().numpy()

    def finish(self, scan: DecodedScan, calibration: contracts.Calibration, probs: np.ndarray,
               tracing: TracingParams | None = None) -> contracts.Digitisation:
        """Trace both curves and build the result (`build_result` with this digitiser's model and its tracing,
        or `tracing` where given)."""
        return build_result(scan, calibration, probs, model_version=self.model_version,
                            tracing=tracing or self.tracing)
