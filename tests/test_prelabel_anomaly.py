"""The anomaly pre-labeler in the prelabel stage, on real magnetic-tile images (12 defect-free + 8 defective, their
masks as truth): a row for every image with no CLIP and no labels, maps and regions, reference modes, determinism
and the cache."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation.errors import CurationError
from curation.ontology import ok_class
from curation.prelabel.anomaly_scorer import ReferenceInputError, choose_reference
from curation.prelabel.fewshot import LabelSet
from curation.prelabel.stage import prelabel, write_prelabel
from schemas.ontology import Ontology
from schemas.params import IngestParams
from schemas.params_anomaly import AnomalyParams
from schemas.params_prelabel import ClipParams, PrelabelParams
from schemas.records import ANY_DEFECT, Prediction

TILES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "magnetic-tile"
if not TILES.is_dir():
    TILES = Path("/work/shared/datasets/magnetic-tile")
pytestmark = pytest.mark.skipif(not TILES.is_dir(), reason=f"magnetic-tile data set not found at {TILES}")
OUTPUTS = ("predictions.parquet", "prelabel.json", "embeddings.parquet")


def _rows(files: list[Path]) -> pd.DataFrame:
    rows = []
    for path in files:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        width, height = Image.open(path).size
        rows.append(
            {
                "image_id": sha[:16],
                "sha256": sha,
                "path": str(path),
                "rel_path": path.name,
                "all_paths": [path.name],
                "exif_orientation": 1,
                "width": width,
                "height": height,
            }
        )
    return pd.DataFrame(rows)


def _defective(path: Path) -> bool:
    """Truth from the data set's mask (white = defect), never from the code under test."""
    mask = np.asarray(Image.open(path.with_suffix(".png")).convert("L"))
    return bool((mask > 127).any())


@pytest.fixture(scope="module")
def tiles() -> pd.DataFrame:
    free = sorted((TILES / "MT_Free" / "Imgs").glob("*.jpg"))[:12]
    defects = [
        p
        for c in ("Blowhole", "Crack", "Break", "Fray")
        for p in sorted((TILES / f"MT_{c}" / "Imgs").glob("*.jpg"))[:2]
    ]
    manifest = _rows(free + defects)
    manifest["defective"] = [_defective(Path(p)) for p in manifest["path"]]
    return manifest


def _settings(tmp: Path, **anomaly) -> PrelabelParams:
    return PrelabelParams(
        clip=ClipParams(model=str(tmp / "no-such-clip")),  # no CLIP: the offline day-one case
        device="cpu",
        anomaly=AnomalyParams(map_max_side=128, **anomaly),
    )


@pytest.fixture(scope="module")
def first(tiles, params, tmp_path_factory):
    root = tmp_path_factory.mktemp("anomaly")
    manifest = tiles.drop(columns="defective")
    result = prelabel(manifest, _settings(root), params.ontology, cache_dir=root / "cache", ingest=params.ingest)
    write_prelabel(result, root / "out")
    return {"root": root, "result": result, "manifest": manifest}


def test_every_image_gets_an_ok_or_defect_row_with_map_and_regions(first, tiles, params):
    result, out = first["result"], first["root"] / "out"
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert predictions["image_id"].tolist() == tiles["image_id"].tolist()
    assert set(predictions["source"]) == {"anomaly"} and set(predictions["anomaly_reference"]) == {"none"}
    for row in predictions.drop(columns=[c for c in predictions if c.startswith("p_")]).to_dict("records"):
        Prediction.model_validate({k: (None if v is pd.NA else v) for k, v in row.items()})
    ok = params.ontology.class_names[params.ontology.class_names.index("ok")]
    report = json.loads((out / "prelabel.json").read_text())["anomaly"]
    threshold = report["threshold"]
    called = predictions["anomaly_score"] > threshold
    assert (predictions["anomaly_defect"] == called).all()
    assert (predictions["label"] == np.where(called, ANY_DEFECT, ok)).all()
    assert report["ok"] == int((~called).sum()) and report["defect"] == int(called.sum())
    assert report["reference"] == "none" and report["method"] == "mad"
    p = predictions[[f"p_{c}" for c in params.ontology.class_names]].to_numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    p_defect = 1 - predictions[f"p_{ok}"]
    np.testing.assert_allclose(predictions["score"], np.where(called, p_defect, 1 - p_defect))
    assert (called == (p_defect > 0.5)).all()
    predictions = predictions.join(first["manifest"].set_index("image_id")[["width", "height"]], on="image_id")
    for row in predictions.itertuples():
        image = Image.open(out / row.anomaly_map)
        assert image.mode == "L" and max(image.size) <= 128
        regions = json.loads(row.regions)
        assert assert_description(row, regions)
    sizes = {Image.open(out / m).size for m in predictions["anomaly_map"]}
    expected = {_fit(w, h, 128) for w, h in zip(first["manifest"]["width"], first["manifest"]["height"], strict=True)}
    assert sizes == expected
    assert result.cache_stats["patches_computed"] == len(tiles)


def test_without_clip_one_forward_pass_gives_the_embeddings_and_the_patches(first, tiles):
    """Day one offline: the embeddings few-shot reads come from the anomaly scorer's forward pass (the whole image
    squashed to 224 px), computed once per image with the patches, and equal the offline backbone's own embedding
    of that input (``OfflineBackbone.encode_images``: the library's extract_features, pooled)."""
    from curation.prelabel.anomaly import FeatureSpec, prepare
    from curation.prelabel.models import OfflineBackbone, Runtime

    result = first["result"]
    assert result.cache_stats["embeddings_computed"] == result.cache_stats["patches_computed"] == len(tiles)
    assert result.report["embedding_input"].startswith("the anomaly scorer's pass: the whole image squashed to 224")
    paths = tiles["path"].tolist()[:4]
    pixels = np.stack([prepare(np.asarray(Image.open(p).convert("RGB")), FeatureSpec())[0] for p in paths])
    expected = OfflineBackbone(Runtime("cpu", "float32")).encode_images(pixels)
    # a float32 forward's last bits depend on which images share its batch: close, not bit-equal
    np.testing.assert_allclose(result.embedding_matrix[:4], expected, rtol=1e-4, atol=1e-4)


def test_a_large_batch_keeps_its_patch_grids_on_disk_with_the_same_outputs(first, params, tmp_path, monkeypatch):
    """Above compute.MEMMAP_ABOVE_BYTES the batch's patch grids are a memory map of an unlinked file in the cache
    folder (nothing left behind); the outputs are the bytes of the in-memory run."""
    from curation.prelabel import compute

    made: list[np.ndarray] = []
    original = compute.grid_array

    def recording(shape, dtype, folder):
        array = original(shape, dtype, folder)
        made.append(array)
        return array

    monkeypatch.setattr(compute, "MEMMAP_ABOVE_BYTES", 0)
    monkeypatch.setattr(compute, "grid_array", recording)
    root = first["root"]
    result = prelabel(
        first["manifest"], _settings(root), params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest
    )
    assert made and all(isinstance(array, np.memmap) for array in made)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".npy") == []
    write_prelabel(result, tmp_path / "out")
    for output in OUTPUTS:
        assert (tmp_path / "out" / output).read_bytes() == (root / "out" / output).read_bytes(), output


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else (width, height)


def assert_description(row, regions: list[dict]) -> bool:
    if not row.anomaly_defect:
        assert regions == [] and row.description_en.startswith("No anomaly found")
        assert row.description_ko.startswith("이상 없음")
        return True
    assert regions, "a defective call has at least one region"
    assert row.description_en.startswith(f"{len(regions)} suspect region")
    for region in regions:
        assert set(region) >= {"x", "y", "w", "h", "score", "area", "polygons", "cell", "clock", "shape", "severity"}
        assert 0 <= region["x"] < region["x"] + region["w"] <= row.width
        assert 0 <= region["y"] < region["y"] + region["h"] <= row.height
    return True


def test_defective_images_score_higher_than_clean_ones_by_the_masks(first, tiles):
    predictions = first["result"].predictions
    truth = tiles["defective"].to_numpy()
    assert truth.sum() == 8 and (~truth).sum() == 12  # the masks say so, not the scorer
    scores = predictions["anomaly_score"].to_numpy()
    assert scores[truth].mean() > scores[~truth].mean()


def test_map_brightest_where_the_score_is_and_128_near_the_threshold(first):
    out = first["root"] / "out"
    report = json.loads((out / "prelabel.json").read_text())["anomaly"]
    predictions = first["result"].predictions
    zero, threshold = report["map_zero"], report["threshold"]
    for row in predictions.itertuples():
        pixels = cv2.imread(str(out / row.anomaly_map), cv2.IMREAD_UNCHANGED)
        expected = np.clip((row.anomaly_score - zero) / (2 * (threshold - zero)), 0, 1) * 255
        # the PNG is blurred and resampled: its brightest pixel is at most the image score's value
        assert pixels.max() <= expected + 1


def test_reruns_are_byte_identical_and_a_cached_rerun_computes_nothing(first, params, tmp_path, monkeypatch):
    from curation.prelabel.models import OfflineBackbone

    manifest, root = first["manifest"], first["root"]
    loaded = []
    real_init = OfflineBackbone.__init__

    def counting_init(self, *args, **kwargs):
        loaded.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(OfflineBackbone, "__init__", counting_init)
    cached = prelabel(manifest, _settings(root), params.ontology, cache_dir=root / "cache", ingest=params.ingest)
    assert cached.cache_stats["patches_computed"] == 0 and cached.cache_stats["embeddings_computed"] == 0
    assert len(loaded) == 1  # the anomaly scorer's backbone is also the embedder: Lite0's weights load once
    monkeypatch.undo()
    fresh = prelabel(manifest, _settings(root), params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    assert fresh.cache_stats["patches_computed"] == len(manifest)
    for name, result in (("cached", cached), ("fresh", fresh)):
        write_prelabel(result, tmp_path / name)
        for output in OUTPUTS:
            assert (tmp_path / name / output).read_bytes() == (root / "out" / output).read_bytes(), (name, output)
        maps = sorted((tmp_path / name / "anomaly_maps").iterdir())
        assert [m.name for m in maps] == sorted(m.name for m in (root / "out" / "anomaly_maps").iterdir())
        assert all(m.read_bytes() == (root / "out" / "anomaly_maps" / m.name).read_bytes() for m in maps)


def test_reviewed_ok_labels_switch_to_ok_reviewed_and_calibrate_on_labels(first, tiles, params):
    manifest, root = first["manifest"], first["root"]
    labels = {i: "ok" for i in tiles["image_id"][~tiles["defective"]][:8]}
    labels.update({i: "crack" for i in tiles["image_id"][tiles["defective"]][:4]})
    settings = _settings(root, min_ok_references=8)
    result = prelabel(
        manifest,
        settings,
        params.ontology,
        cache_dir=root / "cache",
        ingest=params.ingest,
        labels=LabelSet(labels, "test labels"),
    )
    report = result.report["anomaly"]
    assert report["reference"] == "ok_reviewed" and report["bank_images"] == 8 and report["cross_fitted"]
    assert report["method"] == "labelled" and report["calibration_labels"] == {"ok": 8, "defect": 4}
    assert set(result.predictions["anomaly_reference"]) == {"ok_reviewed"}
    assert result.cache_stats["patches_computed"] == 0
    fewer = prelabel(
        manifest,
        _settings(root, min_ok_references=9),
        params.ontology,
        cache_dir=root / "cache",
        ingest=params.ingest,
        labels=LabelSet(labels, "test labels"),
    )
    assert fewer.report["anomaly"]["reference"] == "none" and fewer.report["anomaly"]["method"] == "labelled"


def test_reference_choice_follows_the_documented_order():
    ok = "ok"
    eight_ok = {str(i): "ok" for i in range(8)}
    assert choose_reference(AnomalyParams(), None, ok).mode == "none"
    assert choose_reference(AnomalyParams(min_ok_references=9), eight_ok, ok).mode == "none"
    assert choose_reference(AnomalyParams(min_ok_references=8), eight_ok, ok).mode == "ok_reviewed"
    assert choose_reference(AnomalyParams(min_ok_references=8), eight_ok, None).mode == "none"
    assert choose_reference(AnomalyParams(reference_dir=Path("golden")), eight_ok, ok).mode == "golden"
    assert choose_reference(AnomalyParams(reference="none", reference_dir=Path("g")), eight_ok, ok).mode == "none"
    with pytest.raises(ReferenceInputError, match="reference_dir is null"):
        choose_reference(AnomalyParams(reference="golden"), None, ok)
    with pytest.raises(ReferenceInputError, match="no image of the OK class"):
        choose_reference(AnomalyParams(reference="ok_reviewed"), {"a": "crack"}, ok)


def test_ok_class_comes_from_ingest_params_then_the_ok_words(params):
    ontology = params.ontology
    assert ok_class(ontology, IngestParams(ok_label="ok")) == "ok"
    assert ok_class(ontology, IngestParams(ok_label="good", label_map={"good": "ok"})) == "ok"
    assert ok_class(ontology, None) == "ok"
    dump = ontology.model_dump()
    classes = [c for c in dump["classes"] if c["name"] != "ok"]
    no_ok = Ontology.model_validate({**dump, "classes": classes, "hard_negatives": []})
    assert ok_class(no_ok, IngestParams(ok_label="ok")) is None


def test_golden_reference_finds_a_blotch_on_a_shifted_copy(params, tmp_path):
    source = np.asarray(Image.open(sorted((TILES / "MT_Free" / "Imgs").glob("*.jpg"))[0]).convert("RGB"))
    golden_dir = tmp_path / "golden"
    golden_dir.mkdir()
    Image.fromarray(source).save(golden_dir / "tile.png")
    height, width = source.shape[:2]
    files, blotches = [], []
    for k in range(4):
        shifted = np.roll(source, (2 * k, 3 * k), axis=(0, 1)).copy()
        if k % 2:
            cy, cx = height // 3 + 10 * k, width // 3 + 10 * k
            cv2.circle(shifted, (cx, cy), max(6, min(height, width) // 20), (0, 0, 0), -1)
            blotches.append((cy, cx))
        path = tmp_path / f"img{k}.png"
        Image.fromarray(shifted).save(path)
        files.append(path)
    manifest = _rows(files)
    settings = _settings(tmp_path, reference_dir=golden_dir)
    result = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    predictions = result.predictions
    assert set(predictions["anomaly_reference"]) == {"golden"} and result.report["anomaly"]["reference"] == "golden"
    scores = predictions["anomaly_score"].to_numpy()
    assert min(scores[1], scores[3]) > max(scores[0], scores[2])  # the blotched copies, by construction
    assert result.cache_stats["golden_computed"] == 4

    # A rerun (e.g. after reviews) reads the aligned golden features back by the pair's content: same scores.
    again = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    assert again.cache_stats["golden_cached"] == 4 and again.cache_stats.get("golden_computed", 0) == 0
    assert np.array_equal(again.predictions["anomaly_score"].to_numpy(), scores)

    # A changed golden file is a new pair: recomputed, not read back stale.
    Image.fromarray(np.ascontiguousarray(source[::-1])).save(golden_dir / "tile.png")
    changed = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    assert changed.cache_stats["golden_computed"] == 4 and changed.cache_stats.get("golden_cached", 0) == 0


def test_bad_reference_dir_is_one_clear_line(first, params, tmp_path):
    manifest = first["manifest"]
    with pytest.raises(CurationError) as err:
        prelabel(
            manifest,
            _settings(tmp_path, reference_dir=tmp_path / "missing"),
            params.ontology,
            cache_dir=tmp_path / "cache",
        )
    assert "reference_dir" in str(err.value) and "not a folder" in str(err.value) and "\n" not in str(err.value)
    golden = tmp_path / "golden"
    golden.mkdir()
    shutil.copy(sorted((TILES / "MT_Crack" / "Imgs").glob("*.jpg"))[0], golden / "other.jpg")
    with pytest.raises(ReferenceInputError, match=r"golden reference is .* px but the image is"):
        prelabel(
            manifest, _settings(tmp_path, reference_dir=golden), params.ontology, cache_dir=first["root"] / "cache"
        )
