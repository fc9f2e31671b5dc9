"""Tests of the procedural sample dataset: determinism, file layout, deliberate problems, and visible classes."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.errors import InputError
from curation.sample_data import (
    LIGHTINGS,
    METADATA_COLUMNS,
    PRODUCTS,
    SAMPLE_CLASSES,
    SEVERITIES,
    TRUTH_COLUMNS,
    SampleSummary,
    generate_sample,
    render_sample,
)

N_PER_CLASS = 3
SIZE = 64
DEFECTS = SAMPLE_CLASSES[:-1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleSummary:
    return generate_sample(tmp_path_factory.mktemp("sample"), n_per_class=N_PER_CLASS, seed=7, size=SIZE)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def image_files(images_dir: Path) -> set[str]:
    return {p.relative_to(images_dir).as_posix() for p in images_dir.rglob("*") if p.is_file()}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = tree_bytes(generate_sample(tmp_path / "a", n_per_class=2, seed=3, size=SIZE).out_dir)
    second = tree_bytes(generate_sample(tmp_path / "b", n_per_class=2, seed=3, size=SIZE).out_dir)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert not [name for name in first if name.endswith(".tmp")]


def test_rerun_into_same_folder_overwrites_with_same_bytes(tmp_path: Path) -> None:
    first = tree_bytes(generate_sample(tmp_path, n_per_class=1, seed=5, size=SIZE).out_dir)
    second = tree_bytes(generate_sample(tmp_path, n_per_class=1, seed=5, size=SIZE).out_dir)
    assert first == second


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    a = generate_sample(tmp_path / "a", n_per_class=2, seed=1, size=SIZE)
    b = generate_sample(tmp_path / "b", n_per_class=2, seed=2, size=SIZE)
    assert a.truth_csv.read_bytes() != b.truth_csv.read_bytes()
    assert a.metadata_csv.read_bytes() != b.metadata_csv.read_bytes()
    pixels_a = sorted(decode(a.images_dir / r["file"]).mean() for r in read_rows(a.truth_csv))
    pixels_b = sorted(decode(b.images_dir / r["file"]).mean() for r in read_rows(b.truth_csv))
    assert pixels_a != pixels_b


def test_truth_has_n_per_class_renders_and_valid_severities(sample: SampleSummary) -> None:
    rows = read_rows(sample.truth_csv)
    assert tuple(rows[0]) == TRUTH_COLUMNS
    copies = {copy for copy, _ in sample.exact_duplicates + sample.near_duplicates}
    renders = Counter(r["label"] for r in rows if r["file"] not in copies)
    assert renders == dict.fromkeys(SAMPLE_CLASSES, N_PER_CLASS)
    assert dict(Counter(r["label"] for r in rows)) == {k: v for k, v in sample.label_counts.items() if v}
    assert sample.n_images == len(rows) == N_PER_CLASS * len(SAMPLE_CLASSES) + len(copies)
    for row in rows:
        if row["label"] == "ok":
            assert row["severity"] == ""
        else:
            assert row["severity"] in SEVERITIES


def test_csv_rows_and_files_match_except_the_deliberate_gaps(sample: SampleSummary) -> None:
    on_disk = image_files(sample.images_dir)
    truth = {r["file"] for r in read_rows(sample.truth_csv)}
    metadata = read_rows(sample.metadata_csv)
    listed = {r["file"] for r in metadata}
    assert tuple(metadata[0]) == METADATA_COLUMNS
    assert len(listed) == len(metadata)
    assert truth <= on_disk
    assert on_disk == truth | set(sample.broken_files)
    assert listed - on_disk == {sample.missing_file}
    assert on_disk - listed == {sample.unlisted_file}
    assert sample.unlisted_file in truth


def test_metadata_values(sample: SampleSummary) -> None:
    times = []
    for row in read_rows(sample.metadata_csv):
        line, camera, _ = row["file"].split("/")
        assert (row["line"], row["camera"]) == (line, camera)
        assert row["product"] == PRODUCTS[line]
        assert row["lighting"] in LIGHTINGS
        captured = datetime.fromisoformat(row["captured_at"])
        assert captured.isoformat() == row["captured_at"]  # whole seconds, no zone, no microseconds
        times.append(captured)
    assert len(set(times)) == len(times)


def test_folders_are_line_and_camera_not_class(sample: SampleSummary) -> None:
    files = image_files(sample.images_dir)
    folders = {name.rsplit("/", 1)[0] for name in files}
    assert len(folders) > 1
    assert all(not set(folder.split("/")) & set(SAMPLE_CLASSES) for folder in folders)
    names = [name.rsplit("/", 1)[1] for name in files]
    assert any(" " in name for name in names)
    assert any(not name.isascii() for name in names)
    assert not any(label in name for name in names for label in SAMPLE_CLASSES)


def test_valid_images_decode_at_size_in_mixed_formats(sample: SampleSummary) -> None:
    suffixes = Counter()
    for row in read_rows(sample.truth_csv):
        path = sample.images_dir / row["file"]
        with Image.open(path) as image:
            image.load()
            assert image.size == (SIZE, SIZE)
            assert image.mode == "RGB"
        suffixes[path.suffix] += 1
    assert set(suffixes) == {".png", ".jpg", ".bmp", ".tif", ".webp"}
    assert suffixes[".png"] + suffixes[".jpg"] > sum(suffixes.values()) / 2


def test_broken_files_do_not_decode(sample: SampleSummary) -> None:
    assert sample.n_broken == len(sample.broken_files) == 3
    sizes = []
    for name in sample.broken_files:
        path = sample.images_dir / name
        sizes.append(path.stat().st_size)
        with pytest.raises(OSError), Image.open(path) as image:  # UnidentifiedImageError is an OSError too
            image.load()
    assert 0 in sizes
    suffixes = sorted(Path(name).suffix for name in sample.broken_files)
    assert suffixes == [".jpg", ".jpg", ".png"]
    truncated = [sample.images_dir / n for n in sample.broken_files if n.endswith(".jpg")]
    assert any(p.read_bytes().startswith(b"\xff\xd8") for p in truncated)


def test_exact_duplicates_are_byte_identical(sample: SampleSummary) -> None:
    labels = {r["file"]: (r["label"], r["severity"]) for r in read_rows(sample.truth_csv)}
    assert sample.n_duplicates == len(sample.exact_duplicates) == 2
    for copy, source in sample.exact_duplicates:
        assert copy != source
        assert (sample.images_dir / copy).read_bytes() == (sample.images_dir / source).read_bytes()
        assert labels[copy] == labels[source]


def test_near_duplicates_differ_in_bytes_but_barely_in_pixels(sample: SampleSummary) -> None:
    labels = {r["file"]: (r["label"], r["severity"]) for r in read_rows(sample.truth_csv)}
    assert sample.n_near_duplicates == len(sample.near_duplicates) == 2
    for copy, source in sample.near_duplicates:
        assert (sample.images_dir / copy).read_bytes() != (sample.images_dir / source).read_bytes()
        difference = np.abs(decode(sample.images_dir / copy).astype(int) - decode(sample.images_dir / source))
        assert 0 < difference.mean() < 5
        assert labels[copy] == labels[source]


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="n_per_class"):
        generate_sample(tmp_path, n_per_class=0)
    with pytest.raises(InputError, match="size"):
        generate_sample(tmp_path, size=16)
    with pytest.raises(InputError, match="seed"):
        generate_sample(tmp_path, seed=-1)
    with pytest.raises(InputError, match="rust"):
        render_sample("rust", np.random.default_rng(0))
    with pytest.raises(InputError, match="lighting"):
        render_sample("ok", np.random.default_rng(0), lighting="laser")
    assert not any(tmp_path.iterdir())


def defect_stats(label: str, seed: int, size: int = 96) -> dict[str, float | str]:
    """Measure what the defect changed, against the same scene rendered without it."""
    sample = render_sample(label, np.random.default_rng(seed), size=size, lighting=LIGHTINGS[seed % len(LIGHTINGS)])
    image, clean = sample.image.astype(float), sample.defect_free.astype(float)
    change = np.abs(image - clean).max(axis=2)
    affected = change > 10
    ys, xs = np.nonzero(affected)
    brighter = (image - clean).mean(axis=2) > 0

    def chroma(pixels: np.ndarray) -> np.ndarray:
        return pixels.max(axis=2) - pixels.min(axis=2)

    return {
        "severity": sample.severity,
        "area": float(affected.mean()),
        "span": float(max(np.ptp(xs), np.ptp(ys)) / size) if affected.any() else 0.0,
        "brighter": float(brighter[affected].mean()) if affected.any() else float("nan"),
        "chroma_gain": float(np.percentile(chroma(image) - chroma(clean), 99)),
        "mass": float(change.mean()),
    }


@pytest.fixture(scope="module")
def stats() -> dict[str, list[dict[str, float | str]]]:
    return {label: [defect_stats(label, seed) for seed in range(24)] for label in DEFECTS}


def test_ok_has_no_defect_but_is_not_blank() -> None:
    means = []
    for seed in range(12):
        sample = render_sample("ok", np.random.default_rng(seed), size=SIZE)
        assert sample.severity == ""
        assert np.array_equal(sample.image, sample.defect_free)
        assert sample.image.std() > 2  # grain, lighting and nuisances, not a flat grey
        means.append(sample.image.mean())
    assert np.std(means) > 5  # base grey and lighting vary


def test_every_defect_visibly_changes_the_surface(stats: dict[str, list[dict[str, float | str]]]) -> None:
    for label, rows in stats.items():
        for row in rows:
            assert row["area"] > 0.001 or row["chroma_gain"] > 10, (label, row)


def test_defect_classes_have_their_own_signature(stats: dict[str, list[dict[str, float | str]]]) -> None:
    for label in ("scratch", "crack"):  # thin and long
        for row in stats[label]:
            assert row["area"] < 0.05 and row["span"] > 0.12, (label, row)
    for row in stats["scratch"]:  # a bright or a dark line, not both
        assert row["brighter"] in (0.0, 1.0), row
    assert {row["brighter"] for row in stats["scratch"]} == {0.0, 1.0}
    for label in ("crack", "contamination"):  # dark
        for row in stats[label]:
            assert row["brighter"] < 0.05, (label, row)
    for row in stats["dent"]:  # shaded bowl: one side darker, one side (and the rim) brighter
        assert 0.2 < row["brighter"] < 0.8, row
    for row in stats["discoloration"]:  # a tint, large
        assert row["chroma_gain"] > 12, row
    for label in ("scratch", "dent", "crack"):
        assert max(row["chroma_gain"] for row in stats[label]) < 3, label
    mean_area = {label: np.mean([row["area"] for row in rows]) for label, rows in stats.items()}
    assert max(mean_area, key=mean_area.get) == "discoloration"


def test_severity_grows_with_defect_size_and_contrast(stats: dict[str, list[dict[str, float | str]]]) -> None:
    for label, rows in stats.items():
        mass = defaultdict(list)
        for row in rows:
            mass[row["severity"]].append(row["mass"])
        assert set(mass) == set(SEVERITIES), label
        means = [np.mean(mass[severity]) for severity in SEVERITIES]
        assert means == sorted(means), (label, means)
