from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import ParamsError
from schemas.params import Params, load_params
from tests.conftest import write_image

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture()
def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_project_params_have_the_ontology(params: Params) -> None:
    ontology = params.ontology
    assert ontology.class_names == ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]
    assert ontology.severity_names == ["minor", "major", "critical"]
    for defect_class in ontology.classes:
        assert defect_class.name_en and defect_class.name_ko and defect_class.definition
        assert defect_class.prompts_en and defect_class.prompts_ko
        assert defect_class.include and defect_class.exclude
    assert {h.name for h in ontology.hard_negatives} >= {"shadow", "reflection", "lens_dust"}
    assert all(h.maps_to == "ok" for h in ontology.hard_negatives)
    assert ontology.get("crack").name_ko == "균열"


def test_unknown_key_names_key_line_file_and_allowed_keys(tmp_path: Path, raw_params: dict) -> None:
    raw_params["ingest"]["phash_treshold"] = 4
    path = _write(tmp_path, raw_params)
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "phash_treshold" in text)
    assert str(path) in message
    assert f"unknown key 'ingest.phash_treshold' (line {line})" in message
    assert "phash_threshold" in message  # the allowed keys are listed, so the typo is easy to see


def test_unknown_key_inside_a_class_names_its_position(tmp_path: Path, raw_params: dict) -> None:
    raw_params["ontology"]["classes"][2]["prompt_en"] = ["typo"]
    with pytest.raises(ParamsError, match=r"unknown key 'ontology\.classes\.2\.prompt_en'.*prompts_en"):
        load_params(_write(tmp_path, raw_params))


def test_bad_values_are_reported_with_the_value(tmp_path: Path, raw_params: dict) -> None:
    raw_params["ingest"]["max_pixels"] = -5
    raw_params["ingest"]["labels"] = "pascal"
    with pytest.raises(ParamsError) as caught:
        load_params(_write(tmp_path, raw_params))
    message = str(caught.value)
    assert "2 problem(s)" in message
    assert "'ingest.max_pixels'" in message and "-5" in message
    assert "'ingest.labels'" in message and "'pascal'" in message


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["ontology"]["classes"].append(dict(p["ontology"]["classes"][0])), "appears more than once"),
        (lambda p: p["ontology"]["hard_negatives"][0].update(maps_to="rust"), "maps_to 'rust'"),
        (lambda p: p["ontology"]["classes"][0].update(name="Scratch!"), "ontology.classes.0.name"),
        (lambda p: p.pop("ontology"), "missing key 'ontology'"),
    ],
)
def test_inconsistent_ontology_is_rejected(tmp_path: Path, raw_params: dict, mutate, expected: str) -> None:
    mutate(raw_params)
    with pytest.raises(ParamsError, match=expected):
        load_params(_write(tmp_path, raw_params))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="mapping of sections"):
        load_params(bad)


def test_extensions_are_normalised(tmp_path: Path, raw_params: dict) -> None:
    raw_params["ingest"]["extensions"] = ["PNG", ".Jpg", "png"]
    params = load_params(_write(tmp_path, raw_params))
    assert params.ingest.extensions == [".jpg", ".png"]


def test_params_hold_no_secrets(raw_params: dict) -> None:
    def keys(node) -> list[str]:
        if isinstance(node, dict):
            return [k for key, value in node.items() for k in (str(key).lower(), *keys(value))]
        if isinstance(node, list):
            return [k for item in node for k in keys(item)]
        return []

    found = keys(raw_params)
    assert "raw_dir" in found  # the walk sees nested keys
    secret = re.compile(r"(^|_)(token|password|api_key|secret)($|_)")
    assert not [k for k in found if secret.search(k)]
    assert secret.search("label_studio_token") and not secret.search("max_new_tokens")


# ---- strict params: repeated keys, strict types, messages that point at the value, one rule for relative paths ----


def _project_text() -> str:
    return (ROOT / "params.yaml").read_text(encoding="utf-8")


def _line_of(text: str, needle: str, after: int = 0) -> int:
    """1-based number of the first line (after line ``after``) that contains ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if i > after and needle in line)


def _edit(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    """The project's params.yaml with ``old`` replaced by ``new``: a multi-line ``old`` as it is, else the whole
    line holding it (comment included)."""
    text = _project_text()
    assert text.count(old) == 1, old
    if "\n" not in old:
        old = next(line for line in text.splitlines() if old in line)
    text = text.replace(old, new)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_a_repeated_nested_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    path, text = _edit(tmp_path, "  seed: 0               # salt", "  seed: 0\n  seed: 1               # salt")
    first = _line_of(text, "  seed: 0", after=_line_of(text, "split:"))
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value) == f"{path}: duplicate key 'split.seed' at lines {first} and {first + 1}; keep one"


def test_a_repeated_top_level_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    text = _project_text() + "\nsplit:\n  seed: 3\n"
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    first, second = _line_of(text, "split:"), len(text.splitlines()) - 1
    assert text.splitlines()[second - 1] == "split:"
    with pytest.raises(ParamsError, match=rf"duplicate key 'split' at lines {first} and {second}; keep one"):
        load_params(path)


def test_a_repeated_key_inside_a_list_item_is_an_error(tmp_path: Path) -> None:
    path, text = _edit(tmp_path, "      name_en: Dent\n", "      name_en: Dent\n      name_en: Dint\n")
    first = _line_of(text, "name_en: Dent")
    with pytest.raises(ParamsError, match=rf"duplicate key 'ontology\.classes\.2\.name_en' at lines {first} and "):
        load_params(path)


@pytest.mark.parametrize(
    ("old", "new", "key", "shown"),
    [
        ("  seed: 0               # salt", "  seed: true", "split.seed", "True"),
        ("  train: 0.7            # ratios", "  train: '0.7'", "split.train", "'0.7'"),
        ("  workers: 0            # processes", "  workers: 2.0", "augment.workers", "2.0"),
        ("  include_augmented: true", "  include_augmented: 1", "export.include_augmented", "1"),
        ("  allow_download: false ", "  allow_download: 'no'  ", "prelabel.allow_download", "'no'"),
        ("  raw_dir: data/sample/images ", "  raw_dir: 7                  ", "ingest.raw_dir", "7"),
    ],
    ids=["bool-for-int", "text-for-float", "float-for-int", "int-for-bool", "text-for-bool", "int-for-path"],
)
def test_values_of_the_wrong_type_are_refused_not_converted(
    tmp_path: Path, old: str, new: str, key: str, shown: str
) -> None:
    path, text = _edit(tmp_path, old, new)
    line = _line_of(text, new.strip())
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: '{key}' (line {line}) = {shown}: Input should be a valid ")
    assert "\n" not in message


def test_an_integer_is_a_number_and_text_is_a_path(tmp_path: Path) -> None:
    path, _ = _edit(tmp_path, "  train: 0.7            # ratios", "  train: 1")
    text = path.read_text().replace("  val: 0.2\n  test: 0.1\n", "  val: 0\n  test: 0\n")
    path.write_text(text, encoding="utf-8")
    params = load_params(path)
    assert params.split.ratios == {"train": 1.0, "val": 0.0, "test": 0.0}
    assert isinstance(params.split.train, float)
    assert isinstance(params.prelabel.cache_dir, Path)


def test_a_quoted_number_gets_a_hint(tmp_path: Path) -> None:
    path, _ = _edit(tmp_path, "  max_pixels: 100000000 ", "  max_pixels: '1e8'     ")
    with pytest.raises(ParamsError, match=r"'ingest\.max_pixels' \(line \d+\) = '1e8': .*without quotes.*1\.0e\+8"):
        load_params(path)


def test_a_ratio_error_names_the_three_values_and_lines_not_the_section(tmp_path: Path) -> None:
    path, text = _edit(tmp_path, "  train: 0.7            # ratios", "  train: 0.8")
    split = _line_of(text, "split:")
    lines = {k: _line_of(text, f"  {k}: ", after=split) for k in ("train", "val", "test")}
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value) == (
        f"{path}: 'split.train' (line {lines['train']}) = 0.8, 'split.val' (line {lines['val']}) = 0.2, "
        f"'split.test' (line {lines['test']}) = 0.1: train + val + test must sum to 1, they sum to 1.1"
    )


def test_an_ontology_error_names_the_key_value_and_line_not_the_section(tmp_path: Path) -> None:
    path, text = _edit(
        tmp_path, "      maps_to: ok\n    - name: reflection", "      maps_to: rust\n    - name: reflection"
    )
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    line = _line_of(text, "maps_to: rust")
    assert message.startswith(f"{path}: 'ontology.hard_negatives.0.maps_to' (line {line}) = 'rust': ")
    assert "which is not a class" in message and "\n" not in message
    for elsewhere in ("a shadow on a clean metal surface", "그림자", "Safety or functional failure", "prompts_en"):
        assert elsewhere not in message  # the section itself is not printed


def test_a_repeated_class_name_points_at_both_entries(tmp_path: Path) -> None:
    path, text = _edit(tmp_path, "    - name: dent\n", "    - name: scratch\n")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    first, second = (
        _line_of(text, "- name: scratch"),
        _line_of(text, "- name: scratch", after=_line_of(text, "- name: scratch")),
    )
    assert f"'ontology.classes.0.name' (line {first}) = 'scratch', 'ontology.classes.2.name' (line {second})" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ingest: [unclosed\n", "not valid YAML at line 2, column 1: while parsing a flow sequence expected ','"),
        ("a: b: c\n", "not valid YAML at line 1, column 5: mapping values are not allowed here"),
        ("split: &a {group_by: *a}\n", "'split.group_by' contains itself (a recursive YAML alias)"),
        ("ingest:\n  label_map: !!set {a}\n", "'ingest.label_map' (line 2) is {'a'}, a YAML set"),
    ],
    ids=["unclosed", "colon", "recursive-alias", "set"],
)
def test_unreadable_yaml_is_one_line_with_its_place(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    assert str(caught.value).startswith(f"{path}: {expected}") and "\n" not in str(caught.value)


def test_a_long_value_is_cut_short(tmp_path: Path) -> None:
    path, _ = _edit(tmp_path, "  seed: 0               # salt", "  seed: [" + ", ".join(["12345"] * 200) + "]")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "'split.seed'" in message and "12345, 12345" in message and "..." in message
    assert len(message) < len(str(path)) + 200


def test_the_cli_exits_1_with_one_line_for_a_bad_value(tmp_path: Path) -> None:
    path, text = _edit(tmp_path, "  seed: 0               # salt", "  seed: true")
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "raw"), str(tmp_path / "out"), "--params", str(path)])
    assert result.exit_code == 1
    line = _line_of(text, "seed: true")
    assert result.output.strip().splitlines() == [
        f"error: {path}: 'split.seed' (line {line}) = True: Input should be a valid integer "
        "(true/false is a boolean, not a number)"
    ]


# The one rule for relative paths: the project root, i.e. the folder holding params.yaml (where dvc repro runs).

PATH_KEYS = (
    "ingest.raw_dir",
    "ingest.metadata",
    "prelabel.cache_dir",
    "labelstudio.disputes",
    "labelstudio.home",
    "labelstudio.template_dir",
    "labelstudio.venv",
    "labelstudio.document_root",
    "labelstudio.simulation.truth",
    "split.previous",
    "release.card",
    "release.remote_url",
    "browse.inputs.manifest",
    "browse.db_dir",
)


def _get(node, dotted: str):
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "models" / "clip").mkdir(parents=True)
    text = (
        _project_text()
        .replace("    model: openai/clip-vit-base-patch32 ", "    model: models/clip                 ")
        .replace("{name: clip, kind: clip, path: null,", "{name: clip, kind: clip, path: models/clip,")
    )
    (project / "params.yaml").write_text(text, encoding="utf-8")
    return project


def test_relative_paths_are_from_the_params_folder_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path)
    raw = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    params = load_params(Path("..") / "project" / "params.yaml")
    for key in PATH_KEYS:
        assert _get(params, key) == project.resolve() / _get(raw, key), key
    assert params.prelabel.clip.model == str(project.resolve() / "models" / "clip")  # a folder under the root
    assert params.serve.models[0].path == str(project.resolve() / "models" / "clip")
    assert params.prelabel.captions.model == "Salesforce/blip-image-captioning-base"  # a hub id stays as it is

    monkeypatch.chdir(project)  # from the project root (as under dvc repro) the paths stay as written
    params = load_params("params.yaml")
    for key in PATH_KEYS:
        assert _get(params, key) == Path(_get(raw, key)), key
    assert params.prelabel.clip.model == params.serve.models[0].path == "models/clip"


def test_a_command_run_from_another_folder_reads_the_projects_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "meta").mkdir(parents=True)
    text = _project_text().replace("  metadata: data/sample/metadata.csv ", "  metadata: meta/lines.csv         ")
    (project / "params.yaml").write_text(text, encoding="utf-8")
    raw = tmp_path / "raw"
    for index in range(3):
        write_image(raw / f"img{index}.png", seed=index)
    pd.DataFrame({"file": [f"img{i}.png" for i in range(3)], "line": ["L1", "L2", "L3"]}).to_csv(
        project / "meta" / "lines.csv", index=False
    )
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "meta").mkdir(parents=True)  # a same-named file here must not be the one read
    pd.DataFrame({"file": [f"img{i}.png" for i in range(3)], "line": ["X", "X", "X"]}).to_csv(
        elsewhere / "meta" / "lines.csv", index=False
    )
    monkeypatch.chdir(elsewhere)
    args = ["ingest", str(raw), str(tmp_path / "out"), "--params", "../project/params.yaml"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert sorted(manifest["meta_line"]) == ["L1", "L2", "L3"]
