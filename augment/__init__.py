"""Albumentations augmentation: a recipe from params, applied box-aware and in parallel, with a preview grid.

``build_pipeline`` turns ``augment.recipe`` into a checked ``Compose``; ``augment_all`` writes seeded variants of
many images across processes; ``preview_grid`` tiles originals and variants for a quick look. The stage around it
(train split only, records, report) is ``curation.augment_stage``.
"""

from augment.preview import describe_applied, preview_grid
from augment.recipe import RecipeError, build_pipeline, recipe_hash
from augment.run import Source, Variant, augment_all

__all__ = [
    "RecipeError",
    "Source",
    "Variant",
    "augment_all",
    "build_pipeline",
    "describe_applied",
    "preview_grid",
    "recipe_hash",
]
