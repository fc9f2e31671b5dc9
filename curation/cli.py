"""The ``curation`` command line: one typer app over the stage functions.

Each command loads params, resolves paths, calls a stage's core function and writes its outputs. A
:class:`CurationError` becomes a one-line message and exit code 1; a traceback means a bug.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curation.agreement.cli import agreement_command
from curation.browse.cli import browse_command, database_command, fiftyone_command, search_command
from curation.console import ParamsOption, console, load_or_exit, print_report, user_errors
from curation.dataset_cli import augment_command, export_command, release_command, split_command
from curation.health_cli import health_command
from curation.ontology_cli import ontology_app
from curation.prelabel.cli import prelabel_command
from curation.progress import progress
from curation.serve.cli import connect_backend_command, serve_command
from curation.studio.cli import pull_command, push_command, simulate_command, studio_app
from curation.usage import readable_help
from schemas.params import LabelFormat

app = typer.Typer(
    name="curation",
    help="Turn a folder of raw defect images into a reviewed, versioned training dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("sample-data")
def sample_data_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/, metadata.csv and truth.csv into.")],
    n_per_class: Annotated[int, typer.Option(min=1, help="Images per class.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 0,
) -> None:
    """Generate the built-in sample data: synthetic defects on metal, metadata, and a few broken files."""
    from curation.sample_data import generate_sample

    with user_errors():
        summary = generate_sample(out_dir, n_per_class=n_per_class, seed=seed)
    console.print(
        f"wrote {summary.n_images} images and {summary.n_broken} deliberately broken files to {out_dir}/images",
        markup=False,
    )


@app.command("ingest")
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


# The stages in pipeline order (each command lives in its stage's module).
app.command("prelabel")(prelabel_command)
app.add_typer(studio_app, name="studio")
app.command("push")(push_command)
app.command("simulate")(simulate_command)
app.command("pull")(pull_command)
app.command("agreement")(agreement_command)
app.command("split")(split_command)
app.command("augment")(augment_command)
app.command("export")(export_command)
app.command("fiftyone")(fiftyone_command)
app.command("browse")(browse_command)
app.command("search")(search_command)
app.command("fiftyone-db")(database_command)
app.command("release")(release_command)
app.command("serve")(serve_command)
studio_app.command("connect-backend")(connect_backend_command)
app.add_typer(ontology_app, name="ontology")
app.command("health")(health_command)
readable_help(app)

if __name__ == "__main__":
    app()
