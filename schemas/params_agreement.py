"""Knobs of the ``agreement`` stage (section ``agreement`` of ``params.yaml``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import StrictModel

ConsensusMethod = Literal["majority", "dawid_skene"]
TiePolicy = Literal["dispute", "prediction", "ontology_order"]


class AgreementParams(StrictModel):
    """Inter-annotator agreement, consensus and disputes."""

    consensus: ConsensusMethod = Field(
        "majority",
        description="majority: most frequent class per image; dawid_skene: crowd-kit's Dawid-Skene EM, which "
        "weights annotators by their estimated confusion matrices.",
    )
    tie_policy: TiePolicy = Field(
        "dispute",
        description="Majority-vote ties: dispute = no label (null) until adjudicated; prediction = the pre-label "
        "if it is one of the tied classes (else null); ontology_order = the tied class listed first in the "
        "ontology. A tie is a dispute whatever the policy.",
    )
    min_agreement: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="An image whose consensus share of annotators is below this is a dispute."
    )
    adjudicators: list[str] = Field(
        default_factory=list,
        description="Annotator ids whose labels are adjudications: they override consensus and are left out of "
        "the agreement metrics. Rows with a true `adjudicated` column in the input count as adjudications too.",
    )
    bootstrap: Annotated[int, Field(ge=0)] = Field(
        1000, description="Bootstrap resamples of images for confidence intervals (0 = no intervals)."
    )
    confidence: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.95
    seed: int = 0
    dawid_skene_iterations: Annotated[int, Field(ge=1)] = 100
    calibration_bins: Annotated[int, Field(ge=2, le=100)] = 10
    min_shared_images: Annotated[int, Field(ge=1)] = Field(
        20,
        description="Fewer images rated by two or more annotators than this (for a pair's Cohen's kappa: images "
        "both rated) and the coefficients are reported as `insufficient` with the count, not as a number.",
    )
