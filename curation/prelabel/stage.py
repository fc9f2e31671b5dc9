"""The prelabel stage: manifest in, pre-labels, embeddings, metrics and a confidence histogram out.

Flow: load the scorer (CLIP-compatible, or the offline backbone when no CLIP weights can be had) -> image
embeddings (cache first; the rest computed by ``prelabel.engine``: decoding threads beside the model in this
process, or Ray Data actors, see :mod:`curation.prelabel.engines`) -> zero-shot scores from prompt ensembles, hard
negatives folded -> few-shot logistic regression when enough human labels exist -> BLIP captions by policy, their
CLIP check, English/Korean descriptions.

Outputs (:func:`write_prelabel`):

- ``predictions.parquet``: :class:`schemas.records.Prediction` columns, then ``p_<class>`` per ontology class.
  Zero rows when neither zero-shot (no CLIP) nor few-shot (too few labels) is possible; ``prelabel.json`` says why.
- ``embeddings.parquet``: ``image_id``, ``model_name`` (``id@revision`` of the encoder), ``embedding``
  (list<float32>; unit vectors for CLIP, raw pooled features for the offline backbone) for every manifest image.
- ``prelabel.json``: DVC metrics (class distribution, mean confidence, low-confidence share, few-shot accuracy ...).
- ``confidence_histogram.csv`` (DVC plot data: ``confidence`` bin start, ``images``) and ``.png``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.headline import write_headline
from curation.io import atomic_path, publish, write_csv, write_json, write_parquet
from curation.prelabel import captions as caps
from curation.prelabel.cache import PrelabelCache
from curation.prelabel.engines import Engine, Work, recipe_of
from curation.prelabel.errors import ManifestError, ModelUnavailableError
from curation.prelabel.fewshot import LabelSet, cap_per_class, fit_predict, label_counts
from curation.prelabel.images import ImageRef
from curation.prelabel.prompts import build_text_classes, ensemble, model_version, settings_hash
from curation.prelabel.zero_shot import fold_hard_negatives, summarise, text_probabilities
from schemas.ontology import Ontology
from schemas.params_prelabel import PrelabelParams
from schemas.records import Prediction, columns

REQUIRED_COLUMNS = ("image_id", "sha256", "path", "exif_orientation")
_LOOKUP_CHUNK = 8192
_EMBEDDING_ROWS = 65_536  # rows per Parquet row group of embeddings.parquet
EMBEDDINGS_FILE = "embeddings.parquet"

Callback = Callable[[int], None]


@dataclass(frozen=True)
class PrelabelResult:
    predictions: pd.DataFrame
    embeddings: pd.DataFrame
    histogram: pd.DataFrame
    report: dict[str, Any]
    embedding_matrix: np.ndarray  # (images, D) float32; the rows of ``embeddings["embedding"]`` are views into it
    notes: list[str] = field(default_factory=list)
    cache_stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Progress:
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


def prelabel(
    manifest: pd.DataFrame,
    settings: PrelabelParams,
    ontology: Ontology,
    *,
    cache_dir: Path,
    labels: LabelSet | None = None,
    force: bool = False,
    on_start: Callback | None = None,
    on_progress: Callback | None = None,
) -> PrelabelResult:
    """Pre-label every image of ``manifest``.

    Args:
        manifest: ingest's manifest (:class:`schemas.records.ImageRecord` columns; ``path`` is read).
        settings: the ``prelabel`` params.
        ontology: classes (prompts, Korean names) and hard negatives.
        cache_dir: folder of the embedding/caption cache (created if missing).
        labels: human labels for few-shot refinement (see :func:`curation.prelabel.fewshot.read_labels`).
        force: recompute every embedding and caption, overwriting the cache.
        on_start: called with the number of model inputs to compute (again, larger, when captions are added).
        on_progress: called with the number of inputs computed since the last call.

    Raises:
        ManifestError: a missing manifest column, or an image that is gone or changed since ingest.
        ModelUnavailableError: weights missing and ``on_missing_model: error`` (or no embedding model at all).
    """
    _check_manifest(manifest)
    from curation.prelabel.models import select_runtime

    class_names = ontology.class_names
    runtime = select_runtime(settings.device)
    notes: list[str] = []
    progress = _Progress(on_start, on_progress)
    refs = [
        ImageRef(str(path), str(sha), int(orientation), row)
        for row, (path, sha, orientation) in enumerate(
            zip(manifest["path"], manifest["sha256"], manifest["exif_orientation"].fillna(1), strict=True)
        )
    ]
    image_ids = [str(i) for i in manifest["image_id"]]
    scorer = _load_scorer(settings, runtime, notes)
    encoder = scorer if scorer is not None else _load_backbone(settings, runtime)

    engine = Engine(settings.engine, settings.ray, decode_workers=settings.decode_workers)
    with PrelabelCache(cache_dir) as cache, engine:
        stats: Counter[str] = Counter()
        embeddings = _embed(encoder, refs, settings, cache, engine, force, progress, stats)

        probabilities, source, version, top_negative = None, None, None, [None] * len(refs)
        progress.add(len(refs))  # scoring every image (zero-shot, then few-shot): the bar's real total
        zero_shot_status = "skipped"
        encode_texts = _text_encoder(scorer, cache, force, stats) if scorer is not None else None
        if scorer is not None and encode_texts is not None:
            text_classes = build_text_classes(ontology, settings.clip)
            text_embeddings = ensemble(encode_texts, text_classes)
            raw = text_probabilities(
                embeddings,
                text_embeddings,
                logit_scale=_logit_scale(scorer, cache, force),
                temperature=settings.clip.calibration_temperature,
            )
            probabilities, top_negative = fold_hard_negatives(raw, text_classes, class_names)
            source, version = "zero_shot", model_version(scorer.key, text_classes, settings.clip, settings.preprocess)
            zero_shot_status = "done"

        few = _few_shot(embeddings, image_ids, labels, class_names, settings, scorer is not None, notes)
        if few.result is not None:
            probabilities, source, top_negative = few.result.probabilities, "few_shot", [None] * len(refs)
            label_hash = settings_hash(sorted(few.labels.items()), settings.fewshot, settings.preprocess)
            version = f"{encoder.key}+fewshot-{label_hash}"
        progress.advance(len(refs))
        if probabilities is None:
            notes.append(
                "no predictions written: zero-shot needs CLIP weights and few-shot needs human labels; "
                "predictions.parquet has no rows, embeddings.parquet has every image (see the notes above for the fix)"
            )

        caption_texts: list[str | None] = [None] * len(refs)
        caption_score: list[float | None] = [None] * len(refs)
        caption_flag = [False] * len(refs)
        if probabilities is not None and settings.captions.policy != "none":
            summary_scores = probabilities.max(axis=1)
            mask = caps.select_for_captions(settings.captions.policy, summary_scores, settings.low_confidence_below)
            captioner = _load_captioner(settings, runtime, notes) if mask.any() else None
            if captioner is not None:
                chosen = [int(i) for i in np.flatnonzero(mask)]
                chosen_refs = [refs[i] for i in chosen]
                texts = _caption(captioner, chosen_refs, settings, cache, engine, force, progress, stats)
                for i, text in zip(chosen, texts, strict=True):
                    caption_texts[i] = text
                if encode_texts is not None and chosen:
                    scores = caps.caption_scores(encode_texts(texts), embeddings[chosen])
                    for i, score in zip(chosen, scores, strict=True):
                        caption_score[i] = float(score)
                        caption_flag[i] = bool(score < settings.captions.check_threshold)

    predictions = _predictions_frame(
        image_ids,
        probabilities,
        class_names,
        source=source,
        model_name=encoder.name,
        version=version,
        top_negative=top_negative,
        captions=(caption_texts, caption_score, caption_flag),
        ontology=ontology,
        settings=settings,
    )
    embedding_frame = pd.DataFrame(  # rows are views into one matrix, not copies
        {"image_id": image_ids, "model_name": encoder.key, "embedding": list(embeddings)}
    )
    histogram = confidence_histogram(predictions["score"].to_numpy(float), settings.histogram_bins)
    report = _report(predictions, class_names, settings, zero_shot_status, few.report, encoder.key, len(refs))
    for note in notes:
        report.setdefault("notes", []).append(note)
    return PrelabelResult(predictions, embedding_frame, histogram, report, embeddings, notes, dict(stats))


def write_prelabel(result: PrelabelResult, out_dir: Path) -> None:
    """Write every output into ``out_dir`` as one set (:func:`curation.io.publish`)."""
    with publish(out_dir) as staging:
        write_parquet(staging / "predictions.parquet", result.predictions)
        _write_embeddings(staging / EMBEDDINGS_FILE, result.embeddings, result.embedding_matrix)
        if len(result.predictions):  # DVC plot data: written only with predictions (the PNG says why not)
            write_csv(staging / "confidence_histogram.csv", result.histogram)
        _histogram_png(result.histogram, staging / "confidence_histogram.png", result.report)
        write_json(staging / "prelabel.json", result.report)
        write_headline(staging, "prelabel", result.report)


def _write_embeddings(path: Path, frame: pd.DataFrame, matrix: np.ndarray) -> None:
    """Row group by row group from the matrix: each group's column is one flat float32 buffer with offsets (the
    same list<float32> column as per-row arrays, without making them, and offsets that never overflow int32)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("image_id", pa.string()), ("model_name", pa.string()), ("embedding", pa.list_(pa.float32()))])
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(frame), _EMBEDDING_ROWS):
            part = matrix[start : start + _EMBEDDING_ROWS]
            offsets = pa.array(np.arange(len(part) + 1, dtype=np.int32) * part.shape[1], pa.int32())
            columns = {
                "image_id": pa.array(frame["image_id"].iloc[start : start + len(part)], pa.string()),
                "model_name": pa.array(frame["model_name"].iloc[start : start + len(part)], pa.string()),
                "embedding": pa.ListArray.from_arrays(offsets, pa.array(part.reshape(-1), pa.float32())),
            }
            writer.write_table(pa.table(columns, schema=schema))
        if not len(frame):
            writer.write_table(schema.empty_table())


def confidence_histogram(scores: np.ndarray, bins: int) -> pd.DataFrame:
    """Counts of top-class probability in ``bins`` equal bins over [0, 1] (DVC plot data)."""
    counts, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    return pd.DataFrame(
        {"confidence": np.round(edges[:-1], 4), "confidence_to": np.round(edges[1:], 4), "images": counts}
    )


def _check_manifest(manifest: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"the manifest lacks columns {missing} (has {list(manifest.columns)}); pass ingest's manifest.parquet"
        )
    repeated = manifest["image_id"][manifest["image_id"].duplicated()].tolist()
    if repeated:
        raise ManifestError(f"the manifest repeats image_id {repeated[:5]}; re-run ingest")


def _load_scorer(settings: PrelabelParams, runtime: Any, notes: list[str]) -> Any:
    from curation.prelabel.models import ClipScorer, resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(
            settings.clip.model, settings.clip.revision, section="clip", allow_download=settings.allow_download
        )
        return ClipScorer(checkpoint, runtime)
    except ModelUnavailableError as err:
        if settings.on_missing_model == "error" or settings.offline_backbone is None:
            raise
        notes.append(
            f"zero-shot skipped, embeddings from the offline backbone {settings.offline_backbone} instead "
            f"(never random weights): {err}"
        )
        return None


def _load_backbone(settings: PrelabelParams, runtime: Any) -> Any:
    from curation.prelabel.models import OfflineBackbone

    return OfflineBackbone(runtime)


def _load_captioner(settings: PrelabelParams, runtime: Any, notes: list[str]) -> Any:
    from curation.prelabel.models import Captioner, resolve_checkpoint

    try:
        checkpoint = resolve_checkpoint(
            settings.captions.model,
            settings.captions.revision,
            section="captions",
            allow_download=settings.allow_download,
        )
        return Captioner(checkpoint, runtime)
    except ModelUnavailableError as err:
        if settings.on_missing_model == "error":
            raise
        notes.append(f"captions skipped (or set prelabel.captions.policy: none): {err}")
        return None


def _embed(
    encoder: Any,
    refs: list[ImageRef],
    settings: PrelabelParams,
    cache: PrelabelCache,
    engine: Engine,
    force: bool,
    progress: _Progress,
    stats: Counter[str],
) -> np.ndarray:
    namespace = "embed-" + settings_hash(encoder.key, encoder.spec.__dict__, settings.preprocess)
    recipe = recipe_of(encoder, settings.device)
    work = Work(recipe, "encode_images", encoder.spec, settings.preprocess, settings.clip.batch_size)
    matrix: list[np.ndarray] = []  # one (len(refs), D) float32 matrix, allocated when D is known

    def keep(rows: list[int], outputs: Any) -> None:
        outputs = np.asarray(outputs, np.float32)
        if not matrix:
            matrix.append(np.empty((len(refs), outputs.shape[1]), np.float32))
        matrix[0][rows] = outputs

    _through_cache(
        refs,
        kind="embeddings",
        get=lambda hashes: cache.get_embeddings(namespace, hashes),
        put=lambda pairs: cache.put_embeddings(namespace, pairs),
        run=lambda todo: engine.batches(encoder, work, todo),
        keep=keep,
        force=force,
        progress=progress,
        stats=stats,
    )
    return matrix[0] if matrix else np.zeros((0, 0), np.float32)


def _through_cache(
    refs: list[ImageRef],
    *,
    kind: str,
    get: Callable[[list[str]], dict[str, Any]],
    put: Callable[[Any], None],
    run: Callable[[list[ImageRef]], Iterator[tuple[list[ImageRef], Any]]],
    keep: Callable[[list[int], Any], None],
    force: bool,
    progress: _Progress,
    stats: Counter[str],
) -> None:
    """Per-image outputs by content hash: cached ones read back, the rest computed by the engine (``run``: decoding
    in parallel with the model) and stored batch by batch as they arrive, so a killed run resumes where it stopped.
    ``keep(rows, outputs)`` receives the outputs (rows: ``ref.row``) as they are read or computed."""
    todo: list[ImageRef] = []
    # Cache lookups go chunk by chunk, so no run holds a dict of every image's output at once.
    for start in range(0, len(refs), _LOOKUP_CHUNK):
        chunk = refs[start : start + _LOOKUP_CHUNK]
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


def _text_encoder(
    scorer: Any, cache: PrelabelCache, force: bool, stats: Counter[str]
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


def _logit_scale(scorer: Any, cache: PrelabelCache, force: bool) -> float:
    namespace = "text-" + settings_hash(scorer.key)
    value = None if force else cache.get_scalar(namespace, "logit_scale")
    if value is None:
        value = scorer.logit_scale
        cache.put_scalar(namespace, "logit_scale", value)
    return value


def _caption(
    captioner: Any,
    refs: list[ImageRef],
    settings: PrelabelParams,
    cache: PrelabelCache,
    engine: Engine,
    force: bool,
    progress: _Progress,
    stats: Counter[str],
) -> list[str]:
    generation = caps.generation_kwargs(settings.captions)
    namespace = "caption-" + settings_hash(
        captioner.key, captioner.spec.__dict__, settings.preprocess, generation, settings.captions.prompt
    )
    work = Work(
        recipe_of(captioner, settings.device),
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

    _through_cache(
        refs,
        kind="captions",
        get=lambda hashes: cache.get_captions(namespace, hashes),
        put=lambda pairs: cache.put_captions(namespace, pairs),
        run=lambda todo: engine.batches(captioner, work, todo),
        keep=keep,
        force=force,
        progress=progress,
        stats=stats,
    )
    return texts


@dataclass(frozen=True)
class _FewShotOutcome:
    report: dict[str, Any]
    result: Any = None  # FewShotResult when few-shot replaces zero-shot
    labels: dict[str, str] = field(default_factory=dict)


def _few_shot(
    embeddings: np.ndarray,
    image_ids: list[str],
    labels: LabelSet | None,
    class_names: list[str],
    settings: PrelabelParams,
    have_zero_shot: bool,
    notes: list[str],
) -> _FewShotOutcome:
    """Decide whether few-shot replaces zero-shot, and fit it when it does (or to report its accuracy)."""
    few = settings.fewshot
    if not few.enabled:
        return _FewShotOutcome({"status": "disabled"})
    if labels is None or not labels.labels:
        where = f" in {labels.source}" if labels is not None else " (no consensus or prior labels file found)"
        notes.append(f"few-shot skipped: no usable human labels{where}")
        return _FewShotOutcome({"status": "no_labels", "labels_source": labels.source if labels else None})
    if labels.dropped:
        left_out = ", ".join(f"{reason.replace('_', ' ')}: {n}" for reason, n in labels.dropped.items())
        notes.append(f"few-shot left out rows of {labels.source} it cannot use ({left_out})")
    chosen = cap_per_class(labels.labels, few.max_per_class, few.seed)
    counts = label_counts(chosen, class_names)
    enough = [c for c in class_names if counts[c] >= few.min_per_class]
    short = [f"{c} ({counts[c]})" for c in class_names if counts[c] < few.min_per_class]
    report: dict[str, Any] = {
        "labels_source": labels.source,
        "labels": sum(counts.values()),
        "labels_per_class": counts,
        "labels_dropped": labels.dropped,
        "min_per_class": few.min_per_class,
    }
    if len(enough) < 2:
        kept = "zero-shot kept" if have_zero_shot else "no predictions"
        notes.append(
            f"few-shot skipped ({kept}): too few labels per class, need {few.min_per_class} for at least two classes; "
            f"short: {', '.join(short)}"
        )
        return _FewShotOutcome({**report, "status": "too_few_labels"})
    result = fit_predict(embeddings, image_ids, chosen, class_names, enough, few)
    report.update(
        cv_accuracy=round(result.cv_accuracy, 4),
        cv_accuracy_std=round(result.cv_accuracy_std, 4),
        classes_learnt=[str(c) for c in result.learnt],  # numpy strings print as np.str_(...)
    )
    if have_zero_shot and short:
        notes.append(
            f"few-shot not used, zero-shot kept: classes {', '.join(short)} have fewer than {few.min_per_class} labels "
            f"and few-shot could never predict them (cross-validated accuracy on the others: {result.cv_accuracy:.3f})"
        )
        return _FewShotOutcome({**report, "status": "reported_only"})
    if short:
        notes.append(f"few-shot cannot predict classes with too few labels: {', '.join(short)} (probability 0)")
    return _FewShotOutcome({**report, "status": "used"}, result, chosen)


def _predictions_frame(
    image_ids: list[str],
    probabilities: np.ndarray | None,
    class_names: list[str],
    *,
    source: str | None,
    model_name: str,
    version: str | None,
    top_negative: list[str | None],
    captions: tuple[list, list, list],
    ontology: Ontology,
    settings: PrelabelParams,
) -> pd.DataFrame:
    probability_columns = [f"p_{c}" for c in class_names]
    if probabilities is None:
        empty = pd.DataFrame(columns=[*columns(Prediction), *probability_columns])
        return empty.astype({c: "float64" for c in ["score", "margin", "entropy", *probability_columns]})
    summary = summarise(probabilities, class_names)
    texts, scores, flags = captions
    descriptions = [
        caps.describe(label, float(score), text, ontology, settings.description)
        for label, score, text in zip(summary.labels, summary.scores, texts, strict=True)
    ]
    # Built column by column: a Prediction object and a dict per image would cost more than the columns themselves
    # at a million images. tests/test_prelabel_stage.py validates rows against schemas.records.Prediction.
    frame = pd.DataFrame(
        {
            "image_id": pd.Series(image_ids),
            "label": pd.Series(summary.labels),
            "score": summary.scores.astype(np.float64),
            "margin": summary.margins.astype(np.float64),
            "entropy": summary.entropies.astype(np.float64),
            "top_hard_negative": pd.Series(top_negative),
            "source": source,
            "model_name": model_name,
            "model_version": version,
            "caption": pd.Series(texts),
            "caption_score": pd.Series(scores, dtype="float64"),
            "caption_flag": np.asarray(flags, dtype=bool),
            "description_en": pd.Series([en for en, _ in descriptions]),
            "description_ko": pd.Series([ko for _, ko in descriptions]),
        }
    )
    probability_frame = pd.DataFrame(probabilities.astype(np.float64), columns=probability_columns)
    return pd.concat([frame[columns(Prediction)], probability_frame], axis=1)


def _report(
    predictions: pd.DataFrame,
    class_names: list[str],
    settings: PrelabelParams,
    zero_shot_status: str,
    few_shot: dict[str, Any],
    embedding_model: str,
    n_images: int,
) -> dict[str, Any]:
    scores = predictions["score"].to_numpy(float)
    low = scores < settings.low_confidence_below
    counts = predictions["label"].value_counts()
    negatives = predictions["top_hard_negative"].dropna().value_counts()
    return {
        "images": n_images,
        "predicted": len(predictions),
        "by_source": {str(k): int(v) for k, v in predictions["source"].value_counts().sort_index().items()},
        "class_distribution": {c: int(counts.get(c, 0)) for c in class_names},
        "mean_confidence": round(float(scores.mean()), 4) if len(scores) else None,
        "low_confidence_share": round(float(low.mean()), 4) if len(scores) else None,
        "low_confidence_below": settings.low_confidence_below,
        "hard_negative_wins": {str(k): int(v) for k, v in negatives.sort_index().items()},
        "captioned": int(predictions["caption"].notna().sum()),
        "captions_flagged": int(predictions["caption_flag"].astype(bool).sum()),
        "zero_shot": zero_shot_status,
        "few_shot": few_shot,
        "embedding_model": embedding_model,
        "model_version": str(predictions["model_version"].iloc[0]) if len(predictions) else None,
    }


def _histogram_png(histogram: pd.DataFrame, path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    widths = histogram["confidence_to"] - histogram["confidence"]
    axes.bar(histogram["confidence"], histogram["images"], width=widths, align="edge", edgecolor="white")
    axes.axvline(report["low_confidence_below"], color="tab:red", linestyle="--", label="low-confidence threshold")
    axes.set(xlim=(0, 1), xlabel="top-class probability", ylabel="images")
    sources = ", ".join(f"{k} {v}" for k, v in report["by_source"].items()) or "no predictions"
    axes.set_title(f"Pre-label confidence ({sources})", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
