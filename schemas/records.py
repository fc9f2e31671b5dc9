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
    source_label: str = Field(description="The label as written in the source (folder, VOC, COCO, YOLO).")
    label: str | None = Field(description="Ontology class via ingest.label_map or an exact name match; else null.")
    source_format: Literal["folders", "voc", "coco", "yolo"]
    source_file: str = Field(description="File the label came from (the image itself for folders).")
    x: float | None = Field(None, description="Box left, pixels of the stored image.")
    y: float | None = None
    w: float | None = None
    h: float | None = None


def columns(model: type[StrictModel]) -> list[str]:
    return list(model.model_fields)
