"""Preview grid: one row per source image, the original first and then its variants, boxes and outlines drawn in;
each variant is captioned with the transforms that fired on it (and the angle or scale they drew)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from augment.run import load_pixels
from curation.io import atomic_path
from schemas.records import Box

TILE = 160  # pixels, the longer side of each thumbnail
_GAP = 4
_LINE = 12
_CAPTION = 2 * _LINE + 2  # two lines: a variant's transforms wrap
_SHORT = {
    "HorizontalFlip": "h-flip",
    "VerticalFlip": "v-flip",
    "RandomBrightnessContrast": "bright/contrast",
    "GaussNoise": "noise",
    "GaussianBlur": "blur",
}
_BOX_COLOUR = (255, 40, 40)
_SHAPE_COLOUR = (40, 220, 255)


def preview_grid(
    rows: Sequence[tuple[str, str, Sequence[Box], Sequence[tuple[str, Sequence[Box], str]]]],
) -> Image.Image:
    """Tile originals and variants into one RGB image.

    Args:
        rows: ``(title, original path, original boxes, [(variant path, variant boxes, caption), ...])``
            per source; the title (e.g. class and image id) captions the original, a variant's caption (from
            :func:`describe_applied`) names its transforms.
    """
    width = max((1 + len(variants) for *_, variants in rows), default=1)
    grid = Image.new("RGB", (width * (TILE + _GAP) + _GAP, len(rows) * (TILE + _CAPTION + _GAP) + _GAP), "white")
    draw = ImageDraw.Draw(grid)
    for r, (title, path, boxes, variants) in enumerate(rows):
        cells = [(path, boxes, title), *variants]
        for c, (cell_path, cell_boxes, caption) in enumerate(cells):
            left = _GAP + c * (TILE + _GAP)
            top = _GAP + r * (TILE + _CAPTION + _GAP)
            grid.paste(_thumbnail(cell_path, cell_boxes), (left, top + _CAPTION))
            for line, text in enumerate(_wrap(draw, caption, TILE)[:2]):
                draw.text((left, top + line * _LINE), text, fill=(0, 0, 0))
    return grid


def describe_applied(applied: str | None) -> str:
    """A short caption from a variant's ``applied`` JSON (``[[name, params], ...]``): ``"h-flip, rot180,
    affine -7° x0.96, noise"``; ``"no transform"`` when none fired."""
    parts = []
    for name, params in json.loads(applied) if applied else []:
        if name == "RandomRotate90":
            if int(params.get("factor", 0)):  # a quarter-turn factor of 0 fired but changed nothing
                parts.append(f"rot{90 * int(params['factor'])}")
        elif name in ("Affine", "Rotate", "SafeRotate", "ShiftScaleRotate") and "rotate" in params:
            scale = params.get("scale")
            factor = (scale["x"] + scale["y"]) / 2 if isinstance(scale, dict) else None
            parts.append(f"{name.lower()} {round(params['rotate']):+d}°" + (f" x{factor:.2f}" if factor else ""))
        else:
            parts.append(_SHORT.get(name, name))
    return ", ".join(parts) or "no transform"


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """``text`` cut at ", " into lines at most ``width`` pixels wide (a single long part stays whole)."""
    lines: list[str] = []
    for part in text.split(", "):
        joined = f"{lines[-1]}, {part}" if lines else part
        if lines and draw.textlength(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(part)
    return lines


def _thumbnail(path: str, boxes: Sequence[Box]) -> Image.Image:
    image = Image.fromarray(load_pixels(path)).convert("RGB")
    scale = TILE / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(image)
    for box in boxes:
        x, y, w, h = (np.array([box.x, box.y, box.w, box.h]) * scale).tolist()
        draw.rectangle([x, y, x + w, y + h], outline=_BOX_COLOUR, width=2)
        for polygon in box.segmentation or []:
            draw.polygon((np.asarray(polygon) * scale).tolist(), outline=_SHAPE_COLOUR, width=1)
    tile = Image.new("RGB", (TILE, TILE), (230, 230, 230))
    tile.paste(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return tile


def save_png(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
