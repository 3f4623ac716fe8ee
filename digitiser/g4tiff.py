"""Bi-level TIFF with CCITT Group 4 (T.6) compression, as 200 dpi archive scanners write them.

Nothing installed here can *encode* G4: OpenCV's libtiff refuses 8-bit input for fax compression, and
tifffile neither compresses bi-level images nor wraps pre-compressed bi-level strips. So this module
holds a small pure-Python T.6 encoder and a minimal TIFF writer; OpenCV (libtiff) decodes the result.
"""
from bisect import bisect_right
import struct

import numpy as np

_WHITE_TERM = (
    "00110101 000111 0111 1000 1011 1100 1110 1111 10011 10100 00111 01000 001000 000011 110100 110101 "
    "101010 101011 0100111 0001100 0001000 0010111 0000011 0000100 0101000 0101011 0010011 0100100 "
    "0011000 00000010 00000011 00011010 00011011 00010010 00010011 00010100 00010101 00010110 00010111 "
    "00101000 00101001 00101010 00101011 00101100 00101101 00000100 00000101 00001010 00001011 01010010 "
    "01010011 01010100 01010101 00100100 00100101 01011000 01011001 01011010 01011011 01001010 01001011 "
    "00110010 00110011 00110100").split()
_BLACK_TERM = (
    "0000110111 010 11 10 011 0011 0010 00011 000101 000100 0000100 0000101 0000111 00000100 00000111 "
    "000011000 0000010111 0000011000 0000001000 00001100111 00001101000 00001101100 00000110111 "
    "00000101000 00000010111 00000011000 000011001010 000011001011 000011001100 000011001101 "
    "000001101000 000001101001 000001101010 000001101011 000011010010 000011010011 000011010100 "
    "000011010101 000011010110 000011010111 000001101100 000001101101 000011011010 000011011011 "
    "000001010100 000001010101 000001010110 000001010111 000001100100 000001100101 000001010010 "
    "000001010011 000000100100 000000110111 000000111000 000000100111 000000101000 000001011000 "
    "000001011001 000000101011 000000101100 000001011010 000001100110 000001100111").split()
# make-up codes for runs 64, 128, ..., 1728
_WHITE_MAKEUP = (
    "11011 10010 010111 0110111 00110110 00110111 01100100 01100101 01101000 01100111 011001100 "
    "011001101 011010010 011010011 011010100 011010101 011010110 011010111 011011000 011011001 "
    "011011010 011011011 010011000 010011001 010011010 011000 010011011").split()
_BLACK_MAKEUP = (
    "0000001111 000011001000 000011001001 000001011011 000000110011 000000110100 000000110101 "
    "0000001101100 0000001101101 0000001001010 0000001001011 0000001001100 0000001001101 "
    "0000001110010 0000001110011 0000001110100 0000001110101 0000001110110 0000001110111 "
    "0000001010010 0000001010011 0000001010100 0000001010101 0000001011010 0000001011011 "
    "0000001100100 0000001100101").split()
# extended make-up codes (both colours) for runs 1792, 1856, ..., 2560
_EXT_MAKEUP = (
    "00000001000 00000001100 00000001101 000000010010 000000010011 000000010100 000000010101 "
    "000000010110 000000010111 000000011100 000000011101 000000011110 000000011111").split()
_VERTICAL = {0: "1", 1: "011", 2: "000011", 3: "0000011", -1: "010", -2: "000010", -3: "0000010"}
_PASS, _HORIZONTAL, _EOFB = "0001", "001", "000000000001" * 2


def _run_code(run: int, black: bool) -> str:
    """Modified-Huffman code for one run of `run` pixels of one colour (T.4 tables)."""
    term, makeup = (_BLACK_TERM, _BLACK_MAKEUP) if black else (_WHITE_TERM, _WHITE_MAKEUP)
    parts = []
    while run >= 2560:
        parts.append(_EXT_MAKEUP[-1])
        run -= 2560
    if run >= 64:
        m = run // 64
        parts.append(makeup[m - 1] if m <= 27 else _EXT_MAKEUP[m - 28])
        run -= 64 * m
    parts.append(term[run])
    return "".join(parts)


def _changes(ink: np.ndarray) -> list[list[int]]:
    """Changing elements of every line (the pixel before column 0 is white), each with sentinels at W."""
    h, w = ink.shape
    change = np.empty((h, w), bool)
    change[:, 0] = ink[:, 0] != 0
    np.not_equal(ink[:, 1:], ink[:, :-1], out=change[:, 1:])
    r, c = np.nonzero(change)
    bounds = np.searchsorted(r, np.arange(h + 1)).tolist()
    cols = c.tolist()
    return [cols[bounds[i]:bounds[i + 1]] + [w, w, w] for i in range(h)]


def _encode_line(ref: list[int], cur: list[int], width: int, out: list[str]) -> None:
    """Append the T.6 codes of one coding line `cur` against reference line `ref` to `out`."""
    a0, black = -1, False
    while a0 < width:
        j = bisect_right(ref, a0)
        if (j % 2 == 1) != black:   # b1 must have the colour opposite to a0's: even index = black
            j += 1
        b1, b2 = ref[j], ref[j + 1]
        i = bisect_right(cur, a0)
        a1 = cur[i]
        if b2 < a1:
            out.append(_PASS)
            a0 = b2
        elif abs(a1 - b1) <= 3:
            out.append(_VERTICAL[a1 - b1])
            a0, black = a1, not black
        else:
            a2 = cur[i + 1]
            out.append(_HORIZONTAL + _run_code(a1 - max(a0, 0), black) + _run_code(a2 - a1, not black))
            a0 = a2


def encode_g4(ink: np.ndarray) -> bytes:
    """CCITT T.6 bit stream (MSB first, with EOFB) of a bi-level image.

    Args:
        ink: HxW bool or uint8, nonzero = black (ink).
    Returns:
        The compressed strip, byte-aligned.
    """
    assert ink.ndim == 2, f"expected HxW, got shape {ink.shape}"
    rows = (np.asarray(ink) != 0).astype(np.uint8)
    width = rows.shape[1]
    out: list[str] = []
    ref = [width, width, width]
    for cur in _changes(rows):
        if cur == ref:              # identical line: one V0 per changing element, plus the end of line
            out.append("1" * (len(cur) - 2))
        else:
            _encode_line(ref, cur, width, out)
        ref = cur
    out.append(_EOFB)
    bits = "".join(out)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def write_g4_tiff(ink: np.ndarray, dpi: int = 200) -> bytes:
    """Bytes of a little-endian, single-strip, WhiteIsZero, 1-bit TIFF with G4 compression.

    Args:
        ink: HxW bool or uint8, nonzero = black (ink).
        dpi: resolution written to the X/YResolution tags (pixels per inch).
    """
    h, w = ink.shape
    strip = encode_g4(ink)
    # (tag, type, value): type 3 SHORT, 4 LONG, 5 RATIONAL (stored after the IFD)
    n_tags = 13
    ifd_offset = 8 + len(strip) + (len(strip) % 2)
    res_offset = ifd_offset + 2 + 12 * n_tags + 4
    tags = [(256, 4, w), (257, 4, h), (258, 3, 1), (259, 3, 4), (262, 3, 0), (266, 3, 1), (273, 4, 8),
            (277, 3, 1), (278, 4, h), (279, 4, len(strip)), (282, 5, res_offset), (283, 5, res_offset + 8),
            (296, 3, 2)]
    assert len(tags) == n_tags
    out = [b"II*\x00", struct.pack("<I", ifd_offset), strip, b"\x00" * (len(strip) % 2),
           struct.pack("<H", n_tags)]
    for tag, typ, value in tags:
        fmt = "<HHIHH" if typ == 3 else "<HHII"
        out.append(struct.pack(fmt, tag, typ, 1, value, 0) if typ == 3 else struct.pack(fmt, tag, typ, 1, value))
    out.append(struct.pack("<I", 0))
    out.append(struct.pack("<IIII", dpi, 1, dpi, 1))
    return b"".join(out)
