"""Knobs of the anomaly pre-labeler (``prelabel.anomaly``): defect-vs-OK scores, defect maps, regions and the
"where and how large" descriptions that work offline from day one (no CLIP, no labels).

See :mod:`curation.prelabel.anomaly` (scoring), :mod:`curation.prelabel.regions` (map -> regions -> sentences) and
docs/anomaly.md (what was measured, on which data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import StrictModel

Reference = Literal["auto", "none", "ok_reviewed", "golden"]


class RegionParams(StrictModel):
    """How an image's anomaly map becomes regions (boxes + polygons with scores). Only images called defective
    get regions."""

    percentile: Annotated[float, Field(gt=0, lt=100)] = Field(
        98.0, description="A map is cut at its own percentile (score scales differ between images)."
    )
    min_area_px: Annotated[int, Field(ge=1)] = Field(16, description="Smaller regions are left out.")
    max_regions: Annotated[int, Field(ge=1, le=50)] = Field(5, description="At most this many per image, best first.")


class AnomalyDescriptionParams(StrictModel):
    """Sentences a worker can act on, in English and Korean (Korean words from ``prelabel.description.glossary``
    and the built-in region glossary). Placeholders: see docs/anomaly.md."""

    region_en: str = "{shape} defect in the {cell} ({clock}), about {size}"
    region_ko: str = "{cell}({clock})에 {size} 크기의 {shape} 결함"
    summary_en: str = "{count} suspect region(s), anomaly score {score:.2f}: {regions}"
    summary_ko: str = "의심 영역 {count}곳, 이상 점수 {score:.2f}: {regions}"
    ok_en: str = "No anomaly found (score {score:.2f}, threshold {threshold:.2f})"
    ok_ko: str = "이상 없음 (점수 {score:.2f}, 기준 {threshold:.2f})"
    pixel_pitch_mm: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Millimetres per pixel of every image (camera set-up); sizes are then said in mm too."
    )
    pixel_pitch_column: str | None = Field(
        None,
        description="Metadata column (as in the metadata CSV) with each image's pixel pitch in mm; wins over "
        "pixel_pitch_mm where it has a value.",
    )


class AnomalyParams(StrictModel):
    """The anomaly pre-labeler: PatchCore-style nearest-neighbour patch scoring on the offline backbone."""

    enabled: bool = Field(True, description="Score every image for defect-vs-OK (works without CLIP or labels).")
    reference: Reference = Field(
        "auto",
        description="What counts as normal. auto: golden when reference_dir is set, else ok_reviewed once "
        "min_ok_references reviewed OK images exist, else none (images compared with each other: day one).",
    )
    min_ok_references: Annotated[int, Field(ge=1)] = 16
    reference_dir: Path | None = Field(
        None, description="Golden (defect-free) reference images; relative to the project root."
    )
    reference_column: str | None = Field(
        None,
        description="Metadata column naming each image's golden image in reference_dir (file stem), e.g. "
        "the product or line; without it the folder must hold one image, used for all.",
    )
    backbone: Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"] = "efficientnet-lite0"
    bank_max_patches: Annotated[int, Field(ge=256)] = Field(
        4096, description="Patch-bank size bound (coreset of the reviewed OK images' patches): memory is bounded."
    )
    bank_method: Literal["coreset", "random"] = "coreset"
    neighbours: Annotated[int, Field(ge=1)] = Field(
        5, description="No-label mode: mean of this many nearest other images (must exceed shots of one part)."
    )
    mutual_refs: Annotated[int, Field(ge=2)] = Field(
        64,
        description="No-label mode: images drawn (seeded) from the batch as the reference every image is compared "
        "to; memory and time per image are fixed by it, not by the batch size.",
    )
    z: Annotated[float, Field(gt=0)] = Field(3.0, description="No-label threshold: median + z robust deviations.")
    seed: int = 0
    map_max_side: Annotated[int, Field(ge=32, le=4096)] = Field(
        512, description="Anomaly maps are stored as 8-bit PNGs at most this long (128 = the defect threshold)."
    )
    regions: RegionParams = RegionParams()
    description: AnomalyDescriptionParams = AnomalyDescriptionParams()
    fewshot_features: bool = Field(
        True, description="Give few-shot the anomaly score and map-weighted patch features beside the embedding."
    )
