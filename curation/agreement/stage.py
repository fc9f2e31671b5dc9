"""The agreement stage: read annotations, compute agreement, consensus, disputes and quality, write outputs.

Input: the pull output ``annotations.parquet`` (:class:`schemas.records.Annotation` columns) or any CSV/Parquet
with at least ``image_id, annotator, label`` (optional ``severity``, ``lead_time``, ``task_id``, ``updated_at``,
``adjudicated``). Optional: ``predictions.parquet`` (:class:`schemas.records.Prediction` + ``p_<class>``).

Annotator ids are compared trimmed and case-insensitively (``" Alice@Factory.example"`` is
``alice@factory.example``) and written lowercased; the ``adjudicators`` param is read the same way. A CSV record
with more fields than its header (an unquoted comma) is an error naming the line.

Outputs (:func:`write_agreement`), all in OUT_DIR:

- ``agreement.json``: every metric; an undefined metric is ``null`` with a sibling ``<name>_note`` and its dotted
  name in ``undefined``. Each rated variable (``label``, ``severity``) has a ``status``: ``ok``, or
  ``insufficient`` when fewer than ``agreement.min_shared_images`` images were rated by two or more annotators
  (``n_images``): then every coefficient and interval is ``null`` with an ``insufficient: ...`` note. A bootstrap
  interval is ``null`` with a note when its resamples are degenerate (zero width, or undefined in all).
- ``consensus.parquet``: exactly the :class:`schemas.records.Consensus` columns, one row per image.
- ``disputes.csv``: open disputes (ties, low agreement) with the votes, for adjudication in Label Studio.
- ``per_annotator.csv``, ``cohen_kappa.csv``.
- DVC plot data: ``confusion_annotators.csv`` and ``confusion_prelabel.csv`` (``actual, predicted``),
  ``calibration.csv``, and ``per_class.csv`` (agreement per class), each written only when it has something to
  draw; ``plots_not_written`` in ``agreement.json`` says why one is missing.
- ``metrics.json``: the headline numbers DVC shows (:mod:`curation.headline`); ``agreement.json`` has them all.
- ``plots/*.png`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.agreement import metrics as M
from curation.agreement.consensus import DISPUTE_COLUMNS, build_consensus, split_adjudications
from curation.agreement.quality import (
    ANNOTATOR_COLUMNS,
    CALIBRATION_COLUMNS,
    per_annotator,
    prelabel_quality,
)
from curation.errors import InputError
from curation.headline import write_headline
from curation.io import check_published, publish, write_csv, write_json, write_parquet
from curation.tables import read_table
from schemas.base import StrictModel
from schemas.params_agreement import AgreementParams
from schemas.records import ANY_DEFECT, Annotation, Consensus, columns, required_columns

REQUIRED = required_columns(Annotation)  # image_id, annotator, label
PREDICTION_REQUIRED = ["image_id", "label", "source"]
PER_CLASS_COLUMNS = [
    "class",
    "n_ratings",
    "prevalence",
    "specific_agreement",
    "specific_agreement_ci_low",
    "specific_agreement_ci_high",
    "kappa_one_vs_rest",
    "kappa_one_vs_rest_ci_low",
    "kappa_one_vs_rest_ci_high",
    "note",
]
COHEN_COLUMNS = ["variable", "annotator_a", "annotator_b", "n_items", "kappa", "note"]
HEADLINE = ["percent_agreement", "fleiss_kappa", "krippendorff_alpha", "krippendorff_alpha_ordinal", "gwet_ac1"]


class AnnotationsError(InputError):
    """The annotations (or predictions) file cannot be used as it is."""


@dataclass(frozen=True)
class AgreementResult:
    """Everything the stage writes; frames have the documented columns even when empty."""

    metrics: dict[str, Any]
    consensus: pd.DataFrame
    disputes: pd.DataFrame
    per_class: pd.DataFrame
    per_annotator: pd.DataFrame
    cohen_kappa: pd.DataFrame
    confusion_annotators: pd.DataFrame
    confusion_prelabel: pd.DataFrame
    calibration: pd.DataFrame
    classes: list[str]
    messages: list[str] = field(default_factory=list)

    @property
    def plot_notes(self) -> dict[str, str]:
        """Why a DVC plot data file is not written (it would have nothing to draw), by file name."""
        return _plot_notes(self)


# ---------------------------------------------------------------- reading and validation


def read_input(path: Path, record: type[StrictModel], default_name: str) -> pd.DataFrame:
    """Read annotations (``Annotation``) or predictions (``Prediction``) from CSV or Parquet; a folder means
    ``folder/default_name``. An empty file means no annotations yet."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.exists():
        raise AnnotationsError(f"{path}: file not found; pass the pull output ({default_name}) or a CSV/Parquet file")
    check_published(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise AnnotationsError(f"{path}: unsupported file type {suffix!r}; use .parquet or .csv")
    if path.stat().st_size == 0:
        return pd.DataFrame(columns=REQUIRED)  # an empty file means no annotations yet
    if suffix == ".csv":
        _check_field_counts(path)
    # the columns are checked with the frame (validate_annotations / validate_predictions), which says what they mean
    return read_table(
        path,
        record,
        columns=[],
        optional="all",
        fix="fix the file or re-run the stage that writes it",
        error=AnnotationsError,
    )


def _check_field_counts(path: Path) -> None:
    """Stop on a CSV record with more fields than the header.

    pandas cannot be trusted with these: when the first record is the long one it silently takes the first
    column as the index and shifts every value one column left (an image id becomes an annotator ...); later
    long records raise a tokenizer error without the fix. The csv module reads quoted fields (commas, line
    breaks inside quotes) the way pandas does, so the counts here are the ones pandas would see.

    Raises:
        AnnotationsError: naming the file, the line and record, the expected and found field counts, and the fix.
    """
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        start = reader.line_num + 1
        for record, fields in enumerate(reader, start=1):
            if len(fields) > len(header):
                raise AnnotationsError(
                    f"{path}: line {start} (record {record} after the header) has {len(fields)} fields, the header "
                    f"has {len(header)} ({', '.join(header)}): {_shorten(fields)}. A value that contains a comma "
                    'must be quoted ("dent, left"); or remove the extra field'
                )
            start = reader.line_num + 1


def _shorten(fields: list[str], limit: int = 160) -> str:
    text = repr(fields)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_annotations(
    frame: pd.DataFrame, source: str, classes: Sequence[str], severities: Sequence[str]
) -> pd.DataFrame:
    """Check columns, nulls, labels and severities against the ontology; return the frame with a clean index.

    Raises:
        AnnotationsError: naming the rows (1-based, header not counted) and the offending values.
    """
    _require_columns(
        frame, REQUIRED, source, f"found {list(frame.columns)}. Annotations need at least image_id, annotator, label"
    )
    frame = frame.reset_index(drop=True)
    for column in REQUIRED:
        empty = frame[column].isna()
        if empty.any():
            raise AnnotationsError(f"{source}: empty {column} in {_rows(empty)}; fill it in or drop those rows")
    for column in ("image_id", "annotator", "label"):
        frame[column] = frame[column].astype(str)
    frame["annotator"] = normalise_annotator(frame["annotator"])
    blank = frame["annotator"] == ""
    if blank.any():
        raise AnnotationsError(f"{source}: empty annotator in {_rows(blank)}; fill it in or drop those rows")
    _check_values(frame, "label", classes, source, "ontology.classes")
    if "severity" in frame.columns:
        _check_values(frame, "severity", severities, source, "ontology.severities")
    return frame


def normalise_annotator(ids: pd.Series) -> pd.Series:
    """Annotator ids as agreement compares them: surrounding whitespace removed, lowercased.

    Annotators are e-mails (pull) or names typed into a CSV. ``"Alice@Factory.example "`` and
    ``alice@factory.example`` are one person to everyone who reads the report (mail servers treat addresses
    case-insensitively in practice), so they are one annotator here. ``str.lower`` rather than ``casefold``: it
    leaves e.g. ``ß`` alone, so an id never changes length.
    """
    return ids.astype(str).str.strip().str.lower()


def _merged_annotators(raw: pd.Series) -> list[str]:
    """Lines naming the raw annotator ids that normalisation made one (so the merge is visible, not silent)."""
    raw = raw.dropna().astype(str)
    spellings = pd.DataFrame({"raw": raw, "id": normalise_annotator(raw)}).drop_duplicates()
    groups = spellings.groupby("id", sort=True)["raw"].agg(lambda s: sorted(s))
    return [
        f"annotator ids {', '.join(map(repr, names))} are one annotator {key!r} (ids are compared trimmed and "
        "case-insensitively)"
        for key, names in groups.items()
        if len(names) > 1
    ]


def _require_columns(frame: pd.DataFrame, needed: Sequence[str], source: str, fix: str) -> None:
    """Raise AnnotationsError naming the columns of ``needed`` that ``frame`` lacks, then ``fix``."""
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise AnnotationsError(f"{source}: missing column(s) {missing}; {fix}")


def _check_values(frame: pd.DataFrame, column: str, allowed: Sequence[str], source: str, key: str) -> None:
    values = frame[column]
    bad = values.notna() & ~values.isin(list(allowed))
    if not bad.any():
        return
    parts = [f"{value!r} in {_rows(values == value)}" for value in pd.unique(values[bad])]
    raise AnnotationsError(
        f"{source}: unknown {column} value(s): " + "; ".join(parts) + f". Allowed ({key} in params.yaml): "
        f"{list(allowed)}. Fix the values, or add the class to the ontology"
    )


def _rows(mask: pd.Series, limit: int = 10) -> str:
    rows = (np.flatnonzero(mask.to_numpy()) + 1).tolist()
    shown = ", ".join(map(str, rows[:limit]))
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def validate_predictions(frame: pd.DataFrame, source: str, classes: Sequence[str]) -> pd.DataFrame:
    needed = PREDICTION_REQUIRED + [f"p_{c}" for c in classes]
    _require_columns(
        frame,
        needed,
        source,
        "predictions need image_id, label, source and one p_<class> probability column per ontology class (the "
        "prelabel output predictions.parquet has them)",
    )
    frame = frame.reset_index(drop=True)
    frame["image_id"] = frame["image_id"].astype(str)
    _check_values(frame, "label", [*classes, ANY_DEFECT], source, "ontology.classes")  # + anomaly's "defect"
    repeated = frame.duplicated(["source", "image_id"], keep=False)
    if repeated.any():
        raise AnnotationsError(
            f"{source}: more than one prediction per image and source in {_rows(repeated)}; keep one per image"
        )
    return frame


# ---------------------------------------------------------------- the core


def agreement(
    annotations: pd.DataFrame,
    *,
    classes: Sequence[str],
    severities: Sequence[str],
    settings: AgreementParams,
    predictions: pd.DataFrame | None = None,
    source: str = "annotations",
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> AgreementResult:
    """Agreement metrics, consensus, disputes, per-class/per-annotator views and pre-label quality.

    Args:
        annotations: Long-form annotations (see module doc); validated here.
        classes: Ontology classes in order. severities: ontology severities, least to most severe.
        settings: The ``agreement`` params.
        predictions: Optional pre-labels (validated here) to score against the consensus.
        source: Name of the input for error messages.
        on_start: Called once with the number of bootstrap resamples to draw. on_progress: with each batch done.

    Raises:
        AnnotationsError: unknown labels or severities, empty required fields, an annotator labelling the same
            image twice, predictions without probability columns.
    """
    classes, severities = list(classes), list(severities)
    merged = _merged_annotators(annotations["annotator"]) if "annotator" in annotations.columns else []
    frame = validate_annotations(annotations, source, classes, severities)
    if predictions is not None:
        predictions = validate_predictions(predictions, "predictions", classes)
    adjudicators = normalise_annotator(pd.Series(settings.adjudicators, dtype=object)).tolist()
    regular, adjudications = split_adjudications(frame, adjudicators)
    repeated = regular.duplicated(["image_id", "annotator"], keep=False)
    if repeated.any():
        pairs = regular[repeated].drop_duplicates(["image_id", "annotator"]).head(5)
        named = ", ".join(f"{a} on {i}" for i, a in zip(pairs["image_id"], pairs["annotator"], strict=True))
        raise AnnotationsError(
            f"{source}: an annotator labelled the same image more than once in {_rows(repeated)} ({named}); "
            "keep the latest annotation per annotator and image (pull does this); annotator ids are compared "
            "trimmed and case-insensitively"
        )

    messages: list[str] = list(merged)
    report: dict[str, Any] = {
        "n_annotations": len(regular),
        "n_adjudications": len(adjudications),
        "n_images": int(frame["image_id"].nunique()),
        "n_annotators": int(regular["annotator"].nunique()),
        "annotations_as_of": _as_of(frame),
        "undefined": [],
    }
    if not len(frame):
        messages.append(f"{source} has no annotations yet: wrote empty outputs")
    annotators = sorted(pd.unique(regular["annotator"]))
    if len(annotators) == 1:
        messages.append(
            f"only one annotator ({annotators[0]}): agreement is undefined; each image keeps its single label. "
            "Have a share of images labelled by two or more annotators"
        )

    has_severity = "severity" in regular.columns and regular["severity"].notna().any()
    blocks = {"label": (classes, False, None), "severity": (severities, True, "linear")}
    matrices = {
        variable: M.ratings_matrix(regular, variable, categories)
        for variable, (categories, _, _) in blocks.items()
        if variable == "label" or has_severity
    }
    if on_start:
        on_start(settings.bootstrap * sum(_bootstrap_runs(codes, settings) for codes, _, _ in matrices.values()))
    per_class = pd.DataFrame(columns=PER_CLASS_COLUMNS)
    cohen_frames = []
    label_codes = label_raters = None
    for variable, (categories, ordinal, weights) in blocks.items():
        if variable not in matrices:
            report["severity"] = {"n_images": 0}
            _put(report, "severity", "krippendorff_alpha_ordinal", M.Stat.undefined("no severity ratings"))
            continue
        codes, _, raters = matrices[variable]
        block, classes_frame, pairs = _variable_metrics(
            codes, raters, categories, ordinal, weights, settings, on_progress
        )
        report[variable] = {}
        for key, value in block.items():
            _put(report, variable, key, value)
        cohen_frames.append(pairs.assign(variable=variable))
        if variable == "label":
            per_class, label_codes, label_raters = classes_frame, codes, raters
        if 0 < block["n_images"] < settings.min_shared_images:
            messages.append(
                f"{variable}: only {block['n_images']} image(s) rated by two or more annotators, fewer than "
                f"agreement.min_shared_images ({settings.min_shared_images}): agreement is reported as "
                "insufficient, not as a number. Send more images to several annotators (labelstudio."
                "agreement_sample), or lower agreement.min_shared_images if you accept noisy figures"
            )
    if len(annotators) >= 2 and report["label"].get("n_images", 0) == 0:
        messages.append(
            f"annotators {', '.join(annotators)} never labelled the same image: agreement is undefined. "
            "Send a share of images to two or more annotators (push's review overlap)"
        )

    prelabels = None
    if predictions is not None and settings.tie_policy == "prediction":
        # with both sources, the few-shot pre-label (the later, refined one) breaks ties
        prelabels = predictions.sort_values("source", key=lambda s: s == "few_shot", kind="stable")
        prelabels = prelabels.drop_duplicates("image_id", keep="last")
        prelabels = prelabels.set_index("image_id")["label"]
    built = build_consensus(
        regular, adjudications, classes=classes, severities=severities, settings=settings, prelabels=prelabels
    )
    report["consensus"] = _consensus_summary(built.consensus, settings)

    cohen = (
        pd.concat(cohen_frames, ignore_index=True)[COHEN_COLUMNS]
        if cohen_frames
        else pd.DataFrame(columns=COHEN_COLUMNS)
    )
    if label_codes is not None and len(label_raters):
        annotator_frame, confusion_annotators = per_annotator(
            label_codes, list(label_raters), classes, regular, cohen[cohen["variable"] == "label"]
        )
    else:
        annotator_frame = pd.DataFrame(columns=ANNOTATOR_COLUMNS)
        confusion_annotators = pd.DataFrame(columns=["annotator", "actual", "predicted"])

    confusion_prelabel = pd.DataFrame(columns=["source", "actual", "predicted"])
    calibration = pd.DataFrame(columns=CALIBRATION_COLUMNS)
    if predictions is not None:
        quality = prelabel_quality(predictions, built.consensus, regular, classes, bins=settings.calibration_bins)
        report["prelabel"] = {}
        for source_name, values in quality.metrics.items():
            report["prelabel"][source_name] = {}
            for key, value in values.items():
                if isinstance(value, M.Stat):
                    _put(report, f"prelabel.{source_name}", key, value)
                else:
                    report["prelabel"][source_name][key] = value
        confusion_prelabel, calibration = quality.confusion, quality.calibration
    if built.disputes.shape[0]:
        messages.append(f"{len(built.disputes)} disputed image(s) in disputes.csv: adjudicate them in Label Studio")
    result = AgreementResult(
        metrics=report,
        consensus=built.consensus,
        disputes=built.disputes,
        per_class=per_class,
        per_annotator=annotator_frame,
        cohen_kappa=cohen,
        confusion_annotators=confusion_annotators,
        confusion_prelabel=confusion_prelabel,
        calibration=calibration,
        classes=classes,
        messages=messages,
    )
    report["plots_not_written"] = result.plot_notes
    return result


def _as_of(frame: pd.DataFrame) -> str | None:
    """The latest ``updated_at`` / ``created_at`` in the annotations (the data's own date, so reruns match)."""
    stamps = [frame[c].dropna().astype(str) for c in ("updated_at", "created_at") if c in frame.columns]
    values = pd.concat(stamps) if stamps else pd.Series(dtype=str)
    return str(values.max()) if len(values) else None


def provenance(
    annotations: Path, settings: AgreementParams, classes: Sequence[str], severities: Sequence[str]
) -> dict[str, str | None]:
    """What the report's header names: the annotations file, its SHA-256 (the dataset version this agreement
    describes) and a hash of the params it was computed with."""
    path = Path(annotations)
    path = path / "annotations.parquet" if path.is_dir() else path
    params = {"agreement": settings.model_dump(mode="json"), "classes": list(classes), "severities": list(severities)}
    return {
        "annotations": str(path),
        "annotations_sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None,
        "params_sha256": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16],
    }


def _bootstrap_runs(codes: np.ndarray, settings: AgreementParams) -> int:
    """Bootstrap passes a variable needs: 0 when insufficient, 2 when some images have one rating (AC1's own)."""
    n = (codes != M.MISSING).sum(axis=1)
    if (n >= 2).sum() < settings.min_shared_images:
        return 0
    return 2 if (n == 1).any() else 1


def _variable_metrics(
    codes: np.ndarray,
    raters: pd.Index,
    categories: list[str],
    ordinal: bool,
    weights: str | None,
    settings: AgreementParams,
    on_progress: Callable[[int], None] | None,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Headline metrics (Stat or int), per-category table and Cohen pairs for one rated variable.

    ``codes`` holds every image with a rating of the variable. The pair-based metrics use the images with two or
    more ratings; Gwet's AC1 also takes the images rated once into its chance term (see :mod:`metrics`).
    """
    rated_counts = M.category_counts(codes, len(categories))
    n_per_image = rated_counts.sum(axis=1)
    overlap = n_per_image >= 2
    shared, counts = codes[overlap], rated_counts[overlap]
    n_shared = int(overlap.sum())
    enough = n_shared >= settings.min_shared_images
    block: dict[str, Any] = {
        "n_images": n_shared,
        "n_ratings": int(counts.sum()),
        "status": "ok" if enough else M.INSUFFICIENT,
        "min_shared_images": settings.min_shared_images,
        "n_images_rated": len(codes),
    }
    pairs = M.cohen_kappa_pairs(shared, list(raters), categories, weights=weights, min_items=settings.min_shared_images)
    total = counts.sum()
    prevalence = (
        {c: float(counts[:, k].sum() / total) for k, c in enumerate(categories)}
        if total
        else M.Stat.undefined(M.NO_OVERLAP)
    )
    if not enough:
        why = M.insufficient_note(n_shared, settings.min_shared_images) if n_shared else M.NO_OVERLAP
        m = int(n_per_image.max()) if n_shared else 0
        keys = [k for k in HEADLINE if ordinal or k != "krippendorff_alpha_ordinal"]
        block.update({k: M.Stat.undefined(why) for k in keys})
        block["fleiss_kappa_n_images"] = int((n_per_image[overlap] == m).sum())
        block["fleiss_kappa_ratings_per_image"] = m
        block["cohen_kappa_n_pairs"] = 0
        block.update({f"cohen_kappa_{name}": M.Stat.undefined(why) for name in ("mean", "min", "max")})
        block["prevalence"] = prevalence
        per_class = pd.DataFrame(
            {
                "class": categories,
                "n_ratings": counts.sum(axis=0).astype(int),
                "prevalence": counts.sum(axis=0) / total if total else 0.0,
                "note": why,
            },
            columns=PER_CLASS_COLUMNS,
        )
        return block, per_class, pairs

    fleiss, n_fleiss, m = M.fleiss_kappa(counts, categories)
    block["percent_agreement"] = M.percent_agreement(counts)
    block["fleiss_kappa"] = fleiss
    block["fleiss_kappa_n_images"] = n_fleiss
    block["fleiss_kappa_ratings_per_image"] = m
    block["krippendorff_alpha"] = M.krippendorff_alpha(shared, categories, "nominal")
    if ordinal:
        block["krippendorff_alpha_ordinal"] = M.krippendorff_alpha(shared, categories, "ordinal")
    block["gwet_ac1"] = M.gwet_ac1(rated_counts)
    defined = pairs["kappa"].dropna()
    block["cohen_kappa_n_pairs"] = len(defined)
    for name, fn in (("mean", np.mean), ("min", np.min), ("max", np.max)):
        block[f"cohen_kappa_{name}"] = (
            M.Stat(float(fn(defined))) if len(defined) else M.Stat.undefined(_no_pairs(len(raters), pairs))
        )
    block["prevalence"] = prevalence

    stats, layout = M.image_statistics(counts, m=m)
    point = M.metrics_from_sums(stats.sum(axis=0), layout, ordinal=ordinal)
    low = high = None
    degenerate: dict[str, np.ndarray] = {}
    if settings.bootstrap:
        options = {
            "n_resamples": settings.bootstrap,
            "confidence": settings.confidence,
            "seed": settings.seed,
            "ordinal": ordinal,
            "on_progress": on_progress,
        }
        draws = M.bootstrap(stats, layout, **options)
        if not overlap.all():
            # AC1 is estimated on every rated image (images rated once enter its chance term), so its resamples
            # draw from those; the pair-based metrics resample the images they are computed on
            every, _ = M.image_statistics(rated_counts, m=m)
            draws["gwet_ac1"] = M.bootstrap(every, layout, **options)["gwet_ac1"]
        for key in HEADLINE:
            if key in draws and isinstance(block.get(key), M.Stat) and block[key].value is not None:
                block[f"{key}_ci_low"], block[f"{key}_ci_high"] = _interval(*draws[key], settings.bootstrap)
        block["bootstrap_resamples"] = settings.bootstrap
        low, high = {}, {}
        for key in ("specific_agreement", "kappa_one_vs_rest"):
            lo, hi, _ = draws[key]
            degenerate[key] = np.isfinite(lo) & np.isfinite(hi) & (hi - lo <= ZERO_WIDTH)
            low[key] = np.where(degenerate[key], np.nan, lo)
            high[key] = np.where(degenerate[key], np.nan, hi)
    return block, _per_class(categories, counts, point, low, high, degenerate), pairs


ZERO_WIDTH = 1e-12


def _interval(low: float, high: float, n_defined: int, resamples: int) -> tuple[M.Stat, M.Stat]:
    """A bootstrap interval as two Stats, both undefined (with the reason) when the resamples are degenerate."""
    if not n_defined:
        why = f"undefined in all {resamples} resamples"
    elif high - low <= ZERO_WIDTH:
        why = (
            f"omitted: every resample gives {float(low):.6g}, a zero-width interval that says nothing about the "
            "uncertainty (too few or too uniform shared images)"
        )
    else:
        return M.Stat(float(low)), M.Stat(float(high))
    return M.Stat.undefined(why), M.Stat.undefined(why)


def _per_class(
    categories: list[str],
    counts: np.ndarray,
    point: dict[str, np.ndarray],
    low: dict[str, np.ndarray] | None,
    high: dict[str, np.ndarray] | None,
    degenerate: dict[str, np.ndarray],
) -> pd.DataFrame:
    n_ratings = counts.sum(axis=0)
    table = pd.DataFrame(
        {"class": categories, "n_ratings": n_ratings.astype(int), "prevalence": n_ratings / n_ratings.sum()}
    )
    for key in ("specific_agreement", "kappa_one_vs_rest"):
        table[key] = point[key][0]
        table[f"{key}_ci_low"] = low[key] if low else np.nan
        table[f"{key}_ci_high"] = high[key] if high else np.nan
    notes = []
    for k, n in enumerate(n_ratings):
        parts = []
        if n == 0:
            parts.append("no rating of this class on shared images: undefined")
        elif n == n_ratings.sum():
            parts.append("every rating is this class: one-vs-rest kappa is 0/0")
        zero = [key for key, flags in degenerate.items() if flags[k]]
        if zero:
            parts.append(f"bootstrap interval of {' and '.join(zero)} omitted: zero width in every resample")
        notes.append("; ".join(parts) or None)
    table["note"] = notes
    return table[PER_CLASS_COLUMNS]


def _no_pairs(n_raters: int, pairs: pd.DataFrame) -> str:
    if n_raters < 2:
        return "fewer than two annotators"
    reasons = sorted(set(pairs["note"].dropna()))
    return "no annotator pair with a defined kappa: " + "; ".join(reasons[:3])


def _consensus_summary(consensus: pd.DataFrame, settings: AgreementParams) -> dict[str, Any]:
    methods = consensus["method"].value_counts()
    agreement = consensus.loc[consensus["n_annotators"] >= 2, "agreement"]
    summary: dict[str, Any] = {
        "n_images": len(consensus),
        "n_undecided": int(consensus["label"].isna().sum()),
        "n_disputed": int(consensus["disputed"].sum()),
        "min_agreement": settings.min_agreement,
        "mean_agreement_shared": float(agreement.mean()) if len(agreement) else None,
    }
    if summary["mean_agreement_shared"] is None:
        summary["mean_agreement_shared_note"] = M.NO_OVERLAP
    for method in ("majority", "dawid_skene", "adjudicated", "single"):
        summary[f"n_{method}"] = int(methods.get(method, 0))
    return summary


def _put(report: dict[str, Any], path: str, key: str, value: Any) -> None:
    """Store a metric under ``report[path...][key]``; an undefined Stat becomes null + ``<key>_note``."""
    target = report
    for part in path.split("."):
        target = target.setdefault(part, {})
    if isinstance(value, M.Stat):
        target[key] = value.value
        if value.value is None:
            target[f"{key}_note"] = value.note
            report["undefined"].append(f"{path}.{key}")
    else:
        target[key] = value


# ---------------------------------------------------------------- writers


def write_agreement(result: AgreementResult, out_dir: Path, *, report: bool = True) -> list[Path]:
    """Write every output into ``out_dir`` as one set (:func:`curation.io.publish`); returns the paths written."""
    out_dir = Path(out_dir)
    with publish(out_dir) as staging:
        written = [
            write_json(staging / "agreement.json", _clean(result.metrics)),
            write_headline(staging, "agreement", _clean(result.metrics)),
            write_parquet(staging / "consensus.parquet", _consensus_frame(result.consensus)),
            write_csv(staging / "disputes.csv", result.disputes.reindex(columns=DISPUTE_COLUMNS)),
            write_csv(staging / "per_annotator.csv", result.per_annotator.reindex(columns=ANNOTATOR_COLUMNS)),
            write_csv(staging / "cohen_kappa.csv", result.cohen_kappa.reindex(columns=COHEN_COLUMNS)),
        ]
        # DVC plot data, each written only when it has something to draw; plot_notes says why one is missing
        for name, frame in plot_tables(result).items():
            if name not in result.plot_notes:
                written.append(write_csv(staging / name, frame))
        if report:
            from curation.agreement.report import write_report

            written += write_report(result, staging)
    return [out_dir / path.relative_to(staging) for path in written]


def plot_tables(result: AgreementResult) -> dict[str, pd.DataFrame]:
    """The DVC plot data files, by name, with their documented columns."""
    return {
        "per_class.csv": result.per_class.reindex(columns=PER_CLASS_COLUMNS),
        "confusion_annotators.csv": result.confusion_annotators.reindex(columns=["actual", "predicted", "annotator"]),
        "confusion_prelabel.csv": result.confusion_prelabel.reindex(columns=["actual", "predicted", "source"]),
        "calibration.csv": result.calibration.reindex(columns=CALIBRATION_COLUMNS),
    }


def _plot_notes(result: AgreementResult) -> dict[str, str]:
    """Why a plot data file is not written (nothing to draw), by file name."""
    notes = {}
    if pd.to_numeric(result.per_class["specific_agreement"], errors="coerce").notna().sum() == 0:
        label = result.metrics.get("label", {})
        notes["per_class.csv"] = "no agreement per class: " + (
            label.get("krippendorff_alpha_note") or "no image was labelled by two or more annotators"
        )
    if not len(result.confusion_annotators):
        notes["confusion_annotators.csv"] = "no annotator confusion: no image was labelled by two or more annotators"
    if not len(result.confusion_prelabel):
        notes["confusion_prelabel.csv"] = (
            "no pre-label confusion: no pre-labels (--predictions) or none on an image with a consensus label"
        )
    if not len(result.calibration) or not (result.calibration["count"] > 0).any():
        notes["calibration.csv"] = "no calibration curve: no pre-label probabilities on images with a consensus label"
    return notes


def _consensus_frame(consensus: pd.DataFrame) -> pd.DataFrame:
    frame = consensus.reindex(columns=columns(Consensus))
    return frame.astype(
        {
            "image_id": "string",
            "label": "string",
            "severity": "string",
            "agreement": "float64",
            "n_annotators": "int64",
            "method": "string",
            "disputed": "bool",
        }
    )


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN (which would be a silent 'NaN' in JSON) is a bug here."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise ValueError(f"non-finite metric {value!r} would be written to agreement.json")
    return value
