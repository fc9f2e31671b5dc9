"""The headline numbers of each stage: ``metrics.json``, the file DVC reads as the stage's metrics.

``dvc metrics show`` prints one table whose columns are the union of every metrics file's keys; with each stage's
full report (counts per class, per split, per annotator, confidence intervals ...) that table was 300+ columns
wide. So every stage writes its full report as ``<stage>.json`` (a plain output the reports, the release notes and
the tests read) and, beside it, ``metrics.json``: a handful of flat numbers picked from that report here. Shared
names (``images``) share one column.

A key missing from a report (an older report, an optional part that did not run) or null there (not measured) is
left out, never written as 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.io import write_json

METRICS_FILE = "metrics.json"

# stage -> (name in metrics.json, dotted key in the stage's report); about five per stage, the numbers a person
# compares between two runs (`dvc metrics diff`)
HEADLINE: dict[str, list[tuple[str, str]]] = {
    "ingest": [
        ("files", "files_seen"),
        ("images", "ingested"),
        ("quarantined", "quarantined"),
        ("duplicate_copies", "duplicate_copies"),
        ("near_duplicate_groups", "near_duplicate_groups"),
        ("prior_labels", "prior_labels"),
        ("masks", "masks"),
    ],
    "prelabel": [
        ("images", "images"),
        ("predicted", "predicted"),
        ("mean_confidence", "mean_confidence"),
        ("low_confidence_share", "low_confidence_share"),
        ("few_shot_cv_accuracy", "few_shot.cv_accuracy"),
    ],
    "pull": [
        ("tasks", "tasks"),
        ("annotations", "annotations"),
        ("annotators", "annotators"),
        ("reviewed_images", "reviewed_images"),
        ("images_2plus_reviews", "images_with_2plus_reviews"),
    ],
    "agreement": [
        ("images", "n_images"),
        ("annotators", "n_annotators"),
        ("shared_images", "label.n_images"),
        ("krippendorff_alpha", "label.krippendorff_alpha"),
        ("gwet_ac1", "label.gwet_ac1"),
        ("severity_alpha_ordinal", "severity.krippendorff_alpha_ordinal"),
        ("disputed", "consensus.n_disputed"),
        ("unverified", "consensus.n_single"),
    ],
    "push": [
        ("images", "images"),
        ("tasks_in_project", "tasks_in_project"),
        ("tasks_created", "tasks_created"),
        ("tasks_with_overlap", "tasks_with_overlap"),
        ("flagged_for_adjudication", "flagged_for_adjudication"),
    ],
    "split": [
        ("images", "images"),
        ("train", "splits.train"),
        ("val", "splits.val"),
        ("test", "splits.test"),
        ("unlabeled_dropped", "unlabeled_dropped"),
    ],
    "augment": [
        ("source_images", "source_images"),
        ("augmented_images", "augmented_images"),
        ("boxes_dropped", "boxes_dropped"),
    ],
    "export": [
        ("images", "images"),
        ("train", "splits.train.images"),
        ("val", "splits.val.images"),
        ("test", "splits.test.images"),
    ],
    "fiftyone": [
        ("images", "n_samples"),
        ("accuracy", "evaluation.accuracy"),
        ("macro_f1", "evaluation.fscore"),
    ],
    "health": [
        ("images", "images"),
        ("unverified", "unverified"),
        ("quarantined", "quarantined"),
        ("near_duplicate_groups", "near_duplicate_groups"),
    ],
}


def headline(stage: str, report: dict[str, Any]) -> dict[str, Any]:
    """The stage's headline numbers from its full report (see :data:`HEADLINE`); absent keys are left out."""
    picked: dict[str, Any] = {}
    for name, dotted in HEADLINE[stage]:
        value: Any = report
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, dict | list):
            picked[name] = value
    return picked


def write_headline(folder: Path, stage: str, report: dict[str, Any]) -> Path:
    """Write ``folder/metrics.json`` (the DVC metrics of ``stage``); returns its path."""
    return write_json(Path(folder) / METRICS_FILE, headline(stage, report))
