"""Who may use the endpoint, and where secrets go: the bearer token over real HTTP (a Serve app of its own on
the session Ray, results in a moto S3 bucket), `digitise serve` refusing an exposed address without a token,
and the S3 test credentials never written into results, ledgers or logs."""
import json
import secrets
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from batch_jobs import JobConfig, convert
from builders import TEST_CREDENTIALS, make_s3fs, serving
from digitiser.synth import render_scan
from serve_app import ServeConfig
from serve_app.app import check_exposure, is_loopback
from serve_app.http import authorised, token_digest

REPO = Path(__file__).resolve().parents[1]
TOKEN = "tok-" + secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Secured:
    url: str
    bucket: str
    logs: Path            # the session Ray's log folder (Serve's replica logs, workers' stdout/stderr)
    weights: str          # the ink detector the app runs


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("secret") / "token"
    path.write_text(TOKEN + "\n")
    return str(path)


@pytest.fixture(scope="module")
def secured(ray_local, s3_server, token_file, ink_weights):
    bucket = f"sec-{uuid.uuid4().hex[:12]}"
    make_s3fs(s3_server).mkdir(bucket)
    config = ServeConfig(store=f"s3://{bucket}/online", weights=ink_weights, auth_token_file=token_file,
                         loopback_only=True, segmenter_num_cpus=0.25, ingress_num_cpus=0.1, max_batch_size=2,
                         batch_wait_timeout_s=0.0)
    with serving(config, "secured") as url:
        yield Secured(url, bucket, Path(ray_local.address_info["session_dir"]) / "logs",
                      ink_weights)


def _auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _post_scan(url: str, seed: int, headers: dict) -> requests.Response:
    """A clean synthetic scan with its calibration (issue 17 fixes the 500 for a request without one)."""
    scan = render_scan(seed, height=400, width=200, style="clean")
    return requests.post(f"{url}/v1/digitise", headers=headers, timeout=120,
                         files={"image": ("scan.png", scan.encoded, "image/png"),
                                "calibration": ("c.json", json.dumps(scan.calibration), "application/json")})


def _assert_401(r: requests.Response):
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"] == "unauthorized" and TOKEN not in r.text


# ----------------------------------------------------------------------------- the token over HTTP

@pytest.mark.parametrize("method,path", [("POST", "/v1/digitise"), ("GET", "/v1/stats"), ("GET", "/metrics"),
                                         ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/no/such/route"),
                                         ("GET", "/v1/results/" + "0" * 32)])
def test_every_route_but_healthz_needs_the_token(secured, method, path):
    _assert_401(requests.request(method, secured.url + path, timeout=30))


@pytest.mark.parametrize("header", [f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN,
                                    "Bearer ", "Bearer"])
def test_a_wrong_token_or_scheme_is_401(secured, header):
    _assert_401(requests.get(f"{secured.url}/v1/stats", headers={"Authorization": header}, timeout=30))


def test_healthz_stays_open(secured):
    assert requests.get(f"{secured.url}/healthz", timeout=60).status_code == 200


def test_the_token_opens_stats_and_digitising(secured):
    assert requests.get(f"{secured.url}/v1/stats", headers=_auth(), timeout=30).status_code == 200
    r = _post_scan(secured.url, 0, _auth())
    assert r.status_code == 200, r.text
    got = requests.get(f"{secured.url}/v1/results/{r.json()['request_id']}", headers=_auth(), timeout=30)
    assert got.status_code == 200 and got.json() == r.json()


def _declare_huge_upload(url: str, headers: dict) -> bytes:
    """Send only the headers of a 1 GB multipart POST; return the status line the server answers with."""
    host, port = url.removeprefix("http://").split(":")
    lines = ["POST /v1/digitise HTTP/1.1", f"Host: {host}", "Content-Type: multipart/form-data; boundary=x",
             f"Content-Length: {2**30}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall("\r\n".join(lines).encode())
        return s.recv(4096).split(b"\r\n", 1)[0]


def test_an_unauthorised_upload_is_refused_before_its_body(secured):
    assert b" 401 " in _declare_huge_upload(secured.url, {})
    assert b" 413 " in _declare_huge_upload(secured.url, _auth())


def test_the_token_is_never_logged(secured):
    _post_scan(secured.url, 1, _auth())
    requests.get(f"{secured.url}/v1/stats", headers=_auth(TOKEN[:-1]), timeout=30)
    found = [p for p in secured.logs.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert found == []


# ----------------------------------------------------------------------------- S3 credentials

def test_s3_credentials_are_in_no_object_ledger_or_log(secured, s3_server, tmp_path):
    """Results and a ledger written through the standard AWS chain (the environment) by both routes; then no
    stored object, ledger or session log holds the access key id or the secret."""
    assert _post_scan(secured.url, 2, _auth()).status_code == 200
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(render_scan(3, height=400, width=200, style="clean").encoded)
    (src / "b.png").write_bytes(b"not an image")
    summary = convert(JobConfig(str(src), f"s3://{secured.bucket}/batch", weights=secured.weights))
    assert summary.listed == 2 and summary.ledger
    fs = make_s3fs(s3_server)
    objects = {p: fs.cat_file(p) for p in fs.find(secured.bucket)}
    assert any("/_ledger/" in p for p in objects) and any("/online/" in p for p in objects)
    logs = {str(p): p.read_bytes() for p in secured.logs.rglob("*") if p.is_file()}
    for secret in (TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"], TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]):
        assert [p for p, data in {**objects, **logs}.items() if secret.encode() in data] == []


def test_config_refuses_credentials_in_storage_options():
    with pytest.raises(ValueError, match="standard AWS chain"):
        ServeConfig(storage_options={"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s"})


# ----------------------------------------------------------------------------- exposure (no Ray)

@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("[::1]", True),
                                           ("localhost", True), ("0.0.0.0", False), ("::", False),
                                           ("10.0.0.5", False), ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_exposed_host_needs_a_token_or_insecure(token_file):
    with pytest.raises(ValueError, match="--auth-token-file"):
        check_exposure("0.0.0.0", ServeConfig())
    check_exposure("0.0.0.0", ServeConfig(), insecure=True)
    check_exposure("0.0.0.0", ServeConfig(auth_token_file=token_file))
    check_exposure("127.0.0.1", ServeConfig())


@pytest.mark.parametrize("content", ["short\n", ""])
def test_a_weak_or_missing_token_file_is_refused(tmp_path, content):
    path = tmp_path / "token"
    if content:
        path.write_text(content)
    with pytest.raises(ValueError, match=str(path)) as e:
        token_digest(str(path))
    assert "short" not in str(e.value)   # the message names the file, never its content


def test_authorised_matches_the_bearer_token_only(token_file):
    digest = token_digest(token_file)
    assert authorised(f"Bearer {TOKEN}", digest) and authorised(f"bearer {TOKEN}", digest)
    assert not authorised(None, digest) and not authorised(f"Bearer {TOKEN} x", digest)


@pytest.mark.parametrize("extra", [[], ["--auth-token-file", "/nonexistent/token"]])
def test_cli_refuses_an_exposed_host_before_starting_anything(extra):
    proc = subprocess.run([sys.executable, "-m", "cli", "serve", "--host", "0.0.0.0", "--port", "1",
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert ("refusing" if not extra else "cannot be read") in proc.stderr and "Started a local Ray" not in proc.stderr
