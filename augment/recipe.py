"""Recipe from params -> one albumentations ``Compose``, checked before any image is touched.

Geometric transforms that take a ``border_mode`` fill the borders they uncover by reflection
(``cv2.BORDER_REFLECT_101``) unless the recipe gives one: albumentations' default, a constant black fill, leaves
wedges in the corners that a defect model can learn as a feature.

Albumentations only warns about unknown keyword arguments, so each transform's arguments are checked against its
signature here, and the pipeline is tried once on a small image with a box: a recipe that cannot run fails with a
message naming ``augment.recipe[i]`` before a worker starts.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from curation.errors import ParamsError
from schemas.params_dataset import TransformSpec

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check at import (offline networks)

import albumentations as A  # after the environment switch above
import cv2

BOX_FIELD = "box_index"  # label field carrying each box's position in the input list, to count what was dropped


class RecipeError(ParamsError):
    """The augment recipe in params.yaml cannot be built or run."""


def recipe_hash(recipe: Sequence[TransformSpec]) -> str:
    """First 12 hex digits of the SHA-256 of the recipe as canonical JSON: changes when any transform changes."""
    text = json.dumps([spec.model_dump(mode="json") for spec in recipe], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def build_pipeline(
    recipe: Sequence[TransformSpec],
    *,
    min_visibility: float = 0.0,
    min_area: float = 0.0,
) -> A.Compose:
    """Build the box-aware pipeline for ``recipe``.

    Boxes are COCO ``[x, y, w, h]`` in pixels with a ``box_index`` label field; a box left with less than
    ``min_visibility`` of its area (or under ``min_area`` pixels) is dropped by albumentations, and the caller counts
    it from the indexes that come back.

    Raises:
        RecipeError: unknown transform, unknown or invalid argument, or a transform that cannot handle boxes.
    """
    transforms = [_build_one(index, spec) for index, spec in enumerate(recipe)]
    pipeline = A.Compose(
        transforms,
        bbox_params=A.BboxParams(
            format="coco",
            label_fields=[BOX_FIELD],
            min_visibility=min_visibility,
            min_area=min_area,
            clip=True,  # boxes partly outside are clipped to the image, then filtered by visibility
        ),
        save_applied_params=True,
        seed=0,
    )
    _try_once(pipeline, recipe)
    return pipeline


def apply(
    pipeline: A.Compose,
    image: np.ndarray,
    boxes: list[list[float]],
    seed: int,
    *,
    masks: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Run ``pipeline`` on one image and its boxes with ``seed``: same inputs and seed, same output pixels.

    ``masks`` (one ``(H, W)`` array per region with a shape) go through the same spatial transforms as the image
    (albumentations' ``masks`` target, nearest-neighbour), and come back as ``result["masks"]``; passing them does
    not change the image's random draws.
    """
    _seed_tree(pipeline, seed)
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    extra: dict[str, Any] = {BOX_FIELD: list(range(len(boxes)))}
    if masks is not None:
        extra["masks"] = masks
    return pipeline(image=image, bboxes=array, **extra)


def _seed_tree(transform: A.BasicTransform | A.BaseCompose, seed: int) -> None:
    """Give every transform its own seed derived from ``seed`` and its position.

    ``Compose.set_random_seed`` in albumentations 2.0 hands the *same* seed to every child, so their "apply with
    probability p" draws are identical and all transforms fire or skip together. Distinct child seeds fix that.
    A compose's own generators are set directly: its ``set_random_seed`` would seed every child a second time.
    """
    children = getattr(transform, "transforms", None)
    if children is None:
        transform.set_random_seed(seed)
        return
    transform.seed = seed
    transform.random_generator = np.random.default_rng(seed)
    transform.py_random = random.Random(seed)
    for index, child in enumerate(children):
        _seed_tree(child, (seed * 1_000_003 + index + 1) % 2**32)  # default_rng/Random hash the seed well


def variant_seed(seed: int, image_id: str, variant: int) -> int:
    """Seed of one output, from content ids: independent of worker count and processing order."""
    digest = hashlib.sha256(f"{seed}:{image_id}:{variant}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _build_one(index: int, spec: TransformSpec) -> A.BasicTransform:
    where = f"augment.recipe[{index}] ({spec.name})"
    cls = getattr(A, spec.name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        raise RecipeError(f"{where}: no albumentations transform named {spec.name!r}; check the spelling and case")
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(spec.args) - set(accepted) - {"self"})
        if unknown:
            allowed = ", ".join(sorted(set(accepted) - {"self"}))
            raise RecipeError(f"{where}: unknown argument(s) {unknown}; {spec.name} takes: {allowed}")
    args = {key: tuple(value) if isinstance(value, list) else value for key, value in spec.args.items()}
    if "border_mode" in accepted:
        # a constant (black) fill leaves wedges in the corners that a defect model can learn; mirror the image instead
        args.setdefault("border_mode", cv2.BORDER_REFLECT_101)
    try:
        return cls(**args)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where}: invalid arguments {spec.args}: {err}") from err


def _try_once(pipeline: A.Compose, recipe: Sequence[TransformSpec]) -> None:
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[8:40, 8:40] = 1
    try:
        apply(pipeline, image, [[8.0, 8.0, 32.0, 32.0]], seed=0, masks=[mask])
    except Exception as err:  # albumentations raises many types; say which recipe failed and why
        names = [spec.name for spec in recipe]
        raise RecipeError(
            f"augment.recipe {names} fails on a test image with a box and a mask ({type(err).__name__}: {err}); "
            "remove transforms that do not support bounding boxes or masks, or fix their arguments"
        ) from err
