"""The service as the ML backend of a real Label Studio project: connect it, open a task that has no prediction,
and Label Studio asks the service and stores a prediction of our model version."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from curation.serve import cli as serve_cli
from curation.serve.app import create_app
from curation.serve.auth import BackendSecret, ensure_secret
from curation.serve.cli import connect_backend, running
from curation.studio import cli as studio_cli
from curation.studio import server as studio_server_module
from curation.studio.config import LABEL, add_part, ensure_project
from curation.studio.server import LOCAL_BACKEND_ENV
from curation.studio.tasks import local_files_url
from schemas.params_prelabel import CaptionParams, ClipParams, PrelabelParams
from schemas.params_serve import ServeParams
from tests.conftest import ROOT, write_image
from tests.studio_fixture import Studio, studio_server  # noqa: F401
from tests.tiny_models import build_clip

SECRET = BackendSecret(user="label-studio", password="not-the-service-secret")


@pytest.fixture(scope="module")
def studio_for_backends(studio: Studio) -> Studio:
    """Label Studio refuses ML backends on loopback unless its SSRF guard lets 127.0.0.0/8 through; the server
    takes the settings from the environment (curation.studio.server keeps unprefixed variables), so restart it
    once with them set."""
    env = studio_server_module._server_env(studio.home.root, studio.document_root, None)
    if any(env.get(k) != v for k, v in LOCAL_BACKEND_ENV.items()):
        os.environ.update(LOCAL_BACKEND_ENV)
        studio.restart()
    return studio


def test_connected_backend_predicts_tasks_opened_without_predictions(studio_for_backends, params, tmp_path):
    studio = studio_for_backends
    clip = build_clip(tmp_path / "clip")
    prelabel = PrelabelParams(clip=ClipParams(model=str(clip)), captions=CaptionParams(policy="none"), device="cpu")
    settings = studio.settings_for("Serve backend test")
    client = studio.client()
    project = ensure_project(client, studio.conn, params.ontology, settings)
    folder = studio.document_root / "serve-images"
    image = write_image(folder / "불량 1.png", seed=7)
    client.import_storage.local.create(project=project.id, path=str(folder), use_blob_urls=True, title="serve")
    task = client.tasks.create(project=project.id, data={"image": local_files_url(image, studio.document_root)})
    assert not client.predictions.list(task=task.id)

    secret = ensure_secret(studio.home)  # where `curation serve` keeps it; connect-backend reads it there
    target = (studio.conn.url, studio.conn.token)
    app = create_app(ServeParams(), prelabel, params.ontology, secret=secret, studio=lambda: target)
    with running(app) as url:
        refused = httpx.post(f"{url}/setup", json={}, trust_env=False)
        first = connect_backend(client, studio.conn, project.id, url, secret=secret)
        again = connect_backend(client, studio.conn, project.id, url, secret=secret)
        version = httpx.post(f"{url}/setup", json={}, headers=secret.header(), trust_env=False).json()["model_version"]
        client.tasks.get(id=task.id)  # opening the task: Label Studio asks the backend (show_collab_predictions)
        predictions = client.predictions.list(task=task.id)

        params_file = tmp_path / "params.yaml"
        params_file.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        app_cli = typer.Typer()
        app_cli.command("connect-backend")(serve_cli.connect_backend_command)
        app_cli.command("other")(lambda: None)
        part_2 = add_part(client, studio.conn, params.ontology, settings, 2)  # a project set of two parts
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(studio_cli, "studio_settings", lambda _params: settings)
            result = CliRunner().invoke(app_cli, ["connect-backend", url, "--params", str(params_file)])

    assert refused.status_code == 401  # Label Studio got in below only because connect-backend gave it the secret
    assert first["created"] and not again["created"] and first["backend_id"] == again["backend_id"]
    assert first["model_version"] == version
    assert version.startswith(f"zero-shot {Path(clip).name} #")  # the local model's title, as push would send it
    assert [p.model_version for p in predictions] == [version]
    choice = next(r for r in predictions[0].result if r["from_name"] == LABEL)
    assert choice["value"]["choices"][0] in params.ontology.class_names
    assert 0 < predictions[0].score <= 1
    assert result.exit_code == 0, result.output
    assert f"already connected: {url} is the ML backend of project {project.id} " in result.output
    assert f"connected: {url} is the ML backend of project {part_2.id} " in result.output
    assert [b.url.rstrip("/") for b in client.ml.list(project=part_2.id)] == [url]


def test_connect_to_a_dead_backend_is_a_clear_error(studio_for_backends, params):
    from curation.studio.errors import StudioError
    from curation.studio.server import free_port

    studio = studio_for_backends
    client = studio.client(retries=0)
    project = ensure_project(client, studio.conn, params.ontology, studio.settings_for("Serve dead backend"))
    with pytest.raises(StudioError, match="connecting the ML backend") as caught:
        connect_backend(client, studio.conn, project.id, f"http://127.0.0.1:{free_port()}", secret=SECRET)
    assert studio.token not in str(caught.value)
