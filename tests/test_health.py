"""The dataset health page from real stage outputs: sample data -> ingest -> agreement -> split -> health."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--params", str(ROOT / "params.yaml")] if args[0] != "health" else args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real outputs of ingest, agreement and split on the built-in sample data (one reviewer on 4 of 5 images)."""
    root = tmp_path_factory.mktemp("health")
    result = CliRunner().invoke(app, ["sample-data", str(root / "sample"), "--n-per-class", "6"])
    assert result.exit_code == 0, result.output
    sample = root / "sample"
    invoke("ingest", str(sample / "images"), str(root / "ingest"), "--metadata", str(sample / "metadata.csv"))
    manifest = pd.read_parquet(root / "ingest" / "manifest.parquet")
    truth = pd.read_csv(root / "sample" / "truth.csv")
    label = dict(zip(truth["file"], truth["label"], strict=True))
    rng = np.random.default_rng(0)
    rows = []
    for i, (image_id, rel) in enumerate(zip(manifest["image_id"], manifest["rel_path"], strict=True)):
        if rel not in label:
            continue
        who = ["ann", "bob", "cho"] if i % 5 == 0 else [["ann", "bob", "cho"][i % 3]]
        rows += [(image_id, w, label[rel] if rng.random() > 0.1 else "ok") for w in who]
    pd.DataFrame(rows, columns=["image_id", "annotator", "label"]).to_csv(root / "annotations.csv", index=False)
    invoke("agreement", str(root / "annotations.csv"), str(root / "agreement"))
    invoke(
        "split",
        str(root / "ingest" / "manifest.parquet"),
        str(root / "split"),
        "--consensus",
        str(root / "agreement" / "consensus.parquet"),
    )
    return {"root": root}


def health_args(root: Path, out: Path, *, with_all: bool = True) -> list[str]:
    args = ["health", str(root / "ingest" / "manifest.parquet"), str(out)]
    args += [
        "--quarantine",
        str(root / "ingest" / "quarantine.csv"),
        "--splits",
        str(root / "split" / "splits.parquet"),
    ]
    if with_all:
        args += ["--consensus", str(root / "agreement" / "consensus.parquet")]
        args += ["--agreement", str(root / "agreement" / "agreement.json")]
        args += ["--prior-labels", str(root / "ingest" / "prior_labels.parquet")]
    return args


def test_health_page_numbers_match_the_stage_outputs(stages: dict[str, Path]) -> None:
    root = stages["root"]
    out = root / "health"
    invoke(*health_args(root, out))
    report = json.loads((out / "health.json").read_text())
    splits = pd.read_parquet(root / "split" / "splits.parquet")
    consensus = pd.read_parquet(root / "agreement" / "consensus.parquet")
    quarantine = pd.read_csv(root / "ingest" / "quarantine.csv")
    manifest = pd.read_parquet(root / "ingest" / "manifest.parquet")

    # class balance per split, counted here from splits.parquet
    labelled = splits.dropna(subset=["label"])
    for (cls, split), n in labelled.groupby(["label", "split"]).size().items():
        assert report["class_balance"][cls][split] == n
    # unverified: labelled by one reviewer (consensus method single); the sample has no imported labels
    single = set(consensus.loc[consensus["method"] == "single", "image_id"])
    assert report["unverified"] == labelled["image_id"].isin(single).sum() > 0
    assert consensus.loc[consensus["method"] == "single", "agreement"].isna().all()  # not measured, not 1.0
    assert report["quarantined"] == len(quarantine) > 0
    assert report["quarantined_by_reason"] == quarantine["reason"].value_counts().to_dict()
    groups = manifest[manifest["dup_group_size"] > 1]["dup_group"].nunique()
    assert report["near_duplicate_groups"] == groups
    assert json.loads((out / "metrics.json").read_text()) == {
        "images": len(manifest),
        "unverified": report["unverified"],
        "quarantined": len(quarantine),
        "near_duplicate_groups": groups,
    }

    page = (out / "health.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?https?:", page)  # self-contained: nothing from the network
    assert "<script" not in page and page.count("src='data:image/png;base64,") >= 5
    for title in ("Class balance per split", "Image sizes and aspect ratios", "Duplicates and near-duplicate groups"):
        assert f"<h2>{title}</h2>" in page
    assert f"{report['unverified']} of {len(labelled)} labelled images are unverified" in page


def test_missing_inputs_leave_their_reason_and_reruns_match(stages: dict[str, Path]) -> None:
    root = stages["root"]
    args = health_args(root, root / "bare", with_all=False)
    output = invoke(*args, "--predictions", str(root / "nope.parquet"))
    page = (root / "bare" / "health.html").read_text()
    assert "Pre-label quality</h2><p class='empty'>Not available: " in page
    assert f"{root / 'nope.parquet'} not found (written by the refine stage: dvc repro refine)" in page
    assert "predictions:" in output and "not found" in output
    first = {p.name: p.read_bytes() for p in (root / "bare").iterdir()}
    invoke(*args, "--predictions", str(root / "nope.parquet"))
    assert {p.name: p.read_bytes() for p in (root / "bare").iterdir()} == first


def test_missing_manifest_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["health", str(tmp_path / "manifest.parquet"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "not found; run ingest first" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
