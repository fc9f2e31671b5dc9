"""Task specs for Label Studio, built from the manifest and the predictions, and the import requests they make.

Pure: no server call. :func:`build_tasks` turns the manifest, predictions, disputes and prior shapes into one
:class:`TaskSpec` per image in review-queue order; :func:`storage_folders` names the local-files storages that serve
them; :func:`request_batches` cuts imports to Label Studio's request limits and :func:`assign_parts` spreads new
tasks over the project set. :mod:`curation.studio.push` sends them (the rules are in its docstring).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote

import pandas as pd

from curation.errors import InputError
from curation.studio.config import POLYGONS
from curation.studio.mapping import PRIOR_VERSION, to_label_studio, to_prediction
from curation.studio.order import QUEUE, review_queue
from schemas.ontology import Ontology
from schemas.params_studio import LabelStudioParams
from schemas.records import ANY_DEFECT

PREDICTION_COLUMNS = ("image_id", "label", "score", "margin", "entropy", "model_version")
MANIFEST_COLUMNS = ("image_id", "path", "rel_path")
_SHOWN_ROWS = 5
MB = 1_000_000

T = TypeVar("T")


@dataclass(frozen=True)
class TaskSpec:
    """One image as a task: its data and its predictions (one per model version)."""

    image_id: str
    data: dict[str, Any]
    predictions: tuple[dict[str, Any], ...]


def build_tasks(
    manifest: pd.DataFrame,
    predictions: pd.DataFrame,
    *,
    ontology: Ontology,
    document_root: Path,
    description_language: str = "both",
    disputes: Iterable[str] = (),
    manifest_name: str = "manifest",
    predictions_name: str = "predictions",
    prior: pd.DataFrame | None = None,
    prior_name: str = "prior labels",
    previews: Mapping[str, Path] | None = None,
    shapes: bool = False,
) -> list[TaskSpec]:
    """Tasks for every manifest image in review-queue order (:mod:`curation.studio.order`: most anomalous beside
    most uncertain); images without predictions come last.

    Args:
        prior: ``prior_labels.parquet``; its regions with ``polygons`` become polygon pre-annotations (pass it only
            with ``labelstudio.boxes: true``, which adds the polygon control).
        shapes: ``labelstudio.boxes``: the predictions' anomaly ``regions`` become box/polygon pre-annotations.

    Raises:
        InputError: missing columns, predictions for unknown images or classes, duplicate (image_id,
            model_version) rows, images outside the document root, or unreadable prior polygons. Messages name the
            file and rows.
    """
    _require_columns(manifest, MANIFEST_COLUMNS, manifest_name, "re-run `curation ingest`")
    _require_columns(predictions, PREDICTION_COLUMNS, predictions_name, "re-run `curation prelabel`")
    predictions = predictions.reset_index(drop=True)
    _check_predictions(predictions, manifest, ontology, predictions_name)
    root = Path(os.path.abspath(document_root))
    disputed = set(disputes)

    by_image: dict[str, list[dict]] = defaultdict(list)
    uncertainty: dict[str, tuple[float, float]] = {}
    predicted: dict[str, str] = {}  # image_id -> the class of its last predictions row
    rows = predictions.to_dict("records")
    sizes = _sizes(manifest, predictions, manifest_name) if shapes else {}
    for position, row in enumerate(rows):
        try:
            prediction = to_prediction(row, description_language, size=sizes.get(row["image_id"]), shapes=shapes)
        except ValueError as err:
            raise InputError(
                f"{predictions_name}: row {position + 1} (1-based, image {row['image_id']}): regions cannot be read "
                f"({err}); re-run `curation prelabel`"
            ) from None
        by_image[row["image_id"]].append(prediction)
        predicted[row["image_id"]] = row["label"]
        key = (float(row["margin"]), -float(row["entropy"]))
        uncertainty[row["image_id"]] = min(uncertainty.get(row["image_id"], key), key)
    queue = review_queue(rows, list(manifest["image_id"]))

    prior_shapes = {} if prior is None else _shape_results(prior, manifest, ontology, manifest_name, prior_name)
    for image_id, results in prior_shapes.items():
        if image_id not in by_image:
            by_image[image_id].append({"model_version": PRIOR_VERSION, "result": []})
        for prediction in by_image[image_id]:
            prediction["result"] = prediction["result"] + results

    specs = []
    previews = previews or {}
    for row in manifest.to_dict("records"):
        image_id = row["image_id"]
        shown = previews.get(image_id)
        data: dict[str, Any] = {
            "image": local_files_url(
                Path(shown or row["path"]), root, "labelstudio.preview_dir" if shown else manifest_name
            ),
            "image_id": image_id,
            "file": row["rel_path"],
            "adjudicate": image_id in disputed,
            QUEUE: queue[image_id],
        }
        if shown is not None:
            data["original_size"] = [int(row["width"]), int(row["height"])]
        if image_id in uncertainty:
            margin, negative_entropy = uncertainty[image_id]
            data["margin"] = round(margin, 6)
            data["entropy"] = round(-negative_entropy, 6)
            data["predicted"] = predicted[image_id]
        preds = tuple(sorted(by_image.get(image_id, []), key=lambda p: p["model_version"]))
        specs.append(TaskSpec(image_id, data, preds))
    specs.sort(key=lambda s: s.data[QUEUE])
    return specs


def _sizes(manifest: pd.DataFrame, predictions: pd.DataFrame, manifest_name: str) -> dict[str, tuple[int, int]]:
    """Image id -> (width, height) of the stored image, which region pixels refer to; {} without regions."""
    if "regions" not in predictions.columns or predictions["regions"].isna().all():
        return {}
    _require_columns(manifest, ("width", "height"), manifest_name, "re-run `curation ingest`")
    return {r.image_id: (int(r.width), int(r.height)) for r in manifest.itertuples(index=False)}


def _shape_results(
    prior: pd.DataFrame, manifest: pd.DataFrame, ontology: Ontology, manifest_name: str, prior_name: str
) -> dict[str, list[dict[str, Any]]]:
    """Polygon results per image from the prior labels with a shape and an ontology class."""
    from curation.shapes import parse_polygons

    if "polygons" not in prior.columns:
        return {}
    rows = prior[prior["polygons"].notna() & prior["label"].notna()]
    if rows.empty:
        return {}
    unknown = ~rows["label"].isin(ontology.class_names)
    if unknown.any():
        raise InputError(
            f"{prior_name}: rows {_rows(unknown)} (1-based) have labels {sorted(set(rows.loc[unknown, 'label']))} "
            f"that are not ontology classes {ontology.class_names}; re-run ingest with the current params.yaml"
        )
    _require_columns(manifest, ("width", "height"), manifest_name, "re-run `curation ingest`")
    sizes = manifest.set_index("image_id")[["width", "height"]]
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for position, row in zip(rows.index, rows.itertuples(index=False), strict=True):
        if row.image_id not in sizes.index:
            continue  # a label of an image no longer in the manifest: the manifest decides what is pushed
        try:
            polygons = parse_polygons(row.polygons)
        except ValueError as err:
            raise InputError(
                f"{prior_name}: row {position + 1} (1-based, image {row.image_id}): polygons cannot be read "
                f"({err}); fix the mask or polygon file it came from and re-run ingest"
            ) from None
        width, height = sizes.loc[row.image_id]
        size = (int(width), int(height))
        out[row.image_id] += [
            to_label_studio(POLYGONS, {"segmentation": [polygon], "label": str(row.label)}, size=size)
            for polygon in polygons
        ]
    return dict(out)


def _require_columns(frame: pd.DataFrame, needed: Sequence[str], name: str, fix: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing}; {fix}")


def _rows(mask: pd.Series) -> str:
    rows = [int(i) + 1 for i in mask[mask].index[:_SHOWN_ROWS]]
    more = int(mask.sum()) - len(rows)
    return ", ".join(map(str, rows)) + (f" and {more} more" if more > 0 else "")


def _check_predictions(predictions: pd.DataFrame, manifest: pd.DataFrame, ontology: Ontology, name: str) -> None:
    unknown = ~predictions["image_id"].isin(set(manifest["image_id"]))
    if unknown.any():
        raise InputError(
            f"{name}: rows {_rows(unknown)} (1-based) are for images not in the manifest; the predictions are stale "
            "- re-run `dvc repro prelabel` on the current manifest"
        )
    bad_label = ~predictions["label"].isin([*ontology.class_names, ANY_DEFECT])
    if bad_label.any():
        labels = sorted(set(predictions.loc[bad_label, "label"].astype(str)))[:_SHOWN_ROWS]
        raise InputError(
            f"{name}: rows {_rows(bad_label)} have labels {labels} that are not ontology classes "
            f"{ontology.class_names}; re-run prelabel with the current params.yaml"
        )
    if "severity" in predictions.columns:
        given = predictions["severity"].notna() & (predictions["severity"].astype(str).str.strip() != "")
        bad_severity = given & ~predictions["severity"].astype(str).str.strip().isin(ontology.severity_names)
        if bad_severity.any():
            raise InputError(
                f"{name}: rows {_rows(bad_severity)} have a severity that is not an ontology severity "
                f"{ontology.severity_names}; fix the severity column or re-run prelabel"
            )
    numbers = predictions[["score", "margin", "entropy"]].apply(pd.to_numeric, errors="coerce")
    bad_number = numbers.isna().any(axis=1)
    if bad_number.any():
        raise InputError(f"{name}: rows {_rows(bad_number)} have an empty or non-numeric score/margin/entropy")
    repeated = predictions.duplicated(["image_id", "model_version"], keep=False)
    if repeated.any():
        raise InputError(f"{name}: rows {_rows(repeated)} repeat an (image_id, model_version) pair; keep one each")


def local_files_url(path: Path, document_root: Path, source: str = "manifest") -> str:
    """``/data/local-files/?d=...`` for ``path``, which must lie below ``document_root``."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(document_root)
    except ValueError:
        raise InputError(
            f"{source}: image {path} is outside Label Studio's document root {document_root}; set "
            "labelstudio.document_root to a folder containing every image, then `curation studio stop` and "
            "`curation studio start`"
        ) from None
    return "/data/local-files/?d=" + quote(PurePosixPath(relative).as_posix(), safe="/")


def storage_folders(specs: Sequence[TaskSpec], document_root: Path) -> list[Path]:
    """Folders to register as local import storages: the images' common folder when it is below the document
    root, else one folder per top-level directory used (Label Studio refuses the document root itself).

    Tasks shown through a preview (``original_size`` in their data) are covered by the preview cache folder itself
    (the parent of the previews' two-character shard folders, :func:`curation.studio.previews.preview_path`), never
    by a parent of it: the cache lives in the Label Studio home, whose other files (credentials) must not be served.
    """
    originals = [s for s in specs if "original_size" not in s.data]
    caches = sorted(
        {PurePosixPath(_relative_path(s.data["image"])).parent.parent for s in specs if "original_size" in s.data}
    )
    if any(str(cache) in ("", ".") for cache in caches):
        raise InputError(
            f"labelstudio.preview_dir is the document root {document_root}; Label Studio serves only files in its "
            "sub-folders - set labelstudio.preview_dir to a folder below labelstudio.document_root"
        )
    return _image_folders(originals, document_root) + [document_root / cache for cache in caches]


def _image_folders(specs: Sequence[TaskSpec], document_root: Path) -> list[Path]:
    relatives = [PurePosixPath(_relative_path(s.data["image"])) for s in specs]
    if not relatives:
        return []
    at_root = [str(r) for r in relatives if len(r.parts) < 2]
    if at_root:
        raise InputError(
            f"images {at_root[:_SHOWN_ROWS]} lie directly in the document root {document_root}; Label Studio serves "
            "only files in its sub-folders - set labelstudio.document_root to a parent folder"
        )
    common = Path(os.path.commonpath([str(r.parent) for r in relatives]))
    if str(common) not in ("", "."):
        return [document_root / common]
    return sorted({document_root / r.parts[0] for r in relatives})


def _relative_path(url: str) -> str:
    from urllib.parse import unquote

    return unquote(url.split("?d=", 1)[1])


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON the way the SDK's HTTP client sends it (compact separators, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def request_batches(
    items: Sequence[T],
    *,
    max_items: int,
    max_bytes: int,
    size: Callable[[T], int],
    name: Callable[[T], str],
) -> list[list[T]]:
    """``items`` cut, in order, into batches of at most ``max_items`` whose JSON array body (``[a,b,...]``:
    brackets, items and commas) is at most ``max_bytes``: a batch ends when the next item would pass either cap.

    Args:
        items: What one import request carries a list of (task specs, prediction dicts).
        max_items: ``labelstudio.batch_size``.
        max_bytes: ``labelstudio.max_request_mb`` in bytes.
        size: An item's JSON size in bytes (:func:`json_size` of its request form).
        name: An item's name for the error message ("image 0a1b...").

    Raises:
        InputError: one item alone makes a request over ``max_bytes``.
    """
    batches: list[list[T]] = []
    batch: list[T] = []
    used = 2  # "[" and "]"
    for item in items:
        n = size(item)
        if n + 2 > max_bytes:
            raise InputError(
                f"{name(item)} is {n:,} bytes of JSON, more than one import request may carry "
                f"(labelstudio.max_request_mb = {max_bytes / MB:g}); raise labelstudio.max_request_mb (at most 200) "
                "or shorten that image's descriptions and predictions"
            )
        if batch and (len(batch) >= max_items or used + 1 + n > max_bytes):
            batches.append(batch)
            batch, used = [], 2
        used += n + (1 if batch else 0)
        batch.append(item)
    if batch:
        batches.append(batch)
    return batches


def assign_parts(new: int, counts: Mapping[int, int], capacity: int) -> list[tuple[int, int]]:
    """Where ``new`` tasks go: ``(part, how many)`` in import order. Existing parts (``counts``: part -> tasks
    now) are filled in part order up to ``capacity`` tasks each, then new parts numbered from one above the
    highest existing part (1 when there is none) take ``capacity`` each."""
    plan = []
    left = new
    for part in sorted(counts):
        take = min(max(capacity - counts[part], 0), left)
        if take:
            plan.append((part, take))
            left -= take
    part = max(counts, default=0)
    while left > 0:
        part += 1
        take = min(capacity, left)
        plan.append((part, take))
        left -= take
    return plan


def task_request(spec: TaskSpec) -> dict[str, Any]:
    """One task as Label Studio's import takes it."""
    return {"data": spec.data, "predictions": list(spec.predictions)}


def task_batches(specs: Sequence[TaskSpec], settings: LabelStudioParams) -> list[list[TaskSpec]]:
    """Task import requests (:func:`request_batches` with the ``labelstudio`` caps)."""
    return request_batches(
        specs,
        max_items=settings.batch_size,
        max_bytes=round(settings.max_request_mb * MB),
        size=lambda s: json_size(task_request(s)),
        name=lambda s: f"the task of image {s.image_id}",
    )


def prediction_batches(predictions: Sequence[dict], settings: LabelStudioParams) -> list[list[dict]]:
    """Prediction import requests (:func:`request_batches` with the ``labelstudio`` caps)."""
    return request_batches(
        predictions,
        max_items=settings.batch_size,
        max_bytes=round(settings.max_request_mb * MB),
        size=json_size,
        name=lambda p: f"the prediction {p['model_version']!r} for task {p['task']}",
    )
