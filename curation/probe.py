"""Inspect one file: read it once, hash it, decode it fully, or say exactly why it cannot be used.

``probe_file`` never raises for a bad file: every failure becomes a quarantine reason. It runs in worker
processes, so it takes and returns plain picklable values.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image, UnidentifiedImageError

from curation.imaging import HIGH_DEPTH_MODES, stretch_to_8bit, upright
from curation.masks import binary_like
from curation.neardup import THUMB_SIDE

EXIF_ORIENTATION_TAG = 0x0112
_HASH_INPUT = 64


@dataclass(frozen=True)
class Probe:
    """What one file turned out to be. ``reason`` is None for a usable image."""

    rel_path: str
    size_bytes: int | None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    exif_orientation: int | None = None
    phash: str | None = None
    thumbnail: bytes | None = None
    """``THUMB_SIDE`` x ``THUMB_SIDE`` grey pixels of the upright image (row-major uint8): confirms near-duplicates."""
    reason: str | None = None
    detail: str = ""
    binary: bool = False
    """Whether the pixels look like a mask (:func:`curation.masks.binary_like`); decided where they are decoded."""


def probe_file(path: str, rel_path: str, max_pixels: int) -> Probe:
    """Read, hash and fully decode ``path``; classify any failure as a quarantine reason."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read forever
            return Probe(rel_path, None, reason="unreadable", detail="not a regular file (FIFO, socket or device)")
        data = Path(path).read_bytes()
    except OSError as err:
        reason = "symlink_loop" if err.errno == errno.ELOOP else "unreadable"
        return Probe(rel_path, None, reason=reason, detail=_one_line(err))
    if not data:
        return Probe(rel_path, 0, reason="empty", detail="the file has zero bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    base = Probe(rel_path, len(data), sha256=sha256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette/EXIF/bomb warnings: every real problem is classified below
        try:
            return _decode(base, data, max_pixels)
        except UnidentifiedImageError:
            return _fail(base, "not_an_image", "no image format recognised in the file's bytes")
        except Image.DecompressionBombError as err:
            return _fail(base, "too_large", _one_line(err))
        except Exception as err:  # a decoder can raise anything on hostile bytes: classify, never crash ingest
            text = _one_line(err)
            reason = "truncated" if "truncated" in text.lower() or isinstance(err, EOFError) else "corrupt"
            return _fail(base, reason, f"{type(err).__name__}: {text}")


def _decode(base: Probe, data: bytes, max_pixels: int) -> Probe:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width * height > max_pixels:
        return _fail(
            base,
            "too_large",
            f"{width}x{height} = {width * height:,} pixels exceeds ingest.max_pixels = {max_pixels:,}; "
            "raise it in params.yaml if the image is genuine",
        )
    image.load()  # full decode: a file that opens but cannot be decoded is quarantined, not ingested
    orientation = int(image.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    small = _for_hashing(image, orientation)
    return Probe(
        base.rel_path,
        base.size_bytes,
        sha256=base.sha256,
        width=width,
        height=height,
        mode=image.mode,
        format=image.format,
        exif_orientation=orientation,
        phash=str(imagehash.phash(small)),
        thumbnail=small.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX).tobytes(),
        binary=binary_like(image),
    )


def _for_hashing(image: Image.Image, orientation: int) -> Image.Image:
    """A small, upright, 8-bit greyscale copy: a rotated, 16-bit or resized copy hashes like the original.

    The image is first shrunk with a box filter to at most ~2x the hash's 32 px input, so hashing costs little
    next to decoding; imagehash then applies its own resize and DCT, and the thumbnail one more box resize.
    """
    if image.mode in HIGH_DEPTH_MODES:
        image = stretch_to_8bit(image)
    elif image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGBA" if image.mode in ("P", "PA", "LA") else "RGB")
    factor = min(image.size) // _HASH_INPUT
    if factor > 1:
        image = image.reduce(factor)
    return upright(image, orientation).convert("L")


def _fail(base: Probe, reason: str, detail: str) -> Probe:
    return Probe(base.rel_path, base.size_bytes, sha256=base.sha256, reason=reason, detail=detail)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__
