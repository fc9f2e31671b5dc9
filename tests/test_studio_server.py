"""The local Label Studio server: loopback only, private credentials, clear errors, restart, CLI commands."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from curation.studio.cli import studio_app
from curation.studio.client import Connection, check_auth, connection, make_client
from curation.studio.errors import StudioAuthError, StudioError, StudioNotRunning, StudioUnavailable
from curation.studio.push import push
from curation.studio.server import StudioHome, free_port, read_private_json, start, status
from curation.studio.tasks import build_tasks
from schemas.params_studio import LabelStudioParams
from tests.conftest import ROOT
from tests.studio_fixture import Studio, make_inputs, studio_server  # noqa: F401


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_server_is_loopback_only_and_secrets_stay_private(studio: Studio) -> None:
    state = studio.state
    assert state.url == f"http://127.0.0.1:{state.port}"
    cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[cmdline.index(b"--internal-host") + 1] == b"127.0.0.1"
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = {line.split()[1] for line in listening if line.split()[3] == "0A"}  # 0A = LISTEN
    assert f"0100007F:{state.port:04X}" in local and f"00000000:{state.port:04X}" not in local
    assert _mode(studio.home.credentials) == 0o600 and _mode(studio.home.root) == 0o700
    creds = read_private_json(studio.home.credentials)
    log = studio.home.log.read_text(encoding="utf-8", errors="replace")
    assert creds["token"] not in log and creds["password"] not in log
    assert creds["token"] not in studio.home.state.read_text()
    assert check_auth(studio.client(), studio.conn) == creds["email"]


def test_wrong_token_is_a_clear_error_without_the_token(studio: Studio) -> None:
    wrong = "f00dbabe" * 5
    conn = Connection(studio.state.url, wrong, "remote")
    with pytest.raises(StudioAuthError) as caught:
        check_auth(make_client(conn, retries=0), conn)
    message = str(caught.value)
    assert "rejected the API token (HTTP 401)" in message and "LABEL_STUDIO_API_KEY" in message
    assert wrong not in message and wrong[:12] not in message


def test_server_down_is_a_clear_error(params, tmp_path) -> None:
    port = free_port()  # nothing listens there
    conn = Connection(f"http://127.0.0.1:{port}", "0123456789abcdef", "local", tmp_path)
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 2)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)
    with pytest.raises(StudioUnavailable) as caught:
        push(make_client(conn, retries=0), conn, specs, ontology=params.ontology, settings=LabelStudioParams())
    assert f"cannot reach Label Studio at http://127.0.0.1:{port}" in str(caught.value)
    assert "curation studio start" in str(caught.value) and "0123456789abcdef" not in str(caught.value)
    with pytest.raises(StudioNotRunning, match="curation studio start"):
        connection(LabelStudioParams(home=tmp_path / "no-server"))


def test_remote_server_needs_both_variables(monkeypatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(StudioError, match="LABEL_STUDIO_API_KEY is not set"):
        connection(LabelStudioParams())
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-key-123")
    conn = connection(LabelStudioParams())
    assert (conn.url, conn.source) == ("http://127.0.0.1:1", "remote") and "secret-key-123" not in repr(conn)


def test_port_taken_is_a_clear_error(studio: Studio, tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StudioError, match=f"port {port} on 127.0.0.1 is already in use"):
            start(
                StudioHome(tmp_path / "home"),
                venv=studio.settings.venv,
                template_dir=studio.settings.template_dir,
                document_root=tmp_path,
                port=port,
            )


def _fake_venv(root: Path, script: str) -> Path:
    venv = root / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib" / "python3.11" / "site-packages" / "label_studio-0.0.1.dist-info").mkdir(parents=True)
    binary = venv / "bin" / "label-studio"
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)
    template = root / "template" / "label-studio-0.0.1"
    template.mkdir(parents=True)
    (template / "label_studio.sqlite3").write_bytes(b"")
    return venv


def test_server_dying_at_start_is_a_clear_error_quoting_its_log(tmp_path) -> None:
    venv = _fake_venv(tmp_path, "echo 'django.db.utils.OperationalError: disk I/O error'\nexit 3\n")
    home = StudioHome(tmp_path / "home")
    with pytest.raises(StudioError) as caught:
        start(home, venv=venv, template_dir=tmp_path / "template", document_root=tmp_path, timeout_s=30)
    assert "exited with code 3 during start-up" in str(caught.value)
    assert "disk I/O error" in str(caught.value)
    assert not home.state.exists() and _mode(home.credentials) == 0o600


def test_missing_server_venv_says_how_to_install(tmp_path) -> None:
    with pytest.raises(StudioError, match="make setup"):
        start(StudioHome(tmp_path), venv=tmp_path / "nope", template_dir=tmp_path, document_root=tmp_path)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(studio_app, name="studio")
    return app


def test_cli_status_add_annotator_and_restart(studio: Studio, monkeypatch) -> None:
    from curation.studio import cli

    monkeypatch.setattr(cli, "studio_settings", lambda _params: studio.settings)
    params_file = ROOT / "params.yaml"  # ontology from here; the labelstudio section is patched above
    runner = CliRunner()
    token = studio.token

    shown = runner.invoke(_app(), ["studio", "status", "--params", str(params_file)])
    assert shown.exit_code == 0, shown.output
    assert studio.state.url in shown.output and "API token accepted" in shown.output and token not in shown.output

    added = runner.invoke(
        _app(), ["studio", "add-annotator", "reviewer.kim@factory.test", "--params", str(params_file)]
    )
    assert added.exit_code == 0, added.output
    assert _mode(studio.home.annotators) == 0o600
    password = read_private_json(studio.home.annotators)["reviewer.kim@factory.test"]["password"]
    assert password not in added.output
    with httpx.Client(base_url=studio.state.url, trust_env=False) as http:
        http.get("/user/login/")
        form = {"csrfmiddlewaretoken": http.cookies["csrftoken"], "email": "reviewer.kim@factory.test"}
        answer = http.post("/user/login/", data={**form, "password": password}, headers={"Referer": studio.state.url})
    assert answer.status_code == 302  # logged in
    again = runner.invoke(
        _app(), ["studio", "add-annotator", "reviewer.kim@factory.test", "--params", str(params_file)]
    )
    assert again.exit_code == 1 and "already exists" in again.output

    before = studio.state
    stopped = runner.invoke(_app(), ["studio", "stop", "--params", str(params_file)])
    assert stopped.exit_code == 0 and f"pid {before.pid}" in stopped.output
    assert not status(studio.home).alive
    down = runner.invoke(_app(), ["studio", "status", "--params", str(params_file)])
    assert down.exit_code == 1 and "curation studio start" in down.output
    started = runner.invoke(_app(), ["studio", "start", "--params", str(params_file)])
    assert started.exit_code == 0, started.output
    assert studio.home.credentials.name in started.output and token not in started.output
    studio.state = status(studio.home).state
    assert studio.state.port == before.port and studio.state.pid != before.pid
    assert studio.token == token  # same data dir, same admin
    assert check_auth(studio.client(), studio.conn)
