"""Which images get a BLIP caption, the caption check, and the English/Korean descriptions.

There is no translation model offline, so the Korean description is a template in Korean around the class's
Korean name, and the caption has its glossary terms replaced (whole words, longest term first); words outside the
glossary stay in English. That is stated here and in the params so nobody mistakes it for a translation.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from curation.errors import ParamsError
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


def korean_name(label: str, ontology: Ontology, settings: DescriptionParams) -> str | None:
    """The class's Korean name in descriptions: the glossary's entry, else ``name_ko``; None when neither exists."""
    return settings.glossary.get(label, ontology.get(label).name_ko)


def require_korean_descriptions(ontology: Ontology, settings: DescriptionParams, language: str) -> None:
    """Raise unless every class has a Korean name when ``labelstudio.description_language`` asks for Korean.

    Raises:
        ParamsError: ``language`` is ko or both and some classes have neither ``name_ko`` nor a glossary entry.
    """
    missing = [name for name in ontology.class_names if korean_name(name, ontology, settings) is None]
    if language in ("ko", "both") and missing:
        raise ParamsError(
            f"Korean descriptions (labelstudio.description_language: {language}) need a Korean name for "
            f"{', '.join(missing)}; add name_ko to them in params.yaml's ontology (or prelabel.description.glossary), "
            "or set labelstudio.description_language: en"
        )


def describe(
    label: str, confidence: float, caption: str | None, ontology: Ontology, settings: DescriptionParams
) -> tuple[str, str | None]:
    """English and Korean descriptions from the templates in params (Korean: None when the class has no Korean
    name, see :func:`require_korean_descriptions`)."""
    defect = ontology.get(label)
    label_ko = korean_name(label, ontology, settings)
    values = {
        "label": label,
        "label_en": defect.label_en,
        "label_ko": label_ko,
        "confidence": confidence,
        "caption": caption if caption else settings.no_caption_en,
        "caption_ko": glossary_korean(caption, settings.glossary) if caption else settings.no_caption_ko,
    }
    english = settings.template_en.format(**values)
    return english, None if label_ko is None else settings.template_ko.format(**values)
