"""The ``split`` command: reads the stage's inputs, calls :func:`curation.split.split` and writes its outputs.

Registered on the ``curation`` app by ``curation.cli``. Heavy imports (pandas) happen inside the command, so
``curation --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curation.console import ParamsOption, console, load_or_exit, user_errors
from curation.errors import InputError
from schemas.params_dataset import SplitParams


def split_command(
    manifest: Annotated[Path, typer.Argument(help="manifest.parquet from ingest.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for splits.parquet, split.json, class_counts.csv.")],
    consensus: Annotated[
        Path, typer.Option(help="consensus.parquet from agreement; used when the file exists.")
    ] = Path("data/agreement/consensus.parquet"),
    prior_labels: Annotated[
        Path, typer.Option(help="prior_labels.parquet from ingest; used when there is no consensus file.")
    ] = Path("data/ingest/prior_labels.parquet"),
    previous: Annotated[
        Path | None, typer.Option(help="splits.parquet of the last release to pin (default: split.previous).")
    ] = None,
    no_previous: Annotated[bool, typer.Option("--no-previous", help="Pin nothing: cut everything afresh.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
    allow_empty: Annotated[
        bool, typer.Option("--allow-empty", help="Split even when no image has a label (otherwise an error).")
    ] = False,
) -> None:
    """Stratified, grouped 7:2:1 split that keeps earlier assignments as the dataset grows."""
    from curation.split import (
        CONSENSUS_COLUMNS,
        PRIOR_COLUMNS,
        image_labels,
        label_source,
        read_previous,
        split,
        write_split,
    )
    from curation.tables import read_table
    from schemas.records import Consensus, ImageRecord, PriorLabel

    params = load_or_exit(params_path)
    settings: SplitParams = params.split
    grouping = list(dict.fromkeys(["dup_group", *settings.group_by]))
    with user_errors():
        # only the columns the split reads: image paths, hashes and copies lists stay on disk
        frame = read_table(
            manifest, ImageRecord, columns=["image_id"], optional=grouping, missing_fix="run `curation ingest` first"
        )
        labels_consensus = (
            read_table(consensus, Consensus, columns=["image_id", "label"], optional=CONSENSUS_COLUMNS)
            if consensus.is_file()
            else None
        )
        labels_prior = (
            read_table(prior_labels, PriorLabel, columns=["image_id", "label"], optional=PRIOR_COLUMNS)
            if prior_labels.is_file()
            else None
        )
        source = label_source(consensus, labels_consensus, prior_labels, labels_prior)
        labels = image_labels(
            frame, consensus=labels_consensus, prior=labels_prior, class_names=params.ontology.class_names
        )
        pinned_from = None if no_previous else (previous or settings.previous)
        if previous is not None and not previous.is_file():
            raise InputError(f"{previous}: file not found; drop --previous or give the last release's splits")
        result = split(frame, labels, settings, previous=read_previous(pinned_from), allow_empty=allow_empty)
        write_split(result, out_dir)
    console.print(f"labels from {source}; pinned {result.report['pinned']} image(s) from {pinned_from}", markup=False)
    _print_counts(result.report)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for note in _split_left_out(result.report, settings):
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"outputs in {out_dir}/ (splits.parquet, split.json, class_counts.csv)", markup=False)


def _split_left_out(report: dict, settings: SplitParams) -> list[str]:
    """What the split left out or could not label, and why, one line each."""
    notes = []
    if report["unlabeled_dropped"]:
        notes.append(f"left out {report['unlabeled_dropped']} unlabelled image(s) (split.unlabeled: drop)")
    unlabeled = report["classes"].get("unlabeled", {}).get("images", 0)
    if unlabeled:
        notes.append(
            f"{unlabeled} image(s) have no label (split.unlabeled: {settings.unlabeled}); export leaves them out "
            "unless export.include_unlabeled"
        )
    return notes


def _print_counts(report: dict) -> None:
    from rich.table import Table

    table = Table(title="split (images per class)")
    for column in ("class", "train", "val", "test", "total", "max deviation"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report["classes"].items():
        table.add_row(
            escape(name),
            str(row["train"]),
            str(row["val"]),
            str(row["test"]),
            str(row["images"]),
            str(row["max_deviation_images"]),
        )
    table.add_row("all", *(str(report["splits"][s]) for s in ("train", "val", "test")), str(report["images"]), "")
    console.print(table)
