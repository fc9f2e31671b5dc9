"""Knobs of the Label Studio round trip (``labelstudio`` section of ``params.yaml``).

Secrets never live here: the local server's admin password and API token are generated on first start and kept
in ``<home>/credentials.json`` (mode 0600); a remote server is selected with the ``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_API_KEY`` environment variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from schemas.base import StrictModel

DescriptionLanguage = Literal["en", "ko", "both"]


class SimulationParams(StrictModel):
    """Simulated reviewers for the demo: clearly named users who annotate over the API, with seeded noise."""

    reviewers: Annotated[int, Field(ge=1, le=50)] = 3
    noise: Annotated[float, Field(ge=0.0, le=1.0, description="Chance a reviewer picks a wrong class.")] = 0.15
    severity_noise: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    skip_rate: Annotated[float, Field(ge=0.0, le=1.0, description="Chance a reviewer skips a task.")] = 0.02
    seed: int = 0
    truth: Path | None = Field(
        Path("data/sample/truth.csv"),
        description="CSV with file,label[,severity] the reviewers start from; else the model's label.",
    )


class LabelStudioParams(StrictModel):
    """How pre-labels are pushed to Label Studio and reviews pulled back."""

    project_title: Annotated[str, Field(min_length=3, max_length=50)] = "Defect review"
    boxes: bool = Field(False, description="Add RectangleLabels so reviewers can draw boxes.")
    description_language: DescriptionLanguage = "both"
    agreement_sample: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.2, description="Share of tasks reviewed by maximum_annotations reviewers; the rest once."
    )
    maximum_annotations: Annotated[int, Field(ge=1, le=20)] = 3
    overlap_first: bool = Field(False, description="Serve the agreement sample before uncertain tasks.")
    keep_old_predictions: bool = Field(True, description="Keep earlier model versions' predictions on tasks.")
    batch_size: Annotated[int, Field(ge=1, le=250_000)] = Field(
        500, description="Tasks (or predictions) per import request; Label Studio takes at most 250,000."
    )
    max_request_mb: Annotated[float, Field(gt=0, le=200)] = Field(
        50.0, description="Largest JSON body of one import request, in MB (10^6 bytes); the server takes 200."
    )
    max_tasks_per_project: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        100_000, description="Tasks per project; beyond it push adds '<project_title> (part 2)', (part 3) ..."
    )
    retries: Annotated[int, Field(ge=0, le=10)] = 4
    timeout_s: Annotated[float, Field(gt=0)] = 120.0
    disputes: Path = Field(
        Path("data/agreement/disputes.csv"), description="Tasks listed here are flagged for adjudication."
    )
    home: Path = Field(Path(".studio"), description="Local server: data, credentials.json, server.json, log.")
    template_dir: Path = Field(Path(".cache/label-studio-template"), description="Migrated empty data dir.")
    venv: Path = Field(Path(".venv-studio"), description="Virtual environment holding the label-studio server.")
    document_root: Path = Field(Path("."), description="Local-files root served to the UI; holds every image.")
    port: Annotated[int, Field(ge=0, le=65535, description="0 = a free port.")] = 0
    start_timeout_s: Annotated[float, Field(gt=0)] = 240.0
    simulation: SimulationParams = SimulationParams()
    preview_dir: Path = Field(
        Path(".studio/previews"),
        description="Cache of browser-drawable previews (TIFF, 16-bit, CMYK, large); must lie under document_root.",
    )
    preview_max_side: Annotated[int, Field(ge=256, le=16384)] = Field(
        2048, description="Images with a longer side get a preview this size; previews are at most this size."
    )
