"""A hostile input corpus, generated in code: scans and calibrations a careless or malicious client might send.

`corpus(scan)` builds every case from one good scan (a `digitiser.synth` scan: `.encoded` PNG bytes and
`.calibration`). Each `Case` is an image file (its bytes and the name it arrives under) plus calibration
text (None: none sent) and what a correct service may answer: `ok` is the set of HTTP statuses allowed
(4xx for input that is wrong; 200 too, or 422 curve_not_found, for input that is odd but valid, such as a
16-bit or multi-page scan). The batch job must give every case a ledger row: `committed`, or `failed` with
a reason. `multipart_cases(png)` are raw HTTP bodies for the endpoint only; `post_case` and `send_raw` send them.

Used by tests/test_hostile.py and bench/reliability.py.
"""
import http.client
import io
import json
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
import requests
import tifffile

BAD = frozenset({400, 413, 415, 422})          # wrong input: a clear 4xx
ODD = frozenset({200, 422})                     # valid but unusual: digitised, or 422 curve_not_found


@dataclass(frozen=True)
class Case:
    name: str
    image: bytes
    filename: str = "scan.png"
    calibration: str | bytes | None = None
    ok: frozenset = BAD


def corpus(scan) -> list[Case]:
    """Every case, built from one good scan (PNG bytes in `scan.encoded`, its calibration dict)."""
    gray = cv2.imdecode(np.frombuffer(scan.encoded, np.uint8), cv2.IMREAD_GRAYSCALE)
    good_cal = json.dumps(scan.calibration)
    return [*_image_cases(scan.encoded, gray, good_cal), *_calibration_cases(scan.encoded, scan.calibration)]


def _image_cases(png: bytes, gray: np.ndarray, cal: str) -> list[Case]:
    jpeg = cv2.imencode(".jpg", gray)[1].tobytes()
    tiff = _tiff_bytes(gray)
    cases = [
        Case("zero_bytes", b""),
        Case("truncated_png", png[: len(png) // 2]),
        Case("truncated_jpeg", jpeg[: len(jpeg) // 2], "scan.jpg"),
        Case("truncated_tiff", tiff[: len(tiff) // 2], "scan.tif"),
        Case("png_bomb_100k", _png_declaring(100_000, 100_000)),
        Case("tiff_bomb_100k", _tiff_declaring(100_000, 100_000), "scan.tif"),
        Case("tiff_ifd_loop", _tiff_declaring(64, 64, loop=True), "scan.tif", ok=BAD | ODD),
        Case("multipage_tiff", _tiff_bytes(np.stack([gray, 255 - gray])), "scan.tif", ok=ODD),
        Case("png_16bit", cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes(), ok=ODD),
        Case("tiff_float32", _tiff_bytes(gray.astype(np.float32)), "scan.tif"),
        Case("tiff_cmyk", _tiff_bytes(np.stack([255 - gray] * 4, -1), photometric="separated"), "scan.tif",
             ok=BAD | ODD),
        Case("jpeg_cmyk", _cmyk_jpeg(gray), "scan.jpg", ok=BAD | ODD),
        Case("png_named_jpg", png, "scan.jpg", ok=ODD),
        Case("text_named_png", b"%PDF-1.4 not a scan at all\n"),
        Case("jpeg_named_tif", jpeg, "scan.tif", ok=ODD),
        Case("filename_traversal", png, "../../../etc/passwd.png", ok=ODD),
    ]
    return [Case(c.name, c.image, c.filename, cal, c.ok) for c in cases]


def _calibration_cases(png: bytes, good: dict) -> list[Case]:
    def with_curve(**fields) -> str:
        return json.dumps({**good, "curves": [{**good["curves"][0], **fields}, good["curves"][1]]})

    deep = 30_000
    texts = {
        "cal_nan": json.dumps({**good, "top_depth": float("nan")}),
        "cal_inf": json.dumps({**good, "bottom_depth": float("inf")}),
        "cal_1e309": '{"top_depth": 1e309, "bottom_depth": 1100.0}',
        "cal_overflowing_range": json.dumps({**good, "top_depth": 1e308, "bottom_depth": -1e308}),
        "cal_overflowing_scale": with_curve(left=-1e308, right=1e308, scale="linear"),
        "cal_string_numbers": json.dumps({**good, "top_depth": "1000", "bottom_depth": "1100"}),
        "cal_10000_curves": json.dumps({**good, "curves": [{"name": f"c{i}"} for i in range(10_000)]}),
        "cal_1mb": json.dumps({**good, "depth_unit": "x" * 2**20}),
        "cal_deep_nesting": '{"curves": ' + "[" * deep + "]" * deep + "}",
        "cal_duplicate_keys": json.dumps(good)[:-1] + ', "top_depth": 0.5}',
        "cal_unknown_field": json.dumps({**good, "operator": "x"}),
        "cal_not_utf8": b'{"depth_unit": "\xff\xfe"}',
        "cal_array": "[1, 2, 3]",
        "name_dotdot": with_curve(name=".."),
        "name_slash": with_curve(name="GR/../../x"),
        "name_backslash": with_curve(name="GR\\x"),
        "name_nul": with_curve(name="GR\x00.csv"),
        "name_cyrillic_lookalike": with_curve(name="G\u0420"),       # Cyrillic ER looks like a Latin P
        "name_fullwidth": with_curve(name="\uff27\uff32"),            # fullwidth "GR"
        "name_10kb": with_curve(name="G" * 10_240),
        "name_reserved": with_curve(name="manifest"),
    }
    return [Case(name, png, "scan.png", text) for name, text in texts.items()]


# ----------------------------------------------------------------------------- image builders

def _tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array, **kwargs)
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG whose header declares width x height 8-bit gray pixels, with a few KB of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 65536, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tiff_declaring(width: int, height: int, loop: bool = False) -> bytes:
    """A little-endian TIFF, 8-bit gray, one strip of `min(width * height, 4096)` bytes, whose header
    declares width x height; with loop=True its IFD names itself as the next IFD (an endless page chain)."""
    data = b"\x80" * min(width * height, 4096)
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(data))]
    ifd_at = 8
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    entries = [(t, k, data_at if t == 273 else v) for t, k, v in entries]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                    struct.pack("<I", value))
    ifd += struct.pack("<I", ifd_at if loop else 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + data


def _cmyk_jpeg(gray: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(gray).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- raw multipart (endpoint only)

@dataclass(frozen=True)
class RawCase:
    name: str
    headers: dict
    body: bytes            # sent whole, unless `declared` is set: then only the headers, claiming `declared`
    ok: frozenset = BAD
    declared: int | None = None


def multipart_cases(png: bytes) -> list[RawCase]:
    many = b"".join(b"--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n" % i for i in range(5000))
    one = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.png\"\r\n\r\n" + png + b"\r\n--b--\r\n"
    many += one
    return [
        RawCase("multipart_5000_parts", {"Content-Type": "multipart/form-data; boundary=b"}, many),
        RawCase("multipart_no_boundary", {"Content-Type": "multipart/form-data"}, one),
        RawCase("multipart_wrong_boundary", {"Content-Type": "multipart/form-data; boundary=zz"}, one),
        RawCase("multipart_unterminated", {"Content-Type": "multipart/form-data; boundary=b"}, one[:-8]),
        RawCase("body_not_multipart", {"Content-Type": "application/octet-stream"}, png),
        RawCase("declared_1gb", {"Content-Type": "multipart/form-data; boundary=b"}, b"", declared=2**30),
    ]


# ----------------------------------------------------------------------------- sending them

def post_case(url: str, case: Case) -> requests.Response:
    files = {"image": (case.filename, case.image, "application/octet-stream")}
    if case.calibration is not None:
        files["calibration"] = ("calibration.json", case.calibration, "application/json")
    return requests.post(f"{url}/v1/digitise", files=files, timeout=120)


def send_raw(url: str, method: str, path: str, headers: dict, body: bytes, declared: int | None) -> int:
    """The status answered to a raw request; with `declared`, only headers claiming that length are sent."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest(method, path)
        for k, v in {**headers, "Content-Length": str(declared if declared is not None else len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders(None if declared is not None else body)
        return conn.getresponse().status
    finally:
        conn.close()
