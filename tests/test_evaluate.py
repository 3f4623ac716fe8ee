"""`digitise eval` end to end: synthetic scans with truth -> shipped weights -> report, per-scan records, QC."""
import json
import subprocess
import sys

import numpy as np

from cli import main
from digitiser.synth import write_dataset


def test_eval_reports_every_scan_with_legibility_and_overlays(tmp_path, capsys):
    data, report, qc = tmp_path / "eval", tmp_path / "eval.json", tmp_path / "qc"
    write_dataset(str(data), n=4, seed=11)
    assert main(["eval", str(data), "--json", str(report), "--qc", str(qc)]) == 0
    s = json.loads(report.read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # no NaN
    assert s["n_scans"] == 4 and len(s["per_scan"]) == 4
    assert s["tracing"]["min_coverage"] == 0.5 and len(s["model_version"]) == 64 and len(s["truth_digest"]) == 64
    for rec in s["per_scan"]:
        assert 0.0 <= rec["legible_1"] <= 1.0 and 0.0 <= rec["legible_2"] <= 1.0
        assert rec["failed"] or (rec["mae_1"] is not None and rec["iou_1"] is not None)
    traced = [r for r in s["per_scan"] if not r["failed"]]
    assert s["mae_1"] == np.mean([r["mae_1"] for r in traced])
    for k in (1, 2):   # each curve's MAE split by what the reading lies on, parts summing to it
        assert abs(sum(s["error_by_cause"][f"curve_{k}"].values()) - s[f"mae_{k}"]) < 1e-9
    assert 0 <= s["n_illegible"] <= 4 and s["n_failed_legible"] <= s["n_failed"]
    assert sorted(p.name for p in qc.iterdir()) == sorted(f"{i}.qc.png" for i in s["worst"])
    assert f"scans 4, failed {s['n_failed']}" in capsys.readouterr().out


def test_eval_traces_with_the_parameters_given_and_refuses_unknown_ones(tmp_path, capsys):
    """--tracing NAME=VALUE evaluates the parameters a deployment would set in serve's `tracing` config."""
    data, report = tmp_path / "eval", tmp_path / "eval.json"
    write_dataset(str(data), n=1, seed=11)
    assert main(["eval", str(data), "--json", str(report), "--tracing", "min_prob=0.3", "--tracing", "pin_px=5"]) == 0
    tracing = json.loads(report.read_text())["tracing"]
    assert (tracing["min_prob"], tracing["pin_px"], tracing["min_coverage"]) == (0.3, 5, 0.5)
    for bad, says in (("min_prop=0.3", "NAME one of min_coverage"), ("pin_px=1.5", "'1.5' is not int"),
                      ("min_prob=2", "min_prob must be in (0, 1]")):
        assert main(["eval", str(data), "--tracing", bad]) == 2
        assert says in capsys.readouterr().err


def test_a_sweep_reports_each_value_as_its_own_eval_would(tmp_path, capsys):
    """--sweep NAME=V1,V2: the scans segmented once, traced once per value (with the fixed --tracing pairs);
    each value's report holds what `digitise eval --tracing NAME=V` writes, and its line says what it refused."""
    data = tmp_path / "eval"
    write_dataset(str(data), n=4, seed=11)
    assert main(["eval", str(data), "--sweep", "min_coverage=0.5,1.0", "--tracing", "pin_px=5",
                 "--json", str(tmp_path / "sweep.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert main(["eval", str(data), "--tracing", "min_coverage=1.0", "--tracing", "pin_px=5",
                 "--json", str(tmp_path / "one.json")]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    swept = {v: json.loads((tmp_path / f"sweep.min_coverage={v}.json").read_text()) for v in ("0.5", "1.0")}
    assert swept["1.0"]["per_scan"] == one["per_scan"] and swept["1.0"]["tracing"] == one["tracing"]
    assert swept["1.0"]["truth_digest"] == swept["0.5"]["truth_digest"] == one["truth_digest"]
    assert swept["0.5"]["tracing"]["pin_px"] == 5 and swept["0.5"]["tracing"]["min_coverage"] == 0.5
    assert swept["0.5"]["n_failed"] < swept["1.0"]["n_failed"]   # the 100% bar refuses what 50% reads
    for v, s in swept.items():
        row = next(line for line in lines if line.startswith(f"min_coverage={v} ")).split()
        assert row[1:3] == [str(s["n_scans"]), str(s["n_failed"])]
    for bad, says in ((["--sweep", "min_coverage"], "expected NAME=V1,V2"),
                      (["--sweep", "min_prob=0.3,0.3"], "given twice"),
                      (["--sweep", "min_prop=0.3"], "NAME one of"),
                      (["--sweep", "min_prob=0.3,0.4", "--qc", str(tmp_path / "qc")], "without --sweep")):
        assert main(["eval", str(data), *bad]) == 2
        assert says in capsys.readouterr().err


def test_compare_pairs_two_reports_of_one_folder(tmp_path, capsys):
    """`digitise compare`: the same scans traced with a coverage bar of 100% refuse some that the defaults read;
    those are listed as read by the base only and kept out of both means; other folders are refused."""
    data, other = tmp_path / "eval", tmp_path / "other"
    write_dataset(str(data), n=4, seed=11)
    assert main(["eval", str(data), "--json", str(tmp_path / "base.json")]) == 0
    assert main(["eval", str(data), "--json", str(tmp_path / "strict.json"), "--tracing", "min_coverage=1.0"]) == 0
    base, strict = (json.loads((tmp_path / f"{n}.json").read_text())["per_scan"] for n in ("base", "strict"))
    both = [a["id"] for a, b in zip(base, strict) if not a["failed"] and not b["failed"]]
    lost = [a["id"] for a, b in zip(base, strict) if not a["failed"] and b["failed"]]
    assert lost, "the 100% bar should refuse a scan the defaults read"
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "base.json"), str(tmp_path / "base.json"),
                 str(tmp_path / "strict.json")]) == 0
    itself, paired = capsys.readouterr().out.split("4 scans, ")[1:]
    assert "+0.00%  [+0.00%, +0.00%]" in itself and "read by base only: 0 scans" in itself
    assert f"both read {len(both)}" in paired
    if both:   # the scans both read: their base mean, none of the lost ones'
        assert f"MAE curve 1{100 * np.mean([r['mae_1'] for r in base if r['id'] in both]):>21.2f}%" in paired
    assert f"read by base only: {len(lost)} scans" in paired and lost[0] in paired
    head = subprocess.Popen([sys.executable, "-m", "cli", "compare", *[str(tmp_path / "base.json")] * 300],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)   # ~200 KB: more than a pipe holds
    head.stdout.readline()
    head.stdout.close()   # as `| head -1` does
    assert head.wait(timeout=60) == 0 and b"BrokenPipeError" not in head.stderr.read()
    write_dataset(str(other), n=4, seed=12)
    assert main(["eval", str(other), "--json", str(tmp_path / "o.json")]) == 0
    assert main(["compare", str(tmp_path / "base.json"), str(tmp_path / "o.json")]) == 2
    assert "different truth files" in capsys.readouterr().err   # same ids, other scans: told by the digest


def test_pixel_kind_tells_colour_grey_and_bilevel_scans_apart():
    import cv2
    from digitiser.evaluate import pixel_kind
    from digitiser.imageio import decode_scan
    page = np.full((40, 30), 250, np.uint8)
    page[:, 10] = 30
    png = lambda img: decode_scan(cv2.imencode(".png", img)[1].tobytes())   # noqa: E731
    assert pixel_kind(png(page)) == "grey"
    assert pixel_kind(png(np.where(page > 128, 255, 0).astype(np.uint8))) == "bilevel"
    assert pixel_kind(png(cv2.merge([page, page, np.full_like(page, 90)]))) == "colour"
    assert pixel_kind(png(cv2.merge([page] * 3))) == "grey"   # a grey page saved as RGB


def test_a_perfect_segmenter_traces_the_truth_masks(tmp_path):
    """--perfect-segmenter: the tracer reads the truth mask, so the masks agree exactly and what error is left is
    the tracer's own (a floor for any segmenter); each record carries the truth's roughness. A probabilities
    cache named with it is not made: truth masks are not kept."""
    data, report, cache = tmp_path / "eval", tmp_path / "floor.json", tmp_path / "cache"
    write_dataset(str(data), n=3, seed=11)
    assert main(["eval", str(data), "--perfect-segmenter", "--json", str(report), "--probs-cache", str(cache)]) == 0
    assert not cache.exists()
    s = json.loads(report.read_text())
    assert s["probabilities"] == "truth masks" and s["n_scans"] == 3
    traced = [r for r in s["per_scan"] if not r["failed"]]
    assert traced and all(r["iou_1"] == 1.0 and r["iou_2"] == 1.0 for r in traced)
    assert s["mae_1"] < 0.01 and s["mae_2"] < 0.01
    assert all(0.0 <= r["roughness"] < 0.05 for r in s["per_scan"])
    assert sum(b["n_scans"] for b in s["by_roughness"]) == 3


def test_truth_digest_tells_the_truths_apart_not_the_files(tmp_path):
    """A folder drawn again with the same seed has the same digest (compare pairs its reports); another seed not."""
    from digitiser.evaluate import truth_digest, truth_files
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_dataset(str(tmp_path / name), n=2, seed=seed)
    a, b, c = (truth_digest(truth_files(tmp_path / n)) for n in "abc")
    assert a == b != c and len(a) == 64


def test_a_probabilities_cache_gives_the_report_of_a_fresh_run(tmp_path, caplog):
    """--probs-cache DIR: the first run segments and keeps each scan's probabilities, the next reads them back
    exactly (the same per-scan records as a run without the cache); a cached file that does not load is
    segmented again and replaced, and another model's probabilities are never read for these weights."""
    data, cache = tmp_path / "eval", tmp_path / "cache"
    write_dataset(str(data), n=3, seed=11)
    reports = {}
    for run, extra in (("plain", []), ("fills", ["--probs-cache", str(cache)]), ("reads", ["--probs-cache", str(cache)])):
        assert main(["eval", str(data), "--json", str(tmp_path / f"{run}.json"), *extra]) == 0
        reports[run] = json.loads((tmp_path / f"{run}.json").read_text())
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 3 and not list(cache.glob(".*"))   # one per scan, no temporary left
    assert reports["fills"]["per_scan"] == reports["reads"]["per_scan"] == reports["plain"]["per_scan"]
    # the reading comes from the files: altered probabilities change the report
    with np.load(files[0]) as f:
        probs = f["probs"]
    np.savez_compressed(files[0], probs=np.roll(probs, 1, axis=0))   # classes relabelled
    assert main(["eval", str(data), "--json", str(tmp_path / "altered.json"), "--probs-cache", str(cache)]) == 0
    assert json.loads((tmp_path / "altered.json").read_text())["per_scan"] != reports["plain"]["per_scan"]
    files[0].write_bytes(b"not a zip")   # cut short
    assert main(["eval", str(data), "--json", str(tmp_path / "mended.json"), "--probs-cache", str(cache)]) == 0
    assert json.loads((tmp_path / "mended.json").read_text())["per_scan"] == reports["plain"]["per_scan"]
    assert "does not load" in caplog.text
    with np.load(files[0]) as f:
        assert np.array_equal(f["probs"], probs)   # replaced by the segmenter's reading
    # the same tensors in float32 are another model version: its readings go under other names
    from digitiser.predictor import DEFAULT_WEIGHTS
    assert main(["grow", str(DEFAULT_WEIGHTS), "--precision", "float32", "--out", str(tmp_path / "w32.pt")]) == 0
    assert main(["eval", str(data), "--weights", str(tmp_path / "w32.pt"), "--probs-cache", str(cache)]) == 0
    assert len(list(cache.glob("*.npz"))) == 6
