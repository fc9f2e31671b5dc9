"""The prelabel stage: manifest in, pre-labels, embeddings, metrics and a confidence histogram out.

Flow: load the embedder (CLIP-compatible, or the offline backbone when no CLIP weights can be had) -> image
embeddings (cache first; the rest computed by ``prelabel.engine``: decoding threads beside the model in this
process, or Ray Data actors, see :mod:`curation.prelabel.engines`) -> the scorers in turn, the last scores given
winning (zero-shot from prompt ensembles, hard negatives folded; few-shot logistic regression when enough human
labels exist) -> BLIP captions by policy, their CLIP check, English/Korean descriptions. The roles are the
Protocols of :mod:`curation.prelabel.base`; caching, batching and progress are :mod:`curation.prelabel.compute`.

Outputs (:func:`write_prelabel`):

- ``predictions.parquet``: :class:`schemas.records.Prediction` columns, then ``p_<class>`` per ontology class.
  Zero rows when neither zero-shot (no CLIP) nor few-shot (too few labels) is possible; ``prelabel.json`` says why.
- ``embeddings.parquet`` (``Embedding``): ``image_id``, ``model_key`` (``id@revision`` of the encoder), ``embedding``
  (list<float32>; unit vectors for CLIP, raw pooled features for the offline backbone) for every manifest image.
- ``prelabel.json``: DVC metrics (class distribution, mean confidence, low-confidence share, few-shot accuracy ...).
- ``confidence_histogram.csv`` (DVC plot data: ``confidence`` bin start, ``images``) and ``.png``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.prelabel import captions as caps
from curation.prelabel.base import Embedder, ScoreInput, Scorer, Scores
from curation.prelabel.cache import PrelabelCache
from curation.prelabel.compute import (
    Progress,
    cached_logit_scale,
    cached_text_encoder,
    caption_images,
    embed_images,
)
from curation.prelabel.engines import Engine
from curation.prelabel.errors import ManifestError
from curation.prelabel.fewshot import FewShotScorer, LabelSet
from curation.prelabel.images import ImageRef
from curation.prelabel.outputs import (
    EMBEDDINGS_FILE,
    PrelabelResult,
    build_report,
    confidence_histogram,
    predictions_frame,
    write_prelabel,
)
from curation.prelabel.prompts import build_text_classes
from curation.prelabel.zero_shot import ZeroShotScorer
from schemas.ontology import Ontology
from schemas.params_prelabel import PrelabelParams

__all__ = ["EMBEDDINGS_FILE", "PrelabelResult", "confidence_histogram", "prelabel", "write_prelabel"]

REQUIRED_COLUMNS = ("image_id", "sha256", "path", "exif_orientation")

Callback = Callable[[int], None]


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
    from curation.prelabel.models import OfflineBackbone, load_captioner, load_clip, select_runtime

    class_names = ontology.class_names
    runtime = select_runtime(settings.device)
    notes: list[str] = []
    progress = Progress(on_start, on_progress)
    refs = [
        ImageRef(str(path), str(sha), int(orientation), row)
        for row, (path, sha, orientation) in enumerate(
            zip(manifest["path"], manifest["sha256"], manifest["exif_orientation"].fillna(1), strict=True)
        )
    ]
    image_ids = [str(i) for i in manifest["image_id"]]
    clip = load_clip(settings, runtime, notes)
    encoder: Embedder = clip if clip is not None else OfflineBackbone(runtime)

    engine = Engine(settings.engine, settings.ray, decode_workers=settings.decode_workers)
    with PrelabelCache(cache_dir) as cache, engine:
        stats: Counter[str] = Counter()
        embeddings = embed_images(encoder, refs, settings, cache, engine, force, progress, stats)

        progress.add(len(refs))  # scoring every image (each scorer in turn): the bar's real total
        encode_texts = cached_text_encoder(clip, cache, force, stats) if clip is not None else None
        scorers: list[Scorer] = []
        if clip is not None and encode_texts is not None:
            logit_scale = partial(cached_logit_scale, clip, cache, force)
            text_classes = build_text_classes(ontology, settings.clip)
            scorers.append(ZeroShotScorer(clip.key, encode_texts, logit_scale, text_classes, settings))
        scorers.append(FewShotScorer(labels, settings))
        scores, scorer_reports = _run_scorers(scorers, embeddings, image_ids, class_names, encoder.key, notes)
        progress.advance(len(refs))
        if scores is None:
            notes.append(
                "no predictions written: zero-shot needs CLIP weights and few-shot needs human labels; "
                "predictions.parquet has no rows, embeddings.parquet has every image (see the notes above for the fix)"
            )

        caption_texts: list[str | None] = [None] * len(refs)
        caption_score: list[float | None] = [None] * len(refs)
        caption_flag = [False] * len(refs)
        if scores is not None and settings.captions.policy != "none":
            summary_scores = scores.probabilities.max(axis=1)
            mask = caps.select_for_captions(settings.captions.policy, summary_scores, settings.low_confidence_below)
            captioner = load_captioner(settings, runtime, notes) if mask.any() else None
            if captioner is not None:
                chosen = [int(i) for i in np.flatnonzero(mask)]
                chosen_refs = [refs[i] for i in chosen]
                texts = caption_images(captioner, chosen_refs, settings, cache, engine, force, progress, stats)
                for i, text in zip(chosen, texts, strict=True):
                    caption_texts[i] = text
                if encode_texts is not None and chosen:
                    check = caps.caption_scores(encode_texts(texts), embeddings[chosen])
                    for i, score in zip(chosen, check, strict=True):
                        caption_score[i] = float(score)
                        caption_flag[i] = bool(score < settings.captions.check_threshold)

    predictions = predictions_frame(
        image_ids,
        scores.probabilities if scores is not None else None,
        class_names,
        source=scores.source if scores is not None else None,
        model_name=encoder.name,
        version=scores.model_version if scores is not None else None,
        top_negative=scores.top_hard_negative if scores is not None else [None] * len(refs),
        captions=(caption_texts, caption_score, caption_flag),
        ontology=ontology,
        settings=settings,
    )
    embedding_frame = pd.DataFrame(  # rows are views into one matrix, not copies
        {"image_id": image_ids, "model_key": encoder.key, "embedding": list(embeddings)}
    )
    histogram = confidence_histogram(predictions["score"].to_numpy(float), settings.histogram_bins)
    report = build_report(predictions, class_names, settings, scorer_reports, encoder.key, len(refs))
    for note in notes:
        report.setdefault("notes", []).append(note)
    return PrelabelResult(predictions, embedding_frame, histogram, report, embeddings, notes, dict(stats))


def _run_scorers(
    scorers: list[Scorer],
    embeddings: np.ndarray,
    image_ids: list[str],
    class_names: list[str],
    encoder_key: str,
    notes: list[str],
) -> tuple[Scores | None, dict[str, Any]]:
    """Each scorer in turn on the batch; the last scores given win. Returns them and each scorer's report entry."""
    scores: Scores | None = None
    reports: dict[str, Any] = {}
    for scorer in scorers:
        outcome = scorer.score(ScoreInput(embeddings, image_ids, class_names, encoder_key, previous=scores))
        reports[scorer.name] = outcome.report
        notes.extend(outcome.notes)
        if outcome.scores is not None:
            scores = outcome.scores
    return scores, reports


def _check_manifest(manifest: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"the manifest lacks columns {missing} (has {list(manifest.columns)}); pass ingest's manifest.parquet"
        )
    repeated = manifest["image_id"][manifest["image_id"].duplicated()].tolist()
    if repeated:
        raise ManifestError(f"the manifest repeats image_id {repeated[:5]}; re-run ingest")
