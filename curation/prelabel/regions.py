"""Anomaly map -> regions (boxes, polygons, scores) -> facts -> sentences a worker can act on, in English and Korean.

A map is cut at its own percentile (global thresholds failed on real data: score scales differ between images),
split into 8-connected components (scipy.ndimage), and each component is described by where it is (3x3 grid cell,
clock direction from the image centre), how large (pixels, and millimetres when the pixel pitch is known), what
shape (second-order moments: linear, spot or area, with the orientation of its long axis) and, when the ontology's
severities carry size thresholds, which severity its size suggests.

Coordinates are pixels of the stored image in COCO's continuous frame: pixel ``(col, row)`` covers ``[col, col + 1)
x [row, row + 1)``, so a box is ``(x, y, w, h)`` of pixel edges (as ``PriorLabel`` and :func:`curation.shapes.mask_box`)
and a centroid is the mean of pixel centres. Polygons come from :func:`curation.shapes.mask_to_polygons`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import ndimage
from scipy.spatial.distance import pdist

from curation.errors import MetadataError
from curation.shapes import Polygons, mask_to_polygons
from schemas.ontology import Severity
from schemas.params_anomaly import AnomalyDescriptionParams, RegionParams
from schemas.records import META_PREFIX, meta_column

ROWS = ("upper", "middle", "lower")
COLUMNS = ("left", "centre", "right")
CENTRE = "centre"
AT_CENTRE = "at the centre"

REGION_GLOSSARY: dict[str, str] = {
    "upper left": "좌측 상단",
    "upper centre": "중앙 상단",
    "upper right": "우측 상단",
    "middle left": "좌측 중앙",
    CENTRE: "중앙",
    "middle right": "우측 중앙",
    "lower left": "좌측 하단",
    "lower centre": "중앙 하단",
    "lower right": "우측 하단",
    AT_CENTRE: "중심부",
    "linear": "선형",
    "spot": "점형",
    "area": "면형",
    "horizontal": "가로",
    "vertical": "세로",
    "diagonal": "대각선",
}
"""English word or phrase -> Korean, for every word a region sentence uses; ``prelabel.description.glossary``
entries with the same keys win."""


class PixelPitchError(MetadataError):
    """An image's pixel pitch (metadata column) is not a positive number of millimetres per pixel."""


@dataclass(frozen=True)
class Region:
    """One connected area of high anomaly score.

    Attributes:
        box: ``(x, y, w, h)`` in pixel edges.
        score: the map's maximum inside the region.
        area: pixels in the region (holes not counted).
        centroid: ``(x, y)`` mean of the region's pixel centres.
        polygons: outline(s) as flat COCO polygons (holes filled), from :func:`curation.shapes.mask_to_polygons`.
        axes: ``(major, minor)`` full axis lengths of the region's equivalent ellipse (second-order moments of
            its pixels, each pixel a unit square), pixels.
        angle: direction of the major axis in degrees, 0 = horizontal, 90 = vertical (image y points down).
        length: the longest distance across the region (maximum Feret diameter over its outline's pixel
            corners), pixels; severities compare it with their ``min_size_px`` / ``min_size_mm``.
    """

    box: tuple[int, int, int, int]
    score: float
    area: int
    centroid: tuple[float, float]
    polygons: Polygons
    axes: tuple[float, float]
    angle: float
    length: float


def regions_from_map(image_map: npt.ArrayLike, *, settings: RegionParams) -> list[Region]:
    """The regions of an anomaly map, best first.

    Pixels at or above the map's own ``settings.percentile`` are kept, except pixels at the map's minimum (a
    constant or mostly-zero map has no region, while a saturated defect larger than the top percentile keeps all
    of its pixels). Components (8-connected) under ``settings.min_area_px`` are dropped; the rest are ordered by
    score, then area (highest first), then position (first pixel in reading order), and at most
    ``settings.max_regions`` are returned.

    Args:
        image_map: ``(H, W)`` scores at stored-image size (any real dtype; higher = more anomalous).
        settings: ``prelabel.anomaly.regions``.

    Raises:
        ValueError: the map is not two-dimensional or holds a non-finite value.
    """
    values = np.asarray(image_map, dtype=np.float32)
    if values.ndim != 2 or not values.size or not np.isfinite(values).all():
        raise ValueError(f"an anomaly map must be a finite (H, W) array, got shape {values.shape}")
    cut = float(np.percentile(values, settings.percentile))
    keep = (values >= cut) & (values > values.min())
    labelled, count = ndimage.label(keep, structure=np.ones((3, 3), bool))
    # per-component statistics from the kept pixels only (ndimage.maximum and find_objects over every component
    # took seconds on a noisy 4-megapixel map); outlines only for the components returned
    ys, xs = np.nonzero(labelled)
    labels = labelled[ys, xs]
    areas = np.bincount(labels, minlength=count + 1)
    scores = np.full(count + 1, -np.inf, np.float32)
    np.maximum.at(scores, labels, values[ys, xs])
    first = np.zeros(count + 1, np.int64)
    first[1:] = np.unique(labels, return_index=True)[1]  # first pixel in reading order (top row, then left)
    eligible = np.flatnonzero(areas >= settings.min_area_px)
    eligible = eligible[eligible > 0]
    ranked = eligible[np.lexsort((first[eligible], -areas[eligible], -scores[eligible]))]
    regions = []
    for k in ranked[: settings.max_regions]:
        cols, rows = xs[labels == k], ys[labels == k]
        box = np.s_[int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1]
        regions.append(_region(labelled[box] == k, (int(cols.min()), int(rows.min())), values[box]))
    return regions


def _region(component: npt.NDArray[np.bool_], origin: tuple[int, int], values: npt.NDArray[np.float32]) -> Region:
    """A :class:`Region` from its pixels (``component``, cropped to its box at ``origin`` = (x, y))."""
    x0, y0 = origin
    ys, xs = np.nonzero(component)
    cx, cy = float(xs.mean()) + x0 + 0.5, float(ys.mean()) + y0 + 0.5
    # second-order central moments, each pixel a unit square (hence + 1/12): a one-pixel-wide line is 1 wide
    cov = np.cov(np.vstack([xs, ys]), bias=True) + np.eye(2) / 12.0
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    major, minor = (4.0 * math.sqrt(max(float(v), 0.0)) for v in eigenvalues[::-1])
    vx, vy = eigenvectors[:, 1]
    angle = math.degrees(math.atan2(float(vy), float(vx))) % 180.0
    polygons = [[v + (x0 if k % 2 == 0 else y0) for k, v in enumerate(p)] for p in mask_to_polygons(component)]
    corners = np.array([(p[k], p[k + 1]) for p in polygons for k in range(0, len(p), 2)], np.float32)
    hull = cv2.convexHull(corners).reshape(-1, 2)  # the longest distance is between hull vertices: few of them
    length = float(pdist(hull).max()) if len(hull) > 1 else 0.0
    height, width = component.shape
    score = float(values[component].max())
    return Region((x0, y0, width, height), score, len(xs), (cx, cy), polygons, (major, minor), angle, length)


@dataclass(frozen=True)
class RegionFacts:
    """What a sentence and the region JSON say about a region (English words; Korean through the glossary).

    Attributes:
        cell: 3x3 grid cell of the centroid: ``"upper left"`` ... ``"lower right"``, ``"centre"`` for the middle.
        clock: clock hour (1-12) of the direction from the image centre to the centroid; 0 when near the centre.
        width_px, height_px: box size; width_mm, height_mm: the same in millimetres, None without a pixel pitch.
        length_px: :attr:`Region.length`; length_mm likewise.
        shape: ``linear`` (major / minor axis >= ``linear_ratio``), ``spot`` (else, major axis below
            ``spot_fraction`` of the image's shorter side) or ``area``.
        orientation: ``horizontal``, ``vertical`` (major axis within 22.5 degrees of the axis) or ``diagonal``.
        severity: suggested severity name (:func:`suggest_severity`), None when no threshold applies.
    """

    cell: str
    clock: int
    width_px: int
    height_px: int
    width_mm: float | None
    height_mm: float | None
    length_px: float
    length_mm: float | None
    shape: str
    orientation: str
    severity: str | None


def region_facts(
    region: Region,
    image_shape: tuple[int, int],
    *,
    pixel_pitch_mm: float | None,
    settings: AnomalyDescriptionParams,
    severities: Sequence[Severity] = (),
) -> RegionFacts:
    """Facts about ``region`` in an image of ``image_shape`` ``(height, width)``.

    Args:
        pixel_pitch_mm: millimetres per pixel (:func:`pixel_pitch`), for sizes in mm; None = pixels only.
        settings: ``prelabel.anomaly.description`` (shape and centre thresholds).
        severities: the ontology's severities, least severe first.
    """
    height, width = image_shape[:2]
    cx, cy = region.centroid
    row, column = ROWS[min(2, int(3 * cy / height))], COLUMNS[min(2, int(3 * cx / width))]
    cell = CENTRE if (row, column) == ("middle", CENTRE) else f"{row} {column}"
    dx, dy = cx - width / 2, cy - height / 2
    clock = 0
    if math.hypot(dx, dy) >= settings.centre_fraction * min(height, width):
        clock = round((math.degrees(math.atan2(dx, -dy)) % 360.0) / 30.0) % 12 or 12  # 0 degrees = up, clockwise
    major, minor = region.axes
    if major >= settings.linear_ratio * minor:
        shape = "linear"
    elif major < settings.spot_fraction * min(height, width):
        shape = "spot"
    else:
        shape = "area"
    angle = region.angle
    orientation = (
        "horizontal" if min(angle, 180 - angle) <= 22.5 else "vertical" if abs(angle - 90) <= 22.5 else "diagonal"
    )
    _, _, w, h = region.box

    def mm(value: float) -> float | None:
        return None if pixel_pitch_mm is None else round(value * pixel_pitch_mm, 2)

    length_mm = mm(region.length)
    severity = suggest_severity(region.length, length_mm, severities)
    return RegionFacts(
        cell, clock, w, h, mm(w), mm(h), round(region.length, 1), length_mm, shape, orientation, severity
    )


def suggest_severity(length_px: float, length_mm: float | None, severities: Sequence[Severity]) -> str | None:
    """The most severe severity whose size threshold a region of this length meets.

    A severity's threshold is its ``min_size_mm`` when the length in mm is known and it has one, else its
    ``min_size_px``; severities without a usable threshold are skipped. ``severities`` are in ontology order
    (least severe first).

    Returns:
        The severity's name, or None when no threshold applies or none is met.
    """
    suggested = None
    for severity in severities:
        if length_mm is not None and severity.min_size_mm is not None:
            met = length_mm >= severity.min_size_mm
        elif severity.min_size_px is not None:
            met = length_px >= severity.min_size_px
        else:
            continue
        if met:
            suggested = severity.name
    return suggested


def region_json(region: Region, facts: RegionFacts) -> dict[str, Any]:
    """The region as the ``regions`` column of ``predictions.parquet`` holds it (one object of the JSON list)."""
    x, y, w, h = region.box
    return {
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "score": round(region.score, 4),
        "area": region.area,
        "polygons": region.polygons,
        "cell": facts.cell,
        "clock": facts.clock,
        "shape": facts.shape,
        "orientation": facts.orientation,
        "size_px": [facts.width_px, facts.height_px],
        "size_mm": None if facts.width_mm is None else [facts.width_mm, facts.height_mm],
        "severity": facts.severity,
    }


def describe_image(
    regions: Sequence[Region],
    image_shape: tuple[int, int],
    *,
    score: float,
    threshold: float,
    is_defect: bool,
    pixel_pitch_mm: float | None,
    settings: AnomalyDescriptionParams,
    glossary: Mapping[str, str],
    severities: Sequence[Severity],
) -> tuple[str, str, list[dict[str, Any]]]:
    """The English and Korean description of one image and its regions as JSON objects.

    An image called OK gets ``settings.ok_en`` / ``ok_ko`` and no region. A defective one gets the summary (region
    count, score, one sentence per region joined by ``"; "``), or ``no_region_*`` when the map has no region, then
    the suggested severity (that of the largest region, :func:`suggest_severity`) when there is one.

    Args:
        regions: :func:`regions_from_map` of the image's map, best first.
        image_shape: ``(height, width)`` of the stored image.
        score, threshold: the image's anomaly score and the calibrated threshold.
        is_defect: the calibrated call.
        pixel_pitch_mm: millimetres per pixel (:func:`pixel_pitch`), None when unknown.
        settings: ``prelabel.anomaly.description``.
        glossary: ``prelabel.description.glossary``; its entries win over :data:`REGION_GLOSSARY`.
        severities: the ontology's severities, least severe first (``name_ko`` names them in Korean).

    Returns:
        ``(description_en, description_ko, region JSON objects)``.
    """
    numbers = {"score": score, "threshold": threshold}
    if not is_defect:
        return settings.ok_en.format(**numbers), settings.ok_ko.format(**numbers), []
    words = {**REGION_GLOSSARY, **glossary}
    facts = [
        region_facts(r, image_shape, pixel_pitch_mm=pixel_pitch_mm, settings=settings, severities=severities)
        for r in regions
    ]
    if regions:
        en_parts = [_sentence(r, f, settings, None, i) for i, (r, f) in enumerate(zip(regions, facts, strict=True), 1)]
        ko_parts = [_sentence(r, f, settings, words, i) for i, (r, f) in enumerate(zip(regions, facts, strict=True), 1)]
        count = {"count": len(regions), **numbers}
        en = settings.summary_en.format(regions="; ".join(en_parts), **count)
        ko = settings.summary_ko.format(regions="; ".join(ko_parts), **count)
    else:
        en, ko = settings.no_region_en.format(**numbers), settings.no_region_ko.format(**numbers)
    ranks = {s.name: k for k, s in enumerate(severities)}
    suggested = max((f.severity for f in facts if f.severity is not None), key=ranks.__getitem__, default=None)
    if suggested is not None:
        chosen = severities[ranks[suggested]]
        en += ". " + settings.severity_en.format(severity=chosen.name.replace("_", " "))
        ko += ". " + settings.severity_ko.format(severity=chosen.name_ko or words.get(chosen.name, chosen.name))
    return en, ko, [region_json(r, f) for r, f in zip(regions, facts, strict=True)]


def _sentence(
    region: Region, facts: RegionFacts, settings: AnomalyDescriptionParams, words: Mapping[str, str] | None, index: int
) -> str:
    """One region's sentence: English when ``words`` is None, else Korean with ``words``."""
    say = (lambda word: word) if words is None else words.__getitem__
    shape = say(facts.shape)
    if facts.shape == "linear":
        shape = f"{say(facts.orientation)} {shape}"
    if facts.clock == 0:
        clock = say(AT_CENTRE)
    else:
        clock = (settings.clock_en if words is None else settings.clock_ko).format(hour=facts.clock)
    size_values = {"w": facts.width_px, "h": facts.height_px}
    if facts.width_mm is None:
        size = settings.size_px.format(**size_values)
    else:
        size = settings.size_mm.format(w_mm=facts.width_mm, h_mm=facts.height_mm, **size_values)
    length = f"{facts.length_px:g} px" if facts.length_mm is None else f"{facts.length_mm:g} mm"
    text = (settings.region_en if words is None else settings.region_ko).format(
        index=index,
        shape=shape,
        orientation=say(facts.orientation),
        cell=say(facts.cell),
        clock=clock,
        size=size,
        length=length,
        area=region.area,
        score=region.score,
    )
    return text[:1].upper() + text[1:] if words is None else text


def pixel_pitch(
    manifest_row_or_value: Mapping[str, Any] | Any, settings: AnomalyDescriptionParams, *, image: str | None = None
) -> float | None:
    """Millimetres per pixel of one image: its ``settings.pixel_pitch_column`` value, else ``settings.pixel_pitch_mm``.

    Args:
        manifest_row_or_value: the image's manifest row (a mapping or pandas Series holding ``meta_<column>``), or
            the metadata value itself (text or number; empty/None/NaN = not given).
        settings: ``prelabel.anomaly.description``.
        image: how errors name the image; default: the row's ``rel_path`` or ``image_id``.

    Returns:
        The pitch, or None when neither the column nor the parameter gives one.

    Raises:
        PixelPitchError: the value is not a positive finite number, or the row lacks the column. The message names
            the image, the column and the fix.
    """
    column = settings.pixel_pitch_column
    value: Any = manifest_row_or_value
    if hasattr(manifest_row_or_value, "keys") and not isinstance(manifest_row_or_value, str | bytes):
        row = manifest_row_or_value
        image = image or str(row.get("rel_path") or row.get("image_id") or "?")
        if column is None:
            return settings.pixel_pitch_mm
        key = column if column.startswith(META_PREFIX) and column in row else meta_column(column)
        if key not in row:
            raise PixelPitchError(
                f"image {image}: the manifest has no column {key!r} for prelabel.anomaly.description."
                f"pixel_pitch_column={column!r}; add a {column!r} column to the metadata CSV (ingest.metadata) and "
                "rerun ingest, or unset pixel_pitch_column"
            )
        value = row[key]
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) or str(value).strip() == "":
        return settings.pixel_pitch_mm
    try:
        pitch = float(str(value).strip())
    except ValueError:
        pitch = math.nan
    if not math.isfinite(pitch) or pitch <= 0:
        where = f" in metadata column {column!r}" if column else ""
        raise PixelPitchError(
            f"image {image or '?'}: pixel pitch {value!r}{where} is not a positive number; "
            "write millimetres per pixel (e.g. 0.05) or leave the cell empty to use prelabel.anomaly.description."
            "pixel_pitch_mm"
        )
    return pitch
