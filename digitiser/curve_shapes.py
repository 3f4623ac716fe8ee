"""Curve shapes for synthetic tracks: windows of real logs (a small shipped bank) and random layered beds.

A shape is a pair of curves plotted in one track, as positions in fractions of track width (0 = left
edge, 1 = right edge; values outside [0, 1] are clipped at the track edge when drawn) at evenly spaced
depth samples, with the calibration curve entries (name, left, right, scale, unit) that map positions
to values. The bank (`digitiser/data/curve_bank.npz`, shipped) was built once from LAS files by
`build_curve_bank` (`python -m digitiser.curve_shapes [LAS_DIR]`). The LAS files are an optional extra outside
the package: LAS_DIR is $DIGITISER_LAS_DIR, else ../shared/data/las relative to the working directory (the
repository root); nothing else reads them. Without the bank every shape comes from the random layered process.
"""
from dataclasses import dataclass
import functools
import io
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from digitiser import shape_scales as scales
from digitiser.scale import to_values

log = logging.getLogger(__name__)

N_SAMPLES = 384                 # depth samples per bank window
BANK_PATH = Path(__file__).resolve().parent / "data" / "curve_bank.npz"
RAW_SAMPLES = 1200              # LAS samples per window of the raw bank: as logged, neither smoothed nor resampled
RAW_BANK_PATH = BANK_PATH.with_name("curve_bank_raw.npz")
ROUGH_ROWS_PER_SAMPLE = (0.5, 2.0)   # rough tracks: a log plotted at a compressed depth scale
LAS_DIR = Path(os.environ.get("DIGITISER_LAS_DIR", "../shared/data/las"))   # only build_curve_bank reads it

# Curve pairs plotted together in practice: (file, curve 1, curve 2, same scale for both?)
PAIRS = [
    ("welly_F03-02.las", "GR", "DT", False), ("welly_F03-02.las", "RHOB", "NPHI", False),
    ("welly_F03-02.las", "ILD", "SN", True), ("welly_F03-02.las", "LLD", "LLS", True),
    ("welly_F03-02.las", "LLD", "MLL", True), ("welly_F03-02.las", "GR", "SP", False),
    ("welly_F03-02.las", "GR", "CAL1", False), ("welly_F03-02.las", "DT", "GR", False),
    ("welly_P-135_out.LAS", "GR", "SP", False), ("welly_P-135_out.LAS", "RHOB", "NPHI_LIM", False),
    ("welly_P-135_out.LAS", "AF90", "AF10", True), ("welly_P-135_out.LAS", "AF60", "AF20", True),
    ("welly_P-135_out.LAS", "AF90", "AF30", True), ("welly_P-135_out.LAS", "NPHI_SAN", "DPHI_SAN", True),
    ("welly_P-135_out.LAS", "DT", "GR", False), ("welly_P-135_out.LAS", "GR", "THOR", False),
    ("lasio_6038187_v1.2.las", "GAMN", "DFAR", False), ("lasio_6038187_v1.2.las", "DFAR", "DNEAR", True),
    ("lasio_6038187_v1.2.las", "GAMN", "NEUT", False), ("lasio_6038187_v1.2.las", "PR", "PR", False),
]


@dataclass
class CurvePair:
    """Two curves of one track.

    f: (2, n) float64 positions as fractions of track width at n evenly spaced depths (top first);
       may leave [0, 1] where the curve runs off the scale.
    curves: two calibration curve entries {"name", "left", "right", "scale", "unit"}.
    log_grid: True when the track is on a logarithmic grid (both curves "log").
    depth_unit: "m" or "ft".
    source: where the shape came from ("bank:<file>" or "layered").
    """
    f: np.ndarray
    curves: list[dict]
    log_grid: bool
    depth_unit: str
    source: str


def _read_las(path: Path):
    import lasio
    las = lasio.read(str(path), ignore_header_errors=True)
    depth = np.asarray(las.index, np.float64)
    order = np.argsort(depth)
    unit = (las.curves[0].unit or "m").strip().lower()
    return las, order, "ft" if unit.startswith("f") else "m"


def _window(depth_ok: np.ndarray, v: np.ndarray, rng: np.random.Generator, raw: int | None = None):
    """One random window of both curves where both are valid: 120-1000 samples resampled to N_SAMPLES, or
    with `raw`, exactly `raw` samples as logged. None if no room."""
    runs = np.flatnonzero(np.diff(np.r_[0, depth_ok.astype(np.int8), 0]))
    starts, ends = runs[::2], runs[1::2]
    good = ends - starts >= (raw or 120)
    if not good.any():
        return None
    k = rng.choice(np.flatnonzero(good))
    length = raw or int(min(ends[k] - starts[k], rng.integers(120, 1000)))
    i0 = int(rng.integers(starts[k], ends[k] - length + 1))
    seg = v[:, i0:i0 + length]
    if raw:
        return seg.copy(), (i0, i0 + length - 1)
    box = max(1, length // N_SAMPLES)
    if box > 1:   # anti-alias before decimating
        kernel = np.ones(box) / box
        seg = np.stack([np.convolve(np.pad(c, box, mode="edge"), kernel, "same")[box:-box] for c in seg])
    t = np.linspace(0, length - 1, N_SAMPLES)
    return np.stack([np.interp(t, np.arange(length), c) for c in seg]), (i0, i0 + length - 1)


def build_curve_bank(las_dir: Path | None = None, out: Path | None = None, per_pair: int = 24, seed: int = 0,
                     pairs: list | None = None, raw: int | None = None) -> Path:
    """Extract random windows of real curve pairs from the LAS files into a compact .npz bank.

    Args:
        las_dir: folder with the LAS files named in `pairs` (default LAS_DIR).
        out: bank file to write (default BANK_PATH, the shipped digitiser/data/curve_bank.npz).
        per_pair: windows per curve pair.
        pairs: [(file, curve 1, curve 2, shared scale)], default PAIRS.
        raw: windows of exactly this many samples as logged (the raw bank), instead of 120-1000 samples
            resampled to N_SAMPLES; a pair without such a valid stretch is left out, with a warning.
    Values are stored quantised to uint16 between per-window lo/hi (log10 of the value for
    resistivities), so the bank stays well under 1 MB. Returns the path written.
    """
    las_dir, out, pairs = Path(las_dir or LAS_DIR), Path(out or BANK_PATH), pairs or PAIRS
    if not las_dir.is_dir():
        raise FileNotFoundError(f"LAS folder {las_dir} not found: the curve bank is built from the LAS files "
                                f"listed in ../shared/data/las/README.md")
    rng = np.random.default_rng(seed)
    q, lo, hi, pair_of, span, curve_units, typical = [], [], [], [], [], [], []
    cache = {}
    for p, (fname, c1, c2, _) in enumerate(pairs):
        if fname not in cache:
            cache[fname] = _read_las(las_dir / fname)
        las, order, _ = cache[fname]
        missing = [c for c in (c1, c2) if c not in las.keys()]
        if missing:
            raise KeyError(f"{las_dir / fname} has no curve {missing}: fix the pair list")
        v = np.stack([np.asarray(las[c], np.float64)[order] for c in (c1, c2)])
        curve_units.append([las.curves[c].unit or "" for c in (c1, c2)])
        logs = [scales.is_log(c) for c in (c1, c2)]
        ok = np.isfinite(v).all(0) & (v > -999).all(0)
        for i, is_log in enumerate(logs):
            ok &= (not is_log) | (v[i] > 0)
        v = np.where(ok, v, 1.0)
        v = np.stack([np.log10(c) if is_log else c for c, is_log in zip(v, logs)])
        depth = np.asarray(las.index, np.float64)[order]
        typical.append(np.percentile(v[:, ok], [2, 98], axis=1).T if ok.any() else np.zeros((2, 2)))
        for _ in range(per_pair):
            got = _window(ok, v, rng, raw)
            if got is None:
                log.warning("no valid window for %s %s/%s", fname, c1, c2)
                break
            w, (i0, i1) = got
            if c1 == c2:   # single-curve entry: second curve is the same log a stretch further down
                w2 = _window(ok, v, rng, raw)[0]
                w[1] = w2[1]
            lo.append(w.min(1))
            hi.append(np.maximum(w.max(1), w.min(1) + 1e-6))
            q.append(np.rint((w - lo[-1][:, None]) / (hi[-1] - lo[-1])[:, None] * 65535).astype(np.uint16))
            pair_of.append(p)
            span.append((depth[i0], depth[i1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, q=np.stack(q), lo=np.array(lo, np.float32), hi=np.array(hi, np.float32),
                        pair=np.array(pair_of, np.int16), span=np.array(span, np.float32),
                        names=np.array([[a, b] for _, a, b, _ in pairs]),
                        files=np.array([f for f, _, _, _ in pairs]),
                        shared=np.array([s for *_, s in pairs]),
                        typical=np.array(typical, np.float32),
                        depth_units=np.array([cache[f][2] for f, *_ in pairs]),
                        curve_units=np.array(curve_units))
    out.write_bytes(buf.getvalue())
    log.info("wrote %d windows of %d curve pairs to %s (%d bytes)", len(q), len(pairs), out, out.stat().st_size)
    return out


@functools.lru_cache(maxsize=4)
def _load_bank(path: str):
    p = Path(path)
    if not p.is_file():
        log.info("curve bank %s not found: synthetic shapes come from random layered beds only", p)
        return None
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


def load_bank(path: Path | None = None):
    """The curve bank as a dict of arrays, or None when the file is absent. Cached per path."""
    return _load_bank(str(path or BANK_PATH))


def _bank_pair(bank: dict, rng: np.random.Generator, n_rows: int, rows_per_sample=(2, 10),
               min_samples: int = N_SAMPLES // 4) -> CurvePair:
    """A random window of the bank, zoomed to `rows_per_sample` (uniform in the range) where it has room.
    The default, 2 to 10 image rows per (smoothed) sample, is logs sampled every 15 cm plotted at 1:200-1:1000."""
    i = int(rng.integers(len(bank["q"])))
    p = int(bank["pair"][i])
    w = bank["lo"][i][:, None] + bank["q"][i].astype(np.float64) / 65535 * (bank["hi"][i] - bank["lo"][i])[:, None]
    n_bank = w.shape[1]
    n = int(np.clip(n_rows / rng.uniform(*rows_per_sample), min_samples, n_bank))
    i0 = int(rng.integers(0, n_bank - n + 1))
    w = w[:, i0:i0 + n]
    if rng.random() < 0.5:
        w = w[:, ::-1]                                            # also read the log bottom-up
    names = [str(s) for s in bank["names"][p]]
    units = [str(u) for u in bank["curve_units"][p]]
    curves, f = scales.choose_scales(names, w, bool(bank["shared"][p]), rng, units, bank["typical"][p])
    return CurvePair(f, curves, curves[0]["scale"] == "log", str(bank["depth_units"][p]), f"bank:{bank['files'][p]}")


def _layered_curve(z: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One curve (n,) from latent bed values z: per-bed level, transitions, in-bed wiggle and spikes."""
    n = len(z)
    c = rng.uniform(0.15, 0.85) + rng.choice([-1, 1]) * rng.uniform(0.2, 0.7) * (z - 0.5)
    c += np.repeat(rng.normal(0, 0.05, len(bounds) + 1), np.diff(np.r_[0, bounds, n]))
    smooth = int(rng.integers(1, 6))
    if smooth > 1:   # gradational bed boundaries
        c = np.convolve(np.pad(c, smooth, mode="edge"), np.ones(smooth) / smooth, "same")[smooth:-smooth]
    wiggle = np.cumsum(rng.normal(0, rng.uniform(0.001, 0.008), n))
    wiggle -= np.convolve(np.pad(wiggle, 15, mode="edge"), np.ones(31) / 31, "same")[15:-15]
    c += wiggle + rng.normal(0, rng.uniform(0, 0.01), n)
    spikes = rng.random(n) < rng.uniform(0, 0.004)
    c[spikes] += rng.normal(0, 0.15, spikes.sum())
    return c


def layered_pair(rng: np.random.Generator, n: int = 512) -> CurvePair:
    """Two curves from a random layered earth (beds with sharp or gradational boundaries), correlated
    through a shared latent lithology so that they cross, run together and jump at the same depths."""
    n_beds = int(rng.integers(3, 40))
    bounds = np.sort(rng.choice(np.arange(2, n - 2), n_beds - 1, replace=False))
    state = np.cumsum(rng.random(n_beds) < 0.6) % 2                       # sand/shale alternation
    z = np.repeat(np.clip(state * 0.7 + rng.normal(0.15, 0.15, n_beds), 0, 1), np.diff(np.r_[0, bounds, n]))
    f = np.stack([_layered_curve(z, bounds, rng), _layered_curve(z, bounds, rng)])
    curves, log_grid = scales.catalogue_curves(rng)
    return CurvePair(f, curves, log_grid, str(rng.choice(["m", "ft"])), "layered")


def _run_together(f: np.ndarray, rng: np.random.Generator) -> None:
    """Pull curve 2 onto curve 1 (within +-1 %) over a stretch, with smooth ends (in place)."""
    n = f.shape[1]
    length = int(rng.integers(n // 10, n // 2))
    i0 = int(rng.integers(0, n - length))
    w = np.zeros(n)
    ramp = max(2, length // 6)
    w[i0:i0 + length] = np.minimum(1, np.minimum(np.arange(length) + 1, length - np.arange(length)) / ramp)
    f[1] = (1 - w) * f[1] + w * (f[0] + rng.uniform(-0.01, 0.01))


def sample_pair(rng: np.random.Generator, n_rows: int = 1000, bank_path: Path | None = None) -> CurvePair:
    """A random curve pair for a track `n_rows` px tall: 70 % real windows from the bank (when present),
    else layered beds; some pairs are pulled together over a stretch (touching / overlapping) or pushed
    off the track edge."""
    bank = load_bank(bank_path)
    if bank is not None and rng.random() < 0.7:
        pair = _bank_pair(bank, rng, n_rows)
    else:   # about 2 rows per sample keeps bed boundaries sharp at any image height
        pair = layered_pair(rng, int(np.clip(n_rows // 2, 256, 2048)))
    return _together_or_off_scale(pair, rng)


def rough_pair(rng: np.random.Generator, n_rows: int = 1000, bank_path: Path | None = None) -> CurvePair | None:
    """A pair of real curves as logged (the raw bank) at 0.5-2 image rows per sample: a log plotted at a
    compressed depth scale, whose curves move across much of the track between neighbouring rows (a track
    taller than 2 x RAW_SAMPLES rows gets more rows per sample: a window holds RAW_SAMPLES). None without the
    raw bank."""
    bank = load_bank(bank_path or RAW_BANK_PATH)
    if bank is None:
        return None
    pair = _bank_pair(bank, rng, n_rows, ROUGH_ROWS_PER_SAMPLE, min_samples=120)
    if rng.random() < 0.6:
        _narrow_scale(pair, float(np.exp(rng.uniform(np.log(1.5), np.log(4.0)))))
    return _together_or_off_scale(pair, rng)


def _narrow_scale(pair: CurvePair, k: float) -> None:
    """Plot both curves on scales up to k times narrower, about their middle, as a log printed on a scale that
    suits its quiet stretches: excursions run off scale, along the edge, but each curve stays on the scale at
    3/4 of its samples at least. The calibration follows (in place)."""
    c = float(np.clip(np.median(pair.f), 0.2, 0.8))
    while k > 1.05 and (np.abs(c + k * (pair.f - c) - 0.5) <= 0.5).mean(axis=1).min() < 0.75:
        k *= 0.9
    ends = np.array([c - c / k, c + (1 - c) / k])
    for curve in pair.curves:
        curve["left"], curve["right"] = (float(v) for v in to_values(ends, curve["left"], curve["right"],
                                                                     curve["scale"]))
    pair.f[:] = c + k * (pair.f - c)


def _together_or_off_scale(pair: CurvePair, rng: np.random.Generator) -> CurvePair:
    if rng.random() < 0.2:
        _run_together(pair.f, rng)
    if rng.random() < 0.15:   # push one curve partly off the scale: it is clipped at the edge
        k = int(rng.integers(2))
        pair.f[k] += rng.choice([-1, 1]) * rng.uniform(0.1, 0.4)
    return pair


def resample_rows(f: np.ndarray, h: int, rng: np.random.Generator) -> np.ndarray:
    """(2, h) positions at every image row from (2, n) samples spread over the rows.

    Where a sample spans several rows, the linear interpolation is smoothed over about half a sample
    (a pen trace has no polygon corners) and a Brownian bridge (zero at the samples) adds fine-scale
    jitter scaled to the curve's own sample-to-sample variability.
    """
    n = f.shape[1]
    rows = np.arange(h, dtype=np.float64)
    t = np.linspace(0.0, h - 1.0, n)
    out = np.stack([np.interp(rows, t, fk) for fk in f])
    per_sample = (h - 1) / max(n - 1, 1)
    if per_sample <= 1.5:
        return out
    out = cv2.GaussianBlur(out, (0, 0), sigmaX=0.5 * per_sample, sigmaY=0.01, borderType=cv2.BORDER_REPLICATE)
    for k in range(len(f)):
        sigma = 1.4826 * np.median(np.abs(np.diff(f[k]))) * rng.uniform(0.3, 1.0)
        walk = np.cumsum(rng.standard_normal(h))
        bridge = walk - np.interp(rows, t, np.interp(t, rows, walk))
        out[k] += bridge * sigma / np.sqrt(per_sample)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    las = sys.argv[1] if len(sys.argv) > 1 else None
    build_curve_bank(las)
    build_curve_bank(las, RAW_BANK_PATH, per_pair=6, raw=RAW_SAMPLES)
