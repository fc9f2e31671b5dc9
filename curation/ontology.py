"""The ontology from the data: valid class names for imported source labels, written into ``params.yaml``.

``plan_classes`` decides, for each source label, the class it resolves to (an existing class, a ``label_map``
entry, or a new class named after it); ``write_params_ontology`` appends the new classes to ``ontology.classes``
and the renamings to ``ingest.label_map`` in place. ``params.yaml`` is edited with ruamel.yaml's round-trip mode,
so its comments, key order and quoting are kept; the result is validated before it replaces the file.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from curation.discover import discover
from curation.errors import LabelImportError, ParamsError
from curation.io import atomic_path
from curation.labels import ImageRef, read_prior_labels
from schemas.ontology import OK_WORDS as OK_WORDS  # these three live in schemas (light for prelabel)
from schemas.ontology import is_ok_label as is_ok_label
from schemas.ontology import ok_class as ok_class
from schemas.params import DEFAULT_EXTENSIONS, LabelFormat, load_params

_NOT_NAME = re.compile(r"[^a-z0-9]+")


def class_name_for(source_label: str) -> str | None:
    """A valid class name (``^[a-z][a-z0-9_]*$``) for a source label, or None when it has no Latin letters or digits.

    Accents are dropped, every run of other characters becomes one ``_``, and a name starting with a digit gets a
    ``c_`` prefix: ``"rolled-in_scale"`` -> ``rolled_in_scale``, ``"Surface Scratch"`` -> ``surface_scratch``,
    ``"3"`` -> ``c_3``.
    """
    ascii_text = unicodedata.normalize("NFKD", source_label).encode("ascii", "ignore").decode("ascii")
    name = _NOT_NAME.sub("_", ascii_text.lower()).strip("_")
    if not name:
        return None
    return name if name[0].isalpha() else f"c_{name}"


@dataclass(frozen=True)
class OntologyPlan:
    """What the ontology needs so that every source label resolves to a class.

    Args:
        resolved: Source label -> class, for every source label seen.
        added: New classes as (name, English name), in the order they are appended.
        label_map: New ``ingest.label_map`` entries (source label -> class) for labels that are not class names.
        counts: Source label -> number of imported labels (rows) carrying it.
    """

    resolved: dict[str, str]
    added: list[tuple[str, str]] = field(default_factory=list)
    label_map: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def changes_params(self) -> bool:
        return bool(self.added or self.label_map)


def plan_classes(
    counts: Mapping[str, int],
    *,
    class_names: Sequence[str],
    label_map: Mapping[str, str] | None = None,
    ok_label: str = "ok",
) -> OntologyPlan:
    """Resolve every source label: a ``label_map`` entry, an existing class of that name, the OK class for a label
    that means "no defect" (:func:`is_ok_label`), else a new class.

    Args:
        counts: Source label -> number of labels carrying it.
        class_names: Classes already in the ontology (kept as they are).
        label_map: ``ingest.label_map`` as it is.
        ok_label: The OK class (``ingest.ok_label``); added to the ontology when an OK-like label needs it.

    Raises:
        LabelImportError: some source labels have no Latin letters or digits to name a class after (the message
            lists them and asks for ``ingest.label_map`` entries).
    """
    mapping = dict(label_map or {})
    known = list(class_names)
    resolved: dict[str, str] = {}
    added: list[tuple[str, str]] = []
    new_map: dict[str, str] = {}
    unnamed = []
    for source in sorted(counts):
        if source in mapping:
            resolved[source] = mapping[source]
            continue
        if source in known:
            resolved[source] = source
            continue
        name = class_name_for(source)
        if name is None:
            unnamed.append(source)
            continue
        if name != ok_label and is_ok_label(name):
            name = ok_label
        resolved[source] = name
        if name != source:
            new_map[source] = name
        if name not in known:
            known.append(name)
            added.append((name, "ok" if name == ok_label else source.strip()))
    if unnamed:
        listed = ", ".join(f"{s!r} ({counts[s]})" for s in unnamed)
        raise LabelImportError(
            f"source label(s) {listed} contain no Latin letters or digits to name a class after; map each to a "
            'class in ingest.label_map (e.g. {"스크래치": scratch}) and add that class to ontology.classes'
        )
    return OntologyPlan(resolved, added, new_map, {s: int(counts[s]) for s in sorted(counts)})


def source_label_counts(
    fmt: LabelFormat,
    raw_dir: Path,
    *,
    class_names: Sequence[str],
    labels_path: Path | None = None,
    label_map: Mapping[str, str] | None = None,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> tuple[Counter[str], int]:
    """Source labels found by the ingest label reader for ``fmt``, with the number of labels carrying each.

    Images are not hashed here: the names are what matters, so each file is an image of its own, sized from its
    header (a file PIL cannot open is left out; ingest quarantines it). Masks beside their images (ingest's rules,
    :func:`curation.masks.find_masks`) are left out, so they do not count as images of their folder's class; only
    files that could be masks are decoded for that.

    Returns:
        (source label -> count, number of label issues the reader reported).
    """
    import re

    from PIL import Image, UnidentifiedImageError

    from curation.masks import MASK_NAME, binary_like, find_masks

    candidates = discover(Path(raw_dir), list(extensions)).candidates
    stems = Counter(str(PurePosixPath(rel).with_suffix("")) for rel in candidates)
    rows = []
    for rel in candidates:
        # only files that could be a mask (a shared stem, a mask name or tree) are decoded, to tell masks apart
        maybe_mask = stems[str(PurePosixPath(rel).with_suffix(""))] > 1 or re.search(MASK_NAME, rel) is not None
        try:
            with Image.open(Path(raw_dir) / rel) as image:
                rows.append((rel, *image.size, maybe_mask and binary_like(image)))
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    files = pd.DataFrame(rows, columns=["rel_path", "width", "height", "binary"])
    masks = {mask.rel_path for mask in find_masks(files, [])[0]}  # masks are labels, not images with a class
    refs = {
        rel: ImageRef(rel, int(width), int(height))
        for rel, width, height in zip(files["rel_path"], files["width"], files["height"], strict=True)
        if rel not in masks
    }
    imported = read_prior_labels(
        fmt, Path(raw_dir), refs, class_names=class_names, labels_path=labels_path, label_map=label_map
    )
    return Counter(imported.labels["source_label"].astype(str)), len(imported.issues)


def write_params_ontology(params_path: Path, plan: OntologyPlan, *, replace: bool = False) -> list[str]:
    """Append ``plan.added`` to ``ontology.classes`` and ``plan.label_map`` to ``ingest.label_map`` in place.

    Comments and layout are kept; nothing is written when nothing changes (so a rerun leaves the file's bytes as
    they are). The new file is validated as params before it atomically replaces the old one.

    Args:
        params_path: The params.yaml to edit.
        plan: From :func:`plan_classes`.
        replace: Also drop the classes no source label resolves to, with their hard negatives and label_map entries.

    Returns:
        The classes dropped (with ``replace``); the file was rewritten when this is non-empty or the plan adds
        anything (``plan.changes_params``).

    Raises:
        ParamsError: the file cannot be read or parsed, or the result is not valid params (nothing is written).
    """
    from ruamel.yaml.comments import CommentedMap

    params_path = Path(params_path)
    yaml = _round_trip_yaml()
    document, header = _load_document(params_path, yaml)
    if document.get("ontology") is None:
        document["ontology"] = CommentedMap()
    ontology = document["ontology"]
    if ontology.get("classes") is None:
        ontology["classes"] = []
    dropped = _drop_unused(document, set(plan.resolved.values())) if replace else []
    if not (plan.changes_params or dropped):
        return []
    for name, english in plan.added:
        ontology["classes"].append(CommentedMap(name=name, name_en=english))
    if plan.label_map:
        if document.get("ingest") is None:
            document["ingest"] = CommentedMap()
        ingest = document["ingest"]
        if ingest.get("label_map") is None:
            ingest["label_map"] = CommentedMap()
        for source, name in plan.label_map.items():
            ingest["label_map"][source] = name
    out = io.StringIO(header)
    out.seek(len(header))
    yaml.dump(document, out)
    with atomic_path(params_path) as tmp:
        tmp.write_text(out.getvalue(), encoding="utf-8")
        try:
            load_params(tmp)
        except ParamsError as err:
            problems = str(err).replace(str(tmp), str(params_path))  # name the user's file, not the temporary one
            raise ParamsError(
                f"{params_path} was left unchanged: with the new classes it would not be valid: {problems}"
            ) from None
    return dropped


def _drop_unused(document: dict, used: set[str]) -> list[str]:
    """Remove classes not in ``used``, hard negatives mapping to them and label_map entries naming them."""
    ontology = document["ontology"]
    classes = ontology["classes"]
    dropped = [c.get("name") for c in classes if c.get("name") not in used]
    for index in reversed(range(len(classes))):  # in place, so the list keeps its comments and layout
        if classes[index].get("name") not in used:
            del classes[index]
    negatives = ontology.get("hard_negatives") or []
    for index in reversed(range(len(negatives))):
        if negatives[index].get("maps_to") not in used:
            del negatives[index]
    label_map = (document.get("ingest") or {}).get("label_map") or {}
    for source in [s for s, name in label_map.items() if name not in used]:
        del label_map[source]
    return dropped


def read_params_document(params_path: Path) -> dict:
    """``params.yaml`` as a plain mapping, without validating it (``ontology init`` may start with no classes)."""
    return _load_document(Path(params_path), _round_trip_yaml())[0]


def _round_trip_yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip mode: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    yaml.indent(mapping=2, sequence=4, offset=2)  # the layout of the project's params.yaml
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _load_document(params_path: Path, yaml) -> tuple[dict, str]:
    """The YAML document, and the file's text when it holds no mapping (comments only), to keep above it."""
    from ruamel.yaml import YAMLError

    try:
        text = params_path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ParamsError(f"{params_path}: file not found; run from the project folder or pass --params PATH") from err
    try:
        document = yaml.load(text)
    except YAMLError as err:
        raise ParamsError(f"{params_path}: not valid YAML: {err}") from err
    if document is None:
        from ruamel.yaml.comments import CommentedMap

        return CommentedMap(), text.rstrip("\n") + "\n" if text.strip() else ""
    if not isinstance(document, dict):
        raise ParamsError(f"{params_path}: expected a mapping of sections (ontology, ingest, ...) at the top level")
    return document, ""
