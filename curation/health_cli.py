"""``curation health MANIFEST OUT_DIR``: the dataset health page (registered by ``curation.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.console import console, user_errors


def health_command(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST", help="ingest's manifest.parquet.")],
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="Folder for health.html, health.json, metrics.json.")
    ],
    quarantine: Annotated[Path | None, typer.Option(metavar="FILE", help="ingest's quarantine.csv.")] = None,
    prior_labels: Annotated[Path | None, typer.Option(metavar="FILE", help="ingest's prior_labels.parquet.")] = None,
    splits: Annotated[Path | None, typer.Option(metavar="FILE", help="split's splits.parquet.")] = None,
    consensus: Annotated[Path | None, typer.Option(metavar="FILE", help="agreement's consensus.parquet.")] = None,
    predictions: Annotated[
        Path | None, typer.Option(metavar="FILE", help="The refined pre-labels (refine's predictions.parquet).")
    ] = None,
    agreement: Annotated[Path | None, typer.Option(metavar="FILE", help="agreement's agreement.json.")] = None,
    export_report: Annotated[
        Path | None, typer.Option("--export", metavar="FILE", help="export's export.json (the dataset version).")
    ] = None,
) -> None:
    """One HTML page on the dataset's health: balance, sizes, duplicates, quarantine, label sources, unverified labels,
    pre-label quality. A missing optional input leaves its section with the reason."""
    from curation.health import health, read_inputs, write_health
    from curation.io import check_published
    from curation.prelabel.errors import ManifestError

    with user_errors():
        if not manifest.is_file():
            raise ManifestError(f"{manifest}: not found; run ingest first (dvc repro ingest)")
        check_published(manifest)
        optional = {
            "quarantine": quarantine,
            "prior_labels": prior_labels,
            "splits": splits,
            "consensus": consensus,
            "predictions": predictions,
            "agreement": agreement,
            "export": export_report,
        }
        result = health(read_inputs(manifest, optional))
        write_health(result, out_dir)
    for name, why in result.report["inputs_missing"].items():
        console.print(f"[yellow]note:[/] {name}: {why}", highlight=False, soft_wrap=True, markup=True)
    console.print(f"dataset health page: {out_dir}/health.html", markup=False)
