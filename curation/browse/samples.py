"""Turn the joined input rows into FiftyOne samples: originals carrying every stage's fields, augmented variants,
and their regions; :mod:`curation.browse.build` lists the fields."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curation.browse.errors import BrowseInputError
from curation.browse.inputs import BrowseInputs
from schemas.records import boxes_from_json

if TYPE_CHECKING:
    from curation.browse.build import BuildSummary

# Manifest columns that go into ``metadata`` or ``filepath`` rather than fields of their own.
_MANIFEST_CONSUMED = {"path", "width", "height", "size_bytes"}
_JOINED_PREFIXES = ("pred__", "cons__", "split__", "emb__", "ann__")
_RESERVED = {"id", "filepath", "tags", "metadata", "media_type", "created_at", "last_modified_at"}
_PREDICTION_ATTRIBUTES = ("margin", "entropy", "source", "model_name", "model_version", "top_hard_negative")
_PREDICTION_FIELDS = ("caption", "caption_score", "caption_flag", "description_en", "description_ko")
AUGMENTATION_FIELD = "augmentation"
_ANNOTATION_ATTRIBUTES = ("severity", "description", "lead_time", "task_id", "annotation_id", "created_at")
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff", "WEBP": "image/webp"}
PRELABEL_FIELD = "prelabel"
GT_FIELD = "ground_truth"


def image_table(inputs: BrowseInputs, summary: BuildSummary) -> pd.DataFrame:
    """One row per manifest image with every one-row-per-image input joined on, prefixed by source."""
    table = inputs.manifest.copy()
    known = set(table["image_id"])
    for name, prefix in (("predictions", "pred__"), ("consensus", "cons__"), ("splits", "split__")):
        frame = getattr(inputs, name)
        if frame is None:
            continue
        _report_unknown(frame["image_id"], known, inputs.sources.get(name, name), summary)
        table = table.merge(frame.add_prefix(prefix), left_on="image_id", right_on=f"{prefix}image_id", how="left")
    if inputs.embeddings is not None:
        _report_unknown(inputs.embeddings["image_id"], known, inputs.sources.get("embeddings", ""), summary)
        by_id = dict(zip(inputs.embeddings["image_id"], inputs.embeddings["embedding"], strict=True))
        table["emb__embedding"] = table["image_id"].map(by_id)
    if inputs.annotations is not None:
        _report_unknown(inputs.annotations["image_id"], known, inputs.sources.get("annotations", ""), summary)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in inputs.annotations.to_dict("records"):  # one pass: a groupby per image costs ~1 ms each
            groups[record["image_id"]].append(record)
        table["ann__rows"] = table["image_id"].map(groups)
    if "split__split" in table.columns and "dup_group" in table.columns:
        n_splits = table.groupby("dup_group")["split__split"].transform(lambda s: s.dropna().nunique())
        table["dup_cross_split"] = n_splits > 1
    if "dup_group" in table.columns and "dup_group_size" not in table.columns:
        table["dup_group_size"] = table.groupby("dup_group")["image_id"].transform("size")
    return table


def augmented_table(inputs: BrowseInputs, table: pd.DataFrame, summary: BuildSummary) -> pd.DataFrame | None:
    if inputs.augmented is None:
        return None
    frame = inputs.augmented.copy()
    source = inputs.sources.get("augmented", "augmented")
    clash = set(frame["image_id"]) & set(table["image_id"])
    if clash:
        raise BrowseInputError(
            f"{source}: image_id {sorted(clash)[0]!r} is also an image of the manifest; "
            "augmented variants need ids of their own"
        )
    known = set(table["image_id"])
    orphans = frame[~frame["source_image_id"].isin(known)]
    if len(orphans):
        summary.issues.append(
            f"{source}: {len(orphans)} variant(s) whose source_image_id is not in the manifest "
            f"(first: {orphans['source_image_id'].iloc[0]!r}); added without a source label"
        )
    counts = frame["source_image_id"].value_counts()
    table["n_augmented"] = table["image_id"].map(counts).fillna(0).astype(int)
    lookup = table.set_index("image_id")
    for column in ("cons__label", "split__split"):
        if column in lookup.columns:
            frame[f"src__{column}"] = frame["source_image_id"].map(lookup[column])
    return frame


def logit_classes(predictions: pd.DataFrame | None, class_names: Sequence[str], summary: BuildSummary) -> list[str]:
    if predictions is None:
        return []
    present = [c for c in class_names if f"p_{c}" in predictions.columns]
    extra = sorted(c[2:] for c in predictions.columns if c.startswith("p_") and c[2:] not in class_names)
    if extra:
        summary.issues.append(f"predictions: p_ columns for classes not in the ontology ignored: {extra}")
    if present and len(present) < len(class_names):
        summary.issues.append(
            f"predictions: no p_ column for {sorted(set(class_names) - set(present))}; logits cover {present} only"
        )
    return present


def _report_unknown(ids: pd.Series, known: set[str], source: str, summary: BuildSummary) -> None:
    unknown = sorted(set(ids) - known)
    if unknown:
        summary.issues.append(
            f"{source}: {len(unknown)} image_id(s) not in the manifest, not shown (first: {unknown[0]!r}); "
            "was the manifest re-ingested after this stage ran?"
        )


def batches(frame: pd.DataFrame, size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start : start + size].to_dict("records")


def _value(value: Any) -> Any:
    """A parquet cell as a plain Python value FiftyOne can store (NaN/NA -> None, numpy scalars -> Python)."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return [_value(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, float | np.floating) and np.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _field_name(column: str) -> str:
    return f"manifest_{column}" if column in _RESERVED else column


def image_sample(row: dict[str, Any], base_dir: Path, logit_classes: Sequence[str]) -> Any:
    import fiftyone as fo

    fields: dict[str, Any] = {"is_augmented": False}
    for column, value in row.items():
        if column.startswith(_JOINED_PREFIXES) or column in _MANIFEST_CONSUMED:
            continue
        fields[_field_name(column)] = _value(value)
    sample = fo.Sample(filepath=str(_resolve(row["path"], base_dir)), metadata=_metadata(row), **fields)
    if isinstance(row.get("pred__label"), str):
        sample[PRELABEL_FIELD] = _prelabel(row, logit_classes)
        for column in _PREDICTION_FIELDS:
            if f"pred__{column}" in row:
                sample[column] = _value(row[f"pred__{column}"])
    if isinstance(row.get("cons__image_id"), str):
        label = _value(row["cons__label"])
        if label is not None:
            sample[GT_FIELD] = fo.Classification(label=label)
        sample["agreement"] = _value(row["cons__agreement"])
        sample["disputed"] = bool(row["cons__disputed"])
        for column, target in (
            ("n_annotators", "n_annotators"),
            ("severity", "severity"),
            ("method", "consensus_method"),
            ("description", "description_reviewed"),
        ):
            if f"cons__{column}" in row:
                sample[target] = _value(row[f"cons__{column}"])
    split = _value(row.get("split__split"))
    if split is not None:
        sample["split"] = str(split)
        sample.tags.append(str(split))
    _add_regions(sample, GT_FIELD, _value(row.get("split__boxes")), row, source="splits")
    embedding = row.get("emb__embedding")
    if embedding is not None and not (isinstance(embedding, float) and np.isnan(embedding)):
        sample["embedding"] = np.asarray(embedding, dtype=np.float32)
    annotations = row.get("ann__rows")
    if isinstance(annotations, list):
        sample["annotations"] = fo.Classifications(classifications=[_annotation(a) for a in annotations])
        boxes, polygons = _boxes(annotations, row)
        if boxes:
            sample["annotation_boxes"] = fo.Detections(detections=boxes)
        if polygons:
            sample["annotation_polygons"] = fo.Polylines(polylines=polygons)
    return sample


def augmented_sample(row: dict[str, Any], base_dir: Path) -> Any:
    import fiftyone as fo

    known = {"image_id", "source_image_id", "path", "width", "height", "size_bytes"}
    record = {c: _value(v) for c, v in row.items() if c not in known and not c.startswith("src__")}
    metadata = _metadata(row) if {"width", "height"} <= set(row) else None
    sample = fo.Sample(
        filepath=str(_resolve(row["path"], base_dir)),
        metadata=metadata,
        tags=["augmented"],
        image_id=row["image_id"],
        source_image_id=row["source_image_id"],
        is_augmented=True,
    )
    if record:
        sample[AUGMENTATION_FIELD] = fo.DynamicEmbeddedDocument(**record)
    label = _value(row.get("label")) or _value(row.get("src__cons__label"))
    if label is not None:
        sample[GT_FIELD] = fo.Classification(label=str(label))
    split = _value(row.get("src__split__split"))
    if split is not None:
        sample["split"] = str(split)
    _add_regions(sample, GT_FIELD, _value(row.get("boxes")), row, source="augmented")
    return sample


def _resolve(path: str, base_dir: Path) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else base_dir / candidate


def _metadata(row: dict[str, Any]) -> Any:
    import fiftyone as fo

    width, height = _value(row.get("width")), _value(row.get("height"))
    if width is None or height is None:
        return None
    return fo.ImageMetadata(
        width=int(width),
        height=int(height),
        size_bytes=_value(row.get("size_bytes")),
        mime_type=_MIME.get(str(row.get("format", "")).upper()),
    )


def _prelabel(row: dict[str, Any], logit_classes: Sequence[str]) -> Any:
    import fiftyone as fo

    attributes = {a: _value(row[f"pred__{a}"]) for a in _PREDICTION_ATTRIBUTES if f"pred__{a}" in row}
    logits = None
    if logit_classes:
        probabilities = np.array([float(row[f"pred__p_{c}"]) for c in logit_classes], dtype=np.float64)
        # log-probabilities are logits whose softmax gives back the stage's probabilities
        logits = np.log(np.clip(probabilities, 1e-12, 1.0))
    return fo.Classification(
        label=row["pred__label"], confidence=float(row["pred__score"]), logits=logits, **attributes
    )


def _annotation(record: dict[str, Any]) -> Any:
    import fiftyone as fo

    attributes = {a: _value(record.get(a)) for a in _ANNOTATION_ATTRIBUTES if a in record}
    return fo.Classification(label=str(record["label"]), annotator=str(record["annotator"]), **attributes)


def _boxes(annotations: list[dict[str, Any]], row: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Annotators' boxes (JSON, pixels) as FiftyOne detections (relative coordinates), and their polygons as
    polylines, tagged by annotator."""
    detections, polylines = [], []
    for record in annotations:
        raw = _value(record.get("boxes"))
        if not raw:
            continue
        where = f"annotations: boxes of image {row['image_id']!r} by {record['annotator']!r}"
        found = _regions(raw, row, where, default_label=record["label"], annotator=str(record["annotator"]))
        detections += found[0]
        polylines += found[1]
    return detections, polylines


def _add_regions(sample: Any, prefix: str, raw: str | None, row: dict[str, Any], *, source: str) -> None:
    """``<prefix>_boxes`` (Detections) and ``<prefix>_polygons`` (Polylines) from a boxes JSON cell, when present."""
    import fiftyone as fo

    if not raw:
        return
    detections, polylines = _regions(raw, row, f"{source}: boxes of image {row['image_id']!r}")
    if detections:
        sample[f"{prefix}_boxes"] = fo.Detections(detections=detections)
    if polylines:
        sample[f"{prefix}_polygons"] = fo.Polylines(polylines=polylines)


def _regions(
    raw: str, row: dict[str, Any], where: str, *, default_label: str | None = None, **attributes: Any
) -> tuple[list[Any], list[Any]]:
    """A boxes JSON cell (``{x, y, w, h, label}`` in pixels, optionally ``segmentation``: flat pixel polygons) as
    detections and, for regions with a shape, one closed filled polyline each (the App draws it as a polygon)."""
    import fiftyone as fo

    width, height = _value(row.get("width")), _value(row.get("height"))
    detections, polylines = [], []
    try:
        boxes = boxes_from_json(raw)
        if not width or not height:
            raise ValueError("no width/height for this image")
        for box in boxes:
            bounds = [box.x / width, box.y / height, box.w / width, box.h / height]
            label = str(box.label or default_label)
            detections.append(fo.Detection(label=label, bounding_box=bounds, **attributes))
            if box.segmentation:
                shapes = [
                    [(x / width, y / height) for x, y in zip(p[0::2], p[1::2], strict=True)] for p in box.segmentation
                ]
                polylines.append(fo.Polyline(label=label, points=shapes, closed=True, filled=True, **attributes))
    except (ValueError, TypeError, KeyError) as err:
        raise BrowseInputError(
            f"{where} cannot be read ({err}); expected a JSON list of {{x, y, w, h, label}} in pixels, with "
            "optional segmentation (a list of flat [x1, y1, x2, y2, ...] polygons)"
        ) from err
    return detections, polylines
