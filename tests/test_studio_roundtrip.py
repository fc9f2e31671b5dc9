"""Push and pull against a real Label Studio server (started once per session from the template)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from curation.studio import push as push_module
from curation.studio.config import BOXES, LABEL, SEVERITY, VIEW_ADJUDICATE, VIEW_UNCERTAIN, find_project
from curation.studio.errors import StudioUnavailable
from curation.studio.pull import pull, write_pull
from curation.studio.push import push, write_push
from curation.studio.server import load_credentials
from curation.studio.simulate import reviewer_email, simulate
from curation.studio.tasks import build_tasks
from schemas.params_studio import SimulationParams
from tests.conftest import ROOT
from tests.studio_fixture import Studio, make_inputs, shown_version, studio_server  # noqa: F401


def _specs(studio: Studio, params, name: str, n: int, **kwargs):
    manifest, predictions = make_inputs(studio.document_root / name, params.ontology, n, **kwargs)
    disputes = kwargs.pop("disputes", ())
    return (
        manifest,
        predictions,
        build_tasks(
            manifest, predictions, ontology=params.ontology, document_root=studio.document_root, disputes=disputes
        ),
    )


def _tasks(client, project_id: int) -> list:
    return list(client.tasks.list(project=project_id, fields="all", page_size=1000))


def test_push_twice_same_tasks_predictions_visible_in_uncertainty_order(studio: Studio, params, tmp_path) -> None:
    _, predictions, specs = _specs(studio, params, "twice", 30)
    settings = studio.settings_for("twice", agreement_sample=0.2, maximum_annotations=3)
    client = studio.client()
    first = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    second = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    assert (first.report["tasks_created"], second.report["tasks_created"]) == (30, 0)
    assert second.report["tasks_in_project"] == 30 and second.report["duplicate_image_ids"] == 0
    assert second.report["predictions_added"] == 0 and second.report["tasks_updated"] == 0
    assert first.report["tasks_with_overlap"] == 6  # 20 % of 30 tasks reviewed by 3

    tasks = _tasks(client, first.project.id)
    assert sorted(t.data["image_id"] for t in tasks) == sorted(predictions["image_id"])
    expected = predictions.set_index("image_id")
    for task in tasks:
        (prediction,) = task.predictions
        row = expected.loc[task.data["image_id"]]
        assert prediction.model_version == shown_version("clip-test@abc123")
        assert prediction.score == pytest.approx(row["score"])
        assert prediction.result[0]["value"]["choices"] == [row["label"]]
    by_id = sorted(tasks, key=lambda t: t.id)
    assert [t.data["margin"] for t in by_id] == sorted(expected["margin"].round(6))  # imported most uncertain first

    views = {v.data["title"]: v.id for v in client.views.list(project=first.project.id)}
    assert {VIEW_UNCERTAIN, VIEW_ADJUDICATE} <= set(views)
    in_view = [t.data["margin"] for t in client.tasks.list(project=first.project.id, view=views[VIEW_UNCERTAIN])]
    assert in_view == sorted(in_view)

    write_push(second, tmp_path / "push")
    saved = pd.read_parquet(tmp_path / "push" / "tasks.parquet")
    assert saved["task_id"].is_unique and len(saved) == 30 and int((saved["overlap"] == 3).sum()) == 6
    assert json.loads((tmp_path / "push" / "push.json").read_text())["tasks_in_project"] == 30


def test_images_are_served_to_a_logged_in_user(studio: Studio, params) -> None:
    _, _, specs = _specs(studio, params, "served", 2)
    push(studio.client(), studio.conn, specs, ontology=params.ontology, settings=studio.settings_for("served"))
    creds = load_credentials(studio.home)
    with httpx.Client(base_url=studio.state.url, trust_env=False) as http:
        assert http.get(specs[0].data["image"]).status_code in (401, 403)  # not logged in
        http.get("/user/login/")
        form = {"csrfmiddlewaretoken": http.cookies["csrftoken"], "email": creds.email, "password": creds.password}
        http.post("/user/login/", data=form, headers={"Referer": f"{studio.state.url}/user/login/"})
        image = http.get(specs[0].data["image"])
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_new_model_version_adds_predictions_on_existing_tasks(studio: Studio, params) -> None:
    manifest, _, v1 = _specs(studio, params, "versions", 8)
    ids = list(manifest["image_id"])
    _, _, v2 = _specs(studio, params, "versions", 8, model_version="clip-test@def456", image_ids=ids, seed=1)
    settings = studio.settings_for("versions")
    client = studio.client()
    push(client, studio.conn, v1, ontology=params.ontology, settings=settings)
    second = push(client, studio.conn, v2, ontology=params.ontology, settings=settings)
    assert second.report["tasks_created"] == 0 and second.report["predictions_added"] == 8
    assert second.report["tasks_updated"] == 8  # margin/entropy follow the new model
    tasks = _tasks(client, second.project.id)
    assert len(tasks) == 8
    both = sorted(map(shown_version, ["clip-test@abc123", "clip-test@def456"]))
    assert all(sorted(p.model_version for p in t.predictions) == both for t in tasks)
    assert client.projects.get(id=second.project.id).model_version == shown_version("clip-test@def456")
    replaced = push(
        client,
        studio.conn,
        v2,
        ontology=params.ontology,
        settings=settings.model_copy(update={"keep_old_predictions": False}),
    )
    assert replaced.report["predictions_removed"] == 8
    newest = [shown_version("clip-test@def456")]
    assert all([p.model_version for p in t.predictions] == newest for t in _tasks(client, second.project.id))


def test_config_changes_update_the_project(studio: Studio, params) -> None:
    _, _, specs = _specs(studio, params, "config", 2)
    client = studio.client()
    plain = push(client, studio.conn, specs, ontology=params.ontology, settings=studio.settings_for("config"))
    boxed = push(
        client, studio.conn, specs, ontology=params.ontology, settings=studio.settings_for("config", boxes=True)
    )
    assert plain.project.created and not boxed.project.created
    assert "label_config" in boxed.project.updated
    assert "RectangleLabels" in client.projects.get(id=boxed.project.id).label_config
    assert find_project(client, studio.conn, "config") == plain.project.id


def test_disputed_tasks_are_flagged_for_adjudication(studio: Studio, params) -> None:
    manifest, predictions, _ = _specs(studio, params, "disputes", 6)
    disputed = set(manifest["image_id"][:2])
    settings = studio.settings_for("disputes")
    client = studio.client()
    kwargs = {"ontology": params.ontology, "document_root": studio.document_root}
    flagged = push(
        client,
        studio.conn,
        build_tasks(manifest, predictions, disputes=disputed, **kwargs),
        ontology=params.ontology,
        settings=settings,
    )
    assert flagged.report["flagged_for_adjudication"] == 2
    views = {v.data["title"]: v.id for v in client.views.list(project=flagged.project.id)}
    listed = {t.data["image_id"] for t in client.tasks.list(project=flagged.project.id, view=views[VIEW_ADJUDICATE])}
    assert listed == disputed
    cleared = push(
        client, studio.conn, build_tasks(manifest, predictions, **kwargs), ontology=params.ontology, settings=settings
    )
    assert cleared.report["tasks_updated"] == 2 and cleared.report["flagged_for_adjudication"] == 0


def _break_import(monkeypatch, call: int, message: str, *, server_took_it: bool) -> Callable[..., list[int]]:
    """Push's ``call``-th import request fails with ``message``: before the server sees it, or after the server
    imported the batch (the answer is lost). Returns the real import, to put back."""
    real = push_module._import_batch
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call and not server_took_it:
            raise StudioUnavailable(message)
        ids = real(*args, **kwargs)
        if calls["n"] == call:
            raise StudioUnavailable(message)
        return ids

    monkeypatch.setattr(push_module, "_import_batch", broken)
    return real


def test_push_interrupted_after_some_batches_completes_on_rerun(studio: Studio, params, monkeypatch) -> None:
    _, _, specs = _specs(studio, params, "interrupted", 60)
    settings = studio.settings_for("interrupted", batch_size=10, retries=0)
    real = _break_import(monkeypatch, 3, "injected: server went away after two batches", server_took_it=False)
    client = studio.client()
    with pytest.raises(StudioUnavailable, match="injected"):
        push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    project_id = find_project(client, studio.conn, "interrupted")
    assert len(_tasks(client, project_id)) == 20
    monkeypatch.setattr(push_module, "_import_batch", real)
    done = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    assert done.report["tasks_created"] == 40 and done.report["tasks_in_project"] == 60
    image_ids = [t.data["image_id"] for t in _tasks(client, project_id)]
    assert sorted(image_ids) == sorted(s.image_id for s in specs)


def test_lost_response_is_retried_without_duplicates(studio: Studio, params, monkeypatch) -> None:
    _, _, specs = _specs(studio, params, "lost", 12)
    settings = studio.settings_for("lost", batch_size=5, retries=2)
    message = "injected: connection dropped after the server imported the batch"
    _break_import(monkeypatch, 2, message, server_took_it=True)  # the server took the batch, the answer was lost
    monkeypatch.setattr(push_module.time, "sleep", lambda _s: None)
    result = push(studio.client(), studio.conn, specs, ontology=params.ontology, settings=settings)
    assert result.report["tasks_created"] == 12 and result.report["duplicate_image_ids"] == 0
    assert result.report["tasks_in_project"] == 12


def test_push_process_killed_midway_completes_on_rerun(studio: Studio, params, tmp_path) -> None:
    manifest, predictions, specs = _specs(studio, params, "killed", 40)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    predictions.to_parquet(tmp_path / "predictions.parquet")
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": studio.state.url,
        "LABEL_STUDIO_API_KEY": studio.token,
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(studio.document_root),
    }
    args = [
        str(tmp_path / "manifest.parquet"),
        str(tmp_path / "predictions.parquet"),
        str(tmp_path / "out"),
        str(params_file),
    ]
    client = studio.client()
    process = subprocess.Popen(
        [sys.executable, "-c", _killed_script(), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    project_id = None
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline and process.poll() is None:
        project_id = project_id or find_project(client, studio.conn, "killed run")
        count = len(list(client.tasks.list(project=project_id, fields="task_only"))) if project_id else 0
        if count >= 8:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode(errors="replace")
    assert project_id is not None and 0 < count < 40, output
    settings = studio.settings_for("killed run", batch_size=4)
    done = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    assert done.report["tasks_created"] == 40 - done.report["tasks_existing"] > 0
    image_ids = [t.data["image_id"] for t in _tasks(client, project_id)]
    assert sorted(image_ids) == sorted(s.image_id for s in specs)


def _killed_script() -> str:
    """A push through the CLI command against the remote-server env vars, each batch slowed so it can be killed
    half-way; the project title and batch size are forced, whatever params.yaml holds."""
    return """
import sys, time
from pathlib import Path
from curation.studio import cli
from curation.studio import push as push_module
from schemas.params_studio import LabelStudioParams
real = push_module._import_batch
def slow(*args, **kwargs):
    time.sleep(0.4)
    return real(*args, **kwargs)
push_module._import_batch = slow
cli.studio_settings = lambda params: LabelStudioParams(project_title="killed run", batch_size=4)
cli.push_command(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), params_path=Path(sys.argv[4]))
"""


def test_three_annotators_pull_matches_what_was_created(studio: Studio, params, tmp_path) -> None:
    _, _, specs = _specs(studio, params, "pull", 4)
    settings = studio.settings_for("pull", boxes=True)
    client = studio.client()
    pushed = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    empty = pull(client, studio.conn, project_title="pull")
    assert empty.empty and "no reviews yet" in empty.report["note"]

    users = [client.users.create(username=f"ann{i}", email=f"ann{i}@pull.test") for i in range(3)]
    tasks = sorted(_tasks(client, pushed.project.id), key=lambda t: t.data["image_id"])
    expected = set()
    box = {
        "from_name": BOXES,
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 64,
        "original_height": 48,
        "value": {"x": 25, "y": 50, "width": 50, "height": 25, "rectanglelabels": ["dent"]},
    }
    for k, user in enumerate(users):
        for j, task in enumerate(tasks[:3]):
            label = params.ontology.class_names[(k + j) % 6]
            result = [
                {"from_name": LABEL, "to_name": "image", "type": "choices", "value": {"choices": [label]}},
                {"from_name": SEVERITY, "to_name": "image", "type": "choices", "value": {"choices": ["minor"]}},
            ] + ([box] if k == 0 else [])
            client.annotations.create(id=task.id, result=result, completed_by=user.id, lead_time=1.0 + k)
            expected.add((task.data["image_id"], user.email, label))
    # annotator 0 changes their mind on the first task: the newer annotation wins
    changed = [{"from_name": LABEL, "to_name": "image", "type": "choices", "value": {"choices": ["crack"]}}]
    time.sleep(0.01)
    client.annotations.create(id=tasks[0].id, result=changed, completed_by=users[0].id)
    expected.discard((tasks[0].data["image_id"], users[0].email, params.ontology.class_names[0]))
    expected.add((tasks[0].data["image_id"], users[0].email, "crack"))
    client.annotations.create(id=tasks[3].id, result=[], was_cancelled=True, completed_by=users[1].id)

    result = pull(client, studio.conn, project_title="pull")
    frame = result.annotations
    assert set(zip(frame["image_id"], frame["annotator"], frame["label"], strict=True)) == expected
    assert len(frame) == 9 and frame["annotation_id"].is_unique
    assert (result.report["cancelled"], result.report["superseded"], result.report["annotators"]) == (1, 1, 3)
    boxed = frame[frame["boxes"].notna()]
    assert len(boxed) == 2  # annotator 0's first annotation on task 0 was superseded
    assert json.loads(boxed["boxes"].iloc[0]) == [{"x": 16.0, "y": 24.0, "w": 32.0, "h": 12.0, "label": "dent"}]

    write_pull(result, tmp_path / "a")
    write_pull(pull(client, studio.conn, project_title="pull"), tmp_path / "b")
    for name in ("annotations.parquet", "pull.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_simulated_reviewers_annotate_through_the_api(studio: Studio, params) -> None:
    _, _, specs = _specs(studio, params, "simulated", 10)
    settings = studio.settings_for("simulated", agreement_sample=0.3, maximum_annotations=3)
    client = studio.client()
    push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    sim = SimulationParams(reviewers=3, noise=0.0, skip_rate=0.0, seed=1, truth=None)
    report = simulate(client, studio.conn, project_title="simulated", ontology=params.ontology, settings=sim, truth={})
    assert report["annotations_created"] == 7 * 1 + 3 * 3
    again = simulate(client, studio.conn, project_title="simulated", ontology=params.ontology, settings=sim, truth={})
    assert again["annotations_created"] == 0
    frame = pull(client, studio.conn, project_title="simulated").annotations
    assert set(frame["annotator"]) <= {reviewer_email(i) for i in (1, 2, 3)}
    assert all(e.endswith("@simulated.local") for e in frame["annotator"])
    predicted = {s.image_id: s.data["predicted"] for s in specs}
    assert all(predicted[i] == label for i, label in zip(frame["image_id"], frame["label"], strict=True))
    assert frame.groupby("image_id").size().value_counts().to_dict() == {1: 7, 3: 3}


def test_cli_push_simulate_pull_as_the_demo_runs_them(studio: Studio, params, tmp_path, monkeypatch) -> None:
    from curation.studio import cli

    manifest, predictions, _ = _specs(studio, params, "demo", 6)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    predictions.to_parquet(tmp_path / "predictions.parquet")
    truth = tmp_path / "truth.csv"
    pd.DataFrame({"file": manifest["rel_path"], "label": "dent", "severity": "major"}).to_csv(truth, index=False)
    settings = studio.settings_for(
        "demo-cli", agreement_sample=0.5, maximum_annotations=2, simulation=SimulationParams(severity_noise=0.0)
    )
    monkeypatch.setattr(cli, "studio_settings", lambda _params: settings)
    app = typer.Typer()
    for name, command in (("push", cli.push_command), ("pull", cli.pull_command), ("simulate", cli.simulate_command)):
        app.command(name)(command)
    runner = CliRunner()
    params_file = str(ROOT / "params.yaml")

    before = runner.invoke(app, ["pull", str(tmp_path / "pull0"), "--params", params_file])
    assert before.exit_code == 0 and "no project yet" in before.output
    assert pd.read_parquet(tmp_path / "pull0" / "annotations.parquet").empty

    out = [str(tmp_path / "manifest.parquet"), str(tmp_path / "predictions.parquet"), str(tmp_path / "push")]
    pushed = runner.invoke(app, ["push", *out, "--disputes", str(tmp_path / "none.csv"), "--params", params_file])
    assert pushed.exit_code == 0, pushed.output
    assert "6 tasks created" in pushed.output and "no disputes file" in pushed.output

    simulated = runner.invoke(app, ["simulate", "--truth", str(truth), "--noise", "0", "--params", params_file])
    assert simulated.exit_code == 0, simulated.output
    assert "SIMULATED reviewers" in simulated.output and "sim-reviewer-1@simulated.local" in simulated.output

    pulled = runner.invoke(app, ["pull", str(tmp_path / "pull"), "--params", params_file])
    assert pulled.exit_code == 0, pulled.output
    frame = pd.read_parquet(tmp_path / "pull" / "annotations.parquet")
    kept = 3 * 2 + 3 - json.loads((tmp_path / "pull" / "pull.json").read_text())["cancelled"]
    assert len(frame) == kept and set(frame["severity"]) == {"major"}
    assert set(frame["label"]) == {"dent"}

    bad = runner.invoke(app, ["push", str(tmp_path / "missing.parquet"), *out[1:], "--params", params_file])
    assert bad.exit_code == 1 and "missing.parquet: file not found; run `dvc repro ingest`" in bad.output


def test_prior_polygons_are_preannotated_and_pulled_back_as_shapes(studio: Studio, params) -> None:
    manifest, predictions = make_inputs(studio.document_root / "shapes", params.ontology, 3)
    manifest["height"] = 48  # make_inputs writes 64 x 48 images
    polygon = [8.0, 4.0, 40.0, 4.0, 40.0, 20.0, 24.0, 30.0, 8.0, 20.0]
    prior = pd.DataFrame(
        {
            "image_id": manifest["image_id"].iloc[:1],
            "label": "dent",
            "x": 8.0,
            "y": 4.0,
            "w": 32.0,
            "h": 26.0,
            "polygons": json.dumps([polygon]),
            "area": 700.0,
        }
    )
    specs = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=studio.document_root, prior=prior
    )
    settings = studio.settings_for("shapes", boxes=True)
    client = studio.client()
    pushed = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    tasks = {t.data["image_id"]: t for t in _tasks(client, pushed.project.id)}
    shaped = tasks[manifest["image_id"].iloc[0]]
    (prediction,) = shaped.predictions
    [result] = [r for r in prediction.result if r["type"] == "polygonlabels"]
    assert result["value"]["polygonlabels"] == ["dent"] and len(result["value"]["points"]) == 5
    other = tasks[manifest["image_id"].iloc[1]]
    assert all(r["type"] != "polygonlabels" for p in other.predictions for r in p.result)

    # a reviewer accepts the pre-annotation as it is: the pulled region is the prior polygon, in pixels
    user = client.users.create(username="shapes", email="shapes@pull.test")
    client.annotations.create(id=shaped.id, result=prediction.result, completed_by=user.id)
    frame = pull(client, studio.conn, project_title="shapes").annotations
    [region] = json.loads(frame["boxes"].iloc[0])
    assert region["label"] == "dent" and region["segmentation"] == [pytest.approx(polygon, abs=0.01)]
    assert (region["x"], region["y"], region["w"], region["h"]) == pytest.approx((8, 4, 32, 26), abs=0.01)
