"""The dataset health page: one self-contained HTML file (pictures inline as PNG) from the pipeline's outputs.

Input: the ingest manifest (required) and, each optional, quarantine.csv, prior_labels.parquet, splits.parquet,
consensus.parquet, the refined predictions.parquet, agreement.json and export.json. A section whose input is
missing says which file and which stage makes it, in place of its pictures.

Sections: overview, class balance per split, image sizes and aspect ratios, duplicates and near-duplicate groups
(with groups that span splits: leakage), quarantine by reason, label sources, unverified labels (one reviewer,
or imported and never reviewed), pre-label quality.

Outputs (:func:`write_health`): ``health.html``, ``health.json`` (every number on the page) and ``metrics.json``
(the headline DVC shows, :mod:`curation.headline`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.headline import write_headline
from curation.io import atomic_path, publish, write_json
from curation.tables import read_table
from schemas.base import StrictModel
from schemas.records import Consensus, ImageRecord, Prediction, PriorLabel, QuarantineRecord, SplitRow

SPLIT_ORDER = ["train", "val", "test"]
UNLABELED = "(unlabelled)"


@dataclass(frozen=True)
class HealthInputs:
    """The stage outputs the page reads; ``None`` with a reason in ``missing`` when a file is absent."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame | None = None
    prior_labels: pd.DataFrame | None = None
    splits: pd.DataFrame | None = None
    consensus: pd.DataFrame | None = None
    predictions: pd.DataFrame | None = None
    agreement: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    missing: dict[str, str] = field(default_factory=dict)  # input name -> why it is absent


@dataclass(frozen=True)
class HealthResult:
    report: dict[str, Any]
    page: str


SOURCES: dict[str, tuple[type[StrictModel] | None, str]] = {  # input name -> (record; None: JSON, the stage)
    "quarantine": (QuarantineRecord, "ingest"),
    "prior_labels": (PriorLabel, "ingest"),
    "splits": (SplitRow, "split"),
    "consensus": (Consensus, "agreement"),
    "predictions": (Prediction, "refine"),
    "agreement": (None, "agreement"),
    "export": (None, "export"),
}


def read_inputs(manifest: Path, optional: dict[str, Path | None]) -> HealthInputs:
    """Read the manifest and every optional input that exists; an absent one is recorded with the reason."""
    import json

    frames: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for name, path in optional.items():
        record, stage = SOURCES[name]
        if path is None:
            missing[name] = f"not given (--{name.replace('_', '-')}, the {stage} stage's output)"
            continue
        if not Path(path).is_file():
            missing[name] = f"{path} not found (written by the {stage} stage: dvc repro {stage})"
            continue
        fix = f"re-run the {stage} stage (dvc repro {stage})"
        if record is None:
            frames[name] = json.loads(Path(path).read_text(encoding="utf-8"))
        else:
            frames[name] = read_table(Path(path), record, optional="all", fix=fix, keep_default_na=False)
    manifest_frame = read_table(manifest, ImageRecord, fix="re-run the ingest stage (dvc repro ingest)")
    return HealthInputs(manifest=manifest_frame, missing=missing, **frames)


# ---------------------------------------------------------------- the numbers


def health(inputs: HealthInputs) -> HealthResult:
    """Every number and picture of the page, from the stage outputs (pure: no files read or written)."""
    import matplotlib

    matplotlib.use("Agg")
    report: dict[str, Any] = {"images": len(inputs.manifest), "inputs_missing": dict(sorted(inputs.missing.items()))}
    sections = []
    for title, needs, body in _SECTIONS:
        why = _absent(inputs, *needs)
        sections.append(_section(title, _unavailable(why) if why else body(inputs, report)))
    page = _page(inputs, report, sections)
    return HealthResult(report, page)


def _absent(inputs: HealthInputs, *names: str) -> str | None:
    reasons = [inputs.missing[n] for n in names if n in inputs.missing]
    return "; ".join(reasons) or None


def _balance(inputs: HealthInputs, report: dict[str, Any]) -> str:
    splits = inputs.splits
    labels = splits["label"].astype(object).where(splits["label"].notna(), UNLABELED)
    table = pd.crosstab(labels.rename("class"), splits["split"].rename("split"))
    table = table.reindex(columns=[s for s in SPLIT_ORDER if s in table.columns])
    report["class_balance"] = {c: {s: int(v) for s, v in row.items()} for c, row in table.iterrows()}
    if not table.size:
        return _unavailable("splits.parquet has no rows")
    figure, ax = _figure(8, 0.45 * len(table) + 1.5)
    y = np.arange(len(table))
    height = 0.8 / max(1, len(table.columns))
    for k, split in enumerate(table.columns):
        ax.barh(y + k * height, table[split], height=height, label=split, color=f"C{k}")
    ax.set_yticks(y + height * (len(table.columns) - 1) / 2, table.index)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    _counts(ax.xaxis)
    ax.legend(title="split")
    shares = table.div(table.sum(axis=0), axis=1)
    text = (
        "<p>Each split should hold every class in about the same share. A class missing from val or test "
        "cannot be measured there.</p>"
    )
    absent = [f"{c} in {s}" for c in table.index for s in table.columns if table.loc[c, s] == 0 and c != UNLABELED]
    if absent:
        text += f"<p class='warn'>No images of {html.escape(', '.join(absent))}.</p>"
    shown = table.astype(str) + shares.map(lambda v: f" ({v:.0%})")
    return _png(figure) + text + _table(shown.reset_index())


def _sizes(inputs: HealthInputs, report: dict[str, Any]) -> str:
    manifest = inputs.manifest
    if not len(manifest):
        return _unavailable("the manifest has no images")
    width, height = manifest["width"].astype(float), manifest["height"].astype(float)
    aspect = width / height
    sizes = (manifest["width"].astype(str) + "×" + manifest["height"].astype(str)).value_counts()
    report["sizes"] = {"distinct": len(sizes), "most_common": sizes.index[0], "aspect_min": float(aspect.min())}
    report["sizes"]["aspect_max"] = float(aspect.max())
    figure, (left, right) = _figure(11, 3.8, ncols=2)
    _counts(right.yaxis)
    left.scatter(width, height, s=12, alpha=0.5)
    left.set_xlabel("width (px)")
    left.set_ylabel("height (px)")
    left.set_title("Width and height (one dot per image)")
    right.hist(aspect, bins=30, color="C1")
    right.set_xlabel("aspect ratio (width / height)")
    right.set_ylabel("images")
    right.set_title("Aspect ratios")
    top = sizes.head(10).rename_axis("width × height").reset_index(name="images")
    text = (
        f"<p>{len(sizes)} distinct size(s); aspect ratio {aspect.min():.2f} to {aspect.max():.2f}. Mixed sizes "
        "are resized by the model's preprocessing; very wide or tall images lose detail when squashed.</p>"
    )
    return _png(figure) + text + _table(top)


def _duplicates(inputs: HealthInputs, report: dict[str, Any]) -> str:
    manifest = inputs.manifest
    copies = int((manifest["n_copies"] - 1).clip(lower=0).sum()) if len(manifest) else 0
    groups = manifest[manifest["dup_group_size"] > 1] if len(manifest) else manifest
    sizes = groups.groupby("dup_group").size().sort_values(ascending=False) if len(groups) else pd.Series(dtype=int)
    report["duplicate_copies"] = copies
    report["near_duplicate_groups"] = len(sizes)
    report["near_duplicate_images"] = int(sizes.sum())
    text = (
        f"<p>{copies} byte-identical extra cop(y/ies) were folded into one image each at ingest. "
        f"{len(sizes)} near-duplicate group(s) hold {int(sizes.sum())} images (perceptual hash confirmed on pixels; "
        "every pair in a group is near-identical); split keeps each group in one split. Near-identical pairs that "
        "no group could hold together are counted in ingest.json (near_duplicate_pairs_across_groups).</p>"
    )
    if not len(sizes):
        return text + "<p class='empty'>No near-duplicate group: every image looks distinct.</p>"
    leaks = pd.Series(dtype=int)
    if inputs.splits is not None:
        spread = groups[["image_id", "dup_group"]].merge(inputs.splits[["image_id", "split"]], on="image_id")
        leaks = spread.groupby("dup_group")["split"].nunique()
        leaks = leaks[leaks > 1]
    report["near_duplicate_groups_across_splits"] = len(leaks)
    if len(leaks):
        named = html.escape(", ".join(leaks.index[:10]))
        text += f"<p class='warn'>{len(leaks)} group(s) span more than one split: {named}.</p>"
    figure, ax = _figure(7, 3)
    counts = sizes.value_counts().sort_index()
    ax.bar(counts.index.astype(str), counts.to_numpy(), color="C2")
    ax.set_xlabel("images in the group")
    ax.set_ylabel("groups")
    _counts(ax.yaxis)
    ax.set_title("Near-duplicate group sizes")
    largest = sizes.head(10).rename_axis("group (smallest image_id)").reset_index(name="images")
    return _png(figure) + text + _table(largest)


def _quarantine(inputs: HealthInputs, report: dict[str, Any]) -> str:
    reasons = inputs.quarantine["reason"].value_counts() if len(inputs.quarantine) else pd.Series(dtype=int)
    report["quarantined"] = int(reasons.sum())
    report["quarantined_by_reason"] = {str(k): int(v) for k, v in reasons.items()}
    if not len(reasons):
        return "<p class='empty'>No file quarantined: every file was a readable image.</p>"
    figure, ax = _figure(7, 0.4 * len(reasons) + 1.2)
    ax.barh(reasons.index.astype(str), reasons.to_numpy(), color="C3")
    ax.invert_yaxis()
    ax.set_xlabel("files")
    _counts(ax.xaxis)
    examples = inputs.quarantine.groupby("reason").head(3)[["reason", "rel_path", "detail"]]
    text = "<p>Files left out of the dataset (originals untouched); fix or remove them, then re-run ingest.</p>"
    return _png(figure) + text + _table(examples)


def _sources(inputs: HealthInputs, report: dict[str, Any]) -> str:
    if not len(inputs.splits):
        return _unavailable("splits.parquet has no rows")
    sources = inputs.splits["label_source"].value_counts()
    report["label_sources"] = {str(k): int(v) for k, v in sources.items()}
    methods = pd.Series(dtype=int)
    if inputs.consensus is not None and len(inputs.consensus):
        methods = inputs.consensus["method"].value_counts()
        report["consensus_methods"] = {str(k): int(v) for k, v in methods.items()}
    figure, (left, right) = _figure(11, 3, ncols=2)
    left.pie(sources.to_numpy(), labels=[f"{k} ({v})" for k, v in sources.items()], startangle=90)
    left.set_title("Where each image's label comes from")
    if len(methods):
        names = {"single": "one reviewer", "majority": "majority", "adjudicated": "adjudicated"}
        right.barh([names.get(k, k) for k in methods.index], methods.to_numpy(), color="C4")
        right.invert_yaxis()
        right.set_title("How reviewed labels were decided")
        _counts(right.xaxis)
    else:
        right.text(0.5, 0.5, "no reviewed labels (consensus)", ha="center")
        right.set_axis_off()
    text = (
        "<p><b>consensus</b>: reviewed in Label Studio; <b>prior</b>: imported at ingest (folder names, VOC, "
        "COCO, YOLO), never reviewed here; <b>none</b>: unlabelled.</p>"
    )
    if inputs.prior_labels is not None and len(inputs.prior_labels):
        unmapped = int(inputs.prior_labels["label"].isna().sum())
        report["prior_labels"] = len(inputs.prior_labels)
        report["prior_labels_unmapped"] = unmapped
        text += (
            f"<p>{len(inputs.prior_labels)} imported label(s), {unmapped} not mapped to an ontology class "
            "(ingest.label_map).</p>"
        )
    return _png(figure) + text


def _unverified(inputs: HealthInputs, report: dict[str, Any]) -> str:
    splits = inputs.splits
    single: set[str] = set()
    if inputs.consensus is not None and len(inputs.consensus):
        consensus = inputs.consensus
        single = set(consensus.loc[consensus["method"] == "single", "image_id"])
    labelled = splits[splits["label"].notna()]
    is_single = labelled["image_id"].isin(single) & (labelled["label_source"] == "consensus")
    is_prior = labelled["label_source"] == "prior"
    unverified = labelled[is_single | is_prior]
    report["unverified"] = len(unverified)
    report["unverified_one_reviewer"] = int(is_single.sum())
    report["unverified_prior"] = int(is_prior.sum())
    text = (
        f"<p><b>{len(unverified)} of {len(labelled)} labelled images are unverified</b>: {int(is_single.sum())} "
        f"had one reviewer (agreement not measured) and {int(is_prior.sum())} carry an imported label nobody "
        "reviewed. Errors on these images are invisible to the agreement figures; send a share to a second "
        "reviewer (labelstudio.agreement_sample).</p>"
    )
    if not len(unverified):
        return text
    table = pd.crosstab(unverified["label"].rename("class"), unverified["split"].rename("split"))
    table = table.reindex(columns=[s for s in SPLIT_ORDER if s in table.columns])
    return text + _table(table.reset_index())


def _prelabels(inputs: HealthInputs, report: dict[str, Any]) -> str:
    predictions = inputs.predictions
    if not len(predictions):
        return _unavailable("the refined predictions are empty (no CLIP weights and too few human labels for few-shot)")
    scores = predictions["score"].astype(float)
    report["prelabel_mean_confidence"] = float(scores.mean())
    figure, ax = _figure(7, 3)
    _counts(ax.yaxis)
    ax.hist(scores, bins=np.linspace(0, 1, 21), color="C0")
    ax.set_xlabel("confidence of the pre-label")
    ax.set_ylabel("images")
    ax.set_title(f"Confidence of {len(predictions)} pre-labels ({', '.join(sorted(set(predictions['source'])))})")
    rows = []
    for source, values in ((inputs.agreement or {}).get("prelabel") or {}).items():
        rows.append((source, values.get("n_images"), values.get("accuracy"), values.get("macro_f1"), values.get("ece")))
    columns = ["source", "images", "accuracy vs consensus", "macro-F1", "ECE (calibration error)"]
    quality = (
        _table(pd.DataFrame(rows, columns=columns))
        if rows
        else (
            "<p class='empty'>No accuracy against reviewers: "
            + html.escape(_absent(inputs, "agreement") or "the agreement stage had no pre-labels on reviewed images")
            + "</p>"
        )
    )
    return _png(figure) + quality


# A section: its title, the inputs it needs (absent: the section says why in place of its body), the body.
_SECTIONS: list[tuple[str, tuple[str, ...], Callable[[HealthInputs, dict[str, Any]], str]]] = [
    ("Class balance per split", ("splits",), _balance),
    ("Image sizes and aspect ratios", (), _sizes),
    ("Duplicates and near-duplicate groups", (), _duplicates),
    ("Quarantine by reason", ("quarantine",), _quarantine),
    ("Label sources", ("splits",), _sources),
    ("Unverified labels", ("splits",), _unverified),
    ("Pre-label quality", ("predictions",), _prelabels),
]


# ---------------------------------------------------------------- HTML


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, ncols, figsize=(width, height))
    return figure, axes


def _counts(axis: Any) -> None:
    """Whole-number ticks on an axis of counts (images and files are never fractional)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}'>"


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def _unavailable(why: str) -> str:
    """The body of a section that cannot be drawn: the reason (which input is missing, or why it is empty)."""
    return f"<p class='empty'>Not available: {html.escape(why)}</p>"


def _page(inputs: HealthInputs, report: dict[str, Any], sections: list[str]) -> str:
    version = (inputs.export or {}).get("version")
    cards = [
        ("images", report["images"]),
        ("unverified labels", report.get("unverified", "—")),
        ("quarantined files", report.get("quarantined", "—")),
        ("near-duplicate groups", report.get("near_duplicate_groups", "—")),
        ("disputed", ((inputs.agreement or {}).get("consensus") or {}).get("n_disputed", "—")),
    ]
    card_html = "".join(
        f"<div class='card'><b>{html.escape(str(v))}</b><span>{html.escape(k)}</span></div>" for k, v in cards
    )
    meta = f"dataset version <code>{html.escape(str(version))}</code>" if version else "not exported yet"
    return "\n".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Dataset health</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
            "th{background:#f3f3f3}img{max-width:100%}.empty{color:#777;font-style:italic}.warn{color:#a33}"
            ".cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;"
            "min-width:9em}.card b{display:block;font-size:28px}.card span{color:#555}.meta{color:#555}</style>"
            "</head><body>",
            "<h1>Dataset health</h1>",
            f"<p class='meta'>{meta} · written by <code>curation health</code> from the pipeline's outputs</p>",
            f"<div class='cards'>{card_html}</div>",
            *sections,
            "</body></html>",
        ]
    )


def write_health(result: HealthResult, out_dir: Path) -> None:
    """Write ``health.html``, ``health.json`` and ``metrics.json`` into ``out_dir`` as one set."""
    with publish(out_dir) as staging:
        with atomic_path(staging / "health.html") as tmp:
            tmp.write_text(result.page, encoding="utf-8")
        write_json(staging / "health.json", result.report)
        write_headline(staging, "health", result.report)
