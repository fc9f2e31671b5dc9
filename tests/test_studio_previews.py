"""Browser-drawable previews for Label Studio, the managed tabs' column settings and the two-column labeling
layout, without a server (the browser checks are in tests/test_studio_ui.py)."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.errors import InputError
from curation.ingest import ingest
from curation.studio.config import CONFIDENCE, DESCRIPTION, IMAGE, LABEL, POLYGONS, SEVERITY, label_config, wanted_views
from curation.studio.mapping import to_label_studio
from curation.studio.previews import make_previews, preview_path, preview_reason
from curation.studio.pull import parse_result
from curation.studio.tasks import build_tasks, storage_folders
from schemas.params import IngestParams
from tests.studio_fixture import make_inputs

MAX_SIDE = 256


def _raw_folder(root: Path) -> Path:
    """One image of each kind under ``root/scratch``: ones Chromium draws and ones it cannot."""
    rng = np.random.default_rng(3)
    folder = root / "scratch"
    folder.mkdir(parents=True)
    rgb = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "plain.jpg")
    Image.fromarray(rgb).save(folder / "plain.bmp")
    Image.fromarray(rgb).save(folder / "plain.webp", lossless=True)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.tif")
    deep = (rng.integers(0, 4096, size=(40, 60))).astype(np.uint16)  # a 12-bit camera in 16-bit words
    Image.fromarray(deep).save(folder / "deep.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "print.jpg")
    big = rng.integers(0, 256, size=(300, 600, 3), dtype=np.uint8)
    Image.fromarray(big).save(folder / "big.png")
    return root


@pytest.fixture
def manifest(tmp_path, params) -> pd.DataFrame:
    raw = _raw_folder(tmp_path / "files" / "raw")
    settings = IngestParams(metadata=None, workers=1)
    frame = ingest(raw, settings, class_names=params.ontology.class_names).manifest
    return frame.set_index(frame["rel_path"].str.split("/").str[-1])


def test_preview_reason_by_format_mode_and_size(manifest) -> None:
    reasons = {
        name: preview_reason(r["format"], r["mode"], r["width"], r["height"], MAX_SIDE)
        for name, r in manifest.iterrows()
    }
    assert reasons == {
        "plain.jpg": None,
        "plain.bmp": None,
        "plain.webp": None,
        "grey.tif": "TIFF",
        "deep.png": f"mode {manifest.loc['deep.png', 'mode']}",
        "print.jpg": "mode CMYK",
        "big.png": "600 px",
    }


def test_previews_are_drawable_capped_cached_by_content_and_leave_originals(manifest, tmp_path) -> None:
    before = {p: p.read_bytes() for p in (tmp_path / "files" / "raw").rglob("*.*")}
    cache = tmp_path / "files" / "previews"
    previews = make_previews(manifest.reset_index(drop=True), cache, max_side=MAX_SIDE)

    needing = {"grey.tif", "deep.png", "print.jpg", "big.png"}
    assert set(previews) == set(manifest.loc[sorted(needing), "image_id"])
    for name in needing:
        row = manifest.loc[name]
        path = previews[row["image_id"]]
        digest = hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()
        assert path == cache / digest[:2] / f"{digest}-{MAX_SIDE}.png"  # named by the content hash
        with Image.open(path) as shown:
            assert shown.format == "PNG" and shown.mode in ("L", "RGB")
            assert max(shown.size) == min(MAX_SIDE, max(row["width"], row["height"]))
            ratio = shown.size[0] / shown.size[1]
            assert ratio == pytest.approx(row["width"] / row["height"], rel=0.01)
            pixels = np.asarray(shown)
    deep = np.asarray(Image.open(previews[manifest.loc["deep.png", "image_id"]]))
    assert deep.min() == 0 and deep.max() == 255  # 12-bit values stretched, not clipped to black
    assert pixels.std() > 10
    assert {p: p.read_bytes() for p in before} == before  # originals untouched
    assert not list(cache.rglob(".*.png"))  # no temporary file left

    stamps = {p: p.stat().st_mtime_ns for p in previews.values()}
    for name in needing:
        Path(manifest.loc[name, "path"]).unlink()  # a second run must not read the originals again
    again = make_previews(manifest.loc[sorted(needing)].reset_index(drop=True), cache, max_side=MAX_SIDE)
    assert again == previews and {p: p.stat().st_mtime_ns for p in again.values()} == stamps


def test_unreadable_original_is_one_clear_error(manifest, tmp_path) -> None:
    row = manifest.loc["grey.tif"]
    Path(row["path"]).write_bytes(b"not a tiff")
    with pytest.raises(InputError, match=r"grey\.tif cannot be read for a preview"):
        make_previews(manifest.reset_index(drop=True), tmp_path / "previews", max_side=MAX_SIDE, manifest_name="m")
    assert not preview_path(tmp_path / "previews", row["sha256"], MAX_SIDE).exists()


def test_tasks_show_the_preview_and_shapes_keep_original_pixels(tmp_path, params) -> None:
    root = tmp_path / "files"
    manifest, predictions = make_inputs(root / "imgs", params.ontology, 2)
    manifest["height"] = 48
    shown = root / "previews" / "ab" / "preview.png"
    previews = {manifest.loc[0, "image_id"]: shown}
    square = [[8, 4, 40, 4, 40, 20, 8, 20]]
    prior = pd.DataFrame(
        {
            "image_id": manifest["image_id"],
            "label": "dent",
            "polygons": [json.dumps(square), None],
        }
    )
    specs = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=root, prior=prior, previews=previews
    )
    by_id = {s.image_id: s for s in specs}
    first, second = by_id[manifest.loc[0, "image_id"]], by_id[manifest.loc[1, "image_id"]]
    assert first.data["image"] == "/data/local-files/?d=previews/ab/preview.png"
    assert first.data["original_size"] == [64, 48]
    assert second.data["image"].startswith("/data/local-files/?d=imgs/") and "original_size" not in second.data
    # the polygon is in percent of the original, so it lands on the same spot of a preview of any size
    (polygon,) = [r for r in first.predictions[0]["result"] if r["type"] == "polygonlabels"]
    assert polygon["value"]["points"][0] == [12.5, pytest.approx(8.3333, abs=1e-4)]

    # a box drawn on a 32x24 preview comes back in the original's 64x48 pixels
    drawn = {
        "from_name": "boxes",
        "to_name": IMAGE,
        "type": "rectanglelabels",
        "original_width": 32,
        "original_height": 24,
        "value": {"x": 25.0, "y": 50.0, "width": 50.0, "height": 25.0, "rectanglelabels": ["dent"]},
    }
    (box,) = json.loads(parse_result([drawn], size=(64, 48))["boxes"])
    assert (box["x"], box["y"], box["w"], box["h"]) == (16.0, 24.0, 32.0, 12.0)
    (on_original,) = json.loads(parse_result([drawn])["boxes"])
    assert (on_original["x"], on_original["w"]) == (8.0, 16.0)  # without a preview the result's own size holds
    on_preview = to_label_studio(POLYGONS, {"segmentation": square, "label": "dent"}, size=(32, 24))
    polygon_back = json.loads(parse_result([on_preview], size=(64, 48))["boxes"])
    assert polygon_back[0]["segmentation"] == [[16.0, 8.0, 80.0, 8.0, 80.0, 40.0, 16.0, 40.0]]


def test_severity_prefilled_only_from_the_predictions(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 3)
    level = params.ontology.severity_names[-1]
    predictions["severity"] = [level, None, ""]
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)
    severities = {
        s.image_id: [r["value"]["choices"] for r in s.predictions[0]["result"] if r["from_name"] == SEVERITY]
        for s in specs
    }
    assert severities == {
        manifest.loc[0, "image_id"]: [[level]],
        manifest.loc[1, "image_id"]: [],
        manifest.loc[2, "image_id"]: [],
    }
    predictions["severity"] = ["catastrophic", None, None]
    with pytest.raises(InputError, match=r"preds: rows 1 have a severity that is not an ontology severity"):
        build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, predictions_name="preds")


def test_label_config_puts_the_controls_beside_the_image(params) -> None:
    root = ET.fromstring(label_config(params.ontology, boxes=True))
    left, right = list(root)
    assert "display: flex" in root.get("style")
    assert [e.tag for e in left] == ["RectangleLabels", "PolygonLabels", "Image"]
    names = [e.get("name") for e in right if e.get("name")]
    assert names == [LABEL, SEVERITY, CONFIDENCE, DESCRIPTION]
    confidence = right.find("Number")
    assert (confidence.get("name"), confidence.get("min"), confidence.get("max")) == (CONFIDENCE, "0", "100")


def test_managed_tabs_carry_column_settings(params) -> None:
    views = wanted_views()
    for data in views.values():
        hidden = data["hiddenColumns"]
        for column in ("tasks:completed_at", "tasks:annotators", "tasks:predictions_score"):
            assert column not in hidden["explore"]  # shown, so Label Studio computes them
        assert data["columnsDisplayType"]["tasks:data.margin"] == "Number"
        assert data["columnsDisplayType"]["tasks:data.entropy"] == "Number"
        assert data["columnsDisplayType"]["tasks:data.queue"] == "Number"
        assert data["ordering"] == ["tasks:data.queue"]  # the review queue (curation.studio.order)
    flagged = next(v for v in views.values() if v["filters"]["items"])
    assert flagged["filters"]["items"][0]["filter"] == "filter:tasks:data.adjudicate"


def test_storages_cover_the_preview_cache_not_the_studio_home(tmp_path, params) -> None:
    root = tmp_path / "files"
    manifest, predictions = make_inputs(root / "data" / "raw", params.ontology, 3)
    cache = root / ".studio" / "previews"
    (root / ".studio" / "credentials.json").parent.mkdir(parents=True)
    previews = {manifest.loc[0, "image_id"]: preview_path(cache, "ab" * 32, 2048)}
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=root, previews=previews)
    assert storage_folders(specs, root) == [root / "data" / "raw", cache]  # not root / ".studio"

    at_root = {manifest.loc[0, "image_id"]: preview_path(root, "ab" * 32, 2048)}
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=root, previews=at_root)
    with pytest.raises(InputError, match=r"labelstudio\.preview_dir is the document root"):
        storage_folders(specs, root)
