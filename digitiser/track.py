"""A scan cut to its track: the calibration's window and the rows of its depth interval (contract v2 sheets).

Both routes cut before segmenting, so segmentation costs what the track costs, not the whole sheet, and the
class mask covers exactly the track box the manifest names. No torch here: the ingress imports it.
"""
import dataclasses

import numpy as np

import contracts
from digitiser.imageio import DecodedScan


def cut_track(scan: DecodedScan, calibration: contracts.Calibration) -> DecodedScan:
    """`scan` with `gray` (and `colour`) cut to `calibration.box(width, height)` (contiguous copies, or the scan
    itself when the box is the whole image or the scan is already cut). width, height, sha256, n_bytes and format
    stay the input's. Raises contracts.ContractViolation when the window or depth interval lies outside the image."""
    box = calibration.box(scan.width, scan.height)
    if scan.gray.shape == box.shape:
        return scan
    assert scan.gray.shape == (scan.height, scan.width), "cut_track takes a whole decoded scan"
    rows, cols = slice(box.top_px, box.bottom_px), slice(box.left_px, box.right_px)
    colour = None if scan.colour is None else np.ascontiguousarray(scan.colour[rows, cols])
    return dataclasses.replace(scan, gray=np.ascontiguousarray(scan.gray[rows, cols]), colour=colour)
