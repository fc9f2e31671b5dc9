"""The bad-input corpus says what really happens: each expectation is checked against Pillow directly."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import get_args

import imagehash
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

from schemas.records import QuarantineReason
from tests.corpus import BOMB_SIDE, Expected, build_bad_corpus

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}  # params.yaml ingest.extensions
MAX_PIXELS = 100_000_000  # params.yaml ingest.max_pixels
MAX_PHASH_THRESHOLD = 16  # the largest ingest.phash_threshold schemas/params.py allows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expected]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, build_bad_corpus(root)


def _with(expected: dict[str, Expected], outcome: str, reason: str | None = None) -> list[str]:
    rels = [rel for rel, exp in expected.items() if exp.outcome == outcome and (reason is None or exp.reason == reason)]
    assert rels, f"the corpus has no {outcome} {reason or ''} case"
    return rels


def _decode(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.copy() if image.mode != "P" else image.convert("RGBA")


def test_every_entry_exists_and_every_file_has_an_entry(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    on_disk = set()
    for folder, dirs, files in os.walk(root):  # does not follow folder symlinks
        for name in files + [d for d in dirs if Path(folder, d).is_symlink()]:
            on_disk.add(Path(folder, name).relative_to(root).as_posix())
    assert on_disk == set(expected)
    assert "batch_a/결함 이미지 01.png" in expected
    assert "batch_a/UPPER.JPG" in expected


def test_reasons_cover_every_quarantine_reason(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    for rel, exp in expected.items():
        assert (exp.reason is not None) == (exp.outcome == "quarantined"), rel
        if exp.reason is not None:
            assert exp.reason in get_args(QuarantineReason), rel
    missing = set(get_args(QuarantineReason)) - {exp.reason for exp in expected.values()}
    made_links = any((root / rel).is_symlink() for rel in expected)
    assert missing == (set() if made_links else {"unreadable", "symlink_loop"})


def test_ingested_files_decode_with_stated_mode_and_orientation(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    for rel in _with(expected, "ingested"):
        exp = expected[rel]
        with Image.open(root / rel) as image:
            image.load()
            assert image.mode == exp.mode, rel
            assert image.getexif().get(0x0112, 1) == exp.exif_orientation, rel
            assert image.width * image.height <= MAX_PIXELS, rel
    modes = {expected[rel].mode for rel in _with(expected, "ingested")}
    assert {"I;16", "CMYK", "P", "RGBA", "L", "RGB"} <= modes
    assert 6 in {expected[rel].exif_orientation for rel in _with(expected, "ingested")}


def test_ingested_images_are_not_near_duplicates(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    hashes = {}
    for rel in _with(expected, "ingested"):
        upright = ImageOps.exif_transpose(_decode(root / rel))
        hashes[rel] = imagehash.phash(upright.convert("RGB"))
    for a, b in itertools.combinations(hashes, 2):
        assert hashes[a] - hashes[b] > MAX_PHASH_THRESHOLD, (a, b)


def test_duplicate_is_byte_identical_to_its_ingested_source(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    for rel in _with(expected, "duplicate"):
        source = expected[rel].duplicate_of
        assert source is not None and expected[source].outcome == "ingested"
        assert source < rel  # the source is the canonical copy by sorted rel_path
        assert Path(root / rel).parent != Path(root / source).parent
        assert (root / rel).read_bytes() == (root / source).read_bytes()


def test_empty_file_has_zero_bytes(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    for rel in _with(expected, "quarantined", "empty"):
        assert (root / rel).stat().st_size == 0


@pytest.mark.parametrize("reason", ["truncated", "corrupt"])
def test_broken_images_are_identified_but_fail_to_decode(corpus: tuple[Path, dict[str, Expected]], reason: str) -> None:
    root, expected = corpus
    for rel in _with(expected, "quarantined", reason):
        with Image.open(root / rel) as image, pytest.raises(OSError) as err:  # the header is fine, the data not
            image.load()
        assert ("truncated" in str(err.value)) == (reason == "truncated"), (rel, err.value)


def test_non_images_are_not_identified(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    for rel in _with(expected, "quarantined", "not_an_image"):
        assert Path(rel).suffix.lower() in IMAGE_EXTENSIONS
        with pytest.raises(UnidentifiedImageError):
            Image.open(root / rel)


def test_huge_header_reports_its_size_without_loading(
    corpus: tuple[Path, dict[str, Expected]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, expected = corpus
    (rel,) = _with(expected, "quarantined", "too_large")
    with pytest.raises(Image.DecompressionBombError):  # Pillow's own guard fires already at open
        Image.open(root / rel)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(root / rel) as image:
        assert image.size == (BOMB_SIDE, BOMB_SIDE)
        assert image.width * image.height > MAX_PIXELS


def test_symlinks(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    broken = [rel for rel in expected if expected[rel].reason == "unreadable"]
    loops = [rel for rel in expected if expected[rel].reason == "symlink_loop"]
    if not broken and not loops:
        pytest.skip("this OS or user may not create symlinks")
    for rel in broken:
        path = root / rel
        assert path.is_symlink() and not path.exists()
        with pytest.raises(OSError):
            path.read_bytes()
    for rel in loops:
        path = root / rel
        assert path.is_symlink() and path.is_dir()
        assert path.resolve() == path.parent.resolve()
        # The looped folder holds an image: a walker that misses the loop meets it again through the link.
        assert (path / "inside.png").read_bytes() == (path.parent / "inside.png").read_bytes()
        assert expected[(path.parent / "inside.png").relative_to(root).as_posix()].outcome == "ingested"


def test_skipped_files_do_not_have_image_extensions(corpus: tuple[Path, dict[str, Expected]]) -> None:
    root, expected = corpus
    for rel in _with(expected, "skipped"):
        assert Path(rel).suffix.lower() not in IMAGE_EXTENSIONS
        assert (root / rel).is_file()


def test_corpus_is_deterministic_and_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    first = build_bad_corpus(tmp_path / "a")
    assert time.perf_counter() - start < 1.0
    second = build_bad_corpus(tmp_path / "b")
    assert first == second
    for rel in first:
        a, b = tmp_path / "a" / rel, tmp_path / "b" / rel
        if a.is_symlink():
            assert os.readlink(a) == os.readlink(b)
        else:
            assert a.read_bytes() == b.read_bytes(), rel
