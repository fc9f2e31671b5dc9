"""The configured models, each loaded on its first request and then kept; one batcher per model.

Loading reuses :mod:`curation.prelabel.models` (offline resolution, runtime choice, lazy weights), and scoring
reuses the prelabel stage's prompt ensembles and hard-negative folding, so a task scored here gets the same
probabilities and ``model_version`` as the prelabel stage would give it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from curation.prelabel.errors import ModelUnavailableError
from curation.prelabel.prompts import TextClass, build_text_classes, model_version
from curation.serve.batching import Batcher
from curation.serve.errors import UnknownModel
from schemas.ontology import Ontology
from schemas.params_prelabel import PrelabelParams
from schemas.params_serve import ServeModel, ServeParams


@dataclass(frozen=True)
class ClipJob:
    """One image (the model's input array) and the prompts to compare it with; ``ontology`` asks for the
    ontology's prompt-ensemble matrix instead."""

    pixels: np.ndarray
    prompts: tuple[str, ...] = ()
    ontology: bool = False


@dataclass(frozen=True)
class ClipAnswer:
    image: np.ndarray  # (D,) unit vector
    texts: np.ndarray  # (k, D) unit vectors: the prompts, or the ontology's text classes
    logit_scale: float


@dataclass
class _Entry:
    spec: ServeModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: Any = None  # ClipScorer or Captioner (processor loaded, weights maybe not)
    weights_loaded: bool = False
    error: str | None = None
    batcher: Batcher | None = None
    text_cache: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    ontology_texts: np.ndarray | None = None


class Registry:
    """Models by name. Thread-safe: the processor loads under a per-model lock, weights in the model's batcher."""

    def __init__(self, settings: ServeParams, prelabel: PrelabelParams, ontology: Ontology) -> None:
        self.settings = settings
        self.prelabel = prelabel
        self.ontology = ontology
        self.text_classes: list[TextClass] = build_text_classes(ontology, prelabel.clip)
        self._entries = {m.name: _Entry(m) for m in settings.models}
        self._runtime: Any = None
        self._runtime_lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str, kind: str | None = None) -> _Entry:
        found = self._entries.get(name)
        if found is None or (kind is not None and found.spec.kind != kind):
            choices = [n for n, e in self._entries.items() if kind is None or e.spec.kind == kind]
            what = f"{kind} models" if kind else "models"
            raise UnknownModel(f"unknown model {name!r}; configured {what}: {choices} (serve.models in params.yaml)")
        return found

    def runtime(self) -> Any:
        from curation.prelabel.models import select_runtime

        with self._runtime_lock:
            if self._runtime is None:
                self._runtime = select_runtime(self.prelabel.device)
            return self._runtime

    def _source(self, spec: ServeModel) -> tuple[str, str | None, Literal["clip", "captions"]]:
        """Path, revision and prelabel section (for messages): the model's own, else the prelabel stage's."""
        if spec.kind == "clip":
            path, revision, section = self.prelabel.clip.model, self.prelabel.clip.revision, "clip"
        else:
            path, revision, section = self.prelabel.captions.model, self.prelabel.captions.revision, "captions"
        if spec.path is not None:
            path, revision = spec.path, spec.revision
        return path, revision, section

    def checkpoint(self, name: str) -> Any:
        """Where the weights are (cheap: no model code runs); raises ModelUnavailableError with the fix."""
        from curation.prelabel.models import resolve_checkpoint

        path, revision, section = self._source(self.entry(name).spec)
        return resolve_checkpoint(path, revision, section=section, allow_download=self.prelabel.allow_download)

    def model(self, name: str, kind: str | None = None) -> Any:
        """The model object (processor loaded; weights load in its batcher on the first batch)."""
        from curation.prelabel.models import Captioner, ClipScorer

        entry = self.entry(name, kind)
        with entry.lock:
            if entry.model is None:
                try:
                    checkpoint = self.checkpoint(name)
                    cls = ClipScorer if entry.spec.kind == "clip" else Captioner
                    entry.model = cls(checkpoint, self.runtime())
                except ModelUnavailableError as err:
                    entry.error = str(err)
                    raise
                entry.error = None
            return entry.model

    def predict_version(self) -> str:
        """``model_version`` of Label Studio predictions: the prelabel stage's zero-shot version string."""
        checkpoint = self.checkpoint(self.settings.predict_clip)
        key = f"{checkpoint.name}@{checkpoint.version}"
        return model_version(key, self.text_classes, self.prelabel.clip, self.prelabel.preprocess)

    def batcher(self, name: str) -> Batcher:
        entry = self.entry(name)
        with entry.lock:
            if entry.batcher is None:
                run = self._run_clip if entry.spec.kind == "clip" else self._run_blip
                entry.batcher = Batcher(
                    lambda jobs, n=name, r=run: r(n, jobs),
                    max_batch=self.settings.max_batch,
                    max_wait_ms=self.settings.max_wait_ms,
                    name=name,
                )
            return entry.batcher

    # ---------------------------------------------------------------------------------- run in the worker thread

    def _weights(self, name: str) -> Any:
        entry = self.entry(name)
        model = self.model(name)
        if not entry.weights_loaded:
            try:
                _ = model.model  # loads the weights
            except ModelUnavailableError as err:
                entry.error = str(err)
                raise
            entry.weights_loaded = True
        return model

    def _run_clip(self, name: str, jobs: list[ClipJob]) -> list[ClipAnswer]:
        from curation.prelabel.prompts import ensemble

        entry = self.entry(name)
        scorer = self._weights(name)
        images = scorer.encode_images(np.stack([job.pixels for job in jobs]))
        wanted = list(dict.fromkeys(p for job in jobs for p in job.prompts if p not in entry.text_cache))
        if wanted:
            for prompt, vector in zip(wanted, scorer.encode_texts(wanted), strict=True):
                entry.text_cache[prompt] = vector
        if any(job.ontology for job in jobs) and entry.ontology_texts is None:
            entry.ontology_texts = ensemble(scorer.encode_texts, self.text_classes)
        scale = scorer.logit_scale
        answers = []
        for job, image in zip(jobs, images, strict=True):
            if job.ontology:
                texts = entry.ontology_texts
            else:
                texts = np.stack([entry.text_cache[p] for p in job.prompts])
                for prompt in job.prompts:
                    entry.text_cache.move_to_end(prompt)
            answers.append(ClipAnswer(image, texts, scale))
        while len(entry.text_cache) > self.settings.text_cache_size:
            entry.text_cache.popitem(last=False)
        return answers

    def _run_blip(self, name: str, jobs: list[np.ndarray]) -> list[str]:
        from curation.prelabel.captions import generation_kwargs

        captioner = self._weights(name)
        settings = self.prelabel.captions
        return captioner.caption(np.stack(jobs), generation_kwargs(settings), settings.prompt)

    # ---------------------------------------------------------------------------------- status

    def health(self) -> list[dict[str, Any]]:
        runtime = self._runtime
        out = []
        for name, entry in self._entries.items():
            model = entry.model
            out.append(
                {
                    "name": name,
                    "kind": entry.spec.kind,
                    "source": self._source(entry.spec)[0],
                    "languages": list(entry.spec.languages),
                    "loaded": entry.weights_loaded,
                    "device": runtime.device if runtime is not None and entry.weights_loaded else None,
                    "dtype": runtime.dtype if runtime is not None and entry.weights_loaded else None,
                    "version": getattr(model, "key", None),
                    "error": entry.error,
                    "batching": entry.batcher.stats.as_dict() if entry.batcher is not None else None,
                }
            )
        return out

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.batcher is not None:
                await entry.batcher.close()
                entry.batcher = None
