"""Export: per split a COCO JSON and a CSV, with the images placed byte for byte (copies or links).

Layout of ``OUT_DIR`` (each split folder is FiftyOne's ``COCODetectionDataset`` layout, so
``fo.Dataset.from_dir(OUT_DIR/train, dataset_type=fo.types.COCODetectionDataset)`` imports it):

- ``<split>/data/<image_id><ext>``: originals as their exact bytes (``export.link``: copy, hardlink or symlink);
  augmented variants (train only) as the augment stage wrote them. Nothing is decoded or re-encoded here.
- ``<split>/labels.json``: COCO with ``images`` (plus ``label``, ``severity``, ``sha256``, ``source``,
  ``augmented_from`` attributes), ``categories`` (ontology order, ids from 1, the same in every version) and
  ``annotations``: the boxes where there are boxes, else one whole-image box per labelled image
  (``whole_image: true``), so classification-only data still imports as detection.
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
from typing import Any

import pandas as pd

from curation.errors import CurationError, InputError
from curation.io import write_csv, write_json
from schemas.params_dataset import SPLITS, ExportParams

CSV_COLUMNS = [
    "path",
    "image_id",
    "label",
    "severity",
    "description",
    "description_ko",
    "split",
    "source",
    "augmented_from",
    "label_source",
    "disputed",
    "n_boxes",
    "width",
    "height",
    "sha256",
    "prelabel",
    "prelabel_score",
    "model_version",
]
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
    """
    out_dir = Path(out_dir)
    table = _images_table(splits, manifest, settings, augmented, augment_dir, predictions)
    if on_start:
        on_start(len(table))
    categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(class_names)]
    category_ids = {c["name"]: c["id"] for c in categories}
    unknown = sorted(set(table["label"].dropna()) - set(category_ids))
    if unknown:
        raise InputError(f"splits.parquet: labels {unknown} are not ontology classes; re-run the split stage")

    cocos: dict[str, dict[str, Any]] = {}
    csvs: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        rows = table[table["split"] == name].reset_index(drop=True)
        data_dir = out_dir / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        for source, file_name in zip(rows["source_path"], rows["file_name"], strict=True):
            _place(Path(source), data_dir / file_name, settings.link)
            if on_progress:
                on_progress(1)
        cocos[name] = _coco(rows, categories, category_ids)
        csvs[name] = _csv(rows, name)

    digest = hashlib.sha256()
    for name in SPLITS:
        digest.update(json.dumps(cocos[name], sort_keys=True, separators=(",", ":")).encode())
        digest.update(csvs[name].to_csv(index=False, lineterminator="\n").encode())
    version = digest.hexdigest()[:16]

    record = dict(provenance or {})
    record["version"] = version
    record["model_versions"] = _model_versions(predictions)
    record["link"] = settings.link
    for name in SPLITS:
        cocos[name]["info"] = {
            "description": f"defect-curation export, {name} split",
            "version": version,
            "contributor": "defect-curation",
            "model_versions": record["model_versions"],
            "params_sha256": record.get("params_sha256"),
        }
        write_json(out_dir / name / "labels.json", cocos[name])
        write_csv(out_dir / name / "labels.csv", csvs[name])
    report = _report(table, cocos, version, settings)
    for name in SPLITS:
        _validate(out_dir / name, cocos[name], csvs[name])
    write_json(out_dir / "provenance.json", record)
    write_json(out_dir / MARKER, report)
    return ExportResult(version, report, record)


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or None when it does not exist (for provenance of optional inputs)."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_dir(out_dir: Path, marker: str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; on success move each of its entries into ``out_dir``.

    Each entry (a split folder, a file) replaces its namesake by rename, ``marker`` last, so a killed run leaves
    the previous output whole and readers see the marker only once everything is in place. Other entries of
    ``out_dir`` (DVC's ``.gitignore``) are left alone. An entry that would be replaced while ``marker`` is absent
    was not written by this stage: it is never deleted.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new.", dir=out_dir.parent))
    trash = staging.with_name(staging.name.replace(".new.", ".old."))
    try:
        yield staging
        entries = sorted(staging.iterdir(), key=lambda p: (p.name == marker, p.name))
        clashes = [e.name for e in entries if (out_dir / e.name).exists()]
        if clashes and not (out_dir / marker).exists():
            raise InputError(
                f"{out_dir}: holds {clashes} but no {marker}, so it is not an output of this stage; nothing was "
                "replaced: choose another folder"
            )
        trash.mkdir()
        for entry in entries:
            if (out_dir / entry.name).exists() or (out_dir / entry.name).is_symlink():
                os.replace(out_dir / entry.name, trash / entry.name)
            os.replace(entry, out_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)


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
    info = manifest.set_index("image_id")
    missing = sorted(set(wanted["image_id"]) - set(info.index))
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
        for column in ("source", "label_source", "disputed", *meta):
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
        "description_en": "description",
        "description_ko": "description_ko",
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


def _coco(rows: pd.DataFrame, categories: list[dict[str, Any]], category_ids: dict[str, int]) -> dict[str, Any]:
    images, annotations = [], []
    for index, row in enumerate(rows.itertuples(index=False), start=1):
        images.append(
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
        for box in _boxes(row):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": category_ids[box["label"]],
                    "bbox": [round(box["x"], 3), round(box["y"], 3), round(box["w"], 3), round(box["h"], 3)],
                    "area": round(box["w"] * box["h"], 3),
                    "iscrowd": 0,
                    "whole_image": box["whole_image"],
                }
            )
    return {"licenses": [], "categories": categories, "images": images, "annotations": annotations}


def _boxes(row: Any) -> list[dict[str, Any]]:
    if isinstance(row.boxes, str):
        return [{**b, "whole_image": False} for b in json.loads(row.boxes)]
    if _none(row.label) is None:
        return []
    return [
        {"x": 0.0, "y": 0.0, "w": float(row.width), "h": float(row.height), "label": row.label, "whole_image": True}
    ]


def _csv(rows: pd.DataFrame, split: str) -> pd.DataFrame:
    frame = rows.copy()
    frame["path"] = f"{split}/data/" + frame["file_name"]
    frame["n_boxes"] = [len(json.loads(b)) if isinstance(b, str) else 0 for b in frame["boxes"]]
    meta = sorted(c for c in frame.columns if c.startswith("meta_"))
    return frame[[*CSV_COLUMNS, *meta]]


def _validate(split_dir: Path, coco: dict[str, Any], csv: pd.DataFrame) -> None:
    """Load labels.json back with pycocotools; check counts, references and that the CSV lists the same images."""
    from pycocotools.coco import COCO

    path = split_dir / "labels.json"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            loaded = COCO(str(path))
    except Exception as err:  # pycocotools raises bare AssertionError/KeyError on bad files
        raise ExportError(f"{path}: pycocotools cannot load the export ({type(err).__name__}: {err})") from err
    problems = []
    if len(loaded.getImgIds()) != len(coco["images"]):
        problems.append(f"{len(loaded.getImgIds())} images loaded, {len(coco['images'])} written")
    if len(loaded.getAnnIds()) != len(coco["annotations"]):
        problems.append(f"{len(loaded.getAnnIds())} annotations loaded, {len(coco['annotations'])} written")
    if any(a["image_id"] not in loaded.imgs for a in loaded.dataset["annotations"]):
        problems.append("an annotation points at a missing image")
    names = [i["file_name"] for i in coco["images"]]
    if sorted(names) != sorted(Path(p).name for p in csv["path"]):
        problems.append("labels.csv and labels.json list different images")
    absent = [n for n in names if not (split_dir / "data" / n).exists()]
    if absent:
        problems.append(f"{len(absent)} image file(s) missing under data/ (first {absent[0]!r})")
    if problems:
        raise ExportError(f"{path}: export does not validate: " + "; ".join(problems))


def _report(
    table: pd.DataFrame, cocos: dict[str, dict[str, Any]], version: str, settings: ExportParams
) -> dict[str, Any]:
    per_split: dict[str, Any] = {}
    for name in SPLITS:
        rows = table[table["split"] == name]
        coco = cocos[name]
        per_split[name] = {
            "images": len(rows),
            "originals": int(rows["augmented_from"].isna().sum()),
            "augmented": int(rows["augmented_from"].notna().sum()),
            "annotations": len(coco["annotations"]),
            "whole_image_boxes": sum(1 for a in coco["annotations"] if a["whole_image"]),
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
