"""Saved views: what users look at first, listed in the App's saved-view menu, each with a description.

| view | samples | order |
|---|---|---|
| ``originals`` | the original images, no augmented variant (the App opens here) | manifest order |
| ``disputes`` | consensus flagged as disputed | lowest agreement first |
| ``low-agreement`` | agreement below ``browse.low_agreement`` | lowest first |
| ``low-confidence-prelabels`` | pre-label score below ``browse.low_confidence`` | lowest first |
| ``likely-label-errors`` | mistakenness above ``browse.mistakenness_threshold`` | most likely first |
| ``near-duplicates`` | near-duplicate groups of two or more images | by group |
| ``cross-split-duplicates`` | near-duplicate groups spread over more than one split (leaks) | by group |
| ``split-<name>`` | each split | manifest order |
| ``augmented`` | augmented variants | by source image |
| ``most-anomalous`` | every image with an anomaly score, reviewed or not | highest score first |

A view is saved only when the fields it needs exist (its stage ran); all views except ``augmented`` show original
images only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas.params_browse import BrowseParams

ORIGINALS = "originals"  # the view `curation browse` opens the App on


def descriptions(settings: BrowseParams) -> dict[str, str]:
    """Saved view name -> the description the App shows beside it (``split-<name>`` views use ``"split"``)."""
    return {
        ORIGINALS: "Original images only; augmented variants are in the 'augmented' view",
        "disputes": "Images whose reviewers disagreed (consensus disputed), lowest agreement first",
        "low-agreement": f"Reviewer agreement below {settings.low_agreement:g}, lowest first",
        "low-confidence-prelabels": f"Model pre-label confidence below {settings.low_confidence:g}, lowest first",
        "likely-label-errors": (
            f"Reviewed label likely wrong given the model (mistakenness above {settings.mistakenness_threshold:g}), "
            "most likely first"
        ),
        "near-duplicates": "Images with a near-duplicate (same perceptual-hash group), grouped",
        "cross-split-duplicates": "Near-duplicates spread over more than one split: leaks between train/val/test",
        "split": "The images of one split",
        "augmented": "Augmented variants of the train images (not originals), by source image",
        "most-anomalous": "Images by anomaly score, most anomalous first (heatmap in 'anomaly', regions in "
        "'anomaly_regions')",
    }


def originals(dataset: Any) -> Any:
    """The dataset without augmented variants."""
    from fiftyone import ViewField as F

    return dataset.match(F("is_augmented") == False)  # noqa: E712 (a MongoDB expression, not a Python comparison)


def view_builders(settings: BrowseParams) -> dict[str, tuple[tuple[str, ...], Callable[[Any], Any]]]:
    """Saved view name -> (fields it needs, function of the original images giving the view)."""
    from fiftyone import ViewField as F

    return {
        "disputes": (("disputed", "agreement"), lambda v: v.match(F("disputed") == True).sort_by("agreement")),  # noqa: E712
        "low-agreement": (
            ("agreement",),
            # null = one reviewer (not measured); MongoDB orders null below every number, so exclude it first
            lambda v: v.match((F("agreement") != None) & (F("agreement") < settings.low_agreement)).sort_by(  # noqa: E711
                "agreement"
            ),
        ),
        "low-confidence-prelabels": (
            ("prelabel",),
            lambda v: v.match(F("prelabel.confidence") < settings.low_confidence).sort_by("prelabel.confidence"),
        ),
        "likely-label-errors": (
            ("mistakenness",),
            lambda v: v.match(F("mistakenness") > settings.mistakenness_threshold).sort_by(
                "mistakenness", reverse=True
            ),
        ),
        "near-duplicates": (("dup_group_size",), lambda v: v.match(F("dup_group_size") > 1).sort_by("dup_group")),
        "cross-split-duplicates": (
            ("dup_cross_split",),
            lambda v: v.match(F("dup_cross_split") == True).sort_by("dup_group"),  # noqa: E712
        ),
        "most-anomalous": (
            ("anomaly_score",),
            # image_id breaks ties, so equal scores come in the same order on every rebuild
            lambda v: v.exists("anomaly_score").sort_by([("anomaly_score", -1), ("image_id", 1)]),
        ),
    }


def save_views(dataset: Any, *, settings: BrowseParams) -> dict[str, int]:
    """Save every view whose fields exist on ``dataset``, replacing older ones of the same name.

    Returns:
        Saved view name -> number of samples in it.
    """
    from fiftyone import ViewField as F

    schema = dataset.get_field_schema()
    base = originals(dataset)
    wanted: dict[str, Any] = {ORIGINALS: base}  # first: the App lists saved views in the order they were saved
    for name, (needs, build) in view_builders(settings).items():
        if all(field in schema for field in needs):
            wanted[name] = build(base)
    if "split" in schema:
        for split in sorted(s for s in base.distinct("split") if s):
            wanted[f"split-{split}"] = base.match_tags(split)
    if "source_image_id" in schema:
        wanted["augmented"] = dataset.match(F("is_augmented") == True).sort_by("source_image_id")  # noqa: E712
    described = descriptions(settings)
    counts = {}
    for name, view in wanted.items():
        if dataset.has_saved_view(name):
            dataset.delete_saved_view(name)
        description = described["split" if name.startswith("split-") else name]
        dataset.save_view(name, view, description=description)
        counts[name] = len(view)
    return counts
