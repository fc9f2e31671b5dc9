"""Anomaly results in FiftyOne, on real magnetic-tile images: heatmap, score, regions, the view, region similarity.

The predictions are made here the way the prelabel stage writes them (issue-16 contract), from the data set's own
defect masks: the map is the blurred mask as a uint8 PNG beside the predictions file, the regions are the mask's
8-connected components (pixel boxes, polygons). Expected values (relative boxes, the view's order) are computed
here from the masks, not by the code under test. The App test serves the built dataset with `curation browse`,
checks that the App's /media answers the map PNG, opens the most anomalous sample in headless chromium and saves a
screenshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.browse.anomaly import REGION_SIMILARITY_KEY, SIDEBAR_FIELDS
from curation.browse.app import media_paths
from curation.browse.build import BuildSummary, build_dataset
from curation.browse.inputs import read_inputs
from curation.shapes import mask_to_polygons
from schemas.params import Params
from schemas.params_browse import BrowseParams
from tests.chromium import CHROMIUM, FLAGS, MISSING
from tests.conftest import BrowseDb
from tests.test_browse import running_app

TILES = Path(os.environ.get("MAGNETIC_TILE_DIR", "/work/shared/datasets/magnetic-tile"))
DEFECT_CLASSES = ("MT_Blowhole", "MT_Crack")
PER_CLASS = 2
THRESHOLD = 1.0  # the calibrated threshold of these made-up scores: map value 128 ~ score 1.0
OPENED = 2  # the grid position opened in the App: the first crack (longer than a blowhole, easy to see)


@dataclass(frozen=True)
class Tiles:
    name: str
    root: Path
    manifest: pd.DataFrame
    predictions: pd.DataFrame
    predictions_path: Path
    masks: dict[str, np.ndarray]  # image_id -> bool mask (defect images only)
    kind: dict[str, str]  # image_id -> magnetic-tile class


def _images() -> list[tuple[str, Path]]:
    if not TILES.is_dir():
        pytest.skip(f"magnetic-tile dataset not found at {TILES}")
    chosen = []
    for folder in (*DEFECT_CLASSES, "MT_Free"):
        masks = sorted((TILES / folder / "Imgs").glob("*.png"))
        keep = [m for m in masks if (np.asarray(Image.open(m)) > 127).any()] if folder != "MT_Free" else masks
        chosen += [(folder, m.with_suffix(".jpg")) for m in keep[: PER_CLASS if folder != "MT_Free" else 1]]
    return chosen


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's 8-connected components, largest first."""
    count, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    found = [parts == k for k in range(1, count)]
    return sorted(found, key=lambda part: -int(part.sum()))


def _region(part: np.ndarray, heat: np.ndarray) -> dict:
    ys, xs = np.nonzero(part)
    x, y = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) + 1 - x, int(ys.max()) + 1 - y
    return {
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "score": round(float(heat[part].max()) / 255.0 * 2 * THRESHOLD, 4),
        "area": int(part.sum()),
        "polygons": mask_to_polygons(part.astype(np.uint8)),
        "cell": "middle center",
        "clock": 12,
        "shape": "spot",
        "orientation": "horizontal",
        "size_px": [w, h],
        "size_mm": None,
        "severity": "minor",
    }


def _make_tiles(root: Path, name: str) -> Tiles:
    pred_dir = root / "prelabel"
    (pred_dir / "anomaly_maps").mkdir(parents=True, exist_ok=True)
    manifest_rows, prediction_rows, masks, kind = [], [], {}, {}
    for rank, (folder, image) in enumerate(_images()):
        data = image.read_bytes()
        image_id = hashlib.sha256(data).hexdigest()[:16]
        width, height = Image.open(image).size
        manifest_rows.append(
            {
                "image_id": image_id,
                "path": str(image),
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": width,
                "height": height,
                "format": "JPEG",
                "exif_orientation": 1,
            }
        )
        mask = np.asarray(Image.open(image.with_suffix(".png")).convert("L")) > 127
        heat = cv2.GaussianBlur(mask.astype(np.uint8) * 255, (0, 0), sigmaX=3)
        heat = np.maximum(heat, 20).astype(np.uint8)  # normal surface: low but not zero
        Image.fromarray(heat).save(pred_dir / "anomaly_maps" / f"{image_id}.png")
        defect = folder != "MT_Free"
        regions = [_region(p, heat) for p in _components(mask)] if defect else []
        if defect:
            masks[image_id] = mask
        kind[image_id] = folder
        score = 2.0 - 0.1 * rank if defect else 0.3  # distinct, so the view's order is known
        prediction_rows.append(
            {
                "image_id": image_id,
                "label": "defect" if defect else "ok",
                "score": 0.9,
                "margin": 0.8,
                "entropy": 0.3,
                "top_hard_negative": None,
                "source": "anomaly",
                "model_name": "efficientnet-lite0",
                "model_version": "test",
                "anomaly_score": score,
                "anomaly_defect": score > THRESHOLD,
                "anomaly_reference": "none",
                "anomaly_map": f"anomaly_maps/{image_id}.png",
                "regions": json.dumps(regions),
            }
        )
    manifest_path = root / "ingest" / "manifest.parquet"
    manifest_path.parent.mkdir(exist_ok=True)
    manifest = pd.DataFrame(manifest_rows)
    manifest.to_parquet(manifest_path)
    predictions = pd.DataFrame(prediction_rows)
    predictions_path = pred_dir / "predictions.parquet"
    predictions.to_parquet(predictions_path)
    return Tiles(name, root, manifest, predictions, predictions_path, masks, kind)


def _build(made: Tiles, browse_db: BrowseDb, params: Params, version: str, **settings: Any) -> BuildSummary:
    """Build dataset ``made.name`` from the tiles' manifest and predictions (``settings``: more BrowseParams)."""
    inputs = read_inputs(
        {"manifest": made.root / "ingest" / "manifest.parquet", "predictions": made.predictions_path}, on_skip=None
    )
    return build_dataset(
        inputs,
        name=made.name,
        version=version,
        class_names=params.ontology.class_names,
        settings=BrowseParams(db_dir=browse_db.root / ".fiftyone", uniqueness=False, **settings),
        base_dir=made.root,
    )


@pytest.fixture(scope="module")
def tiles(browse_db: BrowseDb, params: Params) -> Iterator[Tiles]:
    import fiftyone as fo

    made = _make_tiles(browse_db.root / "anomaly", "defect-curation-anomalytest")
    summary = _build(made, browse_db, params, "anomalytest")
    assert REGION_SIMILARITY_KEY in summary.brain_runs, summary.issues
    assert summary.views["most-anomalous"] == len(made.manifest)
    yield made
    fo.delete_dataset(made.name)


def _samples(name: str) -> dict:
    import fiftyone as fo

    return {s["image_id"]: s for s in fo.load_dataset(name)}


def test_heatmap_score_and_defect_call_per_image(tiles: Tiles) -> None:
    import fiftyone as fo

    samples = _samples(tiles.name)
    dataset = fo.load_dataset(tiles.name)
    served = media_paths(dataset)
    for row in tiles.predictions.itertuples():
        sample = samples[row.image_id]
        expected = str((tiles.predictions_path.parent / "anomaly_maps" / f"{row.image_id}.png").resolve())
        assert isinstance(sample["anomaly"], fo.Heatmap)
        assert sample["anomaly"].map_path == expected and Path(expected).is_file()
        assert list(sample["anomaly"].range) == [0, 255]
        assert expected in served  # the App's /media allow-list serves the map
        assert sample["anomaly_score"] == pytest.approx(row.anomaly_score)
        assert sample["anomaly_defect"] is bool(row.anomaly_score > THRESHOLD)
        assert sample["anomaly_reference"] == "none"
    groups = {g.name: g.paths for g in dataset.app_config.sidebar_groups}
    assert groups["anomaly"] == [f for f in SIDEBAR_FIELDS if f in dataset.get_field_schema()]
    assert "anomaly" in groups["anomaly"] and "anomaly_regions" in groups["anomaly"]


def test_regions_are_relative_boxes_and_polygons_of_the_mask(tiles: Tiles) -> None:
    samples = _samples(tiles.name)
    for image_id, mask in tiles.masks.items():
        height, width = mask.shape
        parts = _components(mask)
        detections = samples[image_id]["anomaly_regions"].detections
        assert len(detections) == len(parts)
        for part, detection in zip(parts, detections, strict=True):
            ys, xs = np.nonzero(part)
            expected = [
                xs.min() / width,
                ys.min() / height,
                (xs.max() + 1 - xs.min()) / width,
                (ys.max() + 1 - ys.min()) / height,
            ]
            assert detection.bounding_box == pytest.approx(expected)
            assert detection.label == "defect" and detection["cell"] == "middle center"
            assert detection["size_px"] == [int(xs.max() + 1 - xs.min()), int(ys.max() + 1 - ys.min())]
        polylines = samples[image_id]["anomaly_polygons"].polylines
        assert len(polylines) == len(parts) and all(p.closed and not p.filled for p in polylines)
        first = np.array(polylines[0].points[0]) * [width, height]
        ys, xs = np.nonzero(parts[0])
        # the outline of the largest component spans its pixel box (polygon vertices sit on pixel corners)
        assert first[:, 0].min() == pytest.approx(xs.min()) and first[:, 0].max() == pytest.approx(xs.max() + 1)
    ok = [i for i, k in tiles.kind.items() if k == "MT_Free"]
    assert ok and all(samples[i]["anomaly_regions"] is None for i in ok)  # regions [] for an image called OK


def test_most_anomalous_view_orders_by_score(tiles: Tiles) -> None:
    import fiftyone as fo

    view = fo.load_dataset(tiles.name).load_saved_view("most-anomalous")
    expected = tiles.predictions.sort_values("anomaly_score", ascending=False)["image_id"].tolist()
    assert view.values("image_id") == expected


def test_region_similarity_finds_crops_of_the_same_defect_type(tiles: Tiles) -> None:
    import fiftyone as fo

    dataset = fo.load_dataset(tiles.name)
    info = dataset.get_brain_info(REGION_SIMILARITY_KEY)
    assert info.config.patches_field == "anomaly_regions"
    patches = dataset.to_patches("anomaly_regions")
    n_regions = sum(len(_components(m)) for m in tiles.masks.values())
    assert len(patches) == n_regions
    image_of = dict(zip(*dataset.values(["id", "image_id"]), strict=True))
    kind_of = {patch: image_of[sample] for patch, sample in zip(*patches.values(["id", "sample_id"]), strict=True)}
    same = 0
    queries = patches.values("id")
    for query in queries:
        ranked = patches.sort_by_similarity(query, brain_key=REGION_SIMILARITY_KEY, k=2).values("id")
        assert ranked[0] == query  # a crop is nearest to itself
        assert len(ranked) == 2 and ranked[1] in kind_of
        same += tiles.kind[kind_of[ranked[1]]] == tiles.kind[kind_of[query]]
    # ImageNet features, no training: most crops' nearest other crop shows the same kind of defect
    assert same / len(queries) >= 0.75, f"{same} of {len(queries)} nearest crops of the same defect type"


def test_old_predictions_without_anomaly_columns_give_a_note(browse_db: BrowseDb, tmp_path: Path, params) -> None:
    import fiftyone as fo

    made = _make_tiles(tmp_path, "defect-curation-anomalyold")
    old = made.predictions.drop(columns=["anomaly_score", "anomaly_defect", "anomaly_reference", "anomaly_map"])
    old = old.drop(columns=["regions"]).assign(source="zero_shot")
    old.to_parquet(made.predictions_path)
    summary = _build(made, browse_db, params, "anomalyold")
    try:
        schema = fo.load_dataset(made.name).get_field_schema()
        assert not {f for f in schema if f.startswith("anomaly")}
        assert "most-anomalous" not in summary.views
        assert any("no anomaly columns" in issue for issue in summary.issues), summary.issues
    finally:
        fo.delete_dataset(made.name)


def test_bad_regions_json_names_the_row(browse_db: BrowseDb, tmp_path: Path, params) -> None:
    from curation.browse.errors import BrowseInputError

    made = _make_tiles(tmp_path, "defect-curation-anomalybad")
    made.predictions.assign(regions=['[{"x": 1}]'] * len(made.predictions)).to_parquet(made.predictions_path)
    with pytest.raises(BrowseInputError, match=r"row 0 .*regions cannot be read"):
        _build(made, browse_db, params, "anomalybad")


def test_region_index_is_capped_to_the_most_anomalous_images(browse_db: BrowseDb, tmp_path: Path, params) -> None:
    import fiftyone as fo

    made = _make_tiles(tmp_path, "defect-curation-anomalycap")
    ranked = made.predictions.sort_values("anomaly_score", ascending=False)
    per_image = [len(json.loads(r)) for r in ranked["regions"]]
    cap = per_image[0] + per_image[1]  # room for the two most anomalous images only
    summary = _build(made, browse_db, params, "anomalycap", region_index_max_crops=cap)
    try:
        dataset = fo.load_dataset(made.name)
        index = dataset.load_brain_results(REGION_SIMILARITY_KEY)
        assert index.total_index_size == cap
        indexed = set(dataset.select(index.sample_ids).values("image_id"))
        assert indexed == set(ranked["image_id"].iloc[:2])
        left = sum(per_image) - cap
        assert any(f"{left} region crop(s)" in issue for issue in summary.issues), summary.issues
        assert len(dataset.exists("anomaly_regions")) == sum(n > 0 for n in per_image)  # all still shown
    finally:
        fo.delete_dataset(made.name)


@pytest.mark.skipif(CHROMIUM is None, reason=MISSING)
def test_app_shows_the_heatmap_and_regions(browse_db: BrowseDb, tiles: Tiles, tmp_path: Path) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    top = tiles.predictions.sort_values("anomaly_score", ascending=False).iloc[OPENED]
    map_path = str((tiles.predictions_path.parent / top["anomaly_map"]).resolve())
    with running_app(browse_db, "anomalytest", tmp_path / "browse.log") as (url, port):
        media = f"http://127.0.0.1:{port}/media?filepath={urllib.parse.quote(map_path)}"
        with urllib.request.urlopen(media, timeout=30) as answer:
            assert answer.status == 200 and answer.read() == Path(map_path).read_bytes()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url.split("?")[0] + "?view=most-anomalous", wait_until="load", timeout=120_000)
            page.locator("[data-cy=looker]").first.wait_for(timeout=120_000)
            with contextlib.suppress(PlaywrightTimeout):  # FiftyOne's "Explore Enterprise" popover, when it shows
                page.get_by_text("Dismiss", exact=True).first.click(timeout=10_000)
            page.locator("[data-cy=looker]").nth(OPENED).click(timeout=60_000)
            modal = page.locator("[data-cy=checkbox-anomaly]")
            page.wait_for_function("n => document.querySelectorAll(n).length > 1", arg="[data-cy=checkbox-anomaly]")
            page.locator("[data-cy=checkbox-anomaly_polygons]").last.click(timeout=30_000)  # outlines off: see the map
            page.wait_for_timeout(3000)
            page.screenshot(path=str(tmp_path / "without-heatmap.png"))
            # heatmaps are off by default (FiftyOne leaves dense labels off); tick "anomaly" in the modal's sidebar
            with page.expect_response(lambda r: map_path in urllib.parse.unquote(r.url), timeout=60_000) as heatmap:
                modal.last.click(timeout=30_000)  # the App fetches the map through /media
            assert heatmap.value.ok
            page.wait_for_timeout(4000)
            page.screenshot(path=str(tmp_path / "modal.png"))
            browser.close()
        # the heatmap is drawn red (opacity = map value): ticking it turns the crack's pixels red
        added = _red_pixels(tmp_path / "modal.png") - _red_pixels(tmp_path / "without-heatmap.png")
        assert added > 2000, f"only {added} more red pixels with the heatmap on"
        if os.environ.get("BROWSE_ANOMALY_SCREENSHOT"):  # keep it (docs/screens/fiftyone-anomaly.png)
            Path(os.environ["BROWSE_ANOMALY_SCREENSHOT"]).write_bytes((tmp_path / "modal.png").read_bytes())


def _red_pixels(path: Path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((red > 110) & (green < 70) & (blue < 70) & (red - green > 70)).sum())


def test_crop_keeps_context_and_stays_inside_the_image() -> None:
    from curation.browse.anomaly import crop_box

    # 20x10 box: 25% context each side gives 30x15, then the 32-pixel minimum, centred on (50, 35)
    assert crop_box(100, 80, {"x": 40, "y": 30, "w": 20, "h": 10}) == (34, 19, 66, 51)
    # a 4-pixel spot in the corner: 32x32 around (2, 2), cut at the image border
    assert crop_box(100, 80, {"x": 0, "y": 0, "w": 4, "h": 4}) == (0, 0, 18, 18)
    # a box as large as the image: the whole image
    assert crop_box(100, 80, {"x": 0, "y": 0, "w": 100, "h": 80}) == (0, 0, 100, 80)


def test_region_crop_embeddings_are_cached_by_image_and_region(tmp_path: Path) -> None:
    """A rebuild (same images, same regions: e.g. after new reviews) embeds no crop again; a moved region is a new
    crop. The cached vectors are the computed ones."""
    from curation.browse.anomaly import region_embeddings
    from curation.prelabel.cache import PrelabelCache
    from curation.prelabel.images import ImageRef
    from curation.prelabel.models import OfflineBackbone, Runtime

    images = []
    for row, (_, path) in enumerate(_images()[:2]):
        mask = np.asarray(Image.open(path.with_suffix(".png")).convert("L")) > 127
        regions = [_region(part, mask.astype(np.uint8)) for part in _components(mask)]
        images.append((ImageRef(str(path), hashlib.sha256(path.read_bytes()).hexdigest(), 1, row), regions))
    n_crops = sum(len(regions) for _, regions in images)
    assert n_crops >= 2
    backbone = OfflineBackbone(Runtime("cpu", "float32"))
    plain = region_embeddings(images, backbone)

    def cached_run(which: list) -> tuple[list[np.ndarray], dict[str, int]]:
        stats: dict[str, int] = {}
        with PrelabelCache(tmp_path / "cache") as cache:
            return region_embeddings(which, backbone, cache=cache, stats=stats), stats

    (first, first_stats), (second, second_stats) = cached_run(images), cached_run(images)
    assert first_stats == {"crops_cached": 0, "crops_computed": n_crops}
    assert second_stats == {"crops_cached": n_crops, "crops_computed": 0}
    for computed, cached, direct in zip(first, second, plain, strict=True):
        assert np.array_equal(computed, direct) and np.array_equal(cached, direct)
    ref, regions = images[0]
    moved = [(ref, [{**regions[0], "x": float(regions[0]["x"]) + 7}, *regions[1:]])]
    assert cached_run(moved)[1] == {"crops_cached": len(regions) - 1, "crops_computed": 1}
