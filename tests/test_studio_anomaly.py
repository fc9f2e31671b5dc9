"""Day-one anomaly pre-labels in Label Studio: "defect" rows pre-select no class, their regions become unlabeled
box/polygon pre-annotations with scores, the review queue puts the most anomalous beside the most uncertain, and
pull/simulate handle such tasks. The server tests push REAL magnetic-tile images with regions made here from their
defect masks."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from curation.errors import InputError
from curation.studio.config import BOXES, CONFIDENCE, DESCRIPTION, LABEL, POLYGONS, instructions
from curation.studio.order import review_queue
from curation.studio.pull import annotations_from_export, parse_result, pull
from curation.studio.push import push
from curation.studio.simulate import simulated_annotation
from curation.studio.tasks import build_tasks
from schemas.params_studio import SimulationParams
from schemas.records import ANY_DEFECT, Prediction, columns
from tests.conftest import ROOT
from tests.studio_fixture import Studio, make_inputs, studio_server  # noqa: F401
from tests.test_studio_ui import TASK_IMAGE_JS, _login, browser  # noqa: F401

MT = ROOT.parent.parent / "shared" / "datasets" / "magnetic-tile"
if not MT.is_dir():
    MT = Path("/work/shared/datasets/magnetic-tile")
# defect images of three kinds and two defect-free ones
MT_IMAGES = ["MT_Blowhole/Imgs/exp1_num_108719", "MT_Crack/Imgs/exp1_num_249594", "MT_Break/Imgs/exp1_num_116934"]
MT_FREE = ["MT_Free/Imgs/exp0_num_743", "MT_Free/Imgs/exp1_num_10181"]
SCREENSHOT = ROOT / "docs" / "screens" / "annotator-anomaly-regions.png"
OK = "ok"


# ---------------------------------------------------------------------------------------------- the queue


def test_review_queue_interleaves_most_anomalous_and_most_uncertain() -> None:
    rows = [
        # image, margin, entropy, anomaly score, called defective
        ("a", 0.50, 0.9, 9.0, True),  # most anomalous
        ("b", 0.05, 1.2, 1.0, False),  # most uncertain; called OK, so not in the anomalous ranking
        ("c", 0.10, 1.1, 7.0, True),  # 2nd anomalous, 2nd uncertain
        ("d", 0.80, 0.3, 8.0, None),  # no OK class: the call is unknown, so it counts as anomalous (2nd)
        ("e", 0.05, 1.5, None, None),  # uncertain like b, higher entropy: before b
        ("f", 0.90, 0.1, 2.0, False),
        ("f", 0.20, 0.8, 2.0, False),  # a second model version: f counts with its most uncertain row
    ]
    frame = pd.DataFrame(rows, columns=["image_id", "margin", "entropy", "anomaly_score", "anomaly_defect"])
    frame["anomaly_defect"] = frame["anomaly_defect"].astype("boolean")  # as parquet reads a nullable bool
    queue = review_queue(frame.to_dict("records"), ["a", "b", "c", "d", "e", "f", "g"])
    # anomalous ranking a, d, c; uncertain ranking e, b, c, f, a, d; taken in turn, anomalous first:
    # a (anom 1), e (unc 1), d (anom 2), b (unc 2), c (anom 3), [c placed], f (unc 4); g has no prediction: last
    assert sorted(queue, key=queue.get) == ["a", "e", "d", "b", "c", "f", "g"]
    assert list(queue.values()) == list(range(1, 8))


def test_queue_without_anomaly_columns_is_the_uncertainty_order(tmp_path, params) -> None:
    manifest, predictions = make_inputs(tmp_path / "old", params.ontology, 6, seed=3)
    old = predictions.drop(columns=["anomaly_score", "anomaly_defect", "anomaly_reference", "anomaly_map", "regions"])
    specs = build_tasks(manifest, old, ontology=params.ontology, document_root=tmp_path, shapes=True)
    by_hand = old.assign(key=-old["entropy"]).sort_values(["margin", "key", "image_id"])["image_id"].tolist()
    assert [s.image_id for s in specs] == by_hand
    assert [s.data["queue"] for s in specs] == [1, 2, 3, 4, 5, 6]
    assert all(r["from_name"] not in (BOXES, POLYGONS) for s in specs for p in s.predictions for r in p["result"])


# ---------------------------------------------------------------------------------------------- pre-annotations


def _anomaly_rows(image_ids: list[str], classes: list[str], regions: dict[str, list[dict]]) -> pd.DataFrame:
    """Anomaly predictions as the contract writes them: "defect" for images with regions, else the OK class."""
    rows = []
    for n, image_id in enumerate(image_ids):
        found = regions.get(image_id, [])
        p_defect = 0.9 - 0.1 * n if found else 0.1
        others = [c for c in classes if c != OK]
        probs = {f"p_{c}": p_defect / len(others) for c in others} | {f"p_{OK}": 1 - p_defect}
        label = ANY_DEFECT if found else OK
        rows.append(
            {
                "image_id": image_id,
                "label": label,
                "score": p_defect if found else 1 - p_defect,
                "margin": abs(2 * p_defect - 1),
                "entropy": 0.5 + 0.1 * n,
                "top_hard_negative": None,
                "source": "anomaly",
                "model_name": "efficientnet-lite0",
                "model_version": "efficientnet-lite0@test+anomaly-1",
                "caption": None,
                "caption_score": None,
                "caption_flag": False,
                "description_en": f"{len(found)} suspect region(s) in image {n}" if found else "No anomaly found",
                "description_ko": f"의심 영역 {len(found)}곳" if found else "이상 없음",
                "anomaly_score": 5.0 - n if found else 0.5,
                "anomaly_defect": bool(found),
                "anomaly_reference": "none",
                "anomaly_map": f"anomaly_maps/{image_id}.png",
                "regions": json.dumps(found),
                **probs,
            }
        )
    frame = pd.DataFrame(rows)
    assert set(columns(Prediction)) <= set(frame.columns)
    return frame


def _small_inputs(tmp_path, params):
    manifest, _ = make_inputs(tmp_path / "small", params.ontology, 2)  # 64 x 48 images
    box = {"x": 16.0, "y": 12.0, "w": 8.0, "h": 24.0, "score": 0.8765}
    polygon = {"x": 32.0, "y": 0.0, "w": 16.0, "h": 12.0, "score": 0.5, "polygons": [[32, 0, 48, 0, 48, 12]]}
    image_ids = manifest["image_id"].tolist()
    predictions = _anomaly_rows(image_ids, params.ontology.class_names, {image_ids[0]: [box, polygon]})
    return manifest, predictions


def test_defect_row_preselects_no_class_and_its_regions_become_unlabeled_shapes(tmp_path, params) -> None:
    manifest, predictions = _small_inputs(tmp_path, params)
    specs = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=tmp_path, description_language="en", shapes=True
    )
    defect, fine = specs  # the defect image is first: it leads the anomalous ranking
    (prediction,) = defect.predictions
    by_control: dict[str, list[dict]] = {}
    for result in prediction["result"]:
        by_control.setdefault(result["from_name"], []).append(result)
    assert LABEL not in by_control  # the reviewer picks the type
    assert by_control[CONFIDENCE][0]["value"] == {"number": 90}
    assert by_control[DESCRIPTION][0]["value"] == {"text": ["2 suspect region(s) in image 0"]}
    (rect,) = by_control[BOXES]
    # 64 x 48 image: x 16 px = 25 %, y 12 px = 25 %, w 8 px = 12.5 %, h 24 px = 50 %
    assert rect["value"] == {"x": 25.0, "y": 25.0, "width": 12.5, "height": 50.0, "rectanglelabels": []}
    assert (rect["original_width"], rect["original_height"], rect["score"]) == (64, 48, 0.8765)
    (outline,) = by_control[POLYGONS]  # a region with a polygon is that polygon, not a second rectangle too
    assert outline["value"]["points"] == [[50.0, 0.0], [75.0, 0.0], [75.0, 25.0]]
    assert outline["value"]["polygonlabels"] == [] and outline["score"] == 0.5
    assert defect.data["predicted"] == ANY_DEFECT
    tag = hashlib.sha256(b"efficientnet-lite0@test+anomaly-1").hexdigest()[:8]
    assert prediction["model_version"] == f"anomaly efficientnet-lite0 #{tag}"  # the tab title says what it is

    (ok_prediction,) = fine.predictions
    [choice] = [r for r in ok_prediction["result"] if r["from_name"] == LABEL]
    assert choice["value"] == {"choices": [OK]}  # an image called OK pre-selects the OK class

    without = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)
    assert all(r["from_name"] not in (BOXES, POLYGONS) for r in without[0].predictions[0]["result"])


def test_regions_of_a_class_row_carry_its_class_but_never_ok(tmp_path, params) -> None:
    manifest, predictions = _small_inputs(tmp_path, params)
    regions = predictions.loc[0, "regions"]
    predictions.loc[:, "regions"] = regions  # the few-shot scorer ran: a class, and the anomaly regions still
    predictions.loc[:, "label"] = ["scratch", OK]
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, shapes=True)
    labels = {
        s.data["predicted"]: [
            r["value"].get("rectanglelabels") for r in s.predictions[0]["result"] if r["from_name"] == BOXES
        ]
        for s in specs
    }
    assert labels == {"scratch": [["scratch"]], OK: [[]]}  # an OK box would mean nothing: left for the reviewer


def test_unreadable_regions_are_one_clear_error(tmp_path, params) -> None:
    manifest, predictions = _small_inputs(tmp_path, params)
    predictions.loc[0, "regions"] = json.dumps([{"x": "left", "y": 1, "w": 2, "h": 3}])
    with pytest.raises(InputError, match=r"preds\.parquet: row 1 \(1-based, image [0-9a-f]+\): regions cannot be"):
        build_tasks(
            manifest, predictions, ontology=params.ontology, document_root=tmp_path, shapes=True,
            predictions_name="preds.parquet",
        )  # fmt: skip
    predictions.loc[0, "label"] = "defekt"  # "defect" is allowed, nothing else outside the ontology
    with pytest.raises(InputError, match="not ontology classes"):
        build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path)


def test_unlabeled_regions_take_the_annotation_class_when_pulled(tmp_path, params) -> None:
    manifest, predictions = _small_inputs(tmp_path, params)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, shapes=True)
    shapes = [r for r in specs[0].predictions[0]["result"] if r["from_name"] in (BOXES, POLYGONS)]
    # as Label Studio saves a kept, unlabeled region: the value without its labels key
    kept = [{**r, "value": {k: v for k, v in r["value"].items() if not k.endswith("labels")}} for r in shapes]
    chosen = {"from_name": LABEL, "to_name": "image", "type": "choices", "value": {"choices": ["crack"]}}
    boxes = json.loads(parse_result([*kept, chosen])["boxes"])
    assert [b["label"] for b in boxes] == ["crack", "crack"]
    assert (boxes[0]["x"], boxes[0]["y"], boxes[0]["w"], boxes[0]["h"]) == (16, 12, 8, 24)
    assert boxes[1]["segmentation"] == [[32, 0, 48, 0, 48, 12]]
    relabelled = [{**kept[0], "value": {**kept[0]["value"], "rectanglelabels": ["dent"]}}, chosen]
    assert json.loads(parse_result(relabelled)["boxes"])[0]["label"] == "dent"  # a box label the reviewer gave
    # the reviewer called the image OK: the untouched suspect regions were false alarms, a labelled box stays
    ok = {**chosen, "value": {"choices": [OK]}}
    assert parse_result([*kept, ok]) | {"description": None} == {
        "label": OK,
        "severity": None,
        "description": None,
        "boxes": None,
        "regions_dropped": 2,
    }
    task = {"id": 7, "data": {"image_id": "x"}, "annotations": [{"id": 1, "completed_by": 1, "result": [*kept, ok]}]}
    report = annotations_from_export([task], {1: "a@b.c"}).report
    assert (report["annotations"], report["unlabeled_regions_on_ok"]) == (1, 2)


def test_simulated_reviewer_types_a_defect_task_and_keeps_its_regions(tmp_path, params) -> None:
    manifest, predictions = _small_inputs(tmp_path, params)
    specs = build_tasks(manifest, predictions, ontology=params.ontology, document_root=tmp_path, shapes=True)
    task = {"id": 1, "data": specs[0].data, "predictions": [{"id": 1, **specs[0].predictions[0]}]}
    settings = SimulationParams(noise=0.0, skip_rate=0.0)
    labels = set()
    for reviewer in range(1, 9):
        annotation = simulated_annotation(task, reviewer, ontology=params.ontology, settings=settings, truth={})
        parsed = parse_result(annotation["result"])
        assert parsed["label"] in params.ontology.class_names and parsed["label"] != OK
        assert [b["label"] for b in json.loads(parsed["boxes"])] == [parsed["label"]] * 2
        labels.add(parsed["label"])
    assert len(labels) > 1  # the type is drawn, not always the same class


def test_instructions_explain_the_suspect_regions(params) -> None:
    assert "Suspect regions" in instructions(params.ontology, boxes=True)
    assert "Suspect regions" not in instructions(params.ontology)


# ---------------------------------------------------------------------------------------------- real server


def _mask_boxes(mask_path: Path) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) in pixels of each connected defect area of a magnetic-tile mask (white = defect)."""
    labelled, _ = ndimage.label(np.asarray(Image.open(mask_path).convert("L")) > 127)
    return [
        (s[1].start, s[0].start, s[1].stop - s[1].start, s[0].stop - s[0].start) for s in ndimage.find_objects(labelled)
    ]


def _magnetic_tile(folder: Path, params):
    """The chosen magnetic-tile images copied under the document root, a manifest, anomaly predictions with the
    masks' boxes as regions, and the boxes per image id."""
    if not MT.is_dir():
        pytest.skip(f"magnetic-tile data set missing at {MT}")
    rows, boxes = [], {}
    for name in MT_IMAGES + MT_FREE:
        source = MT / f"{name}.jpg"
        target = folder / source.relative_to(MT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        width, height = Image.open(target).size
        rows.append(
            {"image_id": digest[:16], "path": str(target), "rel_path": str(target.relative_to(folder)),
             "sha256": digest, "width": width, "height": height, "mode": "L", "format": "JPEG"}
        )  # fmt: skip
        if name in MT_IMAGES:
            boxes[digest[:16]] = _mask_boxes(MT / f"{name}.png")
            assert boxes[digest[:16]], name
    manifest = pd.DataFrame(rows)
    regions = {
        image_id: [
            {"x": x, "y": y, "w": w, "h": h, "score": round(0.9 - 0.1 * k, 2)} for k, (x, y, w, h) in enumerate(b)
        ]
        for image_id, b in boxes.items()
    }
    return manifest, _anomaly_rows(manifest["image_id"].tolist(), params.ontology.class_names, regions), boxes


def test_magnetic_tile_regions_reach_label_studio_at_the_mask_positions(studio: Studio, params) -> None:
    manifest, predictions, boxes = _magnetic_tile(studio.document_root / "mt-api", params)
    specs = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=studio.document_root, shapes=True
    )
    client = studio.client()
    result = push(
        client, studio.conn, specs, ontology=params.ontology, settings=studio.settings_for("mt-api", boxes=True)
    )
    tasks = {t.data["image_id"]: t for t in client.tasks.list(project=result.project.id, fields="all")}
    sizes = manifest.set_index("image_id")[["width", "height"]]
    for image_id, expected in boxes.items():
        task = tasks[image_id]
        (prediction,) = task.predictions
        width, height = sizes.loc[image_id]
        rects = [r for r in prediction.result if r["from_name"] == BOXES]
        assert len(rects) == len(expected)
        for rect, (x, y, w, h) in zip(rects, expected, strict=True):
            want = [100 * x / width, 100 * y / height, 100 * w / width, 100 * h / height]
            got = [rect["value"][k] for k in ("x", "y", "width", "height")]
            assert got == pytest.approx(want, abs=1e-3)
            assert rect["value"]["rectanglelabels"] == [] and 0 < rect["score"] <= 0.9
        assert not [r for r in prediction.result if r["from_name"] == LABEL]  # no class pre-selected for "defect"
        [text] = [r["value"]["text"][0] for r in prediction.result if r["from_name"] == DESCRIPTION]
        assert text.startswith(f"{len(expected)} suspect region(s)") and "의심 영역" in text  # both languages
    for image_id in set(tasks) - set(boxes):
        [choice] = [r for r in tasks[image_id].predictions[0].result if r["from_name"] == LABEL]
        assert choice["value"]["choices"] == [OK]
    # the queue, by hand: anomalous ranking blowhole (score 5), crack (4), break (3); uncertain ranking by margin
    # |2 p_defect - 1|: break (0.4), crack (0.6), then margin 0.8 by entropy: free 2 (0.9), free 1 (0.8), blowhole;
    # in turn: blowhole, break, crack, [crack], [break], free 2, free 1
    blowhole, crack, broken, free1, free2 = manifest["image_id"]
    queue = sorted(tasks.values(), key=lambda t: t.data["queue"])
    assert [t.data["image_id"] for t in queue] == [blowhole, broken, crack, free2, free1]
    assert [t.id for t in queue] == sorted(t.id for t in queue)  # imported in queue order


def test_reviewer_sees_the_regions_picks_the_type_and_pull_gets_the_boxes(
    studio: Studio,
    params,
    browser,  # noqa: F811 (the fixture imported from test_studio_ui)
) -> None:
    manifest, predictions, boxes = _magnetic_tile(studio.document_root / "mt-ui", params)
    specs = build_tasks(
        manifest, predictions, ontology=params.ontology, document_root=studio.document_root,
        description_language="both", shapes=True,
    )  # fmt: skip
    client = studio.client()
    title = "mt-ui"
    result = push(client, studio.conn, specs, ontology=params.ontology, settings=studio.settings_for(title, boxes=True))
    first = specs[0].image_id  # the most anomalous image: the blowhole
    (task,) = [
        t for t in client.tasks.list(project=result.project.id, fields="task_only") if t.data["image_id"] == first
    ]

    page = _login(browser, studio, {"width": 1400, "height": 1100})
    page.goto(f"{studio.state.url}/projects/{result.project.id}/data?task={task.id}")
    page.wait_for_function(
        f"Array.from(document.images).some(i => ({TASK_IMAGE_JS}) && i.naturalWidth > 0)", timeout=60_000
    )
    page.wait_for_selector("text=0.90", timeout=60_000)  # the region list shows each region with its score
    page.wait_for_timeout(1_500)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    choices = page.evaluate(
        "Array.from(document.querySelectorAll('input.ant-radio-input')).map(e => [e.name, e.checked])"
    )
    assert {name for name, _ in choices} >= set(params.ontology.class_names)  # the class choices are shown ...
    assert not [name for name, checked in choices if checked], choices  # ... and none is pre-selected
    body = page.inner_text("body")
    assert f"{len(boxes[first])} suspect region(s) in image 0" in body  # the description, pre-filled
    image = page.locator("img[src*='/data/local-files/'], img[src^='blob:']").first
    pixels = np.asarray(Image.open(SCREENSHOT).convert("L"), dtype=float)
    assert pixels.std() > 20 and image.evaluate("i => i.naturalWidth") == int(manifest["width"].iloc[0])

    # The suspect region is drawn in colour where the mask's box is (the image itself is grey), not in Label
    # Studio's default thin grey: the tag's empty label gives unlabeled shapes its colour.
    shown = image.bounding_box()
    width, height = int(manifest["width"].iloc[0]), int(manifest["height"].iloc[0])
    ((x, y, w, h),) = boxes[first]
    scale_x, scale_y = shown["width"] / width, shown["height"] / height
    pad = 6
    around = {
        "x": shown["x"] + x * scale_x - pad,
        "y": shown["y"] + y * scale_y - pad,
        "width": w * scale_x + 2 * pad,
        "height": h * scale_y + 2 * pad,
    }
    near = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=around))).convert("RGB"), dtype=int)
    coloured = (near.max(axis=2) - near.min(axis=2)) > 60
    assert coloured.mean() > 0.1, f"the suspect region is not drawn in colour ({coloured.mean():.3f} of its pixels)"

    # The reviewer also outlines a defect the model missed with the "suspect" label (type: the image's class) ...
    page.get_by_text("suspect /").first.click()
    start = (shown["x"] + 0.15 * shown["width"], shown["y"] + 0.15 * shown["height"])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + 0.2 * shown["width"], start[1] + 0.1 * shown["height"], steps=8)
    page.mouse.up()
    page.wait_for_timeout(500)
    page.keyboard.press("Escape")  # unselect the new region, so the class choice below is the image's
    # ... then picks the type and submits, keeping the suspect region as it is
    page.locator("input.ant-radio-input[name=dent]").click()
    page.get_by_role("button", name="Submit").click()
    page.wait_for_function("document.body.innerText.includes('Update')", timeout=30_000)
    page.close()
    frame = pull(client, studio.conn, project_title=title).annotations
    (row,) = frame.to_dict("records")
    assert row["image_id"] == first and row["label"] == "dent"
    pulled = json.loads(row["boxes"])
    # the model's region and the reviewer's own, both without a box label: both take the image's class
    assert [r["label"] for r in pulled] == ["dent"] * (len(boxes[first]) + 1)
    for region, (x, y, w, h) in zip(pulled, boxes[first], strict=False):
        assert (region["x"], region["y"], region["w"], region["h"]) == pytest.approx((x, y, w, h), abs=0.02)
    drawn = pulled[-1]
    assert drawn["x"] == pytest.approx(0.15 * width, rel=0.1) and drawn["w"] == pytest.approx(0.2 * width, rel=0.15)
