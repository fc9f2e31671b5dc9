"""The anomaly scorer on a CLIP vision tower (``prelabel.anomaly.backbone: clip``), with a tiny random CLIP built from
a config (no weights can be downloaded here): the token grid's orientation and normalisation against the
transformers model itself, the stage's wiring, the recipe Ray actors rebuild it from, and the announced fallback.
Random weights make its scores meaningless, so nothing here is about accuracy (docs/anomaly.md says it is not
measured)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import build_clip

from curation.prelabel.anomaly import AnomalyInputError, ClipTowerExtractor, FeatureSpec, prepare
from curation.prelabel.anomaly_scorer import ClipPatchModel
from curation.prelabel.models import ClipScorer, Runtime, resolve_checkpoint
from curation.prelabel.stage import prelabel
from schemas.params_anomaly import AnomalyParams
from schemas.params_prelabel import ClipParams, PrelabelParams
from tests.test_prelabel_anomaly import TILES, _rows

SIDE = 64  # the tiny tower's input: 8 x 8 patches of 8 px


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> ClipScorer:
    folder = build_clip(tmp_path_factory.mktemp("clip") / "tiny-clip", image_size=SIDE)
    checkpoint = resolve_checkpoint(str(folder), None, section="clip", allow_download=False)
    return ClipScorer(checkpoint, Runtime("cpu", "float32"))


def _pixels(rgb: np.ndarray) -> np.ndarray:
    return prepare(rgb, FeatureSpec(size=SIDE))[0][None]


def test_token_grid_is_row_major_and_drops_the_class_token(clip) -> None:
    # Layer 0 is the patch embeddings (before any attention mixes tokens): changing the pixels of the top-right
    # 8 x 8 patch only must change exactly grid cell (row 0, last column).
    extractor = ClipTowerExtractor(
        clip.model, FeatureSpec(size=SIDE, blocks=(0,), weights=(1.0,), pool=1), mean=clip.spec.mean, std=clip.spec.std
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    changed = image.copy()
    changed[:8, -8:] = 255 - changed[:8, -8:]
    before, after = extractor.extract(_pixels(image)), extractor.extract(_pixels(changed))
    assert before.shape == (1, 8, 8, clip.model.config.vision_config.hidden_size)
    moved = np.abs(after - before).max(axis=-1)[0] > 1e-4
    assert moved[0, 7] and moved.sum() == 1


def test_tower_input_is_the_processors_own(clip) -> None:
    # The extractor re-scales the anomaly input to the tower's normalisation; the checkpoint's own processor is the
    # independent reference (a square image of the tower's size is only rescaled and normalised by it).
    import torch

    depth = clip.model.config.vision_config.num_hidden_layers
    extractor = ClipTowerExtractor(
        clip.model, FeatureSpec(size=SIDE, blocks=(depth,), weights=(1.0,), pool=1), mean=clip.spec.mean,
        std=clip.spec.std,
    )  # fmt: skip
    image = np.asarray(Image.open(sorted((TILES / "MT_Crack" / "Imgs").glob("*.jpg"))[0]).convert("RGB"))
    square = np.asarray(Image.fromarray(image).resize((SIDE, SIDE)))
    ours = extractor.extract(_pixels(square))
    inputs = clip.processor(images=Image.fromarray(square), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        tokens = clip.model.vision_model(pixel_values=inputs).last_hidden_state[:, 1:]
    expected = tokens.reshape(1, 8, 8, -1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3)


def test_default_layers_and_the_recipe_ray_actors_rebuild(clip) -> None:
    fresh = ClipScorer(clip.checkpoint, Runtime("cpu", "float32"))
    model = ClipPatchModel(fresh)
    assert fresh._model is None  # key, spec and grid come from the config: a cached rerun never loads the weights
    with pytest.raises(AnomalyInputError, match="clip_layers to layers of this 2-layer tower"):
        ClipPatchModel(fresh, layers=[3])  # told at once, not when the first patches are computed
    assert fresh._model is None
    assert model.spec.blocks == (1,) and model.spec.size == SIDE  # half and three quarters of 2 layers: layer 1
    assert model.grid == (8, 8, 32) and model.key.endswith(clip.version) and "-patches@" in model.key
    recipe = pickle.loads(pickle.dumps(model.recipe("cpu")))  # what the driver ships to an actor
    rebuilt = recipe.build()
    rng = np.random.default_rng(1)
    pixels = np.concatenate([_pixels(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(3)])
    out = model.extract_patches(pixels)
    assert out.dtype == np.float16 and out.shape == (3, 8, 8, 32)
    assert np.array_equal(rebuilt.extract_patches(pixels), out)
    with pytest.raises(NotImplementedError, match="no EfficientNet-Lite backbone"):
        model.extract_shared(pixels)


def _manifest():
    files = sorted((TILES / "MT_Free" / "Imgs").glob("*.jpg"))[:6] + [
        sorted((TILES / f"MT_{c}" / "Imgs").glob("*.jpg"))[0] for c in ("Blowhole", "Crack")
    ]
    return _rows(files)


def test_stage_scores_on_the_clip_tower_when_asked(clip, params, tmp_path) -> None:
    manifest = _manifest()
    settings = PrelabelParams(
        clip=ClipParams(model=str(clip.checkpoint.folder)),
        device="cpu",
        anomaly=AnomalyParams(backbone="clip", map_max_side=128),
    )
    result = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    predictions = result.predictions
    assert predictions["anomaly_score"].notna().all() and len(predictions) == len(manifest)
    assert result.report["anomaly"]["status"] == "used" and result.report["anomaly"]["reference"] == "none"
    assert result.cache_stats["patches_computed"] == len(manifest)
    assert not [n for n in result.notes if "anomaly" in n]  # no fallback
    assert sorted(result.maps) == sorted(f"anomaly_maps/{i}.png" for i in manifest["image_id"])  # a map per image
    again = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    assert again.cache_stats["patches_computed"] == 0  # cached under the CLIP tower's own namespace
    assert np.array_equal(again.predictions["anomaly_score"].to_numpy(), predictions["anomaly_score"].to_numpy())
    lite = PrelabelParams(clip=settings.clip, device="cpu", anomaly=AnomalyParams(map_max_side=128))
    other = prelabel(manifest, lite, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    assert other.cache_stats["patches_computed"] == len(manifest)  # Lite0's patches are not the tower's


def test_clip_backbone_without_clip_weights_falls_back_to_lite0_and_says_so(params, tmp_path: Path) -> None:
    manifest = _manifest()
    settings = PrelabelParams(
        clip=ClipParams(model=str(tmp_path / "no-such-clip")),
        device="cpu",
        anomaly=AnomalyParams(backbone="clip", map_max_side=128),
    )
    result = prelabel(manifest, settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    [note] = [n for n in result.notes if "anomaly.backbone is clip" in n]
    assert "EfficientNet-Lite0 instead" in note and "\n" not in note
    assert result.report["anomaly"]["status"] == "used" and result.predictions["anomaly_score"].notna().all()


def test_golden_mode_runs_on_the_clip_tower(clip, params, tmp_path: Path) -> None:
    source = np.asarray(Image.open(sorted((TILES / "MT_Free" / "Imgs").glob("*.jpg"))[0]).convert("RGB"))
    golden = tmp_path / "golden"
    golden.mkdir()
    Image.fromarray(source).save(golden / "tile.png")
    files = []
    for k in range(3):
        path = tmp_path / f"img{k}.png"
        Image.fromarray(np.roll(source, (2 * k, 3 * k), axis=(0, 1)).copy()).save(path)
        files.append(path)
    settings = PrelabelParams(
        clip=ClipParams(model=str(clip.checkpoint.folder)),
        device="cpu",
        anomaly=AnomalyParams(backbone="clip", map_max_side=128, reference_dir=golden),
    )
    result = prelabel(_rows(files), settings, params.ontology, cache_dir=tmp_path / "cache", ingest=params.ingest)
    assert result.report["anomaly"]["reference"] == "golden" and result.cache_stats["golden_computed"] == 3
    assert result.predictions["anomaly_score"].notna().all()
