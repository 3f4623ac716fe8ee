"""Whole sheets (contract v2 `window` and `depth_ties`): parsing, geometry, and the shipped digitiser on
tracks placed in a larger sheet, against the same tracks cropped by hand with the equivalent v1-style
calibration."""
import functools

import cv2
import numpy as np
import pytest

import contracts
from digitiser import cut_track, decode_scan
from digitiser.synth import render_scan

C = contracts.Calibration
V = contracts.ContractViolation
SEEDS = (0, 1)   # clean 400 x 200 scans the shipped weights digitise (see test_batch.GOOD_SEEDS)


# ----------------------------------------------------------------------------- parsing and geometry

def test_the_issue_example_parses_and_places_the_interval():
    cal = C.from_dict({"window": {"left_px": 665, "right_px": 1664},
                       "depth_ties": [{"row": 11000, "depth": 1100.0}, {"row": 9000, "depth": 900.0}],
                       "top_depth": 880.0, "bottom_depth": 1110.0, "depth_unit": "ft",
                       "curves": [{"name": "DT", "left": 140, "right": 40}, {"name": "PHI", "left": 30, "right": -10}]})
    assert [t.row for t in cal.depth_ties] == [9000.0, 11000.0]   # normalised: sorted by row
    box = cal.box(1664, 17864)
    assert box.to_dict() == {"left_px": 665, "right_px": 1664, "top_px": 8800, "bottom_px": 11101}
    assert box.rows[0] == 0.0 and box.rows[-1] == 2300.0 and box.shape == (2301, 999)


def test_without_ties_the_depths_sit_on_the_first_and_last_row():
    box = C.from_dict({"window": {"left_px": 10, "right_px": 50}}).box(60, 101)
    assert box.to_dict() == {"left_px": 10, "right_px": 50, "top_px": 0, "bottom_px": 101}
    assert np.allclose(box.rows, np.arange(300) * 100 / 299)


def test_without_window_or_ties_the_normalised_form_is_v1s():
    assert C.from_dict({}).to_dict() == C.from_dict({}, version="1").to_dict()


@pytest.mark.parametrize("ties, match", [
    ([{"row": 10, "depth": 100}], "at least two"),
    ([{"row": 10, "depth": 100}, {"row": 10, "depth": 200}], "distinct"),
    ([{"row": 0, "depth": 0}, {"row": 100, "depth": 100}, {"row": 200, "depth": 50}], "row 200"),
    ([{"row": 0, "depth": 0}, {"row": 100, "depth": 0}], "not monotonic"),
    ([{"row": r, "depth": d} for r, d in [(0, 0), (100, 100), (200, 215), (300, 300), (400, 400)]],
     "tie at row 200 .* px from the line"),
    ([{"row": 0, "depth": 0}, {"row": "100", "depth": 100}], "number"),
    ([{"row": 0, "depth": 0, "x": 1}, {"row": 100, "depth": 100}], "row"),
])
def test_bad_ties_are_refused_naming_the_tie(ties, match):
    with pytest.raises(V, match=match):
        C.from_dict({"depth_ties": ties})


@pytest.mark.parametrize("window", [{"left_px": 5}, {"left_px": 5, "right_px": 5}, {"left_px": -1, "right_px": 5},
                                    {"left_px": 0.5, "right_px": 5}, [0, 5]])
def test_bad_windows_are_refused(window):
    with pytest.raises(V, match="window"):
        C.from_dict({"window": window})


def test_a_v1_calibration_has_no_sheet_parts():
    with pytest.raises(V, match="unknown fields"):
        C.from_dict({"window": {"left_px": 0, "right_px": 5}}, version="1")


TIES = [{"row": 100, "depth": 1000.0}, {"row": 300, "depth": 1200.0}]


@pytest.mark.parametrize("calibration, match", [
    ({"depth_ties": TIES, "top_depth": 950.0, "bottom_depth": 1250.0}, "outside the scan's rows 0..199"),
    ({"depth_ties": TIES, "top_depth": 850.0, "bottom_depth": 1050.0}, "outside"),
    ({"depth_ties": TIES, "top_depth": 1050.0, "bottom_depth": 950.0}, "upper end"),
    ({"window": {"left_px": 10, "right_px": 61}}, "width of 60"),
])
def test_a_track_outside_the_image_is_refused(calibration, match):
    with pytest.raises(V, match=match):
        C.from_dict(calibration).box(60, 200)


# ----------------------------------------------------------------------------- the shipped digitiser on sheets

@functools.lru_cache(maxsize=None)
def _track(seed: int):
    return render_scan(seed, height=400, width=200, style="clean")


def _sheet(height: int, placements: list[tuple[int, int, int]]) -> np.ndarray:
    """A white sheet holding tracks (seed, top row, left column), with a depth column of ticks at the left."""
    width = max(left for _, _, left in placements) + 240
    sheet = np.full((height, width), 255, np.uint8)
    sheet[:, 40] = 0
    sheet[::50, 30:50] = 0
    for seed, top, left in placements:
        sheet[top:top + 400, left:left + 200] = _track(seed).image
    return sheet


def _png(gray: np.ndarray) -> bytes:
    return cv2.imencode(".png", gray)[1].tobytes()


def _digitise(digitiser, image: bytes, calibration: dict) -> contracts.Digitisation:
    """As both routes do: decode, cut to the track, segment, trace."""
    cal = C.from_dict(calibration)
    scan = cut_track(decode_scan(image), cal)
    return digitiser.finish(scan, cal, digitiser.segment_scans([scan])[0])


def _sheet_calibration(seed: int, left: int, depth_at, rows: tuple[int, int], tie_rows) -> dict:
    curves = _track(seed).calibration["curves"]
    return {"window": {"left_px": left, "right_px": left + 200}, "curves": curves, "depth_unit": "ft",
            "depth_ties": [{"row": r, "depth": depth_at(r)} for r in tie_rows],
            "top_depth": depth_at(rows[0]), "bottom_depth": depth_at(rows[1])}


def _hand_crop(sheet: np.ndarray, calibration: dict) -> tuple[bytes, dict]:
    """What a user did before v2: crop the interval's rows and the window by hand, and give v1 depths."""
    box = C.from_dict(calibration).box(sheet.shape[1], sheet.shape[0])
    crop = sheet[box.top_px:box.bottom_px, box.left_px:box.right_px]
    v1 = {k: calibration[k] for k in ("top_depth", "bottom_depth", "depth_unit", "curves")}
    return _png(crop), v1


def _positions(result: contracts.Digitisation) -> np.ndarray:
    """(300, 2) curve positions in track pixels, back from the values through each curve's scale."""
    out = []
    for spec in result.calibration.curves:
        v = result.curves[spec.name]
        if spec.scale == "log":
            f = (np.log10(v) - np.log10(spec.left)) / (np.log10(spec.right) - np.log10(spec.left))
        else:
            f = (v - spec.left) / (spec.right - spec.left)
        out.append(f * result.mask.shape[1])
    return np.stack(out, axis=1)


def test_a_sheet_request_matches_the_hand_cropped_track(digitiser, tmp_path):
    """Two tracks on one sheet, each a request with its window: within 0.1 px of the hand-cropped tracks with
    v1-style calibrations, two different ids, both committed and valid."""
    sheet = _sheet(700, [(SEEDS[0], 150, 180), (SEEDS[1], 150, 420)])
    depth_at = lambda row: 2000.0 + 0.25 * row   # noqa: E731  (4 rows per ft)
    image, root, ids = _png(sheet), str(tmp_path / "results"), []
    for seed, left in ((SEEDS[0], 180), (SEEDS[1], 420)):
        calibration = _sheet_calibration(seed, left, depth_at, (170, 529), (100, 650))
        result = _digitise(digitiser, image, calibration)
        crop, v1 = _hand_crop(sheet, calibration)
        by_hand = _digitise(digitiser, crop, v1)
        assert result.mask.shape == (360, 200) and np.array_equal(result.mask, by_hand.mask)
        assert np.abs(_positions(result) - _positions(by_hand)).max() < 0.1
        assert np.allclose(result.depth, by_hand.depth, rtol=0, atol=1e-9)
        assert contracts.commit(result, root).written
        ids.append(result.request_id)
    assert len(set(ids)) == 2
    report = contracts.audit(root)
    assert report.ok and report.summary["committed"] == 2


def test_ties_in_a_20000_row_sheet(digitiser, tmp_path):
    """A 20,000-row sheet, the track 15,000 rows down; only its narrow window is segmented."""
    sheet = _sheet(20_000, [(SEEDS[0], 15_000, 60)])
    depth_at = lambda row: 1500.0 + 0.1 * row   # noqa: E731
    calibration = _sheet_calibration(SEEDS[0], 60, depth_at, (15_010, 15_390), (200, 19_900))
    result = _digitise(digitiser, _png(sheet), calibration)
    crop, v1 = _hand_crop(sheet, calibration)
    assert np.abs(_positions(result) - _positions(_digitise(digitiser, crop, v1))).max() < 0.1
    assert result.mask.shape == (381, 200) and result.input.height == 20_000
    contracts.commit(result, str(tmp_path))
    back = contracts.load(str(tmp_path), result.request_id)
    assert back.depth[0] == pytest.approx(3001.0) and back.depth[-1] == pytest.approx(3039.0)


def test_ties_equally_far_from_the_line_parse():
    """Two ties at exactly the same distance from the line once made the worst-tie search compare the ties
    themselves: a TypeError (found by the property test)."""
    ties = [{"row": 11741, "depth": 5182104.065535087}, {"row": 15670, "depth": 6916239.73315176},
            {"row": 0, "depth": 0.0}]
    assert [t.row for t in C.from_dict({"depth_ties": ties}).depth_ties] == [0.0, 11741.0, 15670.0]
