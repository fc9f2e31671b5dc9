"""The ``augment`` command: reads the stage's inputs, calls :func:`curation.augment_stage.augment`, writes outputs.

Registered on the ``curation`` app by ``curation.cli``. Heavy imports (pandas, albumentations) happen inside the
command, so ``curation --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.console import ParamsOption, console, load_or_exit, user_errors
from schemas.params_dataset import AugmentParams


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
    from curation.tables import read_table
    from schemas.records import ImageRecord, SplitRow

    params = load_or_exit(params_path)
    settings: AugmentParams = params.augment
    overrides = {k: v for k, v in {"variants": variants, "workers": workers}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    with user_errors():
        frame = read_table(
            splits,
            SplitRow,
            columns=["image_id", "split", "label", "severity", "boxes"],
            missing_fix="run `curation split` first",
        )
        images = read_table(
            manifest, ImageRecord, columns=["image_id", "path"], missing_fix="run `curation ingest` first"
        )
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
