"""Anomaly scoring on real magnetic-tile images (masks: white = defect); regions and descriptions: test_regions.py.

Expected positions were read by hand from the mask files' pixel coordinates, not from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from curation.prelabel.anomaly import (
    AnomalyInputError,
    FeatureSpec,
    MutualReference,
    PatchBank,
    PatchExtractor,
    align,
    aligned_golden_features,
    calibrate,
    image_map,
    memory_bound,
    mutual_scores,
    phase_shift,
    position_standardised,
    prepare,
    score_batch,
)

TILE = Path("/work/shared/datasets/magnetic-tile")
pytestmark = pytest.mark.skipif(not TILE.is_dir(), reason=f"magnetic-tile data set not found at {TILE}")

# Crack exp1_num_3191: 469 x 370 px; its mask's only component spans x 343..363, y 0..103 (inclusive).
CRACK = TILE / "MT_Crack/Imgs/exp1_num_3191"
# Fray exp0_num_797: 488 x 354 px; mask x 459..473, y 335..353.
FRAY = TILE / "MT_Fray/Imgs/exp0_num_797"


def _rgb(stem: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(stem.with_suffix(".jpg"))), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def extractor() -> PatchExtractor:
    pytest.importorskip("efficientnet_lite_pytorch", reason="offline backbone package not installed")
    from curation.prelabel.models import OfflineBackbone, Runtime

    return PatchExtractor(OfflineBackbone(Runtime("cpu", "float32")).model, FeatureSpec())


def _features(extractor: PatchExtractor, stems: list[Path]) -> np.ndarray:
    return extractor.extract(np.stack([prepare(_rgb(s), extractor.spec)[0] for s in stems]))


@pytest.mark.parametrize(
    ("fit", "expected_yx"),
    [
        # 469 x 370 image squashed to 256: cell (10, 24) of the 32-grid is centred at input (x 196, y 84)
        # -> image x 196 * 469 / 256 = 359.1, y 84 * 370 / 256 = 121.4
        ("squash", (121.4, 359.1)),
        # letterboxed: scale 256 / 469, inner 256 x 202 at top 27 -> y (84 - 27) * 370 / 202 = 104.4, x as above
        ("letterbox", (104.4, 359.1)),
    ],
)
def test_image_map_is_image_aligned(fit: str, expected_yx: tuple[float, float]) -> None:
    rgb = _rgb(CRACK)
    _, placement = prepare(rgb, FeatureSpec(size=256, pad=32, fit=fit))  # type: ignore[arg-type]
    grid = np.zeros((32, 32), np.float32)
    grid[10, 24] = 1.0
    full = image_map(grid, placement)
    assert full.shape == rgb.shape[:2] and full.dtype == np.float16
    peak = np.unravel_index(int(np.argmax(full)), full.shape)
    assert peak[0] == pytest.approx(expected_yx[0], abs=2) and peak[1] == pytest.approx(expected_yx[1], abs=2)


def test_extraction_and_scores_are_deterministic(extractor: PatchExtractor) -> None:
    first = _features(extractor, [CRACK, FRAY])
    second = _features(extractor, [CRACK, FRAY])
    assert first.shape == (2, 28, 28, 344)
    assert first.tobytes() == second.tobytes()
    bank_a = PatchBank.build(first, ratio=0.1, min_patches=64, seed=3)
    bank_b = PatchBank.build(second, ratio=0.1, min_patches=64, seed=3)
    assert bank_a.patches.tobytes() == bank_b.patches.tobytes()
    assert bank_a.score(first).tobytes() == bank_b.score(second).tobytes()


def test_bank_size_bound_is_respected(extractor: PatchExtractor) -> None:
    features = _features(extractor, [CRACK, FRAY])  # 2 x 784 patches
    for method in ("coreset", "random"):
        bank = PatchBank.build(features, ratio=0.5, max_patches=300, min_patches=10, method=method, seed=0)
        assert bank.patches.shape == (300, 344) and bank.method == method
        assert bank.nbytes == 300 * 344 * 4
    small = PatchBank.build(features, ratio=0.001, max_patches=300, min_patches=50, seed=0)
    assert len(small.patches) == 50
    with pytest.raises(AnomalyInputError, match="OK reference set is empty"):
        PatchBank.build(features[:0])


@pytest.mark.parametrize("method", ["coreset", "random"])
def test_bank_from_selected_images_equals_the_bank_from_their_copy(method: str) -> None:
    """``images=`` reads only the drawn candidates, yet gives the bank of the selected images' own array."""
    features = np.random.default_rng(5).standard_normal((9, 6, 6, 12)).astype(np.float16)
    chosen = [7, 1, 4, 2]
    settings = {"ratio": 0.3, "max_patches": 40, "min_patches": 8, "max_candidates": 100, "method": method}
    copied = PatchBank.build(features[chosen], seed=2, **settings)  # type: ignore[arg-type]
    selected = PatchBank.build(features, images=chosen, seed=2, **settings)  # type: ignore[arg-type]
    assert selected.patches.dtype == copied.patches.dtype == np.float32
    assert selected.patches.tobytes() == copied.patches.tobytes() and len(selected.patches) == 40
    assert (selected.source_images, selected.source_patches) == (4, 4 * 36)
    with pytest.raises(AnomalyInputError, match="OK reference set is empty"):
        PatchBank.build(features, images=[])


def test_golden_alignment_recovers_a_known_shift() -> None:
    golden = _rgb(TILE / "MT_Free/Imgs/exp1_num_10181")
    moved = align(golden, (7.0, -12.0))  # a known translation: 7 px down, 12 px left
    dy, dx = phase_shift(moved, golden)
    assert dy == pytest.approx(7.0, abs=0.5) and dx == pytest.approx(-12.0, abs=0.5)
    with pytest.raises(AnomalyInputError, match="golden reference"):
        phase_shift(moved[:-10], golden)


def test_golden_mode_scores_the_aligned_reference_low(extractor: PatchExtractor) -> None:
    # The golden is the same OK tile moved by (9, -14) px: aligned, it should match the image far better than unaligned.
    image = _rgb(TILE / "MT_Free/Imgs/exp1_num_10181")
    golden = align(image, (9.0, -14.0))
    features = _features(extractor, [TILE / "MT_Free/Imgs/exp1_num_10181"])
    aligned, shifts = aligned_golden_features(extractor, [image], [golden])
    assert shifts[0] == pytest.approx((-9.0, 14.0), abs=1.0)
    unaligned = extractor.extract(prepare(golden, extractor.spec)[0][None])
    with_alignment = score_batch(features, mode="golden", golden_features=aligned)
    without = score_batch(features, mode="golden", golden_features=unaligned)
    assert with_alignment.reference_mode == "golden"
    # mean over the interior (the mirrored border strip differs after any shift). Measured: aligned / unaligned
    # 0.54 with the default blocks 4, 10, 14 (block 14's receptive field reaches the mirrored border), 0.48 with
    # blocks 4, 10 only; not aligning at all would give ~1
    assert with_alignment.grid_maps[0, 4:-4, 4:-4].mean() < 0.6 * without.grid_maps[0, 4:-4, 4:-4].mean()


def test_mutual_scoring_ranks_defective_tiles_above_ok_ones(extractor: PatchExtractor) -> None:
    # 16 OK tiles and the first two images (sorted names, not picked) of each defect class, no labels used.
    free = sorted((TILE / "MT_Free/Imgs").glob("exp1_num_*.jpg"))[:16]
    classes = ("Break", "Blowhole", "Fray", "Uneven", "Crack")
    defective = [p for c in classes for p in sorted((TILE / f"MT_{c}/Imgs").glob("*.jpg"))[:2]]
    features = _features(extractor, [p.with_suffix("") for p in free + defective])
    result = score_batch(features, mode="none", k=5, n_refs=40)
    assert result.reference_mode == "none" and result.details["n_refs"] == 25
    truth = np.array([False] * len(free) + [True] * len(defective))
    assert truth[int(np.argmax(result.scores))]
    # share of (defective, OK) pairs ranked the right way round (image AUROC); chance is 0.5
    pairs = result.scores[truth][:, None] > result.scores[~truth][None, :]
    assert pairs.mean() > 0.65
    again = mutual_scores(features, k=5, n_refs=40)
    assert again.tobytes() == result.grid_maps.tobytes()


def test_calibration_mad_and_labelled() -> None:
    scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.0, 3.0])
    decision = calibrate(scores)
    # median 1.0; |deviations| = 0, .1, .1, .05, .05, 0, 2 -> MAD 0.05; threshold 1 + 3 * 1.4826 * 0.05 = 1.2224
    assert decision.method == "mad" and decision.threshold == pytest.approx(1.22239)
    assert decision.is_defect.tolist() == [False] * 6 + [True]
    labelled = calibrate(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), labels=np.array([0, 0, 0, 1, 1], bool))
    assert labelled.method == "labelled" and labelled.threshold == pytest.approx(0.55)


def test_shared_forward_equals_the_embedding_pass(extractor: PatchExtractor) -> None:
    """The default input (224 px squash, no padding) is the offline embedding pass's own: one forward gives the
    patches and the same embedding ``OfflineBackbone.encode_images`` gives on those pixels."""
    from curation.prelabel.models import OfflineBackbone, Runtime

    assert (extractor.spec.size, extractor.spec.pad) == (224, 0)
    pixels = np.stack([prepare(_rgb(s), extractor.spec)[0] for s in [CRACK, FRAY]])
    patches, embedding = extractor.extract_with_embedding(pixels)
    assert patches.tobytes() == extractor.extract(pixels).tobytes()
    assert patches.shape == (2, 28, 28, 40 + 112 + 192)  # 224 / 8 cells; blocks 4, 10, 14
    plain = OfflineBackbone(Runtime("cpu", "float32")).encode_images(pixels)
    assert embedding.shape == plain.shape == (2, 1280)
    np.testing.assert_allclose(embedding, plain, rtol=1e-5, atol=1e-6)


def test_shared_forward_with_mirror_padding_crops_the_padding(extractor: PatchExtractor) -> None:
    import torch

    stems = [CRACK, FRAY]
    padded_spec = FeatureSpec(size=256, pad=32)
    extractor = PatchExtractor(extractor.model, padded_spec)
    pixels = np.stack([prepare(_rgb(s), padded_spec)[0] for s in stems])
    patches, embedding = extractor.extract_with_embedding(pixels)
    assert patches.tobytes() == extractor.extract(pixels).tobytes()
    # the separate full pass: the library's own extract_features on the mirror-padded input, the padding's
    # 32 px = 1 cell of the stride-32 head map cropped off each side, averaged
    model, pad = extractor.model, extractor.spec.pad
    with torch.inference_mode():
        padded = torch.nn.functional.pad(torch.from_numpy(pixels), (pad,) * 4, mode="reflect")
        head = model.extract_features(padded)[..., 1:-1, 1:-1].mean(dim=(2, 3)).numpy()
    assert head.shape == embedding.shape == (2, 1280)
    np.testing.assert_allclose(embedding, head, rtol=1e-4, atol=1e-5)


def _tiles(extractor: PatchExtractor, n_free: int) -> np.ndarray:
    free = sorted((TILE / "MT_Free/Imgs").glob("exp1_num_*.jpg"))[:n_free]
    return _features(extractor, [p.with_suffix("") for p in free] + [CRACK, FRAY])


def test_no_label_reference_is_bounded_streamable_and_deterministic(extractor: PatchExtractor) -> None:
    features = _tiles(extractor, 14)  # 16 images
    small = MutualReference.build(features[:10], n_refs=6, k=2, stride=2, seed=1)
    large = MutualReference.build(features, n_refs=6, k=2, stride=2, seed=1)
    # memory is fixed by n_refs, stride and dims, not by the batch: 6 images x 14 x 14 cells (28 / 2) x 64 dims
    # float32, plus the projection: a 344-d mean and 64 x 344 components
    assert small.nbytes == large.nbytes == 6 * 14 * 14 * 64 * 4 + 65 * 344 * 4
    assert large.patches.shape == (6, 196, 64) and len(set(large.ids.tolist())) == 6
    unprojected = MutualReference.build(features, n_refs=6, k=2, stride=2, dims=None, seed=1)
    assert unprojected.patches.shape == (6, 196, 344) and unprojected.components is None
    # scoring in chunks (as a stage streams a large batch) gives the same maps as scoring at once
    ids = np.arange(len(features))
    whole = large.score(features, ids=ids)
    chunks = np.concatenate([large.score(features[i : i + 5], ids=ids[i : i + 5]) for i in range(0, 16, 5)])
    assert chunks.tobytes() == whole.tobytes()
    again = MutualReference.build(features, n_refs=6, k=2, stride=2, seed=1)
    assert again.patches.tobytes() == large.patches.tobytes()
    assert again.components is not None and large.components is not None
    assert again.components.tobytes() == large.components.tobytes()
    assert again.score(features, ids=ids).tobytes() == whole.tobytes()
    # a sample image is never its own reference: given its id, it skips itself; without, its own distance 0 is
    # one of the k=2 averaged, so every cell is lower
    own = int(large.ids[0])
    excluded = large.score(features[own : own + 1], ids=ids[own : own + 1], normalise=False)
    included = large.score(features[own : own + 1], normalise=False)
    assert excluded.min() > 0 and (included < excluded).all()


def test_memory_bound_does_not_grow_past_the_caps() -> None:
    settings = {"ratio": 0.01, "max_patches": 4096, "min_patches": 1024, "max_candidates": 65_536}
    at_10k = memory_bound(10_000, 28, 344, **settings, n_refs=192, stride=6, dims=64)
    at_100k = memory_bound(100_000, 28, 344, **settings, n_refs=192, stride=6, dims=64)
    for key in ("bank_bytes", "candidate_bytes", "mutual_reference_bytes"):
        assert at_10k[key] == at_100k[key]
    assert at_100k["bank_bytes"] == 4096 * 344 * 4  # 5.6 MB
    # 192 images x 5 x 5 cells (28 / 6, rounded up) x 64 dims float32, plus the 65 x 344 projection: 1.3 MB
    assert at_100k["mutual_reference_bytes"] == 192 * 5 * 5 * 64 * 4 + 65 * 344 * 4
    assert at_100k["maps_bytes"] == 100_000 * 28 * 28 * 4
    unprojected = memory_bound(100_000, 32, 152, **settings, n_refs=40, stride=2, dims=None)
    assert unprojected["mutual_reference_bytes"] == 40 * 16 * 16 * 152 * 4


def test_position_standardisation_by_hand() -> None:
    # 5 maps, every cell of map i holds v[i]: median 3, |deviations| 2,1,0,1,7 -> MAD 1 -> spread 1.4826, plus
    # the median spread over cells (1.4826 too) = 2.9652; the outlier map becomes (10 - 3) / 2.9652 = 2.3607
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    maps = np.broadcast_to(values[:, None, None], (5, 4, 4)).astype(np.float32)
    out = position_standardised(maps, sample=5)
    np.testing.assert_allclose(out[:, 0, 0], (values - 3.0) / 2.9652, rtol=1e-4)
    assert out.tobytes() == position_standardised(maps, sample=5).tobytes()


def test_ok_reviewed_batches_are_standardised_from_sixteen_images(extractor: PatchExtractor) -> None:
    features = _tiles(extractor, 14)  # 16 images
    bank = PatchBank.build(features[:4], ratio=0.1, min_patches=256, seed=0)
    full = score_batch(features, mode="ok_reviewed", bank=bank)
    assert full.details["position_standardised"] is True
    np.testing.assert_allclose(full.grid_maps, position_standardised(bank.score(features)), rtol=1e-6)
    few = score_batch(features[:15], mode="ok_reviewed", bank=bank)
    assert few.details["position_standardised"] is False
    np.testing.assert_allclose(few.grid_maps, bank.score(features[:15]), rtol=1e-6)


def test_known_defect_share_sets_the_no_label_threshold() -> None:
    """Mostly-defective batches defeat the MAD rule (it assumes most images are OK); a known share does not."""
    scores = np.arange(1.0, 11.0)  # 1..10
    by_share = calibrate(scores, defect_share=0.3)
    assert by_share.method == "defect_share" and by_share.threshold == pytest.approx(7.3)  # 1 + 0.7 * 9
    assert by_share.is_defect.tolist() == [False] * 7 + [True] * 3
    mostly_defective = np.array([1.0, 1.1, 9.0, 9.2, 9.4, 9.6, 9.8, 10.0])
    assert calibrate(mostly_defective).is_defect.sum() == 0  # median + 3 MAD lies above every score
    assert calibrate(mostly_defective, defect_share=0.75).is_defect.sum() == 6
    labelled = calibrate(scores, labels=scores > 5, defect_share=0.3)  # labels win over the share
    assert labelled.method == "labelled" and labelled.is_defect.sum() == 5
