"""Few-shot refinement: logistic regression on normalised image embeddings, fitted on the human labels so far.

Labels come from the agreement stage's ``consensus.parquet`` when present, else from ingest's
``prior_labels.parquet``, or from any file given with ``--labels`` (Parquet or CSV with a ``label`` column and an
``image_id``, ``rel_path`` or ``file`` column). Labelled images get out-of-fold probabilities (from a model that
never saw them), so their pre-labels and the reported cross-validated accuracy are honest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.prelabel.base import Outcome, ScoreInput, Scores
from curation.prelabel.errors import ManifestError
from curation.prelabel.prompts import settings_hash
from curation.tables import read_table
from schemas.params_prelabel import FewShotParams, PrelabelParams
from schemas.records import Consensus

PRIOR_LABELS = Path("data/ingest/prior_labels.parquet")


@dataclass(frozen=True)
class LabelSet:
    """One label per image (``labels``: image_id -> class), where it came from, and what was left out and why."""

    labels: dict[str, str]
    source: str
    dropped: dict[str, int] = field(default_factory=dict)


def default_labels_path(manifest_path: Path) -> Path | None:
    """The prior labels that ingest wrote beside the manifest, if any.

    Consensus labels are never picked up implicitly: the pipeline passes them with ``--labels`` in its own
    ``refine`` stage, so every input a stage reads is one DVC tracks.
    """
    candidate = Path(manifest_path).parent / PRIOR_LABELS.name
    return candidate if candidate.is_file() else None


def read_labels(path: Path, manifest: pd.DataFrame, class_names: list[str]) -> LabelSet:
    """Read human labels and resolve them to manifest image ids; one label per image.

    Rows without a label, for images not in the manifest, and images with conflicting labels (several boxes of
    different classes) are dropped and counted (the stage says so), never guessed.

    Raises:
        ManifestError: the file cannot be read, has no usable columns, or has labels of classes outside the
            ontology (counted per label).
    """
    path = Path(path)
    frame = read_table(  # consensus.parquet, prior_labels.parquet or a label CSV: the consensus record's columns
        path,
        Consensus,
        columns=["label"],
        optional="all",
        missing_fix="pass --labels PATH or drop the option",
        fix="use Parquet or CSV with a label column and an image_id, rel_path or file column",
        error=ManifestError,
    )
    ids = _image_ids(frame, manifest, path)
    known = set(manifest["image_id"])
    dropped: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    by_image: dict[str, set[str]] = {}
    for image_id, label in zip(ids, frame["label"], strict=True):
        if pd.isna(label) or str(label).strip() == "":  # None, NaN and pd.NA (a "string" column's null)
            dropped["no_label"] += 1
        elif str(label) not in class_names:
            unknown[str(label)] += 1
        elif image_id is None or image_id not in known:
            dropped["not_in_manifest"] += 1
        else:
            by_image.setdefault(image_id, set()).add(str(label))
    if unknown:  # human labels are never dropped for their class: the ontology or the labels need fixing
        listed = ", ".join(f"{label!r} ({count})" for label, count in sorted(unknown.items()))
        raise ManifestError(
            f"{path}: {sum(unknown.values())} label(s) of classes not in the ontology: {listed}; add the classes to "
            "ontology.classes (`curation ontology init` does it for imported labels) or correct the labels"
        )
    labels = {}
    for image_id, found in by_image.items():
        if len(found) == 1:
            labels[image_id] = next(iter(found))
        else:
            dropped["conflicting_labels"] += 1
    return LabelSet(labels, str(path), dict(sorted(dropped.items())))


def _image_ids(frame: pd.DataFrame, manifest: pd.DataFrame, path: Path) -> list[str | None]:
    if "image_id" in frame.columns:
        return [None if pd.isna(v) else str(v) for v in frame["image_id"]]
    key = next((c for c in ("rel_path", "file") if c in frame.columns), None)
    if key is None:
        raise ManifestError(f"{path}: needs an image_id, rel_path or file column next to 'label'")
    by_path = {
        p: image_id for image_id, paths in zip(manifest["image_id"], manifest["all_paths"], strict=True) for p in paths
    }
    return [by_path.get(str(v).replace("\\", "/")) for v in frame[key]]


@dataclass(frozen=True)
class FewShotResult:
    """Probabilities for every image (rows as given, columns in ``class_names`` order) and how good they are."""

    probabilities: np.ndarray
    cv_accuracy: float
    cv_accuracy_std: float
    n_labels: int
    per_class: dict[str, int]
    learnt: list[str]
    labelled: np.ndarray  # bool per image: True where the probabilities are out-of-fold


def label_counts(labels: dict[str, str], class_names: list[str]) -> dict[str, int]:
    counts = Counter(labels.values())
    return {name: int(counts.get(name, 0)) for name in class_names}


def cap_per_class(labels: dict[str, str], cap: int | None, seed: int) -> dict[str, str]:
    """At most ``cap`` labels per class, drawn with ``seed`` (ids sorted first, so the draw is reproducible)."""
    if cap is None:
        return labels
    rng = np.random.default_rng(seed)
    kept: dict[str, str] = {}
    for name in sorted(set(labels.values())):
        ids = sorted(i for i, label in labels.items() if label == name)
        chosen = rng.choice(len(ids), size=min(cap, len(ids)), replace=False)
        kept.update({ids[i]: name for i in sorted(chosen)})
    return kept


def power_l2(embeddings: np.ndarray) -> np.ndarray:
    """Signed square root of every value, then each row scaled to unit length (zero rows stay zero)."""
    powered = np.sign(embeddings) * np.sqrt(np.abs(embeddings))
    norms = np.linalg.norm(powered, axis=1, keepdims=True)
    return powered / np.maximum(norms, 1e-12)


def joined_features(embeddings: np.ndarray, extra: np.ndarray, normalize: str) -> tuple[np.ndarray, bool]:
    """The embedding joined with the anomaly scorer's extra features (pooled patch features, then the robust z of
    the anomaly score, :func:`curation.prelabel.anomaly_scorer.fewshot_extra`).

    With ``power_l2`` or ``l2`` each block is scaled on its own (the embedding and the pooled features to unit
    length each, z left as it is: a robust z of a few units beside two unit vectors, the weighting measured best on
    magnetic tile) and True is returned: the classifier then skips its own scaler. With ``standard`` the blocks are
    joined raw and the classifier's StandardScaler scales every column (False).
    """
    pooled, z = extra[:, :-1], extra[:, -1:]
    if normalize == "standard":
        return np.hstack([embeddings, pooled, z]), False
    scale = power_l2 if normalize == "power_l2" else _unit_rows
    return np.hstack([scale(embeddings), scale(pooled), z]).astype(np.float32), True


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def make_classifier(settings: FewShotParams, *, prescaled: bool = False) -> Any:
    """The unfitted scikit-learn pipeline that :func:`fit_predict` uses: ``settings.normalize`` (skipped when the
    features are ``prescaled`` by :func:`joined_features`), then logistic regression with
    ``C=settings.regularization`` (the benchmark calls this too, so both measure one recipe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, Normalizer, StandardScaler

    if prescaled:
        return make_pipeline(LogisticRegression(C=settings.regularization, max_iter=5000))
    scaler = {
        "power_l2": lambda: FunctionTransformer(power_l2),
        "l2": Normalizer,
        "standard": StandardScaler,
    }[settings.normalize]()
    return make_pipeline(scaler, LogisticRegression(C=settings.regularization, max_iter=5000))


def fit_predict(
    embeddings: np.ndarray,
    image_ids: list[str],
    labels: dict[str, str],
    class_names: list[str],
    learnt: list[str],
    settings: FewShotParams,
    *,
    prescaled: bool = False,
) -> FewShotResult:
    """Fit :func:`make_classifier` on the labelled rows of ``embeddings`` (classes in ``learnt`` only), report
    stratified k-fold accuracy, and return probabilities for every row: out-of-fold for labelled images, from the
    model fitted on all labels for the rest. Classes not in ``learnt`` get probability 0.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rows = [i for i, image_id in enumerate(image_ids) if labels.get(image_id) in learnt]
    x = embeddings[rows]
    y = np.array([labels[image_ids[i]] for i in rows])
    model = make_classifier(settings, prescaled=prescaled)
    folds = min(settings.cv_folds, min(Counter(y).values()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    out_of_fold = cross_val_predict(model, x, y, cv=splitter, method="predict_proba")
    fold_accuracy = []
    classes = sorted(set(y))
    for _, test in splitter.split(x, y):
        predicted = np.asarray(classes)[out_of_fold[test].argmax(axis=1)]
        fold_accuracy.append(float((predicted == y[test]).mean()))
    model.fit(x, y)
    fitted: Any = model[-1]
    probabilities = np.zeros((len(image_ids), len(class_names)))
    columns = [class_names.index(c) for c in fitted.classes_]
    probabilities[:, columns] = model.predict_proba(embeddings)
    probabilities[np.ix_(rows, columns)] = out_of_fold
    labelled = np.zeros(len(image_ids), dtype=bool)
    labelled[rows] = True
    return FewShotResult(
        probabilities=probabilities,
        cv_accuracy=float(np.mean(fold_accuracy)),
        cv_accuracy_std=float(np.std(fold_accuracy)),
        n_labels=len(rows),
        per_class=label_counts({image_ids[i]: labels[image_ids[i]] for i in rows}, class_names),
        learnt=list(fitted.classes_),
        labelled=labelled,
    )


class FewShotScorer:
    """A :class:`~curation.prelabel.base.Scorer`: logistic regression on the batch's embeddings, fitted on the human
    labels so far. Its scores replace the previous scorer's (zero-shot) only when it can predict every class that
    one can; otherwise it reports its cross-validated accuracy and leaves them.

    Args:
        labels: human labels (None: none found).
        settings: the ``prelabel`` params (``fewshot``; ``preprocess`` goes into ``model_version``).
    """

    name = "few_shot"

    def __init__(self, labels: LabelSet | None, settings: PrelabelParams) -> None:
        self.labels = labels
        self.settings = settings

    def score(self, batch: ScoreInput) -> Outcome:
        few, labels, class_names = self.settings.fewshot, self.labels, batch.class_names
        # anomaly scores (OK / "defect") give way to any few-shot model; zero-shot ones only to a complete one
        have_zero_shot = batch.previous is not None and batch.previous.source != "anomaly"
        if not few.enabled:
            return Outcome({"status": "disabled"})
        if labels is None or not labels.labels:
            where = f" in {labels.source}" if labels is not None else " (no consensus or prior labels file found)"
            return Outcome(
                {"status": "no_labels", "labels_source": labels.source if labels else None},
                (f"few-shot skipped: no usable human labels{where}",),
            )
        notes: list[str] = []
        if labels.dropped:
            left_out = ", ".join(f"{reason.replace('_', ' ')}: {n}" for reason, n in labels.dropped.items())
            notes.append(f"few-shot left out rows of {labels.source} it cannot use ({left_out})")
        chosen = cap_per_class(labels.labels, few.max_per_class, few.seed)
        counts = label_counts(chosen, class_names)
        enough = [c for c in class_names if counts[c] >= few.min_per_class]
        short = [f"{c} ({counts[c]})" for c in class_names if counts[c] < few.min_per_class]
        report: dict[str, Any] = {
            "labels_source": labels.source,
            "labels": sum(counts.values()),
            "labels_per_class": counts,
            "labels_dropped": labels.dropped,
            "min_per_class": few.min_per_class,
        }
        if len(enough) < 2:
            kept = "zero-shot kept" if have_zero_shot else "no predictions"
            if batch.previous is not None and not have_zero_shot:
                kept = "anomaly pre-labels kept"
            notes.append(
                f"few-shot skipped ({kept}): too few labels per class, need {few.min_per_class} for at least two "
                f"classes; short: {', '.join(short)}"
            )
            return Outcome({**report, "status": "too_few_labels"}, tuple(notes))
        features, prescaled, joined = batch.embeddings, False, False
        if self.settings.anomaly.fewshot_features and batch.extra_features is not None:
            features, prescaled = joined_features(batch.embeddings, batch.extra_features, few.normalize)
            joined = True
        result = fit_predict(features, batch.image_ids, chosen, class_names, enough, few, prescaled=prescaled)
        report["anomaly_features"] = joined
        report.update(
            cv_accuracy=round(result.cv_accuracy, 4),
            cv_accuracy_std=round(result.cv_accuracy_std, 4),
            classes_learnt=[str(c) for c in result.learnt],  # numpy strings print as np.str_(...)
        )
        if have_zero_shot and short:
            notes.append(
                f"few-shot not used, zero-shot kept: classes {', '.join(short)} have fewer than {few.min_per_class} "
                f"labels and few-shot could never predict them (cross-validated accuracy on the others: "
                f"{result.cv_accuracy:.3f})"
            )
            return Outcome({**report, "status": "reported_only"}, tuple(notes))
        if short:
            notes.append(f"few-shot cannot predict classes with too few labels: {', '.join(short)} (probability 0)")
        label_hash = settings_hash(sorted(chosen.items()), few, self.settings.preprocess)
        version = f"{batch.encoder_key}+fewshot-{label_hash}" + ("+anomaly" if joined else "")
        scores = Scores("few_shot", result.probabilities, version, [None] * len(batch.image_ids))
        return Outcome({**report, "status": "used"}, tuple(notes), scores)
