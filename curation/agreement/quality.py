"""Per-annotator quality (leave-one-out agreement, confusion, time per task) and pre-label quality vs consensus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation.agreement.metrics import MISSING, Stat

ANNOTATOR_COLUMNS = [
    "annotator",
    "n_annotations",
    "n_shared_images",
    "loo_agreement",
    "loo_n_images",
    "loo_n_ties",
    "mean_pair_kappa",
    "median_lead_time_s",
    "note",
]
CONFUSION_COLUMNS = ["actual", "predicted"]
CALIBRATION_COLUMNS = ["source", "bin", "bin_low", "bin_high", "confidence", "accuracy", "count"]


def per_annotator(
    codes: np.ndarray,
    raters: Sequence[str],
    classes: Sequence[str],
    regular: pd.DataFrame,
    pair_kappa: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each annotator against the majority of the *other* annotators on the same images.

    Images where the others tie are skipped (counted in ``loo_n_ties``). Returns the per-annotator table
    (``ANNOTATOR_COLUMNS``) and the confusion rows ``annotator, actual, predicted`` (actual = the others'
    majority, predicted = this annotator), one row per compared rating: DVC's confusion-matrix form.
    """
    q = len(classes)
    names = np.asarray(classes, dtype=object)
    rated = codes != MISSING
    n = rated.sum(axis=1)
    counts = np.zeros((len(codes), q))
    rows, cols = np.nonzero(rated)
    np.add.at(counts, (rows, codes[rows, cols]), 1)
    times = _median_times(regular)
    table, confusion = [], []
    for r, rater in enumerate(raters):
        mine = rated[:, r] & (n >= 2)
        others = counts[mine].copy()
        own = codes[mine, r]
        others[np.arange(len(own)), own] -= 1
        top = others.max(axis=1)
        tied = (others == top[:, None]).sum(axis=1) > 1
        majority = np.argmax(others, axis=1)
        compared = ~tied
        agree = (majority[compared] == own[compared]).mean() if compared.any() else None
        kappas = pair_kappa.loc[
            (pair_kappa["annotator_a"] == rater) | (pair_kappa["annotator_b"] == rater), "kappa"
        ].dropna()
        notes = []
        if agree is None:
            notes.append("no image shared with others without a tie: leave-one-out agreement undefined")
        if rater not in times.index:
            notes.append("no lead_time recorded")
        table.append(
            {
                "annotator": rater,
                "n_annotations": int(rated[:, r].sum()),
                "n_shared_images": int(mine.sum()),
                "loo_agreement": None if agree is None else float(agree),
                "loo_n_images": int(compared.sum()),
                "loo_n_ties": int(tied.sum()),
                "mean_pair_kappa": float(kappas.mean()) if len(kappas) else None,
                "median_lead_time_s": float(times[rater]) if rater in times.index else None,
                "note": "; ".join(notes) or None,
            }
        )
        confusion.append(
            pd.DataFrame({"annotator": rater, "actual": names[majority[compared]], "predicted": names[own[compared]]})
        )
    frame = pd.DataFrame(table, columns=ANNOTATOR_COLUMNS)
    confusion_frame = (
        pd.concat(confusion, ignore_index=True)
        if confusion
        else pd.DataFrame(columns=["annotator", *CONFUSION_COLUMNS])
    )
    return frame, confusion_frame


def _median_times(regular: pd.DataFrame) -> pd.Series:
    if "lead_time" not in regular.columns:
        return pd.Series(dtype=float)
    times = pd.to_numeric(regular["lead_time"], errors="coerce")
    return times.groupby(regular["annotator"]).median().dropna()


@dataclass(frozen=True)
class PrelabelQuality:
    metrics: dict[str, dict[str, Stat | int]]  # per source: n_images, accuracy, macro_f1, ece, accepted_unchanged
    confusion: pd.DataFrame  # source, actual (consensus), predicted (pre-label)
    calibration: pd.DataFrame  # CALIBRATION_COLUMNS


def prelabel_quality(
    predictions: pd.DataFrame,
    consensus: pd.DataFrame,
    regular: pd.DataFrame,
    classes: Sequence[str],
    *,
    bins: int,
) -> PrelabelQuality:
    """Pre-labels (per ``source``) against the consensus class: accuracy, macro-F1, confusion, ECE, acceptance.

    Only images with a consensus class count. Calibration uses the probability of the predicted class
    (``p_<label>``); ECE is the count-weighted mean |accuracy - confidence| over ``bins`` equal-width bins.
    ``accepted_unchanged`` is the share of (non-adjudicator) annotations whose class equals the pre-label.
    """
    from sklearn.metrics import accuracy_score, f1_score

    truth = consensus.dropna(subset=["label"]).set_index("image_id")["label"]
    metrics: dict[str, dict[str, Stat | int]] = {}
    confusion, calibration = [], []
    for source, group in predictions.groupby("source", sort=True):
        joined = group[group["image_id"].isin(truth.index)]
        y_true = truth.reindex(joined["image_id"]).to_numpy()
        y_pred = joined["label"].to_numpy()
        shown = regular.merge(group[["image_id", "label"]], on="image_id", suffixes=("", "_pre"))
        result: dict[str, Stat | int] = {"n_images": len(joined), "n_annotations_with_prelabel": len(shown)}
        accepted = (shown["label"] == shown["label_pre"]).mean() if len(shown) else None
        result["accepted_unchanged"] = (
            Stat(float(accepted)) if accepted is not None else Stat.undefined("no annotation of a pre-labelled image")
        )
        if not len(joined):
            why = "no pre-labelled image has a consensus label yet"
            result.update(accuracy=Stat.undefined(why), macro_f1=Stat.undefined(why), ece=Stat.undefined(why))
            metrics[str(source)] = result
            continue
        present = [c for c in classes if c in set(y_true) | set(y_pred)]
        result["accuracy"] = Stat(float(accuracy_score(y_true, y_pred)))
        result["macro_f1"] = Stat(float(f1_score(y_true, y_pred, labels=present, average="macro")))
        table_p = joined[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
        codes = pd.Categorical(y_pred, categories=list(classes)).codes
        # anomaly rows labelled "defect" (no class chosen yet): their score is that label's probability
        probability = table_p[np.arange(len(joined)), np.maximum(codes, 0)]
        if (codes < 0).any():
            probability = np.where(codes >= 0, probability, joined["score"].to_numpy(float))
        table = calibration_table(probability, y_true == y_pred, bins)
        result["ece"] = Stat(float(expected_calibration_error(table)))
        metrics[str(source)] = result
        confusion.append(pd.DataFrame({"source": source, "actual": y_true, "predicted": y_pred}))
        calibration.append(table.assign(source=source))
    confusion_frame = (
        pd.concat(confusion, ignore_index=True) if confusion else pd.DataFrame(columns=["source", *CONFUSION_COLUMNS])
    )
    calibration_frame = (
        pd.concat(calibration, ignore_index=True)[CALIBRATION_COLUMNS]
        if calibration
        else pd.DataFrame(columns=CALIBRATION_COLUMNS)
    )
    return PrelabelQuality(metrics, confusion_frame, calibration_frame)


def calibration_table(confidence: np.ndarray, correct: np.ndarray, bins: int) -> pd.DataFrame:
    """Reliability-diagram rows per equal-width bin of [0, 1] (bin i holds (i/b, (i+1)/b]; 0 goes in bin 0)."""
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / count
    return pd.DataFrame(
        {
            "bin": np.arange(bins),
            "bin_low": np.arange(bins) / bins,
            "bin_high": np.arange(1, bins + 1) / bins,
            "confidence": mean_conf,
            "accuracy": accuracy,
            "count": count,
        }
    )


def expected_calibration_error(table: pd.DataFrame) -> float:
    used = table[table["count"] > 0]
    weights = used["count"] / used["count"].sum()
    return float((weights * (used["accuracy"] - used["confidence"]).abs()).sum())
