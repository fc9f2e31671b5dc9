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


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(frame: pd.DataFrame) -> str:
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
            rows.append((variable, title, value, interval, note))
    return _table(pd.DataFrame(rows, columns=["variable", "metric", "value", "95% interval", "note"]))


def _html(result: AgreementResult, images: dict[str, str]) -> str:
    m = result.metrics
    summary = pd.DataFrame(
        [
            ("annotations", m.get("n_annotations")),
            ("adjudications", m.get("n_adjudications")),
            ("images", m.get("n_images")),
            ("annotators", m.get("n_annotators")),
            ("images with two or more annotators", m.get("label", {}).get("n_images")),
            ("disputed images", m.get("consensus", {}).get("n_disputed")),
            ("undecided images (no label)", m.get("consensus", {}).get("n_undecided")),
        ],
        columns=["", "count"],
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Annotator agreement</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}img{max-width:100%}.note{color:#a33}</style></head><body>",
        "<h1>Inter-annotator agreement</h1>",
    ]
    parts += [f"<p class='note'>{html.escape(msg)}</p>" for msg in result.messages]
    parts.append(_table(summary))
    parts.append("<h2>Headline metrics</h2>")
    parts.append(
        "<p>Kappa-type metrics collapse when one class dominates (the kappa paradox); Gwet's AC1 and the class "
        "prevalence beside them show whether a low kappa means disagreement or imbalance.</p>"
    )
    parts.append(_headline_table(m))
    for name, title in (
        ("headline", "Metrics and class prevalence"),
        ("per_class", "Agreement per class"),
        ("image_agreement", "Per-image agreement"),
        ("cohen_kappa", "Cohen's kappa between annotators"),
        ("confusion_annotators", "Each annotator against the others' majority"),
        ("confusion_prelabel", "Pre-labels against consensus"),
        ("calibration", "Pre-label calibration"),
    ):
        if name in images:
            parts.append(f"<h2>{title}</h2><img alt='{name}' src='data:image/png;base64,{images[name]}'>")
    parts.append("<h2>Per class</h2>" + _table(result.per_class))
    parts.append("<h2>Per annotator</h2>" + _table(result.per_annotator))
    if "prelabel" in m:
        rows = [
            (source, v.get("n_images"), v.get("accuracy"), v.get("macro_f1"), v.get("ece"), v.get("accepted_unchanged"))
            for source, v in m["prelabel"].items()
        ]
        columns = ["source", "images", "accuracy", "macro-F1", "ECE", "accepted unchanged"]
        parts.append("<h2>Pre-label quality</h2>" + _table(pd.DataFrame(rows, columns=columns)))
    shown = result.disputes.head(MAX_DISPUTES_SHOWN)
    parts.append(f"<h2>Disputes ({len(result.disputes)}; first {len(shown)} shown)</h2>" + _table(shown))
    if m.get("undefined"):
        items = "".join(f"<li>{html.escape(k)}</li>" for k in m["undefined"])
        parts.append(
            f"<h2>Undefined metrics</h2><p>See the <code>_note</code> keys in agreement.json.</p><ul>{items}</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
