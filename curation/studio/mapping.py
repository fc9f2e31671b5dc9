"""Label Studio results <-> our values, in one place: push and serve build predictions with it, simulate builds
annotations with it, pull and simulate read results with it.

One table (:data:`CONVERTERS`) maps a result type (``choices``, ``number``, ``textarea``, ``rectanglelabels``,
``polygonlabels``) to the pair of functions that write and read its ``value``; :data:`CONTROLS` says which type each
control of the labeling interface (:mod:`curation.studio.config`) has. Shapes are in percent of the image in Label
Studio and in pixels of the original image here; :func:`convert` is the one place that changes between the two.
(The layout follows FiftyOne's ``fiftyone/utils/labelstudio.py``; its converters produce FiftyOne labels, not our
records, so it is a model, not a dependency.)

Our values, by control: ``label`` and ``severity`` a string, ``confidence`` a number (percent), ``description`` a
string (several lines joined with newlines), ``boxes`` and ``polygons`` a region in pixels of the original image:
``{"x", "y", "w", "h", "label"}``, and for a polygon also ``segmentation`` (one flat ``[x1, y1, x2, y2, ...]``
polygon) and ``area`` (pixels inside it, as pycocotools counts them).

Anomaly pre-labels (``predictions.parquet`` rows of ``source`` "anomaly", label :data:`schemas.records.ANY_DEFECT`
= "defect, type not chosen yet"): :func:`to_prediction` pre-selects no class for them (the reviewer picks the
type; an image called OK pre-selects the OK class like any class) and, with ``labelstudio.boxes``, turns the
row's ``regions`` into one shape each (:func:`region_results`). A region of a "defect" row carries no label:
Label Studio draws it in the colour of the box tags' empty "suspect" label (:mod:`curation.studio.config`),
listed with its score, and a reviewer can move, resize, delete it or give it a class from the box labels; an
annotation saved with it keeps it without a label, as does a shape the reviewer draws with the "suspect" label.
:func:`label_regions` gives such regions the annotation's class when they are read back (and leaves them out when
that class is an OK class: false alarms), so every pulled region carries an ontology class (the class choice is
required and offers only ontology classes). The "suspect" label has no value (Label Studio's empty label,
``allowEmpty``): a label with a value would reach pull as a label outside the ontology, and once used could never
be removed from the labeling config again (Label Studio refuses a config that drops a label annotations use);
shapes with the empty label are saved with no label at all (tested in a browser: a box drawn with it is pulled
with the image's class).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from curation.ontology import is_ok_label
from curation.studio.config import BOXES, CONFIDENCE, DESCRIPTION, IMAGE, LABEL, POLYGONS, SEVERITY
from schemas.records import ANY_DEFECT

PRIOR_VERSION = "prior-labels"  # model version of a prediction that holds only imported shapes
REGIONS = "regions"  # from_results' key for the boxes and polygons, in result order

Size = tuple[float, float]  # (width, height) of the original image, pixels


def convert(pairs: Iterable[Sequence[float]], size: Size, *, to: Literal["percent", "pixels"]) -> list[list[float]]:
    """``(x, y)`` pairs (points, or a box's width and height) between pixels of an image of ``size`` and Label
    Studio's percent of it: percent to 4 decimals, pixels to 2."""
    width, height = size
    if to == "percent":
        return [[round(x * 100 / width, 4), round(y * 100 / height, 4)] for x, y in pairs]
    return [[round(x * width / 100, 2), round(y * height / 100, 2)] for x, y in pairs]


def _box_value(region: Mapping[str, Any], size: Size) -> dict[str, Any]:
    (x, y), (w, h) = convert([(region["x"], region["y"]), (region["w"], region["h"])], size, to="percent")
    return {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": _labels(region)}


def _box_region(value: Mapping[str, Any], size: Size) -> dict[str, Any]:
    (x, y), (w, h) = convert([(value["x"], value["y"]), (value["width"], value["height"])], size, to="pixels")
    labels = value.get("rectanglelabels") or [None]
    return {"x": x, "y": y, "w": w, "h": h, "label": labels[0]}


def _polygon_value(region: Mapping[str, Any], size: Size) -> dict[str, Any]:
    (flat,) = region["segmentation"]
    points = convert(zip(flat[0::2], flat[1::2], strict=True), size, to="percent")
    return {"points": points, "closed": True, "polygonlabels": _labels(region)}


def _labels(region: Mapping[str, Any]) -> list[str]:
    """A region's label list: empty for a region without a class (an anomaly region of a "defect" row)."""
    return [region["label"]] if region.get("label") else []


def _polygon_region(value: Mapping[str, Any], size: Size) -> dict[str, Any]:
    from curation.shapes import polygons_area, polygons_box

    width, height = size
    polygon = [v for point in convert(value["points"], size, to="pixels") for v in point]
    x, y, w, h = polygons_box([polygon])
    labels = value.get("polygonlabels") or [None]
    region = {"x": x, "y": y, "w": round(w, 2), "h": round(h, 2), "label": labels[0]}
    if len(polygon) >= 6:  # fewer than 3 points outline nothing: the region keeps its box only
        region["segmentation"] = [polygon]
        region["area"] = polygons_area([polygon], int(height), int(width)) if width and height else None
    return region


@dataclass(frozen=True)
class Converter:
    """How one result type's ``value`` is written from our value and read back (``None``: the value is empty)."""

    write: Callable[[Any, Size], dict[str, Any]]
    read: Callable[[Mapping[str, Any], Size], Any]
    shape: bool = False  # the result is measured against the image (original_width / original_height)


def _first_choice(value: Mapping[str, Any], size: Size) -> str | None:
    return value["choices"][0] if value.get("choices") else None


def _lines(value: Mapping[str, Any], size: Size) -> str | None:
    return "\n".join(str(t) for t in value["text"]) if value.get("text") else None


CONVERTERS: dict[str, Converter] = {
    "choices": Converter(lambda v, size: {"choices": [v]}, _first_choice),
    "number": Converter(lambda v, size: {"number": v}, lambda value, size: value.get("number")),
    "textarea": Converter(lambda v, size: {"text": [v]}, _lines),
    "rectanglelabels": Converter(_box_value, _box_region, shape=True),
    "polygonlabels": Converter(_polygon_value, _polygon_region, shape=True),
}
CONTROLS: dict[str, str] = {  # control name -> result type, as label_config declares them
    LABEL: "choices",
    SEVERITY: "choices",
    CONFIDENCE: "number",
    DESCRIPTION: "textarea",
    BOXES: "rectanglelabels",
    POLYGONS: "polygonlabels",
}


def to_label_studio(name: str, value: Any, *, size: Size | None = None) -> dict[str, Any]:
    """One Label Studio result for control ``name`` holding our ``value``.

    Args:
        size: (width, height) of the original image; needed for ``boxes`` and ``polygons``, whose regions are in
            its pixels.
    """
    kind = CONTROLS[name]
    converter = CONVERTERS[kind]
    result: dict[str, Any] = {"from_name": name, "to_name": IMAGE, "type": kind}
    if converter.shape:
        if size is None:
            raise ValueError(f"a {kind} result needs the image size")
        width, height = size
        result |= {"original_width": int(width), "original_height": int(height), "image_rotation": 0}
    result["value"] = converter.write(value, size or (0, 0))
    return result


def from_label_studio(item: Mapping[str, Any], *, size: Size | None = None) -> tuple[str, Any] | None:
    """``(control name, our value)`` of one result; ``None`` for a control we do not know, a result whose type is
    not its control's, or an empty value.

    Args:
        size: (width, height) of the original image when the UI showed a preview of another size; else the
            result's ``original_width`` / ``original_height`` (the size of the image drawn on) are used. Percent
            coordinates hold for any size of the image.
    """
    name = item.get("from_name")
    kind = CONTROLS.get(str(name))
    if kind is None or item.get("type", kind) != kind:
        return None
    if size is None:
        size = (float(item.get("original_width") or 0), float(item.get("original_height") or 0))
    value = CONVERTERS[kind].read(item.get("value") or {}, (float(size[0]), float(size[1])))
    return None if value is None else (str(name), value)


def from_results(result: Iterable[Mapping[str, Any]], *, size: Size | None = None) -> dict[str, Any]:
    """Our values from one annotation's or prediction's result list: the last non-empty value per control, and
    under :data:`REGIONS` every box and polygon region in result order."""
    out: dict[str, Any] = {REGIONS: []}
    for item in result:
        read = from_label_studio(item, size=size)
        if read is None:
            continue
        name, value = read
        if CONVERTERS[CONTROLS[name]].shape:
            out[REGIONS].append(value)
        else:
            out[name] = value
    return out


def to_prediction(
    row: Mapping[str, Any], language: str, *, size: Size | None = None, shapes: bool = False
) -> dict[str, Any]:
    """The model's pre-annotation of one predictions row: class (none for :data:`ANY_DEFECT`), confidence
    (percent of the label's probability), the severity when the predictions carry one (a ``severity`` column;
    none is invented), the description and, with ``shapes``, the row's anomaly regions (:func:`region_results`).

    Args:
        size: (width, height) of the stored image, which the regions' pixels refer to; needed with ``shapes``
            when the row has regions.
        shapes: the labeling config has the box and polygon controls (``labelstudio.boxes``).

    Raises:
        ValueError: the row's ``regions`` is not a JSON list of regions.
    """
    result = [] if row["label"] == ANY_DEFECT else [to_label_studio(LABEL, row["label"])]
    result.append(to_label_studio(CONFIDENCE, round(100 * row["score"])))
    severity = _text(row.get("severity"))
    if severity:
        result.append(to_label_studio(SEVERITY, severity))
    text = describe(row, language)
    if text:
        result.append(to_label_studio(DESCRIPTION, text))
    regions = _text(row.get("regions"))
    if shapes and regions:
        if size is None:
            raise ValueError("regions need the image size")
        typed = row["label"] != ANY_DEFECT and not is_ok_label(str(row["label"]))  # an OK box would be no class
        label = str(row["label"]) if typed else None
        result += region_results(json.loads(regions), size, label=label)
    return {
        "model_version": prediction_title(str(row["model_version"]), source=_text(row.get("source"))),
        "score": float(row["score"]),
        "result": result,
    }


def prediction_title(model_version: str, *, source: str = "") -> str:
    """The name Label Studio shows on a prediction's tab (its ``model_version``): kind, short model name and a tag.

    ``openai/clip-vit-base-patch32@<revision>+<hash>`` -> ``zero-shot clip-vit-base-patch32 #1f0c2a9e``,
    ``efficientnet-lite0@...+fewshot-<hash>`` -> ``few-shot efficientnet-lite0 #2a40153d``. Label Studio also picks
    the prediction that pre-fills the editor by this name (the project's model version), so it is one name per
    model version, not per image: the class is the pre-selected choice, the confidence its own control, and Label
    Studio prints the score beside the title. The tag (first 8 hex digits of the full version's SHA-256) keeps
    versions apart; predictions.parquet keeps the full version. Rows of ``source`` "anomaly" (no class scorer
    ran) are titled ``anomaly <model> #<tag>``.
    """
    if model_version == PRIOR_VERSION:
        return model_version
    model = model_version.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "model"
    if "+fewshot-" in model_version:
        kind = "few-shot"
    elif source == "anomaly" or "+anomaly-" in model_version:
        kind = "anomaly"
    else:
        kind = "zero-shot"
    tag = hashlib.sha256(model_version.encode("utf-8")).hexdigest()[:8]
    return f"{kind} {model} #{tag}"


def describe(row: Mapping[str, Any], language: str) -> str:
    """The pre-filled description: English (description_en, else the caption), Korean, or both on two lines."""
    english = _text(row.get("description_en")) or _text(row.get("caption"))
    korean = _text(row.get("description_ko"))
    parts = {"en": [english], "ko": [korean], "both": [english, korean]}[language]
    return "\n".join(p for p in parts if p)


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def region_results(regions: Any, size: Size, *, label: str | None) -> list[dict[str, Any]]:
    """Label Studio results for anomaly regions (the ``regions`` JSON of a predictions row, pixels of the stored
    image of ``size``), each with its ``score``: one shape per region, so a pulled annotation counts each defect
    once (export turns every region into one COCO object). A region with polygons becomes its polygon(s) (pull
    reads a polygon back as its box plus the outline, so nothing of the box is lost); one without becomes a
    rectangle.

    Args:
        label: The shapes' label (the row's defect class), or None for a "defect, type not chosen yet" row (or a
            row whose class is an OK class while the anomaly model still found regions).

    Raises:
        ValueError: ``regions`` is not a list of objects with numeric x, y, w, h (and score).
    """
    if not isinstance(regions, list):
        raise ValueError(f"regions must be a JSON list, not {type(regions).__name__}")
    out = []
    for number, region in enumerate(regions, start=1):
        try:
            box = {k: float(region[k]) for k in ("x", "y", "w", "h")}
            score = round(float(region.get("score", 0.0)), 4)
            polygons = [[float(v) for v in p] for p in region.get("polygons") or [] if len(p) >= 6]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"region {number} is not an object with numeric x, y, w, h, score ({err})") from None
        shapes = [to_label_studio(POLYGONS, {"segmentation": [p], "label": label}, size=size) for p in polygons]
        out += [
            {**shape, "score": score}
            for shape in shapes or [to_label_studio(BOXES, {**box, "label": label}, size=size)]
        ]
    return out


def label_regions(regions: Sequence[Mapping[str, Any]], label: str | None) -> tuple[list[dict[str, Any]], int]:
    """Regions read back from an annotation, those without a label (a pre-annotated anomaly region the reviewer
    kept without choosing a box label) given the annotation's class ``label``, and how many unlabeled regions were
    left out because ``label`` is an OK class (:func:`curation.ontology.is_ok_label`): the reviewer called the
    image OK, so the model's suspect regions were false alarms, and an "ok" box would teach nothing."""
    if label is not None and is_ok_label(label):
        kept = [dict(r) for r in regions if r.get("label")]
        return kept, len(regions) - len(kept)
    return [dict(r) if r.get("label") else {**r, "label": label} for r in regions], 0
