"""Simulated reviewers for the demo, where no person is there to review.

They are ordinary Label Studio users named as what they are (``sim-reviewer-<n>@simulated.local``, first name
"Simulated") and annotate over the API, so pull, agreement and everything after run on real Label Studio data. Each
starts from a ground-truth label when a truth CSV is given (the sample data has one), else from the model's label,
and picks a wrong class with probability ``noise``. A task pre-labelled "defect, type not chosen yet" (an anomaly
pre-label, no class pre-selected) gets a defect class drawn with the seed, and the model's suspect regions are kept
unless the reviewer's class (truth or noise) is an OK class (pull gives them the reviewer's class). Every choice is
drawn from a generator seeded by ``seed``, the image id and the reviewer, so a rerun makes the same annotations,
and reviewers who already annotated a task are skipped, so running it twice adds nothing. Real projects skip this
step.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curation.errors import InputError
from curation.ontology import is_ok_label
from curation.studio.client import Connection, translate
from curation.studio.config import DESCRIPTION, LABEL, SEVERITY, find_projects
from curation.studio.errors import StudioError
from curation.studio.mapping import CONTROLS, CONVERTERS, from_results, to_label_studio
from schemas.ontology import Ontology
from schemas.params_studio import SimulationParams

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

DOMAIN = "simulated.local"
LEAD_TIME_S = (4.0, 40.0)


def reviewer_email(number: int) -> str:
    return f"sim-reviewer-{number}@{DOMAIN}"


@dataclass(frozen=True)
class Truth:
    label: str
    severity: str | None


def read_truth(path: Path | None, ontology: Ontology) -> dict[str, Truth]:
    """``file -> Truth`` from a CSV with columns file, label and optionally severity; {} when there is no file."""
    if path is None or not Path(path).exists():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"file", "label"} - set(frame.columns)
    if missing:
        raise InputError(f"{path}: missing column(s) {sorted(missing)}; expected file,label[,severity]")
    bad = ~frame["label"].isin(ontology.class_names)
    if bad.any():
        rows = [int(i) + 2 for i in frame.index[bad][:5]]
        raise InputError(f"{path}: lines {rows} have labels that are not ontology classes {ontology.class_names}")
    severities = frame["severity"] if "severity" in frame.columns else pd.Series("", index=frame.index)
    return {
        f: Truth(label, s if s in ontology.severity_names else None)
        for f, label, s in zip(frame["file"], frame["label"], severities, strict=True)
    }


def _rng(seed: int, *keys: str | int) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, keys)).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def simulated_annotation(
    task: Mapping[str, Any],
    reviewer: int,
    *,
    ontology: Ontology,
    settings: SimulationParams,
    truth: Mapping[str, Truth],
) -> dict[str, Any]:
    """One reviewer's annotation of one task (pure): result, lead time and whether it was skipped."""
    data = task.get("data") or {}
    rng = _rng(settings.seed, data.get("image_id", task.get("id")), reviewer)
    lead_time = round(float(rng.uniform(*LEAD_TIME_S)), 1)
    if rng.random() < settings.skip_rate:
        return {"result": [], "was_cancelled": True, "lead_time": lead_time}
    latest = _latest_result(task)
    prediction = from_results(latest) if latest is not None else {}
    known = truth.get(data.get("file", ""))
    classes = ontology.class_names
    untyped = latest is not None and not prediction.get(LABEL)  # "defect": the reviewer picks the type
    pool = ([c for c in classes if not is_ok_label(c)] or classes) if untyped else classes
    label = known.label if known else prediction.get(LABEL) or pool[int(rng.integers(len(pool)))]
    if rng.random() < settings.noise:
        label = str(rng.choice([c for c in classes if c != label]))
    severity = known.severity if known else None
    if severity is not None and rng.random() < settings.severity_noise:
        severity = str(rng.choice(ontology.severity_names))
    result = [to_label_studio(LABEL, label)]
    if severity:
        result.append(to_label_studio(SEVERITY, severity))
    if prediction.get(DESCRIPTION):
        result.append(to_label_studio(DESCRIPTION, prediction[DESCRIPTION]))
    if untyped and not is_ok_label(label):  # only on "defect" tasks: elsewhere as before
        shapes = {kind for kind, converter in CONVERTERS.items() if converter.shape}
        result += [_kept(r) for r in latest or [] if r.get("type") in shapes and r.get("from_name") in CONTROLS]
    return {"result": result, "was_cancelled": False, "lead_time": lead_time}


def _latest_result(task: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The result list of the task's latest prediction; None without one."""
    predictions = task.get("predictions") or []
    if not predictions:
        return None
    latest = max(predictions, key=lambda p: (p.get("created_at") or "", p.get("id") or 0))
    return list(latest.get("result") or [])


def _kept(shape: Mapping[str, Any]) -> dict[str, Any]:
    """A predicted shape as the reviewer keeps it: the same region, no longer the model's score."""
    return {k: v for k, v in shape.items() if k not in ("score", "id", "origin")}


def reviewers_for(task: Mapping[str, Any], settings: SimulationParams) -> list[int]:
    """Which reviewers (1-based) annotate this task: as many as the task's overlap, drawn with the seed."""
    wanted = min(int(task.get("overlap") or 1), settings.reviewers)
    rng = _rng(settings.seed, (task.get("data") or {}).get("image_id", task.get("id")), "who")
    return sorted(int(i) + 1 for i in rng.choice(settings.reviewers, size=wanted, replace=False))


def simulate(
    client: LabelStudio,
    conn: Connection,
    *,
    project_title: str,
    ontology: Ontology,
    settings: SimulationParams,
    truth: Mapping[str, Truth],
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Let the simulated reviewers annotate every task they have not annotated yet, in every project of the set
    ``project_title``; returns counts."""
    project_ids = find_projects(client, conn, project_title)
    if not project_ids:
        raise StudioError(f"no Label Studio project titled {project_title!r}; run push first")
    users = _ensure_reviewers(client, conn, settings.reviewers)
    tasks = []
    for project_id in project_ids:
        with translate(f"listing the tasks of project {project_id} with their annotations", conn):
            tasks.extend(t.model_dump(mode="json") for t in client.tasks.list(project=project_id, page_size=500))
    tasks.sort(
        key=lambda t: (_place(t, "queue"), _place(t, "margin"), t["id"])
    )  # the review queue, as a person gets it
    jobs = []
    for task in tasks:
        done = {a.get("completed_by") for a in task.get("annotations") or []}
        jobs.extend((task, r) for r in reviewers_for(task, settings) if users[r] not in done)
    if on_start:
        on_start(len(jobs))
    created = skipped = 0
    for task, reviewer in jobs:
        annotation = simulated_annotation(task, reviewer, ontology=ontology, settings=settings, truth=truth)
        with translate(f"annotating task {task['id']} as {reviewer_email(reviewer)}", conn):
            client.annotations.create(id=task["id"], completed_by=users[reviewer], **annotation)
        created += 1
        skipped += annotation["was_cancelled"]
        if on_progress:
            on_progress(1)
    return {
        "project_id": project_ids[0],
        "project_ids": project_ids,
        "reviewers": [reviewer_email(i) for i in range(1, settings.reviewers + 1)],
        "annotations_created": created,
        "skipped": skipped,
        "tasks": len(tasks),
        "truth_used": bool(truth),
        "noise": settings.noise,
        "seed": settings.seed,
    }


def _place(task: Mapping[str, Any], key: str) -> float:
    value = (task.get("data") or {}).get(key)
    return float(value) if isinstance(value, int | float) else math.inf


def _ensure_reviewers(client: LabelStudio, conn: Connection, count: int) -> dict[int, int]:
    """Reviewer number -> user id, creating the simulated users that do not exist yet."""
    with translate("listing users", conn):
        by_email = {(u.email or "").lower(): u.id for u in client.users.list()}
    out = {}
    for number in range(1, count + 1):
        email = reviewer_email(number)
        if email not in by_email:
            with translate(f"creating simulated reviewer {email}", conn):
                user = client.users.create(
                    username=f"sim-reviewer-{number}",
                    email=email,
                    first_name="Simulated",
                    last_name=f"reviewer {number}",
                )
            by_email[email] = user.id
        out[number] = by_email[email]
    return out
