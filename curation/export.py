"""Export: per split a COCO JSON and a CSV, with the images placed byte for byte (copies or links).

Layout of ``OUT_DIR`` (each split folder is FiftyOne's ``COCODetectionDataset`` layout, so
``fo.Dataset.from_dir(OUT_DIR/train, dataset_type=fo.types.COCODetectionDataset)`` imports it):

- ``<split>/data/<image_id><ext>``: originals as their exact bytes (``export.link``: copy, hardlink or symlink);
  augmented variants (train only) as the augment stage wrote them. Nothing is decoded or re-encoded here.
- ``<split>/labels.json``: COCO with ``images`` (plus ``label``, ``severity``, ``sha256``, ``source``,
  ``augmented_from`` attributes), ``categories`` (ontology order, ids from 1, the same in every version) and
  ``annotations``: the boxes where there are boxes, else one whole-image box per labelled image
  (``whole_image: true``), so classification-only data still imports as detection. A region that came with a shape
  (a mask or polygon label, followed through augmentation) also has ``segmentation`` (its polygons) and ``area`` (its
  pixel area); other annotations keep ``area = w * h``.
- ``<split>/labels.csv``: :data:`CSV_COLUMNS` plus the manifest's ``meta_*`` columns, one row per image.
- ``export.json`` (DVC metrics) and ``provenance.json`` (params, model versions, input hashes).

``info.version`` is the dataset version: the first 16 hex digits of a SHA-256 over every split's COCO content
(including each image's SHA-256) and CSV text, so the same data gives the same version whatever the link mode,
and any change of pixels, labels or boxes gives a new one. Every COCO file is loaded back with pycocotools before
the export counts as written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pandas as pd

from curation.errors import CurationError, EmptyDatasetError, InputError
from curation.headline import write_headline
from curation.io import atomic_path, file_sha256, write_json
from curation.tables import read_table
from schemas.params_dataset import SPLITS, ExportParams
from schemas.records import ExportRow, boxes_from_json, columns

if TYPE_CHECKING:
    from schemas.params import Params

CSV_COLUMNS = columns(ExportRow)
MANIFEST_COLUMNS = ("image_id", "path", "rel_path", "width", "height", "sha256")
"""Manifest columns the export reads, besides ``meta_*``."""
PREDICTION_COLUMNS = ("label", "score", "model_name", "model_version", "description_en", "description_ko")
"""Prediction columns the export reads besides image_id (descriptions, pre-label and model versions)."""
_CHUNK = 10_000  # rows encoded at a time: bounds the per-row Python objects alive at once
MARKER = "export.json"  # present in a folder this stage wrote; a folder without it is never replaced


class ExportError(CurationError):
    """The export could not be written or did not validate."""


@dataclass(frozen=True)
class ExportResult:
    version: str
    report: dict[str, Any]
    provenance: dict[str, Any]


def export(
    splits: pd.DataFrame,
    manifest: pd.DataFrame,
    out_dir: Path,
    settings: ExportParams,
    *,
    class_names: Sequence[str],
    augmented: pd.DataFrame | None = None,
    augment_dir: Path | None = None,
    predictions: pd.DataFrame | None = None,
    provenance: dict[str, Any] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    allow_empty: bool = False,
) -> ExportResult:
    """Write the export into ``out_dir`` (a fresh or staging folder) and validate it.

    Args:
        splits: ``splits.parquet`` (image_id, split, label, severity, label_source, disputed, boxes).
        manifest: ``manifest.parquet``; image paths are read relative to the working directory.
        out_dir: Folder to write into.
        settings: Link mode and what to include.
        class_names: Ontology classes: COCO categories, in this order.
        augmented: ``augmented.parquet`` of the augment stage (train only), with ``augment_dir`` its folder.
        predictions: ``predictions.parquet`` (descriptions, pre-label and model versions), optional.
        provenance: Params and input hashes to record; model versions are added from ``predictions``.
        allow_empty: Export even when no image has a label (otherwise an error).

    Raises:
        EmptyDatasetError: no exported image has a label and ``allow_empty`` is false.
    """
    out_dir = Path(out_dir)
    n_labelled = int(splits["label"].notna().sum())
    if not allow_empty and n_labelled == 0:
        raise EmptyDatasetError(
            f"splits.parquet: none of its {len(splits)} image(s) has a label, so the export would hold no labelled "
            "image; import labels at ingest or review them in Label Studio, re-run split, or pass --allow-empty"
        )
    table = _images_table(splits, manifest, settings, augmented, augment_dir, predictions)
    if on_start:
        on_start(len(table))
    categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(class_names)]
    category_ids = {c["name"]: c["id"] for c in categories}
    unknown = sorted(set(table["label"].dropna()) - set(category_ids))
    if unknown:
        raise InputError(f"splits.parquet: labels {unknown} are not ontology classes; re-run the split stage")

    # Streaming: the table above holds only the columns COCO and CSV need. Each split's COCO lists are encoded
    # item by item (a chunk of rows at a time) into part files and the version digest, and its CSV is written chunk
    # by chunk, so no split's COCO dict or CSV text is ever whole in memory. labels.json is assembled from the parts
    # once every split is hashed, because its ``info.version`` depends on all of them.
    digest = hashlib.sha256()
    written: dict[str, _SplitCounts] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".parts.", dir=out_dir) as parts:
        for name in SPLITS:
            rows = table[table["split"] == name].reset_index(drop=True)
            data_dir = out_dir / name / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            for source, file_name in zip(rows["source_path"], rows["file_name"], strict=True):
                _place(Path(source), data_dir / file_name, settings.link)
                if on_progress:
                    on_progress(1)
            written[name] = _coco_parts(rows, Path(parts) / name, categories, category_ids, digest)
            _write_split_csv(rows, name, out_dir / name / "labels.csv", digest)
        version = digest.hexdigest()[:16]

        record = dict(provenance or {})
        record["version"] = version
        record["model_versions"] = _model_versions(predictions)
        record["link"] = settings.link
        for name in SPLITS:
            info = {
                "description": f"defect-curation export, {name} split",
                "version": version,
                "contributor": "defect-curation",
                "model_versions": record["model_versions"],
                "params_sha256": record.get("params_sha256"),
            }
            _assemble_coco(out_dir / name / "labels.json", Path(parts) / name, categories, info)
    report = _report(table, written, version, settings, len(splits) - n_labelled)
    for name in SPLITS:
        _validate(out_dir / name, written[name])
    write_json(out_dir / "provenance.json", record)
    write_headline(out_dir, "export", report)
    write_json(out_dir / MARKER, report)
    return ExportResult(version, report, record)


def provenance_record(params: Params, inputs: Sequence[Path]) -> dict[str, Any]:
    """What an export was made from: the params that shape it, their hash, and the SHA-256 of each input.

    Args:
        params: The whole params file; its ``split``, ``augment`` and ``export`` sections and the class list count.
        inputs: The stage's input files; those that do not exist are left out.

    Returns:
        ``{"params": ..., "params_sha256": ..., "inputs": {path: sha256}}``, written as ``provenance.json``.
    """
    dumped: dict[str, Any] = {
        name: getattr(params, name).model_dump(mode="json") for name in ("split", "augment", "export")
    }
    dumped["classes"] = params.ontology.class_names
    return {
        "params": dumped,
        "params_sha256": hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest(),
        "inputs": {str(p): file_sha256(p) for p in inputs if Path(p).is_file()},
    }


def _images_table(
    splits: pd.DataFrame,
    manifest: pd.DataFrame,
    settings: ExportParams,
    augmented: pd.DataFrame | None,
    augment_dir: Path | None,
    predictions: pd.DataFrame | None,
) -> pd.DataFrame:
    """One row per exported image (originals, then augmented variants) with everything COCO and CSV need."""
    wanted = splits if settings.include_unlabeled else splits[splits["label"].notna()]
    missing = sorted(set(wanted["image_id"]) - set(manifest["image_id"]))
    if missing:
        raise InputError(
            f"splits.parquet names {len(missing)} image(s) missing from the manifest (first {missing[0]!r}); "
            "re-run the split stage on the current manifest"
        )
    meta = [c for c in manifest.columns if c.startswith("meta_")]
    originals = wanted.merge(
        manifest[["image_id", "path", "rel_path", "width", "height", "sha256", *meta]], on="image_id", how="left"
    )
    originals["source_path"] = originals["path"]
    originals["file_name"] = originals["image_id"] + originals["path"].map(lambda p: Path(p).suffix.lower())
    originals["source"] = originals["rel_path"]
    # The reviewers' description (splits.parquet from a consensus); the pre-label's is "prediction_description".
    reviewed = originals.pop("description") if "description" in originals.columns else None
    originals["description_reviewed"] = reviewed
    originals["augmented_from"] = None
    frames = [originals]
    if settings.include_augmented and augmented is not None and len(augmented):
        if augment_dir is None:
            raise ValueError("augment_dir is required with augmented records")
        sources = originals.set_index("image_id")
        extra = augmented.copy()
        extra["source_path"] = [str(Path(augment_dir) / f) for f in extra["file"]]
        extra["file_name"] = extra["file"].map(lambda f: Path(f).name)
        extra["augmented_from"] = extra["source_image_id"]
        stale = sorted(set(extra["source_image_id"]) - set(sources.index))
        if stale:
            raise InputError(
                f"augmented.parquet has variants of {len(stale)} image(s) not in the train split (first "
                f"{stale[0]!r}); re-run the augment stage after the split stage"
            )
        for column in ("source", "label_source", "disputed", "description_reviewed", *meta):
            extra[column] = extra["source_image_id"].map(sources[column])
        frames.append(extra)
    table = pd.concat([f.drop(columns=["path", "rel_path"], errors="ignore") for f in frames], ignore_index=True)
    table = _join_predictions(table, predictions)
    table["disputed"] = table["disputed"].fillna(False).astype(bool)
    order = table["augmented_from"].notna()
    table = table.assign(_aug=order).sort_values(["split", "_aug", "file_name"], kind="stable")
    return table.drop(columns="_aug").reset_index(drop=True)


def _join_predictions(table: pd.DataFrame, predictions: pd.DataFrame | None) -> pd.DataFrame:
    columns = {
        "description_en": "prediction_description",
        "description_ko": "prediction_description_ko",
        "label": "prelabel",
        "score": "prelabel_score",
        "model_version": "model_version",
    }
    key = table["augmented_from"].where(table["augmented_from"].notna(), table["image_id"])
    if predictions is None or predictions.empty:
        for target in columns.values():
            table[target] = None
        return table
    by_id = predictions.drop_duplicates("image_id", keep="last").set_index("image_id")
    for column, target in columns.items():
        table[target] = key.map(by_id[column]).to_numpy() if column in by_id else None
    return table


def _place(source: Path, dest: Path, link: str) -> None:
    """Put ``source``'s exact bytes at ``dest``: a byte copy, a hardlink or an absolute symlink."""
    try:
        if link == "copy":
            shutil.copyfile(source, dest)
        elif link == "hardlink":
            os.link(source, dest)
        else:
            os.symlink(os.path.abspath(source), dest)
    except FileNotFoundError as err:
        raise InputError(f"{source}: image file not found; re-run ingest (the manifest is out of date)") from err
    except OSError as err:
        hint = " (hardlinks need the same file system; use export.link: copy)" if link == "hardlink" else ""
        raise ExportError(f"cannot {link} {source} to {dest}: {err}{hint}") from err


@dataclass(frozen=True)
class _SplitCounts:
    images: int
    annotations: int
    whole_image_boxes: int


class _JsonList:
    """One list of a COCO file, encoded item by item exactly as ``json.dumps`` encodes the whole file.

    ``pretty`` receives the text ``write_json`` gives the list (``indent=2``, sorted keys, UTF-8) at the second
    level of the file; ``digest`` the compact, ASCII form the version has always hashed.
    """

    def __init__(self, pretty: TextIO, digest: Any) -> None:
        self.pretty, self.digest, self.count = pretty, digest, 0

    def add(self, item: dict[str, Any]) -> None:
        text = json.dumps(item, indent=2, sort_keys=True, ensure_ascii=False).replace("\n", "\n    ")
        self.pretty.write(("[\n    " if self.count == 0 else ",\n    ") + text)
        self.digest.update((("[" if self.count == 0 else ",") + json.dumps(item, sort_keys=True, **_COMPACT)).encode())
        self.count += 1

    def close(self) -> None:
        self.pretty.write("\n  ]" if self.count else "[]")
        self.digest.update(b"]" if self.count else b"[]")


_COMPACT: dict[str, Any] = {"separators": (",", ":")}  # the version digest's encoding (ASCII)
_LISTS = ("annotations", "images")  # the big lists, streamed; every other COCO key is small
_SLOT = "\x00{}\x00"  # placeholder for a streamed list in the skeleton of the file (never in real values)


def _skeleton(categories: list[dict[str, Any]], info: dict[str, Any] | None, **dump: Any) -> list[str]:
    """The COCO file's text around its streamed lists: pieces to interleave with annotations, then images."""
    coco: dict[str, Any] = {"licenses": [], "categories": categories, **{k: _SLOT.format(k) for k in _LISTS}}
    if info is not None:
        coco["info"] = info
    text = json.dumps(coco, sort_keys=True, **dump)
    pieces = [text]
    for key in _LISTS:  # sorted keys: annotations come before images
        head, tail = pieces.pop().split(json.dumps(_SLOT.format(key)))
        pieces += [head, tail]
    return pieces


def _coco_parts(
    rows: pd.DataFrame, folder: Path, categories: list[dict[str, Any]], category_ids: dict[str, int], digest: Any
) -> _SplitCounts:
    """Encode one split's annotations and images into ``folder`` (pretty parts) and ``digest`` (compact file)."""
    folder.mkdir(parents=True)
    head, middle, tail = _skeleton(categories, None, **_COMPACT)
    digest.update(head.encode())
    whole = 0
    with (folder / "annotations").open("w", encoding="utf-8") as handle:
        annotations = _JsonList(handle, digest)
        for index, row in _numbered(rows):
            for box in _boxes(row):
                annotation = {
                    "id": annotations.count + 1,
                    "image_id": index,
                    "category_id": category_ids[box["label"]],
                    "bbox": [round(box["x"], 3), round(box["y"], 3), round(box["w"], 3), round(box["h"], 3)],
                    "area": round(box["w"] * box["h"], 3),
                    "iscrowd": 0,
                    "whole_image": box["whole_image"],
                }
                if "segmentation" in box:
                    annotation.update(_segmentation(box, row))
                annotations.add(annotation)
                whole += box["whole_image"]
        annotations.close()
    digest.update(middle.encode())
    with (folder / "images").open("w", encoding="utf-8") as handle:
        images = _JsonList(handle, digest)
        for index, row in _numbered(rows):
            images.add(
                {
                    "id": index,
                    "file_name": row.file_name,
                    "width": int(row.width),
                    "height": int(row.height),
                    "image_id": row.image_id,
                    "label": _none(row.label),
                    "severity": _none(row.severity),
                    "sha256": row.sha256,
                    "source": row.source,
                    "augmented_from": _none(row.augmented_from),
                }
            )
        images.close()
    digest.update(tail.encode())
    return _SplitCounts(images.count, annotations.count, whole)


def _assemble_coco(path: Path, folder: Path, categories: list[dict[str, Any]], info: dict[str, Any]) -> None:
    """Write labels.json atomically: the skeleton with ``info``, the encoded lists copied in between."""
    head, middle, tail = _skeleton(categories, info, indent=2, ensure_ascii=False)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as out:
        out.write(head)
        with (folder / "annotations").open(encoding="utf-8") as part:
            shutil.copyfileobj(part, out)
        out.write(middle)
        with (folder / "images").open(encoding="utf-8") as part:
            shutil.copyfileobj(part, out)
        out.write(tail + "\n")


def _numbered(rows: pd.DataFrame) -> Iterator[tuple[int, Any]]:
    """(COCO image id from 1, row) for every row, a chunk of rows at a time."""
    for start in range(0, len(rows), _CHUNK):
        yield from enumerate(rows.iloc[start : start + _CHUNK].itertuples(index=False), start=start + 1)


def _boxes(row: Any) -> list[dict[str, Any]]:
    if isinstance(row.boxes, str):
        return [{**b.as_dict(), "whole_image": False} for b in boxes_from_json(row.boxes)]
    if _none(row.label) is None:
        return []
    return [
        {"x": 0.0, "y": 0.0, "w": float(row.width), "h": float(row.height), "label": row.label, "whole_image": True}
    ]


def _segmentation(box: dict[str, Any], row: Any) -> dict[str, Any]:
    """COCO ``segmentation`` (polygons, 1/1000 pixel) and ``area``: the region's pixel area as labelled (counted on
    the mask at ingest or after augmentation), else the pixels inside its polygons as pycocotools counts them."""
    from curation.shapes import polygons_area

    polygons = [[round(float(v), 3) for v in polygon] for polygon in box["segmentation"]]
    area = _none(box.get("area"))
    if area is None:
        area = polygons_area(polygons, int(row.height), int(row.width))
    return {"segmentation": polygons, "area": round(float(area), 3)}


def _csv(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    frame = rows.copy()
    frame["path"] = f"{split}/data/" + frame["file_name"]
    frame["n_boxes"] = [len(boxes_from_json(b)) if isinstance(b, str) else 0 for b in frame["boxes"]]
    meta = sorted(c for c in frame.columns if c.startswith("meta_"))
    return frame[[*CSV_COLUMNS, *meta]]


def _write_split_csv(rows: pd.DataFrame, split: str, path: Path, digest: Any) -> None:
    """Write labels.csv atomically a chunk of rows at a time (the header once), hashing the same text."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        for start in range(0, max(len(rows), 1), _CHUNK):  # an empty split still gets its header
            chunk = _csv(rows.iloc[start : start + _CHUNK], split)
            text = chunk.to_csv(index=False, header=start == 0, lineterminator="\n")
            handle.write(text)
            digest.update(text.encode())


def _validate(split_dir: Path, counts: _SplitCounts) -> None:
    """Load labels.json back with pycocotools; check counts, references and that the CSV lists the same images.

    The one step that holds a split's whole COCO in memory (pycocotools parses the file), one split at a time.
    """
    from pycocotools.coco import COCO

    path = split_dir / "labels.json"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            loaded = COCO(str(path))
    except Exception as err:  # pycocotools raises bare AssertionError/KeyError on bad files
        raise ExportError(f"{path}: pycocotools cannot load the export ({type(err).__name__}: {err})") from err
    problems = []
    if len(loaded.getImgIds()) != counts.images:
        problems.append(f"{len(loaded.getImgIds())} images loaded, {counts.images} written")
    if len(loaded.getAnnIds()) != counts.annotations:
        problems.append(f"{len(loaded.getAnnIds())} annotations loaded, {counts.annotations} written")
    if any(a["image_id"] not in loaded.imgs for a in loaded.dataset["annotations"]):
        problems.append("an annotation points at a missing image")
    names = [i["file_name"] for i in loaded.dataset["images"]]
    listed = read_table(split_dir / "labels.csv", ExportRow, columns=["path"], keep_default_na=False)["path"]
    if sorted(names) != sorted(Path(p).name for p in listed):
        problems.append("labels.csv and labels.json list different images")
    absent = [n for n in names if not (split_dir / "data" / n).exists()]
    if absent:
        problems.append(f"{len(absent)} image file(s) missing under data/ (first {absent[0]!r})")
    if problems:
        raise ExportError(f"{path}: export does not validate: " + "; ".join(problems))


def _report(
    table: pd.DataFrame, written: dict[str, _SplitCounts], version: str, settings: ExportParams, n_left_out: int
) -> dict[str, Any]:
    per_split: dict[str, Any] = {}
    for name in SPLITS:
        rows = table[table["split"] == name]
        per_split[name] = {
            "images": len(rows),
            "originals": int(rows["augmented_from"].isna().sum()),
            "augmented": int(rows["augmented_from"].notna().sum()),
            "annotations": written[name].annotations,
            "whole_image_boxes": written[name].whole_image_boxes,
            "unlabeled": int(rows["label"].isna().sum()),
            "classes": {str(k): int(v) for k, v in rows["label"].value_counts().sort_index().items()},
        }
    return {
        "version": version,
        "images": len(table),
        "splits": per_split,
        "link": settings.link,
        "include_augmented": settings.include_augmented,
        "include_unlabeled": settings.include_unlabeled,
        "unlabeled_left_out": 0 if settings.include_unlabeled else n_left_out,
    }


def _model_versions(predictions: pd.DataFrame | None) -> list[dict[str, str]]:
    if predictions is None or predictions.empty or "model_version" not in predictions:
        return []
    columns = [c for c in ("model_name", "model_version") if c in predictions]
    unique = predictions[columns].drop_duplicates().sort_values(columns)
    return [{k: str(v) for k, v in row.items()} for row in unique.to_dict("records")]


def _none(value: Any) -> Any:
    """None for every missing-value spelling pandas uses (None, NaN, NA), else the value."""
    return None if value is None or (not isinstance(value, (str, list, dict)) and pd.isna(value)) else value
