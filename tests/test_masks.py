"""Masks beside the images: found by layout and pixels, never ingested as images, imported as region labels.

Small hand-made folders for each rule, and the real magnetic-tile data set (image + mask pairs) when present.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from curation.ingest import ingest, write_ingest
from curation.masks import mask_regions
from curation.shapes import polygons_area, rasterise
from schemas.params import IngestParams, Params
from tests.conftest import ROOT, write_image

MAGNETIC = Path(
    os.environ.get("MAGNETIC_TILE_DIR", ROOT.parent / "shared" / "datasets" / "magnetic-tile")
)  # MT_<Class>/Imgs/<name>.jpg + <name>.png
MT_MAP = {"MT_Free": "ok", "MT_Crack": "crack", "MT_Uneven": "discoloration"}


def _run(raw: Path, params: Params, **overrides):
    # labels of no ontology class (the masks' "defect", made-up classes) are kept as new classes, as with `add`
    settings = IngestParams(**{"metadata": None, "workers": 1, "unmapped_labels": "add", **overrides})
    return ingest(raw, settings, class_names=params.ontology.class_names)


def write_mask(path: Path, size: tuple[int, int], boxes: list[tuple[int, int, int, int]], value: int = 255) -> Path:
    """A mode-L mask of ``size`` (w, h), black with ``value`` in each (x, y, w, h) box."""
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    for x, y, w, h in boxes:
        pixels[y : y + h, x : x + w] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def _accounted(report: dict) -> int:
    return report["ingested"] + report["duplicate_copies"] + report["quarantined"] + report["masks"]


# --- regions ---------------------------------------------------------------------------------------------------


def test_regions_are_8_connected_with_pixel_boxes_and_outlines_on_pixel_edges() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:4, 2:5] = True  # a 3 x 3 square
    mask[4, 5] = True  # touches the square's corner only: the same 8-connected region
    mask[7, 9] = True  # a single pixel
    regions = mask_regions(mask)

    assert [r.box for r in regions] == [(2.0, 1.0, 4.0, 4.0), (9.0, 7.0, 1.0, 1.0)]
    assert [r.area for r in regions] == [10.0, 1.0]
    for region in regions:
        (polygon,) = region.polygons
        xs, ys = polygon[0::2], polygon[1::2]
        x, y, w, h = region.box
        assert (min(xs), min(ys), max(xs), max(ys)) == (x, y, x + w, y + h)  # the outline touches the box
        assert len(polygon) >= 6 and polygons_area([polygon], *mask.shape) > 0  # valid COCO polygon, even for one pixel
    # a pixel is the unit square of its corners, and each outline rasterises back to its pixels (as COCO tools do)
    assert sorted(zip(regions[1].polygons[0][0::2], regions[1].polygons[0][1::2], strict=True)) == [
        (9.0, 7.0),
        (9.0, 8.0),
        (10.0, 7.0),
        (10.0, 8.0),
    ]
    first = np.zeros_like(mask)
    first[1:4, 2:5] = first[4, 5] = True
    assert (rasterise(regions[0].polygons, *mask.shape) == first).all()


def test_a_hole_is_covered_by_the_polygon_but_not_counted_in_the_area() -> None:
    mask = np.zeros((7, 7), dtype=bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False
    (region,) = mask_regions(mask)
    assert region.area == 24.0
    assert len(region.polygons) == 1


# --- layouts ---------------------------------------------------------------------------------------------------


def test_same_stem_mask_beside_its_image_becomes_region_labels_not_an_image(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "scratch" / "a.jpg", seed=1, size=(64, 48), quality=95)
    write_mask(raw / "scratch" / "a.png", (64, 48), [(4, 4, 10, 6), (40, 20, 8, 8)])
    write_image(raw / "ok" / "b.jpg", seed=2, size=(64, 48), quality=95)
    write_mask(raw / "ok" / "b.png", (64, 48), [])  # all black: no defect
    result = _run(raw, params, labels="folders")

    assert sorted(result.manifest["rel_path"]) == ["ok/b.jpg", "scratch/a.jpg"]
    report = result.report
    assert (report["files_seen"], report["masks"], report["mask_regions"], report["masks_empty"]) == (4, 2, 2, 1)
    assert report["files_seen"] == _accounted(report)
    masks = result.masks.set_index("rel_path")
    assert masks.loc["scratch/a.png", ["image_rel_path", "status", "regions"]].tolist() == ["scratch/a.jpg", "used", 2]
    prior = result.prior_labels
    from_masks = prior[prior["source_format"] == "masks"].sort_values(["rel_path", "x"])
    # the folder gives the class, the mask the regions; the OK image gets one image-level row
    assert from_masks[["rel_path", "source_label", "label"]].values.tolist() == [
        ["ok/b.jpg", "ok", "ok"],
        ["scratch/a.jpg", "scratch", "scratch"],
        ["scratch/a.jpg", "scratch", "scratch"],
    ]
    boxes = from_masks.dropna(subset=["x"])
    assert boxes[["x", "y", "w", "h", "area"]].values.tolist() == [[4, 4, 10, 6, 60], [40, 20, 8, 8, 64]]
    assert from_masks["polygons"].isna().tolist() == [True, False, False]
    assert json.loads(boxes["polygons"].iloc[0])[0][:2] == [4.0, 4.0]  # the top-left corner of the region
    assert result.issues.empty


def test_masks_without_labels_use_the_defect_and_ok_labels(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "a.jpg", seed=3, quality=95)
    write_mask(raw / "a_mask.png", (64, 48), [(0, 0, 5, 5)], value=1)  # an index mask: 0 / 1
    write_image(raw / "b.jpg", seed=4, quality=95)
    write_mask(raw / "b-mask.png", (64, 48), [])
    prior = _run(raw, params, label_map={"defect": "scratch"}).prior_labels.sort_values("rel_path")

    assert prior[["rel_path", "source_label", "label", "w", "area"]].values.tolist()[0] == [
        "a.jpg",
        "defect",
        "scratch",
        5.0,
        25.0,
    ]
    assert prior[["rel_path", "source_label", "label"]].values.tolist()[1] == ["b.jpg", "ok", "ok"]
    assert pd.isna(prior["w"].iloc[1])


def test_mvtec_ground_truth_tree_is_matched_by_its_path_below_the_tree(tmp_path, params) -> None:
    raw = tmp_path / "bottle"
    write_image(raw / "test" / "crack" / "000.png", seed=5, size=(32, 32))
    write_image(raw / "test" / "good" / "000.png", seed=6, size=(32, 32))
    write_image(raw / "train" / "good" / "000.png", seed=7, size=(32, 32))
    write_mask(raw / "ground_truth" / "crack" / "000_mask.png", (32, 32), [(8, 8, 4, 4)])
    write_mask(raw / "ground_truth" / "scratch" / "000_mask.png", (32, 32), [(1, 1, 2, 2)])  # no such image
    result = _run(raw, params)

    assert "ground_truth" not in " ".join(result.manifest["rel_path"])
    masks = result.masks.set_index("rel_path")
    assert masks.loc["ground_truth/crack/000_mask.png", "image_rel_path"] == "test/crack/000.png"
    assert masks.loc["ground_truth/scratch/000_mask.png", "status"] == "no_image"
    assert result.prior_labels["rel_path"].tolist() == ["test/crack/000.png"]
    issues = result.issues.set_index("source")
    assert issues.loc["ground_truth/scratch/000_mask.png", "kind"] == "mask"
    assert "scratch/000" in issues.loc["ground_truth/scratch/000_mask.png", "detail"]
    assert result.report["files_seen"] == _accounted(result.report) == 5


def test_files_that_only_look_like_masks_stay_images(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "photo.jpg", seed=8, quality=95)
    write_image(raw / "photo.png", seed=9)  # two photos with one stem: both images, nothing to say
    write_mask(raw / "pair.png", (64, 48), [(1, 1, 9, 9)])
    write_mask(raw / "pair.bmp", (64, 48), [(2, 2, 9, 9)])  # two binary-like files: which is the mask?
    write_image(raw / "small.jpg", seed=10, quality=95)
    write_mask(raw / "small.png", (32, 24), [(1, 1, 3, 3)])  # binary-like but not the image's size
    write_mask(raw / "lonely.png", (64, 48), [(1, 1, 3, 3)])  # binary-like, no partner: a (strange) image
    result = _run(raw, params)

    assert result.report["masks"] == 0
    assert set(result.manifest["rel_path"]) == {
        "photo.jpg",
        "photo.png",
        "pair.png",
        "pair.bmp",
        "small.jpg",
        "small.png",
        "lonely.png",
    }
    issues = result.issues.set_index("source")["detail"]
    assert "cannot tell which is the mask" in issues["pair.png"]
    assert "cannot tell which is the mask" in issues["pair.bmp"]
    assert "32x24" in issues["small.png"] and "kept as an image" in issues["small.png"]
    assert len(issues) == 3


def test_unusable_named_masks_are_listed_and_reported_never_ingested(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "a.jpg", seed=15, quality=95)
    write_mask(raw / "a_mask.png", (32, 24), [(1, 1, 3, 3)])  # not the image's size
    (raw / "b.jpg").write_bytes(b"not an image")
    write_mask(raw / "b_mask.png", (64, 48), [(1, 1, 3, 3)])  # its image is quarantined
    write_image(raw / "c.jpg", seed=16, quality=95)
    write_image(raw / "c.png", seed=17)
    write_mask(raw / "c_mask.png", (64, 48), [])  # two images are called c
    result = _run(raw, params)

    statuses = result.masks.set_index("rel_path")["status"].to_dict()
    assert statuses == {"a_mask.png": "size_mismatch", "b_mask.png": "image_quarantined", "c_mask.png": "ambiguous"}
    assert set(result.manifest["rel_path"]) == {"a.jpg", "c.jpg", "c.png"}
    assert result.prior_labels.empty
    mask_issues = result.issues[result.issues["kind"] == "mask"].set_index("source")["detail"]
    assert set(mask_issues.index) == set(statuses)
    assert "32x24" in mask_issues["a_mask.png"] and "c.jpg, c.png" in mask_issues["c_mask.png"]
    assert result.report["files_seen"] == _accounted(result.report) == 7


def test_masks_off_ingests_every_file_as_an_image(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "a.jpg", seed=11, quality=95)
    write_mask(raw / "a.png", (64, 48), [(4, 4, 10, 6)])
    result = _run(raw, params, masks="off")
    assert sorted(result.manifest["rel_path"]) == ["a.jpg", "a.png"]
    assert result.report["masks"] == 0 and result.prior_labels.empty


def test_contradicting_mask_and_class_are_reported(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "scratch" / "a.jpg", seed=12, quality=95)
    write_mask(raw / "scratch" / "a.png", (64, 48), [])  # all black, but the folder says scratch
    write_image(raw / "ok" / "b.jpg", seed=13, quality=95)
    write_mask(raw / "ok" / "b.png", (64, 48), [(3, 3, 4, 4)])  # a defect region on an OK image
    result = _run(raw, params, labels="folders")
    issues = result.issues.set_index("source")["detail"]
    assert "all black" in issues["scratch/a.png"] and "'scratch'" in issues["scratch/a.png"]
    assert "1 defect region" in issues["ok/b.png"]
    region = result.prior_labels.dropna(subset=["x"])
    # `defect` is added as a class (unmapped_labels: add)
    assert region[["rel_path", "source_label", "label"]].values.tolist() == [["ok/b.jpg", "defect", "defect"]]


def test_outputs_with_masks_are_identical_on_rerun(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "a.jpg", seed=14, quality=95)
    write_mask(raw / "a.png", (64, 48), [(4, 4, 10, 6), (30, 30, 3, 3)])
    for out in ("first", "second"):
        write_ingest(_run(raw, params), tmp_path / out)
    for path in sorted((tmp_path / "first").iterdir()):
        assert path.read_bytes() == (tmp_path / "second" / path.name).read_bytes(), path.name
    masks_csv = pd.read_csv(tmp_path / "first" / "masks.csv")
    assert masks_csv[["rel_path", "image_rel_path", "status", "regions"]].values.tolist() == [
        ["a.png", "a.jpg", "used", 2]
    ]


# --- magnetic tile ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def magnetic(params):
    if not MAGNETIC.is_dir():
        pytest.skip(f"magnetic-tile not present at {MAGNETIC} (set MAGNETIC_TILE_DIR)")
    settings = IngestParams(metadata=None, labels="folders", label_map=MT_MAP, workers=0, unmapped_labels="add")
    start = time.perf_counter()
    result = ingest(MAGNETIC, settings, class_names=params.ontology.class_names)
    print(f"\nmagnetic-tile ingest: {time.perf_counter() - start:.1f} s")
    return result


def _independent_regions() -> dict[str, Counter]:
    """Per class folder: images, regions and all-black masks, counted with scipy (not the code under test)."""
    counts: dict[str, Counter] = {}
    eight = np.ones((3, 3), dtype=bool)
    for mask_path in sorted(MAGNETIC.glob("MT_*/Imgs/*.png")):
        pixels = np.asarray(Image.open(mask_path))
        defect = pixels > 0 if len(np.unique(pixels)) <= 3 else pixels >= 128
        _, n = ndimage.label(defect, structure=eight)
        found = counts.setdefault(mask_path.parts[-3], Counter())
        found["images"] += 1
        found["regions"] += n
        found["black"] += n == 0
    return counts


@pytest.mark.slow
def test_magnetic_tile_masks_become_labels_never_images(magnetic) -> None:
    report = magnetic.report
    assert report["files_seen"] == 2688 == _accounted(report)
    assert (report["ingested"], report["masks"], report["quarantined"]) == (1344, 1344, 0)
    assert report["masks_by_status"] == {"used": 1344}
    assert not magnetic.manifest["rel_path"].str.endswith(".png").any()  # 0 masks as images
    expected = _independent_regions()
    assert {k: v["images"] for k, v in expected.items()} == {
        "MT_Blowhole": 115,
        "MT_Break": 85,
        "MT_Crack": 57,
        "MT_Fray": 32,
        "MT_Free": 952,
        "MT_Uneven": 103,
    }  # the data set's own counts (SOURCE.md)
    prior = magnetic.prior_labels
    folders = prior[prior["source_format"] == "folders"]
    assert folders["source_label"].value_counts().to_dict() == {k: v["images"] for k, v in expected.items()}
    from_masks = prior[prior["source_format"] == "masks"]
    regions = from_masks.dropna(subset=["x"])
    assert regions["source_label"].value_counts().to_dict() == {
        k: v["regions"] for k, v in expected.items() if v["regions"]
    }
    assert report["mask_regions"] == sum(v["regions"] for v in expected.values())
    black = from_masks[from_masks["x"].isna()]
    assert black["source_label"].value_counts().to_dict() == {k: v["black"] for k, v in expected.items() if v["black"]}
    # Free images are OK: their masks are all black, their label is the ontology's ok class
    assert set(black.loc[black["source_label"] == "MT_Free", "label"]) == {"ok"}
    # the 4 all-black Uneven masks contradict their folder, and say so
    mask_issues = magnetic.issues[magnetic.issues["kind"] == "mask"]
    assert len(mask_issues) == expected["MT_Uneven"]["black"] == 4
    assert mask_issues["detail"].str.contains("all black").all()


@pytest.mark.slow
def test_magnetic_tile_regions_match_the_masks(magnetic) -> None:
    regions = magnetic.prior_labels.dropna(subset=["x"])
    # per image: the regions' areas add up to the mask's defect pixels (counted here, independently)
    sample = regions.drop_duplicates("rel_path").head(40)["rel_path"]
    for rel in sample:
        pixels = np.asarray(Image.open(MAGNETIC / rel.replace(".jpg", ".png")))
        defect = pixels > 0 if len(np.unique(pixels)) <= 3 else pixels >= 128
        assert regions.loc[regions["rel_path"] == rel, "area"].sum() == defect.sum(), rel
    for polygons, x, y, w, h in regions[["polygons", "x", "y", "w", "h"]].itertuples(index=False):
        points = np.array(json.loads(polygons)[0]).reshape(-1, 2)
        assert points[:, 0].min() == x and points[:, 0].max() == x + w
        assert points[:, 1].min() == y and points[:, 1].max() == y + h
    # no near-duplicate group of masks: the groups hold photos only
    assert magnetic.manifest["rel_path"].str.endswith(".jpg").all()
