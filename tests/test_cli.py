from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from curation.cli import app
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    result = runner.invoke(app, ["sample-data", str(out), "--n-per-class", "4", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_ingest_on_sample_data_accounts_for_every_file(sample, tmp_path) -> None:
    out = tmp_path / "ingest"
    args = ["ingest", str(sample / "images"), str(out), "--metadata", str(sample / "metadata.csv")]
    result = runner.invoke(app, [*args, "--params", str(ROOT / "params.yaml")])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "ingest.json").read_text())
    n_files = sum(1 for p in (sample / "images").rglob("*") if p.is_file())
    assert report["files_seen"] == n_files
    assert report["files_seen"] == report["ingested"] + report["duplicate_copies"] + report["quarantined"]
    assert report["quarantined_by_reason"] == {"empty": 1, "not_an_image": 1, "truncated": 1}
    assert report["duplicate_copies"] >= 1 and report["near_duplicate_groups"] >= 1
    truth = pd.read_csv(sample / "truth.csv")
    manifest = pd.read_parquet(out / "manifest.parquet")
    ingested_files = {p for paths in manifest["all_paths"] for p in paths}
    assert set(truth["file"]) == ingested_files  # every valid sample image is ingested, nothing else
    assert {"meta_line", "meta_product", "meta_camera", "meta_lighting", "meta_captured_at"} <= set(manifest.columns)
    issues = pd.read_csv(out / "issues.csv")
    assert set(issues["kind"]) == {"metadata_unknown_file", "metadata_missing"}
    assert "ingest" in result.output and "files_seen" in result.output


def test_user_errors_are_one_line_messages_not_tracebacks(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "ingest",
            str(tmp_path / "missing"),
            str(tmp_path / "out"),
            "--no-metadata",
            "--params",
            str(ROOT / "params.yaml"),
        ],
    )
    assert result.exit_code == 1
    assert "error:" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output
    bad_params = tmp_path / "params.yaml"
    bad_params.write_text("ingest:\n  raw_dir: x\n  workerz: 2\n")
    result = runner.invoke(app, ["ingest", str(tmp_path), str(tmp_path / "out"), "--params", str(bad_params)])
    assert result.exit_code == 1
    assert "unknown key 'ingest.workerz' (line 3)" in result.output
    assert "missing key 'ontology'" in result.output


def test_console_script_is_installed() -> None:
    curation = Path(sys.executable).parent / "curation"
    completed = subprocess.run([str(curation), "--help"], capture_output=True, text=True, check=True)
    assert "ingest" in completed.stdout and "sample-data" in completed.stdout


@pytest.mark.slow
def test_dvc_repro_ingest_runs_the_declared_stage(tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", "curation", "schemas", "augment"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / name)
    bin_dir = Path(sys.executable).parent
    # PYTHONPATH: the copied code runs, not whichever checkout the venv's editable install points at
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "DVC_NO_ANALYTICS": "1",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(project),
    }

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("git", "init", "-q")
    run(str(bin_dir / "dvc"), "init", "-q")
    run(str(bin_dir / "curation"), "sample-data", "data/sample", "--n-per-class", "3")
    run(str(bin_dir / "dvc"), "repro", "ingest")
    metrics = json.loads((project / "data/ingest/ingest.json").read_text())
    assert metrics["ingested"] > 0
    shown = json.loads(run(str(bin_dir / "dvc"), "metrics", "show", "--json"))
    (workspace,) = shown.values()  # keyed "" before the first commit
    headline = workspace["data"]["data/ingest/metrics.json"]["data"]
    assert headline["images"] == metrics["ingested"] and len(headline) <= 8  # the headline, not every count
    assert (project / "dvc.lock").exists()
    assert "Stage 'ingest' didn't change" in run(str(bin_dir / "dvc"), "repro", "ingest")


def test_every_dvc_stage_is_the_command_of_the_same_name() -> None:
    """Stage, command and module names match (issue 15): `dvc.yaml` stage X runs `curation X`, and the old names
    (`prelabel --labels` for refine, `studio` for the `labelstudio` params section) keep working."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert {"ingest", "prelabel", "refine", "push", "pull", "agreement", "split", "fiftyone"} <= set(stages)
    for name, stage in stages.items():
        assert stage["cmd"].split()[:2] == ["curation", name], name
        assert runner.invoke(app, [name, "--help"]).exit_code == 0, name
    for group in ("studio", "labelstudio"):
        result = runner.invoke(app, [group, "--help"])
        assert result.exit_code == 0 and "start" in result.output and "stop" in result.output
    missing = runner.invoke(app, ["refine", "manifest.parquet", "out"])
    assert missing.exit_code == 2 and "--labels" in missing.output
