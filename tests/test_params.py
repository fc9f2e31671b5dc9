from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from curation.errors import ParamsError
from schemas.params import Params, load_params

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
        (lambda p: p["ontology"]["classes"].append(dict(p["ontology"]["classes"][0])), "appear more than once"),
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
