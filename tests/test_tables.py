"""curation.tables.read_table (one reader for every stage table) and the Box parse/serialise pair."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from curation.errors import InputError
from curation.io import PUBLISHING
from curation.tables import column_kind, read_table
from schemas.records import (
    AugmentedRecord,
    Box,
    Consensus,
    Dispute,
    Embedding,
    ImageRecord,
    Prediction,
    SplitRow,
    Task,
    boxes_from_json,
    boxes_to_json,
    columns,
    required_columns,
)


class StageError(InputError):
    """Stands for a stage's own error class."""


def _splits(tmp_path: Path, **overrides: object) -> Path:
    frame = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "split": ["train", "val"],
            "group": ["a", "b"],
            "label": ["dent", None],
            "boxes": ['[{"h": 2.0, "label": "dent", "w": 3.0, "x": 1.0, "y": 0.0}]', None],
            "pinned": [False, True],
        }
    )
    for name, values in overrides.items():
        frame[name] = values
    path = tmp_path / "splits.parquet"
    frame.to_parquet(path)
    return path


def test_reads_only_the_asked_columns_and_keeps_file_order(tmp_path: Path) -> None:
    path = _splits(tmp_path)
    frame = read_table(path, SplitRow, columns=["split", "image_id"], optional=["boxes", "severity"])
    assert list(frame.columns) == ["image_id", "split", "boxes"]  # severity is absent: optional, not an error
    assert frame["image_id"].tolist() == ["a", "b"]
    everything = read_table(path, SplitRow)
    assert list(everything.columns) == ["image_id", "split", "group", "label", "boxes", "pinned"]


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"nope\.parquet: file not found; run `curation split` first$"):
        read_table(tmp_path / "nope.parquet", SplitRow, missing_fix="run `curation split` first", error=StageError)


def test_missing_columns_say_which_and_what_the_file_has(tmp_path: Path) -> None:
    path = tmp_path / "splits.parquet"
    pd.DataFrame({"image_id": ["a"], "label": ["dent"]}).to_parquet(path)
    with pytest.raises(InputError) as caught:
        read_table(path, SplitRow, fix="re-run the split stage")
    message = str(caught.value)
    assert message.startswith(f"{path}: missing column(s) ['split', 'group'] ")
    assert "['image_id', 'label']" in message and message.endswith("; re-run the split stage")
    assert "\n" not in message


def test_a_file_that_is_not_parquet_or_csv_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "splits.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(StageError, match=r"splits\.parquet: cannot read it as Parquet \(.+\); re-run") as caught:
        read_table(path, SplitRow, error=StageError)
    assert "\n" not in str(caught.value)
    bad_csv = tmp_path / "disputes.csv"
    bad_csv.write_bytes(b"image_id\n\xff\xfe\x00broken")
    with pytest.raises(InputError, match=r"disputes\.csv: cannot read it as CSV"):
        read_table(bad_csv, Dispute, columns=["image_id"])


def test_wrong_types_are_refused_with_the_column_and_an_example(tmp_path: Path) -> None:
    path = _splits(tmp_path, pinned=["yes", "no"])
    with pytest.raises(InputError, match=r"column 'pinned' holds \w+ values \(e\.g\. 'yes'\), SplitRow expects bool"):
        read_table(path, SplitRow)
    numbers_as_ids = tmp_path / "tasks.parquet"
    pd.DataFrame(
        {
            "image_id": [1],
            "task_id": [2],
            "project_id": [3],
            "overlap": [1],
            "model_versions": [""],
            "adjudicate": [False],
        }
    ).to_parquet(numbers_as_ids)
    with pytest.raises(InputError, match=r"column 'image_id' holds int64 values .* Task expects str"):
        read_table(numbers_as_ids, Task)
    fractional = tmp_path / "augmented.parquet"
    frame = pd.DataFrame({c: ["x"] for c in required_columns(AugmentedRecord)})
    for name in ("variant", "width", "height", "seed", "boxes_in", "boxes_dropped"):
        frame[name] = [1]
    frame["width"] = [1.5]
    frame.to_parquet(fractional)
    with pytest.raises(InputError, match=r"column 'width' holds float64 .* expects int"):
        read_table(fractional, AugmentedRecord)


def test_nulls_fit_every_type_and_whole_floats_are_ints(tmp_path: Path) -> None:
    path = tmp_path / "disputes.csv"
    path.write_text("image_id,task_id,reason,agreement,posterior\na,3,tie,0.5,\nb,,low_agreement,,\n")
    frame = read_table(path, Dispute)
    assert frame["image_id"].tolist() == ["a", "b"] and frame["task_id"].iloc[0] == 3
    assert frame["task_id"].isna().iloc[1] and frame["posterior"].isna().all()


def test_csv_text_columns_stay_text(tmp_path: Path) -> None:
    """An id of digits is text (leading zeros kept); with keep_default_na=False an empty text cell is ''."""
    path = tmp_path / "quarantine.csv"
    path.write_text("path,rel_path,reason,detail,size_bytes\nx/007,007,empty,,0\nx/NA,NA,corrupt,bad,\n")
    from schemas.records import QuarantineRecord

    frame = read_table(path, QuarantineRecord, keep_default_na=False)
    assert frame["rel_path"].tolist() == ["007", "NA"] and frame["detail"].tolist() == ["", "bad"]
    assert frame["size_bytes"].iloc[0] == 0 and pd.isna(frame["size_bytes"].iloc[1])


def test_extra_columns_only_where_the_record_allows_them(tmp_path: Path) -> None:
    path = tmp_path / "predictions.parquet"
    row = {c: ["x"] for c in required_columns(Prediction)} | {"score": [0.9], "margin": [0.1], "entropy": [0.2]}
    pd.DataFrame(row | {"source": ["zero_shot"], "p_dent": [0.9], "p_ok": [0.1], "other": [1]}).to_parquet(path)
    frame = read_table(path, Prediction, columns=["image_id", "score"], extra=True)
    assert list(frame.columns) == ["image_id", "score", "p_dent", "p_ok"]  # "other" is not p_<class>
    assert ImageRecord.EXTRA_PREFIX == "meta_" and Consensus.model_fields.get("p_x") is None
    with pytest.raises(ValueError, match=r"SplitRow has no column\(s\) \['p_dent'\]"):
        read_table(_splits(tmp_path), SplitRow, columns=["p_dent"])  # a programming error, not the user's


def test_an_old_embeddings_file_reads_under_the_new_name(tmp_path: Path) -> None:
    old = tmp_path / "embeddings.parquet"
    pd.DataFrame({"image_id": ["a"], "model_name": ["clip@abc"], "embedding": [[0.5, 0.25]]}).to_parquet(old)
    frame = read_table(old, Embedding)
    assert list(frame.columns) == columns(Embedding) and frame["model_key"].tolist() == ["clip@abc"]


def test_a_half_published_folder_is_refused(tmp_path: Path) -> None:
    path = _splits(tmp_path)
    (tmp_path / PUBLISHING).write_text("{}")
    with pytest.raises(InputError, match="stopped while replacing its outputs"):
        read_table(path, SplitRow)


def test_column_kinds_follow_the_annotations() -> None:
    kinds = {name: column_kind(Prediction, name) for name in ("image_id", "score", "source", "caption_flag")}
    assert kinds == {"image_id": "str", "score": "float", "source": "str", "caption_flag": "bool"}
    assert column_kind(ImageRecord, "all_paths") == "list" and column_kind(Box, "x") == "float"
    assert column_kind(Prediction, "p_dent") == "any"


@pytest.mark.parametrize(
    "text",
    [
        '[{"h": 2.0, "label": "dent", "w": 3.0, "x": 1.0, "y": 0.0}]',
        '[{"h": 2, "label": "dent", "w": 3, "x": 1, "y": 0}, {"h": 1.5, "label": null, "w": 1.25, "x": 0.5, "y": 7}]',
        '[{"area": 6.0, "h": 2.0, "label": "scratch", "segmentation": [[1.0, 0.0, 4, 0, 4.0, 2.0]], "w": 3.0, '
        '"x": 1.0, "y": 0.0}]',
        '[{"area": null, "h": 2.0, "label": "scratch", "segmentation": [[1, 0, 4, 0, 4, 2]], "w": 3.0, "x": 1.0, '
        '"y": 0.0}]',
    ],
)
def test_boxes_round_trip_byte_for_byte(text: str) -> None:
    """What was read is written back unchanged: ints stay ints, keys not given are not added, keys sorted."""
    boxes = boxes_from_json(text)
    assert boxes_to_json(boxes) == text == json.dumps(json.loads(text), sort_keys=True)
    assert boxes_to_json([b.as_dict() for b in boxes]) == text


def test_boxes_refuse_what_is_not_a_box_list() -> None:
    assert boxes_to_json([]) is None
    with pytest.raises(ValueError, match="expected a JSON list of boxes"):
        boxes_from_json('{"x": 1}')
    with pytest.raises(ValueError, match="label"):
        boxes_from_json('[{"x": 1, "y": 2, "w": 3, "h": 4}]')
    with pytest.raises(ValueError, match="extra"):
        boxes_from_json('[{"x": 1, "y": 2, "w": 3, "h": 4, "label": "a", "colour": "red"}]')
    box = boxes_from_json('[{"x": 1, "y": 2, "w": 3, "h": 4, "label": "a"}]')[0]
    assert (box.x, box.y, box.w, box.h, box.label, box.segmentation) == (1, 2, 3, 4, "a", None)


def test_every_record_lists_its_columns_once() -> None:
    for record in (SplitRow, AugmentedRecord, Task, Dispute, Embedding):
        assert len(columns(record)) == len(set(columns(record)))
        assert set(required_columns(record)) <= set(columns(record))
