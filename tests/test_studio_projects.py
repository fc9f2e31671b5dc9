"""Push spread over several projects and cut into size-capped requests, against a real Label Studio server."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from curation.errors import InputError
from curation.studio.config import LABEL, VIEW_ADJUDICATE, VIEW_UNCERTAIN, find_project_set
from curation.studio.pull import pull, write_pull
from curation.studio.push import push, write_push
from curation.studio.simulate import reviewer_email, simulate
from curation.studio.tasks import MB, build_tasks, json_size, task_request
from schemas.params_studio import SimulationParams
from tests.conftest import ROOT
from tests.studio_fixture import Studio, make_inputs, shown_version, studio_server  # noqa: F401


def _specs(studio: Studio, params, name: str, n: int, **kwargs):
    manifest, predictions = make_inputs(studio.document_root / name, params.ontology, n, **kwargs)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=studio.document_root)
    return manifest, predictions, specs


def _task_ids(client, project_id: int) -> dict[str, int]:
    """image_id -> task id of the project's tasks."""
    listing = client.tasks.list(project=project_id, fields="task_only", page_size=1000)
    return {t.data["image_id"]: t.id for t in listing}


def _choice(label: str) -> list[dict]:
    return [{"from_name": LABEL, "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def test_tasks_spread_over_parts_stay_put_and_pull_back_together(studio: Studio, params, tmp_path) -> None:
    _, _, specs = _specs(studio, params, "sharded", 12)
    settings = studio.settings_for("sharded", max_tasks_per_project=5)
    client = studio.client()

    first = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    titles = ["sharded", "sharded (part 2)", "sharded (part 3)"]
    assert [p.title for p in first.projects] == titles and all(p.created for p in first.projects)
    assert [p["tasks"] for p in first.report["projects"].values()] == [5, 5, 2]
    assert first.report["project_count"] == 3 and first.report["tasks_created"] == 12
    parts = find_project_set(client, studio.conn, "sharded")
    assert list(parts) == [1, 2, 3] and list(parts.values()) == [p.id for p in first.projects]
    on_server = {part: _task_ids(client, project_id) for part, project_id in parts.items()}
    assert [len(on_server[p]) for p in (1, 2, 3)] == [5, 5, 2]
    assert set(on_server[1]) == {s.image_id for s in specs[:5]}  # most uncertain first fill part 1
    all_ids = [t for tasks in on_server.values() for t in tasks.values()]
    assert len(set(all_ids)) == 12  # task ids are unique over the server, not per project

    write_push(first, tmp_path / "push")
    saved = pd.read_parquet(tmp_path / "push" / "tasks.parquet")
    assert list(saved.columns) == ["image_id", "task_id", "project_id", "overlap", "model_versions", "adjudicate"]
    where = {image: (parts[part], task) for part, tasks in on_server.items() for image, task in tasks.items()}
    assert {r.image_id: (r.project_id, r.task_id) for r in saved.itertuples()} == where
    assert json.loads((tmp_path / "push" / "push.json").read_text())["projects"]["3"]["tasks"] == 2

    config = client.projects.get(id=parts[1]).label_config
    for project_id in parts.values():
        assert client.projects.get(id=project_id).label_config == config
        views = {v.data["title"] for v in client.views.list(project=project_id)}
        assert {VIEW_UNCERTAIN, VIEW_ADJUDICATE} <= views

    again = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    assert again.report["tasks_created"] == 0 and again.report["project_count"] == 3
    assert not any(p.created for p in again.projects)

    _, _, more = _specs(studio, params, "sharded", 16)  # the same 12 images (same seed) and 4 new ones
    grown = push(client, studio.conn, more, ontology=params.ontology, settings=settings)
    assert grown.report["tasks_created"] == 4
    assert [p["tasks"] for p in grown.report["projects"].values()] == [5, 5, 5, 1]
    assert [p["tasks_created"] for p in grown.report["projects"].values()] == [0, 0, 3, 1]
    assert grown.projects[3].title == "sharded (part 4)" and grown.projects[3].created
    parts = find_project_set(client, studio.conn, "sharded")
    after = {part: _task_ids(client, project_id) for part, project_id in parts.items()}
    for part, tasks in on_server.items():
        assert tasks.items() <= after[part].items()  # tasks already on a project stay where they were

    users = [client.users.create(username=f"shard{i}", email=f"shard{i}@parts.test") for i in range(2)]
    expected = set()
    for part, tasks in after.items():
        image_id, task_id = min(tasks.items())
        for k, user in enumerate(users[: 1 + (part == 2)]):  # two reviewers on part 2's task
            label = params.ontology.class_names[(part + k) % len(params.ontology.class_names)]
            client.annotations.create(id=task_id, result=_choice(label), completed_by=user.id)
            expected.add((image_id, task_id, user.email, label))

    result = pull(client, studio.conn, project_title="sharded")
    frame = result.annotations
    assert set(zip(frame["image_id"], frame["task_id"], frame["annotator"], frame["label"], strict=True)) == expected
    assert result.report["project_count"] == 4 and result.report["annotations"] == 5
    assert [p["annotations"] for p in result.report["projects"].values()] == [1, 2, 1, 1]
    assert [p["project_id"] for p in result.report["projects"].values()] == list(parts.values())
    write_pull(result, tmp_path / "a")
    write_pull(pull(client, studio.conn, project_title="sharded"), tmp_path / "b")
    for name in ("annotations.parquet", "pull.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    sim = SimulationParams(reviewers=1, noise=0.0, skip_rate=0.0, seed=3, truth=None)
    report = simulate(client, studio.conn, project_title="sharded", ontology=params.ontology, settings=sim, truth={})
    assert report["tasks"] == 16 and report["annotations_created"] == 16
    assert report["project_ids"] == list(parts.values())
    simulated = pull(client, studio.conn, project_title="sharded").annotations
    by_simulation = simulated.loc[simulated["annotator"] == reviewer_email(1), "image_id"]
    assert set(by_simulation) == {s.image_id for s in more}


def test_requests_are_cut_by_bytes_and_predictions_go_to_their_tasks_project(
    studio: Studio, params, monkeypatch
) -> None:
    manifest, _, specs = _specs(studio, params, "bytes", 10)
    largest = max(json_size(task_request(s)) for s in specs)
    cap = 2 + 3 * largest + 2  # room for three tasks, whatever their order
    settings = studio.settings_for("bytes", max_request_mb=cap / MB, batch_size=1000, max_tasks_per_project=4)
    client = studio.client()
    sent: list[tuple[str, int, int, list]] = []
    for method in ("import_tasks", "import_predictions"):
        real = getattr(client.projects, method)

        def counted(*args, _real=real, _method=method, **kwargs):
            body = kwargs["request"]
            sent.append((_method, kwargs["id"], 2 + sum(json_size(r) for r in body) + len(body) - 1, body))
            return _real(*args, **kwargs)

        monkeypatch.setattr(client.projects, method, counted)

    first = push(client, studio.conn, specs, ontology=params.ontology, settings=settings)
    assert first.report["tasks_created"] == 10 and first.report["project_count"] == 3
    imports = [s for s in sent if s[0] == "import_tasks"]
    assert sum(len(s[3]) for s in imports) == 10
    assert all(size <= cap for _, _, size, _ in imports)
    assert len(imports) >= 4  # parts of 4, 4 and 2 tasks, at most 3 tasks a request

    sent.clear()
    _, _, v2 = _specs(studio, params, "bytes", 10, model_version="clip-test@v2", image_ids=list(manifest["image_id"]))
    second = push(client, studio.conn, v2, ontology=params.ontology, settings=settings)
    assert second.report["tasks_created"] == 0 and second.report["predictions_added"] == 10
    batches = [s for s in sent if s[0] == "import_predictions"]
    assert sum(len(s[3]) for s in batches) == 10 and len(batches) >= 3
    project_tasks = {p.id: set(_task_ids(client, p.id).values()) for p in second.projects}
    for _, project_id, size, body in batches:
        assert size <= cap and {p["task"] for p in body} <= project_tasks[project_id]
    versions = [sorted(p.model_version for p in t.predictions) for pid in project_tasks for t in _listing(client, pid)]
    assert versions == [sorted(map(shown_version, ["clip-test@abc123", "clip-test@v2"]))] * 10

    sent.clear()
    _, _, big = _specs(studio, params, "bytes-big", 2)
    tiny = studio.settings_for("bytes-big", max_request_mb=100 / MB)
    with pytest.raises(InputError, match=rf"the task of image {big[0].image_id} is [\d,]+ bytes of JSON"):
        push(client, studio.conn, big, ontology=params.ontology, settings=tiny)
    assert sent == []  # nothing imported


def _listing(client, project_id: int) -> list:
    return list(client.tasks.list(project=project_id, fields="all", page_size=1000))


def test_cli_push_simulate_pull_over_several_projects(studio: Studio, params, tmp_path, monkeypatch) -> None:
    from curation.studio import cli

    manifest, predictions, _ = _specs(studio, params, "cli-parts", 7)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    predictions.to_parquet(tmp_path / "predictions.parquet")
    settings = studio.settings_for(
        "cli parts", max_tasks_per_project=3, simulation=SimulationParams(truth=None, skip_rate=0.0)
    )
    monkeypatch.setattr(cli, "studio_settings", lambda _params: settings)
    app = typer.Typer()
    for name, command in (("push", cli.push_command), ("pull", cli.pull_command), ("simulate", cli.simulate_command)):
        app.command(name)(command)
    runner = CliRunner()
    params_file = ["--params", str(ROOT / "params.yaml")]
    out = [str(tmp_path / "manifest.parquet"), str(tmp_path / "predictions.parquet"), str(tmp_path / "push")]

    pushed = runner.invoke(app, ["push", *out, "--disputes", str(tmp_path / "none.csv"), *params_file])
    assert pushed.exit_code == 0, pushed.output
    assert "3 projects of 'cli parts'" in pushed.output and "7 tasks created" in pushed.output
    assert "review 'cli parts (part 3)' (1 tasks)" in pushed.output
    simulated = runner.invoke(app, ["simulate", *params_file])
    assert simulated.exit_code == 0, simulated.output
    assert "on 7 tasks in 3 project(s)" in simulated.output
    pulled = runner.invoke(app, ["pull", str(tmp_path / "pull"), *params_file])
    assert pulled.exit_code == 0, pulled.output
    assert "merged from 3 projects of 'cli parts'" in pulled.output
    frame = pd.read_parquet(tmp_path / "pull" / "annotations.parquet")
    assert set(frame["image_id"]) == set(manifest["image_id"])
