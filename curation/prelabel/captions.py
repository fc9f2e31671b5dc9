"""Which images get a BLIP caption, the caption check, and the English/Korean descriptions.

There is no translation model offline, so the Korean description is a template in Korean around the class's
Korean name, and the caption has its glossary terms replaced (whole words, longest term first); words outside the
glossary stay in English. That is stated here and in the params so nobody mistakes it for a translation.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from schemas.ontology import Ontology
from schemas.params_prelabel import CaptionParams, DescriptionParams


def select_for_captions(policy: str, scores: np.ndarray | None, low_confidence_below: float) -> np.ndarray:
    """Boolean mask of images to caption: all, none, or those whose top probability is below the threshold
    (every image when there are no scores: low confidence is then the honest assumption)."""
    if policy == "none":
        return np.zeros(0 if scores is None else len(scores), dtype=bool)
    if policy == "all" or scores is None:
        return np.ones(0 if scores is None else len(scores), dtype=bool)
    return np.asarray(scores) < low_confidence_below


def generation_kwargs(settings: CaptionParams) -> dict[str, Any]:
    """``generate`` arguments from params (sampling knobs only when sampling, so greedy/beam runs stay exact)."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "num_beams": settings.num_beams,
        "do_sample": settings.do_sample,
    }
    if settings.do_sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    return kwargs


def caption_scores(caption_embeddings: np.ndarray, image_embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each caption with its own image (both unit vectors, rows paired)."""
    return np.einsum("ij,ij->i", caption_embeddings.astype(np.float64), image_embeddings.astype(np.float64))


def glossary_korean(text: str, glossary: dict[str, str]) -> str:
    """Replace glossary terms (case-insensitive, whole words, longest first) with their Korean."""
    if not glossary:
        return text
    terms = sorted(glossary, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
    lowered = {t.lower(): v for t, v in glossary.items()}
    return pattern.sub(lambda m: lowered[m.group(0).lower()], text)


def describe(
    label: str, confidence: float, caption: str | None, ontology: Ontology, settings: DescriptionParams
) -> tuple[str, str]:
    """English and Korean descriptions from the templates in params."""
    defect = ontology.get(label)
    label_ko = settings.glossary.get(label, defect.name_ko)
    values = {
        "label": label,
        "label_en": defect.name_en,
        "label_ko": label_ko,
        "confidence": confidence,
        "caption": caption if caption else settings.no_caption_en,
        "caption_ko": glossary_korean(caption, settings.glossary) if caption else settings.no_caption_ko,
    }
    return settings.template_en.format(**values), settings.template_ko.format(**values)
