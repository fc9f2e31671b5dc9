"""The prelabel stage's outputs: the predictions frame, the report (DVC metrics), the confidence histogram, and
writing them all as one set (see :mod:`curation.prelabel.stage` for the files and their columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from curation.headline import write_headline
from curation.io import atomic_path, publish, write_csv, write_json, write_parquet
from curation.prelabel import captions as caps
from curation.prelabel.anomaly_scorer import MAPS_DIR, AnomalyColumns
from curation.prelabel.zero_shot import summarise
from schemas.ontology import Ontology
from schemas.params_prelabel import PrelabelParams
from schemas.records import ANY_DEFECT, Prediction, columns

_EMBEDDING_ROWS = 65_536  # rows per Parquet row group of embeddings.parquet
EMBEDDINGS_FILE = "embeddings.parquet"


@dataclass(frozen=True)
class PrelabelResult:
    predictions: pd.DataFrame
    embeddings: pd.DataFrame
    histogram: pd.DataFrame
    report: dict[str, Any]
    embedding_matrix: np.ndarray  # (images, D) float32; the rows of ``embeddings["embedding"]`` are views into it
    notes: list[str] = field(default_factory=list)
    cache_stats: dict[str, int] = field(default_factory=dict)
    maps: dict[str, bytes] = field(default_factory=dict)  # anomaly map PNGs by path relative to the out dir


def write_prelabel(result: PrelabelResult, out_dir: Path) -> None:
    """Write every output into ``out_dir`` as one set (:func:`curation.io.publish`)."""
    with publish(out_dir) as staging:
        write_parquet(staging / "predictions.parquet", result.predictions)
        (staging / MAPS_DIR).mkdir()  # always there (empty with anomaly off): a DVC out
        for relative, data in sorted(result.maps.items()):
            (staging / relative).write_bytes(data)  # a fresh staging folder: published whole or not at all
        _write_embeddings(staging / EMBEDDINGS_FILE, result.embeddings, result.embedding_matrix)
        if len(result.predictions):  # DVC plot data: written only with predictions (the PNG says why not)
            write_csv(staging / "confidence_histogram.csv", result.histogram)
        _histogram_png(result.histogram, staging / "confidence_histogram.png", result.report)
        write_json(staging / "prelabel.json", result.report)
        write_headline(staging, "prelabel", result.report)


def _write_embeddings(path: Path, frame: pd.DataFrame, matrix: np.ndarray) -> None:
    """Row group by row group from the matrix: each group's column is one flat float32 buffer with offsets (the
    same list<float32> column as per-row arrays, without making them, and offsets that never overflow int32)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("image_id", pa.string()), ("model_key", pa.string()), ("embedding", pa.list_(pa.float32()))])
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, len(frame), _EMBEDDING_ROWS):
            part = matrix[start : start + _EMBEDDING_ROWS]
            offsets = pa.array(np.arange(len(part) + 1, dtype=np.int32) * part.shape[1], pa.int32())
            columns = {
                "image_id": pa.array(frame["image_id"].iloc[start : start + len(part)], pa.string()),
                "model_key": pa.array(frame["model_key"].iloc[start : start + len(part)], pa.string()),
                "embedding": pa.ListArray.from_arrays(offsets, pa.array(part.reshape(-1), pa.float32())),
            }
            writer.write_table(pa.table(columns, schema=schema))
        if not len(frame):
            writer.write_table(schema.empty_table())


def confidence_histogram(scores: np.ndarray, bins: int) -> pd.DataFrame:
    """Counts of top-class probability in ``bins`` equal bins over [0, 1] (DVC plot data)."""
    counts, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    return pd.DataFrame(
        {"confidence": np.round(edges[:-1], 4), "confidence_to": np.round(edges[1:], 4), "images": counts}
    )


def predictions_frame(
    image_ids: list[str],
    probabilities: np.ndarray | None,
    class_names: list[str],
    *,
    source: str | None,
    model_name: str,
    version: str | None,
    top_negative: list[str | None],
    captions: tuple[list, list, list],
    ontology: Ontology,
    settings: PrelabelParams,
    anomaly: AnomalyColumns | None = None,
    ok: str | None = None,
) -> pd.DataFrame:
    """``predictions.parquet``: Prediction columns, then ``p_<class>``; no rows when ``probabilities`` is None.

    With ``anomaly`` its columns are filled; rows of ``source="anomaly"`` get the label ``ok`` (the OK class) or
    :data:`schemas.records.ANY_DEFECT`, ``score`` = its probability, and the region description; a class scorer's
    rows get its description followed by the region description.
    """
    probability_columns = [f"p_{c}" for c in class_names]
    if probabilities is None:
        empty = pd.DataFrame(columns=[*columns(Prediction), *probability_columns])
        floats = ["score", "margin", "entropy", "anomaly_score", *probability_columns]
        return empty.astype({c: "float64" for c in floats})
    summary = summarise(probabilities, class_names)
    texts, scores, flags = captions
    labels, label_scores = list(summary.labels), summary.scores.astype(np.float64)
    descriptions: list[tuple[str, str | None]]
    if anomaly is not None and source == "anomaly":
        labels = [ANY_DEFECT if d or ok is None else ok for d in anomaly.defect]
        defect_p = 1.0 - probabilities[:, class_names.index(ok)] if ok is not None else np.ones(len(labels))
        label_scores = np.where(np.asarray(anomaly.defect, bool) | (ok is None), defect_p, 1.0 - defect_p)
        descriptions = [
            _with_caption(en, ko, text, settings)
            for en, ko, text in zip(anomaly.text_en, anomaly.text_ko, texts, strict=True)
        ]
    else:
        descriptions = [
            caps.describe(label, float(score), text, ontology, settings.description)
            for label, score, text in zip(labels, label_scores, texts, strict=True)
        ]
        if anomaly is not None:
            descriptions = [
                (_sentences(en, a_en), None if ko is None else _sentences(ko, a_ko))
                for (en, ko), a_en, a_ko in zip(descriptions, anomaly.text_en, anomaly.text_ko, strict=True)
            ]
    # Built column by column: a Prediction object and a dict per image would cost more than the columns themselves
    # at a million images. tests/test_prelabel_stage.py validates rows against schemas.records.Prediction.
    frame = pd.DataFrame(
        {
            "image_id": pd.Series(image_ids),
            "label": pd.Series(labels),
            "score": label_scores,
            "margin": summary.margins.astype(np.float64),
            "entropy": summary.entropies.astype(np.float64),
            "top_hard_negative": pd.Series(top_negative),
            "source": source,
            "model_name": model_name,
            "model_version": version,
            "caption": pd.Series(texts),
            "caption_score": pd.Series(scores, dtype="float64"),
            "caption_flag": np.asarray(flags, dtype=bool),
            "description_en": pd.Series([en for en, _ in descriptions]),
            "description_ko": pd.Series([ko for _, ko in descriptions]),
            **_anomaly_columns(anomaly, len(image_ids)),
        }
    )
    probability_frame = pd.DataFrame(probabilities.astype(np.float64), columns=probability_columns)
    # reindex: Prediction columns this stage does not fill yet (the anomaly ones) are written empty
    return pd.concat([frame.reindex(columns=columns(Prediction)), probability_frame], axis=1)


def _with_caption(en: str, ko: str, caption: str | None, settings: PrelabelParams) -> tuple[str, str]:
    """An anomaly row's description with the caption, when there is one, appended (never replacing it)."""
    if not caption:
        return en, ko
    korean = caps.glossary_korean(caption, settings.description.glossary)
    return f"{en}. Caption: {caption}", f"{ko}. 캡션: {korean}"


def _sentences(first: str, second: str) -> str:
    """Two descriptions as consecutive sentences."""
    first = first.rstrip()
    return f"{first} {second}" if first.endswith((".", "!", "?", "。")) else f"{first}. {second}"


def _anomaly_columns(anomaly: AnomalyColumns | None, n: int) -> dict[str, pd.Series]:
    if anomaly is None:
        return {
            "anomaly_score": pd.Series([None] * n, dtype="float64"),
            "anomaly_defect": pd.Series([None] * n, dtype="boolean"),
            "anomaly_reference": pd.Series([None] * n, dtype="object"),
            "anomaly_map": pd.Series([None] * n, dtype="object"),
            "regions": pd.Series([None] * n, dtype="object"),
        }
    return {
        "anomaly_score": pd.Series(anomaly.score, dtype="float64"),
        "anomaly_defect": pd.Series(anomaly.defect, dtype="boolean"),
        "anomaly_reference": pd.Series([anomaly.reference] * n),  # text columns: inferred, as image_id's
        "anomaly_map": pd.Series(anomaly.map_path),
        "regions": pd.Series(anomaly.regions),
    }


def build_report(
    predictions: pd.DataFrame,
    class_names: list[str],
    settings: PrelabelParams,
    scorers: dict[str, Any],
    embedding_model: str,
    n_images: int,
) -> dict[str, Any]:
    """``prelabel.json``; ``scorers`` holds each scorer's report entry by name (zero-shot absent: skipped)."""
    scores = predictions["score"].to_numpy(float)
    low = scores < settings.low_confidence_below
    counts = predictions["label"].value_counts()
    negatives = predictions["top_hard_negative"].dropna().value_counts()
    return {
        "images": n_images,
        "predicted": len(predictions),
        "by_source": {str(k): int(v) for k, v in predictions["source"].value_counts().sort_index().items()},
        "class_distribution": {c: int(counts.get(c, 0)) for c in class_names},
        "mean_confidence": round(float(scores.mean()), 4) if len(scores) else None,
        "low_confidence_share": round(float(low.mean()), 4) if len(scores) else None,
        "low_confidence_below": settings.low_confidence_below,
        "hard_negative_wins": {str(k): int(v) for k, v in negatives.sort_index().items()},
        "captioned": int(predictions["caption"].notna().sum()),
        "captions_flagged": int(predictions["caption_flag"].astype(bool).sum()),
        "zero_shot": scorers.get("zero_shot", "skipped"),
        "few_shot": scorers["few_shot"],
        "embedding_model": embedding_model,
        "model_version": str(predictions["model_version"].iloc[0]) if len(predictions) else None,
        "anomaly": scorers.get("anomaly", {"status": "disabled" if not settings.anomaly.enabled else "skipped"}),
    }


def _histogram_png(histogram: pd.DataFrame, path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    widths = histogram["confidence_to"] - histogram["confidence"]
    axes.bar(histogram["confidence"], histogram["images"], width=widths, align="edge", edgecolor="white")
    axes.axvline(report["low_confidence_below"], color="tab:red", linestyle="--", label="low-confidence threshold")
    axes.set(xlim=(0, 1), xlabel="top-class probability", ylabel="images")
    sources = ", ".join(f"{k} {v}" for k, v in report["by_source"].items()) or "no predictions"
    axes.set_title(f"Pre-label confidence ({sources})", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
