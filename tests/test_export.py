from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import pandas as pd
import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from curation.augment_stage import augment, write_augment
from curation.errors import InputError
from curation.export import export
from curation.export_cli import export_command
from curation.split import image_labels, split
from schemas.params_dataset import SPLITS, AugmentParams, ExportParams, SplitParams
from schemas.records import ExportRow, columns
from tests.conftest import ROOT, command_app, write_image

CLASSES = ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]


def make_inputs(root: Path, n: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Real image files (PNG and JPEG), a manifest with their true SHA-256, and labels: the first image boxed."""
    rows = []
    for i in range(n):
        suffix = ".png" if i % 2 else ".JPG"
        path = write_image(root / "raw" / f"img {i}{suffix}", seed=i, size=(64, 48), format="PNG" if i % 2 else "JPEG")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(
            {
                "image_id": digest[:16],
                "sha256": digest,
                "path": str(path),
                "rel_path": path.name,
                "width": 64,
                "height": 48,
                "dup_group": digest[:16],
                "meta_line": f"line-{i % 3}",
            }
        )
    manifest = pd.DataFrame(rows)
    labels = [CLASSES[i % 3] for i in range(n)]
    prior = pd.DataFrame(
        {"image_id": manifest["image_id"], "label": labels, "x": None, "y": None, "w": None, "h": None}
    )
    prior.loc[0, ["x", "y", "w", "h"]] = [4.0, 6.0, 20.0, 10.0]
    prior = pd.concat([prior, prior.iloc[[0]].assign(x=30.0, y=20.0, w=8.0, h=8.0)], ignore_index=True)
    result = split(manifest, image_labels(manifest, prior=prior, class_names=CLASSES), SplitParams(group_by=[]))
    return manifest, result.splits


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export")
    manifest, splits = make_inputs(root)
    aug = augment(splits, manifest, AugmentParams(variants=1, workers=1, preview_images=0), root / "augment")
    write_augment(aug, root / "augment")
    predictions = pd.DataFrame(
        {
            "image_id": manifest["image_id"],
            "label": "ok",
            "score": 0.5,
            "model_name": "tiny-clip",
            "model_version": "tiny-clip@abc123",
            "description_en": "a metal surface",
            "description_ko": "금속 표면",
        }
    )
    result = export(
        splits,
        manifest,
        root / "out",
        ExportParams(),
        class_names=CLASSES,
        augmented=aug.records,
        augment_dir=root / "augment",
        predictions=predictions,
        provenance={"params_sha256": "p" * 64},
    )
    return {"root": root, "manifest": manifest, "splits": splits, "augmented": aug.records, "result": result}


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_every_split_loads_in_pycocotools_and_agrees_with_its_csv(exported) -> None:
    out = exported["root"] / "out"
    result = exported["result"]
    splits = exported["splits"]
    n_aug = len(exported["augmented"])
    for name in SPLITS:
        coco = _coco(out / name / "labels.json")
        csv = pd.read_csv(out / name / "labels.csv")
        images = coco.dataset["images"]
        originals = int((splits["split"] == name).sum())
        assert len(images) == originals + (n_aug if name == "train" else 0)
        assert [c["name"] for c in coco.dataset["categories"]] == CLASSES
        assert (
            coco.dataset["info"]["version"]
            == result.version
            == json.loads((out / "export.json").read_text())["version"]
        )
        assert coco.dataset["info"]["model_versions"] == [
            {"model_name": "tiny-clip", "model_version": "tiny-clip@abc123"}
        ]
        by_file = csv.set_index(csv["path"].map(lambda p: Path(p).name))
        assert sorted(by_file.index) == sorted(i["file_name"] for i in images)
        for image in images:
            row = by_file.loc[image["file_name"]]
            assert row["label"] == image["label"] and row["image_id"] == image["image_id"]
            assert row["split"] == name and (out / row["path"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
            assert len(anns) == max(1, row["n_boxes"])
            assert {coco.cats[a["category_id"]]["name"] for a in anns} == {image["label"]}
            if row["n_boxes"] == 0:  # classification only: one whole-image box
                assert anns[0]["bbox"] == [0, 0, image["width"], image["height"]] and anns[0]["whole_image"]
        augmented = csv[csv["augmented_from"].notna()]
        assert name == "train" or augmented.empty
        assert list(csv.columns[: len(columns(ExportRow))]) == columns(ExportRow)
        assert (csv["prediction_description"] == "a metal surface").all()
        assert (csv["prediction_description_ko"] == "금속 표면").all()
        assert "description" not in csv.columns  # the reviewers' text is description_reviewed, never ambiguous
        assert "meta_line" in csv.columns


def test_boxes_are_exported_as_annotations_and_follow_augmentation(exported) -> None:
    out = exported["root"] / "out"
    boxed = exported["manifest"]["image_id"].iloc[0]
    split_of = exported["splits"].set_index("image_id").loc[boxed, "split"]
    coco = _coco(out / split_of / "labels.json")
    [image] = [i for i in coco.dataset["images"] if i["image_id"] == boxed]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
    assert sorted(a["bbox"] for a in anns) == [[4.0, 6.0, 20.0, 10.0], [30.0, 20.0, 8.0, 8.0]]
    assert not any(a["whole_image"] for a in anns)
    if split_of == "train":
        [variant] = [i for i in coco.dataset["images"] if i["augmented_from"] == boxed]
        record = exported["augmented"].set_index("image_id").loc[variant["image_id"]]
        kept = coco.loadAnns(coco.getAnnIds(imgIds=[variant["id"]]))
        assert len(kept) == record["boxes_in"] - record["boxes_dropped"]


def test_images_keep_their_bytes_and_the_version_does_not_depend_on_the_link_mode(exported, tmp_path) -> None:
    out = exported["root"] / "out"
    manifest = exported["manifest"].set_index("image_id")
    csv = pd.concat([pd.read_csv(out / s / "labels.csv") for s in SPLITS])
    originals = csv[csv["augmented_from"].isna()]
    for row in originals.itertuples():
        data = (out / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == manifest.loc[row.image_id, "sha256"]  # never recompressed
    for mode in ("hardlink", "symlink"):
        result = export(
            exported["splits"], exported["manifest"], tmp_path / mode, ExportParams(link=mode), class_names=CLASSES
        )
        row = originals.iloc[0]
        placed = tmp_path / mode / row["path"]
        source = Path(manifest.loc[row["image_id"], "path"])
        assert placed.is_symlink() == (mode == "symlink") and os.path.samefile(placed, source)
        assert (
            result.version
            == export(
                exported["splits"], exported["manifest"], tmp_path / f"{mode}-copy", ExportParams(), class_names=CLASSES
            ).version
        )


def test_identical_input_same_version_and_bytes_a_changed_label_a_new_version(exported, tmp_path) -> None:
    splits, manifest = exported["splits"], exported["manifest"]
    a = export(splits, manifest, tmp_path / "a", ExportParams(), class_names=CLASSES)
    b = export(splits, manifest, tmp_path / "b", ExportParams(), class_names=CLASSES)
    assert a.version == b.version
    for name in SPLITS:
        for file in ("labels.json", "labels.csv"):
            assert (tmp_path / "a" / name / file).read_bytes() == (tmp_path / "b" / name / file).read_bytes()
    changed = splits.copy()
    changed.loc[1, "label"] = "crack" if changed.loc[1, "label"] != "crack" else "dent"
    assert export(changed, manifest, tmp_path / "c", ExportParams(), class_names=CLASSES).version != a.version


def test_the_reviewers_description_reaches_the_csv_and_follows_augmentation(tmp_path) -> None:
    manifest, _ = make_inputs(tmp_path, n=12)
    ids = manifest["image_id"].tolist()
    consensus = pd.DataFrame(
        {
            "image_id": ids,
            "label": [CLASSES[i % 3] for i in range(len(ids))],
            "description": [f"reviewed {i}" if i % 2 else None for i in range(len(ids))],
        }
    )
    labels = image_labels(manifest, consensus=consensus, class_names=CLASSES)
    splits = split(manifest, labels, SplitParams(group_by=[])).splits
    kept = splits.set_index("image_id")["description"].reindex(ids)
    assert [None if pd.isna(t) else t for t in kept] == [f"reviewed {k}" if k % 2 else None for k in range(len(ids))]
    aug = augment(splits, manifest, AugmentParams(variants=1, workers=1, preview_images=0), tmp_path / "augment")
    write_augment(aug, tmp_path / "augment")
    export(
        splits,
        manifest,
        tmp_path / "out",
        ExportParams(),
        class_names=CLASSES,
        augmented=aug.records,
        augment_dir=tmp_path / "augment",
    )
    expected = {i: (f"reviewed {k}" if k % 2 else None) for k, i in enumerate(ids)}
    rows = pd.concat([pd.read_csv(tmp_path / "out" / name / "labels.csv", dtype=str) for name in SPLITS])
    source = rows["augmented_from"].fillna(rows["image_id"])
    assert rows["augmented_from"].notna().any()
    for image_id, text in zip(source, rows["description_reviewed"], strict=True):
        assert (None if pd.isna(text) else text) == expected[image_id]
    assert rows["prediction_description"].isna().all()  # no predictions given: the pre-label's text stays empty


def test_provenance_records_params_and_model_versions(exported) -> None:
    provenance = json.loads((exported["root"] / "out" / "provenance.json").read_text())
    assert provenance["version"] == exported["result"].version
    assert provenance["params_sha256"] == "p" * 64
    assert provenance["model_versions"] == [{"model_name": "tiny-clip", "model_version": "tiny-clip@abc123"}]


def test_a_missing_image_file_is_a_clear_error(exported, tmp_path) -> None:
    manifest = exported["manifest"].copy()
    manifest.loc[3, "path"] = str(tmp_path / "gone.png")
    with pytest.raises(InputError, match=r"gone.png: image file not found; re-run ingest"):
        export(exported["splits"], manifest, tmp_path / "out", ExportParams(), class_names=CLASSES)


def test_fiftyone_imports_each_split_with_matching_counts(exported, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FIFTYONE_DATABASE_DIR", str(tmp_path / "fiftyone-db"))
    monkeypatch.setenv("FIFTYONE_DO_NOT_TRACK", "true")
    import fiftyone as fo

    out = exported["root"] / "out"
    for name in SPLITS:
        coco = json.loads((out / name / "labels.json").read_text())
        dataset = fo.Dataset.from_dir(
            dataset_dir=str(out / name),
            dataset_type=fo.types.COCODetectionDataset,
            label_types=["detections"],
            label_field="ground_truth",
            name=f"test-export-{name}-{uuid.uuid4().hex[:8]}",
        )
        try:
            assert len(dataset) == len(coco["images"])
            assert dataset.count("ground_truth.detections") == len(coco["annotations"])
            labels = dataset.distinct("ground_truth.detections.label")
            assert set(labels) == {coco["categories"][a["category_id"] - 1]["name"] for a in coco["annotations"]}
        finally:
            dataset.delete()


def test_export_command_writes_a_validated_export(tmp_path) -> None:
    manifest, splits = make_inputs(tmp_path, n=12)
    manifest.to_parquet(tmp_path / "manifest.parquet")
    splits.to_parquet(tmp_path / "splits.parquet")
    app = command_app("export", export_command)
    args = ["export", str(tmp_path / "splits.parquet"), str(tmp_path / "manifest.parquet"), str(tmp_path / "out")]
    options = ["--augmented", str(tmp_path / "none"), "--predictions", str(tmp_path / "none.parquet")]
    result = CliRunner().invoke(app, [*args, *options, "--link", "hardlink", "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["images"] == 12 and report["link"] == "hardlink"
    assert "every labels.json loads in pycocotools" in " ".join(result.output.split())
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert set(provenance["inputs"]) == {str(tmp_path / "manifest.parquet"), str(tmp_path / "splits.parquet")}
    assert provenance["params"]["split"]["train"] == 0.7

    unlabeled = splits.assign(label=None)
    unlabeled.to_parquet(tmp_path / "splits.parquet")
    result = CliRunner().invoke(app, [*args, *options, "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 1  # no labelled image: refused, and the previous export is left as it was
    message = " ".join(result.output.split())
    assert "none of its 12 image(s) has a label" in message and "--allow-empty" in message
    assert json.loads((tmp_path / "out" / "export.json").read_text())["images"] == 12
    result = CliRunner().invoke(app, [*args, *options, "--params", str(ROOT / "params.yaml"), "--allow-empty"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["images"] == 0  # include_unlabeled is off: an empty but valid export replaced the old one
    assert report["unlabeled_left_out"] == 12
    assert "left out 12 unlabelled image(s) (export.include_unlabeled: false)" in " ".join(result.output.split())
    assert not any((tmp_path / "out" / "train" / "data").iterdir())
