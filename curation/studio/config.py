"""The labeling interface generated from the ontology, and the set of projects found by title or created.

Control names are a contract between push (predictions), the UI and pull (annotations):
``label`` (Choices, the defect class), ``severity`` (Choices), ``confidence`` (Number, percent, pre-filled with the
model's score), ``description`` (TextArea, pre-filled) and
``boxes`` (RectangleLabels) and ``polygons`` (PolygonLabels; prior mask and polygon labels are pre-filled there),
both only with ``labelstudio.boxes: true``, all on the ``image`` object.

Project set: Label Studio's maintainers advise about 100,000 tasks per project, so the tasks of one
``labelstudio.project_title`` may be spread over several projects, its *parts*. Part 1 is titled exactly
``project_title`` (a project made before there were parts is part 1); part ``n >= 2`` is titled
``"<project_title> (part n)"`` (:func:`part_title`), the title cut so the whole fits Label Studio's 50 characters.
Every part gets the same label config, settings and Data Manager tabs. Which tasks go to which part is push's
rule (:mod:`curation.studio.push`).
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation.studio.client import Connection, translate
from curation.studio.errors import StudioError
from schemas.ontology import DefectClass, Ontology
from schemas.params_studio import LabelStudioParams

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

IMAGE = "image"
LABEL = "label"
SEVERITY = "severity"
DESCRIPTION = "description"
BOXES = "boxes"
POLYGONS = "polygons"
CONFIDENCE = "confidence"

# two columns: the image takes what the controls leave; the controls keep a fixed width beside it
_ROW = "display: flex; gap: 16px; align-items: flex-start"
_IMAGE_COLUMN = "flex: 1 1 auto; min-width: 0"
_CONTROL_COLUMN = "flex: 0 0 340px; max-width: 340px"

VIEW_UNCERTAIN = "Most uncertain first"
VIEW_ADJUDICATE = "Adjudication"
SAMPLING = "Sequential sampling"  # follows the tab's order: the "most uncertain first" tab

TITLE_MAX_CHARS = 50  # Label Studio's PROJECT_TITLE_MAX_LEN
MAX_PARTS = 9999  # part titles stay findable by one search for the title's first 38 characters
_PART_SUFFIX = re.compile(r" \(part ([1-9][0-9]*)\)$")
# The anomaly model's suspect regions carry no label (their type is not chosen yet). Label Studio draws a shape
# without a label in its default style (thin #666 outline, fill 0.2), barely visible on dark metal; with
# allowEmpty, a value-less Label is the "empty label" whose colour such shapes take instead (checked in Label
# Studio 1.23's frontend: a region's style falls back to the tag's empty label before the default). Its button
# shows ``html``; a shape drawn with it also stays without a label, so pull gives it the image's class.
_SUSPECT_LABEL = {
    "background": "#ff2d55",
    "html": "suspect / 의심",
    "hint": "A suspect region without a type: it takes the class chosen for the image",
}


def label_config(ontology: Ontology, *, boxes: bool = False) -> str:
    """Label Studio XML for the ontology: the image on the left and, beside it, class and severity choices with
    hints, the model's confidence and a description box (so everything fits a 1400x1100 screen without scrolling);
    rectangle and polygon labels above the image when ``boxes``. Built with ElementTree, so definitions with quotes
    or ``<`` stay valid."""
    view = ET.Element("View", style=_ROW)
    left = ET.SubElement(view, "View", style=_IMAGE_COLUMN)
    if boxes:
        rects = ET.SubElement(left, "RectangleLabels", name=BOXES, toName=IMAGE, strokeWidth="2", allowEmpty="true")
        for defect in ontology.classes:
            ET.SubElement(rects, "Label", value=defect.name, hint=_names(defect))
        ET.SubElement(rects, "Label", **_SUSPECT_LABEL)
        polygons = ET.SubElement(left, "PolygonLabels", name=POLYGONS, toName=IMAGE, strokeWidth="2", allowEmpty="true")
        for defect in ontology.classes:
            ET.SubElement(polygons, "Label", value=defect.name, hint=_names(defect))
        ET.SubElement(polygons, "Label", **_SUSPECT_LABEL)
    ET.SubElement(left, "Image", name=IMAGE, value=f"${IMAGE}", zoom="true", zoomControl="true", maxWidth="100%")
    right = ET.SubElement(view, "View", style=_CONTROL_COLUMN)
    ET.SubElement(right, "Header", value="Defect class / 결함 유형", size="5")
    classes = ET.SubElement(right, "Choices", name=LABEL, toName=IMAGE, choice="single-radio", required="true")
    for defect in ontology.classes:
        ET.SubElement(classes, "Choice", value=defect.name, hint=_class_hint(defect))
    ET.SubElement(right, "Header", value="Severity / 심각도", size="5")
    severity = ET.SubElement(right, "Choices", name=SEVERITY, toName=IMAGE, choice="single-radio", showInline="true")
    for level in ontology.severities:
        hint = ": ".join(part for part in (level.name_ko, level.definition) if part) or level.name
        ET.SubElement(severity, "Choice", value=level.name, hint=hint)
    ET.SubElement(right, "Header", value="Confidence % (pre-filled: the model's) / 신뢰도", size="5")
    ET.SubElement(right, "Number", name=CONFIDENCE, toName=IMAGE, min="0", max="100", step="1")
    ET.SubElement(right, "Header", value="Description (pre-filled by the model; edit it) / 설명", size="5")
    ET.SubElement(right, "TextArea", name=DESCRIPTION, toName=IMAGE, rows="4", editable="true", maxSubmissions="1")
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")


def _names(defect: DefectClass) -> str:
    """``English / Korean`` (English alone when the class has no Korean name)."""
    return " / ".join(name for name in (defect.label_en, defect.name_ko) if name)


def _class_hint(defect: DefectClass) -> str:
    parts = [_names(defect) + (f": {defect.definition}" if defect.definition else "")]
    if defect.include:
        parts.append("Include: " + "; ".join(defect.include))
    if defect.exclude:
        parts.append("Exclude: " + "; ".join(defect.exclude))
    return " | ".join(parts)


def instructions(ontology: Ontology, *, boxes: bool = False) -> str:
    """HTML shown by Label Studio's Instructions panel: each class's definition, inclusion and exclusion
    criteria, the severity levels and, with ``boxes``, what the model's unlabeled suspect regions mean."""
    out = ["<h3>Defect classes / 결함 유형</h3>"]
    for defect in ontology.classes:
        out.append(
            f"<p><b>{html.escape(defect.name)}</b> — {html.escape(_names(defect))}"
            + (f"<br>{html.escape(defect.definition)}" if defect.definition else "")
            + "</p>"
        )
        for title, items in (("Include", defect.include), ("Exclude", defect.exclude)):
            if items:
                listed = "".join(f"<li>{html.escape(item)}</li>" for item in items)
                out.append(f"<p>{title}:</p><ul>{listed}</ul>")
    out.append("<h3>Severity / 심각도</h3><ul>")
    out.extend(
        f"<li><b>{html.escape(s.name)}</b>"
        + (f" ({html.escape(s.name_ko)})" if s.name_ko else "")
        + (f": {html.escape(s.definition)}" if s.definition else "")
        + "</li>"
        for s in ontology.severities
    )
    out.append("</ul>")
    if boxes:
        out.append(
            '<h3>Suspect regions / 의심 영역</h3><p>Pink-red outlines without a type ("suspect", "No label" in '
            "the region list) are where the anomaly model suspects a defect (its score beside each in the region "
            "list). Delete false alarms, fix the outline, or give one a box label; a region left as suspect takes "
            "the class chosen for the image. Outline a missed defect with the suspect label the same way.</p>"
        )
    return "\n".join(out)


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    title: str
    created: bool
    updated: tuple[str, ...]
    part: int = 1


def project_settings(ontology: Ontology, settings: LabelStudioParams) -> dict:
    """The project fields push manages; anything else people change in the UI is left alone."""
    overlap = settings.maximum_annotations > 1 and settings.agreement_sample > 0
    return {
        "label_config": label_config(ontology, boxes=settings.boxes),
        "expert_instruction": instructions(ontology, boxes=settings.boxes),
        "show_instruction": True,
        "maximum_annotations": settings.maximum_annotations if overlap else 1,
        "overlap_cohort_percentage": round(settings.agreement_sample * 100) if overlap else 100,
        "show_overlap_first": settings.overlap_first,
        "show_collab_predictions": True,  # pre-fill the editor with the prediction
        "sampling": SAMPLING,
    }


def part_title(title: str, part: int) -> str:
    """The title of part ``part`` of the set ``title``: ``title`` itself for part 1, else ``"<title> (part n)"``
    with ``title`` cut (and trailing spaces dropped) so the whole is at most 50 characters."""
    if part == 1:
        return title
    suffix = f" (part {part})"
    return title[: TITLE_MAX_CHARS - len(suffix)].rstrip() + suffix


def part_number(title: str, candidate: str) -> int | None:
    """Which part of the set ``title`` a project titled ``candidate`` is, or None if it is not one."""
    if candidate == title:
        return 1
    found = _PART_SUFFIX.search(candidate)
    if found is None:
        return None
    part = int(found.group(1))
    return part if part >= 2 and part_title(title, part) == candidate else None


def find_project_set(client: LabelStudio, conn: Connection, title: str) -> dict[int, int]:
    """Part number -> project id for every project of the set ``title``, in part order (the oldest project when
    several have one part's title); {} when there is none."""
    shared = part_title(title, MAX_PARTS)[: -len(f" (part {MAX_PARTS})")]  # in every part's title
    found: dict[int, int] = {}
    with translate(f"looking up the projects of {title!r}", conn):
        for project in client.projects.list(title=shared, include="id,title"):  # title: case-insensitive substring
            part = part_number(title, project.title or "")
            if part is not None:
                found[part] = min(found.get(part, project.id), project.id)
    return dict(sorted(found.items()))


def find_projects(client: LabelStudio, conn: Connection, title: str) -> list[int]:
    """Project ids of every part of the set ``title``, part 1 first; [] when there is none."""
    return list(find_project_set(client, conn, title).values())


def find_project(client: LabelStudio, conn: Connection, title: str) -> int | None:
    """The id of the project with exactly this title (the oldest one if several), or None."""
    with translate(f"looking up project {title!r}", conn):
        found = [p.id for p in client.projects.list(title=title, include="id,title") if p.title == title]
    return min(found) if found else None


def ensure_project(
    client: LabelStudio, conn: Connection, ontology: Ontology, settings: LabelStudioParams
) -> ProjectInfo:
    """Find part 1 of the set (the project titled ``project_title``) or create it; update the managed fields
    that differ (e.g. a changed ontology)."""
    project_id = find_project(client, conn, settings.project_title)
    return _ensure(client, conn, project_settings(ontology, settings), settings.project_title, 1, project_id)


def ensure_projects(
    client: LabelStudio, conn: Connection, ontology: Ontology, settings: LabelStudioParams
) -> list[ProjectInfo]:
    """Every part of the set ``project_title`` with its managed fields brought up to date, part 1 first; part 1
    is created when the set has no project yet."""
    wanted = project_settings(ontology, settings)
    parts = find_project_set(client, conn, settings.project_title) or {1: None}
    return [
        _ensure(client, conn, wanted, part_title(settings.project_title, part), part, project_id)
        for part, project_id in parts.items()
    ]


def add_part(
    client: LabelStudio, conn: Connection, ontology: Ontology, settings: LabelStudioParams, part: int
) -> ProjectInfo:
    """Create part ``part`` of the set, with the same settings as every other part.

    Raises:
        StudioError: ``part`` is beyond :data:`MAX_PARTS`.
    """
    if part > MAX_PARTS:
        raise StudioError(
            f"project set {settings.project_title!r} would need more than {MAX_PARTS} projects; raise "
            "labelstudio.max_tasks_per_project"
        )
    title = part_title(settings.project_title, part)
    return _ensure(client, conn, project_settings(ontology, settings), title, part, None)


def _ensure(
    client: LabelStudio, conn: Connection, wanted: dict, title: str, part: int, project_id: int | None
) -> ProjectInfo:
    if project_id is None:
        with translate(f"creating project {title!r}", conn):
            project = client.projects.create(title=title, **wanted)
        _ensure_views(client, conn, project.id)
        return ProjectInfo(project.id, title, created=True, updated=(), part=part)
    with translate(f"reading project {title!r}", conn):
        current = client.projects.get(id=project_id)
    changed = {k: v for k, v in wanted.items() if _differs(getattr(current, k, None), v)}
    if changed:
        with translate(f"updating project {title!r} ({', '.join(sorted(changed))})", conn):
            client.projects.update(id=project_id, **changed)
    _ensure_views(client, conn, project_id)
    return ProjectInfo(project_id, title, created=False, updated=tuple(sorted(changed)), part=part)


def _differs(current: object, wanted: object) -> bool:
    if isinstance(wanted, str) and isinstance(current, str):
        return current.strip() != wanted.strip()
    return current != wanted


# Native columns hidden in the tabs push creates (the rest, and every task data column, are shown). Label Studio
# computes the Completed / Annotated by / Prediction score columns only for tabs that carry ``hiddenColumns``,
# which its UI writes when a tab is saved; a tab created without it shows those columns empty until then.
_HIDDEN = (
    "tasks:inner_id",
    "tasks:annotations_results",
    "tasks:annotations_ids",
    "tasks:predictions_model_versions",
    "tasks:predictions_results",
    "tasks:file_upload",
    "tasks:storage_filename",
    "tasks:created_at",
    "tasks:updated_at",
    "tasks:updated_by",
    "tasks:avg_lead_time",
    "tasks:draft_exists",
    "tasks:data.image_id",
)
# while labeling, the task list beside the editor keeps only what picks the next task
_SHOWN_WHILE_LABELING = ("tasks:id", "tasks:total_annotations", "tasks:data.margin", "tasks:data.predicted")
_LABELING_HIDDEN = (
    *_HIDDEN,
    "tasks:completed_at",
    "tasks:cancelled_annotations",
    "tasks:total_predictions",
    "tasks:annotators",
    "tasks:predictions_score",
    "tasks:data.image",
    "tasks:data.file",
    "tasks:data.entropy",
    "tasks:data.adjudicate",
    "tasks:data.queue",
)
# task data written by push with a numeric or boolean value; Label Studio types every data column as text
# unless the tab says otherwise, so "margin < 0.2" could not be filtered and ordering compared strings
COLUMN_TYPES = {"tasks:data.margin": "Number", "tasks:data.entropy": "Number", "tasks:data.adjudicate": "Boolean"}
COLUMN_TYPES["tasks:data.queue"] = "Number"  # the review queue place (curation.studio.order)
QUEUE_ORDERING = ["tasks:data.queue"]
_OLD_ORDERING = ["tasks:data.margin"]  # what push wrote before the queue mixed in the most anomalous images


def view_data(title: str, *, filters: list[dict] | None = None) -> dict:
    """A Data Manager tab as Label Studio's UI saves one: ordered by the review queue (most anomalous beside most
    uncertain, :mod:`curation.studio.order`), with the column settings that make the native columns fill on first
    open and the numeric columns filterable."""
    return {
        "title": title,
        "type": "list",
        "target": "tasks",
        "ordering": list(QUEUE_ORDERING),
        "filters": {"conjunction": "and", "items": list(filters or [])},
        "hiddenColumns": {"explore": list(_HIDDEN), "labeling": list(_LABELING_HIDDEN)},
        "columnsWidth": {},
        "columnsDisplayType": dict(COLUMN_TYPES),
        "gridWidth": 4,
        "gridFitImagesToWidth": False,
    }


def wanted_views() -> dict[str, dict]:
    """The tabs push manages: tasks most uncertain first (the labeling queue follows the tab's order), and the
    tasks flagged for adjudication."""
    flagged = {"filter": "filter:tasks:data.adjudicate", "operator": "equal", "type": "Boolean", "value": True}
    return {VIEW_UNCERTAIN: view_data(VIEW_UNCERTAIN), VIEW_ADJUDICATE: view_data(VIEW_ADJUDICATE, filters=[flagged])}


def _ensure_views(client: LabelStudio, conn: Connection, project_id: int) -> None:
    """Create the managed tabs that are missing; a tab of ours made before tabs carried column settings (no
    ``hiddenColumns``: neither push nor the UI has saved them) gets them, and one still ordered by margin alone (as
    older pushes wrote it) is ordered by the review queue. Anything else people re-saved is left alone."""
    with translate("setting up the Data Manager tabs", conn):
        existing = {(v.data or {}).get("title"): v for v in client.views.list(project=project_id)}
        for title, data in wanted_views().items():
            view = existing.get(title)
            if view is None:
                client.views.create(project=project_id, data=data)
            elif "hiddenColumns" not in (view.data or {}):
                client.views.update(id=view.id, project=project_id, data=data)
            elif view.data.get("ordering") == _OLD_ORDERING:
                types = {**(view.data.get("columnsDisplayType") or {}), **COLUMN_TYPES}
                queued = {**view.data, "ordering": list(QUEUE_ORDERING), "columnsDisplayType": types}
                client.views.update(id=view.id, project=project_id, data=queued)
