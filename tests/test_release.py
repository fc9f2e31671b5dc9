"""A release end to end in a throwaway git + DVC repository (never in the project's own repo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.release import ReleaseError, release
from curation.release_cli import release_command
from schemas.params import load_params
from schemas.params_dataset import ReleaseParams, SplitParams
from tests.conftest import ROOT, command_app
from tests.test_export import CLASSES, make_inputs

DVC_YAML = """\
stages:
  split:
    cmd: curation split data/ingest/manifest.parquet data/split --consensus none.parquet
      --prior-labels data/ingest/prior_labels.parquet
    deps: [data/ingest/manifest.parquet, data/ingest/prior_labels.parquet]
    outs:
      - data/split/splits.parquet
      - data/split/split.json:
          cache: false
    metrics:
      - data/split/metrics.json:
          cache: false
  export:
    cmd: curation export data/split/splits.parquet data/ingest/manifest.parquet data/export
    deps: [data/split/splits.parquet, data/ingest/manifest.parquet]
    outs:
      - data/export/train
      - data/export/val
      - data/export/test
      - data/export/provenance.json
      - data/export/export.json:
          cache: false
    metrics:
      - data/export/metrics.json:
          cache: false
"""


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"),
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def _sh(cwd: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _write_inputs(repo: Path, manifest: pd.DataFrame) -> None:
    ingest = repo / "data" / "ingest"
    ingest.mkdir(parents=True, exist_ok=True)
    manifest.drop(columns="truth").to_parquet(ingest / "manifest.parquet")
    prior = pd.DataFrame({"image_id": manifest["image_id"], "label": manifest["truth"]})
    for column in ("x", "y", "w", "h"):
        prior[column] = None
    prior.to_parquet(ingest / "prior_labels.parquet")


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copyfile(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    _sh(repo, "git", "init", "-q", "-b", "main")
    _sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    _sh(repo, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    return repo


@pytest.mark.slow  # two dvc repro runs, two releases, a clone and a pull: about a minute on a busy machine
def test_release_tags_pushes_and_a_checkout_of_the_tag_pulls_exactly_that_release(repo, tmp_path) -> None:
    params = load_params(repo / "params.yaml")
    settings = ReleaseParams(stages=["split", "export"], remote_url=Path("../remote"))
    manifest, _ = make_inputs(tmp_path / "v1", n=40)
    manifest["truth"] = [CLASSES[i % 4] for i in range(len(manifest))]
    _write_inputs(repo, manifest)
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "commit", "-q", "-m", "pipeline and v1 inputs")

    with pytest.raises(ReleaseError, match=r"dvc\.lock not found; run `dvc repro`"):
        release(repo, "v1", settings, ontology=params.ontology, split_settings=SplitParams())
    _sh(repo, sys.executable, "-m", "dvc", "repro", "-q")
    v1 = release(repo, "v1", settings, ontology=params.ontology, split_settings=SplitParams())
    assert v1.version == json.loads((repo / "data/export/export.json").read_text())["version"]
    assert _sh(repo, "git", "tag", "--list").split() == ["v1"]
    assert _sh(repo, "git", "status", "--porcelain").strip() == ""  # lock, card, metrics, pins: all committed
    tracked = _sh(repo, "git", "ls-files").split()
    assert {"dvc.lock", "DATASET.md", "releases/splits.parquet", "data/export/export.json"} <= set(tracked)
    assert not any(p.startswith("data/export/train/") for p in tracked)  # images live in DVC, not git
    assert any((tmp_path / "remote").rglob("*"))  # pushed to the default folder remote it configured
    card = (repo / "DATASET.md").read_text()
    assert f"`{v1.version}`" in card and "| scratch | 스크래치 |" in card and "git checkout v1 && dvc pull" in card
    assert "No agreement metrics" in card and "whole-image boxes" in card
    with pytest.raises(ReleaseError, match="tag 'v1' already exists"):
        release(repo, "v1", settings, ontology=params.ontology, split_settings=SplitParams())

    old_splits = pd.read_parquet(repo / "data/split/splits.parquet")
    extra, _ = make_inputs(tmp_path / "v2", n=44)  # same seeds: 40 identical images and 4 new ones (10%)
    extra["truth"] = [CLASSES[i % 4] for i in range(len(extra))]
    new_rows = extra[~extra["image_id"].isin(manifest["image_id"])]
    assert len(new_rows) == 4
    _write_inputs(repo, pd.concat([manifest, new_rows], ignore_index=True))
    _sh(repo, sys.executable, "-m", "dvc", "repro", "-q")
    new_splits = pd.read_parquet(repo / "data/split/splits.parquet")
    kept = old_splits.merge(new_splits, on="image_id", suffixes=("_v1", "_v2"))
    assert len(kept) == 40 and (kept["split_v1"] == kept["split_v2"]).all() and kept["pinned_v2"].all()
    with pytest.raises(ReleaseError, match="other changes are staged"):
        _sh(repo, "git", "add", "data/ingest")
        release(repo, "v2", settings, ontology=params.ontology, split_settings=SplitParams())
    _sh(repo, "git", "commit", "-q", "-m", "v2 inputs")
    # as load_params gives them when run from another folder: absolute paths under the project root
    anchored = {k: repo / v for k, v in settings.model_dump().items() if isinstance(v, Path) and k != "remote_url"}
    v2 = release(
        repo,
        "v2",
        settings.model_copy(update=anchored),
        ontology=params.ontology,
        split_settings=SplitParams(previous=repo / "releases" / "splits.parquet"),
    )
    assert _sh(repo, "git", "status", "--porcelain").strip() == ""  # card, metrics and pins committed again
    assert v2.version != v1.version

    diff = json.loads(_sh(repo, sys.executable, "-m", "dvc", "metrics", "diff", "v1", "v2", "--json"))
    changed = diff["data/export/metrics.json"]  # the headline numbers
    assert changed["images"] == {"old": 40, "new": 44, "diff": 4}

    clone = tmp_path / "clone"
    _sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    _sh(clone, "git", "checkout", "-q", "v1")
    _sh(clone, sys.executable, "-m", "dvc", "pull", "-q")
    for split in ("train", "val", "test"):
        coco = json.loads((clone / "data/export" / split / "labels.json").read_text())
        assert coco["info"]["version"] == v1.version
        assert len(list((clone / "data/export" / split / "data").iterdir())) == len(coco["images"])
    assert (
        sum(
            len(json.loads((clone / f"data/export/{s}/labels.json").read_text())["images"])
            for s in ("train", "val", "test")
        )
        == 40
    )


def test_release_command_works_on_the_folder_holding_params_by_default(tmp_path, monkeypatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    shutil.copyfile(ROOT / "params.yaml", project / "params.yaml")
    monkeypatch.chdir(elsewhere)
    app = command_app("release", release_command)
    result = CliRunner().invoke(app, ["release", "v1", "--params", "../project/params.yaml"])
    assert result.exit_code == 1
    assert f"{project.resolve()}: not a git repository" in " ".join(result.output.split())


def test_release_command_refuses_outside_a_git_repository(tmp_path) -> None:
    app = command_app("release", release_command)
    result = CliRunner().invoke(app, ["release", "v1", "--repo", str(tmp_path), "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 1
    assert "not a git repository" in " ".join(result.output.split())
