"""Pure scoring: prompt similarities with interpretation bands (``/score``) and ontology predictions in Label
Studio's format (``/predict``), from the embeddings the batcher returns."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from curation.prelabel.captions import describe
from curation.prelabel.prompts import TextClass
from curation.prelabel.zero_shot import fold_hard_negatives, summarise, text_probabilities
from curation.serve.registry import ClipAnswer
from curation.studio.mapping import to_prediction
from schemas.ontology import Ontology
from schemas.params_prelabel import PrelabelParams
from schemas.params_serve import Band

_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def band_of(similarity: float, bands: list[Band]) -> Band:
    """The last band whose ``min_similarity`` is at most ``similarity`` (bands are sorted, the first starts at -1)."""
    chosen = bands[0]
    for band in bands:
        if similarity >= band.min_similarity:
            chosen = band
    return chosen


def score_prompts(answer: ClipAnswer, prompts: list[str], bands: list[Band]) -> dict[str, Any]:
    """Cosine similarity of the image with each prompt, its band and, with several prompts, the probability of
    each prompt among them (CLIP's softmax with the model's logit scale)."""
    similarities = answer.texts.astype(np.float64) @ answer.image.astype(np.float64)
    probabilities = (
        text_probabilities(answer.image[None, :], answer.texts, logit_scale=answer.logit_scale)[0]
        if len(prompts) > 1
        else [None]
    )
    rows = []
    for index, prompt in enumerate(prompts):
        similarity = float(similarities[index])
        band = band_of(similarity, bands)
        probability = probabilities[index] if len(prompts) > 1 else None
        rows.append(
            {
                "prompt": prompt,
                "similarity": round(similarity, 6),
                "probability": None if probability is None else round(float(probability), 6),
                "band": band.label,
                "meaning": band.meaning,
            }
        )
    best = max(range(len(rows)), key=lambda i: rows[i]["similarity"])
    top = rows[best]
    summary = f"best match: {top['prompt']!r} (similarity {top['similarity']:.3f}, {top['band']}: {top['meaning']})"
    if len(rows) > 1:
        summary += f"; it takes {top['probability']:.0%} of the probability among the {len(rows)} prompts"
    return {"scores": rows, "best": top["prompt"], "interpretation": summary}


def language_note(prompts: list[str], languages: list[str]) -> str | None:
    """A warning when Korean prompts go to a model not marked as Korean-capable (or English ones the reverse)."""
    korean = [p for p in prompts if _HANGUL.search(p)]
    if korean and "ko" not in languages:
        return (
            f"{len(korean)} prompt(s) are Korean but this model is configured for {languages}; its scores for them "
            "are unreliable: choose a Korean-capable model (serve.models[].languages includes ko)"
        )
    if len(korean) < len(prompts) and "en" not in languages:
        return f"some prompts are not Korean but this model is configured for {languages} only"
    return None


def predictions(
    answers: list[ClipAnswer],
    captions: list[str | None],
    *,
    text_classes: list[TextClass],
    ontology: Ontology,
    prelabel: PrelabelParams,
    version: str,
    description_language: str,
) -> list[dict[str, Any]]:
    """One Label Studio prediction per image (``result``, ``score``, ``model_version``), built as push builds them
    (:func:`curation.studio.mapping.to_prediction`)."""
    images = np.stack([a.image for a in answers])
    raw = text_probabilities(
        images,
        answers[0].texts,
        logit_scale=answers[0].logit_scale,
        temperature=prelabel.clip.calibration_temperature,
    )
    class_names = ontology.class_names
    probabilities, _ = fold_hard_negatives(raw, text_classes, class_names)
    summary = summarise(probabilities, class_names)
    out = []
    for i, caption in enumerate(captions):
        label, confidence = summary.labels[i], float(summary.scores[i])
        description_en, description_ko = describe(label, confidence, caption, ontology, prelabel.description)
        row = {
            "label": label,
            "score": confidence,
            "model_version": version,
            "caption": caption,
            "description_en": description_en,
            "description_ko": description_ko,
        }
        out.append(to_prediction(row, description_language))
    return out
