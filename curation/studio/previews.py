"""Browser-drawable previews of the images a browser cannot show, for the Label Studio UI.

Chromium (and so the labeling UI) draws JPEG, PNG, GIF, WEBP, BMP and ICO, but not TIFF, and it shows 16-bit or
float greyscale as a dark, clipped picture and CMYK without colour management. Such images, and any whose longest
side is over ``labelstudio.preview_max_side`` (slow to load and to zoom), get a PNG preview: 8-bit, high-bit-depth
greyscale stretched over its own range (:func:`curation.imaging.stretch_to_8bit`), at most ``preview_max_side``
pixels on its longest side, in the stored orientation (the one prior boxes and polygons are measured in).

Previews are made once and cached by content: ``<preview_dir>/<sha256[:2]>/<sha256>-<max_side>.png``, so a rerun,
a second project or a renamed file reuses them. The originals are never touched; only the task's ``image`` URL
points at the preview, and export still copies the originals. Shapes stay right on a smaller preview because
Label Studio keeps them in percent of the image; pull scales drawn shapes back with the task's ``original_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from curation.errors import InputError
from curation.imaging import HIGH_DEPTH_MODES, stretch_to_8bit
from curation.io import atomic_path

BROWSER_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "ICO"})  # what Chromium draws
BROWSER_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})  # the pixel layouts it shows as they are
PREVIEW_COLUMNS = ("image_id", "sha256", "path", "width", "height", "mode", "format")


def preview_reason(fmt: str, mode: str, width: int, height: int, max_side: int) -> str | None:
    """Why an image needs a preview (``"TIFF"``, ``"mode I;16"``, ``"5000 px"``), or None when the browser shows
    it as it is."""
    if fmt not in BROWSER_FORMATS:
        return str(fmt)
    if mode not in BROWSER_MODES:
        return f"mode {mode}"
    if max(int(width), int(height)) > max_side:
        return f"{max(int(width), int(height))} px"
    return None


def preview_path(preview_dir: Path, sha256: str, max_side: int) -> Path:
    """Where the preview of the image with content hash ``sha256`` lives."""
    return Path(preview_dir) / sha256[:2] / f"{sha256}-{max_side}.png"


def render_preview(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` as 8-bit ``L``, ``RGB`` or ``RGBA`` with its longest side at most ``max_side`` pixels."""
    if image.mode in HIGH_DEPTH_MODES:
        image = stretch_to_8bit(image)
    elif image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def make_previews(
    manifest: pd.DataFrame,
    preview_dir: Path,
    *,
    max_side: int,
    manifest_name: str = "manifest",
    on_image: Callable[[], None] | None = None,
) -> dict[str, Path]:
    """image_id -> preview for every manifest image that needs one (:func:`preview_reason`), making the missing
    ones. Each is written to a temporary file and renamed, so an interrupted run leaves no half-written preview.

    Raises:
        InputError: the manifest lacks a column, or an image cannot be read (the message names it).
    """
    missing = [c for c in PREVIEW_COLUMNS if c not in manifest.columns]
    if missing:
        raise InputError(f"{manifest_name}: missing column(s) {missing}; re-run `curation ingest`")
    out: dict[str, Path] = {}
    for row in manifest.to_dict("records"):
        if preview_reason(row["format"], row["mode"], row["width"], row["height"], max_side) is None:
            continue
        target = preview_path(preview_dir, row["sha256"], max_side)
        if not target.exists():
            _write(Path(row["path"]), target, max_side, manifest_name)
        out[row["image_id"]] = target
        if on_image:
            on_image()
    return out


def _write(source: Path, target: Path, max_side: int, manifest_name: str) -> None:
    try:
        with Image.open(source) as image:
            image.seek(0)  # a multi-page TIFF: its first page, as ingest measured it
            image.load()  # the pixels, before the file closes (render_preview may return the image itself)
            preview = render_preview(image, max_side)
    except (OSError, ValueError) as err:
        raise InputError(
            f"{manifest_name}: image {source} cannot be read for a preview ({err}); restore the file or re-run "
            "`curation ingest`"
        ) from None
    with atomic_path(target) as temporary:
        preview.save(temporary, format="PNG", optimize=False)
