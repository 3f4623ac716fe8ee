"""The hostile input corpus (tests/hostile.py) against both routes: a Serve app of its own over real HTTP
(small limits, a local results root inside an otherwise empty folder) and a batch job over a folder of the
same cases. Every case gets a clear 4xx (or, for odd but valid input, a 200 / 422 curve_not_found) or a
ledger row with a reason; the service stays up; its memory stays bounded; nothing lands outside the root."""
import json
import re
from pathlib import Path

import pytest
import requests

import contracts
from batch_jobs import COMMITTED, FAILED, LEDGER_FOLDER, SKIPPED, JobConfig, convert
from builders import serving
from digitiser.synth import render_scan
from hostile import Case, corpus, multipart_cases, post_case, send_raw
from serve_app import ServeConfig

RSS_GROWTH_MB = 50           # per replica, over a second pass of the corpus (about 40 requests)
RID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def scan():
    return render_scan(0, height=400, width=200, style="clean")


@pytest.fixture(scope="module")
def cases(scan) -> list[Case]:
    return corpus(scan)


@pytest.fixture(scope="module")
def endpoint(ray_local, ink_weights, tmp_path_factory):
    """(url, box): the app's results root is box/results; nothing else may appear in box."""
    box = tmp_path_factory.mktemp("box")
    config = ServeConfig(store=str(box / "results"), weights=ink_weights, loopback_only=True, max_image_bytes=1 << 20,
                         max_image_pixels=2_000_000, segmenter_num_cpus=0.25, ingress_num_cpus=0.1,
                         max_batch_size=2, batch_wait_timeout_s=0.0)
    with serving(config, "hostile") as url:
        yield url, box


def stats(url: str) -> dict:
    return requests.get(f"{url}/v1/stats", timeout=60).json()


def answer_problem(case_name: str, ok: frozenset, r: requests.Response) -> str | None:
    """Why this answer is not a clear one (None when it is)."""
    if r.status_code not in ok:
        return f"{case_name}: {r.status_code} not in {sorted(ok)}: {r.text[:300]}"
    if r.status_code != 200:
        body = r.json()
        if not (body.get("error") and body.get("detail")) or "Traceback" in r.text:
            return f"{case_name}: {r.status_code} without a clear JSON error: {r.text[:300]}"
    return None


def only_results_under(root: Path) -> list[str]:
    """Paths under `root` that are neither `<request_id>/<object>` nor `_ledger/...`."""
    stray = []
    for p in root.rglob("*"):
        parts = p.relative_to(root).parts
        if parts[0] == LEDGER_FOLDER or (RID.fullmatch(parts[0]) and len(parts) <= 2 and
                                         not parts[-1].startswith(".")):
            continue
        stray.append(str(p))
    return stray


# ----------------------------------------------------------------------------- the endpoint

def test_corpus_against_the_endpoint(endpoint, cases, scan):
    """The corpus twice: the first pass settles what memory a replica keeps once it has seen every kind of
    input (allocator arenas, per-shape kernels: their size depends on the machine); the second, built on
    another scan so that its valid cases are new requests that reach the segmenter rather than answers
    already committed, must not add to it, as a leak of even a few MB a request would."""
    url, box = endpoint
    warm = post_case(url, Case("warm", scan.encoded, calibration=json.dumps(scan.calibration)))
    assert warm.status_code == 200, warm.text
    other = render_scan(1, height=400, width=200, style="clean")
    first, before = send_corpus(url, cases, scan), stats(url)
    second, after = send_corpus(url, corpus(other), other), stats(url)
    assert [p for p in first + second if p] == []
    assert after["segmenter"]["scans"] > before["segmenter"]["scans"], "the second pass never reached the model"
    assert requests.get(f"{url}/healthz", timeout=60).status_code == 200
    for replica in ("ingress", "segmenter"):
        assert after[replica]["pid"] == before[replica]["pid"], f"the {replica} replica restarted"
        growth = after[replica]["rss_mb"] - before[replica]["rss_mb"]
        print(f"{replica}: {before[replica]['rss_mb']} MB after the first pass, +{growth:.0f} MB over the second")
        assert growth < RSS_GROWTH_MB, f"{replica} RSS grew {growth:.0f} MB over a second pass of the corpus"
    assert sorted(p.name for p in box.iterdir()) == ["results"]
    assert only_results_under(box / "results") == []
    assert contracts.audit(str(box / "results")).ok


def send_corpus(url: str, cases: list[Case], scan) -> list[str | None]:
    """Each case and each raw multipart case once; what was not a clear answer."""
    problems = [answer_problem(c.name, c.ok, post_case(url, c)) for c in cases]
    for raw in multipart_cases(scan.encoded):
        status = send_raw(url, "POST", "/v1/digitise", raw.headers, raw.body, raw.declared)
        problems.append(None if status in raw.ok else f"{raw.name}: {status} not in {sorted(raw.ok)}")
    return problems


def test_bad_image_cases_answer_their_kind(endpoint, cases):
    url, _ = endpoint
    expected = {"zero_bytes": 415, "truncated_png": 400, "png_bomb_100k": 413, "tiff_bomb_100k": 413,
                "tiff_float32": 415, "text_named_png": 415, "cal_nan": 422, "cal_deep_nesting": 422,
                "cal_duplicate_keys": 422, "cal_1mb": 413, "name_nul": 422, "cal_overflowing_range": 422}
    got = {c.name: post_case(url, c).status_code for c in cases if c.name in expected}
    assert got == expected


def test_a_scan_without_calibration_is_not_a_5xx(endpoint, scan):
    url, _ = endpoint
    assert post_case(url, Case("no_calibration", scan.encoded)).status_code < 500


# ----------------------------------------------------------------------------- the batch job

def test_corpus_through_the_batch_job(ray_local, ink_weights, cases, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for c in cases:
        folder = src / c.name
        folder.mkdir(parents=True)
        name = Path(c.filename).name
        (folder / name).write_bytes(c.image)
        if c.calibration is not None:
            text = c.calibration if isinstance(c.calibration, bytes) else c.calibration.encode()
            (folder / (name.rsplit(".", 1)[0] + ".json")).write_bytes(text)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    summary = convert(JobConfig(str(src), str(dst), weights=ink_weights, batch_size=4))
    assert summary.listed == len(cases)
    rows = {r["source"].split("/src/", 1)[1].split("/", 1)[0]: r for r in _ledger(summary.ledger)}
    problems = []
    for c in cases:
        row = rows[c.name]
        if row["status"] == FAILED and not (row["error_kind"] and row["error_message"]):
            problems.append(f"{c.name}: failed without a reason")
        if row["status"] == COMMITTED and 200 not in c.ok:
            problems.append(f"{c.name}: committed, but it is bad input")
        if row["status"] not in (COMMITTED, FAILED, SKIPPED):   # skipped: the same request as another case
            problems.append(f"{c.name}: {row['status']}")
    assert problems == []
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before
    assert only_results_under(dst) == [] and contracts.audit(str(dst)).ok


def _ledger(uri: str) -> list[dict]:
    import pyarrow.parquet as pq
    return pq.read_table(uri.removeprefix("file://")).to_pylist()



# ----------------------------------------------------------------------------- the strict JSON reader (no Ray)

@pytest.mark.parametrize("text,why", [('{"a": 1, "a": 2}', "repeats keys"), ("[" * 5000 + "]" * 5000, "nested"),
                                      (b'{"a": "\xff"}', "utf-8"), ('{"a": 1', "delimiter")])
def test_loads_strict_refuses_ambiguous_or_abusive_json(text, why):
    with pytest.raises(ValueError, match=why):
        contracts.loads_strict(text)


def test_loads_strict_reads_plain_json():
    assert contracts.loads_strict('{"a": [1, 2.5, {"b": null}]}') == {"a": [1, 2.5, {"b": None}]}
