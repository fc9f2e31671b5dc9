"""Knobs of ``curation serve``: the pre-labeler as an HTTP service (Label Studio ML backend + ``/score``).

Prompts, templates, preprocessing and descriptions come from the ``prelabel`` section, so the service and the
prelabel stage score the same way and write the same ``model_version``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.base import FieldProblem, StrictModel


class ServeModel(StrictModel):
    """One model the service may load (lazily, on its first request)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    kind: Literal["clip", "blip"] = "clip"
    path: str | None = Field(
        None,
        description="Hub id or local folder; null = prelabel.clip.model (clip) or prelabel.captions.model (blip).",
    )
    revision: str | None = None
    languages: list[Literal["en", "ko"]] = Field(
        default_factory=lambda: list[Literal["en", "ko"]](["en"]),
        description="Prompt languages the model understands (for /score notes).",
    )


class Band(StrictModel):
    """An interpretation band: similarities >= ``min_similarity`` (and below the next band) read as ``label``."""

    min_similarity: float = Field(ge=-1.0, le=1.0)
    label: Annotated[str, Field(min_length=1)]
    meaning: str = ""


def _default_bands() -> list[Band]:
    # CLIP cosine similarities of ViT-B/32-class models: unrelated text/image pairs sit around 0.1-0.2, matching
    # captions around 0.25-0.35. Other checkpoints (SigLIP, Korean CLIP) have other ranges: set bands per site.
    return [
        Band(min_similarity=-1.0, label="unrelated", meaning="the prompt does not describe this image"),
        Band(min_similarity=0.18, label="weak", meaning="little support; treat as no match"),
        Band(min_similarity=0.24, label="plausible", meaning="the prompt fits the image somewhat; check it"),
        Band(min_similarity=0.30, label="strong", meaning="the prompt describes this image well"),
    ]


class ServeParams(StrictModel):
    """Everything ``curation serve`` reads from ``params.yaml`` (section ``serve``)."""

    host: str = Field("127.0.0.1", description="Bind address; keep loopback unless Label Studio runs elsewhere.")
    port: Annotated[int, Field(ge=1, le=65535)] = 9090
    models: list[ServeModel] = Field(default_factory=lambda: [ServeModel(name="clip", kind="clip")], min_length=1)
    predict_model: str | None = Field(None, description="CLIP model for Label Studio /predict; null = first clip.")
    caption_model: str | None = Field(None, description="BLIP model captioning /predict tasks; null = no captions.")
    max_batch: Annotated[int, Field(ge=1, le=1024)] = Field(16, description="Images per model batch.")
    max_wait_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        5.0, description="How long the first queued request waits for others to share its batch."
    )
    max_request_bytes: Annotated[int, Field(ge=1024)] = Field(8 * 1024 * 1024, description="Body limit (HTTP 413).")
    max_image_pixels: Annotated[int, Field(ge=1)] = Field(40_000_000, description="Width x height limit (HTTP 413).")
    max_prompts: Annotated[int, Field(ge=1, le=1000)] = 32
    max_prompt_chars: Annotated[int, Field(ge=1, le=10_000)] = 300
    max_predict_tasks: Annotated[int, Field(ge=1)] = Field(256, description="Tasks per Label Studio /predict call.")
    fetch_timeout_s: Annotated[float, Field(gt=0)] = Field(30.0, description="Fetching a task's image from Studio.")
    text_cache_size: Annotated[int, Field(ge=0)] = Field(4096, description="Prompt embeddings kept per model.")
    bands: list[Band] = Field(default_factory=_default_bands, min_length=1)
    allowed_hosts: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Host names accepted in the Host header besides 127.0.0.1, localhost, ::1 and serve.host "
        "(e.g. the name Label Studio uses to reach the service); any other Host gets HTTP 400 (DNS rebinding).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServeParams:
        names = [m.name for m in self.models]
        for index, name in enumerate(names):
            if name in names[:index]:
                first = names.index(name)
                raise FieldProblem(
                    f"serve.models: model names must be unique, {name!r} appears twice",
                    ("models", first, "name"),
                    ("models", index, "name"),
                )
        kinds = {m.name: m.kind for m in self.models}
        if not any(kind == "clip" for kind in kinds.values()):
            raise FieldProblem("serve.models needs at least one model of kind clip", "models")
        for key, kind in (("predict_model", "clip"), ("caption_model", "blip")):
            value = getattr(self, key)
            if value is not None and kinds.get(value) != kind:
                raise FieldProblem(
                    f"serve.{key} is {value!r}, which is not a configured {kind} model; use one of "
                    f"{[n for n, k in kinds.items() if k == kind]}",
                    key,
                )
        edges = [b.min_similarity for b in self.bands]
        for index in range(1, len(edges)):
            if edges[index] <= edges[index - 1]:
                raise FieldProblem(
                    f"serve.bands must have strictly increasing min_similarity, got {edges}",
                    ("bands", index - 1, "min_similarity"),
                    ("bands", index, "min_similarity"),
                )
        if edges[0] > -1.0:
            raise FieldProblem(
                "serve.bands: the first band must start at min_similarity -1.0 so every score has a band",
                ("bands", 0, "min_similarity"),
            )
        return self

    @property
    def predict_clip(self) -> str:
        return self.predict_model or next(m.name for m in self.models if m.kind == "clip")
