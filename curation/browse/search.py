"""Text -> image search through the CLIP text encoder of the model that made the image embeddings.

``curation search "rust along the edge"`` embeds the text, ranks images by cosine similarity with the similarity
index (fiftyone-brain, over the stored embeddings) and saves the ranking as the ``text-search`` view. The App's own
text search works too: the index is built with ``model="curation-clip-text"``, a local zoo-model entry (written to
the database folder and announced through ``FIFTYONE_MODEL_ZOO_MANIFEST_PATHS``) that loads
:class:`curation.browse.zoo_model.ClipTextModel` from a local checkpoint. Nothing is downloaded; FiftyOne's own
CLIP wrappers cannot be used here because they import torchvision, which does not work with the CPU torch build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.browse.errors import BrowseError, SearchUnavailableError
from curation.io import write_json
from schemas.params_browse import BrowseParams

ZOO_MODEL_NAME = "curation-clip-text"
SEARCH_VIEW = "text-search"
MANIFEST_NAME = "zoo-manifest.json"


class ClipTextEncoder:
    """A CLIP checkpoint's text tower: prompts -> L2-normalised embeddings in the image embedding space."""

    def __init__(self, name_or_path: str) -> None:
        try:
            import torch
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as err:  # pragma: no cover - torch and transformers are project dependencies
            raise SearchUnavailableError(f"text search needs torch and transformers ({err}); run `make setup`") from err
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
            self._model = CLIPModel.from_pretrained(name_or_path, local_files_only=True).eval()
        except (OSError, ValueError) as err:
            raise SearchUnavailableError(
                f"cannot load the CLIP model {name_or_path!r} from local files ({err}); text search needs the "
                "checkpoint that made the embeddings: set browse.text_model to its folder"
            ) from err
        self._torch = torch
        self.name_or_path = name_or_path

    @property
    def dim(self) -> int:
        return int(self._model.config.projection_dim)

    def embed(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with self._torch.no_grad():
            features = self._model.get_text_features(**tokens)
        if not isinstance(features, self._torch.Tensor):  # some versions wrap the projection in an output object
            features = features.pooler_output
        vectors = features.float().numpy()
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def register_zoo_model(db_dir: Path) -> Path:
    """Write the local zoo-model entry and announce it to FiftyOne here and in the App server it spawns."""
    path = Path(db_dir).resolve() / MANIFEST_NAME
    entry = {
        "base_name": ZOO_MODEL_NAME,
        "base_filename": None,
        "version": None,
        "description": "Text tower of a local CLIP checkpoint (defect-curation), for text -> image search",
        "default_deployment_config_dict": {"type": "curation.browse.zoo_model.ClipTextModel", "config": {}},
        "requirements": {"packages": ["torch", "transformers"], "cpu": {"support": True}},
        "tags": ["embeddings", "text-embeddings", "local"],
        "date_added": "2026-11-01 00:00:00",
    }
    write_json(path, {"models": [entry]})
    os.environ["FIFTYONE_MODEL_ZOO_MANIFEST_PATHS"] = str(path)
    if "fiftyone" in sys.modules:
        import fiftyone as fo

        fo.config.model_zoo_manifest_paths = [str(path)]
    return path


def resolve_text_model(dataset: Any, settings: BrowseParams) -> str | None:
    """The CLIP checkpoint for text search: ``browse.text_model``, else the model that made the pre-labels if it is a
    local folder; None when there is none."""
    if settings.text_model:
        return settings.text_model
    if "prelabel" not in dataset.get_field_schema():
        return None
    names = [n for n in dataset.distinct("prelabel.model_name") if n]
    local = [n for n in names if (Path(n) / "config.json").is_file()]
    return str(Path(local[0]).resolve()) if len(local) == 1 else None


def similarity_model_args(dataset: Any, settings: BrowseParams) -> dict[str, Any]:
    """``model``/``model_kwargs`` for ``compute_similarity`` so the App can search by text; empty when no usable
    CLIP checkpoint is known or its embedding size differs from the stored embeddings."""
    name = resolve_text_model(dataset, settings)
    if name is None:
        return {}
    try:
        encoder = ClipTextEncoder(name)
    except SearchUnavailableError:
        return {}
    sample_embedding = dataset.exists("embedding").first()["embedding"]
    if encoder.dim != len(sample_embedding):
        return {}
    register_zoo_model(settings.db_dir)
    return {"model": ZOO_MODEL_NAME, "model_kwargs": {"name_or_path": name}}


def text_search(dataset: Any, query: str, *, k: int, settings: BrowseParams) -> pd.DataFrame:
    """Rank images by cosine similarity of their embedding to ``query``'s CLIP text embedding.

    The ranking is also saved as the ``text-search`` view, so the App shows it.

    Returns:
        Columns ``rank``, ``image_id``, ``filepath``, ``similarity`` (cosine), best first.

    Raises:
        SearchUnavailableError: no similarity index, or no CLIP checkpoint matching the embeddings.
    """
    if not query.strip():
        raise BrowseError("the search text is empty; give a description such as 'rust along the edge'")
    if settings.similarity_key not in dataset.list_brain_runs():
        raise SearchUnavailableError(
            f"dataset {dataset.name!r} has no similarity index {settings.similarity_key!r}: it was built without "
            "embeddings; run the prelabel stage, then `dvc repro fiftyone`"
        )
    index = dataset.load_brain_results(settings.similarity_key)
    name = (index.config.model_kwargs or {}).get("name_or_path") or resolve_text_model(dataset, settings)
    if name is None:
        raise SearchUnavailableError(
            "no CLIP checkpoint is known for text search; set browse.text_model to the local folder of the model "
            "that made the embeddings"
        )
    encoder = ClipTextEncoder(name)
    vector = encoder.embed([query])[0]
    if vector.shape[0] != _index_dim(index):
        raise SearchUnavailableError(
            f"{name}: text embeddings have {vector.shape[0]} values, the image embeddings {_index_dim(index)}; "
            "set browse.text_model to the checkpoint that made the embeddings"
        )
    view = dataset.sort_by_similarity(vector, k=k, brain_key=settings.similarity_key, dist_field="text_distance")
    if dataset.has_saved_view(SEARCH_VIEW):
        dataset.delete_saved_view(SEARCH_VIEW)
    dataset.save_view(SEARCH_VIEW, view, description=f"text search: {query}")
    ids, paths, distances = view.values(["image_id", "filepath", "text_distance"])
    return pd.DataFrame(
        {
            "rank": range(1, len(ids) + 1),
            "image_id": ids,
            "filepath": paths,
            "similarity": [1.0 - float(d) for d in distances],
        }
    )


def _index_dim(index: Any) -> int:
    return int(index.embeddings.shape[1])
