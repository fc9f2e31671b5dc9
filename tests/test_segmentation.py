"""Regions with shapes (mask / polygon labels) through split, export and augment, on real magnetic-tile masks."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from augment import Source, augment_all
from curation.augment_stage import augment
from curation.export import export
from curation.shapes import mask_to_polygons
from curation.split import SplitError, image_labels, split
from schemas.params_dataset import AugmentParams, ExportParams, SplitParams, TransformSpec
from schemas.records import PriorLabel, columns

TILES = Path(os.environ.get("MAGNETIC_TILE_DIR", "/work/shared/datasets/magnetic-tile"))
CRACK = TILES / "MT_Crack" / "Imgs" / "exp1_num_265613"  # two thin cracks, 217 pixels
UNEVEN = TILES / "MT_Uneven" / "Imgs" / "exp0_num_461"  # one large blob
CLASSES = ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]

pytestmark = pytest.mark.skipif(not TILES.is_dir(), reason=f"magnetic-tile dataset not found at {TILES}")


def read_mask(stem: Path) -> np.ndarray:
    return (np.asarray(Image.open(stem.with_suffix(".png"))) > 127).astype(np.uint8)


def components(mask: np.ndarray) -> list[np.ndarray]:
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    return [(labels == k).astype(np.uint8) for k in range(1, count)]


def centre_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons as a third-party tool makes them: OpenCV contours through boundary pixel centres."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.astype(bool) & b.astype(bool)).sum() / (a.astype(bool) | b.astype(bool)).sum())


def coco_rasterise(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, height, width)))


def prior_rows(image_id: str, rel_path: str, mask: np.ndarray, label: str, make) -> list[dict]:
    """One prior label per connected component of ``mask``, with the PriorLabel columns ingest writes."""
    rows = []
    for part in components(mask):
        ys, xs = np.nonzero(part)
        rows.append(
            {
                "image_id": image_id,
                "rel_path": rel_path,
                "source_label": label,
                "label": label,
                "source_format": "masks",
                "source_file": rel_path.replace(".jpg", ".png"),
                "x": float(xs.min()),
                "y": float(ys.min()),
                "w": float(xs.max() + 1 - xs.min()),
                "h": float(ys.max() + 1 - ys.min()),
                "polygons": json.dumps(make(part)),
                "area": float(part.sum()),
            }
        )
    return rows


def manifest_row(stem: Path) -> dict:
    path = stem.with_suffix(".jpg")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    width, height = Image.open(path).size
    return {
        "image_id": digest[:16],
        "sha256": digest,
        "path": str(path),
        "rel_path": path.name,
        "width": width,
        "height": height,
        "dup_group": digest[:16],
    }


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("kind", ["Crack", "Blowhole", "Break", "Fray", "Uneven"])
def test_pixel_edge_outlines_rasterise_back_to_the_real_mask(kind) -> None:
    for png in sorted((TILES / f"MT_{kind}" / "Imgs").glob("*.png"))[:12]:
        mask = read_mask(png.with_suffix(""))
        if not mask.any():
            continue
        back = coco_rasterise(mask_to_polygons(mask), *mask.shape)
        _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        has_holes = bool((hierarchy[0][:, 3] >= 0).any())
        if has_holes:  # COCO polygons cannot carry holes: filled, never smaller
            assert (back >= mask).all(), png
        else:
            assert np.array_equal(back, mask), png
        # the contour through pixel centres, for comparison, loses the outer half of every boundary pixel
        assert iou(coco_rasterise(centre_polygons(mask), *mask.shape), mask) < iou(back, mask) or has_holes


# ------------------------------------------------------------------------------------------------ split + export


@pytest.fixture(scope="module")
def shaped(tmp_path_factory) -> dict:
    crack, uneven = read_mask(CRACK), read_mask(UNEVEN)
    manifest = pd.DataFrame([manifest_row(CRACK), manifest_row(UNEVEN)])
    (crack_id, uneven_id), (crack_rel, uneven_rel) = manifest["image_id"], manifest["rel_path"]
    prior = pd.DataFrame(
        prior_rows(crack_id, crack_rel, crack, "crack", mask_to_polygons)
        + prior_rows(uneven_id, uneven_rel, uneven, "discoloration", centre_polygons),
        columns=columns(PriorLabel),
    )
    labels = image_labels(manifest, prior=prior, class_names=CLASSES)
    splits = split(manifest, labels, SplitParams(group_by=[], train=1.0, val=0.0, test=0.0)).splits
    out = tmp_path_factory.mktemp("shaped")
    result = export(splits, manifest, out / "export", ExportParams(), class_names=CLASSES)
    return {
        "manifest": manifest,
        "prior": prior,
        "splits": splits,
        "out": out,
        "masks": [crack, uneven],
        **result.__dict__,
    }


def test_split_boxes_carry_segmentation_and_area(shaped) -> None:
    boxes = shaped["splits"].set_index("image_id")["boxes"].map(json.loads)
    prior = shaped["prior"]
    for image_id, rows in prior.groupby("image_id"):
        got = boxes[image_id]
        assert len(got) == len(rows)
        assert sorted(json.dumps(b["segmentation"]) for b in got) == sorted(
            json.dumps(json.loads(p)) for p in rows["polygons"]
        )
        assert sorted(b["area"] for b in got) == sorted(rows["area"])
        assert sorted((b["x"], b["y"], b["w"], b["h"]) for b in got) == sorted(
            rows[["x", "y", "w", "h"]].itertuples(index=False, name=None)
        )


def test_with_consensus_only_regions_of_the_agreed_class_keep_their_shapes(shaped) -> None:
    manifest, prior = shaped["manifest"], shaped["prior"]
    consensus = pd.DataFrame({"image_id": manifest["image_id"], "label": ["crack", "dent"]})
    labels = image_labels(manifest, consensus=consensus, prior=prior, class_names=CLASSES).set_index("image_id")
    crack_id, uneven_id = manifest["image_id"]
    kept = json.loads(labels.loc[crack_id, "boxes"])
    assert [b["segmentation"] for b in kept] == [
        json.loads(p) for p in prior.loc[prior["image_id"] == crack_id, "polygons"]
    ]
    assert pd.isna(labels.loc[uneven_id, "boxes"])  # its regions are discoloration, the reviewers said dent


def test_coco_segmentation_loads_in_pycocotools_and_rasterises_to_the_real_mask(shaped) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(shaped["out"] / "export" / "train" / "labels.json"))
    by_name = {i["image_id"]: i["id"] for i in coco.dataset["images"]}
    for row, mask in zip(shaped["manifest"].itertuples(), shaped["masks"], strict=True):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=by_name[row.image_id]))
        assert len(anns) == len(components(mask)) and all("segmentation" in a for a in anns)
        union = np.zeros_like(mask)
        for ann in anns:
            assert not ann["whole_image"]
            union |= coco.annToMask(ann)
        assert iou(union, mask) > 0.9, row.rel_path
        assert sorted(a["area"] for a in anns) == sorted(float(c.sum()) for c in components(mask))
    crack = coco.loadAnns(coco.getAnnIds(imgIds=by_name[shaped["manifest"]["image_id"][0]]))
    assert iou(sum(coco.annToMask(a) for a in crack) > 0, shaped["masks"][0]) == 1.0  # pixel-edge outlines: exact


def test_without_polygons_the_split_and_export_bytes_do_not_change(shaped, tmp_path) -> None:
    manifest, prior = shaped["manifest"], shaped["prior"]
    boxes_only = prior.assign(polygons=None, area=None)
    old_columns = boxes_only.drop(columns=["polygons", "area"])  # a prior_labels.parquet from before shapes
    settings = SplitParams(group_by=[], train=1.0, val=0.0, test=0.0)
    new = split(manifest, image_labels(manifest, prior=boxes_only, class_names=CLASSES), settings).splits
    old = split(manifest, image_labels(manifest, prior=old_columns, class_names=CLASSES), settings).splits
    pd.testing.assert_frame_equal(new, old)
    assert all("segmentation" not in b for cell in new["boxes"] for b in json.loads(cell))
    a = export(new, manifest, tmp_path / "a", ExportParams(), class_names=CLASSES)
    b = export(old, manifest, tmp_path / "b", ExportParams(), class_names=CLASSES)
    assert a.version == b.version
    labels = json.loads((tmp_path / "a" / "train" / "labels.json").read_text())
    assert all(
        "segmentation" not in ann and ann["area"] == round(ann["bbox"][2] * ann["bbox"][3], 3)
        for ann in labels["annotations"]
    )
    assert (tmp_path / "a" / "train" / "labels.json").read_bytes() == (
        tmp_path / "b" / "train" / "labels.json"
    ).read_bytes()


def test_unreadable_polygons_name_the_row_and_image(shaped) -> None:
    prior = shaped["prior"].copy()
    prior.loc[1, "polygons"] = "[[1, 2, 3, 4]]"  # two points: not a polygon
    image_id = prior.loc[1, "image_id"]
    with pytest.raises(SplitError, match=rf"row 2 \(1-based, image {image_id}\): polygons cannot be read"):
        image_labels(shaped["manifest"], prior=prior, class_names=CLASSES)


# ------------------------------------------------------------------------------------------------ augment


def defect_image(stem: Path, folder: Path) -> tuple[Path, np.ndarray]:
    """The real tile at half brightness with its defect pixels painted white: where the bright pixels go after a
    transform is where the defect went, independently of the polygons."""
    mask = read_mask(stem)
    pixels = np.asarray(Image.open(stem.with_suffix(".jpg")).convert("L")) // 2
    pixels = np.where(mask > 0, 255, pixels).astype(np.uint8)
    path = folder / f"{stem.name}.png"
    Image.fromarray(pixels).save(path)
    return path, mask


def augmented_region_mask(variant, height: int, width: int) -> np.ndarray:
    boxes = json.loads(variant.boxes)
    union = np.zeros((height, width), dtype=np.uint8)
    for box in boxes:
        union |= coco_rasterise(box["segmentation"], height, width)
        x, y, w, h = box["x"], box["y"], box["w"], box["h"]
        ys, xs = np.nonzero(coco_rasterise(box["segmentation"], height, width))
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    return union


def _source(stem: Path, path: Path, mask: np.ndarray) -> Source:
    parts = components(mask)
    boxes = []
    for part in parts:
        ys, xs = np.nonzero(part)
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())))
    return Source(
        stem.name,
        str(path),
        boxes=tuple(boxes),
        box_labels=("crack",) * len(parts),
        segmentations=tuple(mask_to_polygons(p) for p in parts),
    )


def test_a_flip_moves_the_mask_with_the_image_exactly(tmp_path) -> None:
    path, mask = defect_image(CRACK, tmp_path)
    recipe = [TransformSpec(name="HorizontalFlip", args={"p": 1.0})]
    settings = AugmentParams(variants=1, workers=1, min_area=0.0, recipe=recipe)
    [variant] = augment_all([_source(CRACK, path, mask)], settings, tmp_path / "out")
    image = np.asarray(Image.open(tmp_path / "out" / variant.file))
    moved = augmented_region_mask(variant, *image.shape)
    assert np.array_equal(moved, (image == 255).astype(np.uint8))  # the painted defect, flipped with the image
    assert np.array_equal(moved, mask[:, ::-1])
    assert (variant.boxes_in, variant.boxes_dropped) == (2, 0)
    assert sorted(b["area"] for b in json.loads(variant.boxes)) == sorted(float(p.sum()) for p in components(mask))


def test_a_rotation_moves_the_mask_with_the_image(tmp_path) -> None:
    path, mask = defect_image(UNEVEN, tmp_path)
    # a constant border: reflection (the default) would mirror the region back into view
    recipe = [TransformSpec(name="Affine", args={"rotate": [30, 30], "p": 1.0, "border_mode": cv2.BORDER_CONSTANT})]
    settings = AugmentParams(variants=1, workers=1, recipe=recipe)
    [variant] = augment_all([_source(UNEVEN, path, mask)], settings, tmp_path / "out")
    image = np.asarray(Image.open(tmp_path / "out" / variant.file))
    moved = augmented_region_mask(variant, *image.shape)
    bright = (image > 191).astype(np.uint8)  # bilinear image, nearest mask: they differ only along the edge
    assert iou(moved, bright) > 0.9
    assert iou(moved, mask) < 0.7  # it did move


def test_a_region_moved_out_of_the_image_is_dropped_and_counted(tmp_path) -> None:
    path, mask = defect_image(CRACK, tmp_path)
    width = mask.shape[1]
    shift = {"translate_px": {"x": [width, width], "y": [0, 0]}, "p": 1.0}
    recipe = [TransformSpec(name="Affine", args={**shift, "border_mode": cv2.BORDER_CONSTANT})]  # no mirror image
    [variant] = augment_all(
        [_source(CRACK, path, mask)], AugmentParams(variants=1, workers=1, recipe=recipe), tmp_path / "out"
    )
    assert (variant.boxes_in, variant.boxes_dropped) == (2, 2) and json.loads(variant.boxes) == []


def test_augmented_variants_export_their_moved_segmentation(shaped) -> None:
    manifest, splits, out = shaped["manifest"], shaped["splits"], shaped["out"]
    settings = AugmentParams(variants=2, workers=1, preview_images=1)
    result = augment(splits, manifest, settings, out / "augment")
    assert result.report["boxes_in"] == 2 * sum(len(components(m)) for m in shaped["masks"])
    exported = export(
        splits,
        manifest,
        out / "export-aug",
        ExportParams(),
        class_names=CLASSES,
        augmented=result.records,
        augment_dir=out / "augment",
    )
    assert exported.report["splits"]["train"]["augmented"] == 4
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out / "export-aug" / "train" / "labels.json"))
    variants = [i for i in coco.dataset["images"] if i["augmented_from"]]
    for image in variants:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        for ann in anns:
            drawn = coco.annToMask(ann)
            assert drawn.shape == (image["height"], image["width"])
            assert drawn.sum() >= ann["area"] > 0  # holes filled in the polygon, never fewer pixels
    assert sum(len(coco.getAnnIds(imgIds=i["id"])) for i in variants) > 0


def test_fiftyone_imports_the_exported_segmentation_as_instance_masks(shaped, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FIFTYONE_DATABASE_DIR", str(tmp_path / "fiftyone-db"))
    monkeypatch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo

    dataset = fo.Dataset.from_dir(
        dataset_dir=str(shaped["out"] / "export" / "train"),
        dataset_type=fo.types.COCODetectionDataset,
        label_types=["segmentations"],
        label_field="ground_truth",
        name=f"test-segmentation-{uuid.uuid4().hex[:8]}",
    )
    try:
        by_id = {Path(s.filepath).stem: s for s in dataset}  # exported as data/<image_id><ext>
        for row, mask in zip(shaped["manifest"].itertuples(), shaped["masks"], strict=True):
            detections = by_id[row.image_id]["ground_truth"].detections
            height, width = mask.shape
            union = np.zeros_like(mask, dtype=bool)
            for detection in detections:
                assert detection.mask is not None
                union |= detection.to_segmentation(frame_size=(width, height), target=1).mask.astype(bool)
            assert iou(union, mask) > 0.9, row.rel_path
    finally:
        dataset.delete()


def test_overlapping_regions_each_keep_their_own_shape(tmp_path) -> None:
    path, mask = defect_image(UNEVEN, tmp_path)
    ys, xs = np.nonzero(mask)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min()))
    top = mask.copy()
    top[int(ys.mean()) :, :] = 0  # the upper part of the same blob: overlaps the whole blob entirely
    source = Source(
        "overlap",
        str(path),
        boxes=(box, box),
        box_labels=("discoloration", "dent"),
        segmentations=(mask_to_polygons(mask), mask_to_polygons(top)),
    )
    recipe = [TransformSpec(name="HorizontalFlip", args={"p": 1.0})]
    [variant] = augment_all([source], AugmentParams(variants=1, workers=1, recipe=recipe), tmp_path / "out")
    whole, upper = json.loads(variant.boxes)
    height, width = mask.shape
    assert (whole["label"], upper["label"]) == ("discoloration", "dent")
    assert np.array_equal(coco_rasterise(upper["segmentation"], height, width), top[:, ::-1])
    assert (coco_rasterise(whole["segmentation"], height, width) >= mask[:, ::-1]).all()  # holes filled, if any
    assert (whole["area"], upper["area"]) == (float(mask.sum()), float(top.sum()))


def test_regions_that_do_not_overlap_share_one_label_map() -> None:
    from augment.run import _label_maps

    crack = read_mask(CRACK)
    parts = components(crack)
    maps, placed = _label_maps(tuple(mask_to_polygons(p) for p in parts), *crack.shape)
    assert len(maps) == 1 and sorted(placed.values()) == [(0, 1), (0, 2)]
    maps, placed = _label_maps((mask_to_polygons(crack), None, mask_to_polygons(parts[0])), *crack.shape)
    assert len(maps) == 2 and placed == {0: (0, 1), 2: (1, 1)}  # the box without a shape gets no label
