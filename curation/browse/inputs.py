"""Read and check the pipeline outputs a FiftyOne dataset is built from, and name the dataset's version."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from curation.browse.errors import BrowseInputError
from curation.tables import read_table
from schemas.base import StrictModel
from schemas.records import (
    Annotation,
    AugmentedRecord,
    Consensus,
    Embedding,
    ImageRecord,
    Prediction,
    SplitRow,
)

INPUT_NAMES = ("manifest", "predictions", "embeddings", "annotations", "consensus", "splits", "augmented")
REQUIRED_COLUMNS = {
    "manifest": ("image_id", "path"),
    "predictions": ("image_id", "label", "score"),
    "embeddings": ("image_id", "embedding"),
    "annotations": ("image_id", "annotator", "label"),
    "consensus": ("image_id", "label", "agreement", "disputed"),
    "splits": ("image_id", "split"),
    "augmented": ("image_id", "source_image_id", "path"),
}
RECORDS: dict[str, type[StrictModel]] = {
    "manifest": ImageRecord,
    "predictions": Prediction,
    "embeddings": Embedding,
    "annotations": Annotation,
    "consensus": Consensus,
    "splits": SplitRow,
    "augmented": AugmentedRecord,
}
ONE_ROW_PER_IMAGE = ("manifest", "predictions", "embeddings", "consensus", "splits", "augmented")


@dataclass(frozen=True)
class BrowseInputs:
    """The pipeline outputs a dataset is built from; None where a stage's output is absent."""

    manifest: pd.DataFrame
    predictions: pd.DataFrame | None = None
    embeddings: pd.DataFrame | None = None
    annotations: pd.DataFrame | None = None
    consensus: pd.DataFrame | None = None
    splits: pd.DataFrame | None = None
    augmented: pd.DataFrame | None = None
    sources: Mapping[str, str] = field(default_factory=dict)  # input name -> file, for messages


def read_inputs(paths: Mapping[str, Path | None], *, on_skip: Callable[[str], None] | None = None) -> BrowseInputs:
    """Read the pipeline outputs named in ``paths`` (keys from :data:`INPUT_NAMES`); only the manifest must exist.

    Raises:
        BrowseInputError: the manifest is missing, or a file is not Parquet, lacks a required column or repeats an
            image_id where one row per image is expected. The message names the file, the row and the fix.
    """
    unknown = set(paths) - set(INPUT_NAMES)
    if unknown:
        raise BrowseInputError(f"unknown inputs {sorted(unknown)}; expected some of {list(INPUT_NAMES)}")
    frames: dict[str, pd.DataFrame | None] = {}
    sources: dict[str, str] = {}
    for name in INPUT_NAMES:
        path = paths.get(name)
        if path is None or not Path(path).is_file():
            if name == "manifest":
                raise BrowseInputError(
                    f"{path}: manifest not found; run the ingest stage first (`dvc repro ingest`) or pass --manifest"
                )
            if on_skip:
                on_skip(f"{name}: {path} not found, skipped" if path else f"{name}: not given, skipped")
            frames[name] = None
            continue
        frames[name] = read_table(
            Path(path),
            RECORDS[name],
            columns=[c for c in REQUIRED_COLUMNS[name] if c in RECORDS[name].model_fields],  # augmented: path below
            optional="all",
            fix="re-run the stage that writes it or fix the file",
            error=BrowseInputError,
        )
        augmented = frames[name]
        if name == "augmented" and "path" not in augmented.columns and "file" in augmented.columns:
            # the augment stage records each variant's file relative to its own output folder
            frames[name] = augmented.assign(path=[str(Path(path).parent / f) for f in augmented["file"]])
        sources[name] = str(path)
    inputs = BrowseInputs(**frames, sources=sources)  # type: ignore[arg-type]
    check_inputs(inputs)
    return inputs


def check_inputs(inputs: BrowseInputs) -> None:
    """Required columns present, image_ids unique where one row per image is expected, embeddings one length."""
    for name in INPUT_NAMES:
        frame = getattr(inputs, name)
        if frame is None:
            continue
        source = inputs.sources.get(name, name)
        missing = [c for c in REQUIRED_COLUMNS[name] if c not in frame.columns]
        if missing:
            raise BrowseInputError(
                f"{source}: missing column(s) {missing} (has {list(frame.columns)}); "
                f"re-run the stage that writes it or fix the file"
            )
        if name in ONE_ROW_PER_IMAGE:
            repeated = frame["image_id"][frame["image_id"].duplicated()]
            if len(repeated):
                row = int(repeated.index[0])
                raise BrowseInputError(
                    f"{source}: image_id {repeated.iloc[0]!r} appears more than once (row {row}); "
                    "keep one row per image"
                )
        nulls = frame["image_id"].isna()
        if nulls.any():
            raise BrowseInputError(f"{source}: row {int(nulls.idxmax())} has no image_id; every row needs one")
    if inputs.embeddings is not None:
        lengths = inputs.embeddings["embedding"].map(lambda v: -1 if v is None else len(v))
        if len(lengths) and lengths.nunique() > 1:
            expected = int(lengths.mode().iloc[0])
            row = int((lengths != expected).idxmax())
            raise BrowseInputError(
                f"{inputs.sources.get('embeddings', 'embeddings')}: row {row} (image_id "
                f"{inputs.embeddings['image_id'].iloc[row]!r}) has an embedding of length {lengths.iloc[row]}, "
                f"others have {expected}; re-run the prelabel stage"
            )


def dataset_version(paths: Mapping[str, Path | None]) -> str:
    """Content version of the inputs: the first 8 hex digits of a SHA-256 over the present files' names and bytes."""
    digest = hashlib.sha256()
    for name in INPUT_NAMES:
        path = paths.get(name)
        if path is None or not Path(path).is_file():
            continue
        digest.update(name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:8]


def dataset_name(prefix: str, version: str) -> str:
    return f"{prefix}-{version}"
