"""Consensus label per image (majority vote with an explicit tie policy, or Dawid-Skene), adjudication, disputes.

Rules, in order:

1. Adjudications (rows by an annotator listed in ``agreement.adjudicators``, or with a true ``adjudicated``
   column) override everything: ``method="adjudicated"``, never disputed. With several adjudications of one
   image the latest (``updated_at``, else ``created_at``, else the last row) wins.
2. An image with one (non-adjudicator) annotator keeps that label: ``method="single"``, agreement null: one
   reviewer is not a measurement of agreement, and such a label counts as unverified (the reports say so).
3. Otherwise ``majority``: the most frequent class; a tie is resolved by ``agreement.tie_policy`` (``dispute``:
   no label; ``prediction``: the pre-label if it is among the tied classes; ``ontology_order``: the tied class
   listed first). ``dawid_skene``: crowd-kit's Dawid-Skene EM over all annotations, its most probable class.
4. An image is disputed when its votes tie or its agreement (share of annotators giving the consensus label,
   or the top share when there is no label) is below ``agreement.min_agreement``.

Severity: the median severity (ontology order; the more severe of the two middle ones for an even count) among
the annotators who gave the consensus class; null when none of them gave one.

Description: the text reviewers wrote or corrected (the pre-label's description is offered for editing): the
adjudicator's, else the latest (``updated_at``, else ``created_at``, else the last row) by an annotator who gave
the consensus class; null when none of them wrote one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.params_agreement import AgreementParams
from schemas.records import Consensus, Dispute, columns

DISPUTE_COLUMNS = columns(Dispute)


@dataclass(frozen=True)
class ConsensusResult:
    consensus: pd.DataFrame  # exactly the Consensus columns
    disputes: pd.DataFrame  # DISPUTE_COLUMNS, open disputes only (adjudicated images are resolved)
    counts: pd.DataFrame  # images x classes vote counts of regular annotators (index image_id)


def split_adjudications(frame: pd.DataFrame, adjudicators: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(regular annotations, adjudications): adjudications are rows by ``adjudicators`` or flagged ``adjudicated``."""
    flag = frame["annotator"].isin(list(adjudicators))
    if "adjudicated" in frame.columns:
        flag |= frame["adjudicated"].fillna(False).astype(bool)
    return frame[~flag], frame[flag]


def build_consensus(
    regular: pd.DataFrame,
    adjudications: pd.DataFrame,
    *,
    classes: Sequence[str],
    severities: Sequence[str],
    settings: AgreementParams,
    prelabels: pd.Series | None = None,
) -> ConsensusResult:
    """Consensus and open disputes for every image that has an annotation or an adjudication.

    Args:
        regular: Annotations by regular annotators (``image_id, annotator, label`` [, ``severity``, ``task_id``]).
        adjudications: Adjudicator annotations (same columns).
        classes: Ontology classes, in order.
        severities: Ontology severities, least to most severe.
        settings: The ``agreement`` params (method, tie policy, threshold).
        prelabels: Pre-label class per image_id, for ``tie_policy="prediction"``.
    """
    images = pd.Index(pd.unique(pd.concat([regular["image_id"], adjudications["image_id"]])), name="image_id")
    counts = np.zeros((len(images), len(classes)))
    rows = images.get_indexer(regular["image_id"])
    np.add.at(counts, (rows, pd.Categorical(regular["label"], categories=list(classes)).codes), 1)
    n = counts.sum(axis=1)
    top = counts.max(axis=1)
    tie = (counts == top[:, None]).sum(axis=1) > 1
    tie &= n >= 2
    label_code = np.argmax(counts, axis=1)  # first maximum = ontology order
    decided = ~tie
    if settings.tie_policy == "ontology_order":
        decided = np.ones_like(tie)
    elif settings.tie_policy == "prediction" and prelabels is not None:
        predicted = pd.Categorical(prelabels.reindex(images), categories=list(classes)).codes
        in_tie = (predicted >= 0) & (counts[np.arange(len(images)), np.maximum(predicted, 0)] == top)
        label_code = np.where(tie & in_tie, predicted, label_code)
        decided = ~tie | in_tie
    method = np.where(n >= 2, "majority", "single").astype(object)
    posterior = np.full(len(images), np.nan)
    if settings.consensus == "dawid_skene" and (n >= 2).any():
        ds_label, ds_posterior = _dawid_skene(regular, images, classes, settings.dawid_skene_iterations)
        multi = (n >= 2) & (ds_label >= 0)
        label_code = np.where(multi, ds_label, label_code)
        decided = np.where(multi, True, decided)
        posterior = np.where(multi, ds_posterior, posterior)
        method = np.where(multi, "dawid_skene", method).astype(object)

    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(decided, counts[np.arange(len(images)), label_code], top) / n
    share = np.where(n >= 2, share, np.nan)  # one annotator (or none): not measured
    label = np.where(decided, np.asarray(classes, dtype=object)[label_code], None)
    label = np.where(n == 0, None, label)
    disputed = (tie | (share < settings.min_agreement)) & (n >= 2)
    frame = pd.DataFrame(
        {
            "image_id": images,
            "label": label,
            "agreement": share,
            "n_annotators": n.astype(np.int64),
            "method": method,
            "disputed": disputed,
        }
    )
    frame["severity"] = _severity(regular, frame, severities)
    frame["description"] = _description(regular, frame)
    frame = _apply_adjudications(frame, adjudications, counts, classes)
    disputes = _disputes(frame, regular, counts, classes, tie, posterior)
    consensus = frame[columns(Consensus)].reset_index(drop=True)
    consensus["n_annotators"] = consensus["n_annotators"].astype("int64")
    consensus["disputed"] = consensus["disputed"].astype(bool)
    for column in ("label", "severity", "method", "description"):  # records hold None for missing, not NaN
        values = consensus[column].astype(object)
        consensus[column] = values.where(values.notna(), None)
    return ConsensusResult(consensus, disputes, pd.DataFrame(counts, index=images, columns=list(classes)))


def _dawid_skene(
    regular: pd.DataFrame, images: pd.Index, classes: Sequence[str], n_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """crowd-kit's Dawid-Skene: (class code per image or -1, posterior of that class)."""
    try:
        from crowdkit.aggregation import DawidSkene
    except ImportError as err:  # pragma: no cover - crowd-kit is a declared dependency
        raise ImportError("consensus: dawid_skene needs crowd-kit: pip install crowd-kit") from err

    data = pd.DataFrame(
        {"task": regular["image_id"].to_numpy(), "worker": regular["annotator"].to_numpy(), "label": regular["label"]}
    )
    with warnings.catch_warnings():  # crowd-kit 1.4 uses pandas keywords deprecated in pandas 3: harmless here
        warnings.filterwarnings("ignore", module=r"crowdkit\.")
        probas = DawidSkene(n_iter=n_iter).fit(data).probas_
    probas = probas.reindex(columns=list(classes), fill_value=0.0).reindex(images)
    values = probas.to_numpy(dtype=np.float64)
    known = ~np.isnan(values).any(axis=1)
    best = np.where(known, np.nanargmax(np.where(known[:, None], values, 0.0), axis=1), -1)
    posterior = np.where(known, np.nanmax(np.where(known[:, None], values, 0.0), axis=1), np.nan)
    return best, posterior


def _severity(regular: pd.DataFrame, frame: pd.DataFrame, severities: Sequence[str]) -> pd.Series:
    severities = list(severities)
    if "severity" not in regular.columns or not len(regular):
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    consensus = frame.set_index("image_id")["label"]
    rows = regular[regular["severity"].notna()]
    rows = rows[rows["label"].to_numpy() == consensus.reindex(rows["image_id"]).to_numpy()]
    ranks = pd.DataFrame(
        {"image_id": rows["image_id"].to_numpy(), "rank": pd.Categorical(rows["severity"], categories=severities).codes}
    ).sort_values(["image_id", "rank"], kind="stable")
    # the element at position size // 2 of each image's sorted ranks: the median, or the more severe middle one
    groups = ranks.groupby("image_id", sort=False)["rank"]
    median = ranks[groups.cumcount().to_numpy() == (groups.transform("size").to_numpy() // 2)]
    names = pd.Series(np.asarray(severities, dtype=object)[median["rank"].to_numpy()], index=median["image_id"])
    return frame["image_id"].map(names).astype(object).where(frame["image_id"].isin(names.index), None)


def _latest(rows: pd.DataFrame) -> pd.DataFrame:
    """The latest row per image (``updated_at``, else ``created_at``, else the last row), indexed by image_id."""
    order = [c for c in ("updated_at", "created_at") if c in rows.columns]
    latest = rows.assign(_row=np.arange(len(rows)))
    latest = latest.sort_values([*order, "_row"], na_position="first", kind="stable")
    return latest.drop_duplicates("image_id", keep="last").set_index("image_id")


def _description(regular: pd.DataFrame, frame: pd.DataFrame) -> pd.Series:
    if "description" not in regular.columns or not len(regular):
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)
    consensus = frame.set_index("image_id")["label"]
    text = regular["description"].astype(object)
    rows = regular[text.notna().to_numpy() & (text.astype(str).str.strip() != "").to_numpy()]
    rows = rows[rows["label"].to_numpy() == consensus.reindex(rows["image_id"]).to_numpy()]
    latest = _latest(rows)["description"]
    return frame["image_id"].map(latest).astype(object).where(frame["image_id"].isin(latest.index), None)


def _apply_adjudications(
    frame: pd.DataFrame, adjudications: pd.DataFrame, counts: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    if not len(adjudications):
        return frame
    latest = _latest(adjudications)
    where = frame["image_id"].isin(latest.index).to_numpy()
    chosen = latest.reindex(frame.loc[where, "image_id"])
    frame = frame.copy()
    frame.loc[where, "label"] = chosen["label"].to_numpy()
    severity = chosen["severity"].to_numpy() if "severity" in chosen.columns else None
    frame.loc[where, "severity"] = severity
    if "description" in chosen.columns:  # the adjudicator's text, or none: theirs is the final word
        frame.loc[where, "description"] = chosen["description"].astype(object).to_numpy()
    codes = pd.Categorical(chosen["label"], categories=list(classes)).codes
    n = counts[where].sum(axis=1)
    agreeing = counts[where][np.arange(where.sum()), codes]
    frame.loc[where, "agreement"] = np.where(n >= 2, agreeing / np.maximum(n, 1), np.nan)
    frame.loc[where, "method"] = "adjudicated"
    frame.loc[where, "disputed"] = False
    return frame


def _disputes(
    frame: pd.DataFrame,
    regular: pd.DataFrame,
    counts: np.ndarray,
    classes: Sequence[str],
    tie: np.ndarray,
    posterior: np.ndarray,
) -> pd.DataFrame:
    open_ = frame["disputed"].to_numpy(dtype=bool)
    if not open_.any():
        return pd.DataFrame(columns=DISPUTE_COLUMNS)
    picked = frame[open_]
    ids = picked["image_id"]
    votes = [
        "; ".join(f"{classes[k]}={int(c)}" for k, c in sorted(enumerate(row), key=lambda kc: -kc[1]) if c > 0)
        for row in counts[open_]
    ]
    mine = regular[regular["image_id"].isin(ids)]
    pairs = mine["annotator"].astype(str) + "=" + mine["label"].astype(str)
    ratings = pairs.groupby(mine["image_id"], sort=False).agg("; ".join)
    task = (
        mine.dropna(subset=["task_id"]).groupby("image_id")["task_id"].first()
        if "task_id" in mine.columns
        else pd.Series(dtype="Int64")
    )
    reason = np.where(tie[open_], "tie", "low_agreement")
    return pd.DataFrame(
        {
            "image_id": ids.to_numpy(),
            "task_id": ids.map(task).astype("Int64").to_numpy(),
            "reason": reason,
            "label": picked["label"].to_numpy(),
            "agreement": picked["agreement"].to_numpy(),
            "n_annotators": picked["n_annotators"].to_numpy(),
            "votes": votes,
            "ratings": ids.map(ratings).to_numpy(),
            "posterior": posterior[open_],
        },
        columns=DISPUTE_COLUMNS,
    )
