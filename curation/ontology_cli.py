"""``curation ontology init``: the ontology section of params.yaml from the labels that came with the data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from curation.console import ParamsOption, console, user_errors
from schemas.params import LabelFormat

ontology_app = typer.Typer(help="The class list (ontology) in params.yaml.", no_args_is_help=True)


@ontology_app.command("init")
def init_command(
    raw_dir: Annotated[
        Path | None, typer.Argument(help="Folder of raw images with their labels (default: ingest.raw_dir).")
    ] = None,
    labels: Annotated[
        LabelFormat | None, typer.Option(help="Label format, as for `curation ingest` (default: ingest.labels).")
    ] = None,
    labels_path: Annotated[Path | None, typer.Option(help="VOC/YOLO folder or COCO JSON (default: RAW_DIR).")] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Keep only the classes the data's labels resolve to: drop the others, their hard negatives and "
            "label_map entries.",
        ),
    ] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Add a class per source label found in the data to params.yaml, with an ingest.label_map entry for labels
    that are not valid names (rolled-in_scale -> rolled_in_scale). Existing classes are kept unless --replace.
    Korean names, definitions and prompts are optional: the features that need them say so.
    """
    from pydantic import ValidationError

    from curation.errors import LabelImportError, ParamsError
    from curation.ontology import plan_classes, read_params_document, source_label_counts, write_params_ontology
    from schemas.params import IngestParams

    with user_errors():
        document = read_params_document(params_path)
        try:
            ingest = IngestParams.model_validate(dict(document.get("ingest") or {}))
        except ValidationError as err:
            raise ParamsError(f"{params_path}: the ingest section is not valid; fix it first: {err}") from None
        raw_dir = raw_dir or ingest.raw_dir
        fmt = labels or ingest.labels
        if fmt is None:
            raise ParamsError("no label format: pass --labels (folders, voc, coco, yolo) or set ingest.labels")
        classes = (document.get("ontology") or {}).get("classes") or []
        class_names = [str(c.get("name")) for c in classes if isinstance(c, dict) and c.get("name")]
        counts, n_issues = source_label_counts(
            fmt,
            raw_dir,
            class_names=class_names,
            labels_path=labels_path or ingest.labels_path,
            label_map=ingest.label_map,
            extensions=ingest.extensions,
        )
        if not counts:
            raise LabelImportError(
                f"no {fmt} labels found under {raw_dir}; check the folder, --labels and --labels-path"
            )
        plan = plan_classes(counts, class_names=class_names, label_map=ingest.label_map, ok_label=ingest.ok_label)
        dropped = write_params_ontology(params_path, plan, replace=replace)
    _print_plan(plan, set(class_names))
    if plan.changes_params or dropped:
        console.print(
            f"wrote {len(plan.added)} new class(es) and {len(plan.label_map)} label_map entr(ies) to {params_path}"
            + (f"; dropped class(es) {', '.join(dropped)} (--replace)" if dropped else ""),
            markup=False,
        )
    else:
        console.print(f"{params_path} unchanged: every source label already maps to a class", markup=False)
    if n_issues:
        console.print(
            f"[yellow]note:[/] {n_issues} label(s) could not be read; `curation ingest` lists them in issues.csv",
            highlight=False,
        )
    _korean_note(params_path)


def _print_plan(plan, existing: set[str]) -> None:
    table = Table(title="ontology init (source label -> class)")
    for column in ("source label", "labels", "class", ""):
        table.add_column(column, justify="right" if column == "labels" else "left", overflow="fold")
    added = {name for name, _ in plan.added}
    for source, count in plan.counts.items():
        name = plan.resolved[source]
        status = "new" if name in added else ("existing" if name in existing else "")
        table.add_row(escape(source), str(count), escape(name), status)
    console.print(table)


def _korean_note(params_path: Path) -> None:
    """Say which features will ask for Korean names or prompts that the ontology lacks (nothing fails here)."""
    from curation.errors import CurationError
    from curation.prelabel.captions import require_korean_descriptions
    from curation.prelabel.prompts import build_text_classes
    from schemas.params import load_params

    try:
        params = load_params(params_path)
        require_korean_descriptions(
            params.ontology, params.prelabel.description, params.labelstudio.description_language
        )
        build_text_classes(params.ontology, params.prelabel.clip)
    except CurationError as err:
        console.print(f"[yellow]note:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
