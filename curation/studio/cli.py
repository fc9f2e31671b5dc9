"""Commands of the Label Studio round trip, registered by ``curation.cli``:

- ``studio_app`` (mount with ``app.add_typer(studio_app, name="studio")``): start | stop | status | add-annotator.
- ``push_command``, ``pull_command``, ``simulate_command`` (``app.command("push")(push_command)`` ...).

Heavy imports (the SDK, httpx) happen inside the commands so ``curation --help`` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from curation.console import ParamsOption, console, load_or_exit, user_errors
from curation.progress import progress
from schemas.params import Params
from schemas.params_studio import LabelStudioParams

studio_app = typer.Typer(
    name="studio",
    help="The local Label Studio server (127.0.0.1 only; data and credentials under labelstudio.home).",
    no_args_is_help=True,
)


def studio_settings(params: Params) -> LabelStudioParams:
    """The ``labelstudio`` section (one seam, so tests can point the commands at their own server)."""
    return params.labelstudio


def _load(params_path: Path) -> tuple[Params, LabelStudioParams]:
    params = load_or_exit(params_path)
    return params, studio_settings(params)


def _remote() -> str | None:
    from curation.studio.client import ENV_KEY, ENV_URL

    return os.environ.get(ENV_URL) if os.environ.get(ENV_URL) and os.environ.get(ENV_KEY) else None


def _say(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True, markup=False)


@studio_app.command("start")
def start_command(params_path: ParamsOption = Path("params.yaml")) -> None:
    """Start the local Label Studio server (or report the running one) and print how to log in."""
    from curation.studio.server import StudioHome, start_local

    _, settings = _load(params_path)
    remote = _remote()
    if remote:
        _say(f"LABEL_STUDIO_URL is set: using the remote server {remote}; nothing to start here")
        return
    home = StudioHome(settings.home)
    with user_errors():
        state = start_local(settings, on_status=_say)
    _say(f"Label Studio is running: {state.url}  (pid {state.pid}, files served from {state.document_root})")
    _say(f"log in as the e-mail and password in {home.credentials} (readable by you only)")


@studio_app.command("stop")
def stop_command(params_path: ParamsOption = Path("params.yaml")) -> None:
    """Stop the local server (by its pid, with SIGTERM)."""
    from curation.studio.server import StudioHome, stop

    _, settings = _load(params_path)
    with user_errors():
        state = stop(StudioHome(settings.home))
    _say(f"stopped Label Studio (pid {state.pid}, {state.url})" if state else "no local Label Studio was running")


@studio_app.command("status")
def status_command(params_path: ParamsOption = Path("params.yaml")) -> None:
    """Say which server is used, whether it answers, and whether the API token is accepted. Exit 1 if not."""
    from curation.studio.client import check_auth, connection, make_client
    from curation.studio.server import StudioHome, status

    _, settings = _load(params_path)
    home = StudioHome(settings.home)
    if not _remote():
        current = status(home)
        if current.state is None or not current.alive:
            _say(f"no local Label Studio running (home {home.root}); start it with `curation studio start`")
            raise typer.Exit(1)
        _say(f"local Label Studio {current.state.version}: {current.state.url} (pid {current.state.pid})")
        _say(f"data {current.state.data_dir}; files served from {current.state.document_root}; log {current.state.log}")
    with user_errors():
        conn = connection(settings)
        email = check_auth(make_client(conn, retries=0, timeout_s=10), conn)
    _say(f"{conn.url}: healthy, API token accepted (user {email})")


@studio_app.command("add-annotator")
def add_annotator_command(
    email: Annotated[str, typer.Argument(help="The annotator's e-mail; it becomes their login.")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Create an annotator account that can log in; its generated password goes to annotators.json (0600)."""
    from curation.studio.client import connection
    from curation.studio.server import StudioHome, add_annotator

    _, settings = _load(params_path)
    if "@" not in email:
        raise typer.BadParameter(f"{email!r} is not an e-mail address", param_hint="EMAIL")
    with user_errors():
        conn = connection(settings)
        where = add_annotator(conn.url, conn.token, email, home=StudioHome(settings.home))
    _say(f"created annotator {email} on {conn.url}; their password is in {where} (readable by you only)")


def push_command(
    manifest: Annotated[Path, typer.Argument(help="manifest.parquet from ingest (image paths).")],
    predictions: Annotated[Path, typer.Argument(help="predictions.parquet from prelabel.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for tasks.parquet and push.json.")],
    disputes: Annotated[
        Path | None, typer.Option(help="disputes.csv from agreement (default: labelstudio.disputes).")
    ] = None,
    prior_labels: Annotated[
        Path,
        typer.Option(help="prior_labels.parquet from ingest: its shapes pre-fill polygons when labelstudio.boxes."),
    ] = Path("data/ingest/prior_labels.parquet"),
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Push images and pre-labels to Label Studio: idempotent, batched, most uncertain first."""
    from curation.prelabel.captions import require_korean_descriptions
    from curation.studio.client import connection, make_client
    from curation.studio.previews import make_previews
    from curation.studio.push import push, read_disputes, write_push
    from curation.studio.tasks import MANIFEST_COLUMNS, PREDICTION_COLUMNS, build_tasks
    from curation.tables import read_table
    from schemas.records import ImageRecord, Prediction, PriorLabel

    params, settings = _load(params_path)
    with user_errors():
        require_korean_descriptions(params.ontology, params.prelabel.description, settings.description_language)
        ingest, prelabel = "run `dvc repro ingest`", "run `dvc repro prelabel`"
        manifest_frame = read_table(manifest, ImageRecord, columns=MANIFEST_COLUMNS, optional="all", missing_fix=ingest)
        predictions_frame = read_table(
            predictions, Prediction, columns=PREDICTION_COLUMNS, optional="all", missing_fix=prelabel
        )
        disputed, note = read_disputes(disputes or settings.disputes)
        prior = (
            read_table(prior_labels, PriorLabel, columns=["image_id"], optional="all", missing_fix=ingest)
            if settings.boxes and prior_labels.exists()
            else None
        )
        conn = connection(settings)
        previews = make_previews(
            manifest_frame, settings.preview_dir, max_side=settings.preview_max_side, manifest_name=str(manifest)
        )
        specs = build_tasks(
            manifest_frame,
            predictions_frame,
            ontology=params.ontology,
            document_root=conn.document_root or settings.document_root,
            description_language=settings.description_language,
            disputes=disputed,
            manifest_name=str(manifest),
            predictions_name=str(predictions),
            prior=prior,
            prior_name=str(prior_labels),
            previews=previews,
            shapes=settings.boxes,
        )
        client = make_client(conn, retries=settings.retries, timeout_s=settings.timeout_s)
        with progress("push", console) as reporter:
            result = push(
                client,
                conn,
                specs,
                ontology=params.ontology,
                settings=settings,
                on_start=reporter.start,
                on_progress=reporter.advance,
            )
        write_push(result, out_dir)
    report = result.report
    _say(note)
    if previews:
        _say(f"{len(previews)} image(s) the browser cannot draw are shown as previews cached in {settings.preview_dir}")
    where = f"project {report['project_title']!r} (id {report['project_id']})"
    if report["project_count"] > 1:
        where = f"{report['project_count']} projects of {settings.project_title!r}"
    _say(
        f"{where} on {conn.url}: "
        f"{report['tasks_created']} tasks created, {report['tasks_existing']} already there, "
        f"{report['predictions_added']} predictions added, {report['tasks_with_overlap']} tasks in the agreement "
        f"sample; outputs in {out_dir}/ (tasks.parquet, push.json)"
    )
    for part in report["projects"].values():
        _say(f"review {part['title']!r} ({part['tasks']} tasks) at {conn.url}/projects/{part['project_id']}/data")


def pull_command(
    out_dir: Annotated[Path, typer.Argument(help="Folder for annotations.parquet and pull.json.")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Pull reviews from Label Studio into annotations.parquet (latest per annotator and task)."""
    from curation.studio.client import connection, make_client
    from curation.studio.pull import pull, write_pull

    _, settings = _load(params_path)
    with user_errors():
        conn = connection(settings)
        client = make_client(conn, retries=settings.retries, timeout_s=settings.timeout_s)
        result = pull(client, conn, project_title=settings.project_title)
        write_pull(result, out_dir)
    report = result.report
    if result.empty:
        _say(f"{report['note']} (outputs in {out_dir}/); downstream stages will produce empty outputs")
    else:
        _say(
            f"pulled {report['annotations']} annotations by {report['annotators']} annotators on "
            f"{report['reviewed_images']} images ({report['cancelled']} skipped/cancelled left out, "
            f"{report['superseded']} superseded); outputs in {out_dir}/"
        )
    if report.get("project_count", 1) > 1:
        _say(f"merged from {report['project_count']} projects of {settings.project_title!r}")


def simulate_command(
    truth: Annotated[
        Path | None, typer.Option(help="CSV file,label[,severity] (default: labelstudio.simulation.truth).")
    ] = None,
    reviewers: Annotated[int | None, typer.Option(min=1, help="Number of simulated reviewers.")] = None,
    noise: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Chance of a wrong class.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """DEMO ONLY: simulated reviewers (sim-reviewer-N@simulated.local) annotate the project over the API."""
    from curation.studio.client import connection, make_client
    from curation.studio.simulate import read_truth, simulate

    params, settings = _load(params_path)
    overrides = {"reviewers": reviewers, "noise": noise, "seed": seed, "truth": truth}
    sim = settings.simulation.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    with user_errors():
        known = read_truth(sim.truth, params.ontology)
        conn = connection(settings)
        client = make_client(conn, retries=settings.retries, timeout_s=settings.timeout_s)
        with progress("simulated reviews", console) as reporter:
            report = simulate(
                client,
                conn,
                project_title=settings.project_title,
                ontology=params.ontology,
                settings=sim,
                truth=known,
                on_start=reporter.start,
                on_progress=reporter.advance,
            )
    source = f"truth from {sim.truth}" if known else "the model's labels (no truth file)"
    _say(
        f"SIMULATED reviewers {', '.join(report['reviewers'])} made {report['annotations_created']} annotations "
        f"({report['skipped']} skipped) starting from {source}, noise {sim.noise}, seed {sim.seed}, on "
        f"{report['tasks']} tasks in {len(report['project_ids'])} project(s)"
    )
