"""The defect ontology: classes, hard negatives and severity levels, one object shared by every stage.

Pre-labelers read the prompts, Label Studio shows the definitions and criteria to annotators, agreement and
export check labels against ``class_names``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from schemas.base import FieldProblem, StrictModel

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class DefectClass(StrictModel):
    """One label annotators can choose, with what they need to choose it consistently."""

    name: Slug
    name_en: Text
    name_ko: Text
    definition: Text
    include: list[Text] = Field(default_factory=list, description="Inclusion criteria shown to annotators.")
    exclude: list[Text] = Field(default_factory=list, description="Exclusion criteria shown to annotators.")
    prompts_en: list[Text] = Field(min_length=1, description="English phrasings for zero-shot prompts.")
    prompts_ko: list[Text] = Field(min_length=1, description="Korean phrasings for Korean-capable models.")


class HardNegative(StrictModel):
    """Something that looks like a defect but is not: scored as its own text class, counted as ``maps_to``."""

    name: Slug
    name_ko: Text
    prompts_en: list[Text] = Field(min_length=1)
    prompts_ko: list[Text] = Field(min_length=1)
    maps_to: Slug


class Severity(StrictModel):
    name: Slug
    name_ko: Text
    definition: Text


class Ontology(StrictModel):
    classes: list[DefectClass] = Field(min_length=2)
    hard_negatives: list[HardNegative] = Field(default_factory=list)
    severities: list[Severity] = Field(min_length=1, description="Ordered from least to most severe.")

    @model_validator(mode="after")
    def _names_are_consistent(self) -> Ontology:
        _require_unique("classes", [c.name for c in self.classes])
        _require_unique("hard_negatives", [h.name for h in self.hard_negatives])
        _require_unique("severities", [s.name for s in self.severities])
        for index, negative in enumerate(self.hard_negatives):
            if negative.name in self.class_names:
                raise FieldProblem(
                    f"hard negative {negative.name!r} is also a class name; rename one of them",
                    ("hard_negatives", index, "name"),
                )
            if negative.maps_to not in self.class_names:
                raise FieldProblem(
                    f"hard negative {negative.name!r} maps_to {negative.maps_to!r}, which is not a class; "
                    f"use one of {self.class_names}",
                    ("hard_negatives", index, "maps_to"),
                )
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def severity_names(self) -> list[str]:
        return [s.name for s in self.severities]

    def get(self, name: str) -> DefectClass:
        for defect_class in self.classes:
            if defect_class.name == name:
                return defect_class
        raise KeyError(f"unknown class {name!r}; the ontology has {self.class_names}")


def _require_unique(field: str, names: list[str]) -> None:
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in first:
            raise FieldProblem(
                f"name {name!r} appears more than once in ontology.{field}; names must be unique",
                (field, first[name], "name"),
                (field, index, "name"),
            )
        first[name] = index
