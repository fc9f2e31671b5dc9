"""Prior labels of byte-identical copies, merged: one image, one set of labels, never both copies' stacked.

Copies of one image (same SHA-256) can each bring labels: a folder class per copy, a VOC file per copy, a mask
per copy. When the copies agree on the image's classes, their labels are merged: a label found on several
copies (same source format, class, box, polygons and area) is kept once, or as often as the copy that has it
most often; labels only one copy has are kept too. When the copies' classes differ, none of the image's labels
is imported: the disagreement is an issue, and the image is left for review.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

_IDENTITY = ["source_format", "source_label", "label", "x", "y", "w", "h", "polygons", "area"]


def merge_copies(labels: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Merge the labels of byte-identical copies (rows with one ``image_id`` and several ``rel_path``).

    Args:
        labels: Prior labels (``PriorLabel`` columns), as :func:`curation.labels.labels_frame` sorts them.

    Returns:
        The labels kept, in their order, and issues ``(rel_path, detail)``, one per image whose copies disagree.
    """
    if labels.empty:
        return labels, []
    n_copies = labels.groupby("image_id")["rel_path"].transform("nunique")
    shared = labels[n_copies > 1]
    keep = n_copies <= 1
    issues: list[tuple[str, str]] = []
    for _, rows in shared.groupby("image_id", sort=True):
        per_copy = dict(list(rows.groupby("rel_path", sort=True)))
        classes = {rel: frozenset(_classes(group)) for rel, group in per_copy.items()}
        if len(set(classes.values())) > 1:
            listing = "; ".join(f"{rel}: {', '.join(sorted(found))}" for rel, found in classes.items())
            issues.append(
                (
                    next(iter(per_copy)),
                    f"byte-identical copies have different classes ({listing}); none of their labels was imported and "
                    "the image is left for review: fix the label of one copy or delete the duplicate",
                )
            )
            continue
        taken: Counter[tuple[object, ...]] = Counter()
        for group in per_copy.values():
            seen: Counter[tuple[object, ...]] = Counter()
            for index, identity in zip(group.index, _identities(group), strict=True):
                seen[identity] += 1
                if seen[identity] > taken[identity]:
                    keep[index] = True
            for identity, count in seen.items():
                taken[identity] = max(taken[identity], count)
    return labels[keep].reset_index(drop=True), issues


def _classes(rows: pd.DataFrame) -> list[str]:
    """The ontology class of each row, or its source label when it maps to none."""
    pairs = zip(rows["label"], rows["source_label"], strict=True)
    return [label if isinstance(label, str) else source for label, source in pairs]


def _identities(rows: pd.DataFrame) -> list[tuple[object, ...]]:
    return [
        tuple(None if pd.isna(value) else (round(value, 6) if isinstance(value, float) else value) for value in row)
        for row in rows[_IDENTITY].itertuples(index=False)
    ]
