"""push: images and pre-labels into a Label Studio project, idempotently.

Every task carries the image's stable ``image_id`` in its data, and push starts from one listing of the project's
tasks, so pushing again creates nothing twice, a push killed half-way completes on the next run, and a new model
version is added as predictions on the tasks that already exist. Tasks are imported in review-queue order (most
anomalous beside most uncertain, :mod:`curation.studio.order`) and carry their place (``queue``) and ``margin`` /
``entropy`` in their data; the project's "Most uncertain first" tab and sequential sampling serve them in that order.

Images are served by Label Studio's local-files storage (``/data/local-files/?d=<path under the document root>``);
push registers a local import storage covering the image folders but never syncs it (a sync would import the
folder again as tasks without predictions).

Requests: task and prediction imports are cut into batches of at most ``labelstudio.batch_size`` items whose
JSON body (as sent: compact, UTF-8) is at most ``labelstudio.max_request_mb`` MB; Label Studio takes at most
250,000 tasks and 200 MB per request. A single task or prediction over the byte cap is an error raised before
any task or prediction is imported.

Several projects (``labelstudio.max_tasks_per_project``, default 100,000, as Label Studio's maintainers advise):
the tasks of one ``project_title`` live in a set of projects, part 1 titled ``project_title`` and part ``n``
titled ``"<project_title> (part n)"`` (:func:`curation.studio.config.part_title`). The rule, stable from run to
run:

1. Push lists every project of the set; a task already on one of them stays there (image ids are looked up in
   all parts, so nothing is imported twice).
2. New tasks, in import order (most uncertain first), fill the lowest-numbered part that has room (fewer than
   ``max_tasks_per_project`` tasks of any kind), then the next one.
3. When every part is full, a new part numbered one above the highest is created, with the same label config,
   settings and tabs, and filled up to ``max_tasks_per_project``, and so on.

Lowering ``max_tasks_per_project`` later moves nothing: fuller parts simply take no new tasks. Pull and the
simulated reviewers read every part.

Shapes: with ``labelstudio.boxes: true``, prior labels that came with a shape (masks, polygon labels: the
``polygons`` column of ``prior_labels.parquet``) are added to every pre-annotation of their image as
``polygonlabels`` results (points in percent of the image), one per polygon, so reviewers correct the outline instead
of drawing it; an image with shapes but no prediction gets a prediction of its own (model version
:data:`PRIOR_VERSION`). Without shapes the tasks are exactly as before. Like every prediction, they are sent once per
model version: shapes changed later reach existing tasks with the next model version.

Outputs (``write_push``): ``tasks.parquet`` (image_id, task_id, project_id, overlap, model_versions, adjudicate)
and ``push.json`` (counts, DVC metrics; ``projects`` holds each part's project id, title and task count).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from curation.headline import write_headline
from curation.io import publish, write_json, write_parquet
from curation.studio.client import Connection, translate
from curation.studio.config import ProjectInfo, add_part, ensure_projects
from curation.studio.errors import StudioError, StudioUnavailable
from curation.studio.order import QUEUE
from curation.studio.tasks import (
    TaskSpec,
    assign_parts,
    prediction_batches,
    storage_folders,
    task_batches,
    task_request,
)
from curation.tables import read_table
from schemas.ontology import Ontology
from schemas.params_studio import LabelStudioParams
from schemas.records import Dispute, Task, columns

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

TASK_COLUMNS = columns(Task)
MANAGED_DATA_KEYS = ("image", "image_id", "file", "margin", "entropy", "predicted", "adjudicate", "original_size")
MANAGED_DATA_KEYS += (QUEUE,)  # the review queue place (curation.studio.order)
LIST_PAGE_SIZE = 1000
LIST_FIELDS = "id,data,overlap"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PushResult:
    tasks: pd.DataFrame
    report: dict[str, Any]
    projects: tuple[ProjectInfo, ...]  # every part of the set, part 1 first

    @property
    def project(self) -> ProjectInfo:
        """Part 1, the project titled ``project_title``."""
        return self.projects[0]


@dataclass
class _Existing:
    """The tasks and predictions of the set's projects as found on the server."""

    tasks: dict[str, list[int]] = field(default_factory=dict)  # image_id -> task ids, oldest first
    data: dict[int, dict] = field(default_factory=dict)
    overlap: dict[int, int] = field(default_factory=dict)
    predictions: dict[int, dict[str, list[int]]] = field(default_factory=dict)  # task -> version -> prediction ids
    project_of: dict[int, int] = field(default_factory=dict)  # task id -> project id
    counts: dict[int, int] = field(default_factory=dict)  # project id -> tasks, ours or not
    max_task_id: int = 0


def push(
    client: LabelStudio,
    conn: Connection,
    specs: Sequence[TaskSpec],
    *,
    ontology: Ontology,
    settings: LabelStudioParams,
    on_start: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> PushResult:
    """Make the project set hold exactly one task per spec, with every spec's predictions (the rule for which
    project a new task goes to is in the module docstring).

    Args:
        client: SDK client (``make_client``).
        conn: The server (for messages).
        specs: From :func:`curation.studio.tasks.build_tasks`, in the order tasks should be imported.
        ontology: For the labeling config.
        settings: The ``labelstudio`` params.
        on_start: Called once with the number of work items (tasks to import, predictions to add, tasks to update).
        on_progress: Called with the number of work items done since the last call.

    Raises:
        InputError: one task or prediction is larger than ``labelstudio.max_request_mb`` (raised before any task
            or prediction is imported).
    """
    advance = on_progress or (lambda _n: None)
    parts = {p.part: p for p in ensure_projects(client, conn, ontology, settings)}
    root = conn.document_root or Path(os.path.abspath(settings.document_root))
    folders = storage_folders(specs, root)
    for info in parts.values():
        _ensure_storages(client, conn, info.id, folders)
    existing = _list_existing(client, conn, [p.id for p in parts.values()])

    new = [s for s in specs if s.image_id not in existing.tasks]
    counts = {part: existing.counts.get(info.id, 0) for part, info in parts.items()}
    plan = assign_parts(len(new), counts, settings.max_tasks_per_project)
    missing_predictions = _missing_predictions(specs, existing)
    stale = _stale_predictions(specs, existing) if not settings.keep_old_predictions else []
    updates = _data_updates(specs, existing)
    # every request is cut before any is sent, so a task or prediction too large for one stops the push early
    shares, offset = [], 0
    for part, count in plan:
        shares.append((part, task_batches(new[offset : offset + count], settings)))
        offset += count
    prediction_requests = [
        (project_id, batch)
        for project_id, group in _by_project(missing_predictions, existing).items()
        for batch in prediction_batches(group, settings)
    ]
    if on_start:
        on_start(len(new) + len(missing_predictions) + len(stale) + len(updates))

    created: dict[int, int] = {}
    for part, batches in shares:
        if part not in parts:
            parts[part] = add_part(client, conn, ontology, settings, part)
            _ensure_storages(client, conn, parts[part].id, folders)
        created[parts[part].id] = _import_new(client, conn, parts[part].id, batches, existing, settings, advance)
    for project_id, batch in prediction_requests:
        with translate(f"adding {len(batch)} predictions to existing tasks of project {project_id}", conn):
            client.projects.import_predictions(id=project_id, request=list(batch))
        advance(len(batch))
    for prediction_id in stale:
        with translate(f"removing old prediction {prediction_id}", conn):
            client.predictions.delete(id=prediction_id)
        advance(1)
    for task_id, data in updates:
        with translate(f"updating task {task_id}", conn):
            client.tasks.update(id=task_id, data=data)
        advance(1)
    ordered = tuple(parts[part] for part in sorted(parts))
    for info in ordered:
        _set_model_version(client, conn, info.id, specs)

    changed_tasks = new or missing_predictions or stale  # these change task ids, overlap or prediction versions
    final = _list_existing(client, conn, [p.id for p in ordered]) if changed_tasks else existing
    tasks = _task_frame(specs, final)
    duplicates = {k: v for k, v in final.tasks.items() if len(v) > 1}
    first = ordered[0]
    report = {
        "project_id": first.id,
        "project_title": first.title,
        "project_created": first.created,
        "project_updated": list(first.updated),
        "server": conn.url,
        "images": len(specs),
        "tasks_created": sum(created.values()),
        "tasks_existing": len(specs) - len(new),
        "tasks_in_project": sum(len(v) for v in final.tasks.values()),  # in every project of the set
        "tasks_with_overlap": int((tasks["overlap"] > 1).sum()),
        "predictions_added": len(missing_predictions) + sum(len(s.predictions) for s in new),
        "predictions_removed": len(stale),
        "tasks_updated": len(updates),
        "flagged_for_adjudication": int(tasks["adjudicate"].sum()),
        "duplicate_image_ids": len(duplicates),
        "model_versions": sorted({p["model_version"] for s in specs for p in s.predictions}),
        "project_count": len(ordered),
        "projects": {
            str(info.part): {
                "project_id": info.id,
                "title": info.title,
                "created": info.created,
                "tasks": final.counts.get(info.id, 0),
                "tasks_created": created.get(info.id, 0),
            }
            for info in ordered
        },
    }
    return PushResult(tasks, report, ordered)


def _by_project(predictions: Sequence[dict], existing: _Existing) -> dict[int, list[dict]]:
    """Predictions grouped by their task's project: Label Studio imports predictions into one project at a time."""
    out: dict[int, list[dict]] = defaultdict(list)
    for prediction in predictions:
        out[existing.project_of[prediction["task"]]].append(prediction)
    return dict(sorted(out.items()))


def _ensure_storages(client: LabelStudio, conn: Connection, project_id: int, folders: Sequence[Path]) -> None:
    with translate("listing local-files storages", conn):
        present = [Path(s.path) for s in client.import_storage.local.list(project=project_id) if s.path]
    for folder in folders:
        if any(folder == p or p in folder.parents for p in present):
            continue
        with translate(f"registering local-files storage {folder}", conn):
            # never .sync() it: that would import the folder again as tasks without predictions
            client.import_storage.local.create(
                project=project_id, path=str(folder), use_blob_urls=True, title=f"images: {folder.name}"
            )
        present.append(folder)


def _list_existing(
    client: LabelStudio, conn: Connection, project_ids: Sequence[int], *, after_id: int = 0
) -> _Existing:
    """One listing of the projects' tasks (and predictions, unless ``after_id``: then only tasks newer than it)."""
    found = _Existing()
    query = None
    if after_id:
        newer = {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": after_id}
        query = json.dumps({"filters": {"conjunction": "and", "items": [newer]}})
    for project_id in project_ids:
        found.counts[project_id] = 0
        with translate(f"listing the tasks of project {project_id}", conn):
            # include= limits the Data Manager to these columns: measured 7x faster than fields="task_only"
            listing = client.tasks.list(
                project=project_id, fields="task_only", include=LIST_FIELDS, page_size=LIST_PAGE_SIZE, query=query
            )
            for task in listing:
                data = task.data or {}
                found.max_task_id = max(found.max_task_id, task.id)
                found.counts[project_id] += 1
                image_id = data.get("image_id")
                if image_id is None:
                    continue  # a task someone else imported: not ours to manage
                found.tasks.setdefault(image_id, []).append(task.id)
                found.data[task.id] = data
                found.overlap[task.id] = task.overlap or 1
                found.project_of[task.id] = project_id
            if not after_id:
                for prediction in client.predictions.list(project=project_id):
                    versions = found.predictions.setdefault(prediction.task, {})
                    versions.setdefault(prediction.model_version or "", []).append(prediction.id)
    for ids in found.tasks.values():
        ids.sort()  # task ids grow over the whole server, so the first is the oldest in any project
    return found


def _missing_predictions(specs: Sequence[TaskSpec], existing: _Existing) -> list[dict]:
    out = []
    for spec in specs:
        if spec.image_id not in existing.tasks:
            continue
        task_id = existing.tasks[spec.image_id][0]
        have = existing.predictions.get(task_id, {})
        out.extend({"task": task_id, **p} for p in spec.predictions if p["model_version"] not in have)
    return out


def _stale_predictions(specs: Sequence[TaskSpec], existing: _Existing) -> list[int]:
    """Prediction ids of model versions no longer in the predictions file, on tasks that get a current one."""
    out = []
    for spec in specs:
        if spec.image_id not in existing.tasks or not spec.predictions:
            continue
        current = {p["model_version"] for p in spec.predictions}
        have = existing.predictions.get(existing.tasks[spec.image_id][0], {})
        out.extend(pid for version, ids in have.items() if version not in current for pid in ids)
    return sorted(out)


def _data_updates(specs: Sequence[TaskSpec], existing: _Existing) -> list[tuple[int, dict]]:
    """Tasks whose managed data fields (uncertainty, adjudication flag, image URL) changed; other keys are kept."""
    out = []
    for spec in specs:
        if spec.image_id not in existing.tasks:
            continue
        task_id = existing.tasks[spec.image_id][0]
        current = existing.data[task_id]
        wanted = {k: v for k, v in current.items() if k not in MANAGED_DATA_KEYS} | spec.data
        if wanted != current:
            out.append((task_id, wanted))
    return out


def _import_new(
    client: LabelStudio,
    conn: Connection,
    project_id: int,
    batches: Sequence[Sequence[TaskSpec]],
    existing: _Existing,
    settings: LabelStudioParams,
    advance: Progress,
) -> int:
    """Import ``batches`` (from :func:`curation.studio.tasks.request_batches`) into one project. A batch that fails
    with a connection or server error is retried with backoff, after listing the project's tasks created since the
    push started, so a batch the server did take is not imported twice."""
    created = 0
    for batch in batches:
        todo = list(batch)
        attempt = 0
        while todo:
            try:
                ids = _import_batch(client, conn, project_id, todo)
            except StudioUnavailable:
                attempt += 1
                if attempt > settings.retries:
                    raise
                time.sleep(min(2.0**attempt, 30.0))
                arrived = _list_existing(client, conn, [project_id], after_id=existing.max_task_id).tasks
                done = [s for s in todo if s.image_id in arrived]
                existing.tasks.update({s.image_id: arrived[s.image_id] for s in done})
                created += len(done)
                advance(len(done))
                todo = [s for s in todo if s.image_id not in arrived]
                continue
            if len(ids) != len(todo):
                raise StudioError(
                    f"Label Studio created {len(ids)} tasks for a batch of {len(todo)} in project {project_id}; "
                    "run push again to reconcile"
                )
            for spec, task_id in zip(todo, ids, strict=True):
                existing.tasks[spec.image_id] = [task_id]
            created += len(todo)
            advance(len(todo))
            todo = []
    return created


def _import_batch(client: LabelStudio, conn: Connection, project_id: int, batch: Sequence[TaskSpec]) -> list[int]:
    request = [task_request(s) for s in batch]
    with translate(f"importing {len(batch)} tasks into project {project_id}", conn):
        answer = client.projects.import_tasks(
            id=project_id,
            request=request,
            return_task_ids=True,
            request_options={"max_retries": 0},  # not idempotent: _import_new retries after checking
        )
    return list(answer.task_ids or [])


def _set_model_version(client: LabelStudio, conn: Connection, project_id: int, specs: Sequence[TaskSpec]) -> None:
    """Show the newest pushed model version's prediction in the editor (the version on most images, ties by name)."""
    counts: dict[str, int] = defaultdict(int)
    for spec in specs:
        for p in spec.predictions:
            counts[p["model_version"]] += 1
    if not counts:
        return
    version = max(counts, key=lambda v: (counts[v], v))
    with translate("setting the project's model version", conn):
        if client.projects.get(id=project_id).model_version != version:
            client.projects.update(id=project_id, model_version=version)


def _task_frame(specs: Sequence[TaskSpec], final: _Existing) -> pd.DataFrame:
    rows = []
    for spec in sorted(specs, key=lambda s: s.image_id):
        task_ids = final.tasks.get(spec.image_id)
        if not task_ids:
            raise StudioError(f"image {spec.image_id} has no task after push; run push again")
        task_id = task_ids[0]
        versions = sorted(v for v in final.predictions.get(task_id, {}) if v)
        overlap, adjudicate = final.overlap[task_id], spec.data["adjudicate"]
        rows.append((spec.image_id, task_id, final.project_of[task_id], overlap, ",".join(versions), adjudicate))
    frame = pd.DataFrame(rows, columns=TASK_COLUMNS)
    return frame.astype({"task_id": "int64", "project_id": "int64", "overlap": "int64", "adjudicate": "bool"})


def write_push(result: PushResult, out_dir: Path) -> None:
    """Write ``tasks.parquet`` and ``push.json`` into ``out_dir`` as one set."""
    with publish(out_dir) as staging:
        write_parquet(staging / "tasks.parquet", result.tasks)
        write_json(staging / "push.json", result.report)
        write_headline(staging, "push", result.report)


def read_disputes(path: Path | None) -> tuple[set[str], str]:
    """Image ids listed in the agreement stage's ``disputes.csv``, and a note for the user."""
    if path is None or not Path(path).exists():
        return set(), f"no disputes file at {path}; no task flagged for adjudication"
    frame = read_table(Path(path), Dispute, columns=["image_id"], fix="pass the agreement stage's disputes.csv")
    ids = set(frame["image_id"].dropna())
    return ids, f"{len(ids)} disputed image(s) from {path} flagged for adjudication"
