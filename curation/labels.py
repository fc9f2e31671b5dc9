"""Prior labels: import existing class folders, Pascal VOC, COCO or YOLO labels found beside the raw images.

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
from schemas.params import LabelFormat
from schemas.records import PriorLabel, columns

COLUMNS = columns(PriorLabel)
BOX_COLUMNS = ["x", "y", "w", "h"]
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
        raw_dir.

    Args:
        fmt: Label format.
        raw_dir: Folder of the raw images.
        images: rel_path (relative to raw_dir) of every ingested file copy -> its image. Byte-identical copies
            share an image and each keeps its own labels.
        class_names: Ontology class names.
        labels_path: VOC/YOLO folder or COCO JSON file. Default: raw_dir (COCO: the single ``*.json`` under
            raw_dir, or under labels_path when that is a folder). Ignored by ``folders``.
        label_map: Source label -> ontology class. Unmapped source labels that are class names keep their
            name; others get ``label`` None.

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
        resolve=_resolver(class_names, label_map),
    )
    _READERS[fmt](found, labels_path)
    rows = sorted(found.rows, key=_row_key)
    frame = pd.DataFrame(rows, columns=COLUMNS, dtype=object).astype(dict.fromkeys(BOX_COLUMNS, "float64"))
    return LabelImport(labels=frame, issues=sorted(found.issues))


def _resolver(class_names: Sequence[str], label_map: Mapping[str, str] | None) -> Callable[[str], str | None]:
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
    return row["image_id"], row["source_file"], row["source_label"], x is not None, x or 0.0, y or 0.0


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
    rows: list[dict[str, Any]] = field(default_factory=list)
    issues: list[LabelIssue] = field(default_factory=list)

    def add(self, rel_path: str, source_label: str, source_file: str, box: Box | None = None) -> None:
        x, y, w, h = box if box is not None else (None, None, None, None)
        self.rows.append(
            {
                "image_id": self.images.refs[rel_path].image_id,
                "rel_path": rel_path,
                "source_label": source_label,
                "label": self.resolve(source_label),
                "source_format": self.source_format,
                "source_file": source_file,
                "x": x,
                "y": y,
                "w": w,
                "h": h,
            }
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
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            index, box = _yolo_line(line.split(), found.images.refs[image])
        except ValueError as err:
            found.issue(source, f"line {number}: {err}")
            continue
        if names is None:
            found.add(image, str(index), source, box)
        elif index in names:
            found.add(image, names[index], source, box)
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


def _yolo_line(fields: list[str], image: ImageRef) -> tuple[int, Box]:
    """``class cx cy w h`` (normalised) -> (class index, pixel box)."""
    if len(fields) != 5:
        raise ValueError(f"expected 5 values 'class cx cy w h', got {len(fields)}: {' '.join(fields)!r}")
    try:
        index = int(fields[0])
        cx, cy, w, h = (float(value) for value in fields[1:])
    except ValueError:
        raise ValueError(f"expected an integer class and four numbers, got {' '.join(fields)!r}") from None
    if index < 0:
        raise ValueError(f"class index {index} is negative")
    if not all(0.0 <= value <= 1.0 for value in (cx, cy, w, h)):
        raise ValueError(f"coordinates must be normalised to 0..1 (pixels?), got {' '.join(fields[1:])!r}")
    width, height = image.width, image.height
    return index, _checked(((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))


_READERS: dict[str, Callable[[_Found, Path | None], None]] = {
    "folders": _read_folders,
    "voc": _read_voc,
    "coco": _read_coco,
    "yolo": _read_yolo,
}
