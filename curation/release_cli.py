"""The ``release`` command: calls :func:`curation.release.release` and says where the data went.

Registered on the ``curation`` app by ``curation.cli``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curation.console import ParamsOption, console, load_or_exit, user_errors


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
