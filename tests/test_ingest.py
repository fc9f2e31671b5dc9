from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from curation import ingest as ingest_module
from curation.errors import InputError, MetadataError
from curation.ingest import ingest, write_ingest
from curation.neardup import near_duplicate_components
from schemas.params import IngestParams, Params
from tests.conftest import ROOT, XSDD, write_image
from tests.corpus import build_bad_corpus

MAGNETIC_TILE = Path(os.environ.get("MAGNETIC_TILE_DIR", ROOT.parent / "shared" / "datasets" / "magnetic-tile"))
OUTPUTS = [
    "manifest.parquet",
    "prior_labels.parquet",
    "quarantine.csv",
    "skipped.csv",
    "issues.csv",
    "masks.csv",
    "ingest.json",
    "metrics.json",
]


def _settings(**overrides) -> IngestParams:
    return IngestParams(**{"metadata": None, "workers": 1, **overrides})


def _run(raw: Path, params: Params, **overrides):
    return ingest(raw, _settings(**overrides), class_names=params.ontology.class_names)


def _digest_tree(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize("parallel", [False, True])
def test_bad_corpus_every_file_lands_where_expected(tmp_path, params, monkeypatch, parallel) -> None:
    raw = tmp_path / "raw"
    expected = build_bad_corpus(raw)
    before = _digest_tree(raw)
    if parallel:
        monkeypatch.setattr(ingest_module, "_SERIAL_BELOW", 0)
    result = _run(raw, params, workers=2 if parallel else 1)

    manifest = result.manifest.set_index("rel_path")
    copies = {p: rel for rel, paths in zip(manifest.index, manifest["all_paths"], strict=True) for p in paths}
    quarantine = result.quarantine.set_index("rel_path")["reason"].to_dict()
    skipped = set(result.skipped["rel_path"])
    for rel, want in expected.items():
        if want.outcome == "ingested":
            assert rel in manifest.index, rel
            assert manifest.loc[rel, "mode"] == want.mode, rel
            assert manifest.loc[rel, "exif_orientation"] == want.exif_orientation, rel
        elif want.outcome == "duplicate":
            assert copies[rel] == want.duplicate_of, rel
        elif want.outcome == "quarantined":
            assert quarantine.get(rel) == want.reason, (rel, quarantine.get(rel))
        else:
            assert rel in skipped, rel
    # nothing is reported that the corpus did not contain, and the sum checks out
    assert set(copies) | set(quarantine) | skipped == set(expected)
    report = result.report
    accounted = report["ingested"] + report["duplicate_copies"] + report["quarantined"] + report["masks"]
    assert report["files_seen"] == accounted and report["masks"] == 0
    assert report["duplicate_copies"] == sum(e.outcome == "duplicate" for e in expected.values())
    assert sum(report["quarantined_by_reason"].values()) == report["quarantined"]
    assert _digest_tree(raw) == before  # originals untouched


def test_every_quarantine_row_says_why(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    build_bad_corpus(raw)
    quarantine = _run(raw, params).quarantine
    assert not quarantine.empty
    assert quarantine["detail"].str.len().min() > 5
    too_large = quarantine.loc[quarantine["reason"] == "too_large", "detail"].iloc[0]
    assert "max_pixels" in too_large or "pixels" in too_large


def test_manifest_columns_and_ids(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    first = write_image(raw / "a" / "one.png", seed=1)
    write_image(raw / "b" / "two.jpg", seed=2, quality=95)
    manifest = _run(raw, params).manifest
    row = manifest.set_index("rel_path").loc["a/one.png"]
    sha = hashlib.sha256(first.read_bytes()).hexdigest()
    assert row["sha256"] == sha and row["image_id"] == sha[:16]
    assert row["path"] == f"{raw.as_posix()}/a/one.png"
    assert (row["width"], row["height"], row["format"]) == (64, 48, "PNG")
    assert len(row["phash"]) == 16
    assert manifest["image_id"].is_unique and manifest["image_id"].is_monotonic_increasing


def test_near_duplicates_share_a_group_distinct_images_do_not(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    source = write_image(raw / "orig.png", seed=7, size=(128, 96))
    with Image.open(source) as image:
        image.convert("RGB").save(raw / "reencoded.jpg", quality=70)
        image.point(lambda v: min(255, v + 3)).save(raw / "brighter.png")
    write_image(raw / "other.png", seed=8, size=(128, 96))
    manifest = _run(raw, params, phash_threshold=6).manifest.set_index("rel_path")
    group = manifest.loc["orig.png", "dup_group"]
    assert manifest.loc["reencoded.jpg", "dup_group"] == group == manifest.loc["brighter.png", "dup_group"]
    assert group == min(manifest.loc[["orig.png", "reencoded.jpg", "brighter.png"], "image_id"])
    assert manifest.loc["orig.png", "dup_group_size"] == 3
    assert manifest.loc["other.png", "dup_group"] != group
    assert manifest.loc["other.png", "dup_group_size"] == 1
    exact_only = _run(raw, params, phash_threshold=0).manifest
    assert exact_only["dup_group_size"].max() <= 3  # threshold 0 groups only identical hashes
    report = _run(raw, params, phash_threshold=6).report
    assert report["near_duplicate_group_sizes"] == {"2": 0, "3-4": 1, "5-8": 0, "9-16": 0, "17-64": 0, "65+": 0}
    assert report["near_duplicate_largest_group"] == 3


def test_blank_images_of_different_sizes_form_no_group(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    for k, size in enumerate([(300, 200), (310, 190), (64, 64)]):  # all black: degenerate pHashes, different bytes
        Image.new("L", size).save(raw / f"black_{k}.png")
    Image.new("RGB", (200, 150), (3, 3, 3)).save(raw / "near_black.jpg", quality=90)
    result = _run(raw, params)
    candidates = near_duplicate_components(result.manifest["phash"].tolist(), 6)
    assert len(set(candidates.tolist())) == 1  # the hash alone would make them one group
    assert (result.manifest["dup_group_size"] == 1).all()
    assert result.report["near_duplicate_low_information"] == 4
    assert result.report["near_duplicate_largest_group"] == 1


@pytest.mark.skipif(not XSDD.is_dir(), reason=f"X-SDD not present at {XSDD} (set XSDD_DIR)")
def test_a_reencoded_resized_real_image_groups_with_its_original_only(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    sources = sorted((XSDD / "red iron").glob("*.jpg"))[:6] + sorted((XSDD / "slag inclusion").glob("*.jpg"))[:2]
    for source in sources:
        (raw / f"{source.parent.name}-{source.name}").write_bytes(source.read_bytes())
    with Image.open(sources[0]) as image:
        smaller = image.resize((round(image.width * 0.95), round(image.height * 0.95)), Image.Resampling.BILINEAR)
        smaller.save(raw / "copy.jpg", quality=80)
    manifest = _run(raw, params).manifest.set_index("rel_path")
    original = f"red iron-{sources[0].name}"
    assert manifest.loc["copy.jpg", "dup_group"] == manifest.loc[original, "dup_group"]
    assert manifest.loc["copy.jpg", "dup_group_size"] == 2
    assert (manifest["dup_group_size"] > 1).sum() == 2  # the other steel surfaces, alike as they are, stay apart


@pytest.mark.skipif(not MAGNETIC_TILE.is_dir(), reason=f"magnetic-tile not present at {MAGNETIC_TILE}")
def test_real_magnetic_tile_groups_are_small_and_each_one_tile(tmp_path, params) -> None:
    # The data set shows each tile under up to 7 lightings (exp0..exp6), cropped by hand each time: real
    # near-duplicates, sometimes labelled differently. pHash links alone chained 97 images of four classes.
    # the .png masks beside the photos are taken for masks (ingest.masks: auto), so they form no group either
    settings = _settings(workers=0, unmapped_labels="add")  # mask regions are "defect", not a sample class
    result = ingest(MAGNETIC_TILE, settings, class_names=params.ontology.class_names)
    manifest = result.manifest
    assert len(manifest) == 1344 and result.report["masks"] == 1344
    groups = manifest.groupby("dup_group")
    assert groups.size().max() <= 16  # a tile's lightings, at most two crops of it
    # one tile per group, checked on what the grouping never sees (its thumbnails are squares): the crop's shape
    widths, heights = groups["width"], groups["height"]
    assert (widths.max() <= 1.1 * widths.min()).all() and (heights.max() <= 1.1 * heights.min()).all()
    sizes = groups.size()
    assert result.report["near_duplicate_largest_group"] == sizes.max()
    assert sum(result.report["near_duplicate_group_sizes"].values()) == (sizes > 1).sum()


def test_outputs_are_identical_on_rerun(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    build_bad_corpus(raw)
    for out in ("first", "second"):
        write_ingest(_run(raw, params), tmp_path / out)
    for name in OUTPUTS:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name
    report = json.loads((tmp_path / "first" / "ingest.json").read_text())
    assert report["prior_labels"] == 0
    assert pd.read_parquet(tmp_path / "first" / "prior_labels.parquet").empty


def test_missing_raw_dir_is_a_clear_error(tmp_path, params) -> None:
    with pytest.raises(InputError, match=r"does not exist.*ingest\.raw_dir"):
        _run(tmp_path / "nope", params)


def _metadata_case(tmp_path: Path) -> tuple[Path, Path]:
    raw = tmp_path / "raw"
    write_image(raw / "line-1" / "a.png", seed=1)
    write_image(raw / "line-1" / "b.png", seed=2)
    write_image(raw / "line-2" / "b.png", seed=3)
    write_image(raw / "line-2" / "unique name.png", seed=4)
    write_image(raw / "line-2" / "no row.png", seed=5)
    csv = tmp_path / "meta.csv"
    csv.write_text(
        "file,Line,camera,captured_at\n"
        "line-1/a.png,L1,cam-a,2026-01-02T03:04:05\n"
        ".\\line-1\\b.png,L1,cam-b,2026-01-02T03:04:06\n"  # Windows separators still match
        "unique name.png,L2,cam-a,2026-01-02T03:04:07\n"  # a file name that is unique matches too
        "b.png,L2,cam-b,2026-01-02T03:04:08\n"  # ambiguous: two files are called b.png
        "ghost.png,L9,cam-z,2026-01-02T03:04:09\n",
        encoding="utf-8",
    )
    return raw, csv


def test_metadata_join_reports_unknown_rows_and_files_without_rows(tmp_path, params) -> None:
    raw, csv = _metadata_case(tmp_path)
    result = _run(raw, params, metadata=csv)
    manifest = result.manifest.set_index("rel_path")
    assert list(manifest.columns[-3:]) == ["meta_line", "meta_camera", "meta_captured_at"]
    assert manifest.loc["line-1/b.png", "meta_camera"] == "cam-b"
    assert manifest.loc["line-2/unique name.png", "meta_line"] == "L2"
    assert pd.isna(manifest.loc["line-2/no row.png", "meta_line"])
    issues = result.issues
    by_kind = issues.groupby("kind")["source"].apply(sorted).to_dict()
    assert by_kind["metadata_unknown_file"] == [f"{csv}:6"]
    assert by_kind["metadata_ambiguous"] == [f"{csv}:5"]
    assert by_kind["metadata_missing"] == ["line-2/b.png", "line-2/no row.png"]
    assert result.report["issues_by_kind"] == {
        "metadata_ambiguous": 1,
        "metadata_missing": 2,
        "metadata_unknown_file": 1,
    }


def test_metadata_without_key_column_names_the_column(tmp_path, params) -> None:
    raw, csv = _metadata_case(tmp_path)
    with pytest.raises(MetadataError, match=r"no key column 'path'.*ingest\.metadata_key"):
        _run(raw, params, metadata=csv, metadata_key="path")


def test_metadata_with_repeated_rows_names_the_lines(tmp_path, params) -> None:
    raw, csv = _metadata_case(tmp_path)
    csv.write_text(csv.read_text() + "line-1/a.png,L1,cam-c,2026-01-02T03:04:10\n", encoding="utf-8")
    with pytest.raises(MetadataError, match=r"'line-1/a\.png' on lines \[2, 7\]"):
        _run(raw, params, metadata=csv)


@pytest.mark.skipif(not XSDD.is_dir(), reason="X-SDD not present")
def test_real_xsdd_ingests_with_its_folder_labels(tmp_path, params) -> None:
    # the default ontology has no class for six of X-SDD's folders: skip leaves their labels out and says so
    settings = IngestParams(
        metadata=None, labels="folders", label_map={"surface scratch": "scratch"}, unmapped_labels="skip"
    )
    result = ingest(XSDD, settings, class_names=params.ontology.class_names)
    report = result.report
    assert report["files_seen"] == 1360
    assert report["ingested"] + report["duplicate_copies"] == 1360
    assert report["quarantined"] == 0
    assert report["masks"] == 0  # no file there looks like a mask
    prior = result.prior_labels
    # one folder label per image: 9 "red iron" files are byte-identical copies of 9 others, labelled once
    assert report["duplicate_copies"] == 9
    assert len(prior) == 134 and set(prior["source_label"]) == {"surface scratch"}
    assert set(prior["label"]) == {"scratch"}
    assert report["prior_labels_unmapped_by_source"] == {
        "red iron": 397 - 9,
        "slag inclusion": 238,
        "finishing roll printing": 203,
        "oxide scale of temperature system": 203,
        "iron sheet ash": 122,
        "oxide scale of plate system": 63,
    }
    assert report["prior_labels_unmapped"] == report["prior_labels_left_out"] == 1360 - 9 - 134
    assert any(f"left out {1360 - 9 - 134} imported label(s)" in note for note in result.notes)
    assert set(prior["image_id"]) <= set(result.manifest["image_id"])
    assert set(result.manifest["format"]) == {"JPEG", "PNG"}
    write_ingest(result, tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == set(OUTPUTS)


def test_exif_rotated_copy_hashes_like_the_upright_image(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    upright = write_image(raw / "upright.png", seed=11, size=(128, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 270 to display": the stored pixels are the upright image turned 90 degrees
    with Image.open(upright) as image:
        image.transpose(Image.Transpose.ROTATE_90).save(raw / "rotated.png", exif=exif)
        image.transpose(Image.Transpose.ROTATE_90).save(raw / "rotated_no_tag.png")
    manifest = _run(raw, params, phash_threshold=0).manifest.set_index("rel_path")
    assert manifest.loc["rotated.png", "exif_orientation"] == 6
    assert (manifest.loc["rotated.png", "width"], manifest.loc["rotated.png", "height"]) == (64, 128)
    assert manifest.loc["rotated.png", "phash"] == manifest.loc["upright.png", "phash"]
    assert manifest.loc["rotated_no_tag.png", "phash"] != manifest.loc["upright.png", "phash"]


def test_yolo_labels_are_imported_with_boxes_and_label_files_are_skipped(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "a.png", seed=21, size=(96, 48))
    write_image(raw / "b.png", seed=22, size=(96, 48))
    (raw / "classes.txt").write_text("surface scratch\ncrack\n", encoding="utf-8")
    (raw / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1\n", encoding="utf-8")
    (raw / "b.txt").write_text("", encoding="utf-8")  # an image with no objects
    result = _run(raw, params, labels="yolo", label_map={"surface scratch": "scratch"})
    prior = result.prior_labels.sort_values("x").reset_index(drop=True)
    image_a = result.manifest.set_index("rel_path").loc["a.png", "image_id"]
    assert prior["image_id"].tolist() == [image_a, image_a]
    assert prior[["source_label", "label"]].values.tolist() == [["crack", "crack"], ["surface scratch", "scratch"]]
    assert prior.loc[1, ["x", "y", "w", "h"]].tolist() == pytest.approx([38.4, 14.4, 19.2, 19.2])  # on 96 x 48 pixels
    assert set(result.skipped["rel_path"]) == {"a.txt", "b.txt", "classes.txt"}
    assert result.report["prior_labels"] == 2 and result.report["prior_labels_unmapped"] == 0


def test_a_fifo_named_like_an_image_is_quarantined_not_read(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "real.png", seed=31)
    os.mkfifo(raw / "pipe.png")  # reading it would block forever
    quarantine = _run(raw, params).quarantine.set_index("rel_path")
    assert quarantine.loc["pipe.png", "reason"] == "unreadable"
    assert "regular file" in quarantine.loc["pipe.png", "detail"]
