"""The pre-labeler interfaces: what a model or scorer must offer for the prelabel stage to run it.

The stage (:mod:`curation.prelabel.stage`) orchestrates caching by content hash, batching on the chosen engine,
progress, notes and the report once, around these roles:

- :class:`Embedder`: images -> vectors (:class:`curation.prelabel.models.OfflineBackbone`, and CLIP's image side).
- :class:`TextImageEmbedder`: an Embedder whose texts land in the same space
  (:class:`curation.prelabel.models.ClipScorer`: CLIP, SigLIP, multilingual CLIP).
- :class:`Describer`: images -> text (:class:`curation.prelabel.models.Captioner`, BLIP).
- :class:`Scorer`: a batch's embeddings (+ context) -> class probabilities and a ``model_version``
  (:class:`curation.prelabel.zero_shot.ZeroShotScorer`, :class:`curation.prelabel.fewshot.FewShotScorer`,
  :class:`curation.prelabel.anomaly_scorer.AnomalyScorer`, which reads the batch's patch features from
  :class:`ScoreInput` and hands few-shot extra features through :attr:`Outcome.features`).

Image models also say how to rebuild themselves in another process (:meth:`ImageModel.recipe`), so the Ray engine
needs no list of model types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from curation.prelabel.images import InputSpec

if TYPE_CHECKING:
    from curation.prelabel.anomaly import FeatureSpec, PatchBank
    from curation.prelabel.engines import ModelRecipe

Source = Literal["zero_shot", "few_shot", "anomaly"]  # schemas.records.Prediction.source


class ImageModel(Protocol):
    """A model that reads images prepared for its :class:`InputSpec`."""

    name: str
    version: str

    @property
    def spec(self) -> InputSpec | FeatureSpec:
        """The model's input: size and normalisation, or the anomaly input (:class:`FeatureSpec`, patch models)."""
        ...

    @property
    def key(self) -> str:
        """``name@version``: the model's identity in cache namespaces and ``model_version`` strings."""
        ...

    def recipe(self, device: str) -> ModelRecipe:
        """How to build this model again in another process (a Ray actor), on ``device`` (the params' choice)."""
        ...


class Embedder(ImageModel, Protocol):
    """Images -> one vector each."""

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 inputs -> (N, D) float32 embeddings."""
        ...


class TextImageEmbedder(Embedder, Protocol):
    """An :class:`Embedder` whose text embeddings share the image space (unit vectors), for zero-shot scores."""

    @property
    def logit_scale(self) -> float:
        """The learnt scale of cosine similarities (100 for OpenAI CLIP)."""
        ...

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> (N, D) unit vectors."""
        ...


class Describer(ImageModel, Protocol):
    """Images -> one text each (captions)."""

    def caption(self, pixels: np.ndarray, generation: dict[str, Any], prompt: str | None = None) -> list[str]:
        """(N, 3, S, S) inputs -> one caption each; ``generation`` are ``generate`` keyword arguments."""
        ...


@dataclass(frozen=True)
class Scores:
    """One scorer's pre-labels for every image of the batch (rows in manifest order).

    Attributes:
        source: ``Prediction.source`` of the rows.
        probabilities: (N, classes) float64 in ontology order, rows summing to 1 (0 for classes it cannot predict).
        model_version: ``Prediction.model_version``: everything that changes the scores.
        top_hard_negative: per image, the hard negative that won before folding, else None.
    """

    source: Source
    probabilities: np.ndarray
    model_version: str
    top_hard_negative: list[str | None]


@dataclass(frozen=True)
class ScoreInput:
    """What a scorer may read about the batch.

    Attributes:
        embeddings: (N, D) float32 image embeddings from the stage's :class:`Embedder`.
        image_ids: manifest order.
        class_names: ontology order (the columns of :attr:`Scores.probabilities`).
        encoder_key: the Embedder's ``key`` (scorers built on its embeddings name it in their version).
        previous: the scores of the scorer before this one, which this one may replace or leave as they are.
        patch_features: (N, g, g, D) float16 patch features, for patch-level scorers (anomaly); None when the
            anomaly pre-labeler is off.
        reference_bank: a prebuilt reviewed-OK patch bank (unused by the stage: its anomaly scorer builds
            cross-fitted banks from the labelled OK images of the batch).
        extra_features: (N, E) per-image features the scorers before this one offered (:attr:`Outcome.features`:
            the anomaly score and map-weighted patch features), for few-shot; None when none did.
    """

    embeddings: np.ndarray
    image_ids: list[str]
    class_names: list[str]
    encoder_key: str
    previous: Scores | None = None
    patch_features: np.ndarray | None = None
    reference_bank: PatchBank | None = None
    extra_features: np.ndarray | None = None


@dataclass(frozen=True)
class Outcome:
    """What a scorer did: its entry in ``prelabel.json``, notes for the user, its scores if they replace the
    previous ones (None leaves them as they were), and (N, E) per-image features it offers the scorers after it."""

    report: Any
    notes: tuple[str, ...] = ()
    scores: Scores | None = None
    features: np.ndarray | None = None


class Scorer(Protocol):
    """Embeddings (+ context) -> class probabilities. The stage runs its scorers in order; each one's scores, when
    it gives any, replace the ones before (few-shot replaces zero-shot once enough labels exist)."""

    name: str  # its key in prelabel.json

    def score(self, batch: ScoreInput) -> Outcome: ...
