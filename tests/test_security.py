"""The local HTTP servers do not hand out secrets: `curation browse` and `curation serve` run as the user runs them
(subprocesses of the real CLI, in a project folder whose `.studio/` holds the Label Studio admin credentials and the
service's secret), and every route of both is asked for those files, with traversal, URL-encoding, a symlink, a
foreign Host and a foreign Origin. No answer may contain any secret; the dataset's own image must still come back
(so the probes reach a working server, not a dead one).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from curation.browse import database
from curation.io import pid_alive
from curation.studio.server import write_private_json
from tests.conftest import ROOT
from tests.test_browse import _stop
from tests.test_serve import _http_server
from tests.tiny_models import build_clip

DATASET = "defect-curation-sectest"
QUIET = {"FIFTYONE_DO_NOT_TRACK": "true", "PYTHONWARNINGS": "ignore"}


@dataclass(frozen=True)
class Project:
    root: Path
    credentials: Path
    backend: Path
    image: Path
    link: Path
    markers: tuple[str, ...]  # secrets no answer may contain


@pytest.fixture(scope="module")
def project(tmp_path_factory, params) -> Iterator[Project]:
    """A project folder as a user has it: its own mongod, a dataset of 3 images built by `curation fiftyone`,
    `.studio/credentials.json`, a symlink to the credentials among the images (what another local user or program
    could plant) and a params.yaml. FiftyOne is never connected in the test process: the servers run as the CLI."""
    root = tmp_path_factory.mktemp("secproject")
    db = database.start(root / ".fiftyone")
    try:
        credentials = root / ".studio" / "credentials.json"
        password, token = f"pw-{secrets.token_hex(12)}", secrets.token_hex(20)
        write_private_json(credentials, {"email": "admin@studio.local", "password": password, "token": token})
        images = root / "sec-images"
        images.mkdir()
        rows = []
        for k in range(3):
            path = images / f"part {k}.png"
            Image.fromarray(np.full((32, 48, 3), 40 * k, dtype=np.uint8)).save(path)
            rows.append({"image_id": f"{k:016x}", "path": str(path), "width": 48, "height": 32, "format": "PNG"})
        pd.DataFrame(rows).to_parquet(root / "manifest.parquet", index=False)
        link = images / "link.png"
        link.symlink_to(credentials)
        data = params.model_dump(mode="json")
        data["prelabel"]["clip"]["model"] = str(build_clip(root / "sec-clip"))
        (root / "params.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        build = ["fiftyone", "out", "--manifest", "manifest.parquet", "--version", "sectest"]
        built = subprocess.run(
            [sys.executable, "-m", "curation.cli", *build],
            cwd=root,
            env={**os.environ, **QUIET, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        yield Project(
            root, credentials, root / ".studio" / "backend.json", images / "part 0.png", link, (password, token)
        )
    finally:
        database.stop(root / ".fiftyone")
        assert not pid_alive(db.pid)


def _start(args: list[str], root: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "curation.cli", *args],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "FIFTYONE_DO_NOT_TRACK": "true",
                "PYTHONWARNINGS": "ignore",
                **env,
            },
        )


def _wait(process: subprocess.Popen, log: Path, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[3]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browse(project: Project, tmp_path_factory) -> Iterator[int]:
    """`curation browse` on the project; yields its port; stopped by PID."""
    port = database.free_port()
    log = tmp_path_factory.mktemp("browse-log") / "browse.log"
    process = _start(["browse", "--version", "sectest", "--port", str(port)], project.root, log, {})
    try:
        _wait(process, log, f"http://127.0.0.1:{port}/fiftyone")
        yield port
    finally:
        _stop(process.pid)
        process.wait(timeout=10)


@dataclass(frozen=True)
class Serve:
    port: int
    auth: tuple[str, str]
    studio: object  # the stand-in Label Studio (records what it was asked)


@pytest.fixture(scope="module")
def serve(project: Project, tmp_path_factory) -> Iterator[Serve]:
    """`curation serve` on the project, with LABEL_STUDIO_URL at a stand-in Label Studio that (misconfigured on
    purpose) serves the credentials file as a task image; stopped by PID."""
    leaked = {"/data/local-files/?d=.studio/credentials.json": project.credentials.read_bytes()}
    with _http_server(leaked) as studio:
        port = database.free_port()
        log = tmp_path_factory.mktemp("serve-log") / "serve.log"
        env = {"LABEL_STUDIO_URL": f"http://127.0.0.1:{studio.server_address[1]}", "LABEL_STUDIO_API_KEY": "k" * 40}
        process = _start(["serve", "--port", str(port)], project.root, log, env)
        try:
            _wait(process, log, f"http://127.0.0.1:{port}/health")
            # a service that made no secret (as before the fix) still gets probed, with credentials it ignores
            secret = json.loads(project.backend.read_text()) if project.backend.exists() else {}
            yield Serve(port, (secret.get("user", "label-studio"), secret.get("password", "none")), studio)
        finally:
            _stop(process.pid)
            process.wait(timeout=10)


def _raw(port: int, method: str, target: str, headers: dict | None = None, body: bytes | None = None):
    """One request with ``target`` sent exactly as written (no client-side normalisation of ``..`` or escapes)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for key, value in {"Host": f"127.0.0.1:{port}", **(headers or {})}.items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
            connection.putheader("Content-Type", "application/json")
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def _assert_nothing_leaks(answers: list[tuple[str, int, list, bytes]], markers: tuple[str, ...]) -> None:
    for what, _status, headers, body in answers:
        text = body.decode("utf-8", "replace") + json.dumps(headers)
        for marker in markers:
            assert marker not in text, f"{what} answered with a secret"


def _browse_targets(project: Project) -> list[str]:
    creds = str(project.credentials)
    inside = str(project.image.parent)
    q = quote  # percent-encodes everything but "/"
    media = [
        creds,
        ".studio/credentials.json",
        f"{inside}/../.studio/credentials.json",
        f"{project.image}/../../.studio/credentials.json",
        str(project.link),
        f"{inside}/./../.studio/credentials.json",
        f"{creds}\x00.png",
        f"file://{creds}",
        f"//127.0.0.1{creds}",
    ]
    targets = [f"/media?filepath={q(path, safe='')}" for path in media]
    targets += [
        f"/media?filepath={q(creds)}",  # "/" left as is
        f"/media?filepath={q(q(creds, safe=''), safe='')}",  # double-encoded
        f"/media?filepath={q(str(project.image), safe='')}&filepath={q(creds, safe='')}",
        f"/media?filepath={q(creds, safe='')}&filepath={q(str(project.image), safe='')}",
        f"/media/?filepath={q(creds, safe='')}",
        f"//media?filepath={q(creds, safe='')}",
        f"/MEDIA?filepath={q(creds, safe='')}",
        f"/%6Dedia?filepath={q(creds, safe='')}",
        f"/./media?filepath={q(creds, safe='')}",
        f"/media;x?filepath={q(creds, safe='')}",
        f"/plugins/../media?filepath={q(creds, safe='')}",
        "/.studio/credentials.json",
        "/../.studio/credentials.json",
        "/%2e%2e/.studio/credentials.json",
        "/..%2f.studio%2fcredentials.json",
        f"/%2e%2e{q(creds)}",
        f"/{'../' * 12}{creds.lstrip('/')}",
        f"/datasets/..%2f..%2f..%2f{q(creds, safe='')}",
        f"/datasets/{'..%2f' * 12}{q(creds.lstrip('/'), safe='')}",
        f"/datasets/{DATASET}/../../.studio/credentials.json",
        "/plugins/../../.studio/credentials.json",
        f"/plugins/{'%2e%2e%2f' * 12}{q(creds.lstrip('/'))}",
        f"/screenshot/x.png?proxy={q(creds, safe='')}",
        f"/runtime-assets/models/sam2/{'..%2f' * 6}x",
    ]
    return targets


def _fiftyone_routes() -> list[str]:
    """Every route of the App server, path parameters filled in."""
    from fiftyone.server.routes import routes

    return sorted({re.sub(r"\{[^}]+\}", "x", path) for path, _ in routes} | {"/graphql", "/events", "/fiftyone"})


def test_browse_serves_the_dataset_images_and_no_secret(project: Project, browse: int) -> None:
    port = browse
    image = _raw(port, "GET", f"/media?filepath={quote(str(project.image), safe='')}")
    assert image[0] == 200 and image[2] == project.image.read_bytes()  # the probes reach a working App

    answers = []
    for target in _browse_targets(project):
        for method, headers in (("GET", {}), ("HEAD", {}), ("GET", {"Range": "bytes=0-"})):
            status, got_headers, body = _raw(port, method, target, headers)
            answers.append((f"{method} {target} {headers}", status, got_headers, body))
            if target.startswith("/media?"):
                assert status == 404, (target, status)
    creds = quote(str(project.credentials), safe="")
    for route in _fiftyone_routes():
        query = f"?filepath={creds}&path={creds}&dataset={DATASET}"
        body = json.dumps({"filepath": str(project.credentials), "path": str(project.credentials), "dataset": DATASET})
        for method in ("GET", "POST"):
            status, got_headers, got = _raw(
                port, method, route + query, body=body.encode() if method == "POST" else None
            )
            answers.append((f"{method} {route}", status, got_headers, got))
    listing = json.dumps(
        {"operator_uri": "@voxel51/operators/list_files", "params": {"path": str(project.credentials.parent)}}
    )
    listed = _raw(port, "POST", "/operators/execute", body=listing.encode())
    assert listed[0] == 403 and b"credentials.json" not in listed[2]  # FiftyOne would list the folder
    answers.append(("list_files", *listed))
    other = json.dumps({"operator_uri": "@voxel51/operators/list_saved_views", "params": {}, "dataset_name": DATASET})
    assert _raw(port, "POST", "/operators/execute", body=other.encode())[0] == 200  # other operators still work
    _assert_nothing_leaks(answers, project.markers)
    assert len(answers) > 150


def test_browse_refuses_foreign_hosts_and_origins(project: Project, browse: int) -> None:
    port = browse
    legit = f"/media?filepath={quote(str(project.image), safe='')}"
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", f"127.0.0.1:{port + 1}"):
        for target in ("/", legit, "/fiftyone"):
            status, _, body = _raw(port, "GET", target, {"Host": host})
            assert status == 400 and b"Host" in body, (host, target, status)
    assert _raw(port, "GET", legit, {"Host": f"localhost:{port}"})[0] == 200
    query = json.dumps({"query": "{ __typename }"}).encode()
    for origin in ("http://evil.example", "null", f"http://evil.example:{port}"):
        assert _raw(port, "POST", "/graphql", {"Origin": origin}, query)[0] == 403, origin
    same = _raw(port, "POST", "/graphql", {"Origin": f"http://127.0.0.1:{port}"}, query)
    assert same[0] == 200 and b"Query" in same[2]


def test_serve_gives_no_secret_through_any_route(project: Project, serve: Serve) -> None:
    markers = (*project.markers, serve.auth[1])
    creds = str(project.credentials)
    images = [
        creds,
        f"file://{creds}",
        ".studio/credentials.json",
        "../.studio/credentials.json",
        "/data/local-files/?d=.studio/credentials.json",  # the stand-in Label Studio serves it
        f"http://127.0.0.1:{serve.port}/../.studio/credentials.json",
        f"http://127.0.0.1:{database.free_port()}/media?filepath={quote(creds, safe='')}",
    ]
    tasks = [{"id": i, "data": {"image": image}} for i, image in enumerate(images)]
    setup = {"project": "1.1", "hostname": f"file://{project.root}", "access_token": "x", "schema": None}
    bodies = {
        "/setup": setup,
        "/predict": {"tasks": tasks, "project": "1.1"},
        "/score": {"image": creds, "prompts": [creds]},
        "/webhook": {"action": creds},
    }
    answers = []
    routes = [
        "/health",
        "/setup",
        "/predict",
        "/score",
        "/webhook",
        "/docs",
        "/openapi.json",
        "/.studio/credentials.json",
    ]
    for auth in (None, serve.auth):
        with httpx.Client(base_url=f"http://127.0.0.1:{serve.port}", auth=auth, trust_env=False, timeout=120) as http:
            if auth:
                assert http.post("/setup", json=setup).status_code == 200
            for route in routes:
                for method in ("GET", "POST"):
                    answer = http.request(method, route, json=bodies.get(route) if method == "POST" else None)
                    answers.append((f"{method} {route} auth={bool(auth)}", answer.status_code, [], answer.content))
                    if not auth and route != "/health":
                        assert answer.status_code == 401, (method, route)
            predict = http.post("/predict", json=bodies["/predict"])
            if auth:  # every task failed: a 4xx, each task with its own error, none with the file's content
                assert 400 <= predict.status_code < 500, predict.text
                assert [r["task"] for r in predict.json()["results"]] == list(range(len(images)))
    # the file did come back from "Label Studio" (so the probe was real), yet no answer above carries its content
    assert "/data/local-files/?d=.studio/credentials.json" in [path for path, _ in serve.studio.seen]
    evil = httpx.get(f"http://127.0.0.1:{serve.port}/health", headers={"Host": "evil.example"}, trust_env=False)
    assert evil.status_code == 400
    _assert_nothing_leaks(answers, markers)
    assert project.backend.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:9090", True),
        ("localhost:9090", True),
        ("LocalHost.:9090", True),
        ("[::1]:9090", True),
        ("127.0.0.1:9091", False),
        ("127.0.0.1", False),  # port 80
        ("evil.example:9090", False),
        ("127.0.0.1.evil.example:9090", False),
        ("127.0.0.1:9090@evil.example", False),
        ("evil.example@127.0.0.1:9090", False),
        ("127.0.0.1:9090/x", False),
        ("127.0.0.1:abc", False),
        ("[::1", False),
        ("", False),
        ("proxy.factory.example:443", True),  # a configured name, any port
    ],
)
def test_host_guard_reads_host_headers(host: str, ok: bool) -> None:
    from curation.localhttp import HostGuard

    guard = HostGuard(None, names=["Proxy.Factory.Example"])
    assert guard.allowed(host, 9090) is ok


def test_browse_names_a_taken_port() -> None:
    from curation.browse.app import bind
    from curation.browse.errors import BrowseError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(BrowseError, match=f"port {port} on 127.0.0.1 is in use.*--port"):
            bind(port)
