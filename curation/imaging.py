"""Pixel conventions shared by every stage that reads images: EXIF orientation and high-bit-depth greyscale."""

from __future__ import annotations

import numpy as np
from PIL import Image

# EXIF orientation -> the transpose that makes the image upright (the table ImageOps.exif_transpose uses).
# Stages take the tag from the manifest, so the file's EXIF block is parsed once, at ingest.
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned the way a person sees it, given its EXIF orientation tag (1 or unknown: unchanged)."""
    transpose = TRANSPOSE.get(int(orientation))
    return image if transpose is None else image.transpose(transpose)


def stretch_to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit or float greyscale image stretched to 8-bit ``L`` over its own range (not clipped at 255)."""
    values = np.asarray(image, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")
