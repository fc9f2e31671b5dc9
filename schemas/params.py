"""``params.yaml`` as one typed object: parsed once, and a typo is an error naming the key, line and file."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from curation.errors import ParamsError
from schemas.base import FieldProblem, StrictModel
from schemas.ontology import Ontology
from schemas.params_agreement import AgreementParams
from schemas.params_browse import BrowseParams
from schemas.params_dataset import AugmentParams, ExportParams, ReleaseParams, SplitParams
from schemas.params_prelabel import PrelabelParams
from schemas.params_serve import ServeParams
from schemas.params_studio import LabelStudioParams

Loc = tuple[str | int | float, ...]  # where a value sits in params.yaml: its keys (numbers too) and list indexes

LabelFormat = Literal["folders", "voc", "coco", "yolo", "csv"]

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
    unmapped_labels: Literal["error", "skip", "add"] = Field(
        "error",
        description="Imported labels that map to no ontology class: error (stop, count them per source label), "
        "skip (leave them out, say so) or add (append a class per source label to params.yaml's ontology).",
    )
    masks: Literal["auto", "off"] = Field(
        "auto", description="auto: image + mask pairs become prior labels (README, ingest); off: all files are images."
    )
    ok_label: str = Field("ok", min_length=1, description="Source label of an all-black mask without another class.")
    defect_label: str = Field(
        "defect", min_length=1, description="Source label of mask regions when no other source gives the class."
    )
    label_column: str | None = Field(None, description="Metadata CSV column imported as prior labels.")
    label_threshold: float | None = Field(
        None, description="With label_column: values >= this get defect_label, lower values ok_label."
    )
    labels_box: Literal["xyxy", "xywh"] = Field(
        "xyxy", description="Box columns of a label CSV without a header: x1 y1 x2 y2 or x y w h."
    )
    near_duplicate_min_correlation: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.8,
        description="A pHash candidate pair is a near-duplicate only when the detail of the two images' 32x32 grey "
        "thumbnails (lighting and shading removed) correlates at least this much; see curation/neardup.py.",
    )

    @model_validator(mode="after")
    def _threshold_needs_column(self) -> IngestParams:
        if self.label_threshold is not None and self.label_column is None:
            raise FieldProblem(
                "label_threshold is set but label_column is not; name the metadata column to threshold",
                "label_threshold",
            )
        return self

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

    Validation is strict: a repeated key is an error, an integer or a boolean must be one (``seed: true`` and
    ``train: '0.7'`` are refused; an integer is fine where a number is expected), and paths must be text. Python
    callers building a params model themselves keep pydantic's usual conversions.

    Relative paths are relative to the project root, the folder holding this file (where ``dvc repro`` runs
    commands); see :func:`_anchor_paths`.

    Raises:
        ParamsError: the file is missing, is not YAML, repeats a key, or does not match the schema. The message
            has one line per problem naming the dotted key, its line, the value given and what is expected; for
            unknown keys it lists the keys allowed there.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ParamsError(f"{path}: file not found; run from the project folder or pass --params PATH") from err
    raw, lines = _parse(text, path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (ontology, ingest, ...) at the top level")
    document = json.dumps(_json_ready(raw, (), path, lines), ensure_ascii=False)
    try:
        # JSON input + strict: no bool -> int, str -> number or number -> bool conversions, yet text is still
        # read as a Path and an integer as a float (pydantic's strict mode for JSON allows exactly these).
        params = Params.model_validate_json(document, strict=True)
    except ValidationError as err:
        problems = [_describe(e, path, raw, lines) for e in err.errors()]
        if len(problems) == 1:
            raise ParamsError(f"{path}: {problems[0]}") from None
        raise ParamsError(
            "\n".join([f"{path}: {len(problems)} problem(s):", *(f"  - {p}" for p in problems)])
        ) from None
    return _anchor_paths(params, path.parent)


def _parse(text: str, path: Path) -> tuple[Any, dict[Loc, int]]:
    """The YAML document and the line of every key; a key repeated in one mapping is an error."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines = _key_lines(node, path)
        return loader.construct_document(node) if node is not None else None, lines
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(part for part in (err.context, err.problem) if part)
        raise ParamsError(f"{path}: not valid YAML{where}: {what}") from err
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    finally:
        loader.dispose()


def _json_ready(value: Any, loc: Loc, path: Path, lines: dict[Loc, int]) -> Any:
    """``value`` in JSON's types: mapping keys as text (YOLO class indexes in ``label_map``), dates as ISO text."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                raise ParamsError(f"{path}: {_where(loc, lines)} has the key {key!r}; keys must be text or numbers")
            if str(key) in out:
                raise ParamsError(f"{path}: {_where(loc, lines)} has the key {str(key)!r} twice; keep one")
            out[str(key)] = _json_ready(item, (*loc, key), path, lines)
        return out
    if isinstance(value, list):
        return [_json_ready(item, (*loc, i), path, lines) for i, item in enumerate(value)]
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if value is None or isinstance(value, str | int | float):
        return value
    raise ParamsError(
        f"{path}: {_where(loc, lines)} is {_short(value)}, a YAML {type(value).__name__}; write a list, mapping or text"
    )


def _describe(error: Any, path: Path, raw: dict[str, Any], lines: dict[Loc, int]) -> str:
    """One line for one validation error: the dotted key, its line, the value given and what is expected."""
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(loc[:-1])) or "none"
        return f"unknown key {_where(loc, lines)}; allowed keys there: {allowed}"
    if error["type"] == "missing":
        return f"missing key {_where(loc, lines)}; add it to {path.name}"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblem) and cause.keys:
        given = ", ".join(f"{_where((*loc, *k), lines)} = {_short(_lookup(raw, (*loc, *k)))}" for k in cause.keys)
        return f"{given}: {cause}"
    message = str(cause) if isinstance(cause, ValueError) else error["msg"]
    return f"{_where(loc, lines)} = {_short(error.get('input'))}: {message}{_hint(error)}"


_EXPONENT = re.compile(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+")


def _hint(error: Any) -> str:
    """How to write a number or a boolean that YAML read as something else."""
    value, kind = error.get("input"), error["type"]
    if kind == "bool_type":
        return " (write true or false, without quotes)"
    if kind in {"int_type", "float_type"} and isinstance(value, str):
        exponent = "; YAML reads 1e8 as text, write 1.0e+8" if _EXPONENT.fullmatch(value.strip()) else ""
        return f" (that is text: write it without quotes{exponent})"
    if kind in {"int_type", "float_type"} and isinstance(value, bool):
        return " (true/false is a boolean, not a number)"
    if kind == "int_type" and isinstance(value, float):
        return " (write a whole number without a decimal point)"
    return ""


def _where(loc: Loc, lines: dict[Loc, int]) -> str:
    """``'split.seed' (line 15)``: a dotted key and the line it is on (or its section's line if it is absent)."""
    dotted = ".".join(str(p) for p in loc) or "the top level"
    line = _line_of(loc, lines)
    return f"'{dotted}'" + (f" (line {line})" if line else "")


def _lookup(raw: Any, loc: Loc) -> Any:
    """The value at ``loc`` in the parsed YAML, or None where there is none."""
    for part in loc:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, so a section never fills the screen."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _allowed_keys(parent: Loc) -> list[str]:
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


def _key_lines(
    node: yaml.Node | None, path: Path, prefix: Loc = (), inside: frozenset[int] = frozenset()
) -> dict[Loc, int]:
    """Map each key path to its 1-based line in the YAML text, so errors can point at the line.

    Raises:
        ParamsError: a key appears twice in one mapping (PyYAML would keep the last silently; DVC refuses the file),
            or a value contains itself through an alias.
    """
    found: dict[Loc, int] = {}
    if id(node) in inside:
        dotted = ".".join(str(p) for p in prefix)
        raise ParamsError(f"{path}: '{dotted}' contains itself (a recursive YAML alias); write the value out")
    inside = inside | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    dotted = ".".join(str(p) for p in (*prefix, key.value))
                    first = seen[(key.tag, key.value)]
                    raise ParamsError(f"{path}: duplicate key '{dotted}' at lines {first} and {line}; keep one")
                seen[(key.tag, key.value)] = line
            here = (*prefix, key.value)
            found[here] = line
            found.update(_key_lines(value, path, here, inside))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*prefix, index)
            found[here] = item.start_mark.line + 1
            found.update(_key_lines(item, path, here, inside))
    return found


def _line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


# Text fields naming a model as a hub id or a local folder: a relative folder follows the path rule when it exists
# under the project root (a hub id such as "openai/clip-vit-base-patch32" is left alone).
_MODEL_FOLDERS = (
    ("prelabel", "clip", "model"),
    ("prelabel", "captions", "model"),
    ("browse", "text_model"),
    ("serve", "models", "*", "path"),
)


def _anchor_paths(params: Params, root: Path) -> Params:
    """Make every relative path in ``params`` relative to the project root ``root`` (the folder of params.yaml).

    One rule for every path: ``Path`` fields, and model fields whose value is a folder under ``root``. When ``root``
    is the working directory (always so under ``dvc repro``) nothing changes, so paths written into outputs stay as
    written in params.yaml; from another folder, relative paths become absolute paths under ``root``.
    """
    root = root.resolve()
    if root == Path.cwd().resolve():
        return params
    anchored: Params = _anchor(params, root)  # a model comes back as a copy of its own type
    for loc in _MODEL_FOLDERS:
        anchored = _anchor_model_folder(anchored, loc, root)
    return anchored


def _anchor(value: Any, root: Path) -> Any:
    """``value`` with every relative ``Path`` in it (at any depth) joined onto ``root``."""
    if isinstance(value, Path):
        return value if value.is_absolute() else root / value
    if isinstance(value, StrictModel):
        return value.model_copy(update={name: _anchor(getattr(value, name), root) for name in type(value).model_fields})
    if isinstance(value, list):
        return [_anchor(item, root) for item in value]
    if isinstance(value, dict):
        return {key: _anchor(item, root) for key, item in value.items()}
    return value


def _anchor_model_folder(model: Any, loc: tuple[str, ...], root: Path) -> Any:
    """``model`` with the text field at ``loc`` (``*``: every list item) joined onto ``root`` if that is a folder."""
    head, rest = loc[0], loc[1:]
    if head == "*":
        return [_anchor_model_folder(item, rest, root) for item in model]
    value = getattr(model, head)
    if rest:
        return model.model_copy(update={head: _anchor_model_folder(value, rest, root)})
    if isinstance(value, str) and not Path(value).expanduser().is_absolute() and (root / value).is_dir():
        return model.model_copy(update={head: str(root / value)})
    return model
