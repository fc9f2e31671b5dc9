"""The defect ontology: classes, hard negatives and severity levels, one object shared by every stage.

Pre-labelers read the prompts, Label Studio shows the definitions and criteria to annotators, agreement and
export check labels against ``class_names``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas.base import FieldProblem, StrictModel

if TYPE_CHECKING:
    from schemas.params import IngestParams

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class DefectClass(StrictModel):
    """One label annotators can choose, with what they need to choose it consistently.

    Only ``name`` is required. Korean names and prompts are needed only by the features that use them (Korean
    zero-shot prompts, Korean descriptions); :meth:`Ontology.missing_korean` lists the classes lacking them.
    """

    name: Slug
    name_en: Text | None = Field(None, description="English name shown to people; default: the name, spaced.")
    name_ko: Text | None = Field(None, description="Korean name (Korean descriptions, Label Studio hints).")
    definition: Text | None = Field(None, description="What the class is, shown to annotators.")
    include: list[Text] = Field(default_factory=list, description="Inclusion criteria shown to annotators.")
    exclude: list[Text] = Field(default_factory=list, description="Exclusion criteria shown to annotators.")
    prompts_en: list[Text] = Field(
        default_factory=list, description="English phrasings for zero-shot prompts; default: the English name."
    )
    prompts_ko: list[Text] = Field(default_factory=list, description="Korean phrasings for Korean-capable models.")

    @property
    def label_en(self) -> str:
        """The English name, or the class name with spaces for underscores."""
        return self.name_en or self.name.replace("_", " ")

    @property
    def english_prompts(self) -> list[str]:
        """``prompts_en``, or the English name alone."""
        return self.prompts_en or [self.label_en]


class HardNegative(StrictModel):
    """Something that looks like a defect but is not: scored as its own text class, counted as ``maps_to``."""

    name: Slug
    name_ko: Text | None = None
    prompts_en: list[Text] = Field(min_length=1)
    prompts_ko: list[Text] = Field(default_factory=list)
    maps_to: Slug


class Severity(StrictModel):
    """One severity level. The size thresholds let the anomaly pre-labeler suggest a severity from the longest
    distance across a suspect region: the most severe level whose threshold the image's largest region meets
    (``min_size_mm`` when the pixel pitch is known, else ``min_size_px``); none is suggested without thresholds."""

    name: Slug
    name_ko: Text | None = None
    definition: Text | None = None
    min_size_px: Annotated[float, Field(ge=0)] | None = Field(
        None, description="Suggested for regions at least this long, in pixels (used without a pixel pitch)."
    )
    min_size_mm: Annotated[float, Field(ge=0)] | None = Field(
        None, description="Suggested for regions at least this long, in millimetres (used with a pixel pitch)."
    )


def _default_severities() -> list[Severity]:
    return [
        Severity(name="minor", definition="Cosmetic; the part can ship."),
        Severity(name="major", definition="Affects appearance or function; rework or approval needed."),
        Severity(name="critical", definition="Safety or functional failure; the part must be scrapped."),
    ]


class Ontology(StrictModel):
    classes: list[DefectClass] = Field(min_length=2)
    hard_negatives: list[HardNegative] = Field(default_factory=list)
    severities: list[Severity] = Field(
        default_factory=_default_severities, min_length=1, description="Ordered from least to most severe."
    )

    @model_validator(mode="after")
    def _names_are_consistent(self) -> Ontology:
        _require_unique("classes", [c.name for c in self.classes])
        _require_unique("hard_negatives", [h.name for h in self.hard_negatives])
        _require_unique("severities", [s.name for s in self.severities])
        _require_increasing_sizes(self.severities)
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

    def missing_korean(self, what: Literal["names", "prompts"]) -> list[str]:
        """Classes lacking Korean ``names`` (name_ko), or classes and hard negatives lacking ``prompts_ko``."""
        if what == "names":
            return [c.name for c in self.classes if c.name_ko is None]
        lacking = [c.name for c in self.classes if not c.prompts_ko]
        return lacking + [h.name for h in self.hard_negatives if not h.prompts_ko]

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


def _require_increasing_sizes(severities: list[Severity]) -> None:
    """Size thresholds must grow with severity (listed least severe first), each unit on its own."""
    for unit in ("min_size_px", "min_size_mm"):
        previous: tuple[int, float] | None = None
        for index, severity in enumerate(severities):
            value = getattr(severity, unit)
            if value is None:
                continue
            if previous is not None and value <= previous[1]:
                raise FieldProblem(
                    f"severity {severity.name!r} has {unit} {value:g}, not above {severities[previous[0]].name!r}'s "
                    f"{previous[1]:g}; severities are listed least severe first, so their size thresholds must grow",
                    ("severities", index, unit),
                )
            previous = (index, value)


OK_WORDS = frozenset({"ok", "good", "normal", "free", "defect_free", "no_defect", "nodefect", "non_defective", "pass"})
"""Source labels that mean "no defect" in public data sets and factory exports (MVTec AD ``good``, magnetic tile
``MT_Free``, ``OK``/``NG`` folders): a label whose class name is one of these, or ends in ``_<word>``, resolves to
the OK class (``ingest.ok_label``) instead of becoming a class of its own. (Here, not in curation.ontology, so the
prelabel stage can name the OK class without importing ingest's modules; curation.ontology re-exports them.)"""


def is_ok_label(name: str) -> bool:
    """True for a class name that says "no defect" (:data:`OK_WORDS`, also as the last part: ``mt_free``)."""
    return name in OK_WORDS or any(name.endswith(f"_{word}") for word in OK_WORDS)


def ok_class(ontology: Ontology, ingest_params: IngestParams | None = None) -> str | None:
    """The ontology class that means "no defect", or None when there is none (``curation.ontology.ok_class``).

    In order: the class ``ingest.label_map[ingest.ok_label]`` names, else the class named ``ingest.ok_label``, else
    the one class :func:`is_ok_label` accepts (none or several: None).
    """
    names = ontology.class_names
    if ingest_params is not None:
        mapped = ingest_params.label_map.get(ingest_params.ok_label)
        if mapped in names:
            return mapped
        if ingest_params.ok_label in names:
            return ingest_params.ok_label
    candidates = [name for name in names if is_ok_label(name)]
    return candidates[0] if len(candidates) == 1 else None
