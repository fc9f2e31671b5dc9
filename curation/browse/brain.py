"""Brain runs (similarity index, uniqueness), the pre-label evaluation and mistakenness on a built dataset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from curation.browse.samples import GT_FIELD, PRELABEL_FIELD
from schemas.params_browse import BrowseParams

if TYPE_CHECKING:
    from curation.browse.build import BuildSummary

EVAL_KEY = "eval_prelabel"


def brain_runs(dataset: Any, originals: Any, settings: BrowseParams, summary: BuildSummary) -> list[str]:
    """Similarity index and uniqueness over the images that have an embedding."""
    import fiftyone.brain as fob

    if "embedding" not in dataset.get_field_schema():
        return []
    with_embedding = originals.exists("embedding")
    if len(with_embedding) < len(originals):
        summary.issues.append(
            f"embeddings: {len(originals) - len(with_embedding)} image(s) without an embedding are left out of "
            "the similarity index and uniqueness"
        )
    from curation.browse.search import similarity_model_args

    model_args = similarity_model_args(dataset, settings)
    summary.text_model = (model_args.get("model_kwargs") or {}).get("name_or_path")
    fob.compute_similarity(
        with_embedding,
        embeddings="embedding",
        brain_key=settings.similarity_key,
        backend="sklearn",
        metric="cosine",
        progress=False,
        **model_args,
    )
    runs = [settings.similarity_key]
    skip = uniqueness_skipped(len(with_embedding), settings)
    if skip:
        summary.issues.append(skip)
    elif settings.uniqueness:
        # not similarity_index=settings.similarity_key: the brain's sklearn helper centres the index's embedding
        # array in place while computing neighbours, which would skew later distances of the saved index
        fob.compute_uniqueness(with_embedding, embeddings="embedding", progress=False)
        runs.append("uniqueness")
    return runs


def uniqueness_skipped(n_images: int, settings: BrowseParams) -> str | None:
    """Why uniqueness is not computed for ``n_images`` (None when it is, or when it is switched off)."""
    if settings.uniqueness and n_images > settings.uniqueness_max_images:
        return (
            f"uniqueness skipped: {n_images:,} images > browse.uniqueness_max_images "
            f"({settings.uniqueness_max_images:,}); its cost grows with the square of the image count"
        )
    return None


def evaluate(originals: Any, classes: list[str], summary: BuildSummary) -> dict[str, Any]:
    """``evaluate_classifications`` of the pre-labels against the consensus, so the App shows the confusion matrix."""
    schema = originals.get_field_schema()
    if PRELABEL_FIELD not in schema or GT_FIELD not in schema:
        return {}
    both = originals.exists(PRELABEL_FIELD).exists(GT_FIELD)
    if not len(both):
        summary.issues.append("evaluation: no image has both a pre-label and a consensus label")
        return {}
    results = both.evaluate_classifications(PRELABEL_FIELD, gt_field=GT_FIELD, eval_key=EVAL_KEY, classes=classes)
    metrics = {k: float(v) for k, v in results.metrics().items()}
    report = results.report()
    per_class = {
        c: {"precision": report[c]["precision"], "recall": report[c]["recall"], "support": int(report[c]["support"])}
        for c in classes
        if c in report
    }
    return {"key": EVAL_KEY, "n": len(both), **metrics, "per_class": per_class}


def add_mistakenness(samples: Any, *, field: str = "mistakenness") -> int:
    """Mistakenness of the consensus label given the pre-label's logits, as fiftyone-brain defines it.

    Same formula as ``fiftyone.brain.compute_mistakenness(samples, "prelabel", "ground_truth", use_logits=True)``
    (tested equal): ``(s * exp(-H(softmax(logits))) + 1) / 2`` with ``s = +1`` when the labels differ, ``-1`` when
    they agree (the confidence replaces ``exp(-H)`` without logits). Only images with both labels are scored: the
    brain would give images without a consensus a high score, which says nothing about a label. Written vectorised
    because the brain's version saves one sample at a time (measured ~180 samples/s here: ten minutes for 100,000
    images).

    Returns:
        The number of samples scored.
    """
    scored = samples.exists(PRELABEL_FIELD).exists(GT_FIELD)
    ids, predicted, truth, logits, confidence = scored.values(
        [
            "id",
            f"{PRELABEL_FIELD}.label",
            f"{GT_FIELD}.label",
            f"{PRELABEL_FIELD}.logits",
            f"{PRELABEL_FIELD}.confidence",
        ]
    )
    values = []
    for pred, gt, logit, conf in zip(predicted, truth, logits, confidence, strict=True):
        sign = -1.0 if pred == gt else 1.0
        if logit is not None:
            shifted = np.asarray(logit, dtype=np.float64) - np.max(logit)
            p = np.exp(shifted) / np.exp(shifted).sum()
            certainty = float(np.exp(-_entropy(p)))
        else:
            certainty = float(conf)
        values.append((sign * certainty + 1.0) / 2.0)
    if ids:
        scored.set_values(field, dict(zip(ids, values, strict=True)), key_field="id")
    return len(ids)


def _entropy(p: np.ndarray) -> float:
    nonzero = p[p > 0]
    return float(-(nonzero * np.log(nonzero)).sum())
