"""decode_scan on real encoded bytes (cv2 / tifffile) and on hand-made broken or hostile headers."""
import hashlib
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import tifffile

from digitiser.imageio import BadImage, DecodedScan, ImageLimits, decode_scan, sniff_format


@pytest.fixture(scope="module")
def gray():
    """60 x 80 uint8 scan-like image: light paper, dark curve, a gradient so that errors show."""
    img = np.tile(np.linspace(150, 250, 80).astype(np.uint8), (60, 1))
    cv2.line(img, (10, 0), (70, 59), 20, 2)
    return img


def encode(img, ext, *params):
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def tiff_bytes(data, **kwargs):
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, **kwargs)
    return buf.getvalue()


def png_header_only(width, height):
    """Signature + IHDR with a valid CRC + IEND: claims any size without holding pixels."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    ihdr = struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))
    return b"\x89PNG\r\n\x1a\n" + ihdr + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def g4_tiff(width=32, height=6, x0=7, bar=4):
    """1-bit CCITT G4 TIFF of a white page with a black vertical bar at columns [x0, x0 + bar).

    cv2 cannot encode G4 from 8-bit data, so the strip is coded by hand: row 0 in horizontal mode
    (001 + white run 7 = 1111 + black run 4 = 011) then V0 (1) to the line end; every later row repeats the
    reference line (V0 V0 V0); then EOFB. Tags are written little-endian (WhiteIsZero, one strip).
    """
    assert (width, x0, bar) == (32, 7, 4), "the run codes below are for this layout"
    bits = "001" + "1111" + "011" + "1" + "111" * (height - 1) + "000000000001" * 2
    bits += "0" * (-len(bits) % 8)
    strip = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    tags = [(256, 3, width), (257, 3, height), (258, 3, 1), (259, 3, 4), (262, 3, 0),
            (273, 4, None), (277, 3, 1), (278, 3, height), (279, 4, len(strip))]
    data_at = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags))
    for tag, typ, value in tags:
        value = data_at if value is None else value
        packed = struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)  # SHORT or LONG
        ifd += struct.pack("<HHI", tag, typ, 1) + packed
    expected = np.full((height, width), 255, np.uint8)
    expected[:, x0:x0 + bar] = 0
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip, expected


def kind_of(data, limits=ImageLimits()):
    with pytest.raises(BadImage) as err:
        decode_scan(data, limits)
    return err.value.kind


def test_png_round_trip(gray):
    scan = decode_scan(encode(gray, ".png"))
    assert isinstance(scan, DecodedScan) and scan.format == "png"
    assert scan.gray.dtype == np.uint8 and scan.gray.shape == (60, 80)
    assert (scan.width, scan.height) == (80, 60)
    assert np.array_equal(scan.gray, gray)


def test_jpeg_round_trip(gray):
    scan = decode_scan(encode(gray, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95))
    assert scan.format == "jpeg" and scan.gray.shape == (60, 80)
    assert np.abs(scan.gray.astype(int) - gray).mean() < 3


def test_tiff_round_trip(gray):
    for data in (tiff_bytes(gray), tiff_bytes(gray, compression="zlib"), encode(gray, ".tif"),
                 tiff_bytes(gray, bigtiff=True)):
        scan = decode_scan(data)
        assert scan.format == "tiff" and np.array_equal(scan.gray, gray)


def test_multipage_tiff_gives_first_page(gray):
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        tw.write(gray)
        tw.write(255 - gray)
    assert np.array_equal(decode_scan(buf.getvalue()).gray, gray)


def test_g4_tiff_decodes():
    data, expected = g4_tiff()
    assert tifffile.TiffFile(io.BytesIO(data)).pages[0].compression == 4
    scan = decode_scan(data)
    assert scan.format == "tiff" and np.array_equal(scan.gray, expected)


def test_bilevel_uncompressed_tiff_decodes():
    bits = np.zeros((8, 16), bool)
    bits[:, 3] = True  # tifffile writes bool as 1-bit min-is-white: True is ink
    scan = decode_scan(tiff_bytes(bits))
    assert np.array_equal(scan.gray, np.where(bits, 0, 255).astype(np.uint8))


def test_colour_becomes_gray(gray):
    bgr = cv2.merge([gray, 255 - gray, gray // 2])
    scan = decode_scan(encode(bgr, ".png"))
    assert scan.gray.ndim == 2
    assert np.abs(scan.gray.astype(int) - cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).max() <= 1


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tiff"])
def test_colour_files_keep_their_colour(gray, ext):
    bgr = cv2.merge([gray, 255 - gray, gray // 2])
    data = encode(bgr, ext)
    scan = decode_scan(data)
    assert scan.colour.shape == (*gray.shape, 3) and scan.pixels is scan.colour
    assert np.array_equal(scan.colour, bgr if ext != ".jpg" else cv2.imdecode(np.frombuffer(data, np.uint8), 1))
    assert np.abs(scan.gray.astype(int) - cv2.cvtColor(scan.colour, cv2.COLOR_BGR2GRAY)).max() <= 2


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tiff"])
def test_grey_files_and_grey_saved_as_colour_carry_no_colour(gray, ext):
    for data in (encode(gray, ext), encode(cv2.merge([gray] * 3), ext) if ext != ".jpg" else encode(gray, ext)):
        scan = decode_scan(data)
        assert scan.colour is None and scan.pixels is scan.gray


def test_a_g4_scan_carries_no_colour():
    data, expected = g4_tiff()
    assert decode_scan(data).colour is None


def test_sixteen_bit_scaled_to_eight(gray):
    wide = gray.astype(np.uint16) * 257
    for data in (encode(wide, ".png"), tiff_bytes(wide)):
        assert np.array_equal(decode_scan(data).gray, gray)


def test_sha256_and_n_bytes(gray):
    data = encode(gray, ".png")
    scan = decode_scan(data)
    assert scan.sha256 == hashlib.sha256(data).hexdigest() and scan.n_bytes == len(data)


def test_bytes_like_input(gray):
    data = encode(gray, ".png")
    assert np.array_equal(decode_scan(memoryview(data)).gray, gray)
    assert decode_scan(bytearray(data)).sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_png_is_corrupt(gray, cut):
    data = encode(gray, ".png")
    assert kind_of(data[:int(len(data) * cut)]) == "corrupt"


def test_png_without_iend_is_corrupt(gray):
    assert kind_of(encode(gray, ".png")[:-12]) == "corrupt"


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_jpeg_is_corrupt(gray, cut):
    data = encode(gray, ".jpg")
    assert kind_of(data[:int(len(data) * cut)]) == "corrupt"


def test_jpeg_cut_in_headers_is_corrupt(gray):
    assert kind_of(encode(gray, ".jpg")[:40]) == "corrupt"


@pytest.mark.parametrize("writer", ["tifffile", "cv2"])
def test_truncated_tiff_is_corrupt(gray, writer):
    data = tiff_bytes(gray) if writer == "tifffile" else encode(gray, ".tif")
    assert kind_of(data[:len(data) - 100]) == "corrupt"


def test_bad_ihdr_crc_is_corrupt():
    data = bytearray(png_header_only(100, 100))
    data[20] ^= 1
    assert kind_of(bytes(data)) == "corrupt"


@pytest.mark.parametrize("data", [b"", b"depth,GR\n1000,45.2\n1001,47.9\n", b"%PDF-1.7\n...", b"GIF89a\x01\x00",
                                  np.random.default_rng(0).bytes(4096)])
def test_not_an_image(data):
    assert sniff_format(data) is None
    assert kind_of(data) == "not_image"


def test_not_image_message_says_what_to_do():
    with pytest.raises(BadImage, match="PNG, JPEG or TIFF") as err:
        decode_scan(b"hello")
    assert isinstance(err.value, ValueError)


def test_over_max_bytes(gray):
    data = encode(gray, ".png")
    with pytest.raises(BadImage, match="MiB") as err:
        decode_scan(data, ImageLimits(max_bytes=len(data) - 1))
    assert err.value.kind == "too_large"


def test_png_header_claiming_huge_size_is_too_large_without_decoding():
    with pytest.raises(BadImage, match="100000 x 100000") as err:
        decode_scan(png_header_only(100_000, 100_000))
    assert err.value.kind == "too_large"


def test_over_max_side():
    assert kind_of(png_header_only(70_000, 10)) == "too_large"


def test_jpeg_sof_size_checked(gray):
    data = bytearray(encode(gray, ".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 20_000, 20_000)  # 400 Mpx
    assert kind_of(bytes(data)) == "too_large"


def test_tiff_first_ifd_size_checked():
    data = tiff_bytes(np.zeros((100, 100), np.uint8))
    assert kind_of(data, ImageLimits(max_pixels=9_999)) == "too_large"
    assert decode_scan(data, ImageLimits(max_pixels=10_000)).gray.shape == (100, 100)


def test_float_tiff_is_unsupported():
    assert kind_of(tiff_bytes(np.zeros((10, 10), np.float32))) == "unsupported"


def test_limits_validated():
    with pytest.raises(ValueError, match="OpenCV"):
        ImageLimits(max_pixels=2**31)
