"""Anomaly scoring on frozen offline-backbone patch features (PatchCore-style), for day-one pre-labels.

Every image becomes a grid of patch features (mid-level EfficientNet-Lite blocks, 3x3 average-pooled, the deeper
map upsampled and concatenated; or, with ``prelabel.anomaly.backbone: clip``, the patch tokens of chosen layers of a
CLIP-compatible vision tower: :class:`ClipTowerExtractor`). A patch's anomaly score is its distance to the nearest
*normal* patch; the image score is the map's maximum. What counts as normal depends on the reference mode, which
every result names:

- ``none``: no labels at all. Each image is compared with other images of the same unlabeled batch ("mutual"
  scoring): per patch, the distance to the nearest patch of each reference image, sorted, mean of the ``k``
  smallest (``k`` must exceed the number of near-duplicate shots of one part). The reference images are a seeded
  sample of the batch (:class:`MutualReference`, bounded memory, scored in chunks). Then every grid position is
  standardised by the sample's median and spread there (positions that are always busy, e.g. tile edges, stop
  dominating).
- ``ok_reviewed``: a :class:`PatchBank` built from images a reviewer marked OK (greedy coreset or random subsample,
  bounded size), queried by nearest neighbour; batches of 16+ images standardised per position the same way.
- ``golden``: each image against a golden reference image of its product, aligned first (phase-correlation
  translation), patch against patch in a small neighbourhood.

Two fixes measured on real data (see docs/anomaly.md) are built in: no zero padding reaches the maps (the input
can be mirror-padded before the network and the maps cropped back, ``FeatureSpec.pad``; zero padding made the border
the most anomalous place in most images), and scores are normalised per position. Everything is seeded and
deterministic on CPU; nearest neighbours go through torch matrix products in bounded chunks (no extra dependency;
exact search is fast enough at bank sizes of a few thousand patches).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import cv2
import numpy as np

from curation.errors import InputError

ReferenceMode = Literal["none", "ok_reviewed", "golden"]
Fit = Literal["squash", "letterbox"]
_LITE_MEAN = 0.5  # TF EfficientNet-Lite input scaling: (x/255 - 0.5) / 0.5
_CHUNK = 4096  # query rows per cdist call: bounds the distance matrix to CHUNK x bank floats
# No-label (MutualReference) defaults, measured on magnetic tile (docs/anomaly.md); params.yaml's
# prelabel.anomaly.neighbours / mutual_refs / mutual_stride / mutual_dims carry the same values for the stage.
MUTUAL_K = 10
MUTUAL_REFS = 192
MUTUAL_STRIDE = 6
MUTUAL_DIMS = 64


class AnomalyInputError(InputError):
    """Inputs the anomaly scorer cannot use (empty bank, mismatched shapes, too few images)."""


@dataclass(frozen=True)
class FeatureSpec:
    """How patch features are taken from the backbone.

    The defaults were chosen on the tune half of magnetic tile and checked on the held-out half (docs/anomaly.md):
    a 224 px squash without padding is the offline embedding pass's own input, so one forward pass gives the
    embedding and the patches (:meth:`PatchExtractor.extract_with_embedding`); it scored as well as 256 px with 32
    px mirror padding at half the cost, once the maps are standardised per position (which absorbs the border
    effect the padding was for).

    Attributes:
        size: square input side in pixels.
        pad: mirror padding in input pixels added on every side before the network, cropped off the maps after.
            Must be a multiple of the deepest block's stride (0: none).
        blocks: indices of the backbone blocks whose outputs are used (Lite0: 4 = stride 8, 40 ch; 10 = stride 16,
            112 ch; 14 = stride 32, 192 ch -> 344-d patches on a size/8 grid, the deeper maps upsampled).
        weights: a factor per block applied to its features (distances weigh the blocks by it). Block 4 at 0.5:
            its texture detail otherwise dominates the nearest-neighbour distances (200 OK references, tune
            half: 0.883 -> 0.897 image AUROC without block 14).
        pool: side of the average-pooling neighbourhood applied to each block's map (PatchCore's local aggregation).
        fit: ``squash`` resizes to size x size; ``letterbox`` keeps the aspect ratio and fills the rest by mirroring.
    """

    size: int = 224
    pad: int = 0
    blocks: tuple[int, ...] = (4, 10, 14)
    weights: tuple[float, ...] = (0.5, 1.0, 1.0)
    pool: int = 3
    fit: Fit = "squash"

    def __post_init__(self) -> None:
        if list(self.blocks) != sorted(set(self.blocks)):
            raise AnomalyInputError(f"FeatureSpec blocks {self.blocks} must be distinct and in increasing order")
        if len(self.weights) != len(self.blocks):
            raise AnomalyInputError(
                f"FeatureSpec has {len(self.blocks)} blocks {self.blocks} but {len(self.weights)} weights "
                f"{self.weights}; give one weight per block"
            )


@dataclass(frozen=True)
class Placement:
    """Where an image sits inside the square network input (for mapping scores back to image pixels)."""

    height: int
    width: int
    top: int
    left: int
    inner_h: int
    inner_w: int
    size: int


def prepare(rgb: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, Placement]:
    """uint8 RGB (H, W, 3) -> normalised float32 (3, size, size) input and its placement.

    Raises:
        AnomalyInputError: the array is not an RGB image.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise AnomalyInputError(f"expected an RGB image array (H, W, 3), got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    size = spec.size
    if spec.fit == "squash":
        resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        placement = Placement(height, width, 0, 0, size, size, size)
    else:
        scale = size / max(height, width)
        inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
        inner = cv2.resize(rgb, (inner_w, inner_h), interpolation=cv2.INTER_AREA)
        top, left = (size - inner_h) // 2, (size - inner_w) // 2
        resized = cv2.copyMakeBorder(
            inner, top, size - inner_h - top, left, size - inner_w - left, cv2.BORDER_REFLECT_101
        )
        placement = Placement(height, width, top, left, inner_h, inner_w, size)
    pixels = (resized.astype(np.float32) / 255.0 - _LITE_MEAN) / _LITE_MEAN
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)), placement


class PatchExtractor:
    """Multi-scale patch features from an EfficientNet-Lite model (``efficientnet_lite_pytorch.EfficientNet``).

    The network stops after the deepest block in ``spec.blocks``. Use
    :class:`curation.prelabel.models.OfflineBackbone` ``.model`` for the project's offline Lite0.
    """

    def __init__(self, model: Any, spec: FeatureSpec | None = None, *, device: str = "cpu") -> None:
        self.model = model
        self.spec = spec or FeatureSpec()
        self.device = device
        deepest = max(self.spec.blocks)
        if self.spec.size % 32 or self.spec.pad % 32:
            raise AnomalyInputError(
                f"anomaly input size {self.spec.size} and padding {self.spec.pad} must be multiples of 32 "
                "(the deepest stride), so the padding crops off whole feature cells"
            )
        if deepest >= len(model._blocks):
            raise AnomalyInputError(f"block {deepest} does not exist: the backbone has {len(model._blocks)} blocks")

    def extract(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, size, size) prepared inputs -> (N, g, g, D) float32 patch features, g = size / stride of the
        shallowest block used. The network stops after the deepest block used."""
        return self._forward(pixels, embed=False)[0]

    def extract_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Patch features and the pooled image embedding from ONE backbone pass.

        The pass continues after the deepest patch block through the remaining blocks and the head; the embedding
        is the head's output averaged over the cells of the unpadded image (the mirror padding, ``pad / 32`` cells
        per side, is cropped off first), so it matches ``model.extract_features(padded)`` cropped and averaged.

        Returns:
            (N, g, g, D) float32 patch features (same as :meth:`extract`) and (N, E) float32 embeddings
            (E = 1280 for Lite0-2).
        """
        features, embedding = self._forward(pixels, embed=True)
        return features, cast(np.ndarray, embedding)  # embed=True always pools one

    def _forward(self, pixels: np.ndarray, *, embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import torch
        import torch.nn.functional as F

        spec = self.spec
        model = self.model
        deepest = max(spec.blocks)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
            x = F.pad(x, (spec.pad,) * 4, mode="reflect")
            x = model._swish(model._bn0(model._conv_stem(x)))
            maps = []
            last = len(model._blocks) if embed else deepest + 1
            for index, block in enumerate(model._blocks[:last]):
                x = block(x)  # eval mode: no drop-connect
                if index in spec.blocks:
                    maps.append(x)
            embedding = None
            if embed:
                head = model._swish(model._bn1(model._conv_head(x)))
                cells = spec.pad * head.shape[-1] // (spec.size + 2 * spec.pad)
                head = head[..., cells : head.shape[-2] - cells, cells : head.shape[-1] - cells]
                embedding = head.mean(dim=(2, 3)).float().cpu().numpy()
            grid = None
            parts = []
            for feature, weight in zip(maps, spec.weights, strict=True):
                cells = spec.pad * feature.shape[-1] // (spec.size + 2 * spec.pad)  # padding in this map's cells
                feature = _pooled(feature, spec.pool)
                feature = feature[..., cells : feature.shape[-2] - cells, cells : feature.shape[-1] - cells]
                if grid is None:
                    grid = feature.shape[-2:]
                elif feature.shape[-2:] != grid:
                    feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=False)
                parts.append(_weighted(feature, weight))
            out = torch.cat(parts, dim=1).permute(0, 2, 3, 1)
            return out.float().cpu().numpy(), embedding


class ClipTowerExtractor:
    """Patch features from a CLIP-compatible vision tower (a ViT: CLIP, SigLIP): the patch tokens of the transformer
    layers ``spec.blocks`` (indices into the tower's hidden states: 0 = the patch embeddings, L = the last layer),
    on a grid of ``size / patch_size`` cells, each layer's grid average-pooled over ``spec.pool`` cells and weighted
    by ``spec.weights`` as :class:`PatchExtractor` does for CNN blocks, then concatenated.

    Inputs are the anomaly inputs of :func:`prepare` (EfficientNet-Lite scaling); they are re-scaled to the
    tower's own normalisation (``mean``, ``std`` on the 0-1 scale) here, so one prepared input serves both.
    A class token, when the tower has one (CLIP; SigLIP has none), is dropped.
    """

    def __init__(
        self,
        model: Any,
        spec: FeatureSpec,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.spec = spec
        self.device = device
        self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        check_tower_spec(spec, int(model.config.vision_config.num_hidden_layers))

    def extract(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, size, size) prepared inputs -> (N, g, g, D) float32 patch features."""
        import torch

        spec = self.spec
        rgb = np.ascontiguousarray(pixels, dtype=np.float32) * _LITE_MEAN + _LITE_MEAN  # back to the 0-1 scale
        tower_input = (rgb - self.mean) / self.std
        vision = self.model.vision_model
        with torch.inference_mode():
            x = torch.from_numpy(tower_input).to(self.device, dtype=self.model.dtype)
            hidden = vision(pixel_values=x, output_hidden_states=True).hidden_states
            parts = []
            for layer, weight in zip(spec.blocks, spec.weights, strict=True):
                tokens = hidden[layer].float()
                side = math.isqrt(tokens.shape[1])
                if side * side != tokens.shape[1]:  # a class token first (CLIP)
                    tokens = tokens[:, 1:]
                    side = math.isqrt(tokens.shape[1])
                grid = tokens.reshape(len(tokens), side, side, -1).permute(0, 3, 1, 2)  # row-major patch order
                parts.append(_weighted(_pooled(grid, spec.pool), weight))
            return torch.cat(parts, dim=1).permute(0, 2, 3, 1).cpu().numpy()


def check_tower_spec(spec: FeatureSpec, depth: int) -> None:
    """A :class:`ClipTowerExtractor` spec must name hidden states of a ``depth``-layer tower and have no padding.

    Raises:
        AnomalyInputError: otherwise (named, with the setting to change).
    """
    if spec.pad or min(spec.blocks) < 0 or max(spec.blocks) > depth:
        raise AnomalyInputError(
            f"CLIP tower patch features: layers {spec.blocks} must lie in 0..{depth} and padding must be 0 "
            f"(got {spec.pad}); set prelabel.anomaly.clip_layers to layers of this {depth}-layer tower"
        )


def _pooled(feature: Any, pool: int) -> Any:
    """PatchCore's local aggregation: a (N, C, H, W) tensor average-pooled over ``pool`` x ``pool`` cells (same
    size; border cells average only the cells that exist)."""
    import torch.nn.functional as F

    return F.avg_pool2d(feature, pool, stride=1, padding=pool // 2, count_include_pad=False) if pool > 1 else feature


def _weighted(feature: Any, weight: float) -> Any:
    """A block's or layer's features scaled by its ``FeatureSpec.weights`` factor (untouched at 1)."""
    return feature * weight if weight != 1.0 else feature


def _nearest(query: np.ndarray, bank: np.ndarray, k: int = 1) -> np.ndarray:
    """Euclidean distance from every query row to its k nearest bank rows (mean of the k), exact, chunked."""
    import torch

    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    b = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))
    out = np.empty(len(query), np.float32)
    with torch.inference_mode():
        for start in range(0, len(q), _CHUNK):
            d = torch.cdist(q[start : start + _CHUNK], b, compute_mode="use_mm_for_euclid_dist")
            if k == 1:
                out[start : start + _CHUNK] = d.min(dim=1).values.numpy()
            else:
                out[start : start + _CHUNK] = d.topk(k, dim=1, largest=False).values.mean(dim=1).numpy()
    return out


def _nearest_per_image(query: np.ndarray, refs: np.ndarray, group: int = 16) -> np.ndarray:
    """(P, D) query patches vs (R, P', D) reference images -> (R, P) distance to each image's nearest patch; refs
    are compared ``group`` images at a time (one matrix product each, bounded memory: P x group x P' floats).

    Squared distances come from one ``addmm`` (|q|^2 + |r|^2 - 2 q.r, as ``torch.cdist``'s matrix-product mode
    computes them) and the square root is taken after the minimum over each image's patches, not before: the
    same distances with less work than ``cdist`` (no square root per pair)."""
    import torch

    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    q_norm = (q * q).sum(dim=1, keepdim=True)
    out = np.empty((len(refs), len(query)), np.float32)
    with torch.inference_mode():
        for start in range(0, len(refs), group):
            part = torch.from_numpy(np.ascontiguousarray(refs[start : start + group], dtype=np.float32))
            flat = part.reshape(-1, part.shape[-1])
            squared = torch.addmm(q_norm + (flat * flat).sum(dim=1)[None], q, flat.T, alpha=-2.0)
            nearest = squared.reshape(len(q), len(part), -1).amin(dim=2).clamp_min_(0.0).sqrt_()
            out[start : start + len(part)] = nearest.T.numpy()
    return out


def greedy_coreset(patches: np.ndarray, n: int, *, seed: int = 0, projection_dim: int = 64) -> np.ndarray:
    """Indices of ``n`` rows chosen by greedy k-center selection (PatchCore): each pick is the row farthest from
    those picked so far. Distances are taken in a seeded random projection (Johnson-Lindenstrauss) when the
    features are wider than ``projection_dim``; the first pick is drawn with ``seed``."""
    import torch

    total = len(patches)
    if n >= total:
        return np.arange(total)
    data = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)
    if data.shape[1] > projection_dim:
        matrix = torch.randn(data.shape[1], projection_dim, generator=generator) / np.sqrt(projection_dim)
        data = data @ matrix
    first = int(torch.randint(total, (1,), generator=generator).item())
    chosen = np.empty(n, np.int64)
    chosen[0] = first
    with torch.inference_mode():
        # squared distances via |a|^2 + |b|^2 - 2ab: one matrix-vector product per pick, no (M, D) temporaries
        norms = (data * data).sum(dim=1)
        distance = norms + norms[first] - 2.0 * (data @ data[first])
        for i in range(1, n):
            pick = int(torch.argmax(distance).item())
            chosen[i] = pick
            torch.minimum(distance, norms + norms[pick] - 2.0 * (data @ data[pick]), out=distance)
    return chosen


@dataclass
class PatchBank:
    """Normal patches to compare against, bounded in size.

    Attributes:
        patches: (M, D) float32, M <= the ``max_patches`` it was built with.
        method: how it was subsampled (``coreset``, ``random`` or ``all``).
        source_images: number of reference images it came from.
        source_patches: number of patches those images had.
    """

    patches: np.ndarray
    method: str
    source_images: int
    source_patches: int

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        *,
        ratio: float = 0.01,
        max_patches: int = 4096,
        min_patches: int = 1024,
        max_candidates: int = 65_536,
        method: Literal["coreset", "random"] = "coreset",
        seed: int = 0,
        images: Sequence[int] | np.ndarray | None = None,
    ) -> PatchBank:
        """A bank from reference features (N, g, g, D), or from the rows ``images`` of them: then only the drawn
        candidate patches are read (the same bank as ``build(features[images])`` without copying those images'
        features, which for a large batch held on disk or in float16 would be the run's largest allocation).

        Size = ``ratio`` of all patches, at least ``min_patches`` and at most ``max_patches`` (4,096 x 344-d
        float32 = 5.6 MB; query time grows linearly with it, so it is kept small enough that scoring stays under
        half of the embedding pass on CPU). Candidates for the coreset are first subsampled at random to
        ``max_candidates`` so selection time and memory stay bounded at any number of references (cost is
        O(size x candidates); 65,536 candidates in a 64-d projection stay in CPU cache: ~15 ms per pick on a busy
        2-core machine, ~100 ms at 200,000 x 128).

        Raises:
            AnomalyInputError: no reference features.
        """
        rows = np.arange(len(features)) if images is None else np.asarray(images, dtype=np.int64)
        if features.ndim != 4 or len(rows) == 0:
            raise AnomalyInputError(
                "the OK reference set is empty: review at least one image as OK, or use reference mode 'none'"
            )
        cells = features.shape[1] * features.shape[2]
        grid = features.reshape(len(features), cells, features.shape[-1])  # a view: nothing is copied

        def patches(index: np.ndarray) -> np.ndarray:
            """Patch rows by their position in the selected images' flattened patches."""
            return np.asarray(grid[rows[index // cells], index % cells], np.float32)

        total = len(rows) * cells
        size = int(min(max_patches, max(min_patches, round(ratio * total)), total))
        rng = np.random.default_rng(seed)
        if method == "random" or size == total:
            index = np.sort(rng.choice(total, size=size, replace=False)) if size < total else np.arange(total)
            return cls(patches(index), "random" if size < total else "all", len(rows), total)
        candidates = np.sort(rng.choice(total, size=min(total, max_candidates), replace=False))
        picked = greedy_coreset(patches(candidates), size, seed=seed)
        return cls(patches(candidates[np.sort(picked)]), "coreset", len(rows), total)

    @property
    def nbytes(self) -> int:
        return int(self.patches.nbytes)

    def score(self, features: np.ndarray, *, k: int = 1) -> np.ndarray:
        """(N, g, g, D) -> (N, g, g) nearest-neighbour distance maps."""
        n, gh, gw, dim = features.shape
        if dim != self.patches.shape[1]:
            raise AnomalyInputError(
                f"features have {dim} dimensions but the bank has {self.patches.shape[1]}: "
                "rebuild the bank with the same feature settings"
            )
        out = np.empty((n, gh, gw), np.float32)
        step = max(1, _CHUNK // (gh * gw))  # whole images per query chunk: a float16 batch is never copied whole
        for start in range(0, n, step):
            part = features[start : start + step]
            out[start : start + len(part)] = _nearest(part.reshape(-1, dim), self.patches, k).reshape(-1, gh, gw)
        return out


def memory_bound(
    n_images: int,
    grid: int,
    dim: int,
    *,
    ratio: float,
    max_patches: int,
    min_patches: int,
    max_candidates: int,
    n_refs: int = MUTUAL_REFS,
    stride: int = MUTUAL_STRIDE,
    dims: int | None = MUTUAL_DIMS,
) -> dict[str, int]:
    """Bytes the anomaly scorer holds for ``n_images`` images: the ``ok_reviewed`` bank and its coreset candidates
    (when all images were OK references), and the no-label :class:`MutualReference` (``n_refs`` images' patches on
    a ``stride`` grid, ``dims``-d after the projection, plus the projection). Neither grows with ``n_images``
    beyond its cap; the per-image maps (grid x grid float32 each, ``maps_bytes``) are the caller's output and are
    streamed out in chunks."""
    total = n_images * grid * grid
    size = int(min(max_patches, max(min_patches, round(ratio * total)), total))
    cells = -(-grid // stride)
    return {
        "images": n_images,
        "patches": total,
        "bank_patches": size,
        "bank_bytes": size * dim * 4,
        "candidate_bytes": min(total, max_candidates) * dim * 4,
        "mutual_reference_bytes": min(n_refs, n_images) * cells * cells * min(dims or dim, dim) * 4
        + (0 if dims is None or dims >= dim else (dims + 1) * dim * 4),
        "maps_bytes": n_images * grid * grid * 4,
    }


MAD_SCALE = 1.4826  # median absolute deviation -> standard deviation, for normally distributed values


def robust_spread(scores: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x median absolute deviation) of ``scores``: a centre and spread a few defects do not move."""
    median = float(np.median(scores))
    return median, MAD_SCALE * float(np.median(np.abs(scores - median)))


def position_scale(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per grid position of (n, g, g) maps: the median, and the robust spread plus its median over positions (so a
    position whose maps barely vary is not blown up), the divisor of the standardisation."""
    base = np.median(maps, axis=0)
    spread = MAD_SCALE * np.median(np.abs(maps - base[None]), axis=0)
    return base, spread + float(np.median(spread)) + 1e-12


@dataclass
class MutualReference:
    """The bounded reference of no-label ("mutual") scoring: a seeded sample of ``n_refs`` images of the batch.

    Every image is compared with each sample image (not with itself): per patch, the distance to that image's
    nearest patch; sorted over the sample images, the ``k`` smallest averaged (``k`` must exceed the number of
    near-duplicate shots of one part). The sample images' patches are kept on a ``stride`` grid (neighbouring
    patches are nearly the same after the 3x3 pooling) and projected onto their first ``dims`` principal
    components (scikit-learn PCA, fitted on the sample's patches), so memory and query cost are fixed by
    ``n_refs`` and not by the batch size: 192 images x 25 patches x 64-d float32 = 1.2 MB whether the batch has
    1,000 or 100,000 images, and the batch can be scored in chunks. Measured (docs/anomaly.md): more sample images
    is what raises no-label AUROC on magnetic tile (64 -> 192-256: 0.75-0.81 -> 0.82-0.83 on both halves); the stride
    barely matters there or on the built-in sample (2 to 6: within 0.01), and 64 dimensions cost 0.4x the
    embedding pass where all 344 cost 1.1x (magnetic tile: the same AUROC; sample: 0.72 vs 0.76).

    Attributes:
        patches: (R, P', d) float32 patches of the sample images (projected when ``components`` is set).
        ids: (R,) the sample images' positions in the batch (an image is never its own reference).
        k: number of nearest sample images averaged.
        mean, components: the projection (D,) and (d, D), or None (patches kept in the feature space).
        base: (g, g) per-position median of the sample images' own maps, or None (no normalisation).
        scale: (g, g) per-position spread of those maps: 1.4826 x MAD plus the median of that over positions (a
            floor, so quiet positions are not blown up). :meth:`score` returns ``(map - base) / scale`` when
            normalising: busy positions (tile edges, texture) count less, and scores read as robust z-units.
    """

    patches: np.ndarray
    ids: np.ndarray
    k: int
    mean: np.ndarray | None = None
    components: np.ndarray | None = None
    base: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        *,
        ids: np.ndarray | None = None,
        n_refs: int = MUTUAL_REFS,
        k: int = MUTUAL_K,
        stride: int = MUTUAL_STRIDE,
        dims: int | None = MUTUAL_DIMS,
        seed: int = 0,
        normalise: bool = True,
    ) -> MutualReference:
        """Draw ``n_refs`` of the (N, g, g, D) ``features`` with ``seed`` as the reference sample.

        Args:
            features: the batch, or any sample of it (then ``ids`` names each row's position in the batch).
            ids: (N,) batch positions of the rows; default 0..N-1.
            stride: keep every ``stride``-th patch of the sample images in both grid directions.
            dims: project the patches onto this many principal components of the sample's patches (None: keep
                all D; also kept when D or the sample's patch count is not larger).
            normalise: also take the per-position median of the sample images' maps (see :meth:`score`).

        Raises:
            AnomalyInputError: fewer than ``k + 1`` images.
        """
        n, _, _, dim = features.shape
        if n <= k:
            raise AnomalyInputError(f"no-label scoring needs more than k={k} images in the batch, got {n}")
        ids = np.arange(n) if ids is None else np.asarray(ids)
        chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(n_refs, n), replace=False))
        patches = np.ascontiguousarray(features[chosen, ::stride, ::stride].reshape(len(chosen), -1, dim), np.float32)
        mean = components = None
        if dims is not None and dims < dim and dims < patches.shape[0] * patches.shape[1]:
            from sklearn.decomposition import PCA

            # svd_solver="full": exact LAPACK SVD, the same projection on every run (randomized SVD would not be)
            pca = PCA(n_components=dims, svd_solver="full").fit(patches.reshape(-1, dim))
            mean = np.ascontiguousarray(pca.mean_, np.float32)
            components = np.ascontiguousarray(pca.components_, np.float32)
        reference = cls(patches, ids[chosen], k, mean, components)
        if components is not None:
            projected = reference.project(patches.reshape(-1, dim))
            reference.patches = np.ascontiguousarray(projected.reshape(len(chosen), -1, len(components)))
        if normalise:
            own = reference.score(features[chosen], ids=ids[chosen], normalise=False)
            reference.base, reference.scale = position_scale(own)
        return reference

    def project(self, rows: np.ndarray) -> np.ndarray:
        """(M, D) float32 patches -> (M, d) in the reference's principal components (one matrix product)."""
        import torch

        if self.components is None or self.mean is None:
            return rows
        with torch.inference_mode():
            out = (torch.from_numpy(rows) - torch.from_numpy(self.mean)) @ torch.from_numpy(self.components).T
        return out.numpy()

    @property
    def nbytes(self) -> int:
        extra = 0 if self.components is None or self.mean is None else self.components.nbytes + self.mean.nbytes
        return int(self.patches.nbytes + extra)

    def score(self, features: np.ndarray, *, ids: np.ndarray | None = None, normalise: bool = True) -> np.ndarray:
        """(N, g, g, D) -> (N, g, g) maps; with ``normalise`` (and a ``base``) each position is standardised by
        the sample images' median and spread there (see the class attributes). ``ids``: the rows' batch
        positions, so that a sample image skips itself (default: none of the rows is a sample image)."""
        n, gh, gw, dim = features.shape
        expected = self.patches.shape[-1] if self.components is None else self.components.shape[1]
        if dim != expected:
            raise AnomalyInputError(f"features have {dim} dimensions but the no-label reference has {expected}")
        maps = np.empty((n, gh * gw), np.float32)
        step = max(1, _CHUNK // (gh * gw))  # images projected at a time: a float16 batch is never copied whole
        for start in range(0, n, step):
            part = features[start : start + step].reshape(-1, dim).astype(np.float32)
            flat = self.project(part).reshape(-1, gh * gw, self.patches.shape[-1])
            for offset, query in enumerate(flat):
                i = start + offset
                per_ref = _nearest_per_image(query, self.patches)
                if ids is not None:
                    per_ref = per_ref[self.ids != ids[i]]
                per_ref.sort(axis=0)
                maps[i] = per_ref[: min(self.k, len(per_ref))].mean(axis=0)
        out = maps.reshape(n, gh, gw)
        if normalise and self.base is not None:
            out = out - self.base[None]
            if self.scale is not None:
                out = out / self.scale[None]
        return out.astype(np.float32)


def mutual_scores(
    features: np.ndarray,
    *,
    k: int = MUTUAL_K,
    n_refs: int = MUTUAL_REFS,
    seed: int = 0,
    normalise: bool = True,
    stride: int = MUTUAL_STRIDE,
    dims: int | None = MUTUAL_DIMS,
) -> np.ndarray:
    """No-label maps of a whole (N, g, g, D) batch against a :class:`MutualReference` of ``n_refs`` of its
    images drawn with ``seed`` (see there). With ``normalise``, every position is standardised by the sample
    images' median and spread there (positions that are always busy, e.g. tile edges, stop dominating).

    Raises:
        AnomalyInputError: fewer than ``k + 1`` images.
    """
    reference = MutualReference.build(
        features, n_refs=n_refs, k=k, stride=stride, dims=dims, seed=seed, normalise=normalise
    )
    return reference.score(features, ids=np.arange(len(features)), normalise=normalise)


def position_normalised(maps: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Subtract, at each grid position, the median over ``reference`` maps (default: the maps themselves)."""
    base = np.median(maps if reference is None else reference, axis=0)
    return (maps - base[None]).astype(np.float32)


def position_standardised(maps: np.ndarray, *, sample: int = 64, seed: int = 0) -> np.ndarray:
    """``(map - median) / spread`` at each grid position, both taken over a seeded sample of ``sample`` of the
    (unlabelled, mostly OK) maps, so the result does not depend on how a large batch is chunked. Spread = 1.4826 x
    MAD plus its median over positions (the same rule as :class:`MutualReference`). Measured on magnetic tile (tune
    half, ok_reviewed): image AUROC 0.754 -> 0.783 with 16 references, 0.872 -> 0.887 with 200, over subtracting
    the median only."""
    chosen = np.sort(np.random.default_rng(seed).choice(len(maps), size=min(sample, len(maps)), replace=False))
    base, scale = position_scale(maps[chosen])
    return ((maps - base[None]) / scale[None]).astype(np.float32)


def phase_shift(image: np.ndarray, golden: np.ndarray) -> tuple[float, float]:
    """Translation (dy, dx) in pixels that moves ``golden`` onto ``image`` (phase correlation, Hanning window).

    Raises:
        AnomalyInputError: the two images differ in size.
    """
    if image.shape[:2] != golden.shape[:2]:
        raise AnomalyInputError(
            f"golden reference is {golden.shape[1]}x{golden.shape[0]} px but the image is "
            f"{image.shape[1]}x{image.shape[0]}: golden references must match their product's image size"
        )
    a, b = _gray(image), _gray(golden)
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(b, a, window)
    return float(dy), float(dx)


def align(golden: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``golden`` translated by ``shift`` (dy, dx), borders filled by mirroring."""
    dy, dx = shift
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    height, width = golden.shape[:2]
    return cv2.warpAffine(golden, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _gray(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return gray.astype(np.float64)


def aligned_golden_features(
    extractor: PatchExtractor | ClipTowerExtractor, images: Sequence[np.ndarray], goldens: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Features of each image's golden reference after translating it onto the image, and the shifts found.

    Args:
        images: uint8 RGB images.
        goldens: the golden reference (same size) for each image, in the same order.
    """
    if len(images) != len(goldens):
        raise AnomalyInputError(f"{len(images)} images but {len(goldens)} golden references; give one per image")
    shifts = [phase_shift(image, golden) for image, golden in zip(images, goldens, strict=True)]
    pixels = [prepare(align(golden, shift), extractor.spec)[0] for golden, shift in zip(goldens, shifts, strict=True)]
    return extractor.extract(np.stack(pixels)), shifts


def golden_scores(features: np.ndarray, golden_features: np.ndarray, *, radius: int = 1) -> np.ndarray:
    """Each image's patches against its aligned golden reference's patches within ``radius`` grid cells.

    Args:
        features: (N, g, g, D) features of the images.
        golden_features: (N, g, g, D) features of each image's aligned golden reference.
        radius: neighbourhood (in cells) searched in the golden map, absorbing residual misalignment.
    """
    if features.shape != golden_features.shape:
        raise AnomalyInputError(f"image features {features.shape} and golden features {golden_features.shape} differ")
    n, gh, gw, _ = features.shape
    padded = np.pad(golden_features, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
    best = np.full((n, gh, gw), np.inf, np.float32)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            window = padded[:, dy : dy + gh, dx : dx + gw]
            best = np.minimum(best, np.linalg.norm(features - window, axis=-1).astype(np.float32))
    return best


def image_map(grid_map: np.ndarray, placement: Placement, *, sigma: float = 4.0) -> np.ndarray:
    """A (g, g) score grid -> float16 map aligned with the original image (H, W): upsampled to the network input,
    the letterbox border cut away, resized to the image and Gaussian-blurred (``sigma`` in input pixels)."""
    side = placement.size
    full = cv2.resize(grid_map.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    full = full[placement.top : placement.top + placement.inner_h, placement.left : placement.left + placement.inner_w]
    if sigma > 0:
        full = cv2.GaussianBlur(full, (0, 0), sigma)
    out = cv2.resize(full, (placement.width, placement.height), interpolation=cv2.INTER_LINEAR)
    return out.astype(np.float16)


@dataclass(frozen=True)
class Decision:
    """Defect-vs-OK call on image scores: ``is_defect = score > threshold``.

    Attributes:
        threshold: the cut on the score scale of the mode that produced the scores.
        method: ``mad`` (no labels: median + z * 1.4826 * MAD of the batch's scores, a robust outlier rule that
            assumes most images are OK) or ``labelled`` (the cut maximising balanced accuracy on labelled scores).
        is_defect: bool per image.
    """

    threshold: float
    method: Literal["mad", "labelled", "defect_share"]
    is_defect: np.ndarray


def calibrate(
    scores: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    z: float = 3.0,
    defect_share: float | None = None,
) -> Decision:
    """Threshold the image scores.

    Args:
        scores: (N,) image anomaly scores.
        labels: optional (N,) bool, True = defective, for the scores that have a human label (NaN-free subset
            given by the caller). With both classes present the threshold maximises balanced accuracy on them
            (midpoint between adjacent scores); otherwise the MAD rule is used.
        z: robust z-score for the MAD rule (3.0: ~0.1% false alarms if OK scores were normal).
        defect_share: without usable labels, the known share of defective images (e.g. the line's defect rate):
            the threshold is then that upper quantile of the scores (method ``defect_share``) instead of the MAD
            rule, which assumes most images are OK and calls almost none defective when most are.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if labels is not None and 0 < int(np.sum(labels)) < len(labels):
        labels = np.asarray(labels, dtype=bool)
        order = np.sort(np.unique(scores))
        cuts = np.concatenate([[order[0] - 1.0], (order[:-1] + order[1:]) / 2])
        best, best_cut = -1.0, float(cuts[0])
        for cut in cuts:
            predicted = scores > cut
            balanced = 0.5 * (predicted[labels].mean() + (~predicted[~labels]).mean())
            if balanced > best:
                best, best_cut = balanced, float(cut)
        return Decision(best_cut, "labelled", scores > best_cut)
    if defect_share is not None:
        threshold = float(np.quantile(scores, 1.0 - defect_share))
        return Decision(threshold, "defect_share", scores > threshold)
    median, mad = robust_spread(scores)
    threshold = median + z * max(mad, 1e-12)
    return Decision(threshold, "mad", scores > threshold)


@dataclass(frozen=True)
class AnomalyResult:
    """Scores for a batch of images under one reference mode.

    Attributes:
        reference_mode: ``none``, ``ok_reviewed`` or ``golden``.
        scores: (N,) image anomaly scores (map maximum).
        grid_maps: (N, g, g) float32 patch-score grids (image-aligned maps come from :func:`image_map`).
        decision: calibrated defect-vs-OK call and its threshold.
        details: settings used (k, refs, bank size, ...), for model_version strings and reports.
    """

    reference_mode: ReferenceMode
    scores: np.ndarray
    grid_maps: np.ndarray
    decision: Decision
    details: dict[str, Any] = field(default_factory=dict)


def score_batch(
    features: np.ndarray,
    *,
    mode: ReferenceMode,
    bank: PatchBank | None = None,
    golden_features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    k: int = MUTUAL_K,
    n_refs: int = MUTUAL_REFS,
    stride: int = MUTUAL_STRIDE,
    dims: int | None = MUTUAL_DIMS,
    seed: int = 0,
    z: float = 3.0,
    standardise_min_batch: int = 16,
) -> AnomalyResult:
    """Score (N, g, g, D) features under ``mode`` and calibrate the decision (see :func:`calibrate`).

    In ``ok_reviewed`` mode, batches of at least ``standardise_min_batch`` images are also standardised per grid
    position (:func:`position_standardised`; smaller batches give no stable per-position statistics).

    Raises:
        AnomalyInputError: the mode's reference (bank, golden features) is missing.
    """
    if mode == "none":
        maps = mutual_scores(features, k=k, n_refs=n_refs, seed=seed, stride=stride, dims=dims)
        details: dict[str, Any] = {
            "k": k,
            "n_refs": min(n_refs, len(features) - 1),
            "stride": stride,
            "dims": dims,
            "seed": seed,
        }
    elif mode == "ok_reviewed":
        if bank is None:
            raise AnomalyInputError("reference mode 'ok_reviewed' needs a PatchBank of reviewed OK images")
        maps = bank.score(features)
        standardised = len(maps) >= standardise_min_batch
        if standardised:
            maps = position_standardised(maps, seed=seed)
        details = {
            "bank_patches": len(bank.patches),
            "bank_method": bank.method,
            "bank_images": bank.source_images,
            "position_standardised": standardised,
        }
    elif mode == "golden":
        if golden_features is None:
            raise AnomalyInputError("reference mode 'golden' needs the aligned golden images' features")
        maps = golden_scores(features, golden_features)
        details = {"radius": 1}
    else:
        raise AnomalyInputError(f"unknown reference mode {mode!r}; use none, ok_reviewed or golden")
    scores = maps.reshape(len(maps), -1).max(axis=1)
    return AnomalyResult(mode, scores, maps, calibrate(scores, labels=labels, z=z), details)


def weighted_pool(features: np.ndarray, grid_maps: np.ndarray) -> np.ndarray:
    """(N, g, g, D) features pooled with weights from each image's own anomaly map (softmax over positions of the
    max-normalised map): mid-level features where the anomaly is, for few-shot classification."""
    n = len(features)
    flat = grid_maps.reshape(n, -1).astype(np.float64)
    spread = flat.max(axis=1, keepdims=True) - flat.min(axis=1, keepdims=True)
    weights = np.exp(8.0 * (flat - flat.max(axis=1, keepdims=True)) / np.maximum(spread, 1e-12))
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("np,npd->nd", weights, features.reshape(n, flat.shape[1], -1)).astype(np.float32)
