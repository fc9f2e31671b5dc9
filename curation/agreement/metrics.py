"""Agreement metrics on a ratings matrix (images x annotators, integer class codes, ``MISSING`` where unrated).

Library implementations give the point estimates where a well-kept one exists: Fleiss' kappa (statsmodels),
Krippendorff's alpha (the ``krippendorff`` package), Cohen's kappa (scikit-learn). Percent agreement, Gwet's AC1
and the per-class figures have no maintained Python implementation that installs beside this project's stack
(``irrCAC`` 0.4.4 pins scipy 1.12 and pandas < 3), so they are written here from the textbook formulas and
tested against independent implementations.

Gwet's AC1 follows Gwet (2014), *Handbook of Inter-Rater Reliability*, 4th ed., for many raters with missing
ratings, as irrCAC's Python ``CAC.gwet`` (0.4.4, checked against its source) computes it: percent agreement
p_a = (1/n') sum over the n' images with r_i >= 2 ratings of sum_k r_ik (r_ik - 1) / (r_i (r_i - 1)); class
propensities pi_k = (1/n) sum over ALL n images with r_i >= 1 rating of r_ik / r_i (an image one person rated
still tells how often each class is chosen); chance agreement p_e = sum_k pi_k (1 - pi_k) / (q - 1), q = the
number of ontology classes; AC1 = (p_a - p_e) / (1 - p_e). No small-sample correction is applied to p_a.

Every metric is also a function of sums over images of per-image statistics (:func:`image_statistics`), which
makes the bootstrap one matrix product per batch of resamples instead of recomputing each library call a
thousand times; the tests check that these sums reproduce the library values to 1e-9.

A metric that is undefined on the data (no overlapping images, one category only, ...) is a :class:`Stat` with
``value=None`` and a ``note`` saying why, never 0 or NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

MISSING = -1
Level = Literal["nominal", "ordinal"]


@dataclass(frozen=True)
class Stat:
    """A metric value, or ``None`` with the reason it is undefined."""

    value: float | None
    note: str | None = None

    @classmethod
    def undefined(cls, note: str) -> Stat:
        return cls(None, note)


def ratings_matrix(
    frame: pd.DataFrame, column: str, categories: Sequence[str]
) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """Long annotations -> (codes, images, annotators): ``codes[i, r]`` is the category index or MISSING.

    Args:
        frame: Rows with ``image_id``, ``annotator`` and ``column``; rows where ``column`` is null are skipped.
        column: The rated variable (``label`` or ``severity``).
        categories: Allowed values in order (ontology order; the order matters for ordinal metrics).
    """
    rows = frame[frame[column].notna()]
    images = pd.Index(pd.unique(rows["image_id"]), name="image_id")
    raters = pd.Index(sorted(pd.unique(rows["annotator"])), name="annotator")
    codes = np.full((len(images), len(raters)), MISSING, dtype=np.int64)
    category = pd.Categorical(rows[column], categories=list(categories)).codes
    codes[images.get_indexer(rows["image_id"]), raters.get_indexer(rows["annotator"])] = category
    return codes, images, raters


def category_counts(codes: np.ndarray, q: int) -> np.ndarray:
    """``counts[i, k]`` = number of annotators who put image i in category k."""
    n_items = codes.shape[0]
    rated = codes != MISSING
    flat = (np.arange(n_items)[:, None] * q + codes)[rated]
    return np.bincount(flat, minlength=n_items * q).reshape(n_items, q).astype(np.float64)


# ---------------------------------------------------------------- per-image statistics and their sums


@dataclass(frozen=True)
class Layout:
    """Column slices of the per-image statistics matrix."""

    q: int
    m: int  # ratings per image used for Fleiss' kappa

    @property
    def width(self) -> int:
        return 5 + 4 * self.q + self.q * self.q

    def slices(self) -> dict[str, slice]:
        q = self.q
        spans = [("one", 1), ("pair", 1), ("p_item", 1), ("share", q)]
        spans += [("fleiss_one", 1), ("fleiss_p", 1), ("fleiss_counts", q)]
        spans += [("coincidence", q * q), ("same_pairs", q), ("all_pairs", q)]
        out, start = {}, 0
        for name, size in spans:
            out[name] = slice(start, start + size)
            start += size
        return out


def image_statistics(counts: np.ndarray, m: int) -> tuple[np.ndarray, Layout]:
    """Per-image statistics whose column sums determine every metric (images must have >= 1 rating).

    Columns: 1; 1 if the image has >= 2 ratings; P_i = share of agreeing rating pairs of image i (0 with one
    rating); n_ik/n_i (every rated image: Gwet's class propensities); the same restricted to images with
    exactly ``m`` ratings (Fleiss); Krippendorff's coincidences n_ic n_ik / (n_i - 1) (minus the diagonal
    self-pairs; 0 with one rating); n_ik (n_ik - 1) and n_ik (n_i - 1) for specific agreement. An image with one
    rating adds to the first and the propensity columns only.
    """
    q = counts.shape[1]
    layout = Layout(q=q, m=m)
    n = counts.sum(axis=1)
    if len(n) and n.min() < 1:
        raise ValueError("image_statistics needs images with at least one rating")
    pair = n >= 2
    pairs = np.where(pair, n * (n - 1), 1.0)  # 1 where there is no pair: the numerators are 0 there
    same = counts * (counts - 1)
    p_item = same.sum(axis=1) / pairs
    fleiss = (n == m).astype(np.float64)
    coincidence = (counts[:, :, None] * counts[:, None, :]).reshape(-1, q * q)
    coincidence[:, :: q + 1] -= counts
    coincidence /= np.where(pair, n - 1, 1.0)[:, None]
    stats = np.empty((len(n), layout.width))
    cols = layout.slices()
    stats[:, cols["one"]] = 1.0
    stats[:, cols["pair"]] = pair.astype(np.float64)[:, None]
    stats[:, cols["p_item"]] = p_item[:, None]
    stats[:, cols["share"]] = counts / n[:, None]
    stats[:, cols["fleiss_one"]] = fleiss[:, None]
    stats[:, cols["fleiss_p"]] = (fleiss * p_item)[:, None]
    stats[:, cols["fleiss_counts"]] = counts * fleiss[:, None]
    stats[:, cols["coincidence"]] = coincidence
    stats[:, cols["same_pairs"]] = same
    stats[:, cols["all_pairs"]] = counts * (n - 1)[:, None]
    return stats, layout


def metrics_from_sums(sums: np.ndarray, layout: Layout, *, ordinal: bool = False) -> dict[str, np.ndarray]:
    """Metrics for each row of ``sums`` (summed per-image statistics, one row per resample); NaN = undefined.

    Returns arrays keyed ``percent_agreement``, ``fleiss_kappa``, ``krippendorff_alpha``, ``gwet_ac1``
    (and ``krippendorff_alpha_ordinal`` when ``ordinal``), each of shape (rows,), plus per-class arrays
    ``specific_agreement`` and ``kappa_one_vs_rest`` of shape (rows, q).
    """
    sums = np.atleast_2d(sums)
    q, cols = layout.q, layout.slices()
    with np.errstate(divide="ignore", invalid="ignore"):
        n_items = sums[:, cols["one"]][:, 0]
        n_pairs = sums[:, cols["pair"]][:, 0]
        pa = np.where(n_pairs > 0, sums[:, cols["p_item"]][:, 0] / n_pairs, np.nan)
        # Gwet (2014) AC1 (module doc): pi_k = mean over every rated image of its share of ratings in k;
        # pe = sum pi_k (1 - pi_k) / (q - 1)
        pi = sums[:, cols["share"]] / n_items[:, None]
        pe_gwet = (pi * (1 - pi)).sum(axis=1) / (q - 1)
        ac1 = (pa - pe_gwet) / (1 - pe_gwet)
        # Fleiss (1971) kappa on images with exactly m ratings
        n_fleiss = sums[:, cols["fleiss_one"]][:, 0]
        p_bar = sums[:, cols["fleiss_p"]][:, 0] / n_fleiss
        p_k = sums[:, cols["fleiss_counts"]] / (n_fleiss * layout.m)[:, None]
        pe_fleiss = (p_k**2).sum(axis=1)
        fleiss = np.where(np.isclose(pe_fleiss, 1.0, rtol=0, atol=1e-12), np.nan, (p_bar - pe_fleiss) / (1 - pe_fleiss))
        # Krippendorff (2011): coincidence matrix o, marginals n_c, n = total pairable values
        o = sums[:, cols["coincidence"]].reshape(-1, q, q)
        n_c = o.sum(axis=2)
        n = n_c.sum(axis=1)
        out = {
            "percent_agreement": pa,
            "fleiss_kappa": fleiss,
            "krippendorff_alpha": _alpha(o, n_c, n, _nominal_delta(q)[None]),
            "gwet_ac1": ac1,
        }
        if ordinal:
            out["krippendorff_alpha_ordinal"] = _alpha(o, n_c, n, _ordinal_delta(n_c))
        # per class: specific agreement (Fleiss 1971 / Uebersax 1982) and Fleiss' per-category kappa,
        # generalised to a varying number of ratings per image
        out["specific_agreement"] = sums[:, cols["same_pairs"]] / sums[:, cols["all_pairs"]]
        disagree = n_c - np.diagonal(o, axis1=1, axis2=2)
        p = n_c / n[:, None]
        expected = n[:, None] * p * (1 - p)
        out["kappa_one_vs_rest"] = np.where(expected > 0, 1 - disagree / expected, np.nan)
    return out


def _nominal_delta(q: int) -> np.ndarray:
    return 1.0 - np.eye(q)


def _ordinal_delta(n_c: np.ndarray) -> np.ndarray:
    """Krippendorff's ordinal metric: (sum of n_g for g from c to k, minus (n_c + n_k) / 2) squared."""
    cum = np.cumsum(n_c, axis=1)
    delta = cum[:, None, :] - cum[:, :, None] + (n_c[:, :, None] - n_c[:, None, :]) / 2
    return delta**2


def _alpha(o: np.ndarray, n_c: np.ndarray, n: np.ndarray, delta2: np.ndarray) -> np.ndarray:
    observed = (o * delta2).sum(axis=(1, 2))
    expected = (n_c[:, :, None] * n_c[:, None, :] * delta2).sum(axis=(1, 2)) / (n - 1)
    return np.where(expected > 1e-12 * np.maximum(n, 1) ** 2, 1 - observed / expected, np.nan)


# ---------------------------------------------------------------- point estimates (libraries where they exist)


def percent_agreement(counts: np.ndarray) -> Stat:
    """Mean over images with >= 2 ratings of the share of agreeing rating pairs (images with one rating ignored)."""
    counts = counts[counts.sum(axis=1) >= 1]
    if not (counts.sum(axis=1) >= 2).any():
        return Stat.undefined(NO_OVERLAP)
    stats, layout = image_statistics(counts, m=0)
    return Stat(float(metrics_from_sums(stats.sum(axis=0), layout)["percent_agreement"][0]))


def gwet_ac1(counts: np.ndarray) -> Stat:
    """Gwet's AC1 for many raters with missing ratings (Gwet 2014; module doc), q = number of ontology categories.

    Args:
        counts: ``counts[i, k]`` for every rated image, including images with a single rating: those enter the
            class propensities pi_k (the chance term) though not the percent agreement.
    """
    counts = counts[counts.sum(axis=1) >= 1]
    if not (counts.sum(axis=1) >= 2).any():
        return Stat.undefined(NO_OVERLAP)
    stats, layout = image_statistics(counts, m=0)
    return Stat(float(metrics_from_sums(stats.sum(axis=0), layout)["gwet_ac1"][0]))


def fleiss_kappa(counts: np.ndarray, categories: Sequence[str]) -> tuple[Stat, int, int]:
    """Fleiss' kappa (statsmodels) on the images with the most ratings; returns (kappa, n_images, m).

    Fleiss' kappa needs the same number of ratings m on every image. m is the largest number of ratings any
    image has: with every annotator on every overlap image it is "the images every annotator rated".
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

    if not len(counts):
        return Stat.undefined(NO_OVERLAP), 0, 0
    n = counts.sum(axis=1)
    m = int(n.max())
    table = counts[n == m]
    p = table.sum(axis=0) / table.sum()
    if np.isclose((p**2).sum(), 1.0, rtol=0, atol=1e-12):
        name = categories[int(np.argmax(p))]
        return Stat.undefined(_one_category("Fleiss' kappa", name)), len(table), m
    return Stat(float(sm_fleiss_kappa(table, method="fleiss"))), len(table), m


def krippendorff_alpha(codes: np.ndarray, categories: Sequence[str], level: Level) -> Stat:
    """Krippendorff's alpha (the ``krippendorff`` package) over images with >= 2 ratings; missing allowed."""
    import krippendorff

    data = codes.T.astype(np.float64)
    data[data == MISSING] = np.nan
    pairable = (~np.isnan(data)).sum(axis=0) >= 2
    data = data[:, pairable]
    if not data.shape[1]:
        return Stat.undefined(NO_OVERLAP)
    values = np.unique(data[~np.isnan(data)])
    if len(values) < 2:
        return Stat.undefined(_one_category("Krippendorff's alpha", categories[int(values[0])]))
    domain = np.arange(len(categories))
    value = krippendorff.alpha(reliability_data=data, value_domain=domain, level_of_measurement=level)
    return Stat(float(value))


def cohen_kappa_pairs(
    codes: np.ndarray,
    raters: Sequence[str],
    categories: Sequence[str],
    *,
    weights: str | None = None,
    min_items: int = 1,
) -> pd.DataFrame:
    """Cohen's kappa (scikit-learn) for every pair of annotators on the images both rated.

    A pair that shares fewer than ``min_items`` images gets no kappa (too few to mean anything), with a note.
    Returns columns ``annotator_a, annotator_b, n_items, kappa, note`` (kappa null with a note when undefined).
    """
    from sklearn.metrics import cohen_kappa_score

    rows = []
    labels = np.arange(len(categories))
    for a in range(len(raters)):
        for b in range(a + 1, len(raters)):
            both = (codes[:, a] != MISSING) & (codes[:, b] != MISSING)
            x, y = codes[both, a], codes[both, b]
            kappa, note = None, None
            if not both.any():
                note = "no image rated by both"
            elif both.sum() < min_items:
                note = insufficient_note(int(both.sum()), min_items)
            elif len(np.union1d(x, y)) < 2:
                note = f"both gave only {categories[int(x[0])]!r}: chance agreement is 1, kappa is 0/0"
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)
                    kappa = float(cohen_kappa_score(x, y, labels=labels, weights=weights))
            rows.append((raters[a], raters[b], int(both.sum()), kappa, note))
    return pd.DataFrame(rows, columns=["annotator_a", "annotator_b", "n_items", "kappa", "note"])


# ---------------------------------------------------------------- bootstrap


def bootstrap(
    stats: np.ndarray,
    layout: Layout,
    *,
    n_resamples: int,
    confidence: float,
    seed: int,
    ordinal: bool = False,
    batch: int = 50,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Percentile bootstrap over images: ``{metric: (low, high, n_defined)}`` (arrays; per class for per-class).

    Each resample draws images with replacement; its metrics come from ``weights @ stats`` (see module doc).
    Resamples where a metric is undefined are left out of that metric's interval; ``n_defined`` counts the rest.
    """
    rng = np.random.default_rng(seed)
    n = len(stats)
    draws: dict[str, list[np.ndarray]] = {}
    done = 0
    while done < n_resamples:
        size = min(batch, n_resamples - done)
        picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        weights = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        for key, value in metrics_from_sums(weights @ stats, layout, ordinal=ordinal).items():
            draws.setdefault(key, []).append(value)
        done += size
        if on_progress:
            on_progress(size)
    tail = (1 - confidence) / 2 * 100
    out = {}
    for key, parts in draws.items():
        values = np.concatenate(parts, axis=0)
        defined = np.isfinite(values).sum(axis=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, reported as undefined
            low, high = np.nanpercentile(values, [tail, 100 - tail], axis=0)
        out[key] = (low, high, defined)
    return out


NO_OVERLAP = "no image has ratings from two or more annotators"
INSUFFICIENT = "insufficient"


def insufficient_note(n_shared: int, min_shared: int) -> str:
    """Why a coefficient on ``n_shared`` shared images is not reported."""
    return (
        f"{INSUFFICIENT}: {n_shared} shared image{'s' if n_shared != 1 else ''}, fewer than "
        f"agreement.min_shared_images ({min_shared}); a coefficient on so few images is noise"
    )


def _one_category(metric: str, category: str) -> str:
    return (
        f"every rating is {category!r}: chance agreement is 1, so {metric} is 0/0 "
        "(see Gwet's AC1 and percent agreement instead)"
    )
