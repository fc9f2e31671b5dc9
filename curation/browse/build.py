"""Build one FiftyOne dataset per dataset version from the pipeline's outputs, in batches.

Each unique image of the manifest becomes a sample carrying every stage's output:

| field | from | content |
|---|---|---|
| ``filepath``, ``metadata`` | manifest | image path (absolute), width/height/size/MIME without re-reading the image |
| manifest columns, ``meta_*`` | manifest | ``image_id``, ``sha256``, ``dup_group``, ``dup_group_size``, metadata CSV |
| ``prelabel`` | predictions | ``Classification`` with ``confidence`` and ``logits`` (log of the ``p_<class>``
  columns, in ``dataset.info["logit_classes"]`` order) and attributes margin, entropy, source, model_name,
  model_version |
| ``caption``, ``description_en``, ``description_ko``, ``caption_score``, ``caption_flag`` | predictions | text |
| ``embedding`` | embeddings | the pre-labeler's image embedding |
| ``annotations`` | annotations | ``Classifications``, one per annotator (attribute ``annotator``, ``severity`` ...) |
| ``annotation_boxes`` | annotations | ``Detections`` from the annotators' boxes, if any |
| ``annotation_polygons`` | annotations | ``Polylines`` (closed, filled) from the annotators' polygons, if any |
| ``ground_truth``, ``agreement``, ``n_annotators``, ``disputed``, ``severity``, ``consensus_method``,
  ``description_reviewed`` | consensus |
| tags, ``split`` | splits | the split name, as a tag and a field |
| ``ground_truth_boxes``, ``ground_truth_polygons`` | splits, augmented | the exported regions: ``Detections`` and,
  for regions with a shape (mask or polygon labels), ``Polylines`` (closed, filled), moved with each variant |
| ``dup_cross_split`` | manifest + splits | the near-duplicate group spans more than one split (a leak) |
| ``is_augmented``, ``source_image_id``, ``n_augmented`` | augmented | variants are samples tagged ``augmented``
  pointing at their source |
| ``augmentation`` | augmented | on variants only: one embedded document with the augment record's other columns
  (seed, recipe hash, applied transforms, ...); originals leave it empty instead of carrying a dozen empty fields |
| ``mistakenness``, ``uniqueness``, ``eval_prelabel`` | computed | see :func:`build_dataset` |
| ``anomaly``, ``anomaly_score``, ``anomaly_regions`` ... | predictions | heatmap, score, regions: see
  :mod:`curation.browse.anomaly` |
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.browse.errors import BrowseInputError
from curation.tables import read_table
from schemas.base import StrictModel
from schemas.params_browse import BrowseParams
from schemas.records import (
    Annotation,
    AugmentedRecord,
    Consensus,
    Embedding,
    ImageRecord,
    Prediction,
    SplitRow,
    boxes_from_json,
)

INPUT_NAMES = ("manifest", "predictions", "embeddings", "annotations", "consensus", "splits", "augmented")
REQUIRED_COLUMNS = {
    "manifest": ("image_id", "path"),
    "predictions": ("image_id", "label", "score"),
    "embeddings": ("image_id", "embedding"),
    "annotations": ("image_id", "annotator", "label"),
    "consensus": ("image_id", "label", "agreement", "disputed"),
    "splits": ("image_id", "split"),
    "augmented": ("image_id", "source_image_id", "path"),
}
RECORDS: dict[str, type[StrictModel]] = {
    "manifest": ImageRecord,
    "predictions": Prediction,
    "embeddings": Embedding,
    "annotations": Annotation,
    "consensus": Consensus,
    "splits": SplitRow,
    "augmented": AugmentedRecord,
}
ONE_ROW_PER_IMAGE = ("manifest", "predictions", "embeddings", "consensus", "splits", "augmented")
# Manifest columns that go into ``metadata`` or ``filepath`` rather than fields of their own.
_MANIFEST_CONSUMED = {"path", "width", "height", "size_bytes"}
_JOINED_PREFIXES = ("pred__", "cons__", "split__", "emb__", "ann__")
_RESERVED = {"id", "filepath", "tags", "metadata", "media_type", "created_at", "last_modified_at"}
_PREDICTION_ATTRIBUTES = ("margin", "entropy", "source", "model_name", "model_version", "top_hard_negative")
_PREDICTION_FIELDS = ("caption", "caption_score", "caption_flag", "description_en", "description_ko")
AUGMENTATION_FIELD = "augmentation"
# the App's sidebar opens with what a reviewer judges, before the ~40 metadata fields
REVIEW_FIELDS = (
    "ground_truth",
    "ground_truth_boxes",
    "ground_truth_polygons",
    "prelabel",
    "agreement",
    "disputed",
    "severity",
    "description_reviewed",
    "mistakenness",
    "annotations",
    "annotation_boxes",
    "annotation_polygons",
    "split",
    "description_en",
    "description_ko",
    "caption",
)
_ANNOTATION_ATTRIBUTES = ("severity", "description", "lead_time", "task_id", "annotation_id", "created_at")
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff", "WEBP": "image/webp"}
PRELABEL_FIELD = "prelabel"
GT_FIELD = "ground_truth"
EVAL_KEY = "eval_prelabel"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class BrowseInputs:
    """The pipeline outputs a dataset is built from; None where a stage's output is absent."""

    manifest: pd.DataFrame
    predictions: pd.DataFrame | None = None
    embeddings: pd.DataFrame | None = None
    annotations: pd.DataFrame | None = None
    consensus: pd.DataFrame | None = None
    splits: pd.DataFrame | None = None
    augmented: pd.DataFrame | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # input name -> file, for messages


@dataclass
class BuildSummary:
    """What was built: written as ``fiftyone.json`` (DVC metrics) by the CLI."""

    dataset: str
    version: str
    n_samples: int = 0
    n_images: int = 0
    n_augmented: int = 0
    inputs_used: list[str] = field(default_factory=list)
    inputs_skipped: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)
    views: dict[str, int] = field(default_factory=dict)
    brain_runs: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    text_model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "n_samples": self.n_samples,
            "n_images": self.n_images,
            "n_augmented": self.n_augmented,
            "inputs_used": self.inputs_used,
            "inputs_skipped": self.inputs_skipped,
            "issues": self.issues,
            "views": self.views,
            "brain_runs": self.brain_runs,
            "evaluation": self.evaluation,
            "text_model": self.text_model,
        }


def read_inputs(paths: Mapping[str, Path | None], *, on_skip: Callable[[str], None] | None = None) -> BrowseInputs:
    """Read the pipeline outputs named in ``paths`` (keys from :data:`INPUT_NAMES`); only the manifest must exist.

    Raises:
        BrowseInputError: the manifest is missing, or a file is not Parquet, lacks a required column or repeats an
            image_id where one row per image is expected. The message names the file, the row and the fix.
    """
    unknown = set(paths) - set(INPUT_NAMES)
    if unknown:
        raise BrowseInputError(f"unknown inputs {sorted(unknown)}; expected some of {list(INPUT_NAMES)}")
    frames: dict[str, pd.DataFrame | None] = {}
    sources: dict[str, str] = {}
    for name in INPUT_NAMES:
        path = paths.get(name)
        if path is None or not Path(path).is_file():
            if name == "manifest":
                raise BrowseInputError(
                    f"{path}: manifest not found; run the ingest stage first (`dvc repro ingest`) or pass --manifest"
                )
            if on_skip:
                on_skip(f"{name}: {path} not found, skipped" if path else f"{name}: not given, skipped")
            frames[name] = None
            continue
        frames[name] = read_table(
            Path(path),
            RECORDS[name],
            columns=[c for c in REQUIRED_COLUMNS[name] if c in RECORDS[name].model_fields],  # augmented: path below
            optional="all",
            fix="re-run the stage that writes it or fix the file",
            error=BrowseInputError,
        )
        augmented = frames[name]
        if name == "augmented" and "path" not in augmented.columns and "file" in augmented.columns:
            # the augment stage records each variant's file relative to its own output folder
            frames[name] = augmented.assign(path=[str(Path(path).parent / f) for f in augmented["file"]])
        sources[name] = str(path)
    inputs = BrowseInputs(**frames, sources=sources)  # type: ignore[arg-type]
    check_inputs(inputs)
    return inputs


def check_inputs(inputs: BrowseInputs) -> None:
    """Required columns present, image_ids unique where one row per image is expected, embeddings one length."""
    for name in INPUT_NAMES:
        frame = getattr(inputs, name)
        if frame is None:
            continue
        source = inputs.sources.get(name, name)
        missing = [c for c in REQUIRED_COLUMNS[name] if c not in frame.columns]
        if missing:
            raise BrowseInputError(
                f"{source}: missing column(s) {missing} (has {list(frame.columns)}); "
                f"re-run the stage that writes it or fix the file"
            )
        if name in ONE_ROW_PER_IMAGE:
            repeated = frame["image_id"][frame["image_id"].duplicated()]
            if len(repeated):
                row = int(repeated.index[0])
                raise BrowseInputError(
                    f"{source}: image_id {repeated.iloc[0]!r} appears more than once (row {row}); "
                    "keep one row per image"
                )
        nulls = frame["image_id"].isna()
        if nulls.any():
            raise BrowseInputError(f"{source}: row {int(nulls.idxmax())} has no image_id; every row needs one")
    if inputs.embeddings is not None:
        lengths = inputs.embeddings["embedding"].map(lambda v: -1 if v is None else len(v))
        if len(lengths) and lengths.nunique() > 1:
            expected = int(lengths.mode().iloc[0])
            row = int((lengths != expected).idxmax())
            raise BrowseInputError(
                f"{inputs.sources.get('embeddings', 'embeddings')}: row {row} (image_id "
                f"{inputs.embeddings['image_id'].iloc[row]!r}) has an embedding of length {lengths.iloc[row]}, "
                f"others have {expected}; re-run the prelabel stage"
            )


def dataset_version(paths: Mapping[str, Path | None]) -> str:
    """Content version of the inputs: the first 8 hex digits of a SHA-256 over the present files' names and bytes."""
    digest = hashlib.sha256()
    for name in INPUT_NAMES:
        path = paths.get(name)
        if path is None or not Path(path).is_file():
            continue
        digest.update(name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:8]


def dataset_name(prefix: str, version: str) -> str:
    return f"{prefix}-{version}"


def build_dataset(
    inputs: BrowseInputs,
    *,
    name: str,
    version: str,
    class_names: Sequence[str],
    settings: BrowseParams,
    base_dir: Path,
    on_start: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> BuildSummary:
    """Build (or rebuild) the persistent FiftyOne dataset ``name`` from ``inputs``.

    After the samples are added in batches of ``settings.batch_size``: a similarity index over the embeddings
    (fiftyone-brain, sklearn backend, cosine), uniqueness, mistakenness of the consensus labels given the
    pre-labels, ``evaluate_classifications`` of the pre-labels against the consensus (key ``eval_prelabel``), and
    the saved views of :mod:`curation.browse.views`. Brain runs and the evaluation cover the original images, not
    augmented variants. FiftyOne must already point at a database (:func:`curation.browse.database.use`).

    Args:
        inputs: The pipeline outputs; see :func:`read_inputs`.
        name: Dataset name; an existing dataset of that name is replaced.
        version: Recorded in ``dataset.info["version"]``.
        class_names: Ontology classes, in order: the order of the pre-label logits and the evaluation classes.
        settings: The ``browse`` params.
        base_dir: Folder that relative image paths are resolved against (the project root).
        on_start: Called once with the number of samples to add.
        on_progress: Called with the number of samples added since the last call.
    """
    import fiftyone as fo

    from curation.browse import views as browse_views
    from curation.browse.anomaly import add_anomaly_fields

    summary = BuildSummary(dataset=name, version=version)
    summary.inputs_used = [n for n in INPUT_NAMES if getattr(inputs, n) is not None]
    summary.inputs_skipped = [n for n in INPUT_NAMES if getattr(inputs, n) is None]
    table = _image_table(inputs, summary)
    logit_classes = _logit_classes(inputs.predictions, class_names, summary)
    augmented = _augmented_table(inputs, table, summary)

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    dataset.info = {
        "version": version,
        "logit_classes": logit_classes,
        "classes": list(class_names),
        "inputs": dict(inputs.sources),
    }
    dataset.default_classes = list(class_names)
    dataset.save()

    total = len(table) + (0 if augmented is None else len(augmented))
    if on_start:
        on_start(total)
    base_dir = Path(base_dir).resolve()
    for batch in _batches(table, settings.batch_size):
        dataset.add_samples([_image_sample(row, base_dir, logit_classes) for row in batch], progress=False)
        if on_progress:
            on_progress(len(batch))
    if augmented is not None:
        for batch in _batches(augmented, settings.batch_size):
            dataset.add_samples([_augmented_sample(row, base_dir) for row in batch], progress=False)
            if on_progress:
                on_progress(len(batch))
        missing_metadata = dataset.exists("metadata", False)
        if len(missing_metadata):
            missing_metadata.compute_metadata(progress=False)

    originals = browse_views.originals(dataset)
    summary.n_images = len(table)
    summary.n_augmented = 0 if augmented is None else len(augmented)
    summary.n_samples = len(dataset)
    summary.brain_runs = _brain_runs(dataset, originals, settings, summary)
    summary.brain_runs += add_anomaly_fields(
        dataset, originals, inputs, summary, base_dir=base_dir, max_crops=settings.region_index_max_crops
    )
    summary.evaluation = _evaluate(originals, logit_classes or list(class_names), summary)
    if PRELABEL_FIELD in dataset.get_field_schema() and GT_FIELD in dataset.get_field_schema():
        add_mistakenness(originals)
    summary.views = browse_views.save_views(dataset, settings=settings)
    dataset.app_config.sidebar_groups = sidebar_groups(dataset)
    dataset.save()
    return summary


def sidebar_groups(dataset: Any) -> list[Any]:
    """The App's sidebar: a ``review`` group of the :data:`REVIEW_FIELDS` present first (after the tags, which the
    App keeps on top), the anomaly fields (:mod:`curation.browse.anomaly`), then FiftyOne's default groups without
    them; the augmentation fields in their own collapsed group at the end."""
    import fiftyone as fo

    from curation.browse.anomaly import SIDEBAR_FIELDS

    schema = dataset.get_field_schema()
    review = [f for f in REVIEW_FIELDS if f in schema]
    anomaly = [f for f in SIDEBAR_FIELDS if f in schema]
    augmentation = [f for f in ("source_image_id", "n_augmented", AUGMENTATION_FIELD) if f in schema]
    moved = set(review) | set(anomaly) | set(augmentation)
    groups = [fo.SidebarGroupDocument(name="review", paths=review, expanded=True)] if review else []
    if anomaly:
        groups.append(fo.SidebarGroupDocument(name="anomaly", paths=anomaly, expanded=True))
    for group in fo.DatasetAppConfig.default_sidebar_groups(dataset):
        group.paths = [p for p in group.paths if p not in moved and p.split(".")[0] not in moved]
        groups.append(group)
    if augmentation:
        groups.append(fo.SidebarGroupDocument(name="augmentation", paths=augmentation, expanded=False))
    return groups


def _image_table(inputs: BrowseInputs, summary: BuildSummary) -> pd.DataFrame:
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


def _augmented_table(inputs: BrowseInputs, table: pd.DataFrame, summary: BuildSummary) -> pd.DataFrame | None:
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


def _logit_classes(predictions: pd.DataFrame | None, class_names: Sequence[str], summary: BuildSummary) -> list[str]:
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


def _batches(frame: pd.DataFrame, size: int) -> Iterator[list[dict[str, Any]]]:
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


def _image_sample(row: dict[str, Any], base_dir: Path, logit_classes: Sequence[str]) -> Any:
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


def _augmented_sample(row: dict[str, Any], base_dir: Path) -> Any:
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


def _brain_runs(dataset: Any, originals: Any, settings: BrowseParams, summary: BuildSummary) -> list[str]:
    """Similarity index and uniqueness over the images that have an embedding."""
    import fiftyone.brain as fob

    if "embedding" not in dataset.get_field_schema():
        return []
    with_embedding = originals.exists("embedding")
    if len(with_embedding) < len(originals):
        summary.issues.append(
            f"embeddings: {len(originals) - len(with_embedding)} image(s) without an embedding are left out of "
            "the similarity index and uniqueness"
        )
    from curation.browse.search import similarity_model_args

    model_args = similarity_model_args(dataset, settings)
    summary.text_model = (model_args.get("model_kwargs") or {}).get("name_or_path")
    fob.compute_similarity(
        with_embedding,
        embeddings="embedding",
        brain_key=settings.similarity_key,
        backend="sklearn",
        metric="cosine",
        progress=False,
        **model_args,
    )
    runs = [settings.similarity_key]
    skip = uniqueness_skipped(len(with_embedding), settings)
    if skip:
        summary.issues.append(skip)
    elif settings.uniqueness:
        # not similarity_index=settings.similarity_key: the brain's sklearn helper centres the index's embedding
        # array in place while computing neighbours, which would skew later distances of the saved index
        fob.compute_uniqueness(with_embedding, embeddings="embedding", progress=False)
        runs.append("uniqueness")
    return runs


def uniqueness_skipped(n_images: int, settings: BrowseParams) -> str | None:
    """Why uniqueness is not computed for ``n_images`` (None when it is, or when it is switched off)."""
    if settings.uniqueness and n_images > settings.uniqueness_max_images:
        return (
            f"uniqueness skipped: {n_images:,} images > browse.uniqueness_max_images "
            f"({settings.uniqueness_max_images:,}); its cost grows with the square of the image count"
        )
    return None


def _evaluate(originals: Any, classes: list[str], summary: BuildSummary) -> dict[str, Any]:
    """``evaluate_classifications`` of the pre-labels against the consensus, so the App shows the confusion matrix."""
    schema = originals.get_field_schema()
    if PRELABEL_FIELD not in schema or GT_FIELD not in schema:
        return {}
    both = originals.exists(PRELABEL_FIELD).exists(GT_FIELD)
    if not len(both):
        summary.issues.append("evaluation: no image has both a pre-label and a consensus label")
        return {}
    results = both.evaluate_classifications(PRELABEL_FIELD, gt_field=GT_FIELD, eval_key=EVAL_KEY, classes=classes)
    metrics = {k: float(v) for k, v in results.metrics().items()}
    report = results.report()
    per_class = {
        c: {"precision": report[c]["precision"], "recall": report[c]["recall"], "support": int(report[c]["support"])}
        for c in classes
        if c in report
    }
    return {"key": EVAL_KEY, "n": len(both), **metrics, "per_class": per_class}


def add_mistakenness(samples: Any, *, field: str = "mistakenness") -> int:
    """Mistakenness of the consensus label given the pre-label's logits, as fiftyone-brain defines it.

    Same formula as ``fiftyone.brain.compute_mistakenness(samples, "prelabel", "ground_truth", use_logits=True)``
    (tested equal): ``(s * exp(-H(softmax(logits))) + 1) / 2`` with ``s = +1`` when the labels differ, ``-1`` when
    they agree (the confidence replaces ``exp(-H)`` without logits). Only images with both labels are scored: the
    brain would give images without a consensus a high score, which says nothing about a label. Written vectorised
    because the brain's version saves one sample at a time (measured ~180 samples/s here: ten minutes for 100,000
    images).

    Returns:
        The number of samples scored.
    """
    scored = samples.exists(PRELABEL_FIELD).exists(GT_FIELD)
    ids, predicted, truth, logits, confidence = scored.values(
        [
            "id",
            f"{PRELABEL_FIELD}.label",
            f"{GT_FIELD}.label",
            f"{PRELABEL_FIELD}.logits",
            f"{PRELABEL_FIELD}.confidence",
        ]
    )
    values = []
    for pred, gt, logit, conf in zip(predicted, truth, logits, confidence, strict=True):
        sign = -1.0 if pred == gt else 1.0
        if logit is not None:
            shifted = np.asarray(logit, dtype=np.float64) - np.max(logit)
            p = np.exp(shifted) / np.exp(shifted).sum()
            certainty = float(np.exp(-_entropy(p)))
        else:
            certainty = float(conf)
        values.append((sign * certainty + 1.0) / 2.0)
    if ids:
        scored.set_values(field, dict(zip(ids, values, strict=True)), key_field="id")
    return len(ids)


def _entropy(p: np.ndarray) -> float:
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())
