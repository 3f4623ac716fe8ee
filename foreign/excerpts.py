"""Real curve excerpts for the foreign evaluation family, read from LAS files with lasio.

An excerpt is three curves of one well over one depth window: the two curves a track plots (curve 1, drawn
solid; curve 2, drawn dashed or dotted) and a third one, drawn in some tracks as a distractor that is neither.
The triples are curves that real logs plot together (gamma with sonic, deep with shallow resistivity, density
with neutron, ...). Scales come from the whole log (2nd / 98th percentile, widened), so the renderer can push
a curve off scale on purpose.

The family renders from the shipped file `data/excerpts.npz` only, so a clean clone without ../shared gives
the same scans. Rebuild it (deterministic) from the LAS folder ($DIGITISER_LAS_DIR, else ../shared/data/las):

    python -m foreign.excerpts [LAS_DIR]
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
import os
from pathlib import Path
import sys

import numpy as np

log = logging.getLogger(__name__)

EXCERPTS = Path(__file__).parent / "data" / "excerpts.npz"
# only `build` reads LAS files: $DIGITISER_LAS_DIR, else ../shared/data/las from the repository root
LAS_DIR = Path(os.environ.get("DIGITISER_LAS_DIR", "../shared/data/las"))
N_SAMPLES = 900          # LAS samples per excerpt window
WINDOWS_PER_TRIPLE = 5
_SEED = 90210            # this family's own: window choice only
# (file, curve 1, curve 2, third, log scale?, curve 2 on curve 1's scale?)
TRIPLES = [
    ("welly_F03-02.las", "GR", "DT", "SP", False, False),
    ("welly_F03-02.las", "ILD", "SN", "MLL", True, True),
    ("welly_F03-02.las", "RHOB", "NPHI", "CAL1", False, False),
    ("welly_F03-02.las", "GR", "CAL2", "SP", False, False),
    ("welly_F03-02.las", "LLD", "LLS", "MLL", True, True),
    ("welly_P-135_out.LAS", "AF90", "AF10", "AF30", True, True),
    ("welly_P-135_out.LAS", "RHOB", "NPHI_LIM", "DPHI_LIM", False, False),
    ("welly_P-135_out.LAS", "GR", "DT", "SP", False, False),
    ("welly_P-135_out.LAS", "DT", "DTS", "GR", False, False),
    ("welly_P-135_out.LAS", "NPHI_SAN", "DPHI_SAN", "GR", False, True),
    ("welly_P-135_out.LAS", "GR", "CALI", "POTA", False, False),
    ("lasio_6038187_v1.2.las", "GAMN", "CALI", "SP", False, False),
    ("lasio_6038187_v1.2.las", "DFAR", "DNEAR", "GAMN", False, True),
    ("lasio_6038187_v1.2.las", "PR", "COND", "GAMN", True, False),
    ("lasio_6038187_v1.2.las", "GAMN", "NEUT", "CALI", False, False),
]
REVERSED = {"NPHI", "NPHI_LIM", "NPHI_SAN", "DT", "DTS"}   # plotted right to left, as on real logs


@dataclass
class Excerpt:
    """curves (3, N_SAMPLES) float32 values (NaN = no data); depth (N_SAMPLES,) increasing; names/units (3,);
    scales (3, 2) left/right per curve; log: the scale of curves 1 and 2 (the third has its own: linear)."""
    curves: np.ndarray
    depth: np.ndarray
    names: list
    units: list
    scales: np.ndarray
    log: bool
    depth_unit: str


def _read(path: Path) -> tuple[dict, dict, np.ndarray, str]:
    import lasio
    las = lasio.read(str(path), ignore_header_errors=True, engine="normal")
    depth = np.asarray(las.index, float)
    order = np.argsort(depth)
    values = {}
    for c in las.curves[1:]:
        v = np.asarray(c.data, float)[order]
        v[(v < -999) | ~np.isfinite(v)] = np.nan
        values[c.mnemonic] = v
    return values, {c.mnemonic: c.unit for c in las.curves}, depth[order], las.curves[0].unit.lower()


def _scale(v: np.ndarray, name: str, log_scale: bool) -> tuple[float, float]:
    lo, hi = np.nanpercentile(v, [2, 98])
    if log_scale:
        lo, hi = 10 ** np.floor(np.log10(max(lo, 1e-3))), 10 ** np.ceil(np.log10(hi))
    else:
        pad = 0.1 * (hi - lo)
        lo, hi = float(np.round(lo - pad, 3)), float(np.round(hi + pad, 3))
    return (hi, lo) if name in REVERSED else (lo, hi)


def build(las_dir: Path) -> dict:
    """Pick WINDOWS_PER_TRIPLE windows per triple where curves 1 and 2 have data at >= 95% of the samples."""
    rng = np.random.default_rng(_SEED)
    out = {k: [] for k in ("curves", "depth", "names", "units", "scales", "log", "depth_unit", "source")}
    cache = {}
    for file, a, b, c, log_scale, shared in TRIPLES:
        if file not in cache:
            cache[file] = _read(las_dir / file)
        values, units, depth, depth_unit = cache[file]
        scales = [_scale(values[a], a, log_scale), _scale(values[b], b, log_scale), _scale(values[c], c, False)]
        if shared:
            lo, hi = min(min(scales[0]), min(scales[1])), max(max(scales[0]), max(scales[1]))
            scales[0] = scales[1] = (hi, lo) if a in REVERSED else (lo, hi)
        ok = np.isfinite(values[a]) & np.isfinite(values[b])
        good = np.convolve(ok, np.ones(N_SAMPLES), "valid") >= 0.95 * N_SAMPLES
        starts = np.flatnonzero(good)
        assert starts.size, f"{file}: no window with {a} and {b}"
        for s in np.sort(rng.choice(starts, min(WINDOWS_PER_TRIPLE, starts.size), replace=False)):
            w = slice(s, s + N_SAMPLES)
            out["curves"].append(np.stack([values[a][w], values[b][w], values[c][w]]).astype(np.float32))
            out["depth"].append(depth[w])
            out["names"].append([a, b, c])
            out["units"].append([units[a], units[b], units[c]])
            out["scales"].append(scales)
            out["log"].append(log_scale)
            out["depth_unit"].append("ft" if depth_unit.startswith("f") else "m")
            out["source"].append(file)
    return {k: np.asarray(v) for k, v in out.items()}


def load(path: Path = EXCERPTS) -> list[Excerpt]:
    z = np.load(path)
    return [Excerpt(z["curves"][i], z["depth"][i], list(z["names"][i]), list(z["units"][i]),
                    z["scales"][i].astype(float), bool(z["log"][i]), str(z["depth_unit"][i]))
            for i in range(len(z["curves"]))]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    las_dir = Path(argv[0]) if argv else LAS_DIR
    arrays = build(las_dir)
    np.savez_compressed(EXCERPTS, **arrays)
    print(f"{EXCERPTS}: {len(arrays['curves'])} excerpts from {las_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
