from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from augment import RecipeError, Source, augment_all, build_pipeline, describe_applied
from augment.preview import TILE
from curation.augment_cli import augment_command
from curation.augment_stage import AUGMENT_COLUMNS, augment, write_augment
from schemas.params_dataset import AugmentParams, TransformSpec
from tests.conftest import ROOT, command_app, write_image


def _settings(**update) -> AugmentParams:
    return AugmentParams(**{"workers": 1, "preview_images": 2, **update})


def test_a_known_box_under_horizontal_flip_lands_where_expected(tmp_path) -> None:
    path = write_image(tmp_path / "a.png", seed=1, size=(96, 56), format="PNG")
    source = Source("a", str(path), boxes=((10.0, 5.0, 20.0, 10.0),), box_labels=("scratch",))
    settings = _settings(variants=1, recipe=[TransformSpec(name="HorizontalFlip", args={"p": 1.0})])
    [variant] = augment_all([source], settings, tmp_path / "out")
    [box] = json.loads(variant.boxes)
    assert box == {"x": 96 - 10 - 20, "y": 5.0, "w": 20.0, "h": 10.0, "label": "scratch"}
    flipped = np.asarray(Image.open(tmp_path / "out" / variant.file))
    assert np.array_equal(flipped, np.asarray(Image.open(path))[:, ::-1])  # PNG output: lossless, pixels exact
    assert json.loads(variant.applied)[0][0] == "HorizontalFlip"


def test_boxes_that_leave_the_image_are_dropped_and_counted(tmp_path) -> None:
    path = write_image(tmp_path / "a.png", seed=2, size=(96, 56), format="PNG")
    boxes = ((40.0, 10.0, 20.0, 20.0), (0.0, 10.0, 10.0, 10.0))  # the first ends up right of the image
    source = Source("a", str(path), boxes=boxes, box_labels=("dent", "crack"))
    shift = {"translate_px": {"x": [80, 80], "y": [0, 0]}, "p": 1.0}
    recipe = [TransformSpec(name="Affine", args={**shift, "border_mode": cv2.BORDER_CONSTANT})]  # the recipe's say
    [variant] = augment_all([source], _settings(variants=1, recipe=recipe), tmp_path / "out")
    assert (variant.boxes_in, variant.boxes_dropped) == (2, 1)
    [kept] = json.loads(variant.boxes)
    assert kept["label"] == "crack" and kept["x"] == pytest.approx(80, abs=0.5)


def test_geometric_transforms_fill_borders_by_reflection(tmp_path) -> None:
    pixels = np.full((60, 80, 3), 200, dtype=np.uint8)
    pixels[20:30, 30:40] = 60  # a dark defect
    path = tmp_path / "bright.png"
    Image.fromarray(pixels).save(path)
    rotate = [TransformSpec(name="Affine", args={"rotate": [10, 10], "scale": [0.8, 0.8], "p": 1.0})]
    [variant] = augment_all([Source("b", str(path))], _settings(variants=1, recipe=rotate), tmp_path / "out")
    out = np.asarray(Image.open(tmp_path / "out" / variant.file))
    corners = np.concatenate([out[:6, :6], out[:6, -6:], out[-6:, :6], out[-6:, -6:]]).reshape(-1, 3)
    assert corners.min() >= 150  # mirrored background, no black wedge
    constant = [TransformSpec(name="Affine", args={**rotate[0].args, "border_mode": cv2.BORDER_CONSTANT})]
    [black] = augment_all([Source("b", str(path))], _settings(variants=1, recipe=constant), tmp_path / "black")
    assert np.asarray(Image.open(tmp_path / "black" / black.file))[:3, :3].max() == 0  # what reflection avoids

    # shifted 20 px right, the left border mirrors x -> 20 - x: a box at x 2..12 shows twice, moved and mirrored,
    # and both are labelled (the defect is in the pixels twice)
    shift = [TransformSpec(name="Affine", args={"translate_px": {"x": [20, 20], "y": [0, 0]}, "p": 1.0})]
    boxed = Source("c", str(path), boxes=((2.0, 20.0, 10.0, 10.0),), box_labels=("dent",))
    [mirrored] = augment_all([boxed], _settings(variants=1, recipe=shift), tmp_path / "mirror")
    assert (mirrored.boxes_in, mirrored.boxes_dropped) == (1, 0)
    placed = sorted((b["x"], b["w"], b["label"]) for b in json.loads(mirrored.boxes))
    assert placed == [(pytest.approx(8, abs=1), pytest.approx(10, abs=1), "dent"), (22.0, 10.0, "dent")]


def test_preview_captions_name_the_transforms_that_fired() -> None:
    applied = json.dumps(
        [
            ["HorizontalFlip", {"shape": [4, 4]}],
            ["RandomRotate90", {"factor": 2}],
            ["Affine", {"rotate": -7.4, "scale": {"x": 0.95, "y": 0.97}}],
            ["GaussNoise", {}],
            ["CLAHE", {}],
        ]
    )
    assert describe_applied(applied) == "h-flip, rot180, affine -7° x0.96, noise, CLAHE"
    assert describe_applied(json.dumps([["RandomRotate90", {"factor": 0}]])) == "no transform"
    assert describe_applied("[]") == "no transform"


def _train_val_test(tmp_path, n: int = 24) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"{i:016x}" for i in range(n)]
    paths = [str(write_image(tmp_path / "raw" / f"{i}.png", seed=i, size=(48, 40), format="PNG")) for i in range(n)]
    manifest = pd.DataFrame({"image_id": ids, "path": paths})
    split = ["train", "train", "val", "test"] * (n // 4)
    labels = ["scratch", "dent", "ok", None] * (n // 4)
    splits = pd.DataFrame(
        {"image_id": ids, "split": split, "label": labels, "severity": None, "boxes": None},
    )
    splits.loc[0, "boxes"] = json.dumps([{"x": 4.0, "y": 4.0, "w": 10.0, "h": 8.0, "label": "scratch"}])
    return manifest, splits


def test_only_labelled_train_images_are_augmented_with_counts_from_the_recipe(tmp_path) -> None:
    manifest, splits = _train_val_test(tmp_path)
    result = augment(splits, manifest, _settings(variants=3), tmp_path / "aug")
    write_augment(result, tmp_path / "aug")
    records = result.records
    train = splits[(splits["split"] == "train") & splits["label"].notna()]
    assert list(records.columns) == AUGMENT_COLUMNS
    assert len(records) == 3 * len(train)
    assert set(records["source_image_id"]) == set(train["image_id"])
    assert (records["split"] == "train").all()
    assert all(sorted(v) == [0, 1, 2] for v in records.groupby("source_image_id")["variant"].apply(list))
    for row in records.itertuples():
        data = (tmp_path / "aug" / row.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert row.recipe_hash == result.report["recipe_hash"]
    assert result.report["augmented_images"] == len(records)
    assert result.report["not_augmented_val_test"] == int((splits["split"] != "train").sum())
    assert result.report["boxes_in"] == 3 and records["boxes"].notna().sum() == 3
    preview = Image.open(tmp_path / "aug" / "preview.png")
    assert preview.width > 4 * TILE and preview.height > 2 * TILE  # 2 rows of original + 3 variants


def test_same_seed_same_bytes_across_worker_counts_and_another_seed_differs(tmp_path) -> None:
    sources = [
        Source(f"{i:04d}", str(write_image(tmp_path / f"{i}.png", seed=i, size=(40, 32), format="PNG")))
        for i in range(20)
    ]
    serial = [v.sha256 for v in augment_all(sources, _settings(variants=2), tmp_path / "one")]
    parallel = [v.sha256 for v in augment_all(sources, _settings(variants=2, workers=2), tmp_path / "two")]
    assert serial == parallel
    reseeded = [v.sha256 for v in augment_all(sources, _settings(variants=2, seed=9), tmp_path / "three")]
    assert reseeded != serial


def test_each_transform_draws_its_own_randomness() -> None:
    # albumentations 2.0 gives every child transform the same seed; build/apply must not fire them all together
    from augment.recipe import apply

    recipe = [TransformSpec(name=n, args={"p": 0.5}) for n in ("HorizontalFlip", "VerticalFlip", "Transpose")]
    pipeline = build_pipeline(recipe)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    fired = [len(apply(pipeline, image, [], seed)["applied_transforms"]) for seed in range(200)]
    assert {1, 2} <= set(fired)  # some seeds apply one or two of the three, not only all or none


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TransformSpec(name="HorizontalFlipp"), r"augment.recipe\[0\] \(HorizontalFlipp\): no albumentations"),
        (TransformSpec(name="GaussNoise", args={"sigma": 3}), r"unknown argument\(s\) \['sigma'\]"),
        (TransformSpec(name="GaussNoise", args={"std_range": [3, 1]}), r"GaussNoise\): invalid arguments"),
    ],
)
def test_bad_recipes_name_the_transform(spec, message) -> None:
    with pytest.raises(RecipeError, match=message):
        build_pipeline([TransformSpec(name="HorizontalFlip"), spec][1:])


def test_augment_command_writes_the_stage_outputs(tmp_path) -> None:
    manifest, splits = _train_val_test(tmp_path, n=8)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    splits.to_parquet(tmp_path / "splits.parquet")
    app = command_app("augment", augment_command)
    args = ["augment", str(tmp_path / "splits.parquet"), str(tmp_path / "manifest.parquet"), str(tmp_path / "out")]
    result = CliRunner().invoke(
        app, [*args, "--variants", "2", "--workers", "1", "--params", str(ROOT / "params.yaml")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "augment.json").read_text())
    assert report["augmented_images"] == 8 and report["variants_per_image"] == 2
    assert len(list((tmp_path / "out" / "images").iterdir())) == 8
    assert (tmp_path / "out" / "preview.png").is_file()

    (tmp_path / "out" / ".gitignore").write_text("/images\n")  # as DVC writes it: left alone by a re-run
    result = CliRunner().invoke(
        app, [*args, "--variants", "1", "--workers", "1", "--params", str(ROOT / "params.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "images").iterdir())) == 4  # old variants replaced, not mixed in
    assert (tmp_path / "out" / ".gitignore").read_text() == "/images\n"

    (tmp_path / "mine" / "images").mkdir(parents=True)
    (tmp_path / "mine" / "images" / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(app, [*args[:3], str(tmp_path / "mine"), "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 1 and "not an output of this stage" in " ".join(result.output.split())
    assert (tmp_path / "mine" / "images" / "notes.txt").read_text() == "keep me"


_AFTER_OPENCV = """
import sys
from pathlib import Path
import cv2, numpy as np
from augment import Source, augment_all
from schemas.params_dataset import AugmentParams
from tests.conftest import write_image

big = np.random.default_rng(0).integers(0, 255, (2000, 2000, 3), dtype=np.uint8)
for _ in range(3):  # OpenCV's thread pool runs in this process before the workers are forked
    cv2.warpAffine(big, np.float32([[1, 0.1, 3], [0.1, 1, 2]]), (2000, 2000))
root = Path(sys.argv[1])
paths = [write_image(root / f"{i}.png", seed=i, size=(40, 32), format="PNG") for i in range(20)]
sources = [Source(f"{i:04d}", str(path)) for i, path in enumerate(paths)]
print(len(list(augment_all(sources, AugmentParams(variants=2, workers=2, preview_images=0), root / "out"))))
"""


def test_workers_start_after_opencv_ran_in_the_parent(tmp_path) -> None:
    # a child forked while OpenCV's pool had threads used to hang in cv2.setNumThreads: run it apart, with a limit
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_OPENCV, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "40"
