"""Records the stages exchange. Each is one row of a Parquet/CSV output; ``columns()`` gives the column order."""

from __future__ import annotations

from typing import Literal

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


class ImageRecord(StrictModel):
    """One unique image (by content) in ``manifest.parquet``. Metadata CSV columns follow as ``meta_<name>``."""

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
    """A file that looked like an image by name but could not be ingested, with the reason."""

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
    return list(model.model_fields)


class Prediction(StrictModel):
    """One image's pre-label in ``predictions.parquet``. Per-class probabilities follow as ``p_<class>`` columns
    (ontology order, hard negatives already folded into their ``maps_to`` class), summing to 1."""

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


ANY_DEFECT = "defect"
"""``Prediction.label`` of anomaly rows called defective: a defect whose type is not chosen yet (not a class)."""


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
