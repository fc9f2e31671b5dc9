"""Region shapes: COCO polygons to masks and back, with their areas and boxes.

A region's ``segmentation`` is a list of polygons, each a flat list ``[x1, y1, x2, y2, ...]`` (COCO's polygon format)
in pixels of the stored image, in COCO's continuous frame: pixel ``(col, row)`` covers ``[col, col + 1) x [row,
row + 1)``. :func:`mask_to_polygons` traces the outline along pixel edges, so rasterising its polygons with
pycocotools gives the mask back (tested on the magnetic-tile masks), where a contour through pixel centres (OpenCV's
``findContours`` as is) loses half a pixel all round: a third of a two-pixel-wide crack.

COCO polygons cannot carry holes: a region's holes are filled in its polygons (its ``area`` stays the true pixel
count of the mask).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Polygons = list[list[float]]


def parse_polygons(value: Any) -> Polygons:
    """The polygons of one region from JSON text or a list, checked.

    Raises:
        ValueError: not JSON, not a non-empty list of polygons, or a polygon that is not an even-length list of at
            least 6 finite numbers (3 points). The message says which.
    """
    data = json.loads(value) if isinstance(value, str) else value
    if not isinstance(data, list) or not data:
        raise ValueError("expected a non-empty JSON list of polygons, each [x1, y1, x2, y2, ...]")
    polygons = []
    for index, polygon in enumerate(data):
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(f"polygon {index} is not a flat list of at least 3 (x, y) points")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in polygon):
            raise ValueError(f"polygon {index} holds a value that is not a finite number")
        polygons.append([float(v) for v in polygon])
    return polygons


def rasterise(polygons: Sequence[Sequence[float]], height: int, width: int) -> npt.NDArray[np.uint8]:
    """The region as a ``(height, width)`` uint8 mask (1 inside), rasterised by pycocotools as COCO tools do."""
    from pycocotools import mask as coco_mask

    rles = coco_mask.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    mask: npt.NDArray[np.uint8] = coco_mask.decode(coco_mask.merge(rles))  # pycocotools is untyped
    return mask


def polygons_area(polygons: Sequence[Sequence[float]], height: int, width: int) -> float:
    """Pixels inside the polygons, counted on the rasterised mask (what COCO's ``area`` of a polygon is).

    The project's one polygon-area rule: imported polygons (YOLO segments), Label Studio regions and exports all
    use it. For outlines from :func:`mask_to_polygons` it equals the shoelace area, pixel for pixel.
    """
    from pycocotools import mask as coco_mask

    rles = coco_mask.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return float(coco_mask.area(coco_mask.merge(rles)))


def polygons_box(polygons: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` enclosing every vertex."""
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def mask_box(mask: npt.NDArray[Any]) -> tuple[float, float, float, float] | None:
    """``(x, y, w, h)`` of the pixels set in ``mask`` (pixel edges, as the polygons), or None when it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0])


def mask_to_polygons(mask: npt.NDArray[Any]) -> Polygons:
    """Outer outlines of the pixels set in ``mask``, along pixel edges, one polygon per 8-connected component.

    OpenCV traces contours through the centres of boundary pixels. On the mask upsampled twice, boundary pixels
    sit on the outer half of each original pixel, so mapping an upsampled index ``k`` to ``ceil(k / 2)`` puts
    every vertex on an original pixel corner: left and top edges (even ``k``) stay, right and bottom edges (odd
    ``k``) move out by one. Polygons come sorted by their first vertex (top, then left).
    """
    import cv2

    box = mask_box(mask)
    if box is None:
        return []
    x0, y0, w, h = (int(v) for v in box)
    crop = (np.asarray(mask[y0 : y0 + h, x0 : x0 + w]) > 0).astype(np.uint8)
    doubled = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = (contour.reshape(-1, 2) + 1) // 2 + np.array([x0, y0])
        points = _simplify(points)
        if len(points) >= 3:
            polygons.append(points)
    polygons.sort(key=lambda p: (int(p[0][1]), int(p[0][0])))
    return [p.astype(float).reshape(-1).tolist() for p in polygons]


def _simplify(points: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.integer[Any]]:
    """Drop repeated vertices and vertices on a straight line between their neighbours (exact, integer points)."""
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = (np.diff(points, axis=0) != 0).any(axis=1)
    points = points[keep]
    if len(points) > 1 and (points[0] == points[-1]).all():
        points = points[:-1]
    if len(points) < 3:
        return points
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - before[:, 1]) - (points[:, 1] - before[:, 1]) * (
        after[:, 0] - before[:, 0]
    )
    turns: npt.NDArray[np.bool_] = cross != 0
    return points[turns]
