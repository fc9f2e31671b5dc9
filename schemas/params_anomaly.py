"""Knobs of the anomaly pre-labeler (``prelabel.anomaly``): defect-vs-OK scores, defect maps, regions and the
"where and how large" descriptions that work offline from day one (no CLIP, no labels).

See :mod:`curation.prelabel.anomaly` (scoring), :mod:`curation.prelabel.regions` (map -> regions -> sentences) and
docs/anomaly.md (what was measured, on which data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

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


_REGION: dict[str, object] = {
    "index": 1,
    "shape": "x",
    "orientation": "x",
    "cell": "x",
    "clock": "x",
    "size": "x",
    "length": "x",
}
_SIZE: dict[str, object] = {"w": 1, "h": 1}
_SCORE: dict[str, object] = {"score": 0.5, "threshold": 0.5}
_TEMPLATE_FIELDS: dict[str, dict[str, object]] = {
    "region_en": {**_REGION, "area": 1, "score": 0.5},
    "region_ko": {**_REGION, "area": 1, "score": 0.5},
    "summary_en": {"count": 1, "regions": "x", **_SCORE},
    "summary_ko": {"count": 1, "regions": "x", **_SCORE},
    "ok_en": _SCORE,
    "ok_ko": _SCORE,
    "clock_en": {"hour": 1},
    "clock_ko": {"hour": 1},
    "size_px": _SIZE,
    "size_mm": {**_SIZE, "w_mm": 0.5, "h_mm": 0.5},
    "severity_en": {"severity": "x"},
    "severity_ko": {"severity": "x"},
    "no_region_en": _SCORE,
    "no_region_ko": _SCORE,
}
"""Each template field -> the placeholders it may use, with sample values (numbers where a format spec may
follow)."""


class AnomalyDescriptionParams(StrictModel):
    """Sentences a worker can act on, in English and Korean (Korean words from ``prelabel.description.glossary``
    and the built-in region glossary, :data:`curation.prelabel.regions.REGION_GLOSSARY`).

    Placeholders: region_*: {index} (1 = best), {shape} (e.g. "vertical linear"), {orientation}, {cell} (3x3 grid
    cell), {clock}, {size} (size_px or size_mm), {length} (longest distance across), {area} (pixels), {score};
    summary_*: {count}, {score}, {threshold}, {regions} (the region sentences joined by "; "); ok_* and
    no_region_*: {score}, {threshold}; clock_*: {hour}; size_px: {w}, {h}; size_mm: {w}, {h}, {w_mm}, {h_mm};
    severity_*: {severity}.
    """

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
    clock_en: str = Field("about {hour} o'clock", description="The {clock} of a region away from the centre.")
    clock_ko: str = "약 {hour}시 방향"
    size_px: str = Field("{w} x {h} px", description="The {size} of a region's box without a pixel pitch.")
    size_mm: str = Field("{w_mm:g} x {h_mm:g} mm ({w} x {h} px)", description="The {size} with a pixel pitch.")
    severity_en: str = Field(
        "Suggested severity: {severity}",
        description="Appended when the ontology's severities have size thresholds (min_size_mm / min_size_px).",
    )
    severity_ko: str = "권장 심각도: {severity}"
    no_region_en: str = Field(
        "Anomaly score {score:.2f} above the threshold {threshold:.2f}, no compact region found",
        description="A defective image whose map has no region (e.g. a defect spread over the whole image).",
    )
    no_region_ko: str = "이상 점수 {score:.2f}(기준 {threshold:.2f} 초과), 뚜렷한 영역 없음"
    linear_ratio: Annotated[float, Field(gt=1)] = Field(
        3.0, description="A region is linear when its long axis is at least this many times its short axis."
    )
    spot_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.1, description="Else a spot when its long axis is below this share of the image's shorter side; else area."
    )
    centre_fraction: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        0.1, description="A region closer to the image centre than this share of the shorter side is 'at the centre'."
    )

    @field_validator(*_TEMPLATE_FIELDS)
    @classmethod
    def _known_placeholders(cls, template: str, info: ValidationInfo) -> str:
        sample = _TEMPLATE_FIELDS[str(info.field_name)]
        try:
            template.format(**sample)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ValueError(
                f"template {template!r} does not format ({err!r}); use the placeholders {sorted(sample)}"
            ) from None
        return template


class AnomalyParams(StrictModel):
    """The anomaly pre-labeler: PatchCore-style nearest-neighbour patch scoring on the offline backbone."""

    enabled: bool = Field(True, description="Score every image for defect-vs-OK (works without CLIP or labels).")
    reference: Reference = Field(
        "auto",
        description="What counts as normal. auto: golden when reference_dir is set, else ok_reviewed once "
        "min_ok_references reviewed OK images exist, else none (images compared with each other: day one).",
    )
    min_ok_references: Annotated[int, Field(ge=1)] = Field(
        64,
        description="Reviewed OK images needed before ok_reviewed replaces no-label scoring. Measured on magnetic "
        "tile (docs/anomaly.md): 16 / 32 / 64 / 200 OK references 0.79-0.82 / 0.80-0.83 / 0.84-0.86 / 0.90-0.93 "
        "image AUROC against 0.85 with no labels, so fewer than ~64 would make the pre-labels worse.",
    )
    reference_dir: Path | None = Field(
        None, description="Golden (defect-free) reference images; relative to the project root."
    )
    reference_column: str | None = Field(
        None,
        description="Metadata column naming each image's golden image in reference_dir (file stem), e.g. "
        "the product or line; without it the folder must hold one image, used for all.",
    )
    backbone: Literal["efficientnet-lite0", "clip"] = Field(
        "efficientnet-lite0",
        description="Patch features: the offline EfficientNet-Lite0 (measured, docs/anomaly.md; works without any "
        "download), or clip: the patch tokens of the CLIP model's vision tower (prelabel.clip.model; a second "
        "vision pass: adds ~1.1x a ViT-B/32 embedding pass where Lite0 adds ~0.6x; accuracy not measured here, "
        "where no CLIP weights exist; falls back to Lite0, announced, when CLIP does not load). Lite1 and Lite2 "
        "measured worse than Lite0.",
    )
    clip_layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        description="backbone clip: hidden-state indices of the vision tower whose patch tokens are used (0 = patch "
        "embeddings, the depth = the last layer); null: half and three quarters of the depth (6 and 9 for ViT-B).",
    )
    bank_max_patches: Annotated[int, Field(ge=256)] = Field(
        4096, description="Patch-bank size bound (coreset of the reviewed OK images' patches): memory is bounded."
    )
    bank_method: Literal["coreset", "random"] = "coreset"
    neighbours: Annotated[int, Field(ge=1)] = Field(
        10, description="No-label mode: mean of this many nearest other images (must exceed shots of one part)."
    )
    mutual_refs: Annotated[int, Field(ge=2)] = Field(
        192,
        description="No-label mode: images drawn (seeded) from the batch as the reference every image is compared "
        "to; memory and time per image are fixed by it, not by the batch size.",
    )
    mutual_stride: Annotated[int, Field(ge=1, le=8)] = Field(
        6, description="No-label mode: the reference images' patches are kept every this many grid cells."
    )
    mutual_dims: Annotated[int, Field(ge=4)] | None = Field(
        64,
        description="No-label mode: reference and query patches projected onto this many principal components of "
        "the reference patches (null: all dimensions: ~2x the query time; measured the same on magnetic tile, "
        "+0.03 image AUROC on the built-in sample).",
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
    defect_share: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None,
        description="No-label threshold when the share of defective images is known (the line's defect rate): "
        "that upper quantile of the scores. null: median + z robust deviations, which assumes most images are OK.",
    )
