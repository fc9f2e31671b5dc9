"""Augment stage: seeded albumentations variants of the train split only (never val or test).

Outputs (``write_augment``, inside the folder whose ``images/`` the core filled): ``augmented.parquet`` (one row
per written variant, :data:`AUGMENT_COLUMNS`: source image, seed, recipe hash, the transforms actually applied with
their sampled parameters, boxes kept and dropped; a region with a shape keeps ``segmentation`` and ``area``, traced
again from its transformed mask), ``augment.json`` (DVC metrics, with the recipe) and
``preview.png`` (originals and variants, boxes drawn; a DVC plot).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from augment import Source, Variant, augment_all, describe_applied, preview_grid, recipe_hash
from augment.preview import save_png
from curation.errors import InputError
from curation.headline import write_headline
from curation.io import write_json, write_parquet
from schemas.params_dataset import AugmentParams
from schemas.records import AugmentedRecord, Box, boxes_from_json, columns

IMAGES = "images"
AUGMENT_COLUMNS = columns(AugmentedRecord)


@dataclass(frozen=True)
class AugmentResult:
    records: pd.DataFrame
    report: dict[str, Any]
    preview: Image.Image | None


def augment(
    splits: pd.DataFrame,
    manifest: pd.DataFrame,
    settings: AugmentParams,
    out_dir: Path,
    *,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> AugmentResult:
    """Write ``settings.variants`` variants of every labelled train image into ``out_dir/images``.

    Args:
        splits: ``splits.parquet`` rows (``image_id``, ``split``, ``label``, ``severity``, ``boxes``).
        manifest: ``manifest.parquet`` rows, for each image's ``path``.
        settings: Recipe, variants, seed, box filters, workers.
        out_dir: Output folder; images go to ``out_dir/images`` (use a staging folder for an atomic swap).
    """
    paths = manifest.set_index("image_id")["path"]
    train = splits[(splits["split"] == "train")].sort_values("image_id", kind="stable")
    unlabeled = int(train["label"].isna().sum())
    train = train[train["label"].notna()]
    missing = sorted(set(train["image_id"]) - set(paths.index))
    if missing:
        raise InputError(
            f"splits.parquet names {len(missing)} image(s) missing from the manifest (first {missing[0]!r}); "
            "re-run the split stage on the current manifest"
        )
    sources = [_source(row, paths[row.image_id]) for row in train.itertuples(index=False)]
    if on_start:
        on_start(len(sources))
    images_dir = Path(out_dir) / IMAGES
    variants = list(augment_all(sources, settings, images_dir, on_progress=on_progress))
    info = train.set_index("image_id")
    records = pd.DataFrame([dataclasses.asdict(v) for v in variants], columns=list(Variant.__dataclass_fields__))
    records["file"] = IMAGES + "/" + records["file"]
    records["label"] = records["source_image_id"].map(info["label"])
    records["severity"] = records["source_image_id"].map(info["severity"])
    records["split"] = "train"
    records["recipe_hash"] = recipe_hash(settings.recipe)
    records = records[AUGMENT_COLUMNS].astype({"variant": int, "boxes_in": int, "boxes_dropped": int})
    report = _report(records, settings, len(sources), unlabeled, splits)
    preview = _preview(sources, records, Path(out_dir), settings.preview_images) if len(records) else None
    return AugmentResult(records, report, preview)


def write_augment(result: AugmentResult, out_dir: Path) -> None:
    """Write ``augmented.parquet``, ``augment.json`` and ``preview.png`` (when there is anything to show).

    ``out_dir`` is the folder :func:`augment` wrote the images into (the command passes the staging folder of
    :func:`curation.io.publish`, so images and tables appear together).
    """
    out_dir = Path(out_dir)
    write_parquet(out_dir / "augmented.parquet", result.records)
    write_json(out_dir / "augment.json", result.report)
    write_headline(out_dir, "augment", result.report)
    if result.preview is not None:
        save_png(result.preview, out_dir / "preview.png")


def _source(row: Any, path: str) -> Source:
    boxes = boxes_from_json(row.boxes) if isinstance(row.boxes, str) else []
    shaped = any("segmentation" in b.model_fields_set for b in boxes)
    return Source(
        image_id=row.image_id,
        path=str(path),
        boxes=tuple((b.x, b.y, b.w, b.h) for b in boxes),
        box_labels=tuple(b.label for b in boxes),
        segmentations=tuple(b.segmentation for b in boxes) if shaped else (),
    )


def _report(
    records: pd.DataFrame, settings: AugmentParams, n_sources: int, unlabeled: int, splits: pd.DataFrame
) -> dict[str, Any]:
    by_class = records.groupby("label").size() if len(records) else pd.Series(dtype=int)
    return {
        "source_images": n_sources,
        "variants_per_image": settings.variants,
        "augmented_images": len(records),
        "augmented_by_class": {str(k): int(v) for k, v in by_class.sort_index().items()},
        "train_unlabeled_skipped": unlabeled,
        "not_augmented_val_test": int((splits["split"] != "train").sum()),
        "boxes_in": int(records["boxes_in"].sum()),
        "boxes_dropped": int(records["boxes_dropped"].sum()),
        "seed": settings.seed,
        "recipe_hash": recipe_hash(settings.recipe),
        "recipe": [spec.model_dump(mode="json") for spec in settings.recipe],
    }


def _preview(sources: list[Source], records: pd.DataFrame, out_dir: Path, n: int) -> Image.Image | None:
    """One row per class where possible (first image by id of each class), then more images, up to ``n`` rows."""
    if n == 0:
        return None
    by_source = {sid: group for sid, group in records.groupby("source_image_id")}
    labels = records.drop_duplicates("source_image_id").set_index("source_image_id")["label"]
    chosen: list[Source] = []
    seen: set[str] = set()
    for source in sources:  # sources are sorted by image id
        if labels.get(source.image_id) not in seen:
            chosen.append(source)
            seen.add(labels.get(source.image_id))
    chosen += [s for s in sources if s not in chosen]
    rows = []
    for source in chosen[:n]:
        shapes = source.segmentations or (None,) * len(source.boxes)
        original_boxes = [
            Box(x=x, y=y, w=w, h=h, label=label, segmentation=polygons)
            for (x, y, w, h), label, polygons in zip(source.boxes, source.box_labels, shapes, strict=True)
        ]
        variants = by_source[source.image_id].sort_values("variant")
        cells = [
            (str(out_dir / file), boxes_from_json(boxes) if isinstance(boxes, str) else [], describe_applied(applied))
            for file, boxes, applied in zip(variants["file"], variants["boxes"], variants["applied"], strict=True)
        ]
        title = f"{labels.get(source.image_id)} {source.image_id[:8]}"
        rows.append((title, source.path, original_boxes, cells))
    return preview_grid(rows)
