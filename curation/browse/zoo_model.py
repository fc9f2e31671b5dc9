"""The FiftyOne model behind the ``curation-clip-text`` zoo entry (see ``curation.browse.search.register_zoo_model``).

FiftyOne imports this module by name when the App or ``sort_by_similarity`` needs to embed a text prompt; it imports
fiftyone at the top, so nothing imported at CLI start-up may import it.
"""

from __future__ import annotations

from typing import Any

import fiftyone.core.config as foc
import fiftyone.core.models as fom
import numpy as np

from curation.browse.search import ClipTextEncoder


class ClipTextModelConfig(foc.Config):
    """Config of :class:`ClipTextModel`: ``name_or_path`` of a local CLIP checkpoint."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.name_or_path = self.parse_string(d, "name_or_path")


class ClipTextModel(fom.Model, fom.PromptMixin):
    """Embeds text prompts with a CLIP text tower; image embeddings are precomputed by the prelabel stage."""

    def __init__(self, config: ClipTextModelConfig) -> None:
        self.config = config
        self._encoder = ClipTextEncoder(config.name_or_path)

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def has_logits(self) -> bool:
        return False

    @property
    def ragged_batches(self) -> bool:
        return False

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return False

    def predict(self, arg: Any) -> Any:
        raise NotImplementedError("curation-clip-text embeds text prompts only; image embeddings come from prelabel")

    @property
    def can_embed_prompts(self) -> bool:
        return True

    def embed_prompt(self, arg: str) -> np.ndarray:
        return self._encoder.embed([arg])[0]

    def embed_prompts(self, args: list[str]) -> np.ndarray:
        return self._encoder.embed(list(args))
