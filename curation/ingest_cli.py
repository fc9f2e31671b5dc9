"""The ``ingest`` command: calls :func:`curation.ingest.ingest` and writes its outputs.

Registered on the ``curation`` app by ``curation.cli``. Heavy imports happen inside the command, so
``curation --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curation.console import ParamsOption, console, load_or_exit, print_report, user_errors
from curation.progress import progress
from schemas.params import LabelFormat


def ingest_command(
    raw_dir: Annotated[Path, typer.Argument(help="Folder of raw images, walked recursively; never modified.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for manifest.parquet, quarantine.csv, ingest.json ...")],
    metadata: Annotated[
        Path | None, typer.Option(help="Metadata CSV joined by file path/name (default: ingest.metadata).")
    ] = None,
    labels: Annotated[
        LabelFormat | None, typer.Option(help="Import prior labels: folders, voc, coco, yolo or csv.")
    ] = None,
    labels_path: Annotated[
        Path | None, typer.Option(help="VOC/YOLO folder, COCO JSON or label CSV (default: RAW_DIR).")
    ] = None,
    no_metadata: Annotated[bool, typer.Option("--no-metadata", help="Ignore ingest.metadata from params.")] = False,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding processes (0 = one per core).")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Validate, hash and de-duplicate raw images; quarantine bad files with a reason."""
    from curation.ingest import ingest, write_ingest
    from curation.ontology import write_params_ontology

    params = load_or_exit(params_path)
    overrides = {
        "metadata": None if no_metadata else (metadata or params.ingest.metadata),
        "labels": labels or params.ingest.labels,
        "labels_path": labels_path or params.ingest.labels_path,
        "workers": params.ingest.workers if workers is None else workers,
    }
    settings = params.ingest.model_copy(update=overrides)
    with user_errors(), progress("ingest", console) as reporter:
        result = ingest(
            raw_dir,
            settings,
            class_names=params.ontology.class_names,
            on_start=reporter.start,
            on_progress=reporter.advance,
        )
        plan = result.ontology_plan
        if settings.unmapped_labels == "add" and plan is not None and plan.changes_params:
            write_params_ontology(params_path, plan)
            added = ", ".join(f"{name} ({english!r})" for name, english in plan.added) or "none"
            mapped = ", ".join(f"{source!r} -> {name}" for source, name in plan.label_map.items()) or "none"
            console.print(
                f"ingest.unmapped_labels: add: wrote to {params_path}: new classes {added}; label_map {mapped}. "
                "Review them there (definitions, Korean names, prompts are optional)",
                markup=False,
                soft_wrap=True,
            )
        write_ingest(result, out_dir)
    print_report("ingest", result.report)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(
        f"outputs in {out_dir}/ (manifest.parquet, quarantine.csv, issues.csv, masks.csv, ingest.json)", markup=False
    )
