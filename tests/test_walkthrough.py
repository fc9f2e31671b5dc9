"""The README's "Your own dataset" walk-through, command by command, on a few real X-SDD class folders (names with
spaces) and a real Label Studio server: ingest with labels -> ontology init -> ingest -> prelabel (offline
EfficientNet fallback) -> push."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import uuid

import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app
from schemas.params import load_params
from tests.conftest import ROOT, XSDD
from tests.studio_fixture import Studio, studio_server  # noqa: F401

FOLDERS = ("surface scratch", "red iron", "iron sheet ash")
PER_FOLDER = 6


def readme_commands() -> list[str]:
    """The ``curation`` lines of the README's "Your own dataset" code block, comments removed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### Your own dataset\n.*?```bash\n(.*?)```", text, re.DOTALL)
    assert block, "README.md has no 'Your own dataset' walk-through"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


@pytest.mark.slow  # a Label Studio server (~15 s, more the first time) and EfficientNet on 18 images
def test_readme_walkthrough_on_xsdd_folders(studio: Studio, monkeypatch) -> None:
    if not XSDD.is_dir():
        pytest.skip(f"X-SDD not present at {XSDD} (set XSDD_DIR)")
    from curation.studio import cli as studio_cli

    project = studio.document_root / f"walkthrough-{uuid.uuid4().hex[:8]}"  # the server serves files under it
    for folder in FOLDERS:
        (project / "raw" / folder).mkdir(parents=True)
        for source in sorted((XSDD / folder).iterdir())[:PER_FOLDER]:
            shutil.copyfile(source, project / "raw" / folder / source.name)
    shutil.copyfile(ROOT / "params.yaml", project / "params.yaml")
    monkeypatch.chdir(project)  # the README's commands use paths relative to the project folder
    title = f"walkthrough {project.name[-8:]}"
    monkeypatch.setattr(
        studio_cli,
        "studio_settings",
        lambda params: studio.settings_for(title, description_language=params.labelstudio.description_language),
    )
    runner = CliRunner()

    commands = readme_commands()
    assert [shlex.split(c)[1] for c in commands] == ["ingest", "ontology", "ingest", "prelabel", "studio", "push"]
    results = {}
    for number, command in enumerate(commands):
        args = shlex.split(command)[1:]
        if args[:2] == ["studio", "start"]:
            continue  # the session's server (the fixture) stands in for `curation studio start`
        results[number] = runner.invoke(app, args)
    text = {n: " ".join(r.output.split()) for n, r in results.items()}

    assert results[0].exit_code == 1
    assert all(f"'{folder}' ({PER_FOLDER})" in text[0] for folder in FOLDERS)
    assert results[1].exit_code == 0, results[1].output
    params = load_params(project / "params.yaml")
    assert params.ontology.class_names == ["iron_sheet_ash", "red_iron", "surface_scratch"]  # --replace
    assert params.ontology.hard_negatives == []  # the sample's mapped to its own classes
    assert results[2].exit_code == 0, results[2].output
    prior = pd.read_parquet(project / "data" / "ingest" / "prior_labels.parquet")
    assert prior["label"].value_counts().to_dict() == {name: PER_FOLDER for name in params.ontology.class_names}
    assert results[3].exit_code == 0, results[3].output
    assert "zero-shot skipped, embeddings from the offline backbone efficientnet-lite0" in text[3]
    predictions = pd.read_parquet(project / "data" / "prelabel" / "predictions.parquet")
    assert len(predictions) == 3 * PER_FOLDER and set(predictions["source"]) == {"few_shot"}
    assert set(predictions["label"]) <= set(params.ontology.class_names)

    # push stops on the missing Korean names, naming the feature; the README's fix, then push again
    assert results[5].exit_code == 1
    assert "Korean descriptions (labelstudio.description_language: both) need a Korean name for" in text[5]
    params_text = (project / "params.yaml").read_text(encoding="utf-8")
    (project / "params.yaml").write_text(
        params_text.replace("description_language: both", "description_language: en"), encoding="utf-8"
    )
    pushed = runner.invoke(app, shlex.split(commands[5])[1:])
    assert pushed.exit_code == 0, pushed.output
    assert f"{3 * PER_FOLDER} tasks created" in " ".join(pushed.output.split())
    report = json.loads((project / "data" / "push" / "push.json").read_text())
    assert report["tasks_created"] == 3 * PER_FOLDER
    config = studio.client().projects.get(id=report["project_id"]).label_config
    assert all(f'value="{name}"' in config for name in params.ontology.class_names)
    assert 'value="scratch"' not in config
