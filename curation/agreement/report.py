"""Plots (matplotlib, Agg) and a self-contained HTML report (PNGs embedded as base64) for the agreement stage."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from curation.io import atomic_path

if TYPE_CHECKING:
    from curation.agreement.stage import AgreementResult

MAX_CONFUSION_PANELS = 12
MAX_DISPUTES_SHOWN = 50
HEADLINE_LABELS = {
    "percent_agreement": "percent agreement",
    "fleiss_kappa": "Fleiss' kappa",
    "krippendorff_alpha": "Krippendorff's alpha (nominal)",
    "krippendorff_alpha_ordinal": "Krippendorff's alpha (ordinal)",
    "gwet_ac1": "Gwet's AC1",
}


def write_report(result: AgreementResult, out_dir: Path) -> list[Path]:
    """Write ``plots/*.png`` and ``report.html`` into ``out_dir``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    plots_dir = Path(out_dir) / "plots"
    figures = {
        "headline": _headline(result),
        "per_class": _per_class(result),
        "cohen_kappa": _cohen(result),
        "image_agreement": _image_agreement(result),
        "confusion_annotators": _confusions(
            result.confusion_annotators, "annotator", result.classes, "others' majority"
        ),
        "confusion_prelabel": _confusions(result.confusion_prelabel, "source", result.classes, "consensus"),
        "calibration": _calibration(result),
    }
    written, images = [], {}
    for name, figure in figures.items():
        if figure is None:
            continue
        path = plots_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        _close(figure)
        written.append(path)
        images[name] = base64.b64encode(path.read_bytes()).decode("ascii")
    page = _html(result, images)
    report = Path(out_dir) / "report.html"
    with atomic_path(report) as tmp:
        tmp.write_text(page, encoding="utf-8")
    written.append(report)
    return written


def _close(figure: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)


def _headline(result: AgreementResult) -> Any:
    figure, axes = _figure(12, 4, ncols=2)
    left, right = axes[0]
    rows, missing = [], []
    for variable in ("label", "severity"):
        block = result.metrics.get(variable, {})
        for key, title in HEADLINE_LABELS.items():
            if key in block:
                rows.append(
                    (f"{variable}: {title}", block[key], block.get(f"{key}_ci_low"), block.get(f"{key}_ci_high"))
                )
                missing.append(_missing_value(block))
    for y, (_title, value, low, high) in enumerate(rows):
        if value is None:
            left.text(0.0, y, missing[y], va="center", color="grey")
            continue
        left.plot([value], [y], "o", color="C0")
        if low is not None and high is not None:
            left.plot([low, high], [y, y], "-", color="C0")
    left.set_yticks(range(len(rows)), [r[0] for r in rows])
    left.invert_yaxis()
    left.axvline(0, color="grey", lw=0.5)
    left.set_xlim(min(-0.1, *[r[1] for r in rows if r[1] is not None], 0) - 0.05, 1.05)
    left.set_title("Agreement (95% bootstrap interval)" if any(r[2] is not None for r in rows) else "Agreement")
    prevalence = result.metrics.get("label", {}).get("prevalence")
    if isinstance(prevalence, dict) and prevalence:
        right.barh(list(prevalence), list(prevalence.values()), color="C1")
        right.invert_yaxis()
        right.set_xlim(0, 1)
        right.set_title("Class prevalence (ratings on shared images)")
    else:
        right.text(0.5, 0.5, "no shared images", ha="center")
        right.set_axis_off()
    return figure


def _per_class(result: AgreementResult) -> Any:
    table = result.per_class
    figure, axes = _figure(8, 0.5 * len(table) + 1.5)
    ax = axes[0][0]
    y = np.arange(len(table))
    for offset, key, color in ((-0.2, "specific_agreement", "C0"), (0.2, "kappa_one_vs_rest", "C2")):
        values = pd.to_numeric(table[key], errors="coerce").to_numpy(dtype=float)
        low = pd.to_numeric(table[f"{key}_ci_low"], errors="coerce").to_numpy(dtype=float)
        high = pd.to_numeric(table[f"{key}_ci_high"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values)
        ax.barh(y[ok] + offset, values[ok], height=0.38, color=color, label=key.replace("_", " "))
        has_ci = ok & np.isfinite(low) & np.isfinite(high)
        err = np.vstack([values - low, high - values])[:, has_ci]
        ax.errorbar(values[has_ci], y[has_ci] + offset, xerr=err, fmt="none", ecolor="black", lw=0.8)
    ax.set_yticks(y, table["class"])
    ax.invert_yaxis()
    ax.set_xlim(min(-0.1, ax.get_xlim()[0]), 1.05)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2)
    ax.set_title("Agreement per class")
    return figure


def _cohen(result: AgreementResult) -> Any | None:
    pairs = result.cohen_kappa[result.cohen_kappa["variable"] == "label"]
    if not len(pairs):
        return None
    names = sorted(set(pairs["annotator_a"]) | set(pairs["annotator_b"]))
    index = {n: i for i, n in enumerate(names)}
    matrix = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(matrix, 1.0)
    for a, b, kappa in zip(pairs["annotator_a"], pairs["annotator_b"], pairs["kappa"], strict=True):
        if kappa is not None and np.isfinite(kappa):
            matrix[index[a], index[b]] = matrix[index[b], index[a]] = kappa
    size = 2 + 0.6 * len(names)
    figure, axes = _figure(size + 1, size)
    ax = axes[0][0]
    image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 15:
        for i in range(len(names)):
            for j in range(len(names)):
                text = "n/a" if np.isnan(matrix[i, j]) else f"{matrix[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=ax)
    ax.set_title("Cohen's kappa between annotators (class)")
    return figure


def _image_agreement(result: AgreementResult) -> Any | None:
    shared = result.consensus[result.consensus["n_annotators"] >= 2]
    if not len(shared):
        return None
    figure, axes = _figure(7, 3.5)
    ax = axes[0][0]
    ax.hist(shared["agreement"].astype(float), bins=np.linspace(0, 1, 21), color="C0")
    threshold = result.metrics.get("consensus", {}).get("min_agreement")
    if threshold is not None:
        ax.axvline(threshold, color="red", ls="--", label=f"dispute below {threshold}")
        ax.legend()
    ax.set_xlabel("share of annotators agreeing with the consensus")
    ax.set_ylabel("images")
    ax.set_title("Per-image agreement (images with two or more annotators)")
    return figure


def _confusions(rows: pd.DataFrame, by: str, classes: list[str], actual_name: str) -> Any | None:
    if not len(rows):
        return None
    groups = list(rows.groupby(by, sort=True))[:MAX_CONFUSION_PANELS]
    ncols = min(3, len(groups))
    nrows = int(np.ceil(len(groups) / ncols))
    side = 1.2 + 0.45 * len(classes)
    figure, axes = _figure(side * ncols, side * nrows, ncols=ncols, nrows=nrows)
    for ax in axes.ravel()[len(groups) :]:
        ax.set_axis_off()
    for ax, (name, group) in zip(axes.ravel(), groups, strict=False):
        matrix = pd.crosstab(
            pd.Categorical(group["actual"], categories=classes),
            pd.Categorical(group["predicted"], categories=classes),
            dropna=False,
        ).to_numpy()
        totals = matrix.sum(axis=1, keepdims=True)
        shares = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
        ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel(by, fontsize=8)
        ax.set_ylabel(actual_name, fontsize=8)
        ax.set_title(str(name), fontsize=9)
    figure.tight_layout()
    return figure


def _calibration(result: AgreementResult) -> Any | None:
    table = result.calibration
    if not len(table):
        return None
    figure, axes = _figure(5, 5)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    for source, group in table.groupby("source", sort=True):
        used = group[group["count"] > 0]
        ece = result.metrics.get("prelabel", {}).get(source, {}).get("ece")
        label = f"{source} (ECE {ece:.3f})" if ece is not None else str(source)
        ax.plot(used["confidence"], used["accuracy"], "o-", label=label)
    ax.set_xlabel("confidence (probability of the pre-label)")
    ax.set_ylabel("accuracy against consensus")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    ax.set_title("Pre-label calibration")
    return figure


# ---------------------------------------------------------------- HTML

# Interpretation bands, with their sources (shown in the report beside each value).
KRIPPENDORFF_BANDS = [(0.800, "reliable"), (0.667, "tentative conclusions only"), (-1.0, "unreliable: do not use")]
KRIPPENDORFF_SOURCE = (
    "Krippendorff (2004), Content Analysis, 2nd ed., p. 241: rely on α ≥ 0.800; 0.667–0.800 only for tentative "
    "conclusions"
)
LANDIS_KOCH_BANDS = [
    (0.81, "almost perfect"),
    (0.61, "substantial"),
    (0.41, "moderate"),
    (0.21, "fair"),
    (0.0, "slight"),
    (-1.0, "poor"),
]
LANDIS_KOCH_SOURCE = (
    "Landis & Koch (1977), Biometrics 33:159–174 (for AC1 as Gwet (2014), Handbook of Inter-Rater Reliability, "
    "ch. 6 benchmarks it)"
)
# Per class and per annotator there is no published band for this use; the report flags values below
# Krippendorff's 0.667 floor as a working rule and says so.
WORKING_FLOOR = 0.667
RETRAIN_GAP = 0.10  # an annotator this far below the team's median agreement with the majority is flagged
MEANINGS = {
    "percent_agreement": "Share of annotator pairs on an image that chose the same class. No correction for chance: "
    "high whenever one class dominates.",
    "fleiss_kappa": "Agreement beyond chance among several annotators (images with the same number of ratings). "
    "Falls when one class dominates even if annotators agree (the kappa paradox).",
    "krippendorff_alpha": "Agreement beyond chance; works with missing ratings and any number of annotators. "
    "The main figure for deciding whether the labels can be trusted.",
    "krippendorff_alpha_ordinal": "Alpha for severity, where minor vs major is a smaller disagreement than minor "
    "vs critical.",
    "gwet_ac1": "Agreement beyond chance that stays stable when one class dominates; read it beside kappa when "
    "most images are 'ok'.",
}
PER_CLASS_NAMES = {
    "class": "class",
    "n_ratings": "ratings",
    "prevalence": "share of ratings",
    "specific_agreement": "specific agreement",
    "specific_agreement_ci_low": "specific agreement, 95% low",
    "specific_agreement_ci_high": "specific agreement, 95% high",
    "kappa_one_vs_rest": "kappa (this class vs the rest)",
    "kappa_one_vs_rest_ci_low": "kappa, 95% low",
    "kappa_one_vs_rest_ci_high": "kappa, 95% high",
    "note": "note",
}
ANNOTATOR_NAMES = {
    "annotator": "annotator",
    "n_annotations": "annotations",
    "n_shared_images": "images shared with others",
    "loo_agreement": "agrees with the others' majority",
    "loo_n_images": "images compared",
    "loo_n_ties": "others tied (skipped)",
    "mean_pair_kappa": "mean Cohen's kappa with each other annotator",
    "median_lead_time_s": "median seconds per task",
    "note": "note",
}
DISPUTE_NAMES = {
    "image_id": "image",
    "task_id": "Label Studio task",
    "reason": "reason",
    "label": "majority label",
    "agreement": "agreement",
    "n_annotators": "annotators",
    "votes": "votes",
    "ratings": "who said what",
    "posterior": "Dawid-Skene posterior",
}
MAX_ACTION_IMAGES = 20


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame, *, empty: str, names: dict[str, str] | None = None) -> str:
    """An HTML table with readable column names; ``empty`` (the reason) stands in for a table without rows."""
    if not len(frame):
        return f"<p class='empty'>No rows: {html.escape(empty)}</p>"
    if names:
        frame = frame.rename(columns=names)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _missing_value(block: dict[str, Any]) -> str:
    """What stands in for a null coefficient: ``insufficient (n shared < min)`` or ``undefined``."""
    if block.get("status") == "insufficient":
        return f"insufficient ({block.get('n_images', 0)} shared < {block.get('min_shared_images')})"
    return "undefined"


def band(key: str, value: float | None) -> tuple[str, str]:
    """(reading, source) of a headline value: Krippendorff's bands for alpha, Landis & Koch's for kappa and AC1."""
    if value is None:
        return "not measured", ""
    if key.startswith("krippendorff"):
        bands, source = KRIPPENDORFF_BANDS, KRIPPENDORFF_SOURCE
    elif key in ("fleiss_kappa", "gwet_ac1"):
        bands, source = LANDIS_KOCH_BANDS, LANDIS_KOCH_SOURCE
    else:
        return "no chance correction: read with the others", ""
    return next(name for floor, name in bands if value >= floor), source


def _headline_table(metrics: dict[str, Any]) -> str:
    rows = []
    for variable in ("label", "severity"):
        block = metrics.get(variable, {})
        for key, title in HEADLINE_LABELS.items():
            if key not in block:
                continue
            low, high = block.get(f"{key}_ci_low"), block.get(f"{key}_ci_high")
            interval = f"{_fmt(low)} – {_fmt(high)}" if low is not None and high is not None else "—"
            note = block.get(f"{key}_note") or ""
            if key == "fleiss_kappa" and block.get("fleiss_kappa_n_images"):
                note = (
                    f"{block['fleiss_kappa_n_images']} images with {block['fleiss_kappa_ratings_per_image']} "
                    f"ratings each. {note}"
                )
            value = _missing_value(block) if block[key] is None else block[key]
            reading, _ = band(key, block[key])
            what = "class" if variable == "label" else "severity"
            rows.append((what, title, value, interval, reading, MEANINGS[key] + (f" {note}" if note else "")))
    columns = ["rated", "metric", "value", "95% interval", "reading", "what it means"]
    return _table(pd.DataFrame(rows, columns=columns), empty="no annotations yet")


def _actions(result: AgreementResult) -> list[str]:
    """The next steps, most urgent first, each naming the images, annotators or classes concerned (HTML)."""
    m, consensus = result.metrics, result.consensus
    label = m.get("label", {})
    actions = []
    if not len(consensus):
        return ["No annotations yet: push tasks to Label Studio (<code>dvc repro push</code>) and review them."]
    if len(result.disputes):
        shown = result.disputes.head(MAX_ACTION_IMAGES)
        items = ", ".join(
            f"{html.escape(str(i))}" + (f" (task {int(t)})" if pd.notna(t) else "")
            for i, t in zip(shown["image_id"], shown["task_id"], strict=True)
        )
        more = (
            f" and {len(result.disputes) - len(shown)} more (disputes.csv)" if len(result.disputes) > len(shown) else ""
        )
        actions.append(
            f"<b>Adjudicate {len(result.disputes)} disputed image(s)</b> in Label Studio (the next push flags "
            f"them): {items}{more}."
        )
    single = consensus["method"] == "single"
    if single.any():
        actions.append(
            f"<b>{int(single.sum())} of {len(consensus)} images ({single.mean():.0%}) were labelled by one "
            "reviewer</b>: their labels are unverified (agreement not measured). Raise "
            "<code>labelstudio.agreement_sample</code> so a share of them gets a second reviewer; label errors on "
            "these images are invisible to every figure in this report."
        )
    if label.get("status") == "insufficient":
        actions.append(
            f"<b>Agreement is not measured yet</b>: {label.get('n_images', 0)} image(s) had two or more "
            f"annotators, fewer than {label.get('min_shared_images')} (<code>agreement.min_shared_images</code>). "
            "Send more images to several annotators before trusting any coefficient."
        )
    alpha = label.get("krippendorff_alpha")
    if alpha is not None and alpha < KRIPPENDORFF_BANDS[0][0]:
        actions.append(
            f"<b>Class labels are not reliable yet</b> (Krippendorff's α = {alpha:.3f}, "
            f"{band('krippendorff_alpha', alpha)[0]}; "
            "rely on α ≥ 0.800): clarify the labelling guideline for the classes below and re-review."
        )
    actions += _annotator_actions(result)
    per_class = result.per_class
    values = pd.to_numeric(per_class["specific_agreement"], errors="coerce")
    weak = per_class[values < WORKING_FLOOR]
    if len(weak):
        names = ", ".join(
            f"{html.escape(str(c))} ({v:.2f})" for c, v in zip(weak["class"], values[weak.index], strict=True)
        )
        actions.append(
            f"<b>Clarify the guideline for {names}</b>: reviewers often disagree on these classes (specific "
            f"agreement below {WORKING_FLOOR}, a working rule taken from Krippendorff's floor, not a published band "
            "for this figure). Add example images of each to the labelling instructions."
        )
    if not actions:
        actions.append("Nothing to act on: no disputes, every label reviewed twice, agreement reliable.")
    return actions


def _annotator_actions(result: AgreementResult) -> list[str]:
    """Annotators whose agreement with the others' majority is well below the team's: retrain, on which classes."""
    table = result.per_annotator
    if not len(table):
        return []
    loo = pd.to_numeric(table["loo_agreement"], errors="coerce")
    if loo.notna().sum() < 2:
        return []
    median = float(loo.median())
    actions = []
    for who, value, n in zip(table["annotator"], loo, table["loo_n_images"], strict=True):
        # flagged: ten points or more below the team median, or under the working floor (a rule of thumb)
        if not np.isfinite(value) or (value > median - RETRAIN_GAP and value >= WORKING_FLOOR):
            continue
        confused = _top_confusion(result.confusion_annotators, who)
        actions.append(
            f"<b>Retrain {html.escape(str(who))}</b>: agrees with the others' majority on {value:.0%} of {int(n)} "
            f"shared images (team median {median:.0%}){confused}. Their panel in 'Each annotator against the "
            "others' majority' shows where."
        )
    return actions


def _top_confusion(rows: pd.DataFrame, who: str) -> str:
    mine = rows[(rows["annotator"] == who) & (rows["actual"] != rows["predicted"])]
    if not len(mine):
        return ""
    (actual, predicted), n = next(
        iter(mine.groupby(["actual", "predicted"]).size().sort_values(ascending=False).items())
    )
    return f"; most often says {html.escape(str(predicted))} where the others say {html.escape(str(actual))} ({n}×)"


def _provenance(m: dict[str, Any]) -> str:
    p = m.get("provenance", {})
    parts = [
        f"annotations as of <b>{_fmt(m.get('annotations_as_of'))}</b>",
        f"dataset version (annotations SHA-256) <code>{_fmt(p.get('annotations_sha256'))}</code>",
        f"params hash <code>{_fmt(p.get('params_sha256'))}</code>",
    ]
    if p.get("annotations"):
        parts.append(f"from <code>{_fmt(p['annotations'])}</code>")
    return "<p class='meta'>" + " · ".join(parts) + "</p>"


def _html(result: AgreementResult, images: dict[str, str]) -> str:
    m = result.metrics
    consensus = m.get("consensus", {})
    label = m.get("label", {})
    summary = pd.DataFrame(
        [
            ("annotations", m.get("n_annotations")),
            ("adjudications", m.get("n_adjudications")),
            ("images", m.get("n_images")),
            ("annotators", m.get("n_annotators")),
            ("images with two or more annotators (agreement measured)", label.get("n_images")),
            ("images with one reviewer (unverified: agreement not measured)", consensus.get("n_single")),
            ("disputed images (adjudicate)", consensus.get("n_disputed")),
            ("undecided images (no label)", consensus.get("n_undecided")),
        ],
        columns=["", "count"],
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Annotator agreement</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;"
        "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}.note{color:#a33}.meta{color:#555}"
        ".empty{color:#777;font-style:italic}.actions{background:#fff8e6;border:1px solid #e8c66a;padding:.5em 1.5em}"
        ".actions li{margin:.4em 0}.source{color:#666;font-size:12px}</style></head><body>",
        "<h1>Inter-annotator agreement</h1>",
        _provenance(m),
        "<div class='actions'><h2>What to do next</h2><ol>",
        *[f"<li>{action}</li>" for action in _actions(result)],
        "</ol></div>",
    ]
    parts += [f"<p class='note'>{html.escape(msg)}</p>" for msg in result.messages]
    parts.append(_table(summary, empty="no annotations yet"))
    parts.append("<h2>Headline metrics</h2>")
    parts.append(
        "<p>Computed on the images two or more annotators labelled; images with one reviewer are not measured. "
        "Kappa-type metrics collapse when one class dominates (the kappa paradox); Gwet's AC1 and the class "
        "prevalence beside them show whether a low kappa means disagreement or imbalance.</p>"
    )
    parts.append(_headline_table(m))
    parts.append(
        f"<p class='source'>Readings: alpha — {html.escape(KRIPPENDORFF_SOURCE)}. Kappa and AC1 — "
        f"{html.escape(LANDIS_KOCH_SOURCE)}: below 0 poor, 0–0.20 slight, 0.21–0.40 fair, 0.41–0.60 moderate, "
        "0.61–0.80 substantial, 0.81–1 almost perfect.</p>"
    )
    why_not = m.get("plots_not_written", {})
    for name, title, data in (
        ("headline", "Metrics and class prevalence", None),
        ("per_class", "Agreement per class", "per_class.csv"),
        ("image_agreement", "Per-image agreement", None),
        ("cohen_kappa", "Cohen's kappa between annotators", None),
        ("confusion_annotators", "Each annotator against the others' majority", "confusion_annotators.csv"),
        ("confusion_prelabel", "Pre-labels against consensus", "confusion_prelabel.csv"),
        ("calibration", "Pre-label calibration", "calibration.csv"),
    ):
        if name in images and data not in why_not:
            parts.append(f"<h2>{title}</h2><img alt='{name}' src='data:image/png;base64,{images[name]}'>")
        else:
            reason = why_not.get(data) or "no image had two or more annotators"
            parts.append(f"<h2>{title}</h2><p class='empty'>No plot: {html.escape(reason)}</p>")
    parts.append(
        "<h2>Per class</h2><p>Specific agreement: when one annotator chose this class, how often another on the "
        "same image did too. Kappa (this class vs the rest): the same beyond chance.</p>"
        + _table(result.per_class, names=PER_CLASS_NAMES, empty=why_not.get("per_class.csv", "no shared images"))
    )
    parts.append(
        "<h2>Per annotator</h2><p>'Agrees with the others' majority': on images shared with others, the share "
        "where this annotator chose the class most of the others chose (leave-one-out).</p>"
        + _table(result.per_annotator, names=ANNOTATOR_NAMES, empty="no annotations yet")
    )
    if "prelabel" in m:
        rows = [
            (source, v.get("n_images"), v.get("accuracy"), v.get("macro_f1"), v.get("ece"), v.get("accepted_unchanged"))
            for source, v in m["prelabel"].items()
        ]
        columns = ["source", "images", "accuracy", "macro-F1", "ECE (calibration error)", "accepted unchanged"]
        parts.append(
            "<h2>Pre-label quality</h2>"
            + _table(pd.DataFrame(rows, columns=columns), empty="no pre-label on an image with a consensus label")
        )
    else:
        parts.append("<h2>Pre-label quality</h2><p class='empty'>No pre-labels given (--predictions).</p>")
    shown = result.disputes.head(MAX_DISPUTES_SHOWN)
    parts.append(
        f"<h2>Disputes ({len(result.disputes)}; first {len(shown)} shown)</h2>"
        + _table(
            shown,
            names=DISPUTE_NAMES,
            empty="no image with a tie or agreement below agreement.min_agreement among those labelled twice or more",
        )
    )
    if m.get("undefined"):
        items = "".join(f"<li>{html.escape(k)}</li>" for k in m["undefined"])
        parts.append(
            f"<h2>Undefined metrics</h2><p>See the <code>_note</code> keys in agreement.json.</p><ul>{items}</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
