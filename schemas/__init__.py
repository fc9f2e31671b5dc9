"""Pydantic contracts shared by every stage: params (with the ontology) and the records stages exchange."""

from schemas.ontology import DefectClass, HardNegative, Ontology, Severity
from schemas.params import IngestParams, Params, load_params

__all__ = [
    "DefectClass",
    "HardNegative",
    "IngestParams",
    "Ontology",
    "Params",
    "Severity",
    "load_params",
]
