"""Base model for every contract: unknown keys are errors, values are immutable once parsed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldProblem(ValueError):
    """A model validator's complaint about particular keys of its own section.

    Raise it instead of a plain ``ValueError`` so that ``load_params`` names those keys, their lines and their
    values, instead of printing the whole section.

    Args:
        message: What is wrong and how to fix it.
        *keys: The offending keys, relative to the model that raises, as dotted strings or tuples
            (``"train"``, ``("classes", 3, "name")``).
    """

    def __init__(self, message: str, *keys: str | tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.keys = [tuple(k.split(".")) if isinstance(k, str) else tuple(k) for k in keys]
