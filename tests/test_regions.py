"""Map -> regions -> descriptions on real magnetic-tile masks (white = defect) used as stand-in anomaly maps.

Expected positions of the hand-picked files were read from their mask pixels and an overlay by eye; the checks over
every mask compute the grid cell, clock hour, box and area with their own arithmetic (OpenCV components, compass
bearings), not with the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from pycocotools import mask as coco_mask
from pydantic import ValidationError
from scipy import ndimage

from curation.errors import CurationError, ParamsError
from curation.prelabel.regions import (
    REGION_GLOSSARY,
    PixelPitchError,
    describe_image,
    pixel_pitch,
    region_facts,
    region_json,
    regions_from_map,
)
from schemas.ontology import Severity
from schemas.params import load_params
from schemas.params_anomaly import AnomalyDescriptionParams, RegionParams

ROOT = Path(__file__).resolve().parents[1]
TILE = Path("/work/shared/datasets/magnetic-tile")
needs_tile = pytest.mark.skipif(not TILE.is_dir(), reason=f"magnetic-tile data set not found at {TILE}")

# 469 x 370; one component x 343..363, y 0..103 (inclusive): a crack from the top edge, upper right
CRACK = "MT_Crack/Imgs/exp1_num_3191"
# 488 x 354; x 459..473, y 335..353: a small fray in the lower right corner
FRAY = "MT_Fray/Imgs/exp0_num_797"
# 513 x 309; a break on the top edge, left of the middle (overlay checked by eye)
BREAK_TOP = "MT_Break/Imgs/exp1_num_26106"
# 592 x 247; a break along the left edge, halfway down
BREAK_LEFT = "MT_Break/Imgs/exp1_num_116934"

DESCRIBE = AnomalyDescriptionParams()
ALL = RegionParams(percentile=50, min_area_px=1, max_regions=50)  # every component of a binary mask
SEVERITIES = [
    Severity(name="minor", name_ko="경미", min_size_px=10, min_size_mm=0.5),
    Severity(name="major", name_ko="중대", min_size_px=50, min_size_mm=2.0),
    Severity(name="critical", name_ko="치명", min_size_px=150, min_size_mm=5.0),
]


def _mask(stem: str) -> np.ndarray:
    return cv2.imread(str(TILE / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) > 127


def _components(mask: np.ndarray) -> list[tuple[tuple[int, int, int, int], int, tuple[float, float]]]:
    """(box x, y, w, h), area, centroid (x, y) in the continuous frame of each 8-connected component (OpenCV)."""
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [
        (tuple(int(v) for v in stats[k, :4]), int(stats[k, 4]), (centroids[k, 0] + 0.5, centroids[k, 1] + 0.5))
        for k in range(1, count)
    ]


def _expected_cell(centroid: tuple[float, float], shape: tuple[int, int]) -> str:
    x, y = centroid
    height, width = shape
    row = ["upper", "middle", "lower"][min(2, math.floor(y / (height / 3)))]
    column = ["left", "centre", "right"][min(2, math.floor(x / (width / 3)))]
    return "centre" if (row, column) == ("middle", "centre") else f"{row} {column}"


def _expected_clock(centroid: tuple[float, float], shape: tuple[int, int]) -> int:
    """Compass bearing from the image centre (north = up, east = right), 30 degrees an hour; 0 near the centre."""
    x, y = centroid
    height, width = shape
    east, north = x - width / 2, height / 2 - y
    if math.hypot(east, north) < 0.1 * min(height, width):
        return 0
    bearing = (90.0 - math.degrees(math.atan2(north, east))) % 360.0
    hour = int((bearing + 15.0) // 30.0) % 12
    return hour or 12


def _single_component_masks() -> list[str]:
    stems = []
    for path in sorted(TILE.glob("MT_*/Imgs/*.png")):
        if path.parts[-3] == "MT_Free":
            continue
        stem = f"{path.parts[-3]}/Imgs/{path.stem}"
        if len(_components(_mask(stem))) == 1:
            stems.append(stem)
    return stems


@needs_tile
@pytest.mark.parametrize(
    ("stem", "cell", "clock"),
    [
        (CRACK, "upper right", 1),
        (FRAY, "lower right", 4),
        (BREAK_TOP, "upper left", 10),
        (BREAK_LEFT, "middle left", 9),
    ],
)
def test_hand_picked_defects_have_their_cell_and_clock(stem: str, cell: str, clock: int) -> None:
    mask = _mask(stem)
    (region,) = regions_from_map(mask.astype(np.float32), settings=RegionParams())
    facts = region_facts(region, mask.shape, pixel_pitch_mm=None, settings=DESCRIBE)
    assert (facts.cell, facts.clock) == (cell, clock)


@needs_tile
def test_every_single_defect_mask_gives_its_box_area_cell_clock_and_outline() -> None:
    stems = _single_component_masks()
    assert len(stems) > 250  # the data set has ~300 such masks: the walk found them
    holes = 0
    for stem in stems:
        mask = _mask(stem)
        ((box, area, centroid),) = _components(mask)
        regions = regions_from_map(mask.astype(np.float32), settings=RegionParams(min_area_px=1))
        assert len(regions) == 1, stem
        region = regions[0]
        facts = region_facts(region, mask.shape, pixel_pitch_mm=None, settings=DESCRIBE)
        item = region_json(region, facts)
        assert (item["x"], item["y"], item["w"], item["h"]) == box, stem
        assert item["area"] == area and item["size_px"] == [box[2], box[3]], stem
        assert item["cell"] == _expected_cell(centroid, mask.shape), stem
        assert item["clock"] == _expected_clock(centroid, mask.shape), stem
        # the outline rasterised by COCO's own tool gives the mask back, holes filled (COCO polygons have none)
        rles = coco_mask.frPyObjects(item["polygons"], *mask.shape)
        drawn = coco_mask.decode(coco_mask.merge(rles)).astype(bool)
        assert (drawn == ndimage.binary_fill_holes(mask)).all(), stem
        holes += int((drawn & ~mask).any())
    assert holes > 0  # some masks have holes: the filled comparison above was needed and checked


@needs_tile
def test_sizes_in_pixels_and_millimetres_in_the_sentences() -> None:
    mask = _mask(CRACK)
    regions = regions_from_map(mask.astype(np.float32), settings=RegionParams())
    en, ko, items = describe_image(
        regions, mask.shape, **_scores(), pixel_pitch_mm=0.1, settings=DESCRIBE, glossary={}, severities=[]
    )
    # box x 343..363, y 0..103 -> 21 x 104 px -> 2.1 x 10.4 mm at 0.1 mm per pixel
    assert items[0]["size_px"] == [21, 104] and items[0]["size_mm"] == [2.1, 10.4]
    assert en == (
        "1 suspect region(s), anomaly score 3.20: Vertical linear defect in the upper right (about 1 o'clock), "
        "about 2.1 x 10.4 mm (21 x 104 px)"
    )
    assert (
        ko
        == "의심 영역 1곳, 이상 점수 3.20: 우측 상단(약 1시 방향)에 2.1 x 10.4 mm (21 x 104 px) 크기의 세로 선형 결함"
    )
    en_px, _, items_px = describe_image(
        regions, mask.shape, **_scores(), pixel_pitch_mm=None, settings=DESCRIBE, glossary={}, severities=[]
    )
    assert items_px[0]["size_mm"] is None and en_px.endswith("about 21 x 104 px")


@needs_tile
def test_korean_uses_the_glossary_and_its_overrides() -> None:
    mask = _mask(FRAY)
    regions = regions_from_map(mask.astype(np.float32), settings=RegionParams())
    _, ko, _ = describe_image(
        regions, mask.shape, **_scores(), pixel_pitch_mm=None, settings=DESCRIBE, glossary={}, severities=[]
    )
    assert "우측 하단(약 4시 방향)" in ko and "점형 결함" in ko
    override = {"lower right": "오른쪽 아래", "spot": "점"}
    _, ko, _ = describe_image(
        regions, mask.shape, **_scores(), pixel_pitch_mm=None, settings=DESCRIBE, glossary=override, severities=[]
    )
    assert "오른쪽 아래(약 4시 방향)" in ko and "점 결함" in ko and "우측 하단" not in ko
    # every English word a sentence can use has a Korean entry
    cells = {f"{r} {c}" for r in ("upper", "middle", "lower") for c in ("left", "centre", "right")} - {"middle centre"}
    assert cells | {"centre", "at the centre", "linear", "spot", "area", "horizontal", "vertical", "diagonal"} == set(
        REGION_GLOSSARY
    )


@needs_tile
def test_blurred_map_still_finds_the_defect() -> None:
    for stem in (CRACK, FRAY, BREAK_TOP, BREAK_LEFT):
        mask = _mask(stem)
        blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=4)
        share = mask.mean()
        regions = regions_from_map(blurred, settings=RegionParams(percentile=100 * (1 - share)))
        ((box, _, centroid),) = _components(mask)
        best = region_json(regions[0], region_facts(regions[0], mask.shape, pixel_pitch_mm=None, settings=DESCRIBE))
        assert best["cell"] == _expected_cell(centroid, mask.shape), stem
        assert best["clock"] == _expected_clock(centroid, mask.shape), stem
        assert _iou((best["x"], best["y"], best["w"], best["h"]), box) > 0.5, stem
        assert best["score"] == pytest.approx(float(blurred.max()), abs=1e-4)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = max(0, min(ax + aw, bx + bw) - max(ax, bx)) * max(0, min(ay + ah, by + bh) - max(ay, by))
    return inter / (aw * ah + bw * bh - inter)


@needs_tile
def test_several_components_best_first_and_bounded() -> None:
    mask = _mask("MT_Break/Imgs/exp1_num_194173")  # two breaks: top left (12 x 19) and bottom right (46 x 41)
    expected = sorted(_components(mask), key=lambda c: -c[1])
    regions = regions_from_map(mask.astype(np.float32), settings=ALL)
    assert [r.box for r in regions] == [c[0] for c in expected]  # equal scores: the larger first
    assert len(regions_from_map(mask.astype(np.float32), settings=RegionParams(max_regions=1))) == 1
    small = expected[1][1]
    assert len(regions_from_map(mask.astype(np.float32), settings=RegionParams(min_area_px=small + 1))) == 1
    # graded map: the component with the higher maximum comes first whatever its size
    graded = mask.astype(np.float32)
    graded[expected[1][0][1] : expected[1][0][1] + 2, expected[1][0][0] :] *= 2.0
    assert regions_from_map(graded, settings=ALL)[0].box == expected[1][0]


def test_large_saturated_region_and_flat_maps() -> None:
    image = np.zeros((100, 200), np.float32)
    image[10:60, 20:120] = 1.0  # 25% of the image at the maximum: above any top percentile
    (region,) = regions_from_map(image, settings=RegionParams())
    assert region.box == (20, 10, 100, 50) and region.area == 5000
    assert regions_from_map(np.full((50, 50), 0.7, np.float32), settings=RegionParams()) == []
    with pytest.raises(ValueError, match="finite"):
        regions_from_map(np.full((5, 5), np.nan), settings=RegionParams())


@pytest.mark.parametrize(
    ("draw", "shape", "orientation"),
    [
        (lambda c: cv2.line(c, (40, 100), (260, 110), 1, 3), "linear", "horizontal"),
        (lambda c: cv2.line(c, (150, 20), (140, 180), 1, 2), "linear", "vertical"),
        (lambda c: cv2.line(c, (40, 30), (200, 170), 1, 2), "linear", "diagonal"),
        (lambda c: cv2.circle(c, (80, 60), 6, 1, -1), "spot", None),
        (lambda c: cv2.circle(c, (150, 100), 50, 1, -1), "area", None),
        (lambda c: cv2.rectangle(c, (50, 50), (90, 130), 1, -1), "area", "vertical"),  # 41 x 81: not 3:1
    ],
)
def test_drawn_shapes(draw, shape: str, orientation: str | None) -> None:
    canvas = np.zeros((200, 300), np.uint8)
    draw(canvas)
    (region,) = regions_from_map(canvas.astype(np.float32), settings=RegionParams())
    facts = region_facts(region, canvas.shape, pixel_pitch_mm=None, settings=DESCRIBE)
    assert facts.shape == shape
    if orientation is not None:
        assert facts.orientation == orientation


def test_length_and_severity_suggestion() -> None:
    canvas = np.zeros((200, 300), np.uint8)
    canvas[100:103, 50:150] = 1  # 100 x 3 px: 100.04 px between the far corners
    (region,) = regions_from_map(canvas.astype(np.float32), settings=RegionParams())
    assert region.length == pytest.approx(math.hypot(100, 3))

    def suggested(pitch: float | None, severities: list[Severity]) -> str | None:
        return region_facts(
            region, canvas.shape, pixel_pitch_mm=pitch, settings=DESCRIBE, severities=severities
        ).severity

    assert suggested(None, SEVERITIES) == "major"  # 100 px: >= 50 (major), < 150 (critical)
    assert suggested(0.01, SEVERITIES) == "minor"  # 1.0 mm: >= 0.5, < 2
    assert suggested(0.06, SEVERITIES) == "critical"  # 6.0 mm
    assert suggested(0.001, SEVERITIES) is None  # 0.1 mm: below every threshold
    mm_only = [Severity(name="minor", min_size_mm=0.5), Severity(name="major", min_size_mm=2.0)]
    assert suggested(None, mm_only) is None  # no pitch, no pixel threshold
    px_only = [Severity(name="minor", min_size_px=0), Severity(name="major", min_size_px=500)]
    assert suggested(0.06, px_only) == "minor"  # pitch known, but only pixel thresholds: pixels are compared
    assert suggested(0.06, [Severity(name="minor"), Severity(name="major")]) is None


def test_image_description_carries_the_largest_regions_severity() -> None:
    canvas = np.zeros((200, 300), np.float32)
    canvas[20:23, 30:230] = 1.0  # 200 px long: critical by pixels
    canvas[150:160, 250:260] = 2.0  # 10 x 10 px, higher score: listed first, minor
    regions = regions_from_map(canvas, settings=RegionParams())
    en, ko, items = describe_image(
        regions, canvas.shape, **_scores(), pixel_pitch_mm=None, settings=DESCRIBE, glossary={}, severities=SEVERITIES
    )
    assert [i["severity"] for i in items] == ["minor", "critical"]
    assert en.startswith("2 suspect region(s)") and en.endswith(". Suggested severity: critical")
    assert ko.endswith(". 권장 심각도: 치명")
    assert set(items[0]) == {
        *("x", "y", "w", "h", "score", "area", "polygons", "cell", "clock", "shape", "orientation"),
        *("size_px", "size_mm", "severity"),
    }
    json.dumps(items)  # JSON-ready: plain ints, floats, strings, lists


def test_ok_images_and_defects_without_a_region() -> None:
    en, ko, items = describe_image(
        [], (10, 10), score=0.4, threshold=1.5, is_defect=False, pixel_pitch_mm=None, settings=DESCRIBE, glossary={},
        severities=SEVERITIES,
    )  # fmt: skip
    assert (en, ko, items) == ("No anomaly found (score 0.40, threshold 1.50)", "이상 없음 (점수 0.40, 기준 1.50)", [])
    en, ko, items = describe_image(
        [], (10, 10), **_scores(), pixel_pitch_mm=None, settings=DESCRIBE, glossary={}, severities=SEVERITIES
    )
    assert items == [] and "no compact region" in en and "뚜렷한 영역 없음" in ko


def test_pixel_pitch_from_the_param_the_column_or_a_value() -> None:
    by_column = AnomalyDescriptionParams(pixel_pitch_mm=0.2, pixel_pitch_column="Pixel Pitch")
    row = {"rel_path": "line1/a.png", "meta_pixel_pitch": " 0.05 "}
    assert pixel_pitch(row, by_column) == 0.05
    assert pixel_pitch(pd.Series(row), by_column) == 0.05
    assert pixel_pitch({**row, "meta_pixel_pitch": ""}, by_column) == 0.2  # empty cell: the param
    assert pixel_pitch({**row, "meta_pixel_pitch": float("nan")}, by_column) == 0.2
    assert pixel_pitch(row, AnomalyDescriptionParams(pixel_pitch_mm=0.2)) == 0.2  # no column named
    assert pixel_pitch(row, DESCRIBE) is None
    assert pixel_pitch("0.125", by_column) == 0.125 and pixel_pitch(None, by_column) == 0.2
    as_in_manifest = AnomalyDescriptionParams(pixel_pitch_column="meta_pixel_pitch")
    assert pixel_pitch(row, as_in_manifest) == 0.05
    with pytest.raises(PixelPitchError, match=r"image c\.png: pixel pitch 'x' is not a positive number"):
        pixel_pitch("x", DESCRIBE, image="c.png")


@pytest.mark.parametrize("value", ["abc", "-0.1", "0", "inf", "0,05"])
def test_bad_pixel_pitch_is_one_clear_error(value: str) -> None:
    settings = AnomalyDescriptionParams(pixel_pitch_column="Pixel Pitch")
    with pytest.raises(PixelPitchError) as caught:
        pixel_pitch({"rel_path": "line1/a.png", "meta_pixel_pitch": value}, settings)
    message = str(caught.value)
    assert isinstance(caught.value, CurationError) and "\n" not in message
    assert "line1/a.png" in message and "'Pixel Pitch'" in message and repr(value) in message
    assert "not a positive number" in message and "millimetres per pixel" in message


def test_missing_pixel_pitch_column_names_the_fix() -> None:
    settings = AnomalyDescriptionParams(pixel_pitch_column="pitch_mm")
    with pytest.raises(
        PixelPitchError, match=r"image b\.png: the manifest has no column 'meta_pitch_mm'.*metadata CSV"
    ):
        pixel_pitch({"rel_path": "b.png", "meta_line": "1"}, settings)


@pytest.mark.parametrize(
    ("field", "template", "allowed"),
    [
        ("region_en", "{shape} at {where}", "'cell', 'clock'"),
        ("summary_ko", "{count}곳 {score:.2f} {regions} {extra}", "'count', 'regions'"),
        ("size_mm", "{w_mm:.1f} x {h_mm:.1f} {unit}", "'h_mm', 'w'"),
        ("ok_en", "OK {score:d}", "'score', 'threshold'"),  # a float with an integer format
        ("clock_ko", "{0}시", "'hour'"),
    ],
)
def test_template_errors_are_one_clear_message(field: str, template: str, allowed: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AnomalyDescriptionParams(**{field: template})
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert "does not format" in error["msg"] and allowed in error["msg"] and "\n" not in error["msg"]


def test_severity_thresholds_must_grow(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["ontology"]["severities"][0]["min_size_mm"] = 3.0
    raw["ontology"]["severities"][1]["min_size_mm"] = 2.0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(ParamsError) as caught:
        load_params(path)
    message = str(caught.value)
    assert "ontology.severities.1.min_size_mm" in message and "must grow" in message and "\n" not in message
    raw["ontology"]["severities"][1]["min_size_mm"] = 4.0
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    assert [s.min_size_mm for s in load_params(path).ontology.severities] == [3.0, 4.0, None]


@needs_tile
def test_regions_and_descriptions_are_deterministic() -> None:
    outputs = []
    for _ in range(2):
        run = []
        for stem in (CRACK, "MT_Break/Imgs/exp1_num_194173", "MT_Uneven/Imgs/exp1_num_109232"):
            mask = _mask(stem)
            blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=4)
            regions = regions_from_map(blurred, settings=RegionParams())
            en, ko, items = describe_image(
                regions, mask.shape, **_scores(), pixel_pitch_mm=0.05, settings=DESCRIBE, glossary={},
                severities=SEVERITIES,
            )  # fmt: skip
            run.append(json.dumps([en, ko, items], ensure_ascii=False))
        outputs.append(run)
    assert outputs[0] == outputs[1]
    assert all(json.loads(text)[2] for text in outputs[0])  # each image gave regions


def _scores() -> dict[str, object]:
    return {"score": 3.2, "threshold": 1.5, "is_defect": True}
