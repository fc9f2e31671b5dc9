"""``params.yaml`` as one typed object: parsed once, and a typo is an error naming the key, line and file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from curation.errors import ParamsError
from schemas.base import StrictModel
from schemas.ontology import Ontology
from schemas.params_agreement import AgreementParams
from schemas.params_browse import BrowseParams
from schemas.params_dataset import AugmentParams, ExportParams, ReleaseParams, SplitParams
from schemas.params_prelabel import PrelabelParams
from schemas.params_serve import ServeParams
from schemas.params_studio import LabelStudioParams

LabelFormat = Literal["folders", "voc", "coco", "yolo"]

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class IngestParams(StrictModel):
    """Knobs of the ingest stage (paths here are what ``dvc.yaml`` passes to ``curation ingest``)."""

    raw_dir: Path = Path("data/sample/images")
    metadata: Path | None = Path("data/sample/metadata.csv")
    metadata_key: str = Field("file", min_length=1, description="Metadata column holding the file path or name.")
    labels: LabelFormat | None = None
    labels_path: Path | None = Field(None, description="VOC/YOLO folder or COCO JSON file; defaults to raw_dir.")
    label_map: dict[str, str] = Field(
        default_factory=dict, description="Source label -> ontology class, for imported prior labels."
    )
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS), min_length=1)
    max_pixels: Annotated[int, Field(gt=0)] = 100_000_000
    phash_threshold: Annotated[int, Field(ge=0, le=16)] = 6
    workers: Annotated[int, Field(ge=0)] = 0
    near_duplicate_min_correlation: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.8,
        description="A pHash candidate pair is a near-duplicate only when the detail of the two images' 32x32 grey "
        "thumbnails (lighting and shading removed) correlates at least this much; see curation/neardup.py.",
    )

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        return sorted({("." + e.lower().lstrip(".")) for e in value})


class Params(StrictModel):
    """Everything in ``params.yaml``. Secrets (tokens, passwords) never live here: they come from the environment."""

    ontology: Ontology
    ingest: IngestParams = IngestParams()
    prelabel: PrelabelParams = PrelabelParams()
    labelstudio: LabelStudioParams = LabelStudioParams()
    agreement: AgreementParams = AgreementParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    export: ExportParams = ExportParams()
    release: ReleaseParams = ReleaseParams()
    browse: BrowseParams = BrowseParams()
    serve: ServeParams = ServeParams()


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises:
        ParamsError: the file is missing, is not YAML, or does not match the schema. The message names every
            offending key with its line, and for unknown keys lists the keys allowed there.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ParamsError(f"{path}: file not found; run from the project folder or pass --params PATH") from err
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (ontology, ingest, ...) at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e, path, lines) for e in err.errors()]
        raise ParamsError("\n".join([f"{path}: {len(problems)} problem(s):", *problems])) from None


def _describe(error: Any, path: Path, lines: dict[tuple, int]) -> str:
    loc = tuple(error["loc"])
    dotted = ".".join(str(p) for p in loc)
    where = _line_of(loc, lines)
    at = f" (line {where})" if where else ""
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1])) or "none"
        return f"  - unknown key '{dotted}'{at}; allowed keys there: {allowed}"
    if error["type"] == "missing":
        return f"  - missing key '{dotted}'{at}; add it to {path.name}"
    return f"  - '{dotted}'{at}: {error['msg']} (got {error.get('input')!r})"


def _allowed_keys(parent: tuple) -> list[str]:
    """Field names of the model found by walking ``parent`` through Params (list indexes are skipped)."""
    model: Any = Params
    for part in parent:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        args = getattr(model, "__args__", ())
        if args:  # list[Model] / Model | None
            model = next((a for a in args if hasattr(a, "model_fields")), model)
    return sorted(getattr(model, "model_fields", {}))


def _key_lines(node: yaml.Node | None, prefix: tuple = ()) -> dict[tuple, int]:
    """Map each key path to its 1-based line in the YAML text, so errors can point at the line."""
    found: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = (*prefix, key.value)
            found[here] = key.start_mark.line + 1
            found.update(_key_lines(value, here))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*prefix, index)
            found[here] = item.start_mark.line + 1
            found.update(_key_lines(item, here))
    return found


def _line_of(loc: tuple, lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
