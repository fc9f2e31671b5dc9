"""Params of the dataset stages: ``split``, ``augment``, ``export`` and ``release`` (sections of ``params.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.base import FieldProblem, StrictModel

SPLITS = ("train", "val", "test")
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]


class SplitParams(StrictModel):
    """Stratified, grouped, stable split of the manifest into train / val / test."""

    train: Ratio = 0.7
    val: Ratio = 0.2
    test: Ratio = 0.1
    seed: int = Field(0, description="Salt of the content hash that orders groups; changing it reshuffles.")
    group_by: list[str] = Field(
        default_factory=lambda: ["dup_group"],
        description="Manifest columns whose equal values must stay in one split (dup_group always applies).",
    )
    unlabeled: Literal["split", "drop"] = Field(
        "split",
        description="split: unlabeled images get a split as their own stratum (it then stays fixed when they are "
        "labelled later); drop: leave them out and count them.",
    )
    previous: Path | None = Field(
        Path("releases/splits.parquet"),
        description="splits.parquet of the last release; its assignments are pinned when the file exists.",
    )
    max_group_share: Ratio = Field(
        0.05,
        description="Warn when one group (near-duplicates or a split.group_by value) is more than this share of the "
        "split it lands in: its images then weigh that split's metrics as one sample.",
    )

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise FieldProblem(f"train + val + test must sum to 1, they sum to {total:g}", "train", "val", "test")
        if self.train == 0:
            raise FieldProblem("split.train must be above 0", "train")
        return self

    @property
    def ratios(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


class TransformSpec(StrictModel):
    """One albumentations transform: its class name and keyword arguments, exactly as albumentations takes them."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    args: dict[str, Any] = Field(default_factory=dict)


def _default_recipe() -> list[TransformSpec]:
    # Defect inspection: orientation carries no meaning on a sheet surface (flips, 90-degree turns), small
    # affine jitter for part placement, lighting and sensor noise, slight defocus. No hue or colour shifts:
    # they would turn a clean surface into a "discoloration".
    return [
        TransformSpec(name="HorizontalFlip", args={"p": 0.5}),
        TransformSpec(name="VerticalFlip", args={"p": 0.5}),
        TransformSpec(name="RandomRotate90", args={"p": 0.5}),
        TransformSpec(
            name="Affine",
            args={"scale": [0.9, 1.1], "translate_percent": [-0.05, 0.05], "rotate": [-10, 10], "p": 0.5},
        ),
        TransformSpec(name="RandomBrightnessContrast", args={"brightness_limit": 0.15, "contrast_limit": 0.15}),
        TransformSpec(name="GaussNoise", args={"std_range": [0.01, 0.05], "p": 0.3}),
        TransformSpec(name="GaussianBlur", args={"blur_limit": [3, 5], "p": 0.2}),
    ]


class AugmentParams(StrictModel):
    """Albumentations recipe applied to the train split only."""

    variants: Annotated[int, Field(ge=0)] = 2
    seed: int = 0
    recipe: list[TransformSpec] = Field(default_factory=_default_recipe)
    min_visibility: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.3, description="A box keeping less than this share of its area is dropped (and counted)."
    )
    min_area: Annotated[float, Field(ge=0.0)] = Field(16.0, description="Boxes smaller than this (pixels) are dropped.")
    image_format: Literal["png", "jpg"] = Field("png", description="png is lossless; jpg saves space.")
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 95
    workers: Annotated[int, Field(ge=0)] = Field(0, description="Processes; 0 = one per CPU core.")
    preview_images: Annotated[int, Field(ge=0)] = Field(4, description="Source images in preview.png (rows).")


class ExportParams(StrictModel):
    """COCO JSON + CSV per split; images exported byte for byte, never recompressed."""

    link: Literal["copy", "hardlink", "symlink"] = Field(
        "copy", description="copy the original bytes, or hardlink / symlink them (symlinks point at the raw files)."
    )
    include_augmented: bool = True
    include_unlabeled: bool = Field(False, description="Export images without a label (no COCO annotation).")


class ReleaseParams(StrictModel):
    """``curation release NAME``: commit, tag, push data, write the dataset card."""

    remote: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        "local", description="DVC remote to push to; added as a folder remote when the repo has no default remote."
    )
    remote_url: Path = Field(
        Path("../dvc-remote"), description="Folder for that remote, relative to the project root (made absolute)."
    )
    card: Path = Path("DATASET.md")
    stages: list[str] = Field(
        default_factory=lambda: ["split", "augment", "export"],
        description="Stages that must be up to date (dvc status) before a release.",
    )
    split_dir: Path = Path("data/split")
    export_dir: Path = Path("data/export")
    augment_dir: Path = Path("data/augment")
    agreement_dir: Path = Path("data/agreement")
    prelabel_dir: Path = Path("data/prelabel")
    known_limits: list[str] = Field(default_factory=list, description="Extra lines for the card's Known limits.")
