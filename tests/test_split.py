from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from curation.split import SplitError, image_labels, split, write_split
from curation.split_cli import split_command
from schemas.params_dataset import SPLITS, SplitParams
from tests.conftest import ROOT

CLASSES = ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]


def _id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_manifest(counts: dict[str, int], *, group_sizes: tuple[int, ...] = (1,), tag: str = "v1") -> pd.DataFrame:
    """Rows per class; images come in near-duplicate groups cycling through ``group_sizes``."""
    rows = []
    for cls, n in counts.items():
        made, g = 0, 0
        while made < n:
            size = min(group_sizes[g % len(group_sizes)], n - made)
            ids = [_id(f"{tag}-{cls}-{made + k}") for k in range(size)]
            for image_id in ids:
                rows.append(
                    {"image_id": image_id, "dup_group": min(ids), "meta_line": f"line-{len(rows) % 4}", "truth": cls}
                )
            made += size
            g += 1
    return pd.DataFrame(rows)


def consensus_of(manifest: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"image_id": manifest["image_id"], "label": manifest["truth"], "severity": "minor"})


def run(manifest: pd.DataFrame, settings: SplitParams | None = None, previous: pd.DataFrame | None = None):
    labels = image_labels(manifest, consensus=consensus_of(manifest), class_names=CLASSES)
    return split(manifest, labels, settings or SplitParams(group_by=[]), previous=previous)


def test_splits_are_disjoint_covering_and_within_one_image_per_class() -> None:
    counts = {"scratch": 23, "contamination": 10, "dent": 7, "crack": 41, "discoloration": 100, "ok": 13}
    manifest = make_manifest(counts)
    result = run(manifest)
    splits = result.splits
    assert sorted(splits["image_id"]) == sorted(manifest["image_id"])  # covering, each image exactly once
    assert not splits["image_id"].duplicated().any()
    assert set(splits["split"]) == set(SPLITS)
    target = SplitParams().ratios
    for cls, n in counts.items():
        got = splits[splits["label"] == cls]["split"].value_counts()
        for name in SPLITS:
            assert abs(got.get(name, 0) - target[name] * n) <= 1, (cls, name, got.to_dict())
        assert result.report["classes"][cls]["max_deviation_images"] <= 1
    assert result.report["splits"] == {s: int((splits["split"] == s).sum()) for s in SPLITS}
    assert result.warnings == []


def test_groups_never_cross_splits_including_a_params_named_column() -> None:
    manifest = make_manifest({c: 30 for c in CLASSES}, group_sizes=(1, 3, 2))
    result = run(manifest, SplitParams(group_by=[]))
    merged = manifest.merge(result.splits, on="image_id")
    assert merged.groupby("dup_group")["split"].nunique().max() == 1
    assert (merged.groupby("dup_group")["split"].size() > 1).any()  # the test really has multi-image groups

    by_line = run(manifest, SplitParams(group_by=["meta_line"]))
    merged = manifest.merge(by_line.splits, on="image_id")
    assert merged.groupby("meta_line")["split"].nunique().max() == 1
    assert merged.groupby("dup_group")["split"].nunique().max() == 1


def test_old_images_keep_their_split_when_ten_percent_new_images_arrive() -> None:
    counts = {c: 40 for c in CLASSES}
    old = make_manifest(counts, group_sizes=(1, 1, 2))
    first = run(old).splits
    new = make_manifest({c: 4 for c in CLASSES}, tag="v2")
    # two new images are near-duplicates of old ones: they must follow their old group
    joined = old.drop_duplicates("dup_group").head(2)
    new.loc[:1, "dup_group"] = joined["dup_group"].to_numpy()
    new.loc[:1, "truth"] = joined["truth"].to_numpy()
    grown = pd.concat([old, new], ignore_index=True)

    second = run(grown, previous=first)
    merged = first.merge(second.splits, on="image_id", suffixes=("_old", "_new"))
    assert len(merged) == len(first)
    assert (merged["split_old"] == merged["split_new"]).all()
    assert second.report["pinned"] == len(first)
    both = grown.merge(second.splits, on="image_id")
    assert both.groupby("dup_group")["split"].nunique().max() == 1
    for cls in CLASSES:  # the new images filled the deficits: still close to 7:2:1
        row = second.report["classes"][cls]
        assert row["max_deviation_images"] <= 2, (cls, row)

    unpinned = run(grown).splits  # without pins a re-cut moves old images: the pins are what keeps them
    moved = first.merge(unpinned, on="image_id", suffixes=("_old", "_new"))
    assert (moved["split_old"] != moved["split_new"]).any()


def test_identical_input_gives_identical_output_whatever_the_row_order(tmp_path) -> None:
    manifest = make_manifest({c: 17 for c in CLASSES}, group_sizes=(1, 2))
    a = run(manifest)
    b = run(manifest.sample(frac=1, random_state=3).reset_index(drop=True))
    pd.testing.assert_frame_equal(a.splits, b.splits)
    write_split(a, tmp_path / "a")
    write_split(b, tmp_path / "b")
    for name in ("split.json", "class_counts.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other_seed = run(manifest, SplitParams(group_by=[], seed=1))
    assert not other_seed.splits["split"].equals(a.splits["split"])


def test_small_classes_are_warned_about_and_unlabeled_images_follow_the_policy() -> None:
    manifest = make_manifest({"scratch": 30, "crack": 2, "ok": 10})
    labels = image_labels(manifest, consensus=consensus_of(manifest).iloc[:-5], class_names=CLASSES)
    result = split(manifest, labels, SplitParams(group_by=[]))
    assert any("'crack'" in w and "cannot appear in every split" in w for w in result.warnings)
    assert result.report["classes"]["unlabeled"]["images"] == 5
    assert result.splits["label"].isna().sum() == 5

    dropped = split(manifest, labels, SplitParams(group_by=[], unlabeled="drop"))
    assert dropped.report["unlabeled_dropped"] == 5
    assert len(dropped.splits) == len(manifest) - 5
    assert dropped.splits["label"].notna().all()


def test_labels_come_from_consensus_first_then_prior_labels_with_boxes() -> None:
    manifest = make_manifest({"scratch": 2, "dent": 1})
    a, b, c = manifest["image_id"]
    prior = pd.DataFrame(
        [
            {"image_id": a, "label": "scratch", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0},
            {"image_id": a, "label": "scratch", "x": 5.0, "y": 6.0, "w": 7.0, "h": 8.0},
            {"image_id": a, "label": "dent", "x": 9.0, "y": 9.0, "w": 2.0, "h": 2.0},
            {"image_id": b, "label": None, "x": None, "y": None, "w": None, "h": None},
        ]
    )
    from_prior = image_labels(manifest, prior=prior, class_names=CLASSES).set_index("image_id")
    assert from_prior.loc[a, "label"] == "scratch"  # majority of the image's rows
    assert len(json.loads(from_prior.loc[a, "boxes"])) == 3  # prior labels keep every box
    assert pd.isna(from_prior.loc[b, "label"]) and from_prior.loc[b, "label_source"] == "none"

    consensus = pd.DataFrame({"image_id": [a, c], "label": ["scratch", "dent"], "disputed": [True, False]})
    labels = image_labels(manifest, consensus=consensus, prior=prior, class_names=CLASSES).set_index("image_id")
    assert labels.loc[a, "label_source"] == "consensus" and bool(labels.loc[a, "disputed"])
    assert [box["label"] for box in json.loads(labels.loc[a, "boxes"])] == ["scratch", "scratch"]
    assert pd.isna(labels.loc[c, "boxes"])


def test_bad_inputs_are_clear_errors() -> None:
    manifest = make_manifest({"scratch": 3})
    with pytest.raises(SplitError, match=r"missing column\(s\) \['meta_serial'\]"):
        run(manifest, SplitParams(group_by=["meta_serial"]))
    bad = pd.DataFrame({"image_id": manifest["image_id"], "label": "scratches"})
    with pytest.raises(SplitError, match=r"\['scratches'\] are not ontology classes"):
        image_labels(manifest, consensus=bad, class_names=CLASSES)
    with pytest.raises(ValueError, match="must sum to 1"):
        SplitParams(train=0.7, val=0.2, test=0.2)


def test_split_command_writes_outputs_and_pins_a_previous_release(tmp_path) -> None:
    app = typer.Typer()
    app.command("split")(split_command)
    app.command("noop")(lambda: None)  # two commands, so typer keeps the sub-command name
    manifest = make_manifest({c: 10 for c in CLASSES})
    manifest.to_parquet(tmp_path / "manifest.parquet")
    consensus_of(manifest).to_parquet(tmp_path / "consensus.parquet")
    base = ["split", str(tmp_path / "manifest.parquet"), str(tmp_path / "out")]
    options = ["--consensus", str(tmp_path / "consensus.parquet"), "--params", str(ROOT / "params.yaml")]
    result = CliRunner().invoke(app, [*base, *options, "--no-previous"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "split.json").read_text())
    assert report["images"] == 60 and report["label_sources"] == {"consensus": 60}
    first = pd.read_parquet(tmp_path / "out" / "splits.parquet")

    edited = first.copy()
    edited.loc[0, "split"] = "test" if edited.loc[0, "split"] != "test" else "val"
    edited.to_parquet(tmp_path / "previous.parquet")
    result = CliRunner().invoke(app, [*base, *options, "--previous", str(tmp_path / "previous.parquet")])
    assert result.exit_code == 0, result.output
    again = pd.read_parquet(tmp_path / "out" / "splits.parquet")
    assert again.loc[0, "split"] == edited.loc[0, "split"] and again["pinned"].all()

    result = CliRunner().invoke(app, [*base, *options, "--previous", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 1 and "nope.parquet: file not found" in result.output


def test_grouped_classes_land_within_two_points_of_the_ratios() -> None:
    # sizes like magnetic-tile's after grouping (a tile under several lightings): 1 to 12 images per group
    counts = {"scratch": 115, "contamination": 85, "dent": 57, "crack": 103, "ok": 952}
    manifest = make_manifest(counts, group_sizes=(1, 2, 1, 3, 7, 1, 2, 4, 12, 1, 5, 2))
    result = run(manifest)
    merged = manifest.merge(result.splits, on="image_id")
    assert merged.groupby("dup_group")["split"].nunique().max() == 1
    target = SplitParams().ratios
    for cls, n in counts.items():
        got = merged[merged["truth"] == cls]["split"].value_counts()
        for name in SPLITS:
            assert abs(got.get(name, 0) / n - target[name]) <= 0.02, (cls, name, got.to_dict())


def test_a_group_above_the_share_of_its_split_is_warned_about_once() -> None:
    manifest = make_manifest({"scratch": 100, "dent": 100})
    big = manifest.index[manifest["truth"] == "dent"][:12]
    manifest.loc[big, "dup_group"] = manifest.loc[big, "image_id"].min()
    result = run(manifest, SplitParams(group_by=[], max_group_share=0.05))
    group = manifest.loc[big, "image_id"].min()
    lines = [w for w in result.warnings if group in w]
    assert len(lines) == 1 and len(result.warnings) == 1
    landed = result.splits.set_index("image_id").loc[manifest.loc[big[0], "image_id"], "split"]
    split_size = int((result.splits["split"] == landed).sum())
    assert f"holds 12 images, {12 / split_size:.1%} of split {landed!r} ({split_size} images)" in lines[0]
    assert "split.max_group_share = 0.05" in lines[0] and "\n" not in lines[0]
    assert result.report["warnings"] == result.warnings
    quiet = run(manifest, SplitParams(group_by=[], max_group_share=0.5))
    assert quiet.warnings == []
