"""Prior labels: import existing class folders, Pascal VOC, COCO, YOLO or box/label CSV labels beside the images.

``read_prior_labels`` is the one entry point; each format has one reader in ``_READERS``. Every row refers to an
ingested image; a label whose image cannot be found (quarantined, missing, ambiguous) and every malformed entry
becomes a :class:`LabelIssue` instead, so one bad file never stops an import. Only problems that make a whole
import impossible (no COCO file, an invalid class list, a ``label_map`` naming an unknown class) raise
:class:`~curation.errors.LabelImportError`.

Paths written by other tools are matched after normalisation: backslashes become slashes and ``./`` and doubled
slashes are dropped. Text files are read as UTF-8 (a byte-order mark is ignored).
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import yaml

from curation.discover import discover
from curation.errors import LabelImportError
from curation.label_table import read_label_table
from curation.shapes import polygons_area
from schemas.params import LabelFormat
from schemas.records import PriorLabel, columns

COLUMNS = columns(PriorLabel)
BOX_COLUMNS = ["x", "y", "w", "h"]
FLOAT_COLUMNS = [*BOX_COLUMNS, "area"]
YOLO_CLASS_FILES = ("classes.txt", "data.yaml", "dataset.yaml")
"""Where YOLO class names are looked for, in this order of preference within a folder."""

_LABEL_SUFFIXES = frozenset({".txt", ".xml", ".json", ".yaml", ".yml"})
"""Files with these suffixes beside an image are never taken for the image itself."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageRef:
    """An ingested image, as the label readers need it."""

    image_id: str
    width: int
    height: int


@dataclass(frozen=True, order=True)
class LabelIssue:
    """A label that could not be imported.

    Args:
        source_file: File the problem is in, relative to raw_dir (or to the labels folder) where possible.
        detail: What is wrong and how to fix it, one line.
    """

    source_file: str
    detail: str


@dataclass(frozen=True)
class LabelImport:
    """Result of :func:`read_prior_labels`.

    Args:
        labels: One row per image-level label or box; columns exactly ``columns(PriorLabel)``, in that order,
            sorted by image_id, source_file, source_label, x, y. ``label`` is None when the source label maps
            to no ontology class; the box columns are float64 pixels, NaN for image-level labels.
        issues: Sorted problems; the labels they concern are not in ``labels``.
    """

    labels: pd.DataFrame
    issues: list[LabelIssue]


def read_prior_labels(
    fmt: LabelFormat,
    raw_dir: Path,
    images: Mapping[str, ImageRef],
    *,
    class_names: Sequence[str],
    labels_path: Path | None = None,
    label_map: Mapping[str, str] | None = None,
    headerless_box: str = "xyxy",
) -> LabelImport:
    """Import the labels that came with the raw images.

    Formats:
        ``folders``: the first folder of each image's path under raw_dir is its class (ImageFolder layout).
        ``voc``: every ``*.xml`` under labels_path; the image is found by ``<path>``, ``<folder>`` and
        ``<filename>``, else by the XML's name; ``<bndbox>`` becomes a box, an object without one an
        image-level label.
        ``coco``: one JSON file; ``images[].file_name`` is matched to a path under raw_dir, else to a unique
        file name; ``bbox`` becomes a box, an annotation without one an image-level label.
        ``yolo``: every ``*.txt`` under labels_path (and ``labels/`` beside an ``images/`` raw_dir) is the label
        file of the image with the same name (same folder, the mirrored folder, else a unique name); class
        names come from ``classes.txt``, ``data.yaml`` or ``dataset.yaml`` found under the labels folder or
        raw_dir. A line ``class x1 y1 x2 y2 ...`` (YOLO segmentation, 3+ points) becomes a polygon with its
        bounding box and area.
        ``csv``: the labels_path file, ``path, label`` and optionally a pixel box (``x1 y1 x2 y2`` or
        ``x y w h``); delimiter and header are sniffed (:mod:`curation.label_table`); the image is found by its
        path relative to raw_dir, then by a shorter tail of the path, then by a unique file name.

    Args:
        fmt: Label format.
        raw_dir: Folder of the raw images.
        images: rel_path (relative to raw_dir) of every ingested file copy -> its image. Byte-identical copies
            share an image and each keeps its own labels here (ingest merges them: :mod:`curation.copies`).
        class_names: Ontology class names.
        labels_path: VOC/YOLO folder, COCO JSON file or label CSV (required for ``csv``). Default: raw_dir (COCO:
            the single ``*.json`` under raw_dir, or under labels_path when that is a folder). Ignored by
            ``folders``.
        label_map: Source label -> ontology class. Unmapped source labels that are class names keep their
            name; others get ``label`` None.
        headerless_box: Box columns of a label CSV without a header (``xyxy`` or ``xywh``).

    Raises:
        LabelImportError: an unknown format; a ``label_map`` value that is not a class; a labels folder or COCO
            file that is missing, ambiguous or not valid as a whole; a YOLO class list that cannot be read.
    """
    if fmt not in _READERS:
        raise LabelImportError(f"unknown label format {fmt!r}; use one of {', '.join(_READERS)} in ingest.labels")
    raw_dir = Path(raw_dir)
    labels_path = Path(labels_path) if labels_path is not None else None
    bases = [raw_dir]
    if labels_path is not None:
        bases.append(labels_path.parent if labels_path.is_file() else labels_path)
    found = _Found(
        source_format=fmt,
        raw_dir=raw_dir,
        bases=[os.path.abspath(base) for base in bases],
        images=_Images.build(raw_dir, images),
        resolve=label_resolver(class_names, label_map),
        headerless_box=headerless_box,
    )
    _READERS[fmt](found, labels_path)
    return LabelImport(labels=labels_frame(found.rows), issues=sorted(found.issues))


def check_label_source(
    fmt: LabelFormat, raw_dir: Path, *, labels_path: Path | None = None, headerless_box: str = "xyxy"
) -> None:
    """Fail now, before any image is decoded, if the labels cannot be imported as a whole.

    Checks the format, that the labels folder exists (VOC, YOLO), that the COCO file is found and is COCO JSON, and
    that a label CSV can be read and has the columns it needs (label files are read again when the labels are
    imported: they are small next to the images).

    Raises:
        LabelImportError: as :func:`read_prior_labels` would, after the images were decoded.
    """
    if fmt not in _READERS:
        raise LabelImportError(f"unknown label format {fmt!r}; use one of {', '.join(_READERS)} in ingest.labels")
    labels_path = Path(labels_path) if labels_path is not None else None
    if fmt in ("voc", "yolo"):
        _label_folder(Path(raw_dir), labels_path, f"{fmt} label")
    elif fmt == "coco":
        _load_coco(_coco_file(Path(raw_dir), labels_path))
    elif fmt == "csv":
        if labels_path is None or not labels_path.is_file():
            raise LabelImportError(_CSV_NEEDS_FILE.format(path=labels_path or "(none)"))
        read_label_table(labels_path, headerless_box=headerless_box)


def labels_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """``PriorLabel`` row dicts as the sorted, typed frame :class:`LabelImport` documents."""
    ordered = sorted(rows, key=_row_key)
    return pd.DataFrame(ordered, columns=COLUMNS, dtype=object).astype(dict.fromkeys(FLOAT_COLUMNS, "float64"))


def label_row(
    image: ImageRef,
    rel_path: str,
    source_label: str,
    label: str | None,
    source_format: str,
    source_file: str,
    box: Box | None = None,
    polygons: list[list[float]] | None = None,
    area: float | None = None,
) -> dict[str, Any]:
    """One ``PriorLabel`` row as a dict; ``polygons`` are written as compact JSON."""
    x, y, w, h = box if box is not None else (None, None, None, None)
    return {
        "image_id": image.image_id,
        "rel_path": rel_path,
        "source_label": source_label,
        "label": label,
        "source_format": source_format,
        "source_file": source_file,
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "polygons": None if polygons is None else json.dumps(polygons, separators=(",", ":")),
        "area": area,
    }


def label_resolver(class_names: Sequence[str], label_map: Mapping[str, str] | None) -> Callable[[str], str | None]:
    """Source label -> ontology class (``label_map`` first, then an exact class name), None when neither.

    Raises:
        LabelImportError: a ``label_map`` value is not an ontology class.
    """
    known = set(class_names)
    mapping = dict(label_map or {})
    wrong = sorted((key, value) for key, value in mapping.items() if value not in known)
    if wrong:
        listed = "; ".join(f"{key!r} -> {value!r}" for key, value in wrong)
        raise LabelImportError(
            f"ingest.label_map maps to classes that are not in the ontology ({listed}); "
            f"use one of: {', '.join(sorted(known))}"
        )
    return lambda source: mapping.get(source, source if source in known else None)


def _row_key(row: dict[str, Any]) -> tuple:
    x, y = row["x"], row["y"]
    shape = (row["w"] or 0.0, row["h"] or 0.0, row["polygons"] or "")
    return row["image_id"], row["source_file"], row["source_label"], x is not None, x or 0.0, y or 0.0, *shape


def _norm(path: str) -> str:
    """A path as some tool wrote it, in POSIX form: backslashes to slashes, no ``./`` or doubled slashes."""
    cleaned = posixpath.normpath(path.strip().replace("\\", "/"))
    return "" if cleaned == "." else cleaned


def _suffixes(path: str) -> list[list[str]]:
    """``a/b/c.jpg`` -> ``[["a/b/c.jpg"], ["b/c.jpg"], ["c.jpg"]]``: candidate groups, most specific first."""
    parts = [part for part in _norm(path).split("/") if part]
    return [["/".join(parts[start:])] for start in range(len(parts))]


@dataclass(frozen=True)
class _Images:
    """The ingested file copies, indexed by normalised path, file name and stem, and the files beside them."""

    raw_dir: Path
    refs: dict[str, ImageRef]
    by_name: dict[str, list[str]]
    by_stem: dict[str, list[str]]

    @classmethod
    def build(cls, raw_dir: Path, images: Mapping[str, ImageRef]) -> _Images:
        refs = {_norm(rel): ref for rel, ref in images.items()}
        by_name: dict[str, list[str]] = defaultdict(list)
        by_stem: dict[str, list[str]] = defaultdict(list)
        for rel in sorted(refs):
            by_name[PurePosixPath(rel).name].append(rel)
            by_stem[PurePosixPath(rel).stem].append(rel)
        return cls(raw_dir, refs, dict(by_name), dict(by_stem))

    @cached_property
    def files(self) -> frozenset[str]:
        """Every file under raw_dir, ingested or not (a quarantined image must not pass its labels to a namesake)."""
        return frozenset(discover(self.raw_dir, []).skipped) if self.raw_dir.is_dir() else frozenset()

    @cached_property
    def by_dir_stem(self) -> dict[tuple[str, str], list[str]]:
        """Ingested copies and other files under raw_dir that are not label files, by (folder, stem)."""
        found: dict[tuple[str, str], list[str]] = defaultdict(list)
        others = (rel for rel in self.files if PurePosixPath(rel).suffix.lower() not in _LABEL_SUFFIXES)
        for rel in sorted({*self.refs, *others}):
            path = PurePosixPath(rel)
            found[_norm(str(path.parent)), path.stem].append(rel)
        return dict(found)

    def match(self, groups: Iterable[list[str]]) -> tuple[str | None, list[str]]:
        """The first candidate group holding ingested copies, or files that were not ingested, decides.

        Returns:
            ``(rel_path, [])`` when that group's ingested copies are all one image (the first path of them),
            ``(None, paths)`` when they are different images, ``(None, [])`` when the group only holds files
            that were not ingested (quarantined), or no group matches.
        """
        for group in groups:
            rels = sorted({rel for rel in group if rel in self.refs})
            if rels:
                if len({self.refs[rel].image_id for rel in rels}) == 1:
                    return rels[0], []
                return None, rels
            if any(rel in self.files for rel in group):
                break
        return None, []


@dataclass
class _Found:
    """What a reader found: rows (``PriorLabel`` dicts) and issues, with what it needs to make them."""

    source_format: str
    raw_dir: Path
    bases: list[str]
    images: _Images
    resolve: Callable[[str], str | None]
    headerless_box: str = "xyxy"
    rows: list[dict[str, Any]] = field(default_factory=list)
    issues: list[LabelIssue] = field(default_factory=list)

    def add(
        self,
        rel_path: str,
        source_label: str,
        source_file: str,
        box: Box | None = None,
        polygons: list[list[float]] | None = None,
        area: float | None = None,
    ) -> None:
        image = self.images.refs[rel_path]
        label = self.resolve(source_label)
        self.rows.append(
            label_row(image, rel_path, source_label, label, self.source_format, source_file, box, polygons, area)
        )

    def issue(self, source_file: str, detail: str) -> None:
        self.issues.append(LabelIssue(source_file, detail))

    def display(self, path: Path) -> str:
        """``path`` relative to raw_dir, else to the labels folder, else relative to raw_dir with ``..``."""
        absolute = os.path.abspath(path)
        for base in self.bases:
            if absolute == base or absolute.startswith(base.rstrip(os.sep) + os.sep):
                return Path(os.path.relpath(absolute, base)).as_posix()
        return Path(os.path.relpath(absolute, self.bases[0])).as_posix()

    def folders_of(self, path: Path, root: Path) -> list[str]:
        """Folders (relative to raw_dir) where the image of label file ``path`` (found under ``root``) may be.

        The label's own folder relative to raw_dir, then relative to ``root`` (a labels tree mirroring the
        images), each also with its last ``labels`` folder read as ``images`` (the Ultralytics layout).
        """
        folders = []
        for base in (self.raw_dir, root):
            rel = os.path.relpath(os.path.abspath(path.parent), os.path.abspath(base))
            if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
                folders.append(_norm(Path(rel).as_posix()))
        mirrored = []
        for folder in folders:
            parts = folder.split("/")
            if "labels" in parts:
                at = len(parts) - 1 - parts[::-1].index("labels")
                mirrored.append("/".join([*parts[:at], "images", *parts[at + 1 :]]))
        return list(dict.fromkeys(folders + mirrored))

    def unmatched(self, source_file: str, what: str, ambiguous: list[str]) -> None:
        if ambiguous:
            shown = ", ".join(ambiguous[:5]) + (", ..." if len(ambiguous) > 5 else "")
            self.issue(
                source_file,
                f"{what} matches several different images ({shown}); give the image's path relative to raw_dir",
            )
        else:
            self.issue(
                source_file,
                f"{what} matches no ingested image (quarantined, missing or renamed?); "
                "check quarantine.csv or fix the name",
            )


def _label_folder(raw_dir: Path, labels_path: Path | None, what: str) -> Path:
    root = labels_path if labels_path is not None else raw_dir
    if not root.is_dir():
        raise LabelImportError(
            f"labels folder {root} does not exist or is not a folder; set ingest.labels_path to the folder "
            f"holding the {what} files"
        )
    return root


def _checked(box: Box) -> Box:
    """Raise ValueError unless ``box`` (x, y, w, h) is finite with a positive size."""
    if not all(math.isfinite(value) for value in box):
        raise ValueError("box values must be finite numbers")
    if box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"box has no area (w={box[2]:g}, h={box[3]:g}); fix or delete it")
    return box


def _read_folders(found: _Found, labels_path: Path | None) -> None:
    for rel in sorted(found.images.refs):
        folder, inside, _ = rel.partition("/")
        if inside:
            found.add(rel, folder, rel)
        else:
            found.issue(rel, "image is directly in raw_dir, not inside a class folder; move it into its class folder")


def _read_voc(found: _Found, labels_path: Path | None) -> None:
    root = _label_folder(found.raw_dir, labels_path, "Pascal VOC *.xml")
    for rel in discover(root, [".xml"]).candidates:
        path = root / rel
        source = found.display(path)
        try:
            annotation = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as err:
            found.issue(source, f"cannot be read as XML ({err}); fix or delete the file")
            continue
        if annotation.tag != "annotation":
            found.issue(source, f"root element is <{annotation.tag}>, not <annotation>: not a Pascal VOC file")
            continue
        image, ambiguous = found.images.match(_voc_candidates(found, annotation, path, root))
        if image is None:
            filename = (annotation.findtext("filename") or "").strip()
            what = f"<filename> {filename!r}" if filename else f"the XML name {path.stem!r}"
            found.unmatched(source, what, ambiguous)
            continue
        for number, obj in enumerate(annotation.findall("object"), start=1):
            name = (obj.findtext("name") or "").strip()
            if not name:
                found.issue(source, f"<object> #{number} has no <name>; add the class name")
                continue
            bndbox = obj.find("bndbox")
            try:
                box = None if bndbox is None else _voc_box(bndbox)
            except ValueError as err:
                found.issue(source, f"<object> #{number} ({name}): {err}")
                continue
            found.add(image, name, source, box)


def _voc_candidates(found: _Found, annotation: ET.Element, path: Path, root: Path) -> Iterable[list[str]]:
    """Candidate image paths for a VOC XML, most specific first."""
    filename = _norm(annotation.findtext("filename") or "")
    folders = found.folders_of(path, root)
    if filename:
        yield from ([posixpath.join(folder, filename)] for folder in folders)
    yield from _suffixes(annotation.findtext("path") or "")
    if filename:
        yield from _suffixes(posixpath.join(_norm(annotation.findtext("folder") or ""), filename))
        yield found.images.by_name.get(posixpath.basename(filename), [])
    yield from (found.images.by_dir_stem.get((folder, path.stem), []) for folder in folders)
    yield found.images.by_stem.get(path.stem, [])


def _voc_box(bndbox: ET.Element) -> Box:
    try:
        xmin, ymin, xmax, ymax = (float(bndbox.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        raise ValueError("<bndbox> needs numeric <xmin>, <ymin>, <xmax>, <ymax>") from None
    return _checked((xmin, ymin, xmax - xmin, ymax - ymin))


def _read_coco(found: _Found, labels_path: Path | None) -> None:
    path = _coco_file(found.raw_dir, labels_path)
    source = found.display(path)
    data = _load_coco(path)
    categories: dict[int | str, str] = {}
    for index, category in enumerate(data["categories"]):
        if not _has(category, id=(int, str), name=str):
            found.issue(source, f"categories[{index}] needs an 'id' and a 'name'; its annotations are skipped")
            continue
        categories[category["id"]] = category["name"].strip()
    file_names: dict[int | str, str] = {}
    for index, image in enumerate(data["images"]):
        if not _has(image, id=(int, str), file_name=str):
            found.issue(source, f"images[{index}] needs an 'id' and a 'file_name'; its annotations are skipped")
            continue
        file_names[image["id"]] = image["file_name"]
    matches: dict[int | str, tuple[str | None, list[str]]] = {}
    skipped: Counter[int | str] = Counter()
    for index, annotation in enumerate(data.get("annotations", [])):
        where = f"annotations[{index}]"
        if not isinstance(annotation, dict):
            found.issue(source, f"{where} is not an object; fix or delete it")
            continue
        image_id, category_id = annotation.get("image_id"), annotation.get("category_id")
        if not isinstance(image_id, int | str) or image_id not in file_names:
            found.issue(source, f"{where}: image_id {image_id!r} is not in images[]; fix or delete the annotation")
            continue
        if not isinstance(category_id, int | str) or category_id not in categories:
            found.issue(source, f"{where}: category_id {category_id!r} is not in categories[]; add the category")
            continue
        if image_id not in matches:
            matches[image_id] = found.images.match(_coco_candidates(found, file_names[image_id]))
        image = matches[image_id][0]
        if image is None:
            skipped[image_id] += 1
            continue
        try:
            box = _coco_box(annotation.get("bbox"))
        except ValueError as err:
            found.issue(source, f"{where} ({categories[category_id]}): {err}")
            continue
        found.add(image, categories[category_id], source, box)
    for image_id, count in skipped.items():
        what = f"images[] file_name {file_names[image_id]!r} ({count} annotation(s) skipped)"
        found.unmatched(source, what, matches[image_id][1])


def _coco_file(raw_dir: Path, labels_path: Path | None) -> Path:
    if labels_path is not None and labels_path.is_file():
        return labels_path
    folder = labels_path if labels_path is not None else raw_dir
    if not folder.is_dir():
        raise LabelImportError(f"COCO labels {folder} do not exist; set ingest.labels_path to the COCO JSON file")
    candidates = discover(folder, [".json"]).candidates
    if len(candidates) == 1:
        return folder / candidates[0]
    what = f"{len(candidates)} JSON files ({', '.join(candidates[:5])})" if candidates else "no *.json file"
    raise LabelImportError(f"found {what} under {folder}; set ingest.labels_path to the COCO JSON file")


def _load_coco(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as err:
        raise LabelImportError(f"cannot read COCO file {path}: {err.strerror}; check ingest.labels_path") from err
    except ValueError as err:
        raise LabelImportError(f"COCO file {path} is not UTF-8 JSON ({err}); export the labels again") from err
    top = data if isinstance(data, dict) else {}
    missing = [key for key in ("images", "categories") if not isinstance(top.get(key), list)]
    if not isinstance(top.get("annotations", []), list):
        missing.append("annotations")
    if missing:
        raise LabelImportError(
            f"COCO file {path} has no {' / '.join(repr(key) for key in missing)} list at the top level; "
            "export COCO detection JSON, or fix ingest.labels / ingest.labels_path"
        )
    return top


def _has(entry: Any, **types: type | tuple[type, ...]) -> bool:
    """Whether ``entry`` is a dict whose keys hold values of these types (bools are not ids)."""
    return isinstance(entry, dict) and all(
        isinstance(entry.get(key), kind) and not isinstance(entry.get(key), bool) for key, kind in types.items()
    )


def _coco_candidates(found: _Found, file_name: str) -> Iterable[list[str]]:
    yield from _suffixes(file_name)
    yield found.images.by_name.get(posixpath.basename(_norm(file_name)), [])


def _coco_box(bbox: Any) -> Box | None:
    if bbox is None or bbox == []:
        return None
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        raise ValueError(f"bbox must be [x, y, width, height] numbers, got {bbox!r}")
    x, y, w, h = (float(value) for value in bbox)
    return _checked((x, y, w, h))


def _read_yolo(found: _Found, labels_path: Path | None) -> None:
    roots = [_label_folder(found.raw_dir, labels_path, "YOLO *.txt")]
    sibling = _ultralytics_labels(found.raw_dir) if labels_path is None else None
    if sibling is not None:
        roots.append(sibling)
    names = _yolo_names([*roots, found.raw_dir, *([sibling.parent] if sibling else [])], found)
    for root in roots:
        for rel in discover(root, [".txt"]).candidates:
            if PurePosixPath(rel).name not in YOLO_CLASS_FILES:
                _read_yolo_file(found, root / rel, root, names)
    if names is None and found.rows:
        found.issue(
            found.display(roots[0] / "classes.txt"),
            "no classes.txt, data.yaml or dataset.yaml found, so source labels are class indexes; add classes.txt "
            "(one class name per line, in index order) or map the indexes in ingest.label_map",
        )


def _read_yolo_file(found: _Found, path: Path, root: Path, names: dict[int, str] | None) -> None:
    """One label file: a row per valid line, named by ``names`` (by the class index when None)."""
    source = found.display(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        found.issue(source, f"cannot be read as UTF-8 text ({err}); fix or delete the file")
        return
    if not any(line.strip() for line in lines):
        return  # an image without objects
    image, ambiguous = found.images.match(_yolo_candidates(found, path, root))
    if image is None:
        found.unmatched(source, f"label file {path.name!r}", ambiguous)
        return
    ref = found.images.refs[image]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            index, box, polygon = _yolo_line(line.split(), ref)
        except ValueError as err:
            found.issue(source, f"line {number}: {err}")
            continue
        shape = (
            {} if polygon is None else {"polygons": [polygon], "area": polygons_area([polygon], ref.height, ref.width)}
        )
        if names is None:
            found.add(image, str(index), source, box, **shape)
        elif index in names:
            found.add(image, names[index], source, box, **shape)
        else:
            found.issue(source, f"line {number}: class index {index} is not in the class list ({len(names)} names)")


def _ultralytics_labels(raw_dir: Path) -> Path | None:
    """``.../labels/...`` beside a raw_dir at ``.../images/...``, when that folder exists."""
    parts = Path(os.path.abspath(raw_dir)).parts
    if "images" not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index("images")
    labels = Path(*parts[:at], "labels", *parts[at + 1 :])
    return labels if labels.is_dir() else None


def _yolo_names(bases: list[Path], found: _Found) -> dict[int, str] | None:
    """Class names from the first class file under ``bases`` (shallowest first); None when there is none.

    A different class list in another class file is an issue: the one used is named in it.
    """
    seen: set[str] = set()
    files = []
    for order, base in enumerate(bases):
        if not base.is_dir() or os.path.abspath(base) in seen:
            continue
        seen.add(os.path.abspath(base))
        for rel in discover(base, [".txt", ".yaml"]).candidates:
            path = PurePosixPath(rel)
            if path.name in YOLO_CLASS_FILES:
                files.append((len(path.parts), order, YOLO_CLASS_FILES.index(path.name), rel, base / rel))
    if not files:
        return None
    files.sort()
    chosen = _read_names(files[0][-1])
    for *_, path in files[1:]:
        if _read_names(path) != chosen:
            found.issue(
                found.display(path),
                f"class list differs from {found.display(files[0][-1])}, which was used; keep one class file",
            )
    return chosen


def _read_names(path: Path) -> dict[int, str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix == ".txt":
            return dict(enumerate(line.strip() for line in text.splitlines() if line.strip()))
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LabelImportError(f"cannot read YOLO class names from {path}: {err}") from err
    names = data.get("names") if isinstance(data, dict) else None
    try:
        if isinstance(names, list):
            return {index: str(name).strip() for index, name in enumerate(names)}
        if isinstance(names, dict):
            return {int(key): str(name).strip() for key, name in names.items()}
    except ValueError as err:
        raise LabelImportError(f"{path}: 'names' keys must be class indexes (0, 1, ...): {err}") from err
    raise LabelImportError(f"{path} has no 'names:' list or mapping; add the class names in index order")


def _yolo_candidates(found: _Found, path: Path, root: Path) -> Iterable[list[str]]:
    yield from (found.images.by_dir_stem.get((folder, path.stem), []) for folder in found.folders_of(path, root))
    yield found.images.by_stem.get(path.stem, [])


def _yolo_line(fields: list[str], image: ImageRef) -> tuple[int, Box, list[float] | None]:
    """``class cx cy w h`` or ``class x1 y1 x2 y2 x3 y3 ...`` (normalised) -> (index, pixel box, pixel polygon).

    The polygon (YOLO segmentation) is None for a box line; its box is the polygon's bounding box.
    """
    segment = len(fields) >= 7 and len(fields) % 2 == 1
    if len(fields) != 5 and not segment:
        raise ValueError(
            f"expected 5 values 'class cx cy w h' (a box) or an odd number from 7 'class x1 y1 x2 y2 x3 y3 ...' "
            f"(a polygon), got {len(fields)}: {' '.join(fields)!r}"
        )
    try:
        index = int(fields[0])
        values = [float(value) for value in fields[1:]]
    except ValueError:
        raise ValueError(f"expected an integer class and numbers, got {' '.join(fields)!r}") from None
    if index < 0:
        raise ValueError(f"class index {index} is negative")
    if not all(0.0 <= value <= 1.0 for value in values):
        raise ValueError(f"coordinates must be normalised to 0..1 (pixels?), got {' '.join(fields[1:])!r}")
    width, height = image.width, image.height
    if not segment:
        cx, cy, w, h = values
        return index, _checked(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)), None
    polygon = [round(v * (width if k % 2 == 0 else height), 3) for k, v in enumerate(values)]
    xs, ys = polygon[0::2], polygon[1::2]
    box = _checked((min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)))
    if polygons_area([polygon], height, width) <= 0:
        raise ValueError(
            "polygon covers no pixel (its points are on one line, or it is thinner than a pixel); fix or delete it"
        )
    return index, box, polygon


_CSV_NEEDS_FILE = (
    "label CSV {path} is not a file; set ingest.labels_path (or --labels-path) to the CSV of 'path, label[, box]' rows"
)


def _read_csv(found: _Found, labels_path: Path | None) -> None:
    if labels_path is None or not labels_path.is_file():
        raise LabelImportError(_CSV_NEEDS_FILE.format(path=labels_path or "(none)"))
    source = found.display(labels_path)
    table = read_label_table(labels_path, headerless_box=found.headerless_box)
    for line, problem in table.problems:
        found.issue(f"{source}:{line}", problem)
    unmatched: dict[str, list[int]] = defaultdict(list)
    matches: dict[str, tuple[str | None, list[str]]] = {}
    for row in table.rows:
        if row.key not in matches:
            matches[row.key] = found.images.match(_coco_candidates(found, row.key))
        image = matches[row.key][0]
        if image is None:
            unmatched[row.key].append(row.line)
            continue
        try:
            box = None if row.box is None else _checked(row.box)
        except ValueError as err:
            found.issue(f"{source}:{row.line}", str(err))
            continue
        found.add(image, row.label, source, box)
    for key, lines in unmatched.items():
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        found.unmatched(f"{source}:{lines[0]}", f"path {key!r} (line(s) {shown})", matches[key][1])


_READERS: dict[str, Callable[[_Found, Path | None], None]] = {
    "folders": _read_folders,
    "voc": _read_voc,
    "coco": _read_coco,
    "yolo": _read_yolo,
    "csv": _read_csv,
}
