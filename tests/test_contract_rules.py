"""Every contract rule on serialised bytes, each with a case that breaks it (and only it)."""
import json

import cv2
import numpy as np
import pytest

import contracts
from contracts.format import MANIFEST
from builders import edit_manifest, make_result, restamp

V = contracts.ContractViolation


@pytest.fixture(scope="module")
def good():
    result = make_result()
    return result.request_id, contracts.serialise(result)


def csv_lines(objects, name="GR.csv"):
    return objects[name].decode().split("\n")


def with_csv(objects, lines, name="GR.csv"):
    return restamp({**objects, name: "\n".join(lines).encode()})


def test_valid_set_passes(good):
    contracts.validate(*good)


def test_object_names_in_write_order(good):
    assert list(good[1]) == ["GR.csv", "ILD.csv", "curves.las", "mask.png", "manifest.json"]


def test_serialise_is_deterministic():
    assert contracts.serialise(make_result()) == contracts.serialise(make_result())


# --- CSV rules -------------------------------------------------------------------------------------------

def test_299_rows_is_rejected(good):
    lines = csv_lines(good[1])
    with pytest.raises(V, match="299 data rows"):
        contracts.validate(good[0], with_csv(good[1], lines[:-2] + [""]))


def test_301_rows_is_rejected(good):
    lines = csv_lines(good[1])
    with pytest.raises(V, match="301 data rows"):
        contracts.validate(good[0], with_csv(good[1], lines[:-1] + [lines[-2], ""]))


def test_csv_cut_short_mid_row_is_rejected(good):
    data = good[1]["GR.csv"]
    with pytest.raises(V, match="newline|rows"):
        contracts.validate(good[0], restamp({**good[1], "GR.csv": data[: len(data) - 4]}))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "", "1e3", "12.5", " 1.000000", "0x10"])
def test_non_finite_or_misformatted_value_is_rejected(good, value):
    lines = csv_lines(good[1])
    depth = lines[5].split(",")[0]
    lines[5] = f"{depth},{value}"
    with pytest.raises(V, match="row 5"):
        contracts.validate(good[0], with_csv(good[1], lines))


def test_negative_zero_is_rejected(good):
    lines = csv_lines(good[1])
    lines[7] = lines[7].split(",")[0] + ",-0.000000"
    with pytest.raises(V, match="negative zero"):
        contracts.validate(good[0], with_csv(good[1], lines))


def test_non_monotonic_depth_is_rejected(good):
    lines = csv_lines(good[1])
    lines[10], lines[11] = lines[11], lines[10]
    with pytest.raises(V, match="off the grid"):
        contracts.validate(good[0], with_csv(good[1], lines))


def test_wrong_header_is_rejected(good):
    lines = csv_lines(good[1])
    lines[0] = "DEPTH,GR"
    with pytest.raises(V, match="header"):
        contracts.validate(good[0], with_csv(good[1], lines))


def test_crlf_line_ends_are_rejected(good):
    data = good[1]["GR.csv"].replace(b"\n", b"\r\n")
    with pytest.raises(V, match="line ends"):
        contracts.validate(good[0], restamp({**good[1], "GR.csv": data}))


def test_non_utf8_is_rejected(good):
    with pytest.raises(V, match="UTF-8"):
        contracts.validate(good[0], restamp({**good[1], "GR.csv": b"depth,value\n\xff\n"}))


# --- mask rules ------------------------------------------------------------------------------------------

def png(mask):
    return cv2.imencode(".png", mask)[1].tobytes()


def test_mask_value_3_is_rejected(good):
    mask = np.zeros((400, 120), np.uint8)
    mask[5, 5] = 3
    with pytest.raises(V, match=r"values \[3\]"):
        contracts.validate(good[0], restamp({**good[1], "mask.png": png(mask)}))


def test_mask_of_other_size_is_rejected(good):
    with pytest.raises(V, match="track is 120x400"):
        contracts.validate(good[0], restamp({**good[1], "mask.png": png(np.zeros((400, 121), np.uint8))}))


def test_16_bit_mask_is_rejected(good):
    with pytest.raises(V, match="8-bit"):
        contracts.validate(good[0], restamp({**good[1], "mask.png": png(np.zeros((400, 120), np.uint16))}))


def test_colour_mask_is_rejected(good):
    with pytest.raises(V, match="single-channel"):
        contracts.validate(good[0], restamp({**good[1], "mask.png": png(np.zeros((400, 120, 3), np.uint8))}))


def test_truncated_mask_is_rejected(good):
    data = good[1]["mask.png"]
    with pytest.raises(V, match="IEND|decode"):
        contracts.validate(good[0], restamp({**good[1], "mask.png": data[: len(data) // 2]}))


def test_mask_that_is_not_png_is_rejected(good):
    jpeg = cv2.imencode(".jpg", np.zeros((400, 120), np.uint8))[1].tobytes()
    with pytest.raises(V, match="not a PNG"):
        contracts.validate(good[0], restamp({**good[1], "mask.png": jpeg}))


# --- LAS rules -------------------------------------------------------------------------------------------

def test_las_reads_back_with_lasio_to_the_csv_values(good):
    import io
    import lasio
    las = lasio.read(io.StringIO(good[1]["curves.las"].decode()))
    gr = np.loadtxt(io.BytesIO(good[1]["GR.csv"]), delimiter=",", skiprows=1)
    assert np.array_equal(las["DEPT"], gr[:, 0]) and np.array_equal(las["GR"], gr[:, 1])
    assert [c.unit for c in las.curves] == ["ft", "gAPI", "ohmm"]


def test_las_values_differing_from_csv_are_rejected(good):
    text = good[1]["curves.las"].decode()
    head, data = text.split("~ASCII")
    rows = data.split("\n")
    rows[3] = rows[3][:-3] + "999"
    with pytest.raises(V, match="values of"):
        contracts.validate(good[0], restamp({**good[1], "curves.las": (head + "~ASCII" + "\n".join(rows)).encode()}))


def test_las_with_wrong_curve_names_is_rejected(good):
    data = good[1]["curves.las"].replace(b"\nILD .ohmm", b"\nRES .ohmm")
    with pytest.raises(V, match="curves"):
        contracts.validate(good[0], restamp({**good[1], "curves.las": data}))


# --- manifest and object-set rules -----------------------------------------------------------------------

def test_object_changed_after_manifest_is_rejected(good):
    data = good[1]["GR.csv"].replace(b"\n", b"\n", 1)[:-2] + b"1\n"
    with pytest.raises(V, match="do not match the manifest"):
        contracts.validate(good[0], {**good[1], "GR.csv": data})


def test_missing_object_is_rejected(good):
    objects = dict(good[1])
    del objects["ILD.csv"]
    with pytest.raises(V, match="expected"):
        contracts.validate(good[0], objects)


def test_extra_object_is_rejected(good):
    with pytest.raises(V, match="expected"):
        contracts.validate(good[0], {**good[1], "notes.txt": b"hi"})


def test_missing_manifest_is_rejected(good):
    objects = {k: v for k, v in good[1].items() if k != MANIFEST}
    with pytest.raises(V, match="no manifest"):
        contracts.validate(good[0], objects)


def test_non_canonical_manifest_is_rejected(good):
    m = json.loads(good[1][MANIFEST])
    with pytest.raises(V, match="canonical"):
        contracts.validate(good[0], {**good[1], MANIFEST: json.dumps(m).encode()})


def test_wrong_request_id_is_rejected(good):
    with pytest.raises(V, match="request_id"):
        contracts.validate("f" * 32, good[1])


@pytest.mark.parametrize("rid", ["../../etc", "ABC", "0" * 31, None])
def test_malformed_request_id_is_rejected(good, rid):
    with pytest.raises(V, match="32 lowercase hex"):
        contracts.validate(rid, good[1])


def test_request_id_not_matching_inputs_is_rejected(good):
    with pytest.raises(V, match="not the hash"):
        contracts.validate(good[0], edit_manifest(good[1], model_version="1" * 64))


def test_other_contract_version_is_rejected(good):
    with pytest.raises(V, match="contract_version"):
        contracts.validate(good[0], edit_manifest(good[1], contract_version="3"))


@pytest.mark.parametrize("coverage", [{"GR": 1.5, "ILD": 0.5}, {"GR": 0.5}, {"GR": float("nan"), "ILD": 1}])
def test_bad_coverage_is_rejected(good, coverage):
    m = json.loads(good[1][MANIFEST])
    m["coverage"] = coverage
    with pytest.raises(V):
        contracts.validate(good[0], {**good[1], MANIFEST: json.dumps(m, sort_keys=True, indent=1).encode() + b"\n"})


def test_nan_in_result_fails_before_anything_is_written(tmp_path):
    result = make_result()
    result.curves["GR"][3] = np.nan
    with pytest.raises(V, match="row 4"):
        contracts.commit(result, str(tmp_path / "root"))
    assert not (tmp_path / "root").exists()


def test_result_with_wrong_length_fails_before_anything_is_written(tmp_path):
    result = make_result()
    result.curves["ILD"] = result.curves["ILD"][:299]
    with pytest.raises(V, match="299 data rows"):
        contracts.commit(result, str(tmp_path))
    assert list(tmp_path.iterdir()) == []
