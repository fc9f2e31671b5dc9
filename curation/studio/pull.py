"""pull: reviews from Label Studio into ``annotations.parquet`` (one row per annotator and task).

Columns are exactly :class:`schemas.records.Annotation`. Cancelled (skipped) annotations are left out but
counted; when an annotator has several annotations on one task, the latest (by ``updated_at``, then id) wins
and the others are counted as superseded. Rows are sorted and typed the same way every time, and ``pull.json``
holds no timestamps, so an unchanged project gives byte-identical outputs and DVC does not re-run downstream
stages. With no project or no reviews yet the outputs are empty (with the same columns) and the report says so.

When push spread the tasks over several projects (parts, see :mod:`curation.studio.config`), every part is
exported and the rows merged: task ids are unique over the whole server (one table, one sequence), so
``task_id`` still names one task and rows keep the same columns. ``pull.json`` then also holds ``projects``,
each part's project id, title, exported tasks and annotation rows; with one project it is exactly as before.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from curation.headline import write_headline
from curation.io import publish, write_json, write_parquet
from curation.studio.client import Connection, translate
from curation.studio.config import DESCRIPTION, LABEL, SEVERITY, find_project_set, part_title
from curation.studio.mapping import REGIONS, from_results, label_regions
from schemas.records import Annotation, boxes_to_json, columns

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

ANNOTATION_DTYPES = {  # schemas.records.Annotation's columns, in order (a test checks it)
    "image_id": "string",
    "task_id": "Int64",
    "annotation_id": "Int64",
    "annotator": "string",
    "label": "string",
    "severity": "string",
    "description": "string",
    "boxes": "string",
    "lead_time": "Float64",
    "created_at": "string",
    "updated_at": "string",
}


@dataclass(frozen=True)
class PullResult:
    annotations: pd.DataFrame
    report: dict[str, Any]

    @property
    def empty(self) -> bool:
        return self.annotations.empty


def empty_annotations() -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=columns(Annotation)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(ANNOTATION_DTYPES)].astype(ANNOTATION_DTYPES).reset_index(drop=True)


def pull(client: LabelStudio, conn: Connection, *, project_title: str) -> PullResult:
    """Export every project of the set ``project_title`` and turn their annotations into :class:`Annotation` rows."""
    parts = find_project_set(client, conn, project_title)
    if not parts:
        report = {"project_found": False, "tasks": 0, "annotations": 0, "note": "no project yet: run push first"}
        return PullResult(empty_annotations(), _full_report(report))
    exported: dict[int, list[dict]] = {}
    for part, project_id in parts.items():
        with translate(f"exporting the tasks of project {part_title(project_title, part)!r} (id {project_id})", conn):
            exported[part] = json.loads(b"".join(client.projects.exports.download_sync(project_id, export_type="JSON")))
    with translate("listing users", conn):
        users = {u.id: (u.email or f"user-{u.id}") for u in client.users.list()}
    result = annotations_from_export([t for tasks in exported.values() for t in tasks], users)
    if len(parts) == 1:
        return result
    rows = result.annotations["task_id"].value_counts()
    projects = {
        str(part): {
            "project_id": project_id,
            "title": part_title(project_title, part),
            "tasks": len(exported[part]),
            "annotations": int(sum(rows.get(t.get("id"), 0) for t in exported[part])),
        }
        for part, project_id in parts.items()
    }
    return PullResult(result.annotations, {**result.report, "project_count": len(parts), "projects": projects})


def annotations_from_export(tasks: Iterable[Mapping[str, Any]], users: Mapping[int, str]) -> PullResult:
    """Rows from a Label Studio JSON export (pure: tested without a server).

    Args:
        tasks: The export: tasks with ``data`` and ``annotations``.
        users: User id -> e-mail, to name annotators.
    """
    counts: Counter[str] = Counter()
    candidates: dict[tuple[int, str], list[dict]] = {}
    tasks = list(tasks)
    for task in tasks:
        image_id = (task.get("data") or {}).get("image_id")
        if image_id is None:
            counts["foreign_tasks"] += 1
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                counts["cancelled"] += 1
                continue
            row = _row(task, image_id, annotation, users)
            counts["unlabeled_regions_on_ok"] += row.pop("regions_dropped")
            if row["label"] is None:
                counts["without_class"] += 1
                continue
            candidates.setdefault((row["task_id"], row["annotator"]), []).append(row)
    rows = []
    for group in candidates.values():
        group.sort(key=lambda r: (r["updated_at"] or "", r["annotation_id"]))
        rows.append(group[-1])
        counts["superseded"] += len(group) - 1
    frame = pd.DataFrame(rows, columns=columns(Annotation)) if rows else pd.DataFrame(columns=columns(Annotation))
    frame = _typed(frame.sort_values(["image_id", "annotator", "task_id"], kind="stable"))
    report = {
        "project_found": True,
        "tasks": len(tasks),
        "annotations": len(frame),
        "cancelled": counts["cancelled"],
        "superseded": counts["superseded"],
        "without_class": counts["without_class"],
        "foreign_tasks": counts["foreign_tasks"],
        "unlabeled_regions_on_ok": counts["unlabeled_regions_on_ok"],  # model's suspect regions on images called OK
        "reviewed_images": int(frame["image_id"].nunique()),
        "annotators": int(frame["annotator"].nunique()),
        "images_with_2plus_reviews": int((frame.groupby("image_id").size() >= 2).sum()) if len(frame) else 0,
        "note": "" if len(frame) else "no reviews yet: annotations.parquet is empty",
    }
    return PullResult(frame, _full_report(report))


def _full_report(report: dict) -> dict:
    keys = (
        "tasks",
        "annotations",
        "cancelled",
        "superseded",
        "without_class",
        "foreign_tasks",
        "unlabeled_regions_on_ok",
        "reviewed_images",
        "annotators",
        "images_with_2plus_reviews",
    )
    return {**dict.fromkeys(keys, 0), "note": "", **report}


def _row(task: Mapping, image_id: str, annotation: Mapping, users: Mapping[int, str]) -> dict[str, Any]:
    by = annotation.get("completed_by")
    if isinstance(by, Mapping):  # some exports expand the user
        annotator = by.get("email") or users.get(by.get("id"), f"user-{by.get('id')}")
    else:
        annotator = users.get(by, f"user-{by}")
    size = (task.get("data") or {}).get("original_size")  # set by push when the UI shows a preview
    parsed = parse_result(annotation.get("result") or [], size=tuple(size) if size else None)
    return {
        "image_id": image_id,
        "task_id": task.get("id"),
        "annotation_id": annotation.get("id"),
        "annotator": annotator,
        **parsed,
        "lead_time": annotation.get("lead_time"),
        "created_at": annotation.get("created_at"),
        "updated_at": annotation.get("updated_at"),
    }


def parse_result(result: Iterable[Mapping[str, Any]], *, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Label, severity, description and boxes (JSON, pixels) from one annotation's result list; a polygon is a box
    with ``segmentation`` and ``area`` (:mod:`curation.studio.mapping`). A region without a label (a pre-annotated
    anomaly region the reviewer kept as it was) takes the annotation's class, or is left out when that class is an
    OK class (counted as ``regions_dropped``, :func:`curation.studio.mapping.label_regions`).

    Args:
        size: (width, height) of the original image when the UI showed a preview of another size; else the
            result's ``original_width`` / ``original_height`` (the size of the image drawn on) are used.
    """
    values = from_results(result, size=size)
    regions, dropped = label_regions(values[REGIONS], values.get(LABEL))
    return {
        "regions_dropped": dropped,
        "label": values.get(LABEL),
        "severity": values.get(SEVERITY),
        "description": values.get(DESCRIPTION),
        "boxes": boxes_to_json(regions),
    }


def write_pull(result: PullResult, out_dir: Path) -> None:
    """Write ``annotations.parquet`` and ``pull.json`` into ``out_dir`` as one set."""
    with publish(out_dir) as staging:
        write_parquet(staging / "annotations.parquet", result.annotations)
        write_json(staging / "pull.json", result.report)
        write_headline(staging, "pull", result.report)
