"""Decode uploaded or listed scan bytes safely: PNG, JPEG or TIFF -> HxW uint8 grayscale (+ BGR when colour).

Order of checks, cheapest first, so hostile or broken input costs little:
1. size in bytes (``ImageLimits.max_bytes``);
2. format from the magic bytes (PNG, JPEG, TIFF ``II*``/``MM*`` and BigTIFF ``II+``/``MM+``), else ``not_image``;
3. width, height and colour or not from the header (PNG IHDR, JPEG SOFn marker, TIFF first IFD via tifffile) against
   ``max_pixels`` / ``max_side``, before any pixel is allocated;
4. completeness: PNG must hold its IEND chunk, a JPEG its EOI marker after the scan data, a TIFF's first-page
   strips/tiles must lie inside the bytes (truncated uploads otherwise decode to half-grey images);
5. pixels via ``cv2.imdecode(IMREAD_GRAYSCALE | IMREAD_ANYDEPTH)``: colour becomes gray with cv2's weights,
   EXIF orientation is applied as cv2 does, a multi-page TIFF yields its first page only, 1-bit TIFFs
   (CCITT G3/G4 included) decode to 0/255, 16-bit samples are scaled to 8 bits (v * 255 / 65535, rounded);
6. a file whose header says colour (PNG colour types 2, 3, 6; a JPEG with 3 components; a TIFF with 3+ samples
   per pixel) is also decoded to 8-bit BGR (``IMREAD_COLOR``): ink colour tells a red curve from a grey grid
   that grey makes equally light, and a colour segmenter reads it. A file whose three channels are equal keeps
   none (its grey is the same).

Every failure is a ``BadImage`` with a ``kind`` ("not_image", "corrupt", "too_large", "unsupported") and a message
that says what is wrong and what to do; errors from cv2 and tifffile are translated here (``__cause__`` kept).
"""
from __future__ import annotations

import io
import logging
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import tifffile

from contracts.files import sha256

log = logging.getLogger(__name__)

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # length 0, type, CRC
_MAGIC = ((_PNG_SIG, "png"), (b"\xff\xd8\xff", "jpeg"),
          (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"II+\x00", "tiff"), (b"MM\x00+", "tiff"))
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field
_CV2_MAX_PIXELS = 2**30  # OpenCV's own decode limit (CV_IO_MAX_IMAGE_PIXELS default)
_FORMATS = "PNG, JPEG or TIFF"


@dataclass(frozen=True)
class ImageLimits:
    """Largest scan accepted: bytes of the file, decoded pixels (width * height), and pixels per side."""

    max_bytes: int = 64 * 2**20
    max_pixels: int = 120_000_000
    max_side: int = 60_000

    def __post_init__(self):
        if not (self.max_bytes > 0 and 0 < self.max_pixels <= _CV2_MAX_PIXELS and self.max_side > 0):
            raise ValueError(f"ImageLimits must be positive with max_pixels <= {_CV2_MAX_PIXELS} "
                             f"(OpenCV's decode limit), got {self}")


class BadImage(ValueError):
    """The bytes are not a usable scan. ``kind``: "not_image" | "corrupt" | "too_large" | "unsupported"."""

    KINDS = ("not_image", "corrupt", "too_large", "unsupported")

    def __init__(self, kind: str, message: str):
        assert kind in self.KINDS, f"unknown BadImage kind {kind!r}"
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class DecodedScan:
    """A decoded scan. gray: HxW uint8 (ink dark, paper light), the whole image, or its track box once
    `digitiser.track.cut_track` cut it; format: "png" | "jpeg" | "tiff"; width, height: of the decoded input
    in pixels; sha256: hex digest of the original bytes; n_bytes: their length; colour: HxWx3 uint8 BGR of the
    same pixels for a colour file, else None."""

    gray: np.ndarray
    format: str
    width: int
    height: int
    sha256: str
    n_bytes: int
    colour: np.ndarray | None = None

    @property
    def pixels(self) -> np.ndarray:
        """What the segmenter reads: the colour pixels when there are any, else the grey ones."""
        return self.gray if self.colour is None else self.colour


def sniff_format(data: bytes) -> str | None:
    """"png", "jpeg" or "tiff" from the magic bytes, None for anything else."""
    return next((fmt for magic, fmt in _MAGIC if data[:len(magic)] == magic), None)


def decode_scan(data: bytes, limits: ImageLimits = ImageLimits(), colour: bool = True) -> DecodedScan:
    """Check and decode one scan file's bytes (see the module docstring for the order of checks).

    Args:
        data: the file's bytes (bytes; a bytearray or memoryview is copied once).
        limits: size limits; checked before pixels are decoded.
        colour: also decode a colour file's BGR pixels (False where only grey is read: the batch job's decode
            when its segmenter reads grey, which then moves a third of the pixels on).
    Returns:
        DecodedScan with an HxW uint8 grayscale image (and `colour`, see DecodedScan).
    Raises:
        BadImage: kind "not_image", "corrupt", "too_large" or "unsupported"; the message says what to do.
    """
    data = data if isinstance(data, bytes) else bytes(data)
    n = len(data)
    if n == 0:
        raise BadImage("not_image", f"the upload is empty (0 bytes): send the scan file itself ({_FORMATS})")
    if n > limits.max_bytes:
        raise BadImage("too_large", f"the file is {n / 2**20:.1f} MiB, over the {limits.max_bytes / 2**20:.1f} MiB "
                                    "limit: downsample the scan (200-300 dpi is plenty) or compress it (PNG, TIFF G4)")
    fmt = sniff_format(data)
    if fmt is None:
        raise BadImage("not_image", f"the upload is not a {_FORMATS} image (it starts with {data[:8]!r}): "
                                    f"upload the scan as {_FORMATS}")
    width, height, is_colour = _HEADER[fmt](data)
    _check_size(fmt, width, height, limits)
    _COMPLETE[fmt](data)
    gray = _decode_pixels(data, fmt)
    colour = _decode_colour(data, gray.shape) if colour and is_colour else None
    log.debug("decoded %s %dx%d (%d bytes)", fmt, gray.shape[1], gray.shape[0], n)
    return DecodedScan(gray=gray, format=fmt, width=int(gray.shape[1]), height=int(gray.shape[0]),
                       sha256=sha256(data), n_bytes=n, colour=colour)


def _check_size(fmt: str, width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise BadImage("corrupt", f"the {fmt.upper()} header gives a size of {width} x {height} px: "
                                  "the file is damaged; export the scan again")
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise BadImage("too_large", f"the image is {width} x {height} px ({width * height / 1e6:.1f} Mpx), over the "
                                    f"limit of {limits.max_pixels / 1e6:.0f} Mpx and {limits.max_side} px per side: "
                                    "downsample the scan (200-300 dpi is plenty) or split the track into depth "
                                    "intervals")


def _png_size(data) -> tuple[int, int, bool]:
    """Width, height and whether it is colour, from the IHDR chunk (which must come first and carry a valid CRC)."""
    head = data[8:33]
    if len(head) < 25 or head[4:8] != b"IHDR" or struct.unpack(">I", head[:4])[0] != 13:
        raise BadImage("corrupt", "the PNG has no valid IHDR header chunk: the file is damaged; export it again")
    if zlib.crc32(head[4:21]) != struct.unpack(">I", head[21:25])[0]:
        raise BadImage("corrupt", "the PNG header chunk fails its CRC check: the file is damaged; export it again")
    width, height = struct.unpack(">II", head[8:16])
    return width, height, head[17] in (2, 3, 6)   # colour type: RGB, palette, RGBA (0, 4: grey, grey + alpha)


def _png_complete(data) -> None:
    if data.rfind(_PNG_IEND) < 0:  # a chance match inside compressed data: ~2**-96
        raise BadImage("corrupt", "the PNG is truncated (no IEND chunk at its end): the upload or transfer was cut "
                                  "off; upload the complete file")


def _jpeg_markers(data) -> tuple[int, int, int, int]:
    """(width, height, components, offset of the first SOS) from the marker segments before the scan data."""
    i, n, size = 2, len(data), None
    while i + 4 <= n:
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _JPEG_SOF and i + 10 <= n:
            height, width, components = struct.unpack(">HHB", data[i + 5:i + 10])
            if height == 0:
                raise BadImage("unsupported", "the JPEG defines its height in a DNL marker, which the decoder "
                                              "does not support: re-save it as a baseline JPEG, PNG or TIFF")
            size = (width, height, components)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if size is None:
                break
            return *size, i
        if length < 2:
            break
        i += 2 + length
    raise BadImage("corrupt", "the JPEG has no readable frame header before its image data (or is cut off in its "
                              "headers): the file is damaged; export it again")


def _jpeg_size(data) -> tuple[int, int, bool]:
    width, height, components, _ = _jpeg_markers(data)
    return width, height, components >= 3   # Y, Cb, Cr (1: grey)


def _jpeg_complete(data) -> None:
    *_, sos = _jpeg_markers(data)
    # FF D9 cannot occur inside entropy-coded data (FF is stuffed as FF 00), so an EOI after the first SOS is
    # the image's own end (an EXIF thumbnail's EOI comes before the main frame).
    if data.rfind(b"\xff\xd9", sos) < 0:
        raise BadImage("corrupt", "the JPEG is truncated (no end-of-image marker after its image data): the upload "
                                  "or transfer was cut off; upload the complete file")


def _tiff_page(data):
    """(width, height, info) of the first page, checked to lie inside the bytes."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            width, height = int(page.imagewidth), int(page.imagelength)
            info = dict(compression=int(page.compression), bits=int(page.bitspersample),
                        samples=int(page.samplesperpixel), sampleformat=int(page.sampleformat))
            ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
    except BadImage:
        raise
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error, IndexError ...
        raise BadImage("corrupt", f"the TIFF structure cannot be read ({e}): the file is damaged or cut off; "
                                  "export it again") from e
    if ends and max(ends) > len(data):
        raise BadImage("corrupt", f"the TIFF is truncated: its first page's image data runs to byte {max(ends)} but "
                                  f"the file has {len(data)} bytes; upload the complete file")
    return width, height, info


def _tiff_size(data) -> tuple[int, int, bool]:
    width, height, info = _tiff_page(data)
    if info["sampleformat"] == 3 or info["bits"] not in (1, 2, 4, 8, 16):
        raise BadImage("unsupported", f"the TIFF holds {info['bits']}-bit "
                                      f"{'floating-point ' if info['sampleformat'] == 3 else ''}samples: save the scan "
                                      "as 8-bit (or 1-bit or 16-bit) grayscale or RGB")
    return width, height, info["samples"] >= 3


def _tiff_complete(data) -> None:
    """Checked with the header (``_tiff_page``)."""


_HEADER = {"png": _png_size, "jpeg": _jpeg_size, "tiff": _tiff_size}
_COMPLETE = {"png": _png_complete, "jpeg": _jpeg_complete, "tiff": _tiff_complete}


def _decode_pixels(data, fmt: str) -> np.ndarray:
    """HxW uint8 via cv2 (the one place cv2 decode errors are translated)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    except cv2.error as e:
        raise BadImage("corrupt", f"the {fmt.upper()} image data cannot be decoded ({e.err}): the file is damaged; "
                                  "export it again") from e
    if img is None:
        detail = ""
        if fmt == "tiff":
            info = _tiff_page(data)[2]
            detail = f" (compression {info['compression']}, {info['bits']}-bit, {info['samples']} samples per pixel)"
        raise BadImage("unsupported" if fmt == "tiff" else "corrupt",
                       f"the {fmt.upper()} image data cannot be decoded{detail}: the file is damaged or uses an "
                       "encoding the decoder lacks; re-save the scan as PNG or as uncompressed/LZW/G4 TIFF")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if img.dtype != np.uint8 or img.ndim != 2:
        raise BadImage("unsupported", f"the {fmt.upper()} decodes to {img.dtype} samples of shape {img.shape}: "
                                      "save the scan as 8-bit grayscale or RGB")
    return img


def _decode_colour(data, shape) -> np.ndarray | None:
    """HxWx3 uint8 BGR, or None when the decoder gives no colour for these bytes or its channels are equal."""
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if img is None or img.shape[:2] != shape:
        return None
    b, g, r = img[..., 0], img[..., 1], img[..., 2]
    return None if np.array_equal(b, g) and np.array_equal(g, r) else img
