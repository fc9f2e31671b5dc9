"""Bringing one's own class set: unmapped labels stop ingest, `curation ontology init`, optional Korean, empty
datasets refused, and console text that keeps its brackets. Runs on a few real X-SDD class folders (names with
spaces) copied to tmp_path."""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import LabelImportError, ParamsError
from curation.ontology import class_name_for, plan_classes
from curation.prelabel.captions import require_korean_descriptions
from curation.prelabel.prompts import build_text_classes
from curation.studio.config import label_config
from schemas.params import load_params
from schemas.params_prelabel import ClipParams
from tests.conftest import ROOT, XSDD, write_image

FOLDERS = ("surface scratch", "red iron", "iron sheet ash")
PER_FOLDER = 6
NAMES_ONLY = """\
ontology:
  classes:
    - name: rolled_in_scale
    - name: patches
"""


def _copy_xsdd(raw: Path) -> None:
    if not XSDD.is_dir():
        pytest.skip(f"X-SDD not present at {XSDD} (set XSDD_DIR)")
    for folder in FOLDERS:
        (raw / folder).mkdir(parents=True)
        for source in sorted((XSDD / folder).iterdir())[:PER_FOLDER]:
            shutil.copyfile(source, raw / folder / source.name)


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder: the repo's params.yaml and ``raw/<X-SDD class folder>/<image>``."""
    _copy_xsdd(tmp_path / "raw")
    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def _cli(project: Path, *args: str):
    return CliRunner().invoke(app, [*args, "--params", str(project / "params.yaml")])


def _text(result) -> str:
    """The command's output on one line (rich wraps long lines at the terminal width)."""
    return " ".join(result.output.split())


def _ingest(project: Path, *extra: str):
    return _cli(project, "ingest", str(project / "raw"), str(project / "out"), "--no-metadata", *extra)


def _set(project: Path, old: str, new: str) -> None:
    path = project / "params.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_unmapped_labels_stop_ingest_with_counts_per_source_label(project) -> None:
    result = _ingest(project, "--labels", "folders")
    assert result.exit_code == 1
    text = _text(result)
    assert f"{3 * PER_FOLDER} imported label(s) map to no ontology class" in text
    for folder in FOLDERS:
        assert f"'{folder}' ({PER_FOLDER})" in text
    assert "ingest.label_map" in text and "curation ontology init" in text and "unmapped_labels" in text
    assert not (project / "out" / "prior_labels.parquet").exists()


def test_skip_policy_leaves_unmapped_labels_out_and_says_so(project) -> None:
    _set(project, "unmapped_labels: error", "unmapped_labels: skip")
    _set(project, "label_map: {}", 'label_map: {"surface scratch": scratch}')
    result = _ingest(project, "--labels", "folders")
    assert result.exit_code == 0, result.output
    note = f"left out {2 * PER_FOLDER} imported label(s) of no ontology class (ingest.unmapped_labels: skip)"
    assert note in _text(result)
    assert f"'iron sheet ash' ({PER_FOLDER}), 'red iron' ({PER_FOLDER})" in _text(result)
    prior = pd.read_parquet(project / "out" / "prior_labels.parquet")
    assert prior["label"].tolist() == ["scratch"] * PER_FOLDER
    report = json.loads((project / "out" / "ingest.json").read_text())
    assert report["prior_labels_unmapped_by_source"] == {"iron sheet ash": PER_FOLDER, "red iron": PER_FOLDER}
    assert report["prior_labels_left_out"] == 2 * PER_FOLDER


def test_add_policy_appends_classes_to_params_keeping_the_rest_of_the_file(project) -> None:
    _set(project, "unmapped_labels: error", "unmapped_labels: add")
    before = (project / "params.yaml").read_text(encoding="utf-8")
    result = _ingest(project, "--labels", "folders")
    assert result.exit_code == 0, result.output
    text = _text(result)
    assert f"ingest.unmapped_labels: add: wrote to {project / 'params.yaml'}" in text
    assert "iron_sheet_ash ('iron sheet ash')" in text and "'surface scratch' -> surface_scratch" in text
    after = (project / "params.yaml").read_text(encoding="utf-8")

    diff = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]
    removed = [line[2:] for line in diff if line.startswith("- ")]
    added = [line[2:].strip() for line in diff if line.startswith("+ ")]
    assert [line.split("#")[0].strip() for line in removed] == ["label_map: {}"]  # became a block mapping
    assert "# source label -> ontology class" in after  # its comment stayed
    assert sorted(added) == sorted(
        [
            "- name: iron_sheet_ash",
            "name_en: iron sheet ash",
            "- name: red_iron",
            "name_en: red iron",
            "- name: surface_scratch",
            "name_en: surface scratch",
            'label_map:                          # source label -> ontology class, e.g. {"surface scratch": scratch}',
            "iron sheet ash: iron_sheet_ash",
            "red iron: red_iron",
            "surface scratch: surface_scratch",
        ]
    )
    params = load_params(project / "params.yaml")
    assert params.ontology.class_names[-3:] == ["iron_sheet_ash", "red_iron", "surface_scratch"]
    assert params.ontology.get("red_iron").name_en == "red iron"
    prior = pd.read_parquet(project / "out" / "prior_labels.parquet")
    assert prior.groupby("source_label")["label"].first().to_dict() == {
        "iron sheet ash": "iron_sheet_ash",
        "red iron": "red_iron",
        "surface scratch": "surface_scratch",
    }

    again = _ingest(project, "--labels", "folders")
    assert again.exit_code == 0, again.output
    assert "wrote to" not in _text(again)
    assert (project / "params.yaml").read_text(encoding="utf-8") == after  # a rerun leaves the bytes alone


def test_ontology_init_names_xsdd_folders_and_maps_them(project) -> None:
    before = load_params(project / "params.yaml").ontology.class_names
    result = _cli(project, "ontology", "init", str(project / "raw"), "--labels", "folders")
    assert result.exit_code == 0, result.output
    assert "wrote 3 new class(es) and 3 label_map entr(ies)" in _text(result)
    # the default description_language asks for Korean names the new classes lack: said, naming the feature
    assert "Korean descriptions (labelstudio.description_language: both) need a Korean name for" in _text(result)
    params = load_params(project / "params.yaml")
    assert params.ontology.class_names == [*before, "iron_sheet_ash", "red_iron", "surface_scratch"]
    assert [params.ontology.get(n).name_en for n in ("iron_sheet_ash", "red_iron", "surface_scratch")] == [
        "iron sheet ash",
        "red iron",
        "surface scratch",
    ]
    assert params.ingest.label_map == {
        "iron sheet ash": "iron_sheet_ash",
        "red iron": "red_iron",
        "surface scratch": "surface_scratch",
    }
    written = (project / "params.yaml").read_bytes()
    again = _cli(project, "ontology", "init", str(project / "raw"), "--labels", "folders")
    assert again.exit_code == 0 and "unchanged" in _text(again)
    assert (project / "params.yaml").read_bytes() == written

    ingested = _ingest(project, "--labels", "folders")
    assert ingested.exit_code == 0, ingested.output
    prior = pd.read_parquet(project / "out" / "prior_labels.parquet")
    expected = {folder.replace(" ", "_"): len(list((project / "raw" / folder).iterdir())) for folder in FOLDERS}
    assert prior["label"].value_counts().to_dict() == expected


def test_class_names_for_source_labels() -> None:
    assert class_name_for("rolled-in_scale") == "rolled_in_scale"
    assert class_name_for("Surface  Scratch ") == "surface_scratch"
    assert class_name_for("3") == "c_3"
    assert class_name_for("Crazing (éclat)") == "crazing_eclat"
    assert class_name_for("스크래치") is None
    plan = plan_classes({"rolled-in_scale": 4, "patches": 2, "Scratch": 1}, class_names=["scratch", "patches"])
    assert plan.added == [("rolled_in_scale", "rolled-in_scale")]
    assert plan.label_map == {"Scratch": "scratch", "rolled-in_scale": "rolled_in_scale"}
    with pytest.raises(LabelImportError, match=r"'스크래치' \(3\) contain no Latin letters.*ingest\.label_map"):
        plan_classes({"스크래치": 3}, class_names=["scratch"])


def test_names_only_ontology_is_accepted_where_no_feature_needs_korean(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text(NAMES_ONLY, encoding="utf-8")
    params = load_params(tmp_path / "params.yaml")
    ontology = params.ontology
    assert ontology.class_names == ["rolled_in_scale", "patches"] and len(ontology.severities) == 3
    texts = build_text_classes(ontology, ClipParams(prompt_language="en", templates_en=["a photo of {}."]))
    assert [t.prompts for t in texts] == [("a photo of rolled in scale.",), ("a photo of patches.",)]
    require_korean_descriptions(ontology, params.prelabel.description, "en")
    config = label_config(ontology)
    assert 'value="rolled_in_scale" hint="rolled in scale"' in config


def test_missing_korean_names_the_feature_that_needs_it(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text(NAMES_ONLY, encoding="utf-8")
    params = load_params(tmp_path / "params.yaml")
    with pytest.raises(ParamsError) as prompts:
        build_text_classes(params.ontology, ClipParams(prompt_language="ko"))
    assert str(prompts.value).startswith(
        "zero-shot with Korean prompts (prelabel.clip.prompt_language: ko) needs prompts_ko for rolled_in_scale, "
        "patches"
    )
    with pytest.raises(ParamsError) as names:
        require_korean_descriptions(params.ontology, params.prelabel.description, "both")
    assert str(names.value).startswith(
        "Korean descriptions (labelstudio.description_language: both) need a Korean name for rolled_in_scale, patches"
    )
    # the push command checks before it reads anything or connects to a server
    missing = str(tmp_path / "missing.parquet")
    result = CliRunner().invoke(
        app, ["push", missing, missing, str(tmp_path / "push"), "--params", str(tmp_path / "params.yaml")]
    )
    assert result.exit_code == 1
    assert "Korean descriptions (labelstudio.description_language: both)" in _text(result)
    assert "labelstudio.description_language: en" in _text(result)


def test_split_and_export_refuse_a_dataset_without_labels(project) -> None:
    assert _ingest(project).exit_code == 0  # no --labels: nothing is labelled
    manifest, n = str(project / "out" / "manifest.parquet"), 3 * PER_FOLDER
    none = ["--consensus", str(project / "none.parquet"), "--prior-labels", str(project / "none.parquet")]
    refused = _cli(project, "split", manifest, str(project / "split"), *none, "--no-previous")
    assert refused.exit_code == 1
    assert f"none of the {n} image(s) has a label" in _text(refused) and "--allow-empty" in _text(refused)
    assert not (project / "split").exists()

    allowed = _cli(project, "split", manifest, str(project / "split"), *none, "--no-previous", "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert f"{n} image(s) have no label (split.unlabeled: split)" in _text(allowed)

    splits = str(project / "split" / "splits.parquet")
    inputs = ["--augmented", str(project / "none"), "--predictions", str(project / "none.parquet")]
    refused = _cli(project, "export", splits, manifest, str(project / "export"), *inputs)
    assert refused.exit_code == 1 and f"none of its {n} image(s) has a label" in _text(refused)
    assert not (project / "export" / "export.json").exists()
    allowed = _cli(project, "export", splits, manifest, str(project / "export"), *inputs, "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert f"left out {n} unlabelled image(s) (export.include_unlabeled: false)" in _text(allowed)


def test_brackets_in_messages_and_paths_are_printed_intact(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(NAMES_ONLY.replace("name: patches", "name: Patches"), encoding="utf-8")
    bad = CliRunner().invoke(app, ["split", "x", "y", "--params", str(params)])
    assert bad.exit_code == 1
    assert "'^[a-z][a-z0-9_]*$'" in _text(bad)  # the class-name rule, brackets and all

    shutil.copyfile(ROOT / "params.yaml", params)
    missing = tmp_path / "manifest [a-z].parquet"
    gone = CliRunner().invoke(app, ["split", str(missing), str(tmp_path / "s"), "--params", str(params)])
    assert gone.exit_code == 1 and f"error: {missing}: file not found" in _text(gone)

    raw = tmp_path / "[bold]raw[/bold]"
    _copy_xsdd(raw)
    out = tmp_path / "out [v1]"
    result = CliRunner().invoke(app, ["ingest", str(raw), str(out), "--no-metadata", "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert f"outputs in {out}/ (manifest.parquet" in _text(result)


def test_ontology_init_replace_keeps_only_the_data_classes(project) -> None:
    _set(project, "label_map: {}", 'label_map: {"surface scratch": scratch, "old name": dent}')
    result = _cli(project, "ontology", "init", str(project / "raw"), "--labels", "folders", "--replace")
    assert result.exit_code == 0, result.output
    assert "dropped class(es) contamination, dent, crack, discoloration, ok (--replace)" in _text(result)
    params = load_params(project / "params.yaml")
    assert params.ontology.class_names == ["scratch", "iron_sheet_ash", "red_iron"]  # scratch: via label_map
    assert params.ontology.hard_negatives == []  # every one mapped to the dropped 'ok'
    assert params.ingest.label_map == {
        "surface scratch": "scratch",
        "iron sheet ash": "iron_sheet_ash",
        "red iron": "red_iron",
    }
    text = (project / "params.yaml").read_text(encoding="utf-8")
    assert "# DEMO ONLY: simulated reviewers" in text and "  severities:\n    - name: minor" in text


def test_ontology_init_reads_coco_categories_and_maps_invalid_names(tmp_path) -> None:
    raw = tmp_path / "raw"
    for n in range(2):
        write_image(raw / f"img{n}.png", seed=n)
    coco = {
        "images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "img1.png"}],
        "categories": [{"id": 1, "name": "rolled-in_scale"}, {"id": 2, "name": "patches"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [3, 4, 5, 6]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4]},
        ],
    }
    (tmp_path / "labels.json").write_text(json.dumps(coco), encoding="utf-8")
    (tmp_path / "params.yaml").write_text("ontology: {}\n", encoding="utf-8")  # a project without classes yet
    args = [
        "--labels",
        "coco",
        "--labels-path",
        str(tmp_path / "labels.json"),
        "--params",
        str(tmp_path / "params.yaml"),
    ]
    result = CliRunner().invoke(app, ["ontology", "init", str(raw), *args])
    assert result.exit_code == 0, result.output
    params = load_params(tmp_path / "params.yaml")
    assert params.ontology.class_names == ["patches", "rolled_in_scale"]
    assert params.ontology.get("rolled_in_scale").name_en == "rolled-in_scale"
    assert params.ingest.label_map == {"rolled-in_scale": "rolled_in_scale"}
    ingested = CliRunner().invoke(app, ["ingest", str(raw), str(tmp_path / "out"), "--no-metadata", *args])
    assert ingested.exit_code == 0, ingested.output
    prior = pd.read_parquet(tmp_path / "out" / "prior_labels.parquet")
    assert sorted(prior["label"]) == ["patches", "rolled_in_scale", "rolled_in_scale"]


def test_ingest_says_which_files_it_left_out(project) -> None:
    (project / "raw" / "red iron" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (project / "raw" / "notes.txt").write_text("shift 2", encoding="utf-8")
    result = _ingest(project)
    assert result.exit_code == 0, result.output
    assert "quarantined 1 file(s) (not_an_image 1); quarantine.csv says why for each" in _text(result)
    assert "skipped 1 file(s) without an image extension (ingest.extensions); listed in skipped.csv" in _text(result)


def test_labels_that_mean_no_defect_resolve_to_the_ok_class() -> None:
    # magnetic tile's MT_Free, MVTec's good, OK/NG folders: one OK class, not a class per data set's word for it
    counts = {"MT_Free": 952, "MT_Crack": 57, "good": 3, "NG": 4, "OK": 5}
    plan = plan_classes(counts, class_names=["scratch"], ok_label="ok")
    assert plan.resolved == {"MT_Free": "ok", "MT_Crack": "mt_crack", "good": "ok", "NG": "ng", "OK": "ok"}
    assert plan.added == [("mt_crack", "MT_Crack"), ("ok", "ok"), ("ng", "NG")]  # in sorted source-label order
    assert plan.label_map == {"MT_Free": "ok", "MT_Crack": "mt_crack", "good": "ok", "NG": "ng", "OK": "ok"}
    # an existing OK class is reused, and a data set whose OK class has another name keeps it
    assert plan_classes({"good": 1}, class_names=["ok"]).added == []
    assert plan_classes({"good": 1}, class_names=[], ok_label="pass").resolved == {"good": "pass"}
    # words that merely contain an OK word are classes of their own
    assert plan_classes({"goods_damage": 1, "freehand": 1}, class_names=[]).resolved == {
        "freehand": "freehand",
        "goods_damage": "goods_damage",
    }


def test_ontology_init_counts_images_not_the_masks_beside_them(tmp_path) -> None:
    from PIL import Image

    from curation.ontology import source_label_counts
    from tests.conftest import write_image

    for folder, n in (("MT_Crack", 2), ("MT_Free", 3)):
        for i in range(n):
            write_image(tmp_path / folder / "Imgs" / f"{i}.jpg", seed=i, size=(40, 32), quality=95)
            mask = Image.new("L", (40, 32))
            if folder == "MT_Crack":
                mask.paste(255, (5, 5, 9, 20))
            mask.save(tmp_path / folder / "Imgs" / f"{i}.png")  # same stem beside the photo: its mask
    counts, issues = source_label_counts("folders", tmp_path, class_names=[])
    assert counts == {"MT_Crack": 2, "MT_Free": 3} and issues == 0
