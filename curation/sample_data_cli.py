"""The ``sample-data`` command: writes the built-in synthetic sample dataset.

Registered on the ``curation`` app by ``curation.cli``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.console import console, user_errors


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
