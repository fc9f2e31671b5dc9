"""A hostile folder of raw images for ingest tests, with what ingest should do with each file.

``build_bad_corpus(root)`` writes the files and returns ``{rel_path: Expected}``. Every expectation was checked
against Pillow itself (``tests/test_corpus.py`` keeps checking it): decoder-level reasons are what
``Image.open(p).load()`` really does with this Pillow version. Deterministic (fixed seeds) and fast.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48
BOMB_SIDE = 50_000  # 2.5e9 pixels: above ingest.max_pixels (1e8) and above Pillow's own bomb limit

Outcome = Literal["ingested", "duplicate", "quarantined", "skipped"]


@dataclass(frozen=True)
class Expected:
    """What ingest should do with one file of the corpus.

    Args:
        outcome: ``ingested`` (a unique image), ``duplicate`` (byte-identical to ``duplicate_of``),
            ``quarantined`` (with ``reason``) or ``skipped`` (not an image extension, never opened).
        reason: A ``schemas.records.QuarantineReason`` when quarantined.
        mode: PIL mode as stored, when ingested.
        exif_orientation: EXIF orientation tag when ingested (1 = upright, also when absent).
        duplicate_of: rel_path of the canonical copy, when a duplicate. It sorts before the duplicate.
    """

    outcome: Outcome
    reason: str | None = None
    mode: str | None = None
    exif_orientation: int | None = None
    duplicate_of: str | None = None


def _ingested(mode: str, orientation: int = 1) -> Expected:
    return Expected("ingested", mode=mode, exif_orientation=orientation)


def _quarantined(reason: str) -> Expected:
    return Expected("quarantined", reason=reason)


def _pattern(seed: int, channels: int = 3) -> np.ndarray:
    """A coarse random block pattern plus fine noise: distinct seeds give far-apart perceptual hashes."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(HEIGHT // 8, WIDTH // 8, channels), dtype=np.uint8)
    blocks = np.kron(cells, np.ones((8, 8, 1), dtype=np.uint8)).astype(np.int16)
    noise = rng.integers(-12, 13, size=blocks.shape, dtype=np.int16)
    return np.clip(blocks + noise, 0, 255).astype(np.uint8)


def _rgb(seed: int) -> Image.Image:
    return Image.fromarray(_pattern(seed), mode="RGB")


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset of the chunk's length field, data length) of each PNG chunk."""
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        chunks.append((data[pos + 4 : pos + 8], pos, length))
        pos += 12 + length
    return chunks


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the IHDR of a PNG to claim ``width`` x ``height`` pixels, with a valid IHDR CRC."""
    ctype, pos, length = _png_chunks(data)[0]
    if ctype != b"IHDR":
        raise ValueError("a PNG starts with IHDR")
    body = struct.pack(">II", width, height) + data[pos + 16 : pos + 8 + length]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[:pos] + struct.pack(">I", length) + b"IHDR" + body + crc + data[pos + 12 + length :]


def _png_cut_in_idat(data: bytes) -> bytes:
    """The PNG's bytes up to the middle of its first IDAT chunk."""
    _, pos, length = next(chunk for chunk in _png_chunks(data) if chunk[0] == b"IDAT")
    return data[: pos + 8 + length // 2]


def _jpeg_corrupt_scan(data: bytes, seed: int, *, stray_marker: bytes = b"") -> bytes:
    """Overwrite the middle half of the JPEG's scan data with random bytes; length and EOI kept.

    The random bytes hold no 0xFF, so they are garbage Huffman codes but no markers; ``stray_marker`` (e.g. a
    second SOI, ``FF D8``) replaces two of them in the middle.
    """
    sos = data.index(b"\xff\xda")
    (header_length,) = struct.unpack(">H", data[sos + 2 : sos + 4])
    start, end = sos + 2 + header_length, len(data) - 2  # scan data, then FF D9
    if data[end:] != b"\xff\xd9":
        raise ValueError("a baseline JPEG from Pillow ends with EOI")
    lo, hi = start + (end - start) // 4, start + 3 * (end - start) // 4
    garbage = np.random.default_rng(seed).integers(0, 255, size=hi - lo, dtype=np.uint8).tobytes()
    mid = len(garbage) // 2
    garbage = garbage[:mid] + stray_marker + garbage[mid + len(stray_marker) :]
    return data[:lo] + garbage + data[hi:]


def _try_symlink(target: str, link: Path, *, directory: bool = False) -> bool:
    """Create ``link -> target``; False where the OS or user may not create symlinks."""
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(target, link, target_is_directory=directory)
    except (OSError, NotImplementedError):
        return False
    return True


def build_bad_corpus(root: Path) -> dict[str, Expected]:
    """Write the corpus under root; return {path relative to root (POSIX): Expected}.

    Args:
        root: An empty or missing folder; it is created.

    Returns:
        One entry per file or symlink written (symlinks are left out where the OS forbids them).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expected] = {}

    def add(rel: str, data: bytes, outcome: Expected) -> None:
        _write(root, rel, data)
        expected[rel] = outcome

    # Ordinary images under awkward names and folders.
    source_png = _encode(_rgb(1), "PNG")
    add("batch_a/noise blocks.png", source_png, _ingested("RGB"))
    add("batch_a/photo.jpg", _encode(_rgb(2), "JPEG", quality=90), _ingested("RGB"))
    add("batch_a/결함 이미지 01.png", _encode(_rgb(3), "PNG"), _ingested("RGB"))
    add("batch_a/UPPER.JPG", _encode(_rgb(4), "JPEG", quality=90), _ingested("RGB"))
    add("batch_a/line 2/cam3/deep.png", _encode(_rgb(5), "PNG"), _ingested("RGB"))

    # Every mode and container ingest must keep as stored.
    gray16 = _pattern(6, channels=1)[:, :, 0].astype(np.uint16) * 257
    add("modes/gray16.png", _encode(Image.fromarray(gray16), "PNG"), _ingested("I;16"))
    add("modes/cmyk.jpg", _encode(Image.fromarray(_pattern(7, channels=4), mode="CMYK"), "JPEG"), _ingested("CMYK"))
    palette = _rgb(8).quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    add("modes/palette_transparent.png", _encode(palette, "PNG", transparency=0), _ingested("P"))
    add("modes/rgba.png", _encode(Image.fromarray(_pattern(9, channels=4), mode="RGBA"), "PNG"), _ingested("RGBA"))
    gray = Image.fromarray(_pattern(10, channels=1)[:, :, 0], mode="L")
    add("modes/gray.bmp", _encode(gray, "BMP"), _ingested("L"))
    add("modes/rgb.tiff", _encode(_rgb(11), "TIFF"), _ingested("RGB"))
    add("modes/rgb.webp", _encode(_rgb(12), "WEBP", lossless=True), _ingested("RGB"))

    # Stored sideways: the pixels are landscape, the EXIF says rotate 90 degrees clockwise to view.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    add("exif/rotated.jpg", _encode(_rgb(13), "JPEG", quality=90, exif=exif), _ingested("RGB", orientation=6))

    # A byte-identical copy in another folder; its rel_path sorts after the source's.
    add("copies/noise blocks.png", source_png, Expected("duplicate", duplicate_of="batch_a/noise blocks.png"))

    # Files ingest must quarantine.
    add("bad/empty.jpg", b"", _quarantined("empty"))
    jpeg = _encode(_rgb(14), "JPEG", quality=90)
    add("bad/truncated.jpg", jpeg[: len(jpeg) // 2], _quarantined("truncated"))
    add("bad/truncated.png", _png_cut_in_idat(_encode(_rgb(15), "PNG")), _quarantined("truncated"))
    add("bad/text.png", "not a picture\n결함 메모\n".encode(), _quarantined("not_an_image"))
    noise = np.random.default_rng(16).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    add("bad/random.jpg", noise, _quarantined("not_an_image"))
    huge_header = _png_with_size(_encode(_rgb(17), "PNG"), BOMB_SIDE, BOMB_SIDE)
    add("bad/huge_header.png", huge_header, _quarantined("too_large"))
    # Scan data overwritten in the middle, full length, EOI kept. Garbage Huffman codes alone are only a
    # warning for libjpeg-turbo ("Corrupt JPEG data"): Pillow decodes the file silently at full size, garbage from
    # there on, so ingest cannot tell it from a good image. A stray marker in the scan (here a second SOI) is
    # fatal: load() raises "OSError: broken data stream when reading image file".
    scan_source = _encode(_rgb(18), "JPEG", quality=90)
    add("bad/corrupt_scan_silent.jpg", _jpeg_corrupt_scan(scan_source, seed=18), _ingested("RGB"))
    corrupt = _jpeg_corrupt_scan(_encode(_rgb(20), "JPEG", quality=90), seed=20, stray_marker=b"\xff\xd8")
    add("bad/corrupt_scan.jpg", corrupt, _quarantined("corrupt"))

    # Symlinks: one to nowhere, and a folder that links back to itself (ingest follows folder links).
    if _try_symlink("does_not_exist.png", root / "links/broken.png"):
        expected["links/broken.png"] = _quarantined("unreadable")
    add("links/loop_dir/inside.png", _encode(_rgb(19), "PNG"), _ingested("RGB"))
    if _try_symlink(".", root / "links/loop_dir/loop", directory=True):
        expected["links/loop_dir/loop"] = _quarantined("symlink_loop")

    # Not an image extension: never opened.
    add("notes.txt", b"camera 3 was refocused on Tuesday\n", Expected("skipped"))
    return expected
