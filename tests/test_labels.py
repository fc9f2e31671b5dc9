"""Prior-label import: each format on small hand-made fixtures, every failure mode, and X-SDD when present."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from curation.errors import LabelImportError
from curation.labels import ImageRef, LabelImport, LabelIssue, read_prior_labels
from schemas.records import PriorLabel, columns

CLASSES = ["scratch", "dent", "contamination"]
XSDD = Path("/work/shared/datasets/x-sdd/X-SDD/datas")
XSDD_COUNTS = {
    "slag inclusion": 238,
    "red iron": 397,
    "iron sheet ash": 122,
    "surface scratch": 134,
    "oxide scale of plate system": 63,
    "finishing roll printing": 203,
    "oxide scale of temperature system": 203,
}


def ref(image_id: str, width: int = 100, height: int = 50) -> ImageRef:
    return ImageRef(image_id, width, height)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def table(result: LabelImport, fmt: str) -> list[tuple]:
    """Rows as (image_id, rel_path, source_label, label, source_file, x, y, w, h); NaN boxes as None."""
    frame = result.labels
    assert list(frame.columns) == columns(PriorLabel)
    assert set(frame["source_format"]) <= {fmt}
    return [
        (
            row.image_id,
            row.rel_path,
            row.source_label,
            row.label,
            row.source_file,
            *(None if pd.isna(value) else round(value, 6) for value in (row.x, row.y, row.w, row.h)),
        )
        for row in frame.itertuples()
    ]


def issue_lines(result: LabelImport) -> list[tuple[str, str]]:
    return [(issue.source_file, issue.detail) for issue in result.issues]


def find_issue(result: LabelImport, source_file: str, *words: str) -> LabelIssue:
    """The one issue about ``source_file`` whose detail contains every word."""
    hits = [i for i in result.issues if i.source_file == source_file and all(w in i.detail for w in words)]
    assert len(hits) == 1, f"expected one issue for {source_file} with {words}, got {issue_lines(result)}"
    return hits[0]


# --- common behaviour ------------------------------------------------------------------------------------------


def test_no_labels_gives_an_empty_frame_with_the_record_columns(tmp_path: Path) -> None:
    result = read_prior_labels("voc", tmp_path, {"a.jpg": ref("i1")}, class_names=CLASSES)

    assert list(result.labels.columns) == columns(PriorLabel)
    assert result.labels.empty
    assert result.issues == []


def test_label_map_value_outside_the_ontology_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(LabelImportError) as caught:
        read_prior_labels(
            "folders",
            tmp_path,
            {"dent ding/a.jpg": ref("i1")},
            class_names=CLASSES,
            label_map={"dent ding": "dents", "scr": "scratch"},
        )
    message = str(caught.value)
    assert "'dent ding' -> 'dents'" in message
    assert "'scr'" not in message  # a valid entry is not blamed
    assert "contamination, dent, scratch" in message


def test_unknown_format_is_an_error_listing_the_formats(tmp_path: Path) -> None:
    with pytest.raises(LabelImportError, match="folders, voc, coco, yolo, csv"):
        read_prior_labels("labelme", tmp_path, {}, class_names=CLASSES)  # type: ignore[arg-type]


# --- folders ---------------------------------------------------------------------------------------------------


def test_folders_take_the_first_folder_as_the_class(tmp_path: Path) -> None:
    images = {
        "scratch/a.jpg": ref("i1"),
        "dent ding\\b.png": ref("i2"),  # Windows separator, space in the folder name
        "./scratch/sub/c.jpg": ref("i3"),  # ./ prefix; nested: still the first folder
        "unknown/d.jpg": ref("i4"),
        "scratch/copy-of-a.jpg": ref("i1"),  # byte-identical copy: same image, its own row
        "loose.jpg": ref("i5"),
    }

    result = read_prior_labels(
        "folders", tmp_path, images, class_names=CLASSES, label_map={"dent ding": "dent", "scratch": "scratch"}
    )

    assert table(result, "folders") == [
        ("i1", "scratch/a.jpg", "scratch", "scratch", "scratch/a.jpg", None, None, None, None),
        ("i1", "scratch/copy-of-a.jpg", "scratch", "scratch", "scratch/copy-of-a.jpg", None, None, None, None),
        ("i2", "dent ding/b.png", "dent ding", "dent", "dent ding/b.png", None, None, None, None),
        ("i3", "scratch/sub/c.jpg", "scratch", "scratch", "scratch/sub/c.jpg", None, None, None, None),
        ("i4", "unknown/d.jpg", "unknown", None, "unknown/d.jpg", None, None, None, None),
    ]
    assert len(result.issues) == 1
    assert "not inside a class folder" in find_issue(result, "loose.jpg").detail


def test_label_map_wins_over_an_exact_class_name(tmp_path: Path) -> None:
    result = read_prior_labels(
        "folders", tmp_path, {"scratch/a.jpg": ref("i1")}, class_names=CLASSES, label_map={"scratch": "dent"}
    )

    assert result.labels["label"].tolist() == ["dent"]
    assert result.labels["source_label"].tolist() == ["scratch"]


# --- Pascal VOC ------------------------------------------------------------------------------------------------


def voc_object(name: str, box: tuple[object, object, object, object] | None = None) -> str:
    if box is None:
        return f"<object><name>{name}</name></object>"
    xmin, ymin, xmax, ymax = box
    return (
        f"<object>\n  <name>\n    {name}\n  </name>\n  <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>\n</object>"
    )


def voc(filename: str, *objects: str, folder: str = "", path: str = "") -> str:
    where = f"<folder>{folder}</folder>" if folder else ""
    where += f"<path>{path}</path>" if path else ""
    body = "\n".join(objects)
    header = '<?xml version="1.0" encoding="utf-8"?>'
    return f"{header}\n<annotation>{where}<filename>{filename}</filename>{body}</annotation>"


def test_voc_beside_the_images(tmp_path: Path) -> None:
    write(tmp_path / "line1/a.xml", voc("a.jpg", voc_object("scratch", (10, 20, 30, 45)), voc_object("스크래치")))
    # Byte-identical copies, each with its own XML: one image, a row per XML.
    write(tmp_path / "line1/e.xml", voc("e.jpg", voc_object("dent", (1.5, 2, 11.5, 7))))
    write(tmp_path / "copy/e.xml", voc("e.jpg", voc_object("dent", (1.5, 2, 11.5, 7))))
    write(tmp_path / "line1/empty.xml", voc("empty.jpg"))
    images = {
        "line1/a.jpg": ref("ia"),
        "line1/e.jpg": ref("ie"),
        "copy/e.jpg": ref("ie"),
        "line1/empty.jpg": ref("i0"),
    }

    result = read_prior_labels("voc", tmp_path, images, class_names=CLASSES, label_map={"스크래치": "scratch"})

    assert table(result, "voc") == [
        ("ia", "line1/a.jpg", "scratch", "scratch", "line1/a.xml", 10.0, 20.0, 20.0, 25.0),
        ("ia", "line1/a.jpg", "스크래치", "scratch", "line1/a.xml", None, None, None, None),
        ("ie", "copy/e.jpg", "dent", "dent", "copy/e.xml", 1.5, 2.0, 10.0, 5.0),
        ("ie", "line1/e.jpg", "dent", "dent", "line1/e.xml", 1.5, 2.0, 10.0, 5.0),
    ]
    assert result.issues == []


def test_voc_in_a_separate_folder_matches_by_path_name_and_stem(tmp_path: Path) -> None:
    raw, ann = tmp_path / "raw", tmp_path / "ann"
    # <path> from the annotator's Windows machine picks line2/b.jpg over line3/b.jpg.
    write(ann / "b.xml", voc("b.jpg", voc_object("dent", (0, 0, 5, 5)), path="C:\\data\\line2\\b.jpg"))
    # <folder> + <filename>.
    write(ann / "sub/f.xml", voc("f.jpg", voc_object("scratch", (1, 1, 2, 2)), folder="line3"))
    # <filename> is stale: the XML's name finds c.png.
    write(ann / "c.xml", voc("IMG_0001.JPG", voc_object("contamination", (5, 5, 15, 10))))
    images = {
        "line2/b.jpg": ref("ib2"),
        "line3/b.jpg": ref("ib3"),
        "line3/f.jpg": ref("if3"),
        "line4/f.jpg": ref("if4"),
        "line1/c.png": ref("ic"),
    }

    result = read_prior_labels("voc", raw, images, class_names=CLASSES, labels_path=ann)

    assert table(result, "voc") == [
        ("ib2", "line2/b.jpg", "dent", "dent", "b.xml", 0.0, 0.0, 5.0, 5.0),
        ("ic", "line1/c.png", "contamination", "contamination", "c.xml", 5.0, 5.0, 10.0, 5.0),
        ("if3", "line3/f.jpg", "scratch", "scratch", "sub/f.xml", 1.0, 1.0, 1.0, 1.0),
    ]
    assert result.issues == []


def test_voc_problems_are_issues_not_crashes(tmp_path: Path) -> None:
    write(tmp_path / "broken.xml", "<annotation><object><name>scratch</name>")
    write(tmp_path / "other.xml", "<config><item/></config>")
    write(tmp_path / "gone.xml", voc("gone.jpg", voc_object("scratch", (0, 0, 1, 1))))
    write(tmp_path / "twice.xml", voc("d.jpg", voc_object("scratch", (0, 0, 1, 1))))
    write(
        tmp_path / "a.xml",
        voc(
            "a.jpg",
            voc_object("scratch", ("abc", 0, 5, 5)),
            voc_object("dent", (10, 10, 5, 20)),
            "<object><bndbox><xmin>0</xmin></bndbox></object>",
            voc_object("dent", (1, 2, 3, 4)),
        ),
    )
    images = {"a.jpg": ref("ia"), "x/d.jpg": ref("idx"), "y/d.jpg": ref("idy")}

    result = read_prior_labels("voc", tmp_path, images, class_names=CLASSES)

    assert table(result, "voc") == [("ia", "a.jpg", "dent", "dent", "a.xml", 1.0, 2.0, 2.0, 2.0)]
    find_issue(result, "broken.xml", "cannot be read as XML", "line 1")
    find_issue(result, "other.xml", "<config>", "not a Pascal VOC file")
    find_issue(result, "gone.xml", "'gone.jpg'", "matches no ingested image")
    find_issue(result, "twice.xml", "several different images", "x/d.jpg, y/d.jpg")
    find_issue(result, "a.xml", "#1 (scratch)", "numeric")
    find_issue(result, "a.xml", "#2 (dent)", "no area", "w=-5")
    find_issue(result, "a.xml", "#3", "no <name>")
    assert len(result.issues) == 7


def test_voc_labels_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(LabelImportError, match="missing"):
        read_prior_labels("voc", tmp_path, {}, class_names=CLASSES, labels_path=tmp_path / "missing")


# --- COCO ------------------------------------------------------------------------------------------------------


COCO = {
    "images": [
        {"id": 1, "file_name": ".\\line1\\a.jpg", "width": 100, "height": 50},
        {"id": 2, "file_name": "b.jpg"},  # only a file name: unique under raw_dir
        {"id": 3, "file_name": "quarantined.jpg"},
        {"id": 4, "file_name": "line1/no_labels.jpg"},
        {"id": 5, "file_name": "dup.jpg"},  # two different images have this name
        {"id": 6},
    ],
    "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "찍힘"}, {"id": 3, "name": "burr"}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 5]},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [0.5, 1.5, 2, 3]},
        {"id": 12, "image_id": 2, "category_id": 3},
        {"id": 13, "image_id": 3, "category_id": 1, "bbox": [1, 1, 1, 1]},
        {"id": 14, "image_id": 3, "category_id": 2, "bbox": [2, 2, 2, 2]},
        {"id": 15, "image_id": 99, "category_id": 1, "bbox": [1, 1, 1, 1]},
        {"id": 16, "image_id": 1, "category_id": 42, "bbox": [1, 1, 1, 1]},
        {"id": 17, "image_id": 2, "category_id": 1, "bbox": [1, 2, 0, 4]},
        {"id": 18, "image_id": 5, "category_id": 1, "bbox": [1, 2, 3, 4]},
        {"id": 19, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3]},
    ],
}
COCO_IMAGES = {
    "line1/a.jpg": ref("ia"),
    "line2/b.jpg": ref("ib"),
    "line1/no_labels.jpg": ref("in"),
    "x/dup.jpg": ref("idx"),
    "y/dup.jpg": ref("idy"),
}


def write_json(path: Path, data: object) -> Path:
    return write(path, json.dumps(data, ensure_ascii=False))


def test_coco_single_json_under_raw_dir(tmp_path: Path) -> None:
    write_json(tmp_path / "annotations/instances.json", COCO)

    result = read_prior_labels("coco", tmp_path, COCO_IMAGES, class_names=CLASSES, label_map={"찍힘": "dent"})

    source = "annotations/instances.json"
    assert table(result, "coco") == [
        ("ia", "line1/a.jpg", "scratch", "scratch", source, 10.0, 20.0, 30.0, 5.0),
        ("ia", "line1/a.jpg", "찍힘", "dent", source, 0.5, 1.5, 2.0, 3.0),
        ("ib", "line2/b.jpg", "burr", None, source, None, None, None, None),
    ]
    find_issue(result, source, "images[5]", "'id' and a 'file_name'")
    find_issue(result, source, "'quarantined.jpg'", "2 annotation(s) skipped", "matches no ingested image")
    find_issue(result, source, "'dup.jpg'", "several different images")
    find_issue(result, source, "annotations[5]", "image_id 99")
    find_issue(result, source, "annotations[6]", "category_id 42")
    find_issue(result, source, "annotations[7]", "no area")
    find_issue(result, source, "annotations[9]", "[x, y, width, height]")
    assert len(result.issues) == 7


def test_coco_is_deterministic_whatever_the_input_order(tmp_path: Path) -> None:
    path = write_json(tmp_path / "labels.json", COCO)
    shuffled = dict(reversed(list(COCO_IMAGES.items())))

    first = read_prior_labels("coco", tmp_path, COCO_IMAGES, class_names=CLASSES, labels_path=path)
    second = read_prior_labels("coco", tmp_path, shuffled, class_names=CLASSES, labels_path=path)

    pd.testing.assert_frame_equal(first.labels, second.labels)
    assert first.issues == second.issues == sorted(first.issues)
    keys = list(zip(first.labels["image_id"], first.labels["source_file"], first.labels["source_label"], strict=True))
    assert keys == sorted(keys)


def test_coco_file_outside_raw_dir_is_named_relative_to_its_folder(tmp_path: Path) -> None:
    path = write_json(tmp_path / "exports/coco.json", COCO)

    result = read_prior_labels("coco", tmp_path / "raw", COCO_IMAGES, class_names=CLASSES, labels_path=path)

    assert set(result.labels["source_file"]) == {"coco.json"}
    assert len(result.labels) == 3


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({}, r"no \*\.json file.*labels_path"),
        ({"a.json": COCO, "b/c.json": COCO}, r"2 JSON files \(a\.json, b/c\.json\).*labels_path"),
    ],
)
def test_coco_needs_exactly_one_json(tmp_path: Path, files: dict[str, object], match: str) -> None:
    for name, data in files.items():
        write_json(tmp_path / name, data)

    with pytest.raises(LabelImportError, match=match):
        read_prior_labels("coco", tmp_path, COCO_IMAGES, class_names=CLASSES)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not UTF-8 JSON"),
        (json.dumps({"images": []}), "'categories'"),
        (json.dumps([1, 2]), "'images' / 'categories'"),
        (json.dumps({"images": [], "categories": [], "annotations": {}}), "'annotations'"),
    ],
)
def test_structurally_invalid_coco_is_an_error_naming_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "bad coco.json", text)

    with pytest.raises(LabelImportError, match=match) as caught:
        read_prior_labels("coco", tmp_path, COCO_IMAGES, class_names=CLASSES, labels_path=path)
    assert "bad coco.json" in str(caught.value)


# --- YOLO ------------------------------------------------------------------------------------------------------


def test_yolo_beside_the_images_with_classes_txt(tmp_path: Path) -> None:
    write(tmp_path / "classes.txt", "스크래치\ndent\n")
    write(tmp_path / "a.txt", "0 0.5 0.5 0.2 0.4\n1 0.25 0.5 0.5 1.0\n")
    write(tmp_path / "empty.txt", "")
    write(
        tmp_path / "lot 7/bad.txt",
        "0 0.5 0.5 0.2\nx 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n0 50 20 10 10\n\n1 0.5 0.5 0.1 0.2\n0 0.5 0.5 0 0.1\n",
    )
    write(tmp_path / "quarantined.txt", "0 0.5 0.5 0.1 0.1\n")
    images = {"a.jpg": ref("ia"), "empty.jpg": ref("ie"), "lot 7/bad.png": ref("ib", 200, 100)}

    result = read_prior_labels("yolo", tmp_path, images, class_names=CLASSES, label_map={"스크래치": "scratch"})

    assert table(result, "yolo") == [
        ("ia", "a.jpg", "dent", "dent", "a.txt", 0.0, 0.0, 50.0, 50.0),
        ("ia", "a.jpg", "스크래치", "scratch", "a.txt", 40.0, 15.0, 20.0, 20.0),
        ("ib", "lot 7/bad.png", "dent", "dent", "lot 7/bad.txt", 90.0, 40.0, 20.0, 20.0),
    ]
    find_issue(result, "lot 7/bad.txt", "line 1:", "expected 5 values")
    find_issue(result, "lot 7/bad.txt", "line 2:", "integer class")
    find_issue(result, "lot 7/bad.txt", "line 3:", "class index 7", "2 names")
    find_issue(result, "lot 7/bad.txt", "line 4:", "normalised")
    find_issue(result, "lot 7/bad.txt", "line 7:", "no area")
    find_issue(result, "quarantined.txt", "matches no ingested image")
    assert len(result.issues) == 6


def test_yolo_without_class_names_uses_indexes_and_says_so_once(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "2 0.5 0.5 0.2 0.4\n0 0.5 0.5 0.2 0.4\n")
    write(tmp_path / "b.txt", "2 0.1 0.1 0.2 0.2\n")
    images = {"a.jpg": ref("ia"), "b.jpg": ref("ib")}

    result = read_prior_labels("yolo", tmp_path, images, class_names=CLASSES, label_map={"2": "contamination"})

    frame = result.labels
    assert frame["source_label"].tolist() == ["0", "2", "2"]
    assert frame["label"].tolist() == [None, "contamination", "contamination"]
    assert len(result.issues) == 1
    assert "add classes.txt" in find_issue(result, "classes.txt").detail


@pytest.mark.parametrize("raw_sub", ["", "images"])
def test_yolo_ultralytics_layout(tmp_path: Path, raw_sub: str) -> None:
    """labels/<split>/x.txt mirrors images/<split>/x.jpg, with raw_dir the dataset root or its images/ folder."""
    write(tmp_path / "data.yaml", "path: .\ntrain: images/train\nnames:\n  0: scratch\n  1: 오염\n")
    write(tmp_path / "labels/train/x.txt", "0 0.5 0.5 1 1\n")
    write(tmp_path / "labels/val/x.txt", "1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "images").mkdir()
    prefix = "" if raw_sub else "images/"
    images = {f"{prefix}train/x.jpg": ref("it"), f"{prefix}val/x.jpg": ref("iv", 40, 20)}

    result = read_prior_labels("yolo", tmp_path / raw_sub, images, class_names=CLASSES)

    labels_prefix = "../labels/" if raw_sub else "labels/"
    assert table(result, "yolo") == [
        ("it", f"{prefix}train/x.jpg", "scratch", "scratch", f"{labels_prefix}train/x.txt", 0.0, 0.0, 100.0, 50.0),
        ("iv", f"{prefix}val/x.jpg", "오염", None, f"{labels_prefix}val/x.txt", 10.0, 5.0, 20.0, 10.0),
    ]
    assert result.issues == []


def test_yolo_separate_labels_folder_with_dataset_yaml_list(tmp_path: Path) -> None:
    raw, lab = tmp_path / "raw", tmp_path / "lab"
    write(lab / "dataset.yaml", "names: [scratch, dent]\n")
    write(lab / "a/p.txt", "1 0.5 0.5 0.5 0.5\n")
    write(lab / "b/p.txt", "0 0.5 0.5 0.5 0.5\n")
    write(lab / "q.txt", "0 0.5 0.5 0.5 0.5\n")  # no folder to mirror: q's unique stem finds it
    images = {"a/p.jpg": ref("ipa"), "b/p.jpg": ref("ipb"), "deep/er/q.bmp": ref("iq")}

    result = read_prior_labels("yolo", raw, images, class_names=CLASSES, labels_path=lab)

    assert [(r[0], r[2], r[4]) for r in table(result, "yolo")] == [
        ("ipa", "dent", "a/p.txt"),
        ("ipb", "scratch", "b/p.txt"),
        ("iq", "scratch", "q.txt"),
    ]
    assert result.issues == []


def test_yolo_conflicting_class_files_are_reported(tmp_path: Path) -> None:
    write(tmp_path / "classes.txt", "scratch\ndent\n")
    write(tmp_path / "sub/classes.txt", "dent\nscratch\n")
    write(tmp_path / "a.txt", "0 0.5 0.5 0.5 0.5\n")

    result = read_prior_labels("yolo", tmp_path, {"a.jpg": ref("ia")}, class_names=CLASSES)

    assert result.labels["source_label"].tolist() == ["scratch"]
    find_issue(result, "sub/classes.txt", "differs from classes.txt")


def test_yolo_data_yaml_without_names_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "data.yaml", "train: images/train\n")

    with pytest.raises(LabelImportError, match=r"data\.yaml has no 'names:'"):
        read_prior_labels("yolo", tmp_path, {}, class_names=CLASSES)


# --- labels of images that were not ingested ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "label_file", "text"),
    [
        ("voc", "cam1/0001.xml", voc("0001.jpg", voc_object("scratch", (0, 0, 5, 5)))),
        ("yolo", "cam1/0001.txt", "0 0.5 0.5 0.1 0.1\n"),
        (
            "coco",
            "coco.json",
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "cam1/0001.jpg"}],
                    "categories": [{"id": 1, "name": "scratch"}],
                    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
                }
            ),
        ),
    ],
    ids=["voc", "yolo", "coco"],
)
def test_labels_of_a_quarantined_image_never_go_to_its_namesake(
    tmp_path: Path, fmt: str, label_file: str, text: str
) -> None:
    """cam1/0001.jpg is on disk but quarantined; cam2/0001.jpg, the only ingested 0001.jpg, must not get its labels."""
    write(tmp_path / "cam1/0001.jpg", "not really a JPEG")
    write(tmp_path / "cam2/0001.jpg", "an ingested image")
    write(tmp_path / label_file, text)

    result = read_prior_labels(fmt, tmp_path, {"cam2/0001.jpg": ref("i2")}, class_names=CLASSES)  # type: ignore[arg-type]

    assert result.labels.empty
    assert len(result.issues) == 1
    find_issue(result, label_file, "matches no ingested image")


# --- real data -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not XSDD.is_dir(), reason=f"X-SDD not present at {XSDD}")
def test_xsdd_class_folders() -> None:
    """X-SDD's ``datas/`` is one folder per defect class; counts are those of its readme."""
    image_suffixes = {".jpg", ".jpeg", ".png", ".bmp"}
    paths = sorted(p for p in XSDD.rglob("*") if p.is_file() and p.suffix.lower() in image_suffixes)
    images = {p.relative_to(XSDD).as_posix(): ref(f"{n:05d}", 1, 1) for n, p in enumerate(paths)}
    slugs = {name: name.replace(" ", "_") for name in XSDD_COUNTS}

    result = read_prior_labels("folders", XSDD, images, class_names=[*slugs.values(), "unused"], label_map=slugs)

    frame = result.labels
    assert len(frame) == 1360
    assert result.issues == []
    assert Counter(frame["source_label"]) == XSDD_COUNTS
    assert Counter(frame["label"]) == {slugs[name]: n for name, n in XSDD_COUNTS.items()}
    assert frame["image_id"].is_unique
    assert frame[["x", "y", "w", "h"]].isna().all().all()
    assert all(rel.split("/")[0] == label for rel, label in zip(frame["rel_path"], frame["source_label"], strict=True))
