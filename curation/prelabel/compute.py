"""Per-image model outputs for the prelabel stage, once for every model: cache first (by content hash), the rest in
batches on the engine, stored batch by batch as they arrive, with progress.

:func:`embed_images` runs an :class:`~curation.prelabel.base.Embedder`, :func:`patch_features` the anomaly
scorer's :class:`~curation.prelabel.anomaly_scorer.PatchModel`, :func:`caption_images` a
:class:`~curation.prelabel.base.Describer`; :func:`cached_text_encoder` and :func:`cached_logit_scale` put a
:class:`~curation.prelabel.base.TextImageEmbedder`'s text side through the same cache. :func:`shared_features`
gives the offline embeddings and the patches from one pass, :func:`golden_features_cached` the aligned golden
references. The per-image ones take the run's :class:`RunContext` (params, cache, engine, force, progress, counts).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from curation.io import file_sha256
from curation.prelabel import captions as caps
from curation.prelabel.anomaly_scorer import PatchModel
from curation.prelabel.base import Describer, Embedder, TextImageEmbedder
from curation.prelabel.cache import PrelabelCache
from curation.prelabel.engines import Engine, Method, Work
from curation.prelabel.images import ImageRef
from curation.prelabel.prompts import settings_hash
from schemas.params_prelabel import PrelabelParams

_LOOKUP_CHUNK = 8192
_GRID_LOOKUP_CHUNK = 128  # patch grids are ~0.5 MB per image: cache reads of them stay at ~70 MB at a time
# Patch grids of a whole batch above this size live in a disk-backed array (a memory map in the cache folder,
# unlinked at once, so nothing is left behind) instead of RAM: 539 KB per image makes 10,000 images 5.4 GB. The
# scorers read them in chunks of whole images, so the operating system pages them in and out as needed.
MEMMAP_ABOVE_BYTES = 1 << 30


def grid_array(shape: tuple[int, ...], dtype: Any, folder: Path) -> np.ndarray:
    """An uninitialised array of ``shape``: in memory, or memory-mapped from an unlinked file in ``folder`` when it
    is larger than :data:`MEMMAP_ABOVE_BYTES`."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes <= MEMMAP_ABOVE_BYTES:
        return np.empty(shape, dtype)
    folder.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="patches-", suffix=".npy", dir=folder)
    os.close(handle)
    try:
        return np.lib.format.open_memmap(name, mode="w+", dtype=dtype, shape=shape)
    finally:
        os.unlink(name)  # the mapping stays valid; the space is freed when the array is


Callback = Callable[[int], None]


@dataclass
class Progress:
    """The run's progress bar: ``add`` grows its total (model inputs still to compute), ``advance`` moves it."""

    on_start: Callback | None
    on_progress: Callback | None
    total: int = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.on_start:
            self.on_start(self.total)

    def advance(self, n: int) -> None:
        if self.on_progress:
            self.on_progress(n)


@dataclass(frozen=True)
class RunContext:
    """What every per-image computation of one prelabel run shares: the params, the cache, the engine, whether to
    recompute everything (``force``), the progress bar and the cache counters (``<kind>_cached`` /
    ``<kind>_computed``)."""

    settings: PrelabelParams
    cache: PrelabelCache
    engine: Engine
    force: bool
    progress: Progress
    stats: Counter[str]


def embed_images(encoder: Embedder, refs: list[ImageRef], ctx: RunContext) -> np.ndarray:
    """(len(refs), D) float32 embeddings of ``refs`` (rows in ``ref.row`` order; (0, 0) when there are none)."""
    matrix = _Cached(encoder, "encode_images", "embeddings", "embed-", np.float32)(refs, ctx)
    return matrix if matrix is not None else np.zeros((0, 0), np.float32)


def patch_features(model: PatchModel, refs: list[ImageRef], ctx: RunContext) -> np.ndarray:
    """(len(refs), g, g, D) float16 anomaly patch features of ``refs`` (rows in ``ref.row`` order), through the
    cache like embeddings (namespace: the backbone, the :class:`~curation.prelabel.anomaly.FeatureSpec` and the
    preprocessing)."""
    grids = _Cached(model, "extract_patches", "patches", "patches-", np.float16)(refs, ctx)
    return grids if grids is not None else np.zeros((0, 0, 0, 0), np.float16)


def shared_features(model: PatchModel, refs: list[ImageRef], ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
    """The offline backbone's embeddings AND the anomaly patch features of ``refs`` from one forward pass per
    image (:meth:`~curation.prelabel.anomaly_scorer.PatchModel.extract_shared`): (len(refs), E) float32 and
    (len(refs), g, g, D) float16, rows in ``ref.row`` order. Both go to the cache as :func:`patch_features` and
    :func:`embed_images` store theirs (the patches under the same namespace, so either path reuses the other's);
    an image is recomputed when either is missing. The embedding is of the anomaly input (the whole image,
    squashed), not of the embedder's own crop: that is what makes it one pass."""
    cache = ctx.cache
    patch_space = _namespace("patches-", model, ctx.settings)
    embed_space = _namespace("embed-shared-", model, ctx.settings)
    work = _work(model, "extract_shared", ctx.settings)
    embeddings = np.zeros((len(refs), model.embedding_dim), np.float32)
    patches = grid_array((len(refs), *model.grid), np.float16, cache.folder)

    def get(hashes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        found = cache.get_embeddings(embed_space, hashes)
        grids = cache.get_patches(patch_space, [h for h in hashes if h in found])
        return {h: (found[h], grids[h]) for h in grids}

    def put(pairs: Any) -> None:
        pairs = list(pairs)
        cache.put_embeddings(embed_space, ((h, pair[0]) for h, pair in pairs))
        cache.put_patches(patch_space, ((h, pair[1]) for h, pair in pairs))

    def run(todo: list[ImageRef]) -> Iterator[tuple[list[ImageRef], list[tuple[np.ndarray, np.ndarray]]]]:
        for batch, packed in ctx.engine.batches(model, work, todo):
            vectors, grids = model.unpack_shared(np.asarray(packed))
            yield batch, list(zip(vectors, grids, strict=True))

    def keep(rows: list[int], outputs: Any) -> None:
        embeddings[rows] = [vector for vector, _ in outputs]
        patches[rows] = [grid for _, grid in outputs]

    counts: Counter[str] = Counter()
    through_cache(
        refs,
        kind="shared",
        get=get,
        put=put,
        run=run,
        keep=keep,
        force=ctx.force,
        progress=ctx.progress,
        stats=counts,
        lookup_chunk=_GRID_LOOKUP_CHUNK,
    )
    for kind in ("embeddings", "patches"):  # one pass computed (or found) both
        ctx.stats[f"{kind}_cached"] += counts["shared_cached"]
        ctx.stats[f"{kind}_computed"] += counts["shared_computed"]
    return embeddings, patches


def golden_features_cached(model: PatchModel, refs: list[ImageRef], goldens: list[Path], ctx: RunContext) -> np.ndarray:
    """(len(refs), g, g, D) float16 features of each image's golden reference aligned onto it
    (:func:`~curation.prelabel.anomaly_scorer.golden_features`), rows in ``ref.row`` order, through the cache under
    the pair's content (the image's hash and its golden file's), so a rerun after reviews recomputes nothing.

    Computed in this process, batch by batch, not on the engine: the alignment needs both images of a pair, which
    the engine's one-image-per-input batches do not carry.
    """
    from curation.prelabel.anomaly_scorer import golden_features, read_golden
    from curation.prelabel.images import clahe, load_rgb

    file_hashes = {path: file_sha256(path) for path in sorted(set(goldens))}
    # One cache key per pair: a changed golden file (or a different one named for the image) is a new entry.
    pairs = [replace(ref, sha256=settings_hash(ref.sha256, file_hashes[goldens[ref.row]])) for ref in refs]
    originals = {ref.row: ref for ref in refs}  # load_rgb checks the image's own hash
    settings, cache = ctx.settings, ctx.cache
    namespace = _namespace("golden-", model, settings)
    out = grid_array((len(refs), *model.grid), np.float16, cache.folder)
    pre = settings.preprocess
    loaded: dict[Path, np.ndarray] = {}

    def prepared(image: np.ndarray) -> np.ndarray:
        return clahe(image, pre.clahe_clip_limit, pre.clahe_tile_grid) if pre.clahe else image

    def run(todo: list[ImageRef]) -> Iterator[tuple[list[ImageRef], np.ndarray]]:
        for start in range(0, len(todo), settings.clip.batch_size):
            batch = todo[start : start + settings.clip.batch_size]
            images, partners, names = [], [], []
            for ref in batch:
                path = goldens[ref.row]
                if path not in loaded:
                    loaded[path] = prepared(read_golden(path))
                images.append(prepared(load_rgb(originals[ref.row])))
                partners.append(loaded[path])
                names.append(f"{ref.path} (golden {path.name})")
            yield batch, golden_features(model, images, partners, names).astype(np.float16)

    def keep(rows: list[int], outputs: Any) -> None:
        out[rows] = np.asarray(outputs, np.float16)

    through_cache(
        pairs,
        kind="golden",
        get=lambda hashes: cache.get_patches(namespace, hashes),
        put=lambda items: cache.put_patches(namespace, items),
        run=run,
        keep=keep,
        force=ctx.force,
        progress=ctx.progress,
        stats=ctx.stats,
        lookup_chunk=_GRID_LOOKUP_CHUNK,
    )
    return out


def _namespace(prefix: str, model: Any, settings: PrelabelParams) -> str:
    """The cache namespace of a model's per-image outputs: its key, input spec and preprocessing (one rule, so the
    patches :func:`shared_features` stores are the ones :func:`patch_features` finds, and back)."""
    return prefix + settings_hash(model.key, model.spec.__dict__, settings.preprocess)


def _work(model: Any, method: Method, settings: PrelabelParams) -> Work:
    return Work(model.recipe(settings.device), method, model.spec, settings.preprocess, settings.clip.batch_size)


@dataclass(frozen=True)
class _Cached:
    """``model.<method>`` of every image through the cache table ``kind`` (:func:`through_cache`), under a
    namespace of the model's key, input spec and preprocessing, as one (len(refs), ...) array of ``dtype``."""

    model: Any
    method: Method
    kind: Literal["embeddings", "patches"]
    prefix: str
    dtype: Any

    def __call__(self, refs: list[ImageRef], ctx: RunContext) -> np.ndarray | None:
        model, cache = self.model, ctx.cache
        namespace = _namespace(self.prefix, model, ctx.settings)
        work = _work(model, self.method, ctx.settings)
        get, put = getattr(cache, f"get_{self.kind}"), getattr(cache, f"put_{self.kind}")
        out: list[np.ndarray] = []

        def keep(rows: list[int], outputs: Any) -> None:
            outputs = np.asarray(outputs, self.dtype)  # a batch's array, or a list of cached per-image arrays
            if not out:
                out.append(grid_array((len(refs), *outputs.shape[1:]), self.dtype, cache.folder))
            out[0][rows] = outputs

        through_cache(
            refs,
            kind=self.kind,
            get=lambda hashes: get(namespace, hashes),
            put=lambda pairs: put(namespace, pairs),
            run=lambda todo: ctx.engine.batches(model, work, todo),
            keep=keep,
            force=ctx.force,
            progress=ctx.progress,
            stats=ctx.stats,
            lookup_chunk=_GRID_LOOKUP_CHUNK if self.kind == "patches" else _LOOKUP_CHUNK,
        )
        return out[0] if out else None


def through_cache(
    refs: list[ImageRef],
    *,
    kind: str,
    get: Callable[[list[str]], dict[str, Any]],
    put: Callable[[Any], None],
    run: Callable[[list[ImageRef]], Iterator[tuple[list[ImageRef], Any]]],
    keep: Callable[[list[int], Any], None],
    force: bool,
    progress: Progress,
    stats: Counter[str],
    lookup_chunk: int = _LOOKUP_CHUNK,
) -> None:
    """Per-image outputs by content hash: cached ones read back, the rest computed by the engine (``run``: decoding
    in parallel with the model) and stored batch by batch as they arrive, so a killed run resumes where it stopped.
    ``keep(rows, outputs)`` receives the outputs (rows: ``ref.row``) as they are read or computed."""
    todo: list[ImageRef] = []
    # Cache lookups go chunk by chunk, so no run holds a dict of every image's output at once.
    for start in range(0, len(refs), lookup_chunk):
        chunk = refs[start : start + lookup_chunk]
        found = {} if force else get([ref.sha256 for ref in chunk])
        hits = [ref for ref in chunk if ref.sha256 in found]
        if hits:
            keep([ref.row for ref in hits], [found[ref.sha256] for ref in hits])
        todo.extend(ref for ref in chunk if ref.sha256 not in found)
    stats[f"{kind}_cached"] += len(refs) - len(todo)
    stats[f"{kind}_computed"] += len(todo)
    progress.add(len(todo))
    for batch, outputs in run(todo):
        put(zip((ref.sha256 for ref in batch), outputs, strict=True))
        keep([ref.row for ref in batch], outputs)
        progress.advance(len(batch))


def cached_text_encoder(
    scorer: TextImageEmbedder, cache: PrelabelCache, force: bool, stats: Counter[str]
) -> Callable[[list[str]], np.ndarray]:
    """``scorer.encode_texts`` through the cache: prompts are encoded once per model, not once per run."""
    namespace = "text-" + settings_hash(scorer.key)

    def encode(texts: list[str]) -> np.ndarray:
        found = {} if force else cache.get_texts(namespace, texts)
        todo = list(dict.fromkeys(t for t in texts if t not in found))
        if todo:
            vectors = scorer.encode_texts(todo)
            cache.put_texts(namespace, zip(todo, vectors, strict=True))
            found.update(zip(todo, vectors, strict=True))
        stats["texts_computed"] += len(todo)
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    return encode


def cached_logit_scale(scorer: TextImageEmbedder, cache: PrelabelCache, force: bool) -> float:
    """``scorer.logit_scale`` through the cache (reading it loads the weights, which a cached run never needs)."""
    namespace = "text-" + settings_hash(scorer.key)
    value = None if force else cache.get_scalar(namespace, "logit_scale")
    if value is None:
        value = scorer.logit_scale
        cache.put_scalar(namespace, "logit_scale", value)
    return value


def caption_images(captioner: Describer, refs: list[ImageRef], ctx: RunContext) -> list[str]:
    """One caption per ref, in the order of ``refs``."""
    settings, cache = ctx.settings, ctx.cache
    generation = caps.generation_kwargs(settings.captions)
    namespace = "caption-" + settings_hash(
        captioner.key, captioner.spec.__dict__, settings.preprocess, generation, settings.captions.prompt
    )
    work = Work(
        captioner.recipe(settings.device),
        "caption",
        captioner.spec,
        settings.preprocess,
        settings.captions.batch_size,
        {"generation": generation, "prompt": settings.captions.prompt},
    )
    texts: list[str] = [""] * len(refs)
    position = {ref.row: k for k, ref in enumerate(refs)}

    def keep(rows: list[int], outputs: Any) -> None:
        for row, text in zip(rows, outputs, strict=True):
            texts[position[row]] = text

    through_cache(
        refs,
        kind="captions",
        get=lambda hashes: cache.get_captions(namespace, hashes),
        put=lambda pairs: cache.put_captions(namespace, pairs),
        run=lambda todo: ctx.engine.batches(captioner, work, todo),
        keep=keep,
        force=ctx.force,
        progress=ctx.progress,
        stats=ctx.stats,
    )
    return texts
