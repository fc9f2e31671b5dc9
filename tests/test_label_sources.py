"""Label sources beyond the classic formats: YOLO segmentation, box/label CSV, a metadata label column; metadata
and label files checked before any image is decoded; labels of byte-identical copies merged, never stacked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from curation import ingest as ingest_module
from curation.errors import LabelImportError, MetadataError
from curation.ingest import ingest
from curation.labels import ImageRef, read_prior_labels
from schemas.params import IngestParams, Params
from tests.conftest import write_image

CLASSES = ["scratch", "dent", "contamination", "ok"]


def _run(raw: Path, params: Params, **overrides):
    # labels of no ontology class (the masks' "defect", made-up classes) are kept as new classes, as with `add`
    settings = IngestParams(**{"metadata": None, "workers": 1, "unmapped_labels": "add", **overrides})
    return ingest(raw, settings, class_names=params.ontology.class_names)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _boxes(frame: pd.DataFrame) -> list[tuple]:
    return [
        (row.rel_path, row.source_label, *(None if pd.isna(v) else round(v, 3) for v in (row.x, row.y, row.w, row.h)))
        for row in frame.itertuples()
    ]


# --- YOLO segmentation -----------------------------------------------------------------------------------------


def test_yolo_segmentation_lines_are_read_as_polygons(tmp_path: Path) -> None:
    _write(tmp_path / "classes.txt", "scratch\ndent\n")
    # a triangle and a box line in one file; the image is 200 x 100 pixels
    _write(tmp_path / "a.txt", "1 0.1 0.2 0.5 0.2 0.3 0.8\n0 0.5 0.5 0.2 0.4\n")
    result = read_prior_labels("yolo", tmp_path, {"a.jpg": ImageRef("ia", 200, 100)}, class_names=CLASSES)

    rows = result.labels.set_index("source_label")
    assert json.loads(rows.loc["dent", "polygons"]) == [[20.0, 20.0, 100.0, 20.0, 60.0, 80.0]]
    assert rows.loc["dent", ["x", "y", "w", "h"]].tolist() == [20.0, 20.0, 80.0, 60.0]  # the polygon's bounds
    assert rows.loc["dent", "area"] == 80.0 * 60.0 / 2  # base 80, height 60
    assert pd.isna(rows.loc["scratch", "polygons"]) and pd.isna(rows.loc["scratch", "area"])
    assert rows.loc["scratch", ["x", "y", "w", "h"]].tolist() == pytest.approx([80.0, 30.0, 40.0, 40.0])
    assert result.issues == []


def test_yolo_segmentation_problems_are_issues(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "0 0.1 0.1 0.5 0.5 0.9 0.9\n0 0.1 0.2 0.3 0.4 0.5 0.6 0.7\n")
    result = read_prior_labels("yolo", tmp_path, {"a.jpg": ImageRef("ia", 10, 10)}, class_names=CLASSES)
    assert result.labels.empty
    details = [issue.detail for issue in result.issues if issue.source_file == "a.txt"]
    assert any(d.startswith("line 1:") and "on one line" in d for d in details)  # collinear: no area
    assert any(d.startswith("line 2:") and "odd number" in d for d in details)  # 8 values: not x/y pairs


# --- box/label CSV ---------------------------------------------------------------------------------------------


def _images() -> dict[str, ImageRef]:
    return {
        "lot_1/a.jpg": ImageRef("ia", 100, 50),
        "lot_1/b.jpg": ImageRef("ib", 100, 50),
        "lot_2/b.jpg": ImageRef("ic", 100, 50),
    }


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ws.txt", "lot_1/a.jpg  scratch 10 5 30 25\nlot_1\\b.jpg\tdent 0 0 50 50\nlot_2_b.jpg ok\n"),
        ("comma.csv", "file,label,x1,y1,x2,y2\nlot_1/a.jpg,scratch,10,5,30,25\nlot_1/b.jpg,dent,0,0,50,50\n"),
        ("semi.csv", "image;class;x;y;w;h\nlot_1/a.jpg;scratch;10;5;20;20\nlot_1/b.jpg;dent;0;0;50;50\n"),
    ],
    ids=["whitespace-no-header", "comma-header-xyxy", "semicolon-header-xywh"],
)
def test_label_csv_delimiter_header_and_box_columns_are_sniffed(tmp_path: Path, name: str, text: str) -> None:
    path = _write(tmp_path / name, text)
    result = read_prior_labels("csv", tmp_path, _images(), class_names=CLASSES, labels_path=path)
    boxes = _boxes(result.labels)
    assert ("lot_1/a.jpg", "scratch", 10.0, 5.0, 20.0, 20.0) in boxes
    assert ("lot_1/b.jpg", "dent", 0.0, 0.0, 50.0, 50.0) in boxes
    assert set(result.labels["source_format"]) == {"csv"}
    if name == "ws.txt":  # the third row names no image: one issue naming the line
        assert [(i.source_file, "lot_2_b.jpg" in i.detail) for i in result.issues] == [("ws.txt:3", True)]
    else:
        assert result.issues == []


def test_headerless_csv_can_hold_xywh_boxes_and_image_level_rows(tmp_path: Path) -> None:
    # the first row's label is a known column name ("defect"), but one name alone does not make a header
    path = _write(tmp_path / "labels.csv", "lot_1/a.jpg,defect,10,5,20,20\nlot_2/b.jpg,ok\n")
    result = read_prior_labels("csv", tmp_path, _images(), class_names=CLASSES, labels_path=path, headerless_box="xywh")
    assert _boxes(result.labels) == [
        ("lot_1/a.jpg", "defect", 10.0, 5.0, 20.0, 20.0),
        ("lot_2/b.jpg", "ok", None, None, None, None),
    ]


def test_csv_keys_match_by_path_then_tail_then_name_and_ambiguity_is_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.csv",
        "path,label\n"
        "D:\\export\\lot_1\\a.jpg,scratch\n"  # folder prefix: matched by its tail lot_1/a.jpg
        "elsewhere/lot_2/b.jpg,dent\n"  # a tail that is a path under raw_dir
        "b.jpg,ok\n"  # two images are called b.jpg
        "gone.jpg,ok\n"
        "lot_1/a.jpg,,\n",
    )
    result = read_prior_labels("csv", tmp_path, _images(), class_names=CLASSES, labels_path=path)
    assert _boxes(result.labels) == [
        ("lot_1/a.jpg", "scratch", None, None, None, None),
        ("lot_2/b.jpg", "dent", None, None, None, None),
    ]
    issues = {issue.source_file: issue.detail for issue in result.issues}
    assert "several different images" in issues["labels.csv:4"] and "lot_1/b.jpg" in issues["labels.csv:4"]
    assert "matches no ingested image" in issues["labels.csv:5"]
    assert "empty path or label" in issues["labels.csv:6"]
    assert len(issues) == 3


def test_csv_header_without_a_label_column_is_an_error_naming_the_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "labels.csv", "file,x1,y1,x2,y2\na.jpg,1,2,3,4\n")
    with pytest.raises(LabelImportError, match=r"without a label column; name it one of: label, class"):
        read_prior_labels("csv", tmp_path, _images(), class_names=CLASSES, labels_path=path)


# --- checked before decoding -----------------------------------------------------------------------------------


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if ingest decodes any image."""
    calls: list[str] = []

    def refuse(path, *args, **kwargs):
        calls.append(path)
        raise AssertionError(f"an image was decoded: {path}")

    monkeypatch.setattr(ingest_module, "probe_file", refuse)
    return calls


def _images_on_disk(raw: Path) -> None:
    write_image(raw / "lot-1" / "a.png", seed=1)
    write_image(raw / "lot-2" / "b.png", seed=2)


def test_metadata_without_its_key_column_fails_before_any_image_is_decoded(tmp_path, params, no_decoding) -> None:
    _images_on_disk(tmp_path / "raw")
    csv = _write(tmp_path / "meta.csv", "name,line\nlot-1/a.png,L1\n")
    with pytest.raises(MetadataError, match=r"no key column 'file'"):
        _run(tmp_path / "raw", params, metadata=csv, workers=2)
    assert no_decoding == []


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"label_column": "defect"}, r"no label column 'defect'"),
        ({"label_column": "p", "label_threshold": 0.5}, r"not a number on line\(s\) \[3\]"),
    ],
)
def test_metadata_label_column_is_checked_before_decoding(tmp_path, params, no_decoding, overrides, match) -> None:
    _images_on_disk(tmp_path / "raw")
    csv = _write(tmp_path / "meta.csv", "file,p\nlot-1/a.png,0.9\nlot-2/b.png,high\n")
    with pytest.raises(MetadataError, match=match):
        _run(tmp_path / "raw", params, metadata=csv, **overrides)
    assert no_decoding == []


def test_label_csv_is_checked_before_decoding(tmp_path, params, no_decoding) -> None:
    _images_on_disk(tmp_path / "raw")
    labels = _write(tmp_path / "labels.csv", "label,x1,y1,x2,y2\nscratch,1,2,3,4\n")
    with pytest.raises(LabelImportError, match=r"without an image path column"):
        _run(tmp_path / "raw", params, labels="csv", labels_path=labels)
    with pytest.raises(LabelImportError, match=r"not a file"):
        _run(tmp_path / "raw", params, labels="csv", labels_path=tmp_path / "missing.csv")
    assert no_decoding == []


def test_coco_file_is_checked_before_decoding(tmp_path, params, no_decoding) -> None:
    _images_on_disk(tmp_path / "raw")
    with pytest.raises(LabelImportError, match=r"do not exist; set ingest.labels_path"):
        _run(tmp_path / "raw", params, labels="coco", labels_path=tmp_path / "nowhere")
    not_coco = _write(tmp_path / "labels.json", '{"annotations": []}')
    with pytest.raises(LabelImportError, match=r"has no 'images' / 'categories' list at the top level"):
        _run(tmp_path / "raw", params, labels="coco", labels_path=not_coco)
    broken = _write(tmp_path / "broken.json", '{"images": [')
    with pytest.raises(LabelImportError, match=r"is not UTF-8 JSON"):
        _run(tmp_path / "raw", params, labels="coco", labels_path=broken)
    assert no_decoding == []


def test_metadata_keys_with_a_folder_prefix_match_and_ambiguity_is_reported(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    write_image(raw / "lot-1" / "a.png", seed=1)
    write_image(raw / "lot-1" / "b.png", seed=2)
    write_image(raw / "lot-2" / "b.png", seed=3)
    write_image(raw / "lot-2" / "c.png", seed=4)
    csv = _write(
        tmp_path / "meta.tsv",
        "file\tline\tp_defect\n"
        "/mnt/raw/lot-1/a.png\tL1\t0.91\n"  # absolute path from another machine: its tail matches
        "export/c.png\tL2\t0.05\n"  # folder prefix that is no folder here: the unique file name matches
        "old/b.png\tL9\t0.5\n"  # b.png is in two folders: ambiguous
        "lot-2/b.png\tL2\t\n",
    )
    result = _run(raw, params, metadata=csv, label_column="p_defect", label_threshold=0.5)
    manifest = result.manifest.set_index("rel_path")
    assert manifest.loc["lot-1/a.png", "meta_line"] == "L1"
    assert manifest.loc["lot-2/c.png", "meta_line"] == "L2"
    assert pd.isna(manifest.loc["lot-1/b.png", "meta_line"])
    issues = result.issues
    assert issues.loc[issues["kind"] == "metadata_ambiguous", "source"].tolist() == [f"{csv}:4"]
    prior = result.prior_labels
    assert prior[["rel_path", "source_label", "label", "source_format"]].values.tolist() == sorted(
        [["lot-1/a.png", "defect", "defect", "metadata"], ["lot-2/c.png", "ok", "ok", "metadata"]],
        key=lambda row: manifest.loc[row[0], "image_id"],
    )  # the empty value gives no label


def test_two_metadata_rows_for_one_file_fail_before_decoding(tmp_path, params, no_decoding) -> None:
    _images_on_disk(tmp_path / "raw")
    csv = _write(tmp_path / "meta.csv", "file,line\nlot-1/a.png,L1\nsomewhere/lot-1/a.png,L2\n")
    with pytest.raises(MetadataError, match=r"lines 2 and 3 both describe 'lot-1/a\.png'"):
        _run(tmp_path / "raw", params, metadata=csv)
    assert no_decoding == []


# --- byte-identical copies -------------------------------------------------------------------------------------


def _voc(filename: str, *objects: tuple[str, int, int, int, int]) -> str:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
        "</bndbox></object>"
        for name, x1, y1, x2, y2 in objects
    )
    return f"<annotation><filename>{filename}</filename>{body}</annotation>"


def test_voc_boxes_of_byte_identical_copies_are_merged_not_stacked(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    first = write_image(raw / "day-1" / "x.png", seed=21)
    (raw / "day-2").mkdir()
    shutil.copyfile(first, raw / "day-2" / "x-copy.png")
    _write(raw / "day-1" / "x.xml", _voc("x.png", ("scratch", 1, 2, 11, 12), ("scratch", 30, 5, 40, 15)))
    _write(raw / "day-2" / "x-copy.xml", _voc("x-copy.png", ("scratch", 1, 2, 11, 12), ("scratch", 30, 5, 40, 15)))
    # a second pair: the copies disagree on the class
    second = write_image(raw / "day-1" / "y.png", seed=22)
    shutil.copyfile(second, raw / "day-2" / "y-copy.png")
    _write(raw / "day-1" / "y.xml", _voc("y.png", ("scratch", 1, 1, 9, 9)))
    _write(raw / "day-2" / "y-copy.xml", _voc("y-copy.png", ("dent", 1, 1, 9, 9)))
    result = _run(raw, params, labels="voc")

    assert result.report["ingested"] == 2 and result.report["duplicate_copies"] == 2
    prior = result.prior_labels
    assert _boxes(prior) == [
        ("day-1/x.png", "scratch", 1.0, 2.0, 10.0, 10.0),
        ("day-1/x.png", "scratch", 30.0, 5.0, 10.0, 10.0),
    ]  # each box once, from the first copy; nothing of y
    conflicts = result.issues[result.issues["kind"] == "label_conflict"]
    assert conflicts["source"].tolist() == ["day-1/y.png"]
    detail = conflicts["detail"].iloc[0]
    assert "day-1/y.png: scratch" in detail and "day-2/y-copy.png: dent" in detail and "review" in detail
    assert result.report["issues_by_kind"] == {"label_conflict": 1}


def test_copies_in_the_same_class_folder_give_one_label(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    source = write_image(raw / "scratch" / "a.png", seed=23)
    shutil.copyfile(source, raw / "scratch" / "a again.png")
    write_image(raw / "dent" / "b.png", seed=24)
    prior = _run(raw, params, labels="folders").prior_labels
    assert sorted(prior["rel_path"]) == ["dent/b.png", "scratch/a again.png"]  # the copies' smallest rel_path


def test_metadata_label_column_of_class_names_gives_one_label_per_file(tmp_path, params) -> None:
    raw = tmp_path / "raw"
    _images_on_disk(raw)
    csv = _write(tmp_path / "meta.csv", "file,defect_class\nlot-1/a.png,scratch\nlot-2/b.png,Surface Dent\n")
    result = _run(raw, params, metadata=csv, label_column="defect_class", label_map={"Surface Dent": "dent"})
    prior = result.prior_labels.sort_values("rel_path")
    assert prior[["rel_path", "source_label", "label", "source_file"]].values.tolist() == [
        ["lot-1/a.png", "scratch", "scratch", str(csv)],
        ["lot-2/b.png", "Surface Dent", "dent", str(csv)],
    ]
    assert result.report["prior_labels_by_format"] == {"metadata": 2}
