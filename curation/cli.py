"""The ``curation`` command line: one typer app over the stage functions.

Each command loads params, resolves paths, calls a stage's core function and writes its outputs. A
:class:`CurationError` becomes a one-line message and exit code 1; a traceback means a bug.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from curation.agreement.cli import agreement_command
from curation.errors import CurationError
from curation.progress import progress
from schemas.params import LabelFormat, Params, load_params

app = typer.Typer(
    name="curation",
    help="Turn a folder of raw defect images into a reviewed, versioned training dataset.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ParamsOption = Annotated[
    Path, typer.Option("--params", help="The pipeline's params.yaml (ontology and every stage's knobs).")
]


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a CurationError into a clear message and exit code 1, without a traceback."""
    try:
        yield
    except CurationError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _load(params_path: Path) -> Params:
    with user_errors():
        return load_params(params_path)


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
        f"wrote {summary.n_images} images and {summary.n_broken} deliberately broken files to {out_dir}/images"
    )


@app.command("ingest")
def ingest_command(
    raw_dir: Annotated[Path, typer.Argument(help="Folder of raw images, walked recursively; never modified.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for manifest.parquet, quarantine.csv, ingest.json ...")],
    metadata: Annotated[
        Path | None, typer.Option(help="Metadata CSV joined by file path/name (default: ingest.metadata).")
    ] = None,
    labels: Annotated[LabelFormat | None, typer.Option(help="Import prior labels: folders, voc, coco or yolo.")] = None,
    labels_path: Annotated[Path | None, typer.Option(help="VOC/YOLO folder or COCO JSON (default: RAW_DIR).")] = None,
    no_metadata: Annotated[bool, typer.Option("--no-metadata", help="Ignore ingest.metadata from params.")] = False,
    workers: Annotated[int | None, typer.Option(min=0, help="Decoding processes (0 = one per core).")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Validate, hash and de-duplicate raw images; quarantine bad files with a reason."""
    from curation.ingest import ingest, write_ingest

    params = _load(params_path)
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
        write_ingest(result, out_dir)
    print_report("ingest", result.report)
    console.print(f"outputs in {out_dir}/ (manifest.parquet, quarantine.csv, issues.csv, ingest.json)")


def print_report(title: str, report: dict) -> None:
    table = Table(title=title, show_header=False)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
        table.add_row(key, str(value))
    console.print(table)


_print_report = print_report  # old name, still used by stage modules being integrated


def _not_yet(stage: str, issue: int) -> NoReturn:
    console.print(
        f"[bold red]error:[/] the {stage} stage is declared in dvc.yaml but not implemented yet (issue {issue}); "
        "`dvc repro ingest` runs the stages that exist",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command("prelabel")
def prelabel_command(manifest: Path, out_dir: Path) -> None:
    """Pre-label images with CLIP zero-shot scores and BLIP captions (not implemented yet)."""
    _not_yet("prelabel", 3)


@app.command("push")
def push_command(predictions: Path, out_dir: Path) -> None:
    """Push images and pre-annotations to Label Studio (not implemented yet)."""
    _not_yet("push", 4)


@app.command("pull")
def pull_command(out_dir: Path) -> None:
    """Pull reviews back from Label Studio (not implemented yet)."""
    _not_yet("pull", 4)


@app.command("split")
def split_command(out_dir: Path) -> None:
    """Stratified, leak-free 7:2:1 split (not implemented yet)."""
    _not_yet("split", 6)


@app.command("augment")
def augment_command(out_dir: Path) -> None:
    """Augment the train split with albumentations (not implemented yet)."""
    _not_yet("augment", 6)


@app.command("export")
def export_command(out_dir: Path) -> None:
    """Export COCO JSON and CSV per split (not implemented yet)."""
    _not_yet("export", 6)


@app.command("fiftyone")
def fiftyone_command(out_dir: Path) -> None:
    """Build the FiftyOne dataset of this version (not implemented yet)."""
    _not_yet("fiftyone", 7)


app.command("agreement")(agreement_command)

if __name__ == "__main__":
    app()
