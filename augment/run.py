"""Apply a recipe to many images in parallel: N seeded variants per image, boxes followed and dropped boxes counted.

A region with a shape (COCO polygons) is rasterised into a label map (one uint16 map for regions that do not
overlap, another only where they do, rather than one full-size mask per region), the maps go through the recipe with
the image (albumentations' ``masks`` target, nearest-neighbour, so labels stay intact), and each region's polygons,
box and area are traced again from its pixels in the moved map (:mod:`curation.shapes`), so a rotated crack keeps
its outline instead of the rotated box's corners. It is dropped (and counted with the dropped
boxes) when its box fails the visibility filter, or when its mask is empty or under ``augment.min_area`` pixels.

Each variant's seed comes from (seed, image id, variant index), so the output bytes do not depend on the number of
workers or the order in which they finish. Workers are forked, as in ingest: ``curation.progress`` draws from the
caller's thread, so no other thread holds a lock at fork time.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from augment.recipe import BOX_FIELD, apply, build_pipeline, variant_seed
from curation.shapes import mask_box, mask_to_polygons, rasterise
from schemas.params_dataset import AugmentParams
from schemas.records import boxes_to_json

_SERIAL_BELOW = 16  # fewer images than this are augmented in-process: starting workers would cost more
_MAX_ARRAY = 16  # sampled parameters with more values than this are recorded by shape only
_NATIVE_MODES = ("RGB", "L")  # other modes (RGBA, CMYK, P, 16-bit) are converted to RGB first


@dataclass(frozen=True)
class Source:
    """One train image to augment. ``boxes`` are COCO ``[x, y, w, h]`` pixels with one class label each;
    ``segmentations`` (empty, or one entry per box) holds each box's polygons, or None for a box without a shape."""

    image_id: str
    path: str
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    box_labels: tuple[str | None, ...] = ()  # a Box's label (null: a region drawn without a class)
    segmentations: tuple[list[list[float]] | None, ...] = ()


@dataclass(frozen=True)
class Variant:
    """One written output: where it came from, how it was made, and what happened to the boxes."""

    image_id: str  # "<source id>_a<variant>"
    source_image_id: str
    variant: int
    file: str  # relative to the output images folder
    sha256: str
    width: int
    height: int
    seed: int
    applied: str  # JSON list of [transform name, sampled parameters] actually applied
    boxes: str | None  # JSON list of {x, y, w, h, label} (+ segmentation, area) after the transform, or null
    boxes_in: int
    boxes_dropped: int


def augment_all(
    sources: Sequence[Source],
    settings: AugmentParams,
    images_dir: Path,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Variant]:
    """Write ``settings.variants`` augmented copies of every source into ``images_dir``; yield their records.

    Records come in ``sources`` order, variants in index order.
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    pipeline = build_pipeline(settings.recipe, min_visibility=settings.min_visibility, min_area=settings.min_area)
    workers = settings.workers or os.cpu_count() or 1
    job = _Job(settings, str(images_dir), pipeline)
    if workers == 1 or len(sources) < _SERIAL_BELOW:
        results: Iterator[list[Variant]] = map(job, sources)
        executor = None
    else:
        import cv2

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        # Fork while OpenCV's thread pool has no worker threads: a child forked from a process whose pool has run
        # (after in-process augmentation of large images, say) waits forever in cv2.setNumThreads for threads that
        # fork did not copy (seen here). With fork every worker starts at the first submit; then the pool is restored.
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            executor = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=_one_thread_each
            )
            chunk = max(1, min(32, len(sources) // (workers * 8)))
            results = executor.map(job, sources, chunksize=chunk)
        finally:
            cv2.setNumThreads(threads)
    try:
        for variants in results:
            if on_progress:
                on_progress(1)
            yield from variants
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


def _one_thread_each() -> None:
    """Each worker is one CPU's worth of work: OpenCV's own thread pool (one thread per core by default) would
    oversubscribe the machine and cancel the gain from more processes."""
    import cv2

    cv2.setNumThreads(1)


def load_pixels(path: str) -> np.ndarray:
    """Decode an image as stored (no EXIF rotation, so prior boxes still match) into RGB or grayscale uint8."""
    with Image.open(path) as image:
        if image.mode not in _NATIVE_MODES:
            image = image.convert("RGB")
        return np.asarray(image)


def encode(pixels: np.ndarray, image_format: str, jpeg_quality: int) -> bytes:
    """PNG (lossless) or JPEG bytes of ``pixels``; Pillow's encoders give the same bytes for the same pixels."""
    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    else:
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue()


class _Job:
    """Picklable worker callable carrying the checked pipeline (built once, pickled with each chunk of work)."""

    def __init__(self, settings: AugmentParams, images_dir: str, pipeline: Any) -> None:
        self.settings = settings
        self.images_dir = images_dir
        self._pipeline = pipeline

    def __call__(self, source: Source) -> list[Variant]:
        settings = self.settings
        pixels = load_pixels(source.path)
        boxes = [list(b) for b in source.boxes]
        masks, placed = _label_maps(source.segmentations, *pixels.shape[:2])
        out = []
        for variant in range(settings.variants):
            seed = variant_seed(settings.seed, source.image_id, variant)
            result = apply(self._pipeline, pixels, boxes, seed, masks=masks)
            image = np.ascontiguousarray(result["image"])
            data = encode(image, settings.image_format, settings.jpeg_quality)
            name = f"{source.image_id}_a{variant}"
            file = f"{name}.{settings.image_format}"
            with open(os.path.join(self.images_dir, file), "wb") as handle:
                handle.write(data)
            # with a reflecting border a box can come back more than once (its mirror image is labelled too)
            kept = [int(i) for i in result[BOX_FIELD]]
            out_boxes, survived = [], set()
            for (x, y, w, h), i in zip(np.asarray(result["bboxes"]).reshape(-1, 4), kept, strict=True):
                label = source.box_labels[i]
                if i not in placed:
                    out_boxes.append({"x": _px(x), "y": _px(y), "w": _px(w), "h": _px(h), "label": label})
                    survived.add(i)
                    continue
                if i in survived:
                    continue  # a shaped region is read from its mask once, mirrored parts included
                layer, value = placed[i]
                region = _region(np.asarray(result["masks"][layer]) == value, settings.min_area)
                if region is not None:
                    out_boxes.append({**region, "label": label})
                    survived.add(i)
            applied = [[name_, _plain(params)] for name_, params in result["applied_transforms"]]
            out.append(
                Variant(
                    image_id=name,
                    source_image_id=source.image_id,
                    variant=variant,
                    file=file,
                    sha256=hashlib.sha256(data).hexdigest(),
                    width=int(image.shape[1]),
                    height=int(image.shape[0]),
                    seed=seed,
                    applied=json.dumps(applied, sort_keys=True),
                    boxes=(boxes_to_json(out_boxes) or "[]") if source.boxes else None,
                    boxes_in=len(boxes),
                    boxes_dropped=len(boxes) - len(survived),
                )
            )
        return out


def _label_maps(
    segmentations: tuple[list[list[float]] | None, ...], height: int, width: int
) -> tuple[list[np.ndarray] | None, dict[int, tuple[int, int]]]:
    """Rasterise the regions with a shape into as few uint16 label maps as possible: a region goes into the first
    map where it overlaps no other region. Returns the maps (None without shapes) and, per region index, its
    ``(map, label value)``."""
    maps: list[np.ndarray] = []
    used: list[int] = []
    placed: dict[int, tuple[int, int]] = {}
    for index, polygons in enumerate(segmentations):
        if polygons is None:
            continue
        region = rasterise(polygons, height, width).astype(bool)
        layer = next(
            (k for k, m in enumerate(maps) if used[k] < np.iinfo(np.uint16).max and not m[region].any()), len(maps)
        )
        if layer == len(maps):
            maps.append(np.zeros((height, width), dtype=np.uint16))
            used.append(0)
        used[layer] += 1
        maps[layer][region] = used[layer]
        placed[index] = (layer, used[layer])
    return (maps or None), placed


def _region(mask: np.ndarray, min_area: float) -> dict[str, Any] | None:
    """Box, polygons and pixel area of a transformed region mask; None when it vanished or is under ``min_area``."""
    box = mask_box(mask)
    area = int(np.count_nonzero(mask))
    if box is None or area < min_area:
        return None
    x, y, w, h = box
    return {"x": x, "y": y, "w": w, "h": h, "segmentation": mask_to_polygons(mask), "area": float(area)}


def _px(value: float) -> float:
    """Box coordinates to 1/1000 pixel: albumentations computes in float32, finer digits are noise."""
    return round(float(value), 3)


def _plain(value: Any) -> Any:
    """Sampled parameters as small JSON-able values. Large arrays (a noise field, a blur kernel) are recorded by
    shape only: they follow from the seed, and writing them out would cost more than the augmentation."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k != "shape"}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist()) if value.size <= _MAX_ARRAY else f"array{list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] if len(value) <= _MAX_ARRAY else f"sequence[{len(value)}]"
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return round(value, 6)
    if value is None or isinstance(value, (int, str, bool)):
        return value
    return repr(value)
