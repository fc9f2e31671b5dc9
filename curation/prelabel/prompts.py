"""Prompt ensembles: every template x phrasing of a class (or hard negative) is encoded once, L2-normalised, and
averaged into one text embedding per class (then normalised again, as in the CLIP paper's ensembling).

Hard negatives (shadow, reflection, lens dust ...) are text classes of their own, so they can win an image's
probability openly; :mod:`curation.prelabel.zero_shot` then folds them into the class they map to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curation.errors import ParamsError
from schemas.ontology import Ontology
from schemas.params_prelabel import ClipParams, PreprocessParams


@dataclass(frozen=True)
class TextClass:
    """One column of the zero-shot scores: an ontology class (``maps_to`` is itself) or a hard negative."""

    name: str
    maps_to: str
    prompts: tuple[str, ...]

    @property
    def is_hard_negative(self) -> bool:
        return self.name != self.maps_to


def build_text_classes(ontology: Ontology, settings: ClipParams) -> list[TextClass]:
    """Ontology classes then hard negatives, each with every template x phrasing in the configured language(s).

    Raises:
        ParamsError: Korean prompts are asked for but some classes or hard negatives have no ``prompts_ko``.
    """
    use_en = settings.prompt_language in ("en", "both")
    use_ko = settings.prompt_language in ("ko", "both")
    missing = ontology.missing_korean("prompts") if use_ko else []
    if missing:
        raise ParamsError(
            f"zero-shot with Korean prompts (prelabel.clip.prompt_language: {settings.prompt_language}) needs "
            f"prompts_ko for {', '.join(missing)}; add prompts_ko to them in params.yaml's ontology, or set "
            "prelabel.clip.prompt_language: en"
        )

    def expand(prompts_en: list[str], prompts_ko: list[str]) -> tuple[str, ...]:
        texts: list[str] = []
        if use_en:
            texts += [t.format(p) for t in settings.templates_en for p in prompts_en]
        if use_ko:
            texts += [t.format(p) for t in settings.templates_ko for p in prompts_ko]
        return tuple(dict.fromkeys(texts))  # a template "{}" and a phrasing can coincide: encode each text once

    found = [TextClass(c.name, c.name, expand(c.english_prompts, c.prompts_ko)) for c in ontology.classes]
    found += [TextClass(h.name, h.maps_to, expand(h.prompts_en, h.prompts_ko)) for h in ontology.hard_negatives]
    return found


def ensemble(encode: Callable[[list[str]], np.ndarray], text_classes: list[TextClass]) -> np.ndarray:
    """One (n_text_classes, D) matrix of unit vectors: the normalised mean of each class's normalised prompts.

    ``encode`` is called once, with every prompt of every class, and must return one row per text.
    """
    texts = [prompt for text_class in text_classes for prompt in text_class.prompts]
    vectors = np.asarray(encode(texts), dtype=np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    rows, start = [], 0
    for text_class in text_classes:
        mean = vectors[start : start + len(text_class.prompts)].mean(axis=0)
        rows.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        start += len(text_class.prompts)
    return np.stack(rows).astype(np.float32)


def settings_hash(*parts: object) -> str:
    """Short stable hash of JSON-able parts (pydantic models are dumped in JSON mode)."""
    plain = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    text = json.dumps(plain, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def model_version(model_key: str, text_classes: list[TextClass], clip: ClipParams, preprocess: PreprocessParams) -> str:
    """``<model id>@<revision>+<hash>``: the hash covers every prompt, the hard-negative mapping, the calibration
    temperature and the preprocessing, so the version changes when the model or any of these changes."""
    prompts = [(c.name, c.maps_to, list(c.prompts)) for c in text_classes]
    return f"{model_key}+{settings_hash(prompts, clip.calibration_temperature, preprocess)}"
