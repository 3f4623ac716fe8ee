"""Printed, then scanned: what happens to a plotted track on its way into an archive.

Paper tint, blur (print and optics), sensor noise, speckle (dust), a slight skew (a horizontal shear of the
page, so rows stay rows and the truth moves with the ink), then one of: colour (PNG or JPEG), grey (PNG, JPEG
or TIFF) or a 1-bit threshold (CCITT G4 TIFF, written with Pillow). The class mask keeps a curve's pixels where
its own pen covers >= MASK_COVERAGE of the pixel (the curve drawn on top wins) and, in 1-bit scans, the pixel
came out black.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

MASK_COVERAGE = 0.3
MAX_SKEW_DEG = 0.6


def _shear(img: np.ndarray, s: float, fill) -> np.ndarray:
    h, w = img.shape[:2]
    m = np.float32([[1, s, -s * (h - 1) / 2], [0, 1, 0]])   # x' = x + s (y - (H - 1) / 2)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def shear_truth(x_frac: np.ndarray, s: float, h: int, w: int) -> np.ndarray:
    """(300, 2) truth fractions after the shear, clipped to the image's edge pixels."""
    y = (np.arange(x_frac.shape[0]) * (h - 1) / (x_frac.shape[0] - 1))[:, None]
    px = x_frac * w - 0.5 + s * (y - (h - 1) / 2)
    with np.errstate(invalid="ignore"):
        return (np.clip(px, 0.0, w - 1.0) + 0.5) / w


def _paper(rgb: np.ndarray, rng) -> np.ndarray:
    img = rgb.astype(np.float32)
    if rng.random() < 0.5:
        tint = np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.78, 0.97)], np.float32)
        img *= tint
    if rng.random() < 0.6:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.3, 1.2)))
    img += rng.normal(0, rng.uniform(0, 6), img.shape[:2])[..., None].astype(np.float32)
    if rng.random() < 0.3:
        h, w = img.shape[:2]
        n = int(h * w * rng.uniform(2e-4, 2e-3))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        img[ys, xs] *= rng.uniform(0.0, 0.5, (n, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(cover: np.ndarray, order, s: float) -> np.ndarray:
    h, w = cover.shape[1:]
    mask = np.zeros((h, w), np.uint8)
    for k in order:   # later is on top
        c = _shear(cover[k], s, 0.0) if s else cover[k]
        mask[c >= MASK_COVERAGE] = k + 1
    return mask


def _encode(img: np.ndarray, ext: str, rng) -> tuple[bytes, np.ndarray]:
    bgr = img[..., ::-1] if img.ndim == 3 else img
    if ext == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 93))])
    elif ext == "tif":
        ok, buf = cv2.imencode(".tif", bgr, [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_LZW])
    else:
        ok, buf = cv2.imencode(".png", bgr)
    assert ok, f"{ext} encoding failed"
    return buf.tobytes(), cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _g4(ink: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).convert("1").save(buf, "TIFF", compression="group4")
    return buf.getvalue()


def scan(rgb: np.ndarray, cover: np.ndarray, order, rng) -> dict:
    """rgb: HxWx3 uint8 plot; cover: (2, H, W) ink coverage of curve 1 and 2 alone; order: drawing order.
    Returns {image (decoded pixels: HxW or HxWx3 BGR uint8), encoded, ext, mask, shear}."""
    h, w = rgb.shape[:2]
    s = float(np.tan(np.radians(rng.uniform(-MAX_SKEW_DEG, MAX_SKEW_DEG)))) if rng.random() < 0.5 else 0.0
    s = float(np.clip(s, -0.1 * w / h, 0.1 * w / h))   # the page drifts at most 10% of the width
    paper = tuple(int(v) for v in rgb[0, w // 2]) if rgb[0, w // 2].min() > 200 else (255, 255, 255)
    img = _shear(rgb, s, paper) if s else rgb
    img = _paper(img, rng)
    mask = _mask(cover, order, s)
    mode = rng.choice(["colour", "grey", "bilevel"], p=[0.45, 0.35, 0.2])
    if mode == "bilevel":
        ink = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) < rng.uniform(110, 190)
        mask[~ink] = 0
        return {"image": np.where(ink, 0, 255).astype(np.uint8), "encoded": _g4(ink), "ext": "tif",
                "mask": mask, "shear": s}
    if mode == "grey":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        ext = str(rng.choice(["png", "jpg", "tif"], p=[0.4, 0.4, 0.2]))
    else:
        ext = str(rng.choice(["png", "jpg"], p=[0.4, 0.6]))
    encoded, decoded = _encode(img, ext, rng)
    return {"image": decoded, "encoded": encoded, "ext": ext, "mask": mask, "shear": s}
