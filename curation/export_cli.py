"""The ``export`` command: reads the stage's inputs, calls :func:`curation.export.export` and writes its outputs.

Registered on the ``curation`` app by ``curation.cli``. Heavy imports (pandas, pycocotools) happen inside the
command, so ``curation --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from curation.console import ParamsOption, console, load_or_exit, user_errors
from schemas.params_dataset import ExportParams


def export_command(
    splits: Annotated[Path, typer.Argument(help="splits.parquet from the split stage.")],
    manifest: Annotated[Path, typer.Argument(help="manifest.parquet from ingest.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for <split>/labels.json, labels.csv, data/, export.json.")],
    augment_dir: Annotated[
        Path, typer.Option("--augmented", help="Augment stage folder; used when it holds augmented.parquet.")
    ] = Path("data/augment"),
    predictions: Annotated[
        Path, typer.Option(help="predictions.parquet (descriptions, model versions); used when it exists.")
    ] = Path("data/prelabel/predictions.parquet"),
    link: Annotated[
        Literal["copy", "hardlink", "symlink"] | None, typer.Option(help="Place images by copy, hardlink or symlink.")
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Export even when no image has a label (otherwise an error).")
    ] = False,
) -> None:
    """Export COCO JSON and CSV per split; images keep their exact bytes."""
    from curation.export import MANIFEST_COLUMNS, MARKER, PREDICTION_COLUMNS, export, provenance_record
    from curation.io import publish
    from curation.progress import progress
    from curation.tables import read_table
    from schemas.records import AugmentedRecord, ImageRecord, Prediction, SplitRow

    params = load_or_exit(params_path)
    settings: ExportParams = params.export
    if link is not None:
        settings = settings.model_copy(update={"link": link})
    augmented_file = augment_dir / "augmented.parquet"
    with user_errors():
        frame = read_table(
            splits,
            SplitRow,
            columns=["image_id", "split", "label"],
            optional="all",
            missing_fix="run `curation split` first",
        )
        images = read_table(
            manifest, ImageRecord, columns=MANIFEST_COLUMNS, extra=True, missing_fix="run `curation ingest` first"
        )
        augmented = read_table(augmented_file, AugmentedRecord) if augmented_file.is_file() else None
        preds = (
            read_table(predictions, Prediction, columns=["image_id"], optional=PREDICTION_COLUMNS)
            if predictions.is_file()
            else None
        )
        provenance = provenance_record(params, (manifest, splits, augmented_file, predictions))
        with publish(out_dir, owner=MARKER) as staging, progress("export", console) as reporter:
            result = export(
                frame,
                images,
                staging,
                settings,
                class_names=params.ontology.class_names,
                augmented=augmented,
                augment_dir=augment_dir,
                predictions=preds,
                provenance=provenance,
                on_start=reporter.start,
                on_progress=reporter.advance,
                allow_empty=allow_empty,
            )
    counts = ", ".join(f"{k} {v['images']}" for k, v in result.report["splits"].items())
    console.print(f"dataset version {result.version}: {counts} images; every labels.json loads in pycocotools")
    left_out = result.report["unlabeled_left_out"]
    if left_out:
        console.print(
            f"[yellow]note:[/] left out {left_out} unlabelled image(s) (export.include_unlabeled: false)",
            highlight=False,
        )
    console.print(
        f"outputs in {out_dir}/ (<split>/labels.json, labels.csv, data/; export.json, provenance.json)", markup=False
    )
