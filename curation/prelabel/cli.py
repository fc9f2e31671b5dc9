"""``curation prelabel MANIFEST OUT_DIR``: the thin command over :func:`curation.prelabel.stage.prelabel`.

Registered by the main app with ``app.command("prelabel")(prelabel_command)``. Heavy modules (torch,
transformers, scikit-learn) are imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.console import ParamsOption, console, load_or_exit, print_notes, print_report, user_errors
from curation.progress import progress


def prelabel_command(
    manifest: Annotated[Path, typer.Argument(help="ingest's manifest.parquet.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for predictions.parquet, embeddings.parquet, prelabel.json.")],
    force: Annotated[
        bool, typer.Option("--force", help="Recompute every embedding and caption (ignore the cache).")
    ] = False,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Human labels for few-shot (Parquet/CSV: label + image_id|rel_path|file), e.g. the agreement "
            "stage's consensus.parquet. Default: prior_labels.parquet beside the manifest, if present."
        ),
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Pre-label images: defect-vs-OK anomaly scores with maps and regions (offline, no labels needed), CLIP
    zero-shot scores, few-shot refinement from human labels, BLIP captions."""

    from curation.io import check_published
    from curation.prelabel.errors import ManifestError
    from curation.prelabel.fewshot import default_labels_path, read_labels
    from curation.prelabel.stage import REQUIRED_COLUMNS, prelabel, write_prelabel
    from curation.tables import read_table
    from schemas.records import ImageRecord

    params = load_or_exit(params_path)
    settings = params.prelabel
    with user_errors():
        cache_dir = settings.cache_dir  # relative paths in params are from the project root already
        frame = read_table(
            manifest,
            ImageRecord,
            columns=REQUIRED_COLUMNS,
            optional="all",
            missing_fix="run ingest first (dvc repro ingest)",
            fix="pass ingest's manifest.parquet (re-run ingest if it is damaged)",
            error=ManifestError,
        )
        labels_path = labels if labels is not None else default_labels_path(manifest)
        label_set = None
        if labels_path is not None and (settings.fewshot.enabled or settings.anomaly.enabled):
            label_set = read_labels(check_published(labels_path), frame, params.ontology.class_names)
        with progress("prelabel", console) as reporter:
            result = prelabel(
                frame,
                settings,
                params.ontology,
                cache_dir=cache_dir,
                labels=label_set,
                ingest=params.ingest,
                force=force,
                on_start=reporter.start,
                on_progress=reporter.advance,
            )
            write_prelabel(result, out_dir)
    print_notes(result.notes, seen_dir=cache_dir, details=f"{out_dir}/prelabel.json (notes)")
    shown = {k: v for k, v in result.report.items() if k != "notes"}
    print_report("prelabel", {**shown, "cache": result.cache_stats})
    console.print(
        f"outputs in {out_dir}/ (predictions.parquet, embeddings.parquet, prelabel.json, "
        f"confidence_histogram.csv/png, anomaly_maps/); cache in {cache_dir}",
        markup=False,
    )


def refine_command(
    manifest: Annotated[Path, typer.Argument(help="ingest's manifest.parquet.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the refined predictions (the DVC stage: data/refine).")],
    labels: Annotated[
        Path,
        typer.Option(
            help="Reviewed labels (Parquet/CSV: label + image_id|rel_path|file): the agreement stage's "
            "consensus.parquet."
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Recompute every embedding and caption (ignore the cache).")
    ] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """The DVC stage `refine`: pre-label again, few-shot from the reviewed labels (same as `prelabel --labels`)."""
    prelabel_command(manifest, out_dir, force=force, labels=labels, params_path=params_path)
