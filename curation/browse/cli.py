"""Commands of the FiftyOne browser: ``curation fiftyone`` (the DVC stage), ``curation browse``, ``curation search``
and ``curation fiftyone-db``. Plain typer-compatible functions; the main app registers them.

Every command uses the project's own mongod (``browse.db_dir``), starting it when needed and stopping it afterwards
only if it started it; ``curation fiftyone-db start`` keeps one running between commands.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import typer
from rich.markup import escape

from curation.browse.errors import BrowseError
from curation.console import ParamsOption, console, load_or_exit, user_errors
from curation.headline import write_headline
from curation.io import publish, write_csv, write_json
from curation.progress import progress
from schemas.params_browse import BrowseParams

VersionOption = Annotated[
    str | None,
    typer.Option("--version", help="Dataset version (or full dataset name); default: the most recently built."),
]
InputOption = Annotated[Path | None, typer.Option(help="Overrides the path in browse.inputs of params.yaml.")]


def fiftyone_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder for fiftyone.json (summary, DVC metrics) and plots.")],
    manifest: InputOption = None,
    predictions: InputOption = None,
    embeddings: InputOption = None,
    annotations: InputOption = None,
    consensus: InputOption = None,
    splits: InputOption = None,
    augmented: InputOption = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Version name; default: browse.version or a hash of the inputs.")
    ] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Build the FiftyOne dataset of this dataset version from every stage's outputs (absent ones are skipped)."""
    from curation.browse import database
    from curation.browse.build import BuildSummary, build_dataset
    from curation.browse.inputs import dataset_name, dataset_version, read_inputs

    params = load_or_exit(params_path)
    settings = params.browse
    given = {
        "manifest": manifest,
        "predictions": predictions,
        "embeddings": embeddings,
        "annotations": annotations,
        "consensus": consensus,
        "splits": splits,
        "augmented": augmented,
    }
    paths = {name: given[name] or getattr(settings.inputs, name) for name in given}
    with user_errors():
        inputs = read_inputs(
            paths, on_skip=lambda message: console.print(f"note: {message}", highlight=False, markup=False)
        )
        version = version or settings.version or dataset_version(paths)
        name = dataset_name(settings.dataset_prefix, version)
        with database.running(settings.db_dir), progress(f"fiftyone {name}", console) as reporter:
            summary: BuildSummary = build_dataset(
                inputs,
                name=name,
                version=version,
                class_names=params.ontology.class_names,
                settings=settings,
                base_dir=Path.cwd(),
                on_start=reporter.start,
                on_progress=reporter.advance,
                cache_dir=params.prelabel.cache_dir,
            )
            confusion = _confusion_rows(name) if summary.evaluation else pd.DataFrame(columns=["actual", "predicted"])
        with publish(out_dir) as staging:
            if len(confusion):  # DVC plot data: written only with rows (no evaluation, no plot)
                write_csv(staging / "confusion.csv", confusion)
            write_csv(staging / "views.csv", pd.DataFrame(list(summary.views.items()), columns=["view", "samples"]))
            write_json(staging / "fiftyone.json", summary.as_dict())
            write_headline(staging, "fiftyone", summary.as_dict())
    for issue in summary.issues:
        console.print(f"[yellow]note:[/] {escape(issue)}", highlight=False, soft_wrap=True)
    console.print(
        f"built dataset {name!r}: {summary.n_images} images, {summary.n_augmented} augmented variants, "
        f"{len(summary.views)} saved views; browse it with: curation browse --version {version}",
        highlight=False,
        markup=False,
    )


def _confusion_rows(name: str) -> pd.DataFrame:
    """(actual, predicted) per evaluated image, for DVC's confusion-matrix plot."""
    import fiftyone as fo

    from curation.browse.brain import EVAL_KEY
    from curation.browse.samples import GT_FIELD, PRELABEL_FIELD

    dataset = fo.load_dataset(name)
    view = dataset.exists(EVAL_KEY)
    actual, predicted = view.values([f"{GT_FIELD}.label", f"{PRELABEL_FIELD}.label"])
    return pd.DataFrame({"actual": actual, "predicted": predicted})


def browse_command(
    version: VersionOption = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="App port (default: browse.port).")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Serve the FiftyOne App on 127.0.0.1 for a dataset version and print its URL; Ctrl-C stops it.

    The App is served from this process, and its /media route serves the dataset's images only
    (:mod:`curation.browse.app`).
    """
    from curation.browse import database

    settings = load_or_exit(params_path).browse
    port = port or settings.port
    # SIGTERM (e.g. from a test or a process manager) unwinds like Ctrl-C, so the App server and mongod are stopped
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with user_errors(), database.running(settings.db_dir):
        from curation.browse.app import bind, guarded_app, media_paths, serve
        from curation.browse.search import register_zoo_model
        from curation.browse.views import ORIGINALS

        sock = bind(port)
        dataset = find_dataset(settings, version)
        register_zoo_model(settings.db_dir)  # the App's text search loads the CLIP text tower through this entry
        app = guarded_app(media_paths(dataset))
        url = f"http://{database.HOST}:{port}/datasets/{dataset.name}"
        if dataset.has_saved_view(ORIGINALS):
            url += f"?view={ORIGINALS}"  # open on the originals; augmented variants have a view of their own
        typer.echo(f"FiftyOne App for {dataset.name!r} ({len(dataset)} samples): {url}", err=False)
        typer.echo("saved views: " + (", ".join(dataset.list_saved_views()) or "none"))
        typer.echo("Ctrl-C stops the App")
        try:
            serve(app, sock)
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()
        typer.echo("stopped the App")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def search_command(
    query: Annotated[str, typer.Argument(help="What to look for, e.g. 'rust along the edge'.")],
    k: Annotated[int | None, typer.Option("--k", min=1, help="How many images (default: browse.search_k).")] = None,
    version: VersionOption = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Find images by a text description (CLIP text encoder vs the stored image embeddings)."""
    from rich.table import Table

    from curation.browse import database

    settings = load_or_exit(params_path).browse
    with user_errors(), database.running(settings.db_dir):
        from curation.browse.search import SEARCH_VIEW, text_search

        dataset = find_dataset(settings, version)
        found = text_search(dataset, query, k=k or settings.search_k, settings=settings)
    table = Table(title=escape(f"{query!r} in {dataset.name}"))
    for column in ("rank", "image_id", "similarity", "filepath"):
        table.add_column(column)
    for row in found.itertuples(index=False):
        table.add_row(str(row.rank), row.image_id, f"{row.similarity:.3f}", escape(row.filepath))
    console.print(table)
    console.print(f"saved as view {SEARCH_VIEW!r}; `curation browse` shows it in the App's saved views", markup=False)


def database_command(
    action: Annotated[Literal["start", "stop", "status"], typer.Argument(help="start, stop or status.")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Start, stop or show the project's own MongoDB server for FiftyOne (127.0.0.1, data in browse.db_dir)."""
    from curation.browse import database

    settings = load_or_exit(params_path).browse
    with user_errors():
        if action == "start":
            db = database.start(settings.db_dir)
            typer.echo(f"mongod pid {db.pid} at {db.uri}, data in {db.dbpath}")
        elif action == "stop":
            typer.echo("stopped" if database.stop(settings.db_dir) else "not running")
        else:
            db = database.status(settings.db_dir)
            typer.echo(f"running: pid {db.pid} at {db.uri}, data in {db.dbpath}" if db else "not running")


def find_dataset(settings: BrowseParams, version: str | None) -> Any:
    """The dataset of ``version`` (a version or a full name), or the most recently built one of this project."""
    import fiftyone as fo

    prefix = f"{settings.dataset_prefix}-"
    built = sorted(
        (d for d in fo.list_datasets(info=True) if d["name"].startswith(prefix)),
        key=lambda d: d["created_at"],
    )
    if not built:
        raise BrowseError(
            f"no dataset built yet in {settings.db_dir}; run `dvc repro fiftyone` (or `curation fiftyone`)"
        )
    names = [d["name"] for d in built]
    if version is None:
        return fo.load_dataset(names[-1])
    for candidate in (f"{prefix}{version}", version):
        if candidate in names:
            return fo.load_dataset(candidate)
    versions = ", ".join(n[len(prefix) :] for n in names)
    raise BrowseError(f"no dataset version {version!r}; built versions: {versions}")
