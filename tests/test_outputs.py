"""Failures a user meets are one line with a fix, and every stage publishes its outputs as one set.

Read-only, full and mount-point output folders are real tmpfs mounts (``mount -t tmpfs``), which needs root, as
in CI and on the development machines; without root the read-only case falls back to ``chmod 0555`` (EACCES) and
the other mount cases are skipped with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app
from tests.conftest import ROOT, write_image
from tests.test_export import make_inputs

PARAMS = ["--params", str(ROOT / "params.yaml")]
runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [*args, *PARAMS], env=env)


def error_line(result) -> str:
    """The command's one error line; fails when it exited 0, raised (a traceback) or printed more lines."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), f"not translated: {result.exception!r}"
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def mount(tmp_path) -> Iterator[Callable[..., Path]]:
    """``mount(folder, options)``: a tmpfs at ``folder``; every mount is undone when the test ends."""
    mounted: list[Path] = []

    def _mount(folder: Path, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (CI and the development machines run as root)")
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield _mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount_read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Real images with a manifest, splits, prior labels and two annotators' labels of them, as stage files."""
    root = tmp_path_factory.mktemp("inputs")
    manifest, splits = make_inputs(root, n=12)
    files = {"raw": root / "raw", "manifest": root / "manifest.parquet", "splits": root / "splits.parquet"}
    manifest.to_parquet(files["manifest"])
    splits.to_parquet(files["splits"])
    files["prior"] = root / "prior_labels.parquet"
    splits[["image_id", "label"]].assign(x=None, y=None, w=None, h=None).to_parquet(files["prior"])
    annotators = [splits[["image_id", "label"]].assign(annotator=name, severity=None) for name in ("a@x", "b@x")]
    files["annotations"] = root / "annotations.parquet"
    pd.concat(annotators, ignore_index=True).to_parquet(files["annotations"])
    return files


def stage_args(stage: str, inputs: dict[str, Path], out: Path) -> list[str]:
    """The command line of ``stage`` writing into ``out``."""
    return {
        "ingest": ["ingest", str(inputs["raw"]), str(out), "--no-metadata"],
        "split": [
            "split",
            str(inputs["manifest"]),
            str(out),
            "--consensus",
            str(out / "none.parquet"),
            "--prior-labels",
            str(inputs["prior"]),
            "--no-previous",
        ],
        "agreement": ["agreement", str(inputs["annotations"]), str(out)],
        "augment": ["augment", str(inputs["splits"]), str(inputs["manifest"]), str(out), "--workers", "1"],
        "export": ["export", str(inputs["splits"]), str(inputs["manifest"]), str(out), "--augmented", str(out)],
    }[stage]


# ---------------------------------------------------------------- Label Studio URL


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:50999", "has no scheme"),
        ("localhost:8080", "has no scheme"),
        ("ftp://127.0.0.1:8080", "has the unknown scheme 'ftp'"),
        ("http://", "has no host"),
        ("http://127.0.0.1:99999", "has a bad port"),
    ],
)
def test_a_bad_label_studio_url_is_one_line_naming_the_variable_and_the_form(tmp_path, url, problem) -> None:
    env = {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": "not-a-real-token"}
    for args in (["pull", str(tmp_path / "pull")], ["studio", "add-annotator", "qa@factory.example"]):
        line = error_line(invoke(*args, env=env))
        assert f"LABEL_STUDIO_URL={url!r} {problem}" in line and "http://127.0.0.1:8080" in line, line
        assert "not-a-real-token" not in line
    assert not (tmp_path / "pull").exists()


def test_a_url_with_a_password_is_refused_without_echoing_it(tmp_path) -> None:
    env = {"LABEL_STUDIO_URL": "ftp://me:s3cret@host", "LABEL_STUDIO_API_KEY": "k"}
    line = error_line(invoke("pull", str(tmp_path / "pull"), env=env))
    assert "LABEL_STUDIO_URL has the unknown scheme 'ftp'" in line and "s3cret" not in line


# ---------------------------------------------------------------- read-only, full and mount-point outputs


@pytest.mark.parametrize("stage", ["ingest", "split", "agreement", "augment"])
def test_a_read_only_out_folder_is_one_line_and_changes_nothing(stage, inputs, tmp_path, mount) -> None:
    out = tmp_path / "out"
    if os.geteuid() == 0:  # root writes through chmod: a read-only tmpfs is the real thing
        mount(out, "size=1m,mode=0755")
        (out / "old.txt").write_text("old")
        remount_read_only(out)
        expected = f"cannot write {out}: read-only file system (EROFS); choose a writable out folder"
    else:
        out.mkdir()
        (out / "old.txt").write_text("old")
        out.chmod(0o555)
        expected = f"cannot write {out}: permission denied (EACCES)"
    try:
        line = error_line(invoke(*stage_args(stage, inputs, out)))
    finally:
        if os.geteuid() != 0:
            out.chmod(0o755)  # so pytest can remove it
    assert line == f"error: {expected}" or line.startswith(f"error: {expected}"), line
    assert snapshot(out) == {"old.txt": b"old"}


def test_a_read_only_folder_for_sample_data_is_one_line(tmp_path, mount) -> None:
    out = mount(tmp_path / "sample", "size=1m,ro")
    line = error_line(runner.invoke(app, ["sample-data", str(out), "--n-per-class", "1"]))
    assert line.startswith(f"error: cannot write {out}/") and "read-only file system (EROFS)" in line, line


def test_a_full_disk_is_one_line_and_keeps_the_previous_outputs_whole(inputs, tmp_path, mount) -> None:
    out = mount(tmp_path / "out", "size=256k")
    args = stage_args("ingest", inputs, out)
    assert invoke(*args).exit_code == 0
    before = snapshot(out)
    filler = tmp_path / "out" / "filler"
    with filler.open("wb", buffering=0) as handle, pytest.raises(OSError) as full:
        while True:
            handle.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    line = error_line(invoke(*args))
    assert f"cannot write {out}/" in line, line
    assert "no space left on device (ENOSPC); free space there or choose an out folder on a larger disk" in line
    filler.unlink()
    assert snapshot(out) == before  # the old set, byte for byte, and no staging folder left behind


def test_export_and_augment_into_a_folder_that_is_a_mount_point(inputs, tmp_path, mount) -> None:
    augmented = mount(tmp_path / "augment", "size=64m")
    exported = mount(tmp_path / "export", "size=64m")
    for _ in range(2):  # the second run replaces every output in place, on the mount
        result = invoke(*stage_args("augment", inputs, augmented), "--variants", "2")
        assert result.exit_code == 0, result.output
        args = stage_args("export", inputs, exported)
        result = invoke(*args[:-1], str(augmented))
        assert result.exit_code == 0, result.output
    report = json.loads((augmented / "augment.json").read_text())
    assert report["augmented_images"] == len(list((augmented / "images").iterdir())) > 0
    assert {p.name for p in augmented.iterdir()} == {
        "images",
        "augmented.parquet",
        "augment.json",
        "metrics.json",
        "preview.png",
    }
    export = json.loads((exported / "export.json").read_text())
    assert export["splits"]["train"]["images"] == len(list((exported / "train" / "data").iterdir()))
    assert {p.name for p in exported.iterdir()} == {
        "train",
        "val",
        "test",
        "export.json",
        "metrics.json",
        "provenance.json",
    }
    # DVC metrics: the headline of export.json, per split
    assert json.loads((exported / "metrics.json").read_text()) == {
        "images": export["images"],
        **{name: export["splits"][name]["images"] for name in ("train", "val", "test")},
    }


# ---------------------------------------------------------------- outputs as a set


def test_a_failed_third_output_leaves_the_previous_set_and_readers_see_one_set(inputs, tmp_path, monkeypatch) -> None:
    from curation import ingest as ingest_module
    from curation.io import atomic_path

    raw = tmp_path / "raw"
    for i in range(4):
        write_image(raw / f"{i}.png", seed=100 + i, format="PNG")
    out = tmp_path / "ingest"
    args = ["ingest", str(raw), str(out), "--no-metadata"]
    assert invoke(*args).exit_code == 0
    before = snapshot(out)
    write_image(raw / "new.png", seed=200, format="PNG")  # the next run has a different manifest

    real_write_csv = ingest_module.write_csv

    def fails_on_quarantine(path: Path, frame: pd.DataFrame) -> Path:
        if path.name != "quarantine.csv":
            return real_write_csv(path, frame)
        with atomic_path(path) as tmp:  # half written, then the disk is full
            tmp.write_text("image_id,pa")
            raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(ingest_module, "write_csv", fails_on_quarantine)
        result = invoke(*args)
    assert snapshot(out) == before  # the new manifest.parquet is not beside the old ingest.json
    line = error_line(result)
    assert line.startswith(f"error: cannot write {out / 'quarantine.csv'}: no space left on device (ENOSPC)"), line

    # A run killed while it renames its outputs into place: readers refuse the folder until the stage re-runs.
    import curation.io

    real_replace = os.replace
    swapped = []

    def killed_after_one(src, dst):
        if Path(dst).parent == out and Path(src).parent.name.startswith(".publish-"):  # an output moved in
            if swapped:
                raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this line of the stage runs
            swapped.append(dst)
        return real_replace(src, dst)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(curation.io.os, "replace", killed_after_one)
        ingest_module.write_ingest(ingest_module.ingest(raw, _ingest_params(), class_names=["ok"]), out)
    assert (out / curation.io.PUBLISHING).exists()
    refused = error_line(invoke("prelabel", str(out / "manifest.parquet"), str(tmp_path / "prelabel")))
    assert "stopped while replacing its outputs" in refused and "re-run the stage" in refused, refused
    refused = error_line(invoke(*stage_args("split", {**inputs, "manifest": out / "manifest.parquet"}, tmp_path)))
    assert "stopped while replacing its outputs" in refused
    assert not (tmp_path / "prelabel").exists()

    assert invoke(*args).exit_code == 0  # re-running the stage publishes a whole set again
    assert not (out / curation.io.PUBLISHING).exists()
    assert curation.io.check_published(out / "manifest.parquet") == out / "manifest.parquet"
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == json.loads((out / "ingest.json").read_text())["ingested"] == 5
    assert not [p for p in out.iterdir() if p.name.startswith(".publish-")]


def _ingest_params():
    from schemas.params import IngestParams

    return IngestParams(metadata=None, workers=1)


def test_reruns_give_the_same_bytes_and_leave_no_marker(inputs, tmp_path) -> None:
    for stage in ("split", "agreement"):
        out = tmp_path / stage
        assert invoke(*stage_args(stage, inputs, out)).exit_code == 0
        first = snapshot(out)
        assert invoke(*stage_args(stage, inputs, out)).exit_code == 0
        assert snapshot(out) == first
        assert not [name for name in first if name.startswith(".")], sorted(first)
