"""Records the stages exchange. Each is one row of a Parquet/CSV output; ``columns()`` gives the column order.

Every table a stage writes or reads back has a record here (``curation.tables.read_table`` checks a file against
it). A record's fields are its columns, in the order writers write them; fields with a default may be absent from
files written by earlier versions. ``EXTRA_PREFIX`` names the extra columns a table may carry (``meta_<name>``,
``p_<class>``) and ``RENAMED`` the columns earlier versions wrote under another name (read under the new one).
:class:`Box` is one labelled region, as every ``boxes`` JSON cell holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

from pydantic import Field

from schemas.base import StrictModel

QuarantineReason = Literal[
    "empty",  # zero bytes
    "truncated",  # the image data ends early
    "corrupt",  # the decoder rejected the data
    "not_an_image",  # no known image format, whatever the extension says
    "too_large",  # more than ingest.max_pixels pixels (decompression bomb guard)
    "unreadable",  # the OS could not read the file (permissions, broken symlink, I/O error)
    "symlink_loop",  # a symlink that leads back into a folder already being walked
]


META_PREFIX = "meta_"  # manifest columns joined from the metadata CSV


def column_name(column: str) -> str:
    """A metadata CSV header as a column name: trimmed, lower case, runs of spaces as one ``_``."""
    return "_".join(column.strip().lower().split())


def meta_column(column: str) -> str:
    """The manifest column holding the metadata CSV's ``column`` (``Pixel Pitch`` -> ``meta_pixel_pitch``)."""
    return META_PREFIX + column_name(column)


class ImageRecord(StrictModel):
    """One unique image (by content) in ``manifest.parquet``. Metadata CSV columns follow as ``meta_<name>``."""

    EXTRA_PREFIX: ClassVar[str | None] = "meta_"

    image_id: str = Field(description="First 16 hex digits of the SHA-256 of the file bytes.")
    sha256: str
    path: str = Field(description="Canonical copy: raw_dir as given joined with rel_path.")
    rel_path: str = Field(description="Canonical copy relative to raw_dir, POSIX separators.")
    all_paths: list[str] = Field(description="rel_path of every byte-identical copy, sorted.")
    n_copies: int
    size_bytes: int
    width: int
    height: int
    mode: str = Field(description="PIL mode as stored, e.g. RGB, L, I;16, CMYK, P.")
    format: str = Field(description="PIL format, e.g. JPEG, PNG.")
    exif_orientation: int = Field(description="EXIF orientation tag (1 = upright, also when absent).")
    phash: str = Field(description="64-bit perceptual hash (hex) of the upright image.")
    dup_group: str = Field(description="Near-duplicate group: the smallest image_id of the group.")
    dup_group_size: int


class QuarantineRecord(StrictModel):
    """A file that looked like an image by name but could not be ingested, with the reason (``quarantine.csv``)."""

    path: str
    rel_path: str
    reason: QuarantineReason
    detail: str
    size_bytes: int | None


class PriorLabel(StrictModel):
    """An existing label imported at ingest: one row per image-level label or box."""

    image_id: str
    rel_path: str
    source_label: str = Field(description="The label as written in the source (folder, VOC, COCO, YOLO, CSV, ...).")
    label: str | None = Field(description="Ontology class via ingest.label_map or an exact name match; else null.")
    source_format: Literal["folders", "voc", "coco", "yolo", "masks", "csv", "metadata"]
    source_file: str = Field(description="File the label came from (the image itself for folders).")
    x: float | None = Field(None, description="Box left, pixels of the stored image.")
    y: float | None = None
    w: float | None = None
    h: float | None = None
    polygons: str | None = Field(
        None,
        description="JSON list of the region's polygons, each a flat [x1, y1, x2, y2, ...] in pixels of the stored "
        "image (COCO segmentation format); null when the label has no shape.",
    )
    area: float | None = Field(
        None, description="Region area in pixels (mask pixels; polygon area for YOLO segmentation); null without shape."
    )


def columns(model: type[StrictModel]) -> list[str]:
    """The record's columns in the order writers write them."""
    return list(model.model_fields)


def required_columns(model: type[StrictModel]) -> list[str]:
    """The columns every file of this table has (fields without a default), in record order."""
    return [name for name, info in model.model_fields.items() if info.is_required()]


ANY_DEFECT = "defect"  # Prediction.label of an anomaly row called defective: "defect, type not chosen yet"


class Prediction(StrictModel):
    """One image's pre-label in ``predictions.parquet``. Per-class probabilities follow as ``p_<class>`` columns
    (ontology order, hard negatives already folded into their ``maps_to`` class), summing to 1."""

    EXTRA_PREFIX: ClassVar[str | None] = "p_"

    image_id: str
    label: str = Field(description="Top class after folding hard negatives.")
    score: float = Field(description="Probability of ``label``.")
    margin: float = Field(description="Top probability minus the second.")
    entropy: float = Field(description="Shannon entropy of the class probabilities, in nats.")
    top_hard_negative: str | None = Field(None, description="Hard negative that won before folding, if any.")
    source: Literal["zero_shot", "few_shot", "anomaly"] = Field(
        description="anomaly: no class scorer ran; the label is the OK class or ANY_DEFECT from the anomaly call."
    )
    model_name: str = Field(description="Checkpoint id or path of the scoring model.")
    model_version: str = Field(description="Model id + hash of prompts/params: changes when either changes.")
    caption: str | None = None
    caption_score: float | None = Field(None, description="CLIP similarity of caption and image.")
    caption_flag: bool = Field(False, description="True when caption_score is below the params threshold.")
    description_en: str | None = None
    description_ko: str | None = None
    anomaly_score: float | None = Field(
        None, description="Image anomaly score (map maximum) on the scale of its reference mode; null when off."
    )
    anomaly_defect: bool | None = Field(
        None, description="anomaly_score > the threshold in prelabel.json (anomaly.threshold)."
    )
    anomaly_reference: Literal["none", "ok_reviewed", "golden"] | None = Field(
        None, description="What the image was compared with: other images (none), reviewed OK images, a golden one."
    )
    anomaly_map: str | None = Field(
        None,
        description="8-bit PNG of the map, relative to the folder of predictions.parquet (anomaly_maps/<id>.png); "
        "value = round(255 * clip((s - zero) / (2 * (threshold - zero)), 0, 1)), zero in prelabel.json "
        "(anomaly.map_zero; 0 for ok_reviewed/golden), so 128 ~ the defect threshold.",
    )
    regions: str | None = Field(
        None,
        description="JSON list of suspect regions, best first (x, y, w, h, score, area, polygons, cell, clock, shape, "
        "orientation, size_px, size_mm, severity) in stored-image pixels; [] for images called OK.",
    )


class Annotation(StrictModel):
    """One human annotation in ``annotations.parquet`` (long form: one row per annotator and task)."""

    image_id: str
    task_id: int | None = None
    annotation_id: int | None = None
    annotator: str = Field(
        description="Annotator e-mail (or any stable annotator id). Agreement compares ids trimmed and "
        "case-insensitively, and writes them lowercased."
    )
    label: str
    severity: str | None = None
    description: str | None = None
    boxes: str | None = Field(None, description="JSON list of {x, y, w, h, label} in pixels, or null.")
    lead_time: float | None = Field(None, description="Seconds spent on the task.")
    created_at: str | None = None
    updated_at: str | None = None


class Consensus(StrictModel):
    """One image's agreed label in ``consensus.parquet``."""

    image_id: str
    label: str | None = Field(description="Consensus class; null when undecided (an unresolved tie).")
    severity: str | None = None
    agreement: float | None = Field(
        description="Share of annotators agreeing with ``label``; null (not measured) with fewer than two annotators."
    )
    n_annotators: int
    method: Literal["majority", "dawid_skene", "adjudicated", "single"]
    disputed: bool
    description: str | None = Field(
        None,
        description="The reviewers' description: the adjudicator's, else the latest written by an annotator who "
        "gave the consensus class; null when none wrote one.",
    )


Number = int | float  # kept as written (an int stays an int), so a parsed and re-written box has the same JSON


class Box(StrictModel):
    """One labelled region in pixels of the stored image, as a ``boxes`` JSON cell lists it.

    ``boxes`` cells (annotations, splits, augmented) hold a JSON list of these objects, keys sorted; a key that was
    not given is not written (:func:`boxes_to_json` writes exactly what :func:`boxes_from_json` read).
    """

    x: Number = Field(description="Left edge, pixels.")
    y: Number = Field(description="Top edge, pixels.")
    w: Number = Field(description="Width, pixels.")
    h: Number = Field(description="Height, pixels.")
    label: str | None = Field(description="Ontology class; null for a region drawn without a class.")
    segmentation: list[list[Number]] | None = Field(
        None, description="The region's polygons, each a flat [x1, y1, x2, y2, ...] in pixels (COCO)."
    )
    area: Number | None = Field(None, description="Pixel area of the shaped region (mask pixels).")

    def as_dict(self) -> dict[str, Any]:
        """The box as its JSON object: the keys it was made with, nothing added."""
        return self.model_dump(exclude_unset=True)


def boxes_from_json(text: str) -> list[Box]:
    """Parse a ``boxes`` cell (the one reader of that JSON).

    Raises:
        ValueError: not JSON, not a list, or an item that is not a box (the message says which).
    """
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError(f"expected a JSON list of boxes, got {type(items).__name__}")
    return [Box.model_validate(item) for item in items]


def boxes_to_json(boxes: Iterable[Box | dict[str, Any]]) -> str | None:
    """Write a ``boxes`` cell (the one writer of that JSON): keys sorted; null for no boxes."""
    items = [box.as_dict() if isinstance(box, Box) else Box.model_validate(box).as_dict() for box in boxes]
    return json.dumps(items, sort_keys=True) if items else None


class Embedding(StrictModel):
    """One image's embedding in ``embeddings.parquet``."""

    RENAMED: ClassVar[dict[str, str]] = {"model_name": "model_key"}  # name in earlier files -> name now

    image_id: str
    model_key: str = Field(
        description="The encoder as ``id@revision`` (its content-hash cache key). Files written before this name "
        "have it as ``model_name``, read the same."
    )
    embedding: list[float] = Field(description="The image embedding (float32), one length for every row.")


class SplitRow(StrictModel):
    """One image's split in ``splits.parquet`` (also the release's pinned ``releases/splits.parquet``)."""

    image_id: str
    split: Literal["train", "val", "test"]
    group: str = Field(description="Group kept in one split (near-duplicates and ``split.group_by``): smallest id.")
    label: str | None = Field(None, description="Consensus or prior class; null = unlabelled.")
    severity: str | None = None
    label_source: Literal["consensus", "prior", "none"] = "none"
    disputed: bool = False
    boxes: str | None = Field(None, description="JSON list of :class:`Box` (``boxes_to_json``), or null.")
    pinned: bool = Field(False, description="True when the image kept its split from ``split.previous``.")
    description: str | None = Field(None, description="The reviewers' description (consensus), else null.")


class AugmentedRecord(StrictModel):
    """One augmented variant in ``augmented.parquet`` (train images only)."""

    image_id: str = Field(description="``<source id>_a<variant>``.")
    source_image_id: str
    variant: int
    file: str = Field(description="Relative to the augment output folder, e.g. ``images/<id>_a0.png``.")
    sha256: str
    width: int
    height: int
    label: str | None = None
    severity: str | None = None
    split: str = "train"
    seed: int
    recipe_hash: str
    applied: str = Field(description="JSON list of [transform name, sampled parameters] actually applied.")
    boxes: str | None = Field(None, description="JSON list of :class:`Box` after the transform, or null.")
    boxes_in: int
    boxes_dropped: int


class Task(StrictModel):
    """One image's Label Studio task in ``tasks.parquet`` (push)."""

    image_id: str
    task_id: int
    project_id: int
    overlap: int = Field(description="How many annotators Label Studio asks for.")
    model_versions: str = Field(description="Comma-separated model versions of the task's predictions, sorted.")
    adjudicate: bool = Field(description="True for a disputed image sent to the adjudication project.")


class Dispute(StrictModel):
    """One open dispute in the agreement stage's ``disputes.csv`` (read back by push to flag adjudication)."""

    image_id: str
    task_id: int | None = Field(None, description="A Label Studio task of the image, when the annotations name one.")
    reason: Literal["tie", "low_agreement"] | None = None
    label: str | None = Field(None, description="The consensus class (null for an unresolved tie).")
    agreement: float | None = None
    n_annotators: int | None = None
    votes: str | None = Field(None, description="``class=count`` pairs, most votes first, ``; ``-separated.")
    ratings: str | None = Field(None, description="``annotator=class`` pairs, ``; ``-separated.")
    posterior: float | None = Field(None, description="Dawid-Skene posterior of ``label``, when that method ran.")


class ExportRow(StrictModel):
    """One exported image in ``<split>/labels.csv``; the manifest's ``meta_<name>`` columns follow."""

    EXTRA_PREFIX: ClassVar[str | None] = "meta_"
    RENAMED: ClassVar[dict[str, str]] = {  # name in earlier exports -> name now
        "description": "prediction_description",
        "description_ko": "prediction_description_ko",
    }

    path: str = Field(description="``<split>/data/<file>``, relative to the export folder.")
    image_id: str
    label: str | None = None
    severity: str | None = None
    prediction_description: str | None = Field(
        None, description="The pre-label's English description (``description_en`` of the predictions)."
    )
    prediction_description_ko: str | None = Field(None, description="The pre-label's Korean description.")
    description_reviewed: str | None = Field(None, description="The reviewers' description (consensus).")
    split: str
    source: str = Field(description="The original's rel_path (augmented variants: their source's).")
    augmented_from: str | None = None
    label_source: str | None = None
    disputed: bool = False
    n_boxes: int = 0
    width: int
    height: int
    sha256: str
    prelabel: str | None = Field(None, description="The pre-label's class.")
    prelabel_score: float | None = None
    model_version: str | None = None
