"""The Label Studio mapping, table-driven: every result type written from our value and read back, with the
expected Label Studio values and read-back values written out by hand."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from curation.studio.config import BOXES, CONFIDENCE, DESCRIPTION, LABEL, POLYGONS, SEVERITY
from curation.studio.mapping import CONVERTERS, REGIONS, from_label_studio, from_results, to_label_studio

TWO_LINES = "a scratch\n스크래치"
SQUARE = {"x": 8.0, "y": 4.0, "w": 32.0, "h": 16.0, "label": "dent"}
SQUARE_OUTLINE = [8.0, 4.0, 40.0, 4.0, 40.0, 20.0, 8.0, 20.0]
SQUARE_PERCENT = [[12.5, 8.3333], [62.5, 8.3333], [62.5, 41.6667], [12.5, 41.6667]]  # of a 64x48 image

# (control, our value, size written with, Label Studio type, its value, size read with, our value read back)
CASES: list[tuple[str, Any, tuple[int, int] | None, str, dict[str, Any], tuple[int, int] | None, Any]] = [
    (LABEL, "scratch", None, "choices", {"choices": ["scratch"]}, None, "scratch"),
    (SEVERITY, "major", None, "choices", {"choices": ["major"]}, None, "major"),
    (CONFIDENCE, 73, None, "number", {"number": 73}, None, 73),
    (DESCRIPTION, TWO_LINES, None, "textarea", {"text": [TWO_LINES]}, None, TWO_LINES),
    (
        BOXES,
        {"x": 16, "y": 12, "w": 32, "h": 6, "label": "dent"},
        (64, 48),
        "rectanglelabels",
        {"x": 25.0, "y": 25.0, "width": 50.0, "height": 12.5, "rectanglelabels": ["dent"]},
        None,
        {"x": 16.0, "y": 12.0, "w": 32.0, "h": 6.0, "label": "dent"},
    ),
    (
        POLYGONS,
        {"segmentation": [SQUARE_OUTLINE], "label": "dent"},
        (64, 48),
        "polygonlabels",
        {"points": SQUARE_PERCENT, "closed": True, "polygonlabels": ["dent"]},
        None,
        {**SQUARE, "segmentation": [SQUARE_OUTLINE], "area": 512.0},
    ),
    (  # drawn on a half-size preview (32x24), read back in the 64x48 original's pixels
        POLYGONS,
        {"segmentation": [[4, 2, 20, 2, 20, 10, 4, 10]], "label": "dent"},
        (32, 24),
        "polygonlabels",
        {"points": SQUARE_PERCENT, "closed": True, "polygonlabels": ["dent"]},
        (64, 48),
        {**SQUARE, "segmentation": [SQUARE_OUTLINE], "area": 512.0},
    ),
]


def test_every_result_type_has_a_case() -> None:
    assert {case[3] for case in CASES} == set(CONVERTERS)


@pytest.mark.parametrize(("name", "ours", "size", "kind", "value", "read_size", "back"), CASES)
def test_every_result_type_round_trips(name, ours, size, kind, value, read_size, back) -> None:
    result = to_label_studio(name, ours, size=size)
    expected = {"from_name": name, "to_name": "image", "type": kind, "value": value}
    if size is not None:
        expected |= {"original_width": size[0], "original_height": size[1], "image_rotation": 0}
    assert result == expected
    assert from_label_studio(result, size=read_size) == (name, back)


def test_results_that_are_not_ours_or_empty_read_as_nothing() -> None:
    assert from_label_studio({"from_name": "notes", "type": "textarea", "value": {"text": ["x"]}}) is None
    assert from_label_studio({"from_name": LABEL, "type": "textarea", "value": {"choices": ["dent"]}}) is None
    assert from_label_studio({"from_name": BOXES, "type": "polygonlabels", "value": {"points": []}}) is None
    assert from_label_studio({"from_name": LABEL, "type": "choices", "value": {"choices": []}}) is None
    assert from_label_studio({"from_name": DESCRIPTION, "type": "textarea", "value": {}}) is None
    assert from_label_studio({"from_name": LABEL, "value": {"choices": ["dent"]}}) == (LABEL, "dent")  # no type


def test_shapes_need_the_image_size() -> None:
    with pytest.raises(ValueError, match="rectanglelabels result needs the image size"):
        to_label_studio(BOXES, {"x": 1, "y": 1, "w": 1, "h": 1, "label": "dent"})


def test_from_results_keeps_the_last_value_and_every_region_in_order() -> None:
    result = [
        {"from_name": LABEL, "type": "choices", "value": {"choices": ["scratch"]}},
        {"from_name": LABEL, "type": "choices", "value": {"choices": []}},
        {"from_name": POLYGONS, "type": "polygonlabels", "original_width": 10, "original_height": 10,
         "value": {"points": [[10, 10], [50, 10]], "polygonlabels": ["dent"]}},
        {"from_name": BOXES, "type": "rectanglelabels", "original_width": 10, "original_height": 10,
         "value": {"x": 10, "y": 20, "width": 30, "height": 40}},
        {"from_name": LABEL, "type": "choices", "value": {"choices": ["dent"]}},
    ]  # fmt: skip
    assert from_results(result) == {
        LABEL: "dent",
        REGIONS: [
            {"x": 1.0, "y": 1.0, "w": 4.0, "h": 0.0, "label": "dent"},  # two points: a box, no outline
            {"x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0, "label": None},
        ],
    }


def test_anomaly_defect_rows_preselect_no_class_and_keep_confidence_and_description():
    from curation.agreement.stage import validate_predictions
    from curation.studio.mapping import prediction_title, to_prediction

    row = {
        "image_id": "a",
        "label": "defect",
        "score": 0.8,
        "model_version": "efficientnet-lite0-patches@w+anomaly-none-1234",
        "description_en": "1 suspect region(s)",
        "description_ko": "의심 영역 1곳",
    }
    prediction = to_prediction(row, "both")
    names = [item["from_name"] for item in prediction["result"]]
    assert LABEL not in names and CONFIDENCE in names and DESCRIPTION in names
    assert prediction_title(row["model_version"]).startswith("anomaly efficientnet-lite0-patches")
    assert to_prediction({**row, "label": "ok"}, "en")["result"][0]["from_name"] == LABEL
    frame = pd.DataFrame([{"image_id": "a", "label": "defect", "source": "anomaly", "p_ok": 0.2, "p_dent": 0.8}])
    assert validate_predictions(frame, "predictions.parquet", ["ok", "dent"])["label"].tolist() == ["defect"]
