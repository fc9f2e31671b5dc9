"""Anomaly map -> regions (boxes, polygons, scores) -> plain facts and sentences in English and Korean.

A map is thresholded at a per-image percentile (global thresholds failed on real data: score scales differ between
images), split into connected components (scipy.ndimage), and each component is described by where it is (3x3 grid
cell, clock direction from the image centre), how large (pixels, and millimetres when the pixel pitch is known) and
what shape (from second-order moments: linear, spot or area, with the orientation of its long axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

ROWS = ("upper", "middle", "lower")
COLUMNS = ("left", "centre", "right")
GLOSSARY_KO: dict[str, str] = {
    "upper": "상단",
    "middle": "중앙",
    "lower": "하단",
    "left": "좌측",
    "centre": "중앙",
    "right": "우측",
    "linear": "선형",
    "spot": "점형",
    "area": "면형",
    "horizontal": "가로",
    "vertical": "세로",
    "diagonal": "대각선",
}
TEMPLATE_EN = "{shape} defect in the {cell} ({clock}), about {size}"
TEMPLATE_KO = "{cell}({clock})에 {size} 크기의 {shape} 결함"


@dataclass(frozen=True)
class Region:
    """One connected area of high anomaly score, in image pixel coordinates.

    Attributes:
        box: (x0, y0, x1, y1), inclusive-exclusive.
        score: the map's maximum inside the region.
        area: pixels in the region.
        centroid: (x, y) centre of mass of the region's pixels.
        polygon: outer contour as (x, y) points.
        axes: (major, minor) full lengths of the region's equivalent ellipse, pixels.
        angle: orientation of the major axis in degrees, 0 = horizontal, 90 = vertical (image y points down).
    """

    box: tuple[int, int, int, int]
    score: float
    area: int
    centroid: tuple[float, float]
    polygon: list[tuple[int, int]]
    axes: tuple[float, float]
    angle: float


def find_regions(
    anomaly_map: np.ndarray, *, percentile: float = 98.0, min_area: int = 16, max_regions: int = 5
) -> list[Region]:
    """Regions above the map's own ``percentile``, largest score first, at most ``max_regions``, each at least
    ``min_area`` pixels (8-connectivity)."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    threshold = float(np.percentile(values, percentile))
    mask = values > threshold
    labelled, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    regions = []
    for index, slices in enumerate(ndimage.find_objects(labelled), start=1):
        if slices is None:
            continue
        component = labelled[slices] == index
        area = int(component.sum())
        if area < min_area:
            continue
        ys, xs = np.nonzero(component)
        ys = ys + slices[0].start
        xs = xs + slices[1].start
        regions.append(_region(component, slices, xs, ys, float(values[ys, xs].max())))
    regions.sort(key=lambda r: (-r.score, r.box))
    return regions[:max_regions]


def _region(component: np.ndarray, slices: tuple[slice, slice], xs: np.ndarray, ys: np.ndarray, score: float) -> Region:
    cx, cy = float(xs.mean()), float(ys.mean())
    cov = np.cov(np.vstack([xs, ys])) if len(xs) > 1 else np.zeros((2, 2))
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    major, minor = (4.0 * math.sqrt(max(float(v), 0.0)) for v in eigenvalues[::-1])
    vx, vy = eigenvectors[:, 1]
    angle = math.degrees(math.atan2(vy, vx)) % 180.0
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outer = max(contours, key=cv2.contourArea)
    polygon = [(int(x) + slices[1].start, int(y) + slices[0].start) for x, y in outer.reshape(-1, 2)]
    box = (slices[1].start, slices[0].start, slices[1].stop, slices[0].stop)
    return Region(box, score, len(xs), (cx, cy), polygon, (major, minor), angle)


@dataclass(frozen=True)
class RegionFacts:
    """What a sentence says about a region.

    Attributes:
        row, column: 3x3 grid cell of the centroid (``upper``/``middle``/``lower``, ``left``/``centre``/``right``).
        clock: clock hour (1-12) of the direction from the image centre to the centroid; 0 when at the centre.
        width_px, height_px: box size. width_mm, height_mm: the same in millimetres, None without a pixel pitch.
        length_px: major axis length; length_mm likewise.
        shape: ``linear`` (major/minor axis >= 3), ``spot`` (compact and small) or ``area``.
        orientation: ``horizontal``, ``vertical`` or ``diagonal`` (long axis within 22.5 degrees of the axes).
    """

    row: str
    column: str
    clock: int
    width_px: int
    height_px: int
    length_px: float
    width_mm: float | None
    height_mm: float | None
    length_mm: float | None
    shape: str
    orientation: str


def describe(
    region: Region,
    image_shape: tuple[int, int],
    *,
    pixel_pitch_mm: float | None = None,
    spot_fraction: float = 0.1,
    centre_fraction: float = 0.1,
) -> RegionFacts:
    """Facts about ``region`` in an image of ``image_shape`` (height, width).

    Args:
        pixel_pitch_mm: millimetres per pixel (from the camera set-up), for sizes in mm.
        spot_fraction: a region that is not linear and whose long axis is below this share of the image's shorter
            side is a ``spot``; otherwise an ``area``.
        centre_fraction: a centroid closer to the centre than this share of the shorter side gets clock 0.
    """
    height, width = image_shape
    cx, cy = region.centroid
    row = ROWS[min(2, int(3 * cy / height))]
    column = COLUMNS[min(2, int(3 * cx / width))]
    dx, dy = cx - width / 2, cy - height / 2
    if math.hypot(dx, dy) < centre_fraction * min(height, width):
        clock = 0
    else:
        degrees = math.degrees(math.atan2(dx, -dy)) % 360.0  # 0 = straight up, clockwise
        clock = round(degrees / 30.0) % 12 or 12
    x0, y0, x1, y1 = region.box
    w, h = x1 - x0, y1 - y0
    major, minor = region.axes
    if major >= 3.0 * max(minor, 1.0):
        shape = "linear"
    elif major < spot_fraction * min(height, width):
        shape = "spot"
    else:
        shape = "area"
    angle = region.angle
    orientation = (
        "horizontal" if min(angle, 180 - angle) <= 22.5 else "vertical" if abs(angle - 90) <= 22.5 else "diagonal"
    )
    mm = (lambda v: round(v * pixel_pitch_mm, 2)) if pixel_pitch_mm else (lambda v: None)
    return RegionFacts(row, column, clock, w, h, round(major, 1), mm(w), mm(h), mm(major), shape, orientation)


def sentence(
    facts: RegionFacts,
    *,
    language: str = "en",
    template_en: str = TEMPLATE_EN,
    template_ko: str = TEMPLATE_KO,
    glossary: dict[str, str] | None = None,
) -> str:
    """One sentence from ``facts`` with a template (fields: shape, cell, clock, size, orientation).

    Raises:
        ValueError: ``language`` is neither ``en`` nor ``ko``.
    """
    if facts.width_mm is not None:
        size_en = f"{facts.width_mm:g} x {facts.height_mm:g} mm"
    else:
        size_en = f"{facts.width_px} x {facts.height_px} px"
    if language == "en":
        cell = "centre" if (facts.row, facts.column) == ("middle", "centre") else f"{facts.row} {facts.column}"
        clock = "at the centre" if facts.clock == 0 else f"about {facts.clock} o'clock"
        shape = f"{facts.orientation} {facts.shape}" if facts.shape == "linear" else facts.shape
        text = template_en.format(shape=shape, cell=cell, clock=clock, size=size_en, orientation=facts.orientation)
        return text[:1].upper() + text[1:]
    if language == "ko":
        words = {**GLOSSARY_KO, **(glossary or {})}
        cell = (
            words["centre"]
            if (facts.row, facts.column) == ("middle", "centre")
            else (f"{words[facts.column]} {words[facts.row]}")
        )
        clock = words.get("at_centre", "중심") if facts.clock == 0 else f"약 {facts.clock}시 방향"
        shape = f"{words[facts.orientation]} {words[facts.shape]}" if facts.shape == "linear" else words[facts.shape]
        return template_ko.format(
            shape=shape, cell=cell, clock=clock, size=size_en, orientation=words[facts.orientation]
        )
    raise ValueError(f"language must be 'en' or 'ko', got {language!r}")
