"""The Label Studio round trip's pure parts, without a server: config XML, tasks, export parsing, simulation."""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from itertools import pairwise

import httpx
import pandas as pd
import pytest
from label_studio_sdk.core.api_error import ApiError

from curation.errors import InputError
from curation.studio.cli import studio_settings
from curation.studio.client import Connection, scrub, translate
from curation.studio.config import (
    BOXES,
    CONFIDENCE,
    DESCRIPTION,
    LABEL,
    POLYGONS,
    SEVERITY,
    TITLE_MAX_CHARS,
    instructions,
    label_config,
    part_number,
    part_title,
    project_settings,
)
from curation.studio.errors import StudioAuthError, StudioRequestError, StudioUnavailable
from curation.studio.mapping import PRIOR_VERSION, describe, prediction_title, to_label_studio
from curation.studio.pull import ANNOTATION_DTYPES, annotations_from_export, parse_result
from curation.studio.simulate import Truth, reviewers_for, simulated_annotation
from curation.studio.tasks import (
    assign_parts,
    build_tasks,
    json_size,
    local_files_url,
    request_batches,
    storage_folders,
    task_request,
)
from schemas.ontology import Ontology
from schemas.params_studio import LabelStudioParams, SimulationParams
from schemas.records import Annotation, columns
from tests.studio_fixture import make_inputs, shown_version

TOKEN = "0123456789abcdef0123456789abcdef01234567"


def _controls(xml: str) -> dict[str, ET.Element]:
    return {e.get("name"): e for e in ET.fromstring(xml).iter() if e.get("name")}


def test_label_config_follows_the_ontology(params) -> None:
    ontology = params.ontology
    plain, with_boxes = label_config(ontology), label_config(ontology, boxes=True)
    controls = _controls(plain)
    assert [c.get("value") for c in controls[LABEL]] == ontology.class_names
    assert [c.get("value") for c in controls[SEVERITY]] == ontology.severity_names
    assert controls[LABEL].get("required") == "true"
    assert controls[DESCRIPTION].tag == "TextArea"
    assert BOXES not in controls
    boxes = _controls(with_boxes)[BOXES]
    # the classes, then the value-less "suspect" label (an empty label: shapes with it are saved without a label)
    assert boxes.tag == "RectangleLabels" and [b.get("value") for b in boxes] == [*ontology.class_names, None]
    assert boxes.get("allowEmpty") == "true" and "suspect" in boxes[-1].get("html")
    scratch = next(c for c in controls[LABEL] if c.get("value") == "scratch")
    for text in [
        ontology.get("scratch").definition,
        *ontology.get("scratch").include,
        *ontology.get("scratch").exclude,
    ]:
        assert text in scratch.get("hint")


def test_label_config_and_instructions_escape_markup(params) -> None:
    raw = params.ontology.model_dump()
    raw["classes"][0]["definition"] = 'A "line" <b>cut</b> & scuffed'
    raw["classes"][0]["exclude"] = ["grain < 2 mm wide"]
    ontology = Ontology.model_validate(raw)
    hint = _controls(label_config(ontology))[LABEL][0].get("hint")
    assert 'A "line" <b>cut</b> & scuffed' in hint and "grain < 2 mm wide" in hint
    text = instructions(ontology)
    assert "&lt;b&gt;cut&lt;/b&gt; &amp; scuffed" in text and "<b>cut</b>" not in text
    assert all(c.definition.replace("'", "&#x27;") in text for c in ontology.classes[1:])


def test_project_settings_overlap_from_params(params) -> None:
    sample = project_settings(params.ontology, LabelStudioParams(agreement_sample=0.25, maximum_annotations=3))
    assert (sample["maximum_annotations"], sample["overlap_cohort_percentage"]) == (3, 25)
    once = project_settings(params.ontology, LabelStudioParams(agreement_sample=0.0, maximum_annotations=3))
    assert (once["maximum_annotations"], once["overlap_cohort_percentage"]) == (1, 100)


def test_build_tasks_orders_most_uncertain_first(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 12)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, disputes=["x"])
    margins = [s.data["margin"] for s in specs]
    assert margins == sorted(margins)
    assert sorted(s.image_id for s in specs) == sorted(manifest["image_id"])
    first = specs[0]
    row = predictions.set_index("image_id").loc[first.image_id]
    (prediction,) = first.predictions
    assert prediction["model_version"] == shown_version("clip-test@abc123")
    assert prediction["score"] == pytest.approx(row["score"])
    results = {r["from_name"]: r for r in prediction["result"]}
    assert results[LABEL]["value"]["choices"] == [row["label"]]
    assert results[CONFIDENCE] == {
        "from_name": CONFIDENCE,
        "to_name": "image",
        "type": "number",
        "value": {"number": int(row["score"] * 100 + 0.5)},
    }
    assert SEVERITY not in results  # the predictions carry no severity: none is invented
    assert results[DESCRIPTION]["value"]["text"] == [f"{row['description_en']}\n{row['description_ko']}"]
    assert first.data["image"].startswith("/data/local-files/?d=imgs/line%20")
    assert "%EC%9D%B4%EB%AF%B8%EC%A7%80" in first.data["image"]  # 이미지, percent-encoded
    assert not any(s.data["adjudicate"] for s in specs)


def test_images_without_predictions_come_last(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 5)
    specs = build_tasks(manifest, predictions.iloc[:3], ontology=params.ontology, document_root=tmp_path)
    assert [len(s.predictions) for s in specs] == [1, 1, 1, 0, 0]
    assert "margin" not in specs[-1].data


def test_build_tasks_rejects_bad_predictions_naming_rows(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 6)
    kwargs = {"ontology": params.ontology, "document_root": tmp_path, "predictions_name": "preds.parquet"}
    stale = predictions.copy()
    stale.loc[4, "image_id"] = "feedfacefeedface"
    with pytest.raises(InputError, match=r"preds.parquet: rows 5 \(1-based\) are for images not in the manifest"):
        build_tasks(manifest, stale, **kwargs)
    wrong = predictions.copy()
    wrong.loc[[1, 2], "label"] = "rust"
    with pytest.raises(InputError, match=r"rows 2, 3 have labels \['rust'\]"):
        build_tasks(manifest, wrong, **kwargs)
    twice = pd.concat([predictions, predictions.iloc[[0]]], ignore_index=True)
    with pytest.raises(InputError, match="repeat an"):
        build_tasks(manifest, twice, **kwargs)
    with pytest.raises(InputError, match=r"missing column\(s\) \['margin'\]"):
        build_tasks(manifest, predictions.drop(columns="margin"), **kwargs)


def test_images_outside_the_document_root_are_an_error(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 2)
    with pytest.raises(InputError, match=r"outside Label Studio's document root .*labelstudio\.document_root"):
        build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path / "elsewhere")
    assert local_files_url(tmp_path / "a b" / "c.png", tmp_path) == "/data/local-files/?d=a%20b/c.png"


def test_storage_folders_cover_images_below_the_root(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 4)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)
    assert storage_folders(specs, tmp_path) == [tmp_path / "imgs"]
    specs_two = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path / "imgs")
    assert storage_folders(specs_two, tmp_path / "imgs") == [tmp_path / "imgs" / "line 0", tmp_path / "imgs" / "line 1"]


def test_describe_languages() -> None:
    row = {"caption": "a scratch", "description_en": None, "description_ko": "스크래치"}
    assert describe(row, "en") == "a scratch"
    assert describe(row, "ko") == "스크래치"
    assert describe(row, "both") == "a scratch\n스크래치"
    assert describe({"caption": float("nan")}, "both") == ""


def _annotation(aid, by, label, *, updated="2024-01-01T00:00:00Z", cancelled=False, extra=()):
    result = [{"from_name": LABEL, "to_name": "image", "type": "choices", "value": {"choices": [label]}}, *extra]
    return {
        "id": aid,
        "completed_by": by,
        "result": [] if cancelled else result,
        "was_cancelled": cancelled,
        "lead_time": 2.5,
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": updated,
    }


def test_export_parsing_latest_wins_cancelled_counted() -> None:
    box = {
        "from_name": BOXES,
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "value": {"x": 10, "y": 20, "width": 50, "height": 25, "rotation": 0, "rectanglelabels": ["dent"]},
    }
    severity = {"from_name": SEVERITY, "to_name": "image", "type": "choices", "value": {"choices": ["major"]}}
    tasks = [
        {
            "id": 7,
            "data": {"image_id": "b"},
            "annotations": [
                _annotation(1, 1, "scratch", updated="2024-01-01T00:00:00Z"),
                _annotation(2, 1, "crack", updated="2024-01-02T00:00:00Z", extra=[severity, box]),
                _annotation(3, 2, "ok", cancelled=True),
            ],
        },
        {"id": 8, "data": {"image_id": "a"}, "annotations": [_annotation(4, {"id": 2, "email": "x@y.z"}, "dent")]},
        {"id": 9, "data": {"image": "/x.png"}, "annotations": [_annotation(5, 1, "dent")]},
    ]
    result = annotations_from_export(tasks, {1: "one@test.local", 2: "two@test.local"})
    frame = result.annotations
    assert list(frame.columns) == columns(Annotation) == list(ANNOTATION_DTYPES)
    assert frame[["image_id", "annotation_id", "annotator", "label"]].values.tolist() == [
        ["a", 4, "x@y.z", "dent"],
        ["b", 2, "one@test.local", "crack"],
    ]
    latest = frame.iloc[1]
    assert latest["severity"] == "major" and latest["task_id"] == 7
    assert json.loads(latest["boxes"]) == [{"x": 20.0, "y": 20.0, "w": 100.0, "h": 25.0, "label": "dent"}]
    report = result.report
    assert (report["cancelled"], report["superseded"], report["foreign_tasks"]) == (1, 1, 1)
    assert report["annotations"] == 2 and report["note"] == ""


def test_empty_export_gives_typed_empty_frame() -> None:
    result = annotations_from_export([{"id": 1, "data": {"image_id": "a"}, "annotations": []}], {})
    assert result.empty and list(result.annotations.columns) == columns(Annotation)
    assert result.annotations.dtypes.astype(str).to_dict() == {k: str(v) for k, v in ANNOTATION_DTYPES.items()}
    assert "no reviews yet" in result.report["note"]


def _task(image_id: str, overlap: int = 1, label: str = "dent") -> dict:
    prediction = {"id": 1, "result": [{"from_name": LABEL, "value": {"choices": [label]}}]}
    return {
        "id": 1,
        "overlap": overlap,
        "data": {"image_id": image_id, "file": f"{image_id}.png"},
        "predictions": [prediction],
    }


def test_simulated_reviewers_are_seeded_and_noisy_at_the_set_rate(params) -> None:
    settings = SimulationParams(noise=0.3, skip_rate=0.0, seed=5, truth=None)
    truth = {f"{i}.png": Truth("scratch", "minor") for i in range(600)}
    labels = [
        simulated_annotation(_task(str(i)), 1, ontology=params.ontology, settings=settings, truth=truth)["result"][0]
        for i in range(600)
    ]
    wrong = sum(r["value"]["choices"][0] != "scratch" for r in labels) / len(labels)
    assert 0.24 < wrong < 0.36
    again = simulated_annotation(_task("7"), 1, ontology=params.ontology, settings=settings, truth=truth)
    assert again == simulated_annotation(_task("7"), 1, ontology=params.ontology, settings=settings, truth=truth)
    quiet = SimulationParams(noise=0.0, skip_rate=0.0, truth=None)
    from_model = simulated_annotation(_task("z", label="crack"), 2, ontology=params.ontology, settings=quiet, truth={})
    assert from_model["result"][0]["value"]["choices"] == ["crack"] and not from_model["was_cancelled"]


def test_reviewers_follow_task_overlap() -> None:
    settings = SimulationParams(reviewers=4, truth=None)
    counts = Counter(len(reviewers_for(_task(str(i), overlap=o), settings)) for i in range(50) for o in (1, 3, 9))
    assert counts == {1: 50, 3: 50, 4: 50}
    assert all(set(reviewers_for(_task(str(i), overlap=3), settings)) <= {1, 2, 3, 4} for i in range(20))


def test_translate_keeps_the_token_out_and_says_how_to_fix() -> None:
    conn = Connection("http://127.0.0.1:9", TOKEN, "remote")
    with pytest.raises(StudioAuthError) as auth, translate("listing", conn):
        raise ApiError(status_code=401, body={"detail": f"Invalid token {TOKEN}"})
    assert TOKEN not in str(auth.value) and "LABEL_STUDIO_API_KEY" in str(auth.value)
    with pytest.raises(StudioRequestError) as bad, translate("importing", conn):
        raise ApiError(status_code=400, body={"detail": f"bad {TOKEN}"})
    assert TOKEN not in str(bad.value) and "HTTP 400" in str(bad.value)
    reach = re.escape("cannot reach Label Studio at http://127.0.0.1:9 while pulling")
    with pytest.raises(StudioUnavailable, match=reach), translate("pulling", conn):
        raise httpx.ConnectError("refused")
    assert scrub(f"x {TOKEN} y", TOKEN) == "x *** y"
    assert TOKEN not in repr(conn)


def test_studio_settings_come_from_params(params) -> None:
    assert studio_settings(params) is params.labelstudio
    assert params.labelstudio.agreement_sample == LabelStudioParams().agreement_sample


def _sized(sizes: list[int], **caps) -> list[list[int]]:
    """Batches of item indexes, item i being sizes[i] bytes of JSON."""
    return request_batches(list(range(len(sizes))), size=lambda i: sizes[i], name=lambda i: f"item {i}", **caps)


def test_request_batches_cut_by_count_and_by_bytes() -> None:
    assert _sized([1] * 7, max_items=3, max_bytes=10**6) == [[0, 1, 2], [3, 4, 5], [6]]
    # a body is "[" + items joined by "," + "]": three 10-byte items make 2 + 30 + 2 = 34 bytes
    assert _sized([10, 10, 10, 10], max_items=100, max_bytes=34) == [[0, 1, 2], [3]]
    assert _sized([10, 10, 10, 10], max_items=100, max_bytes=33) == [[0, 1], [2, 3]]
    assert _sized([30, 1, 1, 30], max_items=100, max_bytes=36) == [[0, 1, 2], [3]]  # 2 + 30 + 1 + 1 + 2 = 36
    assert _sized([], max_items=5, max_bytes=100) == []
    for sizes in ([5, 40, 3, 3, 38, 1, 20, 20, 20], [1] * 50, [12, 30, 7]):
        for max_items in (1, 2, 4, 100):
            batches = _sized(sizes, max_items=max_items, max_bytes=42)
            assert [i for batch in batches for i in batch] == list(range(len(sizes)))  # in order, each once
            for batch in batches:
                assert len(batch) <= max_items and 2 + sum(sizes[i] for i in batch) + len(batch) - 1 <= 42
            for batch, following in pairwise(batches):  # cut only when the next would not fit
                full = len(batch) == max_items
                assert full or 2 + sum(sizes[i] for i in batch) + len(batch) + sizes[following[0]] > 42


def test_request_batches_reject_one_item_over_the_cap_naming_it() -> None:
    with pytest.raises(InputError, match=r"item 1 is 99 bytes of JSON.*raise labelstudio\.max_request_mb"):
        _sized([10, 99, 10], max_items=10, max_bytes=100)


def test_json_size_is_the_body_the_sdk_sends(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 4)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)
    requests = [task_request(s) for s in specs]
    sent = httpx.Request("POST", "http://127.0.0.1/api/projects/1/import", json=requests).content
    assert len(sent) == 2 + sum(json_size(r) for r in requests) + len(requests) - 1
    assert json_size({"d": "금속"}) == len('{"d":"금속"}'.encode())  # UTF-8, not \u escapes


def test_assign_parts_fills_the_lowest_part_with_room_then_adds_parts() -> None:
    assert assign_parts(12, {}, 5) == [(1, 5), (2, 5), (3, 2)]
    assert assign_parts(0, {1: 5, 2: 5, 3: 2}, 5) == []
    assert assign_parts(4, {1: 5, 2: 5, 3: 2}, 5) == [(3, 3), (4, 1)]
    assert assign_parts(3, {1: 4, 2: 5, 3: 1}, 5) == [(1, 1), (3, 2)]  # room left by deleted tasks is used first
    assert assign_parts(2, {1: 9}, 5) == [(2, 2)]  # a part over the cap (the cap was lowered) takes nothing
    assert assign_parts(2, {1: 5, 3: 5}, 5) == [(4, 2)]  # a missing part is not re-made: numbering goes on
    for new in range(0, 23):
        plan = assign_parts(new, {1: 3, 2: 0}, 5)
        assert sum(n for _, n in plan) == new and all(0 < n <= 5 for _, n in plan)


def test_part_titles_fit_label_studio_and_are_recognised() -> None:
    assert part_title("Defect review", 1) == "Defect review"
    assert part_title("Defect review", 2) == "Defect review (part 2)"
    long = "x" * 45 + " yyyy"
    assert len(long) == TITLE_MAX_CHARS
    for part in (2, 10, 123, 9999):
        title = part_title(long, part)
        assert len(title) <= TITLE_MAX_CHARS and title.endswith(f" (part {part})")
        assert part_number(long, title) == part
    assert part_title("x" * 40 + "    abc", 2) == "x" * 40 + " (part 2)"  # the cut drops trailing spaces
    assert part_number("Defect review", "Defect review") == 1
    for other in ("Defect review (part 1)", "Defect review (part 02)", "Defect reviews (part 2)", "defect review"):
        assert part_number("Defect review", other) is None


def test_studio_params_bound_requests_and_projects() -> None:
    defaults = LabelStudioParams()
    assert defaults.batch_size <= 250_000 and defaults.max_request_mb < 200
    assert defaults.max_tasks_per_project == 100_000
    for bad in ({"max_request_mb": 201}, {"max_request_mb": 0}, {"batch_size": 250_001}, {"max_tasks_per_project": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LabelStudioParams(**bad)


def test_label_config_with_boxes_offers_polygons(params) -> None:
    assert POLYGONS not in _controls(label_config(params.ontology))
    polygons = _controls(label_config(params.ontology, boxes=True))[POLYGONS]
    assert polygons.tag == "PolygonLabels" and polygons.get("toName") == "image"
    assert [p.get("value") for p in polygons] == [*params.ontology.class_names, None]  # None: the empty label
    assert polygons.get("allowEmpty") == "true"


def test_polygon_preannotation_is_in_percent_of_the_image() -> None:
    result = _polygon([8.0, 4.0, 40.0, 4.0, 40.0, 20.0, 8.0, 20.0], "dent", 64, 48)
    assert result == {
        "from_name": "polygons",
        "to_name": "image",
        "type": "polygonlabels",
        "original_width": 64,
        "original_height": 48,
        "image_rotation": 0,
        "value": {
            "points": [[12.5, 8.3333], [62.5, 8.3333], [62.5, 41.6667], [12.5, 41.6667]],
            "closed": True,
            "polygonlabels": ["dent"],
        },
    }


def _polygon(flat: list[float], label: str, width: int, height: int) -> dict:
    return to_label_studio(POLYGONS, {"segmentation": [flat], "label": label}, size=(width, height))


def _prior(manifest: pd.DataFrame, polygons: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": manifest["image_id"].iloc[: len(polygons)].to_numpy(),
            "label": "dent",
            "x": 8.0,
            "y": 4.0,
            "w": 32.0,
            "h": 16.0,
            "polygons": polygons,
            "area": [None if p is None else 512.0 for p in polygons],
        }
    )


def test_prior_shapes_are_added_to_the_preannotations(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 4)
    manifest["height"] = 48
    square = json.dumps([[8, 4, 40, 4, 40, 20, 8, 20]])
    two = json.dumps([[0, 0, 4, 0, 4, 4], [10, 10, 20, 10, 20, 20]])
    prior = _prior(manifest, [square, None, None, two])  # image 1 has a box only; image 3 has no prediction
    specs = build_tasks(manifest, predictions.iloc[:3], ontology=params.ontology, document_root=tmp_path, prior=prior)
    by_id = {s.image_id: s for s in specs}
    ids = list(manifest["image_id"])
    (first,) = by_id[ids[0]].predictions
    assert [r["type"] for r in first["result"]] == ["choices", "number", "textarea", "polygonlabels"]
    assert first["result"][3] == _polygon(json.loads(square)[0], "dent", 64, 48)
    assert first["model_version"] == shown_version("clip-test@abc123")
    assert [r["type"] for r in by_id[ids[1]].predictions[0]["result"]] == ["choices", "number", "textarea"]
    (own,) = by_id[ids[3]].predictions
    assert own["model_version"] == PRIOR_VERSION and len(own["result"]) == 2  # one result per polygon
    assert "margin" not in by_id[ids[3]].data  # a shape is not an uncertainty: the task still comes last
    assert specs[-1].image_id == ids[3]


def test_without_shapes_the_tasks_are_unchanged(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 4)
    manifest["height"] = 48
    plain = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)
    boxes_only = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=tmp_path, prior=_prior(manifest, [None] * 4)
    )
    assert [json_size(task_request(s)) for s in boxes_only] == [json_size(task_request(s)) for s in plain]
    assert [task_request(s) for s in boxes_only] == [task_request(s) for s in plain]


def test_prior_shapes_with_unknown_labels_or_bad_polygons_name_the_row(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "imgs", params.ontology, 2)
    manifest["height"] = 48
    prior = _prior(manifest, ["[[1, 2, 3, 4]]", None])
    with pytest.raises(InputError, match=r"prior labels: row 1 \(1-based, image .*\): polygons cannot be read"):
        build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, prior=prior)
    prior = _prior(manifest, [json.dumps([[8, 4, 40, 4, 40, 20]]), None]).assign(label="rust")
    with pytest.raises(InputError, match=r"rows 1 \(1-based\) have labels \['rust'\]"):
        build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, prior=prior)


def test_polygon_results_read_back_as_regions_with_segmentation() -> None:
    polygon = [8.0, 4.0, 40.0, 4.0, 40.0, 20.0, 8.0, 20.0]
    pushed = _polygon(polygon, "dent", 64, 48)
    choice = {"from_name": LABEL, "to_name": "image", "type": "choices", "value": {"choices": ["dent"]}}
    parsed = parse_result([choice, pushed])
    [region] = json.loads(parsed["boxes"])
    assert region["segmentation"] == [pytest.approx(polygon, abs=0.01)]
    assert (region["x"], region["y"], region["w"], region["h"]) == pytest.approx((8, 4, 32, 16), abs=0.01)
    assert region["area"] == 32 * 16 and region["label"] == "dent"


def test_prediction_titles_are_readable_and_one_per_model_version() -> None:
    few = "efficientnet-lite0@efficientnet-lite0-57934424-18826032+fewshot-2a40153d85b9"
    zero = "openai/clip-vit-base-patch32@3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268+5b8c1d2e"
    tag = {v: hashlib.sha256(v.encode()).hexdigest()[:8] for v in (few, zero)}
    assert prediction_title(few) == f"few-shot efficientnet-lite0 #{tag[few]}"
    assert prediction_title(zero) == f"zero-shot clip-vit-base-patch32 #{tag[zero]}"
    assert prediction_title(PRIOR_VERSION) == PRIOR_VERSION
    assert prediction_title(few + "0") != prediction_title(few)  # another version, another title
