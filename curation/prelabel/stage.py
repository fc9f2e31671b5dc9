"""The prelabel stage: manifest in, pre-labels, embeddings, metrics and a confidence histogram out.

Flow: load the embedder (CLIP-compatible, or the offline backbone when no CLIP weights can be had) -> image
embeddings (cache first; the rest computed by ``prelabel.engine``: decoding threads beside the model in this
process, or Ray Data actors, see :mod:`curation.prelabel.engines`) -> anomaly patch features (``prelabel.anomaly``,
the same cache and engine) -> the scorers in turn, the last scores given winning (anomaly: OK / "defect" for every
image, no CLIP or labels needed; zero-shot from prompt ensembles, hard negatives folded; few-shot logistic
regression when enough human labels exist, reading the anomaly score and map-weighted patch features too) ->
anomaly maps, regions and their descriptions -> BLIP captions by policy, their CLIP check, English/Korean
descriptions. The roles are the
Protocols of :mod:`curation.prelabel.base`; caching, batching and progress are :mod:`curation.prelabel.compute`.

Outputs (:func:`write_prelabel`):

- ``predictions.parquet``: :class:`schemas.records.Prediction` columns, then ``p_<class>`` per ontology class.
  Every image has a row when ``prelabel.anomaly.enabled`` (source ``anomaly`` until a class scorer can run; the
  ``anomaly_*`` and ``regions`` columns either way). Without anomaly: zero rows when neither zero-shot (no CLIP)
  nor few-shot (too few labels) is possible; ``prelabel.json`` says why.
- ``anomaly_maps/<image_id>.png``: 8-bit anomaly maps (see :class:`schemas.records.Prediction` ``anomaly_map``).
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
from curation.prelabel.anomaly_scorer import (
    AnomalyScorer,
    choose_reference,
    golden_paths,
    load_patch_model,
    map_outputs,
    pixel_pitches,
)
from curation.prelabel.base import Embedder, ScoreInput, Scorer, Scores
from curation.prelabel.cache import PrelabelCache
from curation.prelabel.compute import (
    Progress,
    RunContext,
    cached_logit_scale,
    cached_text_encoder,
    caption_images,
    embed_images,
    golden_features_cached,
    patch_features,
    shared_features,
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
from curation.prelabel.prompts import build_text_classes, settings_hash
from curation.prelabel.zero_shot import ZeroShotScorer
from schemas.ontology import Ontology, ok_class
from schemas.params import IngestParams
from schemas.params_anomaly import AnomalyParams
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
    ingest: IngestParams | None = None,
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
        labels: human labels for few-shot refinement and the anomaly scorer's reviewed-OK references and
            calibration (see :func:`curation.prelabel.fewshot.read_labels`).
        ingest: the ``ingest`` params (which class is OK: :func:`curation.ontology.ok_class`); None: the one
            OK-like class name of the ontology.
        force: recompute every embedding and caption, overwriting the cache.
        on_start: called with the number of model inputs to compute (again, larger, when captions are added).
        on_progress: called with the number of inputs computed since the last call.

    Raises:
        ManifestError: a missing manifest column, or an image that is gone or changed since ingest.
        ModelUnavailableError: weights missing and ``on_missing_model: error`` (or no embedding model at all).
        ReferenceInputError: golden references or reviewed-OK labels the anomaly reference mode cannot use.
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
    engine = Engine(settings.engine, settings.ray, decode_workers=settings.decode_workers)
    anomaly = settings.anomaly
    ok = ok_class(ontology, ingest)
    label_map = labels.labels if labels is not None else None
    reference = choose_reference(anomaly, label_map, ok) if anomaly.enabled else None
    patch_model = load_patch_model(anomaly, settings.device, clip=clip, notes=notes) if reference is not None else None
    encoder: Embedder
    if clip is not None:
        encoder = clip
    elif patch_model is not None:  # the offline backbone: one pass gives both (below), its weights load once
        encoder = patch_model.backbone
    else:
        encoder = OfflineBackbone(runtime)
    goldens = _golden_paths(manifest, anomaly) if reference is not None and reference.mode == "golden" else None
    pitches = pixel_pitches(manifest, anomaly.description) if anomaly.enabled else []
    with PrelabelCache(cache_dir) as cache, engine:
        stats: Counter[str] = Counter()
        ctx = RunContext(settings, cache, engine, force, progress, stats)
        patches, anomaly_scorer = None, None
        embedding_input = f"preprocess.resize: {settings.preprocess.resize}"
        if patch_model is not None and clip is None:
            # No CLIP: the offline backbone's embedding and the anomaly patches come from one forward pass.
            embeddings, patches = shared_features(patch_model, refs, ctx)
            embedding_input = (
                f"the anomaly scorer's pass: the whole image squashed to {patch_model.spec.size} px (one forward "
                "pass for both; preprocess.resize applies to CLIP and BLIP)"
            )
        else:
            embeddings = embed_images(encoder, refs, ctx)
        if reference is not None and patch_model is not None:
            if patches is None:
                patches = patch_features(patch_model, refs, ctx)
            golden = None
            if goldens is not None:
                golden = golden_features_cached(patch_model, refs, goldens, ctx)
            feature_key = f"{patch_model.key}-" + settings_hash(patch_model.spec.__dict__, settings.preprocess)
            anomaly_scorer = AnomalyScorer(
                settings, reference, labels=label_map, ok=ok, golden=golden, feature_key=feature_key
            )

        progress.add(len(refs))  # scoring every image (each scorer in turn): the bar's real total
        encode_texts = cached_text_encoder(clip, cache, force, stats) if clip is not None else None
        scorers: list[Scorer] = [anomaly_scorer] if anomaly_scorer is not None else []
        if clip is not None and encode_texts is not None:
            logit_scale = partial(cached_logit_scale, clip, cache, force)
            text_classes = build_text_classes(ontology, settings.clip)
            scorers.append(ZeroShotScorer(clip.key, encode_texts, logit_scale, text_classes, settings))
        scorers.append(FewShotScorer(labels, settings))
        scores, scorer_reports = _run_scorers(
            scorers, embeddings, image_ids, class_names, encoder.key, notes, patches=patches
        )
        progress.advance(len(refs))
        columns = None
        if anomaly_scorer is not None and anomaly_scorer.run is not None and patch_model is not None:
            progress.add(len(refs))  # maps, regions and descriptions, image by image
            shapes = list(
                zip(
                    manifest["height"].astype(int),
                    manifest["width"].astype(int),
                    [r.exif_orientation for r in refs],
                    strict=True,
                )
            )
            glossary = settings.description.glossary
            columns = map_outputs(
                anomaly_scorer.run,
                image_ids,
                shapes,
                pitches,
                patch_model.spec,
                anomaly,
                glossary,
                progress.advance,
                severities=ontology.severities,
            )
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
                texts = caption_images(captioner, chosen_refs, ctx)
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
        anomaly=columns,
        ok=ok,
    )
    embedding_frame = pd.DataFrame(  # rows are views into one matrix, not copies
        {"image_id": image_ids, "model_key": encoder.key, "embedding": list(embeddings)}
    )
    histogram = confidence_histogram(predictions["score"].to_numpy(float), settings.histogram_bins)
    report = build_report(predictions, class_names, settings, scorer_reports, encoder.key, len(refs))
    report["embedding_input"] = embedding_input
    for note in notes:
        report.setdefault("notes", []).append(note)
    maps = columns.pngs if columns is not None else {}
    return PrelabelResult(predictions, embedding_frame, histogram, report, embeddings, notes, dict(stats), maps)


def _run_scorers(
    scorers: list[Scorer],
    embeddings: np.ndarray,
    image_ids: list[str],
    class_names: list[str],
    encoder_key: str,
    notes: list[str],
    *,
    patches: np.ndarray | None = None,
) -> tuple[Scores | None, dict[str, Any]]:
    """Each scorer in turn on the batch; the last scores given win, and the last extra features offered go to the
    scorers after (few-shot). Returns the scores and each scorer's report entry."""
    scores: Scores | None = None
    extra: np.ndarray | None = None
    reports: dict[str, Any] = {}
    for scorer in scorers:
        batch = ScoreInput(
            embeddings,
            image_ids,
            class_names,
            encoder_key,
            previous=scores,
            patch_features=patches,
            extra_features=extra,
        )
        outcome = scorer.score(batch)
        reports[scorer.name] = outcome.report
        notes.extend(outcome.notes)
        if outcome.scores is not None:
            scores = outcome.scores
        if outcome.features is not None:
            extra = outcome.features
    return scores, reports


def _golden_paths(manifest: pd.DataFrame, settings: AnomalyParams) -> list[Path]:
    column = f"meta_{settings.reference_column}" if settings.reference_column else None
    values = manifest[column].tolist() if column is not None and column in manifest.columns else None
    return golden_paths(settings, values, len(manifest))


def _check_manifest(manifest: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise ManifestError(
            f"the manifest lacks columns {missing} (has {list(manifest.columns)}); pass ingest's manifest.parquet"
        )
    repeated = manifest["image_id"][manifest["image_id"].duplicated()].tolist()
    if repeated:
        raise ManifestError(f"the manifest repeats image_id {repeated[:5]}; re-run ingest")
