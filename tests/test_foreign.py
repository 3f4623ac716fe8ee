"""The foreign evaluation family: independent of the training generator, exact truth on the ink, deterministic,
read by `digitise eval` unchanged."""
import json
import subprocess
import sys

import numpy as np
import pytest

from foreign import excerpts, render_scan

TRAINING_GENERATOR = ("digitiser.synth", "digitiser.synth_paper", "digitiser.strokes", "digitiser.shape_scales",
                      "digitiser.curve_shapes", "digitiser.g4tiff")


@pytest.fixture(scope="module")
def scans():
    return [render_scan(5, i) for i in range(12)]


@pytest.fixture(scope="module")
def held_out():
    """The first 60 scans of the family's held-out set (seed 2718), drawn once for the tests that count."""
    return [render_scan(2718, i) for i in range(60)]


def test_family_imports_nothing_from_the_training_generator():
    code = ("import sys, foreign; foreign.render_scan(1, 0); "
            "print(','.join(m for m in sys.modules if m.startswith('digitiser')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the foreign family imported {out}"
    assert not any(m in out for m in TRAINING_GENERATOR)


def test_same_seed_same_bytes_other_seed_other_scan():
    a, b, c = render_scan(5, 3), render_scan(5, 3), render_scan(6, 3)
    assert a["encoded"] == b["encoded"] and np.array_equal(a["x_frac"], b["x_frac"], equal_nan=True)
    assert a["encoded"] != c["encoded"]


def test_truth_runs_on_the_solid_curves_own_ink(scans):
    """Where a row holds curve-1 ink, the truth at that row is within the pen (plus skew rounding) of it (scans
    whose curve 1 left ink on >= 30 depth rows: a light curve may vanish in a 1-bit scan, one off scale on the
    edge line)."""
    checked = 0
    for s in scans:
        mask, x = s["mask"], s["x_frac"][:, 0]
        h, w = mask.shape
        near = []
        for k in range(300):
            cols = np.flatnonzero(mask[round(k * (h - 1) / 299)] == 1)
            if cols.size and np.isfinite(x[k]):
                near.append(np.min(np.abs(cols + 0.5 - x[k] * w)) <= 2.5)
        if len(near) >= 30:
            checked += 1
            assert np.mean(near) >= 0.95, f"truth off the ink at {1 - np.mean(near):.0%} of rows"
    assert checked >= len(scans) // 2


def test_truth_and_values_follow_the_calibration(scans):
    for s in scans:
        c1 = s["calibration"]["curves"][0]
        f = s["x_frac"][:, 0]
        if c1["scale"] == "log":
            expect = 10 ** (np.log10(c1["left"]) + f * (np.log10(c1["right"]) - np.log10(c1["left"])))
        else:
            expect = c1["left"] + f * (c1["right"] - c1["left"])
        np.testing.assert_allclose(s["values"][:, 0], expect, rtol=1e-9)
        h, w = s["mask"].shape
        assert 100 <= w <= 600 and 300 <= h <= 3000
        assert np.nanmin(s["x_frac"]) >= 0.5 / w - 1e-12 and np.nanmax(s["x_frac"]) <= 1 - 0.5 / w + 1e-12


def test_features_say_what_the_track_holds(held_out):
    """`features` (kept in the truth file, reported by `digitise eval` as by_feature) name the light red 1-px
    curve 1 and the third line exactly where the track has them."""
    many = held_out
    light = [s for s in many if "light pen" in s["features"]]
    third = [s for s in many if "third line" in s["features"]]
    assert 2 <= len(light) <= 15 and 8 <= len(third) <= 30
    assert all(set(s["features"]) <= {"light pen", "third line"} for s in many)
    assert not any(np.isfinite(s["third_x"]).any() for s in many if "third line" not in s["features"])
    assert sum(np.isfinite(s["third_x"]).mean() > 0.5 for s in third) >= 0.8 * len(third)   # its path is kept


def test_styles_name_how_curve_2_and_the_third_line_are_dashed(held_out):
    """`styles` (kept in the truth file, reported by `digitise eval` as by_style): curve 2's matplotlib dash
    style in every scan, the third line's where it is drawn, as visible on:off lengths in pen widths."""
    from foreign.family import style_name
    assert style_name("--") == "dash 3.7:1.6" and style_name(":") == "dot 1:1.65" and style_name("-") == "solid"
    assert style_name("-.") == "dash-dot 6.4:1.6:1:1.6" and style_name((0, (10, 4))) == "dash 10:4"
    many = held_out[:30]
    for s in many:
        assert s["styles"][0].startswith("curve 2 ") and len(s["styles"]) == 1 + ("third line" in s["features"])
    assert len({s["styles"][0] for s in many}) >= 4


def test_family_covers_what_it_promises(held_out):
    """Over 40 scans: colour and grey and 1-bit, PNG/JPEG/TIFF, narrow and wide, curves on the edge."""
    many = held_out[:40]
    exts = {s["ext"] for s in many}
    colour = sum(s["image"].ndim == 3 for s in many)
    widths = [s["mask"].shape[1] for s in many]
    on_edge = sum(bool(np.any(np.abs(s["x_frac"] - 0.5) >= 0.5 - 1.0 / s["mask"].shape[1])) for s in many)
    assert exts == {"png", "jpg", "tif"} and 5 <= colour <= 35
    assert min(widths) < 160 and max(widths) > 400 and on_edge >= 4


def test_digitise_eval_reads_the_family_unchanged(tmp_path, capsys):
    from cli import main
    data, report = tmp_path / "foreign", tmp_path / "eval.json"
    assert main(["foreign", str(data), "--n", "3", "--seed", "9"]) == 0
    assert len(list(data.glob("*.truth.npz"))) == 3
    assert main(["eval", str(data), "--json", str(report)]) == 0
    s = json.loads(report.read_text())
    assert s["n_scans"] == 3 and sum(b["n_scans"] for b in s["by_width"]) == 3
    assert all("width" in r for r in s["per_scan"]) and sum(b["n_scans"] for b in s["by_pixels"]) == 3
    assert {r["pixels"] for r in s["per_scan"]} <= {"colour", "grey", "bilevel"}
    described = {b["feature"]: b["n_scans"] for b in s["by_feature"]}
    assert described["none"] == sum(not r["features"] for r in s["per_scan"])
    assert sum(b["n_scans"] for b in s["by_style"] if b["style"].startswith("curve 2")) == 3
    with np.load(next(data.glob("*.truth.npz"))) as truth:
        assert truth["third_x"].shape == (300,)
    assert "width (px)" in capsys.readouterr().out


@pytest.mark.skipif(not excerpts.LAS_DIR.is_dir(), reason="no ../shared/data/las next to the checkout")
def test_shipped_excerpts_rebuild_from_the_las_files():
    built, shipped = excerpts.build(excerpts.LAS_DIR), np.load(excerpts.EXCERPTS)
    for key in ("curves", "depth", "scales"):
        np.testing.assert_array_equal(built[key], shipped[key])
    assert list(built["source"]) == list(shipped["source"])
