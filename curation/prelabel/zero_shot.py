"""Zero-shot scores from embeddings, hard-negative folding, and the per-image summary (label, margin, entropy)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from curation.prelabel.base import Outcome, ScoreInput, Scores
from curation.prelabel.prompts import TextClass, ensemble, model_version
from schemas.params_prelabel import PrelabelParams


class ZeroShotScorer:
    """A :class:`~curation.prelabel.base.Scorer`: image embeddings against prompt-ensemble text embeddings of a
    CLIP-compatible model, hard negatives folded into the classes they map to.

    Args:
        key: the CLIP model's ``key`` (its ``model_version`` prefix).
        encode_texts: the model's text side (through the stage's cache).
        logit_scale: reads the model's logit scale (through the cache: reading it loads the weights).
        text_classes: prompts per class and hard negative (:func:`curation.prelabel.prompts.build_text_classes`).
        settings: the ``prelabel`` params (calibration temperature; the rest goes into ``model_version``).
    """

    name = "zero_shot"

    def __init__(
        self,
        key: str,
        encode_texts: Callable[[list[str]], np.ndarray],
        logit_scale: Callable[[], float],
        text_classes: list[TextClass],
        settings: PrelabelParams,
    ) -> None:
        self.key = key
        self.encode_texts = encode_texts
        self.logit_scale = logit_scale
        self.text_classes = text_classes
        self.settings = settings

    def score(self, batch: ScoreInput) -> Outcome:
        text_embeddings = ensemble(self.encode_texts, self.text_classes)
        raw = text_probabilities(
            batch.embeddings,
            text_embeddings,
            logit_scale=self.logit_scale(),
            temperature=self.settings.clip.calibration_temperature,
        )
        probabilities, top_negative = fold_hard_negatives(raw, self.text_classes, batch.class_names)
        version = model_version(self.key, self.text_classes, self.settings.clip, self.settings.preprocess)
        return Outcome("done", scores=Scores("zero_shot", probabilities, version, top_negative))


def text_probabilities(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, *, logit_scale: float, temperature: float = 1.0
) -> np.ndarray:
    """Softmax over text classes of ``logit_scale * cos(image, text) / temperature`` (rows sum to 1).

    Both inputs are unit vectors; ``logit_scale`` is the model's learnt scale (``exp(logit_scale)``, 100 for
    OpenAI CLIP) and ``temperature`` the optional calibration from params.
    """
    logits = (image_embeddings.astype(np.float64) @ text_embeddings.astype(np.float64).T) * (logit_scale / temperature)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def fold_hard_negatives(
    probabilities: np.ndarray, text_classes: list[TextClass], class_names: list[str]
) -> tuple[np.ndarray, list[str | None]]:
    """Add each hard negative's probability to its ``maps_to`` class.

    Returns:
        ``(class_probabilities, top_hard_negative)``: an (N, len(class_names)) matrix in ontology order, and per
        image the hard negative that had the highest probability of all text classes before folding (else None).
    """
    column = {name: index for index, name in enumerate(class_names)}
    folded = np.zeros((probabilities.shape[0], len(class_names)), dtype=np.float64)
    for index, text_class in enumerate(text_classes):
        folded[:, column[text_class.maps_to]] += probabilities[:, index]
    winners = probabilities.argmax(axis=1) if len(text_classes) else np.zeros(0, int)
    top = [text_classes[w].name if text_classes[w].is_hard_negative else None for w in winners]
    return folded, top


@dataclass(frozen=True)
class Summary:
    labels: list[str]
    scores: np.ndarray
    margins: np.ndarray
    entropies: np.ndarray


def summarise(probabilities: np.ndarray, class_names: list[str]) -> Summary:
    """Top class, its probability, top-minus-second margin and Shannon entropy (nats) of each row."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    rows = np.arange(probabilities.shape[0])
    top = probabilities[rows, order[:, 0]]
    second = probabilities[rows, order[:, 1]] if probabilities.shape[1] > 1 else np.zeros_like(top)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(probabilities > 0, np.log(probabilities), 0.0)
    entropy = -(probabilities * logs).sum(axis=1)
    return Summary([class_names[i] for i in order[:, 0]], top, top - second, np.maximum(entropy, 0.0))
