"""Agreement metrics against independent textbook implementations, published worked examples, the kappa paradox."""

from __future__ import annotations

from itertools import combinations, permutations

import numpy as np
import pandas as pd
import pytest

from curation.agreement import metrics as M
from curation.agreement.stage import agreement
from schemas.params_agreement import AgreementParams

TOL = 1e-9


# ---------------------------------------------------------------- independent implementations (loops, formulas)


def units(codes: np.ndarray) -> list[list[int]]:
    """Per image, the list of given categories (missing ratings dropped), images with >= 2 ratings only."""
    out = [[int(c) for c in row if c != M.MISSING] for row in codes]
    return [u for u in out if len(u) >= 2]


def ref_percent_agreement(us: list[list[int]]) -> float:
    shares = [np.mean([a == b for a, b in combinations(u, 2)]) for u in us]
    return float(np.mean(shares))


def ref_fleiss(us: list[list[int]], q: int) -> tuple[float, int]:
    """Fleiss (1971): P_i = (sum_j n_ij^2 - n) / (n (n - 1)); p_j = sum_i n_ij / (N n); kappa = (P - Pe) / (1 - Pe)."""
    m = max(len(u) for u in us)
    rows = [u for u in us if len(u) == m]
    n_ij = np.array([[u.count(j) for j in range(q)] for u in rows], dtype=float)
    big_n = len(rows)
    p_i = ((n_ij**2).sum(axis=1) - m) / (m * (m - 1))
    p_j = n_ij.sum(axis=0) / (big_n * m)
    p_bar, pe = p_i.mean(), (p_j**2).sum()
    return (p_bar - pe) / (1 - pe), big_n


def ref_fleiss_per_category(us: list[list[int]], q: int) -> list[float]:
    """Fleiss (1971) eq. for kappa_j = 1 - sum_i n_ij (n - n_ij) / (N n (n - 1) p_j q_j), varying n_i allowed."""
    total = sum(len(u) for u in us)
    out = []
    for j in range(q):
        p = sum(u.count(j) for u in us) / total
        disagree = sum(u.count(j) * (len(u) - u.count(j)) / (len(u) - 1) for u in us)
        out.append(1 - disagree / (total * p * (1 - p)) if 0 < p < 1 else float("nan"))
    return out


def ref_specific_agreement(us: list[list[int]], q: int) -> list[float]:
    """Positive specific agreement: agreeing pairs on j / all pairs involving j (ordered pairs)."""
    out = []
    for j in range(q):
        agree = sum(1 for u in us for a, b in permutations(u, 2) if a == j and b == j)
        involving = sum(1 for u in us for a, b in permutations(u, 2) if a == j)
        out.append(agree / involving if involving else float("nan"))
    return out


def ref_alpha(us: list[list[int]], q: int, level: str) -> float:
    """Krippendorff (2011): coincidences from all ordered pairs of values in a unit, weighted 1 / (m_u - 1)."""
    o = np.zeros((q, q))
    for u in us:
        for a, b in permutations(range(len(u)), 2):
            o[u[a], u[b]] += 1 / (len(u) - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()

    def delta2(c: int, k: int) -> float:
        if level == "nominal":
            return float(c != k)
        lo, hi = min(c, k), max(c, k)
        return (sum(n_c[g] for g in range(lo, hi + 1)) - (n_c[c] + n_c[k]) / 2) ** 2

    d_o = sum(o[c, k] * delta2(c, k) for c in range(q) for k in range(q))
    d_e = sum(n_c[c] * n_c[k] * delta2(c, k) for c in range(q) for k in range(q)) / (n - 1)
    return 1 - d_o / d_e


def ref_ac1(us: list[list[int]], q: int) -> float:
    """Gwet (2014) AC1: pa = mean share of agreeing pairs; pi_k = mean over images of r_ik / r_i."""
    pa = ref_percent_agreement(us)
    pi = [np.mean([u.count(k) / len(u) for u in us]) for k in range(q)]
    pe = sum(p * (1 - p) for p in pi) / (q - 1)
    return (pa - pe) / (1 - pe)


def ref_cohen(x: list[int], y: list[int], q: int, weights: str | None = None) -> float:
    n = len(x)
    observed = np.zeros((q, q))
    for a, b in zip(x, y, strict=True):
        observed[a, b] += 1 / n
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    w = np.array([[abs(i - j) if weights == "linear" else float(i != j) for j in range(q)] for i in range(q)])
    return 1 - (w * observed).sum() / (w * expected).sum()


# ---------------------------------------------------------------- random data with missing ratings


def random_codes(seed: int, n_items: int = 80, n_raters: int = 5, q: int = 4, missing: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, q, n_items)
    codes = np.where(rng.random((n_items, n_raters)) < 0.6, truth[:, None], rng.integers(0, q, (n_items, n_raters)))
    codes[rng.random((n_items, n_raters)) < missing] = M.MISSING
    return codes[(codes != M.MISSING).sum(axis=1) >= 2]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_metrics_equal_independent_implementations(seed: int) -> None:
    q = 4
    codes = random_codes(seed, q=q)
    cats = [f"c{k}" for k in range(q)]
    us = units(codes)
    counts = M.category_counts(codes, q)
    fleiss, n_fleiss, m = M.fleiss_kappa(counts, cats)
    ref_kappa, ref_n = ref_fleiss(us, q)

    assert abs(M.percent_agreement(counts).value - ref_percent_agreement(us)) < TOL
    assert abs(fleiss.value - ref_kappa) < TOL and n_fleiss == ref_n and m == max(map(len, us))
    assert abs(M.krippendorff_alpha(codes, cats, "nominal").value - ref_alpha(us, q, "nominal")) < TOL
    assert abs(M.krippendorff_alpha(codes, cats, "ordinal").value - ref_alpha(us, q, "ordinal")) < TOL
    assert abs(M.gwet_ac1(counts).value - ref_ac1(us, q)) < TOL

    # the summed per-image statistics (used by the bootstrap) reproduce every point estimate
    stats, layout = M.image_statistics(counts, m=m)
    sums = M.metrics_from_sums(stats.sum(axis=0), layout, ordinal=True)
    assert abs(sums["fleiss_kappa"][0] - ref_kappa) < TOL
    assert abs(sums["krippendorff_alpha"][0] - ref_alpha(us, q, "nominal")) < TOL
    assert abs(sums["krippendorff_alpha_ordinal"][0] - ref_alpha(us, q, "ordinal")) < TOL
    np.testing.assert_allclose(sums["specific_agreement"][0], ref_specific_agreement(us, q), atol=TOL, rtol=0)
    np.testing.assert_allclose(sums["kappa_one_vs_rest"][0], ref_fleiss_per_category(us, q), atol=TOL, rtol=0)


@pytest.mark.parametrize("weights", [None, "linear"])
def test_cohen_pairs_equal_independent(weights: str | None) -> None:
    q = 4
    codes = random_codes(7, q=q)
    raters = ["a", "b", "c", "d", "e"]
    pairs = M.cohen_kappa_pairs(codes, raters, [f"c{k}" for k in range(q)], weights=weights)
    assert len(pairs) == 10
    for row in pairs.itertuples():
        i, j = raters.index(row.annotator_a), raters.index(row.annotator_b)
        both = (codes[:, i] != M.MISSING) & (codes[:, j] != M.MISSING)
        assert row.n_items == both.sum()
        assert abs(row.kappa - ref_cohen(list(codes[both, i]), list(codes[both, j]), q, weights)) < TOL


def test_bootstrap_resample_equals_recomputing_on_resampled_images() -> None:
    """A resample's metrics from weights @ stats equal the libraries run on the duplicated images."""
    q = 4
    codes = random_codes(11, q=q)
    cats = [f"c{k}" for k in range(q)]
    counts = M.category_counts(codes, q)
    _, _, m = M.fleiss_kappa(counts, cats)
    stats, layout = M.image_statistics(counts, m=m)
    rng = np.random.default_rng(5)
    picks = rng.integers(0, len(codes), len(codes))
    weights = np.bincount(picks, minlength=len(codes)).astype(float)
    fast = M.metrics_from_sums(weights @ stats, layout, ordinal=True)
    again = codes[picks]
    again_counts = M.category_counts(again, q)
    assert abs(fast["krippendorff_alpha"][0] - M.krippendorff_alpha(again, cats, "nominal").value) < TOL
    assert abs(fast["krippendorff_alpha_ordinal"][0] - M.krippendorff_alpha(again, cats, "ordinal").value) < TOL
    assert abs(fast["gwet_ac1"][0] - M.gwet_ac1(again_counts).value) < TOL
    assert abs(fast["percent_agreement"][0] - M.percent_agreement(again_counts).value) < TOL
    # Fleiss on the resample uses the same m as the original (the resample may lack m-rating images)
    full = again_counts[again_counts.sum(axis=1) == m]
    assert (
        abs(fast["fleiss_kappa"][0] - ref_fleiss([[k for k in range(q) for _ in range(int(r[k]))] for r in full], q)[0])
        < TOL
    )

    low, high, defined = M.bootstrap(stats, layout, n_resamples=200, confidence=0.95, seed=0)["gwet_ac1"]
    point = M.gwet_ac1(counts).value
    assert defined == 200 and low < point < high and high - low < 0.5
    again_low, again_high, _ = M.bootstrap(stats, layout, n_resamples=200, confidence=0.95, seed=0)["gwet_ac1"]
    assert (again_low, again_high) == (low, high)  # seeded


# ---------------------------------------------------------------- published worked examples

# Fleiss (1971), Table 1: 30 patients, 6 psychiatrists each, 5 diagnoses (as in R irr's `diagnoses`;
# 1 depression, 2 personality disorder, 3 schizophrenia, 4 neurosis, 5 other).
FLEISS_1971 = [
    [4, 4, 4, 4, 4, 4], [2, 2, 2, 5, 5, 5], [2, 3, 3, 3, 3, 5], [5, 5, 5, 5, 5, 5], [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3], [3, 3, 3, 3, 5, 5], [1, 1, 3, 3, 3, 4], [1, 1, 4, 4, 4, 4], [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4], [1, 2, 4, 4, 4, 4], [2, 2, 2, 3, 3, 3], [1, 4, 4, 4, 4, 4], [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5], [1, 1, 1, 4, 5, 5], [1, 1, 1, 1, 1, 2], [2, 2, 4, 4, 4, 4], [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5], [2, 4, 4, 4, 4, 4], [2, 2, 4, 5, 5, 5], [1, 1, 4, 4, 4, 4], [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4], [1, 1, 1, 1, 5, 5], [2, 2, 4, 4, 4, 4], [1, 3, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5],
]  # fmt: skip
DIAGNOSES = ["depression", "personality_disorder", "schizophrenia", "neurosis", "other"]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", reliability data: 4 observers x 12 units,
# values 1-5, missing entries None. Published: nominal .743, ordinal .815.
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def long_form(matrix: list[list], raters: list[str], names: list[str], by_item: bool) -> pd.DataFrame:
    rows = []
    table = matrix if by_item else list(map(list, zip(*matrix, strict=True)))
    for item, values in enumerate(table):
        for rater, value in zip(raters, values, strict=True):
            if value is not None:
                name = names[value - 1]
                rows.append({"image_id": f"u{item:02d}", "annotator": rater, "label": name, "severity": name})
    return pd.DataFrame(rows)


def quiet(**update: object) -> AgreementParams:
    return AgreementParams(bootstrap=0).model_copy(update=update)


def test_fleiss_1971_worked_example() -> None:
    frame = long_form(FLEISS_1971, [f"r{k}" for k in range(6)], DIAGNOSES, by_item=True)
    result = agreement(frame, classes=DIAGNOSES, severities=DIAGNOSES, settings=quiet())
    label = result.metrics["label"]
    assert round(label["fleiss_kappa"], 3) == 0.430  # Fleiss 1971; R irr::kappam.fleiss gives 0.4302445
    assert abs(label["fleiss_kappa"] - 0.4302445) < 1e-7
    assert label["fleiss_kappa_n_images"] == 30 and label["fleiss_kappa_ratings_per_image"] == 6
    # per-category kappas published by Fleiss (1971) / R irr::kappam.fleiss(detail = TRUE)
    per_class = result.per_class.set_index("class")["kappa_one_vs_rest"].round(3)
    assert per_class.tolist() == [0.245, 0.245, 0.520, 0.471, 0.566]
    us = units(np.array(FLEISS_1971) - 1)
    assert abs(label["fleiss_kappa"] - ref_fleiss(us, 5)[0]) < TOL


def test_krippendorff_2011_worked_example() -> None:
    levels = ["v1", "v2", "v3", "v4", "v5"]
    frame = long_form(KRIPPENDORFF_2011, ["A", "B", "C", "D"], levels, by_item=False)
    result = agreement(frame, classes=levels, severities=levels, settings=quiet(min_shared_images=2))
    assert round(result.metrics["label"]["krippendorff_alpha"], 3) == 0.743
    assert round(result.metrics["severity"]["krippendorff_alpha_ordinal"], 3) == 0.815
    # unit 12 has one value only and is not pairable: 11 units count
    assert result.metrics["label"]["n_images"] == 11
    codes = np.array([[M.MISSING if v is None else v - 1 for v in row] for row in KRIPPENDORFF_2011]).T
    assert abs(result.metrics["label"]["krippendorff_alpha"] - ref_alpha(units(codes), 5, "nominal")) < TOL
    assert abs(result.metrics["severity"]["krippendorff_alpha_ordinal"] - ref_alpha(units(codes), 5, "ordinal")) < TOL


def test_kappa_paradox_low_kappa_high_ac1() -> None:
    """90 images both say ok, 5 + 5 where one says scratch: 90% agreement, kappa below zero, AC1 near 0.9."""
    pairs = [("ok", "ok")] * 90 + [("ok", "scratch")] * 5 + [("scratch", "ok")] * 5
    rows = [
        {"image_id": f"i{i:03d}", "annotator": who, "label": lab}
        for i, pair in enumerate(pairs)
        for who, lab in zip(("a", "b"), pair, strict=True)
    ]
    classes = ["scratch", "contamination", "dent", "crack", "discoloration", "ok"]
    result = agreement(pd.DataFrame(rows), classes=classes, severities=["minor"], settings=quiet())
    label = result.metrics["label"]
    pe_kappa = 0.95**2 + 0.05**2
    pe_ac1 = 2 * 0.95 * 0.05 / (len(classes) - 1)
    assert abs(label["percent_agreement"] - 0.9) < TOL
    assert abs(label["cohen_kappa_mean"] - (0.9 - pe_kappa) / (1 - pe_kappa)) < TOL
    assert abs(label["gwet_ac1"] - (0.9 - pe_ac1) / (1 - pe_ac1)) < TOL
    assert label["cohen_kappa_mean"] < 0 < 0.85 < label["gwet_ac1"]
    assert label["prevalence"]["ok"] == 0.95


def test_kappa_undefined_when_everyone_says_ok() -> None:
    rows = [{"image_id": f"i{i}", "annotator": a, "label": "ok"} for i in range(10) for a in ("a", "b", "c")]
    settings = quiet(min_shared_images=10)
    result = agreement(pd.DataFrame(rows), classes=["dent", "ok"], severities=["minor"], settings=settings)
    label = result.metrics["label"]
    assert label["fleiss_kappa"] is None and "chance agreement is 1" in label["fleiss_kappa_note"]
    assert label["krippendorff_alpha"] is None and "'ok'" in label["krippendorff_alpha_note"]
    assert label["cohen_kappa_mean"] is None
    assert label["percent_agreement"] == 1.0 and label["gwet_ac1"] == 1.0
    assert {"label.fleiss_kappa", "label.krippendorff_alpha"} <= set(result.metrics["undefined"])


# ---------------------------------------------------------------- Gwet's AC1 with missing ratings (Gwet 2014)


def ref_ac1_gwet2014(table: list[list[int | None]], q: int) -> float:
    """Gwet (2014), Handbook 4th ed., AC1 for many raters with missing ratings, in plain loops.

    p_a = mean over images with r_i >= 2 of sum_k r_ik (r_ik - 1) / (r_i (r_i - 1)); pi_k = mean over EVERY
    image with r_i >= 1 of r_ik / r_i; p_e = sum_k pi_k (1 - pi_k) / (q - 1). (irrCAC's CAC.gwet, read from its
    source, computes the same; it is not installed here: it pins scipy 1.12 and pandas < 3.)
    """
    rated = [[c for c in row if c is not None] for row in table]
    rated = [r for r in rated if r]
    paired = [r for r in rated if len(r) >= 2]
    pa = 0.0
    for r in paired:
        pa += sum(r.count(k) * (r.count(k) - 1) for k in range(q)) / (len(r) * (len(r) - 1))
    pa /= len(paired)
    pi = [sum(r.count(k) / len(r) for r in rated) / len(rated) for k in range(q)]
    pe = sum(p * (1 - p) for p in pi) / (q - 1)
    return (pa - pe) / (1 - pe)


def missing_table(seed: int, n_items: int = 400, n_raters: int = 3, q: int = 4, missing: float = 0.12) -> list:
    """Images x raters, skewed classes, each rating missing with probability ``missing`` (None)."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(q, n_items, p=[0.7] + [0.3 / (q - 1)] * (q - 1))
    table = []
    for i in range(n_items):
        row = []
        for _ in range(n_raters):
            value = int(truth[i]) if rng.random() < 0.8 else int(rng.integers(q))
            row.append(None if rng.random() < missing else value)
        table.append(row)
    return table


def table_frame(table: list, classes: list[str]) -> pd.DataFrame:
    rows = [
        {"image_id": f"i{i:04d}", "annotator": f"r{r}", "label": classes[value]}
        for i, row in enumerate(table)
        for r, value in enumerate(row)
        if value is not None
    ]
    return pd.DataFrame(rows)


def table_codes(table: list) -> np.ndarray:
    codes = np.array([[M.MISSING if v is None else v for v in row] for row in table])
    return codes[(codes != M.MISSING).sum(axis=1) >= 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ac1_with_missing_ratings_uses_every_rated_image_in_the_chance_term(seed: int) -> None:
    """400 images, 3 raters, 12% of ratings missing: images rated once enter pi_k (Gwet 2014, irrCAC)."""
    q = 4
    classes = [f"c{k}" for k in range(q)]
    table = missing_table(seed, q=q)
    reference = ref_ac1_gwet2014(table, q)
    codes = table_codes(table)
    singles = int(((codes != M.MISSING).sum(axis=1) == 1).sum())
    assert singles >= 5  # the data really has images with one rating (about 4% of them)
    # the old reading (pi_k over images with two or more ratings only) differs: this test can tell them apart
    assert abs(reference - ref_ac1(units(codes), q)) > 1e-5

    assert abs(M.gwet_ac1(M.category_counts(codes, q)).value - reference) < TOL
    result = agreement(table_frame(table, classes), classes=classes, severities=["minor"], settings=quiet())
    label = result.metrics["label"]
    assert abs(label["gwet_ac1"] - reference) < TOL
    assert label["n_images_rated"] == len(codes) and label["n_images"] == len(codes) - singles


def test_ac1_hand_computed_tiny_table() -> None:
    """x,x,x | x,x,y | y | x with q = 2, worked by hand.

    p_a = (1 + 2/6) / 2 = 2/3 (two images with pairs); pi_x = (1 + 2/3 + 0 + 1) / 4 = 2/3, pi_y = 1/3 (all four
    rated images); p_e = 2 (2/3)(1/3) / 1 = 4/9; AC1 = (2/3 - 4/9) / (5/9) = 0.4. (pi over the two shared images
    only would give 7/13.)
    """
    table = [[0, 0, 0], [0, 0, 1], [1, None, None], [None, 0, None]]
    counts = M.category_counts(table_codes(table), 2)
    assert abs(M.gwet_ac1(counts).value - 0.4) < TOL
    assert abs(ref_ac1_gwet2014(table, 2) - 0.4) < TOL
    result = agreement(
        table_frame(table, ["x", "y"]), classes=["x", "y"], severities=["minor"], settings=quiet(min_shared_images=2)
    )
    assert abs(result.metrics["label"]["gwet_ac1"] - 0.4) < TOL


def test_ac1_gwet_handbook_example_with_missing_ratings() -> None:
    """Gwet (2014)'s 4 raters x 12 units, 5 categories, missing ratings (irrCAC's ``raw_4raters``): the published
    AC1 is 0.7754 (irrCAC: coefficient 0.77544, pa 0.81818, pe 0.19032). Unit 12 has one rating."""
    raters = {
        "Rater1": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        "Rater2": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, None],
        "Rater3": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 3],
        "Rater4": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    }
    table = [[None if v is None else v - 1 for v in unit] for unit in zip(*raters.values(), strict=True)]
    levels = ["v1", "v2", "v3", "v4", "v5"]
    result = agreement(table_frame(table, levels), classes=levels, severities=levels, settings=quiet())
    label = result.metrics["label"]
    assert label["status"] == "insufficient"  # 11 shared units are fewer than the default 20
    result = agreement(
        table_frame(table, levels), classes=levels, severities=levels, settings=quiet(min_shared_images=11)
    )
    label = result.metrics["label"]
    assert round(label["gwet_ac1"], 5) == 0.77544 and round(label["percent_agreement"], 5) == 0.81818
    assert abs(label["gwet_ac1"] - ref_ac1_gwet2014(table, 5)) < TOL


def test_ac1_bootstrap_with_images_rated_once_equals_recomputing() -> None:
    """A resample of every rated image (singles included) gives the AC1 of the duplicated images."""
    q = 4
    codes = table_codes(missing_table(4, n_items=120, q=q))
    counts = M.category_counts(codes, q)
    stats, layout = M.image_statistics(counts, m=3)
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(codes), len(codes))
    weights = np.bincount(picks, minlength=len(codes)).astype(float)
    fast = M.metrics_from_sums(weights @ stats, layout)
    again = M.category_counts(codes[picks], q)
    assert abs(fast["gwet_ac1"][0] - M.gwet_ac1(again).value) < TOL
    assert abs(fast["percent_agreement"][0] - M.percent_agreement(again).value) < TOL
    assert abs(M.metrics_from_sums(stats.sum(axis=0), layout)["gwet_ac1"][0] - M.gwet_ac1(counts).value) < TOL
