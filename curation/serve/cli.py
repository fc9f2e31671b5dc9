"""``curation serve`` (the service in the foreground) and ``connect-backend`` (register it with the Label Studio
project, with the service's HTTP Basic secret), plus :func:`running`, the service in a background thread for tests
and benchmarks.

Registered by ``curation.cli``: ``app.command("serve")(serve_command)`` and
``studio_app.command("connect-backend")(connect_backend_command)``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from curation.console import ParamsOption, console, load_or_exit, user_errors
from curation.serve.auth import BackendSecret, ensure_secret, load_secret, secret_path
from curation.serve.errors import ClientError, ServeError
from curation.studio.errors import StudioError
from curation.studio.server import LOCAL_BACKEND_ENV, StudioHome
from schemas.params import Params
from schemas.params_studio import LabelStudioParams

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

    from curation.studio.client import Connection

BACKEND_TITLE = "defect-curation pre-labeler"

_START_TIMEOUT_S = 30.0


def studio_target(settings: LabelStudioParams) -> Callable[[], tuple[str, str]]:
    """``(url, token)`` of the Label Studio server in the project's settings (``LABEL_STUDIO_URL`` and
    ``LABEL_STUDIO_API_KEY``, else the running local server), looked up on each call: the local server picks a new
    port when it restarts."""
    from curation.studio.client import connection

    def resolve() -> tuple[str, str]:
        try:
            conn = connection(settings)
        except StudioError as err:
            raise ClientError(f"no Label Studio server to fetch task images from: {err}", 503) from None
        return conn.url, conn.token

    return resolve


def build_app(params: Params, secret: BackendSecret) -> Any:
    from curation.prelabel.captions import require_korean_descriptions
    from curation.serve.app import create_app
    from curation.studio.cli import studio_settings

    language = params.labelstudio.description_language
    require_korean_descriptions(params.ontology, params.prelabel.description, language)
    return create_app(
        params.serve,
        params.prelabel,
        params.ontology,
        secret=secret,
        studio=studio_target(studio_settings(params)),
        description_language=params.labelstudio.description_language,
    )


@contextmanager
def running(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yield its URL; stop it on exit."""
    import uvicorn

    from curation.studio.server import free_port

    config = uvicorn.Config(app, host=host, port=port or free_port(), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="curation-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout=5)
            raise ServeError(f"the service did not start on {host}:{config.port} (is the port taken?)")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    host: Annotated[str | None, typer.Option(help="Bind address (default serve.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default serve.port).", min=1, max=65535)] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Serve the pre-labeler over HTTP: Label Studio ML backend (/health, /setup, /predict) and /score."""
    import uvicorn

    from curation.studio.cli import studio_settings

    params = load_or_exit(params_path)
    settings = params.serve.model_copy(update={"host": host or params.serve.host})
    port = port or settings.port
    if not _is_loopback(settings.host):
        console.print(
            f"[yellow]warning:[/] binding {escape(settings.host)}: requests travel as plain HTTP, so the service's "
            "secret can be read on the network. Prefer 127.0.0.1, or a TLS proxy in front.",
            highlight=False,
        )
    home = StudioHome(studio_settings(params).home)
    with user_errors():
        secret = ensure_secret(home)
        app = build_app(params.model_copy(update={"serve": settings}), secret)
    names = ", ".join(f"{m.name} ({m.kind})" for m in settings.models)
    console.print(
        f"serving on http://{settings.host}:{port} - models (loaded on first use): {names}",
        highlight=False,
        markup=False,
    )
    console.print(
        f"every route but /health needs HTTP Basic auth with the user and password in {secret_path(home)}; "
        "`curation studio connect-backend` gives them to Label Studio",
        highlight=False,
        markup=False,
    )
    uvicorn.run(app, host=settings.host, port=port, log_level="info")


# ---------------------------------------------------------------------------------------------- Label Studio


def connect_backend(
    client: LabelStudio,
    conn: Connection,
    project_id: int,
    url: str,
    *,
    secret: BackendSecret,
    title: str = BACKEND_TITLE,
) -> dict[str, Any]:
    """Register ``url`` as the project's ML backend with the service's HTTP Basic secret (once: an existing
    registration of that URL is kept and given the current secret), so tasks without predictions get one when
    opened. Label Studio calls /health and /setup while registering.

    Raises:
        StudioError: Label Studio refused (its message says why, e.g. the backend did not answer).
    """
    from curation.studio.client import translate
    from curation.studio.errors import StudioRequestError

    url = url.rstrip("/")
    auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": secret.user, "basic_auth_pass": secret.password}
    with translate("listing the project's ML backends", conn):
        existing = [b for b in client.ml.list(project=project_id) if (b.url or "").rstrip("/") == url]
    if existing:
        with translate(f"giving the ML backend {url} the service's secret", conn):
            # Label Studio re-validates (/health, /setup) on update and needs the project for it
            backend = client.ml.update(id=existing[0].id, project=project_id, url=url, **auth)
        created = False
    else:
        from label_studio_sdk.core.api_error import ApiError

        with translate(f"connecting the ML backend {url}", conn):
            try:
                backend = client.ml.create(project=project_id, url=url, title=title, is_interactive=False, **auth)
            except ApiError as err:  # a 403 here is the SSRF guard, not the token: say so before translate
                if "reserved network address" not in str(err.body):
                    raise
                settings = " and ".join(LOCAL_BACKEND_ENV)
                raise StudioRequestError(
                    f"Label Studio at {conn.url} refuses the ML backend {url}: it is on a reserved network address "
                    f"(loopback). Run Label Studio with {settings} set as in curation.studio.server.LOCAL_BACKEND_ENV "
                    "(the local server started by `curation studio start` has them; every other reserved range "
                    "stays banned), restart it, and connect again"
                ) from None
        created = True
    return {
        "project_id": project_id,
        "backend_id": backend.id,
        "url": url,
        "title": backend.title,
        "created": created,
        "state": str(backend.state) if backend.state is not None else None,
        "model_version": backend.model_version,
    }


def connect_backend_command(
    url: Annotated[str, typer.Argument(help="The service's URL, e.g. http://127.0.0.1:9090 (`curation serve`).")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Connect a running `curation serve` to the Label Studio project, so tasks without predictions get one."""
    from curation.studio.cli import studio_settings
    from curation.studio.client import connection, make_client
    from curation.studio.config import find_projects

    params = load_or_exit(params_path)
    settings = studio_settings(params)
    with user_errors():
        secret = load_secret(StudioHome(settings.home))
        conn = connection(settings)
        client = make_client(conn, retries=settings.retries, timeout_s=settings.timeout_s)
        project_ids = find_projects(client, conn, settings.project_title)  # every part of the project set
        if not project_ids:
            raise ServeError(
                f"no Label Studio project titled {settings.project_title!r} on {conn.url}; run `curation push` first"
            )
        reports = [connect_backend(client, conn, project_id, url, secret=secret) for project_id in project_ids]
    for report in reports:
        verb = "connected" if report["created"] else "already connected"
        console.print(
            f"{verb}: {url} is the ML backend of project {report['project_id']} ({settings.project_title!r}), "
            f"model version {report['model_version'] or '-'}",
            highlight=False,
            markup=False,
        )
