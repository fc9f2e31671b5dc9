"""The labeling interface generated from the ontology, and the set of projects found by title or created.

Control names are a contract between push (predictions), the UI and pull (annotations):
``label`` (Choices, the defect class), ``severity`` (Choices), ``description`` (TextArea, pre-filled) and
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

VIEW_UNCERTAIN = "Most uncertain first"
VIEW_ADJUDICATE = "Adjudication"
SAMPLING = "Sequential sampling"  # follows the tab's order: the "most uncertain first" tab

TITLE_MAX_CHARS = 50  # Label Studio's PROJECT_TITLE_MAX_LEN
MAX_PARTS = 9999  # part titles stay findable by one search for the title's first 38 characters
_PART_SUFFIX = re.compile(r" \(part ([1-9][0-9]*)\)$")


def label_config(ontology: Ontology, *, boxes: bool = False) -> str:
    """Label Studio XML for the ontology: class and severity choices with hints, a description box, and
    rectangle and polygon labels when ``boxes``. Built with ElementTree, so definitions with quotes or ``<`` stay
    valid."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=IMAGE, value=f"${IMAGE}", zoom="true", zoomControl="true")
    if boxes:
        rects = ET.SubElement(view, "RectangleLabels", name=BOXES, toName=IMAGE, strokeWidth="2")
        for defect in ontology.classes:
            ET.SubElement(rects, "Label", value=defect.name, hint=_names(defect))
        polygons = ET.SubElement(view, "PolygonLabels", name=POLYGONS, toName=IMAGE, strokeWidth="2")
        for defect in ontology.classes:
            ET.SubElement(polygons, "Label", value=defect.name, hint=_names(defect))
    ET.SubElement(view, "Header", value="Defect class / 결함 유형")
    classes = ET.SubElement(
        view, "Choices", name=LABEL, toName=IMAGE, choice="single-radio", required="true", showInline="true"
    )
    for defect in ontology.classes:
        ET.SubElement(classes, "Choice", value=defect.name, hint=_class_hint(defect))
    ET.SubElement(view, "Header", value="Severity / 심각도")
    severity = ET.SubElement(view, "Choices", name=SEVERITY, toName=IMAGE, choice="single-radio", showInline="true")
    for level in ontology.severities:
        hint = ": ".join(part for part in (level.name_ko, level.definition) if part) or level.name
        ET.SubElement(severity, "Choice", value=level.name, hint=hint)
    ET.SubElement(view, "Header", value="Description (pre-filled by the model; edit it) / 설명")
    ET.SubElement(view, "TextArea", name=DESCRIPTION, toName=IMAGE, rows="3", editable="true", maxSubmissions="1")
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


def instructions(ontology: Ontology) -> str:
    """HTML shown by Label Studio's Instructions panel: each class's definition, inclusion and exclusion
    criteria, and the severity levels."""
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
        "expert_instruction": instructions(ontology),
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


def _ensure_views(client: LabelStudio, conn: Connection, project_id: int) -> None:
    """Data Manager tabs: tasks ordered most uncertain first (the labeling queue follows the tab's order), and
    the tasks flagged for adjudication."""
    wanted = {
        VIEW_UNCERTAIN: {"title": VIEW_UNCERTAIN, "ordering": ["tasks:data.margin"]},
        VIEW_ADJUDICATE: {
            "title": VIEW_ADJUDICATE,
            "ordering": ["tasks:data.margin"],
            "filters": {
                "conjunction": "and",
                "items": [
                    {"filter": "filter:tasks:data.adjudicate", "operator": "equal", "type": "Boolean", "value": True}
                ],
            },
        },
    }
    with translate("setting up the Data Manager tabs", conn):
        existing = {(v.data or {}).get("title") for v in client.views.list(project=project_id)}
        for title, data in wanted.items():
            if title not in existing:
                client.views.create(project=project_id, data=data)
