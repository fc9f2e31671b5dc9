"""Commands of the dataset stages: ``split``, ``augment``, ``export`` and ``release``.

Plain typer command functions, registered on the ``curation`` app by ``curation.cli``. Heavy imports (pandas,
albumentations, pycocotools) happen inside the commands, so ``curation --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from curation.console import ParamsOption, console, load_or_exit, user_errors
from schemas.params_dataset import AugmentParams, ExportParams, SplitParams

if TYPE_CHECKING:
    import pandas as pd


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
    from curation.split import LABEL_COLUMNS, image_labels, read_previous, split, write_split

    params = load_or_exit(params_path)
    settings: SplitParams = params.split
    grouping = {"image_id", "dup_group", *settings.group_by}
    with user_errors():
        # only the columns the split reads: image paths, hashes and copies lists stay on disk
        frame = _read_parquet(manifest, "run `curation ingest` first", keep=grouping.__contains__)
        source = "none"
        labels_consensus = labels_prior = None
        if consensus.is_file():
            labels_consensus = _read_parquet(consensus, "", keep=LABEL_COLUMNS.__contains__)
            source = f"consensus ({consensus})"
        if prior_labels.is_file():
            labels_prior = _read_parquet(prior_labels, "", keep=LABEL_COLUMNS.__contains__)
            if labels_consensus is None and len(labels_prior):
                source = f"prior labels ({prior_labels})"
        labels = image_labels(
            frame, consensus=labels_consensus, prior=labels_prior, class_names=params.ontology.class_names
        )
        pinned_from = None if no_previous else (previous or settings.previous)
        if previous is not None and not previous.is_file():
            raise _input_error(f"{previous}: file not found; drop --previous or give the last release's splits")
        result = split(frame, labels, settings, previous=read_previous(pinned_from), allow_empty=allow_empty)
        write_split(result, out_dir)
    console.print(f"labels from {source}; pinned {result.report['pinned']} image(s) from {pinned_from}", markup=False)
    _print_counts(result.report)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    for note in _split_left_out(result.report, settings):
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"outputs in {out_dir}/ (splits.parquet, split.json, class_counts.csv)", markup=False)


def augment_command(
    splits: Annotated[Path, typer.Argument(help="splits.parquet from the split stage.")],
    manifest: Annotated[Path, typer.Argument(help="manifest.parquet from ingest (image paths).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for images/, augmented.parquet, augment.json, preview.png.")],
    variants: Annotated[
        int | None, typer.Option(min=0, help="Variants per train image (default augment.variants).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Processes, 0 = one per core (default augment.workers).")
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Augment the train split with the albumentations recipe in params (val and test are never touched)."""
    from curation.augment_stage import augment, write_augment
    from curation.io import publish
    from curation.progress import progress

    params = load_or_exit(params_path)
    settings: AugmentParams = params.augment
    overrides = {k: v for k, v in {"variants": variants, "workers": workers}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    with user_errors():
        frame = _read_parquet(splits, "run `curation split` first")
        images = _read_parquet(manifest, "run `curation ingest` first")
        with publish(out_dir, owner="augment.json") as staging, progress("augment", console) as reporter:
            result = augment(frame, images, settings, staging, on_start=reporter.start, on_progress=reporter.advance)
            write_augment(result, staging)
    report = result.report
    console.print(
        f"{report['augmented_images']} variants of {report['source_images']} train images "
        f"(recipe {report['recipe_hash']}); boxes dropped: {report['boxes_dropped']} of {report['boxes_in']}",
        markup=False,
    )
    if report["train_unlabeled_skipped"]:
        console.print(
            f"[yellow]note:[/] {report['train_unlabeled_skipped']} unlabelled train image(s) not augmented",
            highlight=False,
        )
    console.print(f"outputs in {out_dir}/ (images/, augmented.parquet, augment.json, preview.png)", markup=False)


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
    from curation.export import MANIFEST_COLUMNS, MARKER, PREDICTION_COLUMNS, export, file_sha256
    from curation.io import publish
    from curation.progress import progress

    params = load_or_exit(params_path)
    settings: ExportParams = params.export
    if link is not None:
        settings = settings.model_copy(update={"link": link})
    augmented_file = augment_dir / "augmented.parquet"
    with user_errors():
        frame = _read_parquet(splits, "run `curation split` first")
        images = _read_parquet(
            manifest, "run `curation ingest` first", keep=lambda c: c in MANIFEST_COLUMNS or c.startswith("meta_")
        )
        augmented = _read_parquet(augmented_file, "") if augmented_file.is_file() else None
        preds = _read_parquet(predictions, "", keep=PREDICTION_COLUMNS.__contains__) if predictions.is_file() else None
        dumped = {name: getattr(params, name).model_dump(mode="json") for name in ("split", "augment", "export")}
        dumped["classes"] = params.ontology.class_names
        provenance = {
            "params": dumped,
            "params_sha256": hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest(),
            "inputs": {str(p): file_sha256(p) for p in (manifest, splits, augmented_file, predictions) if p.is_file()},
        }
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


def release_command(
    name: Annotated[str, typer.Argument(help="Release name, used as the git tag, e.g. v1.0.")],
    repo: Annotated[
        Path | None, typer.Option(help="Root of the git + DVC repository (default: the folder holding params.yaml).")
    ] = None,
    message: Annotated[str | None, typer.Option(help="Extra text for the commit and tag message.")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Push the data to the DVC remote, write DATASET.md, commit dvc.lock and tag the release."""
    from curation.release import release

    params = load_or_exit(params_path)
    with user_errors():
        result = release(
            repo if repo is not None else params_path.parent,
            name,
            params.release,
            ontology=params.ontology,
            split_settings=params.split,
            message=message,
        )
    console.print(
        f"released {result.name} (dataset version {result.version}) at commit {result.commit[:10]}; data pushed to "
        f"DVC remote '{result.remote}' ({result.remote_url}); card {result.card}",
        markup=False,
    )
    console.print(f"get it back: git checkout {result.name} && dvc pull", markup=False)


def _read_parquet(path: Path, hint: str, *, keep: Callable[[str], bool] | None = None) -> pd.DataFrame:
    """Read a stage's Parquet input; with ``keep``, only the columns it accepts (the others are never decoded).

    Columns ``keep`` accepts but the file lacks are simply absent, so the stage's own check names them.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from curation.errors import InputError
    from curation.io import check_published

    if not Path(path).is_file():
        raise InputError(f"{path}: file not found" + (f"; {hint}" if hint else ""))
    check_published(path)
    try:
        if keep is None:
            return pd.read_parquet(path)
        return pd.read_parquet(path, columns=[c for c in pq.read_schema(path).names if keep(c)])
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path}: cannot read it as Parquet ({err}); re-run the stage that writes it") from err


def _input_error(message: str) -> Exception:
    from curation.errors import InputError

    return InputError(message)


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
