"""The anomaly pre-labeler in the prelabel stage: defect-vs-OK for every image, offline, from day one.

The scoring itself is :mod:`curation.prelabel.anomaly` (PatchCore-style patch scoring on the offline backbone);
this module puts it behind the stage's roles (:mod:`curation.prelabel.base`):

- :class:`PatchModel`: an ``ImageModel`` whose ``extract_patches`` gives (N, g, g, D) float16 patch features; the
  stage runs it through the cache and the engine like the embedder (:func:`curation.prelabel.compute.patch_features`).
  :class:`ClipPatchModel` does the same on a loaded CLIP model's vision tower (``backbone: clip``).
- :func:`choose_reference`: which reference applies (``prelabel.anomaly.reference``; ``auto``: golden when
  ``reference_dir`` is set, else ``ok_reviewed`` once the labels hold ``min_ok_references`` OK images, else
  ``none``), and :func:`golden_features` for the golden mode.
- :class:`AnomalyScorer`: a ``Scorer``. It scores the batch, calibrates the threshold (on the labels when both OK
  and defect images are labelled, else the robust MAD rule), gives ``source="anomaly"`` probabilities (replaced by
  any class scorer after it) and, for few-shot, per-image extra features: the map-weighted pooled patch features
  and the robust z of the anomaly score (:func:`fewshot_extra`).
- :func:`map_outputs`: per image the map PNG, the regions and the region description.

Probabilities of anomaly rows: ``p_defect = sigmoid((score - threshold) / spread)`` with ``spread`` = 1.4826 x the
median absolute deviation of the batch's scores (so 0.5 exactly at the threshold, ~0.05 at the median image under
the default z = 3); ``p_<ok class> = 1 - p_defect``, each other class ``p_defect / (classes - 1)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import InputError
from curation.prelabel import regions as region_lib
from curation.prelabel.anomaly import (
    ClipTowerExtractor,
    FeatureSpec,
    PatchBank,
    PatchExtractor,
    Placement,
    ReferenceMode,
    aligned_golden_features,
    calibrate,
    check_tower_spec,
    image_map,
    prepare,
    robust_spread,
    score_batch,
    weighted_pool,
)
from curation.prelabel.base import Outcome, ScoreInput, Scores
from curation.prelabel.engines import ModelRecipe
from curation.prelabel.prompts import settings_hash
from schemas.ontology import Severity
from schemas.params import DEFAULT_EXTENSIONS
from schemas.params_anomaly import AnomalyDescriptionParams, AnomalyParams
from schemas.params_prelabel import PrelabelParams

MAPS_DIR = "anomaly_maps"
_POOL_CHUNK = 32  # images per weighted_pool call: bounds its float64 temporaries (~70 MB at 28 x 28 x 344)


class ReferenceInputError(InputError):
    """Golden references or reviewed-OK labels that the chosen reference mode cannot use."""


class PatchModel:
    """The offline backbone's multi-scale patch features (an ``ImageModel`` with ``extract_patches``).

    Args:
        backbone: :class:`curation.prelabel.models.OfflineBackbone` (built in float32: the extractor feeds float32).
        spec: the anomaly input and feature settings (its defaults belong to :mod:`curation.prelabel.anomaly`).
    """

    def __init__(self, backbone: Any, spec: FeatureSpec | None = None) -> None:
        self.spec = spec or FeatureSpec()
        self.backbone = backbone
        self.name = f"{backbone.name}-patches"
        self.version = backbone.version
        self._extractor: PatchExtractor | ClipTowerExtractor | None = PatchExtractor(
            backbone.model, self.spec, device=backbone.runtime.device
        )

    @property
    def extractor(self) -> PatchExtractor | ClipTowerExtractor:
        """What turns prepared inputs into patch features (built on first use where the weights load lazily)."""
        if self._extractor is None:
            self._extractor = self._make_extractor()
        return self._extractor

    def _make_extractor(self) -> PatchExtractor | ClipTowerExtractor:
        raise NotImplementedError(f"{self.name}: no extractor")

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def recipe(self, device: str) -> ModelRecipe:
        return ModelRecipe("patches", None, device, self.spec)

    def extract_patches(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) anomaly inputs -> (N, g, g, D) float16 patch features."""
        return self.extractor.extract(pixels).astype(np.float16)

    def extract_shared(self, pixels: np.ndarray) -> np.ndarray:
        """The image embeddings and the patch features from ONE backbone pass
        (:meth:`~curation.prelabel.anomaly.PatchExtractor.extract_with_embedding`), packed as one (N, E + g*g*D)
        float32 array so that both engines carry it like any other output; :meth:`unpack_shared` splits it."""
        patches, embeddings = self._lite.extract_with_embedding(pixels)
        return np.concatenate([embeddings, patches.reshape(len(patches), -1)], axis=1).astype(np.float32)

    def unpack_shared(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, E + g*g*D) from :meth:`extract_shared` -> (N, E) float32 embeddings, (N, g, g, D) float16 patches."""
        packed = np.asarray(packed, np.float32)
        width = self.embedding_dim
        embeddings = np.ascontiguousarray(packed[:, :width])
        return embeddings, packed[:, width:].reshape(len(packed), *self.grid).astype(np.float16)

    @property
    def embedding_dim(self) -> int:
        """Width of the backbone's pooled head (1280 for Lite0)."""
        return int(self._lite.model._conv_head.out_channels)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(g, g, D) of one image's patch features."""
        model = self._lite.model
        stride = 2  # the stem
        for block in model._blocks[: min(self.spec.blocks) + 1]:
            step = block._block_args.stride
            stride *= int(step[0] if isinstance(step, list | tuple) else step)
        side = self.spec.size // stride
        dim = sum(int(model._blocks[b]._block_args.output_filters) for b in self.spec.blocks)
        return side, side, dim

    @property
    def _lite(self) -> PatchExtractor:
        """The EfficientNet-Lite extractor (the one-pass embedding and the block geometry exist only there)."""
        if not isinstance(self.extractor, PatchExtractor):
            raise NotImplementedError(f"{self.name}: no EfficientNet-Lite backbone (the one pass needs one)")
        return self.extractor


class ClipPatchModel(PatchModel):
    """Patch features from the loaded CLIP model's vision tower (:class:`~curation.prelabel.anomaly.ClipTowerExtractor`)
    instead of the offline backbone, for ``prelabel.anomaly.backbone: clip``. Same roles as :class:`PatchModel`
    (cache, engines, golden mode), a separate pass from the CLIP embedding (whose input is ``preprocess.resize``'s,
    not the squashed anomaly input).

    Args:
        clip: :class:`curation.prelabel.models.ClipScorer` (its weights load on first use).
        layers: hidden-state indices of the tower (0 = patch embeddings, L = last layer); None: half and three
            quarters of the depth (6 and 9 of ViT-B's 12), the middle layers anomaly work on CLIP towers uses.
        spec: a full spec instead (Ray actors rebuild the model from it); its size must be the tower's input size.
    """

    def __init__(self, clip: Any, layers: Sequence[int] | None = None, spec: FeatureSpec | None = None) -> None:
        from transformers import AutoConfig

        # the config file only: the weights load when patches are first computed (a cached rerun never loads them)
        config = AutoConfig.from_pretrained(clip.checkpoint.folder).vision_config
        depth = int(config.num_hidden_layers)
        if spec is None:
            chosen = tuple(sorted(set(layers or (depth // 2, (3 * depth) // 4))))
            spec = FeatureSpec(size=int(config.image_size), blocks=chosen, weights=(1.0,) * len(chosen))
        check_tower_spec(spec, depth)  # before any weights load
        self.spec = spec
        self.backbone = clip
        self.name = f"{clip.name}-patches"
        self.version = clip.version
        self._side = int(config.image_size) // int(config.patch_size)
        self._dim = int(config.hidden_size) * len(spec.blocks)
        self._extractor = None

    def _make_extractor(self) -> ClipTowerExtractor:
        clip = self.backbone
        return ClipTowerExtractor(
            clip.model, self.spec, mean=clip.spec.mean, std=clip.spec.std, device=clip.runtime.device
        )

    def recipe(self, device: str) -> ModelRecipe:
        return ModelRecipe("clip-patches", self.backbone.checkpoint, device, self.spec)

    @property
    def grid(self) -> tuple[int, int, int]:
        return self._side, self._side, self._dim


def load_patch_model(
    settings: AnomalyParams, device: str, *, clip: Any = None, notes: list[str] | None = None
) -> PatchModel:
    """The patch model of ``prelabel.anomaly.backbone``: the offline EfficientNet-Lite0 (float32 on the chosen
    device), or the vision tower of the loaded CLIP model (``clip``) for ``backbone: clip``. ``clip`` with no CLIP
    model loaded falls back to Lite0, announced in ``notes``.

    Raises:
        ModelUnavailableError: the offline backbone's packages are missing.
        AnomalyInputError: ``clip_layers`` outside the tower's depth.
    """
    from curation.prelabel.models import OfflineBackbone, Runtime, select_runtime

    if settings.backbone == "clip":
        if clip is not None:
            return ClipPatchModel(clip, settings.clip_layers)
        if notes is not None:
            notes.append(
                "prelabel.anomaly.backbone is clip but no CLIP model is loaded (see the note on prelabel.clip.model): "
                "the anomaly scorer uses the offline EfficientNet-Lite0 instead; supply the CLIP weights, or set "
                "backbone: efficientnet-lite0 to silence this"
            )
    runtime = select_runtime(device)
    return PatchModel(OfflineBackbone(Runtime(runtime.device, "float32")))


@dataclass(frozen=True)
class ReferenceChoice:
    """The reference mode for this run and why (a sentence for prelabel.json)."""

    mode: ReferenceMode
    reason: str


def choose_reference(settings: AnomalyParams, labels: dict[str, str] | None, ok: str | None) -> ReferenceChoice:
    """Apply ``prelabel.anomaly.reference`` (see the module docstring).

    Raises:
        ReferenceInputError: ``golden`` without ``reference_dir``, or ``ok_reviewed`` without OK labels.
    """
    n_ok = sum(1 for label in (labels or {}).values() if label == ok) if ok is not None else 0
    if settings.reference == "golden" or (settings.reference == "auto" and settings.reference_dir is not None):
        if settings.reference_dir is None:
            raise ReferenceInputError(
                "prelabel.anomaly.reference is golden but reference_dir is null; set reference_dir to the folder "
                "of golden (defect-free) images, or reference: auto"
            )
        return ReferenceChoice("golden", f"golden reference images in {settings.reference_dir}")
    if settings.reference == "ok_reviewed" or (settings.reference == "auto" and n_ok >= settings.min_ok_references):
        if n_ok == 0:
            raise ReferenceInputError(
                "prelabel.anomaly.reference is ok_reviewed but the labels hold no image of the OK class "
                f"({ok!r}); review some OK images first, or set reference: auto"
            )
        return ReferenceChoice("ok_reviewed", f"{n_ok} reviewed OK images (class {ok!r})")
    if settings.reference == "auto":
        why = (
            "no OK class in the ontology"
            if ok is None
            else f"{n_ok} reviewed OK images, fewer than min_ok_references={settings.min_ok_references}"
        )
        return ReferenceChoice("none", f"images compared with each other ({why})")
    return ReferenceChoice("none", "images compared with each other (reference: none)")


def golden_paths(settings: AnomalyParams, manifest_meta: Sequence[Any] | None, n_images: int) -> list[Path]:
    """Each image's golden reference file (``reference_column``: the file stem in ``reference_dir`` named by the
    image's ``meta_<column>`` value; without it the folder's only image).

    Raises:
        ReferenceInputError: the folder is missing or empty, a stem repeats, the column is missing, or a value names
            no file (one line naming the folder/value and the fix).
    """
    folder = settings.reference_dir
    assert folder is not None
    if not folder.is_dir():
        raise ReferenceInputError(
            f"prelabel.anomaly.reference_dir {folder}: not a folder; set it to the folder of golden (defect-free) "
            "images (relative to the project root) or to null"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in DEFAULT_EXTENSIONS)
    if not files:
        raise ReferenceInputError(
            f"prelabel.anomaly.reference_dir {folder}: holds no image ({', '.join(DEFAULT_EXTENSIONS)}); add the "
            "golden images or set reference_dir to null"
        )
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise ReferenceInputError(
                f"prelabel.anomaly.reference_dir {folder}: {by_stem[path.stem].name} and {path.name} share the name "
                f"{path.stem!r}; keep one image per product/line name"
            )
        by_stem[path.stem] = path
    if settings.reference_column is None:
        if len(files) != 1:
            raise ReferenceInputError(
                f"prelabel.anomaly.reference_dir {folder}: holds {len(files)} images but reference_column is null; "
                "keep one golden image there, or set reference_column to the metadata column naming each image's one"
            )
        return [files[0]] * n_images
    if manifest_meta is None:
        raise ReferenceInputError(
            f"prelabel.anomaly.reference_column {settings.reference_column!r}: the manifest has no column "
            f"meta_{settings.reference_column}; add the column to the metadata CSV (ingest.metadata) and re-run ingest"
        )
    out: list[Path] = []
    for row, value in enumerate(manifest_meta):
        found = by_stem.get(str(value)) if value is not None and not _missing(value) else None
        if found is None:
            raise ReferenceInputError(
                f"manifest row {row}: meta_{settings.reference_column} is {value!r}, which names no image in "
                f"{folder} (has {', '.join(sorted(by_stem)[:8])}); add that golden image or correct the metadata"
            )
        out.append(found)
    return out


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def golden_features(
    model: PatchModel,
    images: Sequence[np.ndarray],
    goldens: Sequence[np.ndarray],
    names: Sequence[str],
) -> np.ndarray:
    """Features of each image's golden reference aligned onto it (:func:`anomaly.aligned_golden_features`).

    Raises:
        ReferenceInputError: a golden image whose size differs from its image's (named).
    """
    for image, golden, name in zip(images, goldens, names, strict=True):
        if image.shape[:2] != golden.shape[:2]:
            raise ReferenceInputError(
                f"{name}: golden reference is {golden.shape[1]}x{golden.shape[0]} px but the image is "
                f"{image.shape[1]}x{image.shape[0]}; golden references must match their product's image size"
            )
    features, _ = aligned_golden_features(model.extractor, list(images), list(goldens))
    return features.astype(np.float16)


def read_golden(path: Path) -> np.ndarray:
    """A golden image as upright uint8 RGB.

    Raises:
        ReferenceInputError: it does not decode.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except Exception as err:
        raise ReferenceInputError(
            f"{path}: the golden reference image does not decode ({type(err).__name__}: {err}); replace it"
        ) from err


@dataclass
class AnomalyRun:
    """The anomaly scorer's results for the batch (rows in manifest order).

    Attributes:
        mode: the reference mode used.
        scores: (N,) image scores (map maxima).
        grid_maps: (N, g, g) float32 patch-score grids.
        threshold: ``is_defect = scores > threshold``.
        method: ``mad``, ``defect_share`` or ``labelled`` (:func:`anomaly.calibrate`).
        is_defect: (N,) bool.
        p_defect: (N,) probability of a defect (see the module docstring).
        map_zero: the score drawn as 0 in the map PNGs (0 for distance modes; the batch's lowest patch score in
            mode ``none``, whose position-normalised scores can be negative).
        details: settings and sizes, for prelabel.json.
    """

    mode: ReferenceMode
    scores: np.ndarray
    grid_maps: np.ndarray
    threshold: float
    method: str
    is_defect: np.ndarray
    p_defect: np.ndarray
    map_zero: float
    details: dict[str, Any] = field(default_factory=dict)


class AnomalyScorer:
    """A :class:`~curation.prelabel.base.Scorer`: defect-vs-OK from the batch's patch features.

    Runs first: its ``source="anomaly"`` scores stand until a class scorer (zero-shot, few-shot) gives its own;
    its :attr:`run` (maps, threshold) fills the anomaly columns either way, and its ``Outcome.features`` (see
    :func:`fewshot_extra`) go to few-shot.

    Args:
        settings: the ``prelabel`` params (``anomaly``).
        reference: the chosen reference (:func:`choose_reference`).
        labels: human labels by image id (for the ok_reviewed bank and calibration), or None.
        ok: the OK class (:func:`curation.ontology.ok_class`), or None.
        golden: (N, g, g, D) aligned golden features in mode ``golden``.
        feature_key: the patch model's key and spec hash (in ``model_version``).
    """

    name = "anomaly"

    def __init__(
        self,
        settings: PrelabelParams,
        reference: ReferenceChoice,
        *,
        labels: dict[str, str] | None,
        ok: str | None,
        golden: np.ndarray | None = None,
        feature_key: str,
    ) -> None:
        self.settings = settings
        self.reference = reference
        self.labels = labels or {}
        self.ok = ok
        self.golden = golden
        self.feature_key = feature_key
        self.run: AnomalyRun | None = None

    def score(self, batch: ScoreInput) -> Outcome:
        anomaly = self.settings.anomaly
        features = batch.patch_features
        if features is None or len(features) < 2:
            n = 0 if features is None else len(features)
            return Outcome(
                {"status": "too_few_images", "images": n},
                (f"anomaly scoring skipped: it needs at least 2 images, got {n}",),
            )
        mode = self.reference.mode
        labelled = {i: self.labels[image_id] for i, image_id in enumerate(batch.image_ids) if image_id in self.labels}
        details: dict[str, Any] = {}
        if mode == "ok_reviewed":
            maps, details = self._ok_reviewed(features, [i for i, label in labelled.items() if label == self.ok])
        elif mode == "golden":
            maps = score_batch(features, mode="golden", golden_features=self.golden, z=anomaly.z).grid_maps
            details = {"golden_dir": str(anomaly.reference_dir), "radius": 1}
        else:
            k = min(anomaly.neighbours, len(features) - 1)
            result = score_batch(
                features,
                mode="none",
                k=k,
                n_refs=anomaly.mutual_refs,
                stride=anomaly.mutual_stride,
                dims=anomaly.mutual_dims,
                seed=anomaly.seed,
                z=anomaly.z,
            )
            maps, details = result.grid_maps, result.details
        scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
        rows = sorted(labelled)
        truth = np.array([labelled[i] != self.ok for i in rows], dtype=bool)
        both = self.ok is not None and 0 < int(truth.sum()) < len(truth)
        decision = calibrate(
            scores[rows] if both else scores,
            labels=truth if both else None,
            z=anomaly.z,
            defect_share=anomaly.defect_share,
        )
        threshold = float(decision.threshold)
        is_defect = scores > threshold
        spread = max(robust_spread(scores)[1], 1e-12)
        p_defect = 1.0 / (1.0 + np.exp(-np.clip((scores - threshold) / spread, -50, 50)))
        map_zero = float(min(0.0, maps.min())) if mode == "none" else 0.0
        self.run = AnomalyRun(mode, scores, maps, threshold, decision.method, is_defect, p_defect, map_zero, details)
        report: dict[str, Any] = {
            "status": "used",
            "reference": mode,
            "reference_reason": self.reference.reason,
            "threshold": round(threshold, 6),
            "method": decision.method,
            "calibration_labels": {"ok": int((~truth).sum()), "defect": int(truth.sum())} if both else None,
            "spread": round(spread, 6),
            "map_zero": round(map_zero, 6),
            "ok_class": self.ok,
            "images": len(scores),
            "patch_features_bytes": int(features.nbytes),  # the batch's float16 patch grids, held while scoring
            "ok": int((~is_defect).sum()),
            "defect": int(is_defect.sum()),
            **details,
        }
        notes: list[str] = []
        probabilities = _probabilities(p_defect, batch.class_names, self.ok)
        if self.ok is None:
            notes.append(
                "anomaly rows are labelled 'defect' (type not chosen) whatever their score: the ontology has no OK "
                "class (ingest.ok_label names none); anomaly_defect still gives the calibrated call"
            )
        version = f"{self.feature_key}+anomaly-{mode}-" + settings_hash(
            anomaly.model_dump(mode="json"), mode, round(threshold, 9), sorted(self.labels.items())
        )
        scores_out = Scores("anomaly", probabilities, version, [None] * len(scores))
        return Outcome(report, tuple(notes), scores_out, fewshot_extra(features, maps, scores))

    def _ok_reviewed(self, features: np.ndarray, ok_rows: list[int]) -> tuple[np.ndarray, dict[str, Any]]:
        """Maps against banks of the reviewed OK images, cross-fitted: the OK rows are split in two halves (even and
        odd positions); each half is scored against the other half's bank, every other image against both (the
        nearest patch of the union), so the OK images' own scores, which calibrate the threshold, are honest."""
        anomaly = self.settings.anomaly
        halves = [ok_rows[0::2], ok_rows[1::2]] if len(ok_rows) >= 2 else [ok_rows, ok_rows]
        banks = [
            PatchBank.build(
                features,
                images=half,
                max_patches=anomaly.bank_max_patches,
                min_patches=min(1024, anomaly.bank_max_patches),
                method=anomaly.bank_method,
                seed=anomaly.seed,
            )
            for half in halves
        ]
        by_bank = [bank.score(features) for bank in banks]
        maps = np.minimum(by_bank[0], by_bank[1])
        if len(ok_rows) >= 2:
            maps[halves[0]] = by_bank[1][halves[0]]
            maps[halves[1]] = by_bank[0][halves[1]]
        details = {
            "bank_patches": [len(b.patches) for b in banks],
            "bank_bytes": sum(b.nbytes for b in banks),
            "bank_method": banks[0].method,
            "bank_images": len(ok_rows),
            "cross_fitted": len(ok_rows) >= 2,
        }
        return maps.astype(np.float32), details


def _probabilities(p_defect: np.ndarray, class_names: list[str], ok: str | None) -> np.ndarray:
    """(N, classes): ``1 - p_defect`` for the OK class, the rest shared equally (uniform without an OK class)."""
    n = len(class_names)
    if ok is None or n < 2:
        return np.full((len(p_defect), n), 1.0 / n)
    out = np.repeat((p_defect / (n - 1))[:, None], n, axis=1)
    out[:, class_names.index(ok)] = 1.0 - p_defect
    return out


def fewshot_extra(features: np.ndarray, grid_maps: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, D + 1): the map-weighted pooled patch features (:func:`anomaly.weighted_pool`) and, last, the robust z
    of the image score ((score - median) / (1.4826 MAD)). Few-shot normalises the pooled block like the embedding
    and keeps z as it is (weight 1: chosen on the tune half of magnetic tile, docs/anomaly.md)."""
    pooled = np.concatenate(
        [
            weighted_pool(features[i : i + _POOL_CHUNK].astype(np.float32), grid_maps[i : i + _POOL_CHUNK])
            for i in range(0, len(features), _POOL_CHUNK)
        ]
    )
    median, spread = robust_spread(scores)
    z = (scores - median) / (spread + 1e-12)
    return np.hstack([pooled, z[:, None].astype(np.float32)])


def placement(height: int, width: int, spec: FeatureSpec) -> Placement:
    """Where an upright image of ``height`` x ``width`` sits in the anomaly input (as :func:`anomaly.prepare`)."""
    if spec.fit == "squash":
        return Placement(height, width, 0, 0, spec.size, spec.size, spec.size)
    return prepare(np.zeros((height, width, 3), np.uint8), spec)[1]


_INVERSE = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}  # EXIF orientation -> the one that undoes its transpose


def to_stored(upright_map: np.ndarray, orientation: int) -> np.ndarray:
    """A map of the upright image turned back to the stored image's pixels (regions use stored pixels)."""
    inverse = _INVERSE.get(int(orientation))
    if inverse is None:
        return upright_map
    from PIL import Image

    from curation.imaging import TRANSPOSE

    image = Image.fromarray(np.asarray(upright_map, np.float32), mode="F").transpose(TRANSPOSE[inverse])
    return np.asarray(image, dtype=np.float32)


def map_png(stored_map: np.ndarray, *, zero: float, threshold: float, max_side: int) -> bytes:
    """8-bit PNG bytes: ``round(255 * clip((s - zero) / (2 * (threshold - zero)), 0, 1))`` (128 ~ the threshold),
    longest side at most ``max_side`` (area resampling), the stored image's aspect."""
    import cv2

    height, width = stored_map.shape
    scale = min(1.0, max_side / max(height, width))
    small: np.ndarray = np.asarray(stored_map, np.float32)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    span = max(threshold - zero, 1e-12)
    values = np.rint(255.0 * np.clip((small - zero) / (2.0 * span), 0.0, 1.0)).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", values)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def describe_regions(
    stored_map: np.ndarray,
    *,
    score: float,
    threshold: float,
    is_defect: bool,
    pixel_pitch_mm: float | None,
    settings: AnomalyParams,
    glossary: dict[str, str],
    severities: Sequence[Severity] = (),
) -> tuple[str, str, list[dict[str, Any]]]:
    """(English, Korean, region JSON list) for one image: regions of its map (images called defective only) and
    their description (:func:`curation.prelabel.regions.describe_image`)."""
    found = region_lib.regions_from_map(stored_map, settings=settings.regions) if is_defect else []
    return region_lib.describe_image(
        found,
        stored_map.shape[:2],
        score=score,
        threshold=threshold,
        is_defect=is_defect,
        pixel_pitch_mm=pixel_pitch_mm,
        settings=settings.description,
        glossary=glossary,
        severities=severities,
    )


@dataclass(frozen=True)
class AnomalyColumns:
    """Per-row anomaly columns of predictions.parquet and the map PNGs (bytes by relative path)."""

    score: list[float]
    defect: list[bool]
    reference: str
    map_path: list[str]
    regions: list[str]
    text_en: list[str]
    text_ko: list[str]
    pngs: dict[str, bytes]


def map_outputs(
    run: AnomalyRun,
    image_ids: list[str],
    shapes: list[tuple[int, int, int]],
    pitches: list[float | None],
    spec: FeatureSpec,
    settings: AnomalyParams,
    glossary: dict[str, str],
    on_image: Any = None,
    severities: Sequence[Severity] = (),
) -> AnomalyColumns:
    """Maps (PNG), regions and descriptions for every image.

    Args:
        shapes: per image (stored height, stored width, EXIF orientation).
        pitches: per image millimetres per pixel, or None.
        on_image: called with 1 after each image (progress).
    """
    paths, region_texts, en, ko, pngs = [], [], [], [], {}
    for i, image_id in enumerate(image_ids):
        height, width, orientation = shapes[i]
        upright_h, upright_w = (width, height) if int(orientation) in (5, 6, 7, 8) else (height, width)
        upright_map = image_map(run.grid_maps[i], placement(upright_h, upright_w, spec))
        stored = to_stored(np.asarray(upright_map, np.float32), orientation)
        path = f"{MAPS_DIR}/{image_id}.png"
        pngs[path] = map_png(stored, zero=run.map_zero, threshold=run.threshold, max_side=settings.map_max_side)
        text_en, text_ko, objects = describe_regions(
            stored,
            score=float(run.scores[i]),
            threshold=run.threshold,
            is_defect=bool(run.is_defect[i]),
            pixel_pitch_mm=pitches[i],
            settings=settings,
            glossary=glossary,
            severities=severities,
        )
        paths.append(path)
        region_texts.append(json.dumps(objects, separators=(",", ":"), ensure_ascii=False))
        en.append(text_en)
        ko.append(text_ko)
        if on_image is not None:
            on_image(1)
    return AnomalyColumns(
        [float(s) for s in run.scores],
        [bool(d) for d in run.is_defect],
        run.mode,
        paths,
        region_texts,
        en,
        ko,
        pngs,
    )


def pixel_pitches(manifest: Any, settings: AnomalyDescriptionParams) -> list[float | None]:
    """Per image mm per pixel (:func:`curation.prelabel.regions.pixel_pitch` of each manifest row).

    Raises:
        PixelPitchError: a row lacks the column, or holds a value that is not a positive number.
    """
    return [region_lib.pixel_pitch(row, settings) for _, row in manifest.iterrows()]
