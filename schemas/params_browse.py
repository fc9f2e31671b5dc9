"""Knobs of the ``fiftyone`` stage and the ``browse`` / ``search`` commands (the ``browse:`` section of params.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints

from schemas.base import StrictModel

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class BrowseInputPaths(StrictModel):
    """Pipeline outputs the dataset is built from. Only the manifest is required; absent files are skipped."""

    manifest: Path = Path("data/ingest/manifest.parquet")
    predictions: Path = Path("data/refine/predictions.parquet")
    embeddings: Path = Path("data/prelabel/embeddings.parquet")
    annotations: Path = Path("data/pull/annotations.parquet")
    consensus: Path = Path("data/agreement/consensus.parquet")
    splits: Path = Path("data/split/splits.parquet")
    augmented: Path = Path("data/augment/augmented.parquet")


class BrowseParams(StrictModel):
    """The FiftyOne browser: where its database lives, how datasets are named, thresholds of the saved views."""

    inputs: BrowseInputPaths = BrowseInputPaths()
    db_dir: Path = Field(Path(".fiftyone"), description="The project's own mongod: data, log and PID file.")
    dataset_prefix: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$")] = "defect-curation"
    version: str | None = Field(
        None, description="Dataset version name; None = the first 8 hex digits of a hash of the input files."
    )
    batch_size: Annotated[int, Field(ge=1)] = 2000
    similarity_key: str = "img_sim"
    text_model: str | None = Field(
        None, description="Local CLIP checkpoint for text search; None = the model_name that made the embeddings."
    )
    uniqueness: bool = Field(True, description="Compute uniqueness from the embeddings.")
    uniqueness_max_images: Annotated[int, Field(ge=1)] = Field(
        20_000,
        description="Skip uniqueness (with a note) above this many images: fiftyone-brain compares every image with "
        "every other, which did not finish within 11 minutes at 100,000 here.",
    )
    low_agreement: Probability = Field(0.7, description="'low-agreement' view: agreement below this.")
    low_confidence: Probability = Field(0.5, description="'low-confidence-prelabels' view: pre-label score below.")
    mistakenness_threshold: Probability = Field(0.75, description="'likely-label-errors' view: mistakenness above.")
    search_k: Annotated[int, Field(ge=1)] = 25
    port: Annotated[int, Field(ge=1, le=65535)] = 5151
    region_index_max_crops: Annotated[int, Field(ge=0)] = Field(
        20_000,
        description="Anomaly regions embedded for 'find defects like this one': the crops of the most anomalous "
        "images up to this many (a note says how many were left out); 0 = no region index. About 5-7 crops/s "
        "on 2 busy CPU cores here.",
    )
