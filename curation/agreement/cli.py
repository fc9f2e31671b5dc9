"""``curation agreement ANNOTATIONS OUT_DIR``: the typer command (registered by ``curation.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from curation.console import ParamsOption, console, load_or_exit, print_report, user_errors
from curation.progress import progress


def agreement_command(
    annotations: Annotated[
        Path,
        typer.Argument(
            help="Pull output folder or annotations.parquet, or a CSV/Parquet with image_id, annotator, label."
        ),
    ],
    out_dir: Annotated[
        Path, typer.Argument(help="Folder for agreement.json, consensus.parquet, disputes.csv, report.html ...")
    ],
    predictions: Annotated[
        Path | None,
        typer.Option(help="Pre-labels (prelabel's predictions.parquet) to score against the consensus."),
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Inter-annotator agreement, consensus labels, disputes, and pre-label quality against consensus."""
    from curation.agreement.stage import agreement, provenance, read_input, write_agreement
    from schemas.records import Annotation, Prediction

    params = load_or_exit(params_path)
    settings = params.agreement
    ontology = params.ontology
    with user_errors():
        frame = read_input(annotations, Annotation, "annotations.parquet")
        predicted = read_input(predictions, Prediction, "predictions.parquet") if predictions is not None else None
        with progress("bootstrap", console) as reporter:
            result = agreement(
                frame,
                classes=ontology.class_names,
                severities=ontology.severity_names,
                settings=settings,
                predictions=predicted,
                source=str(annotations),
                on_start=reporter.start,
                on_progress=reporter.advance,
            )
        result.metrics["provenance"] = provenance(annotations, settings, ontology.class_names, ontology.severity_names)
        write_agreement(result, out_dir)
    for message in result.messages:
        console.print(f"[yellow]note:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if result.plot_notes:
        console.print(
            f"[yellow]note:[/] nothing to draw, so no DVC plot data for {escape(', '.join(result.plot_notes))} "
            "(why: plots_not_written in agreement.json, and the report)",
            highlight=False,
            soft_wrap=True,
        )
    label = result.metrics.get("label", {})
    print_report(
        "agreement",
        {
            "annotations": result.metrics["n_annotations"],
            "images": result.metrics["n_images"],
            "annotators": result.metrics["n_annotators"],
            "shared images": label.get("n_images", 0),
            "Krippendorff's alpha": _show(label, "krippendorff_alpha"),
            "Gwet's AC1": _show(label, "gwet_ac1"),
            "disputed": result.metrics["consensus"]["n_disputed"],
            "unverified (one reviewer)": result.metrics["consensus"]["n_single"],
        },
    )
    console.print(
        f"outputs in {out_dir}/ (agreement.json, consensus.parquet, disputes.csv, report.html ...)", markup=False
    )


def _show(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    if value is not None:
        return f"{value:.3f}"
    if block.get("status") == "insufficient":
        return f"insufficient ({block.get('n_images', 0)} shared images < {block.get('min_shared_images')})"
    return "undefined"
