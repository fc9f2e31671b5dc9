"""The FiftyOne App as ``curation browse`` serves it: FiftyOne's own Starlette application, run in this process by
uvicorn on 127.0.0.1, with changes that keep other local programs and web pages away from the user's files.

- ``/media`` serves only the media of the dataset being browsed. FiftyOne's route returns any file the user can
  read (``/media?filepath=/home/me/.studio/credentials.json``); ours answers 404 unless ``filepath`` is, character
  for character, a media path of the dataset when the App started (``filepath``, the dataset's App media
  fields and the images of its heatmap/segmentation labels). No path arithmetic, so ``..``, encodings and
  symlinks outside the dataset have nothing to match. The list is fixed at start: a sample added or edited through
  the App (its operators can) cannot widen it.
- The operator that lists any folder on disk (``list_files``, for the App's file pickers) is refused
  (:class:`OperatorFilter`); every other operator works as in FiftyOne.
- :class:`curation.localhttp.HostGuard` in front: any ``Host`` but 127.0.0.1/localhost on this port is refused
  (DNS rebinding), and so is a request whose ``Origin`` is another site (a page POSTing to the App's operators).

fiftyone's ``launch_app`` starts the server in a child process on a port of its own, which any local program can
reach without our guards; serving the same application object here leaves only the guarded port open.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from curation.browse.errors import BrowseError
from curation.localhttp import HostGuard

HOST = "127.0.0.1"
MEDIA_ROUTE = "/media"
# operators that reach beyond the dataset: list_files returns the names and sizes in any folder the user can read
DENIED_OPERATORS = frozenset({"@voxel51/operators/list_files"})


def media_paths(dataset: Any) -> frozenset[str]:
    """Every media path of ``dataset``: its samples' ``filepath``, the App's other media fields, and the images of
    its heatmap and segmentation labels (``map_path``/``mask_path``, e.g. the anomaly maps)."""
    import fiftyone as fo

    fields = {"filepath", *(dataset.app_config.media_fields or [])}
    for name, field in dataset.get_field_schema().items():
        media = {fo.Heatmap: "map_path", fo.Segmentation: "mask_path"}.get(getattr(field, "document_type", None))
        if media:
            fields.add(f"{name}.{media}")
    schema = dataset.get_field_schema(flat=True)
    paths: set[str] = set()
    for name in sorted(fields):
        if name == "filepath" or name in schema:
            # values() streams a cursor; distinct() builds one MongoDB document, capped at 16 MB of paths
            paths.update(value for value in dataset.values(name) if isinstance(value, str) and value)
    return frozenset(paths)


def guarded_app(media: frozenset[str]) -> Any:
    """FiftyOne's App server application with ``/media`` limited to ``media``, behind the Host/Origin guard.

    Raises:
        BrowseError: the installed fiftyone has no ``/media`` route where expected (the guard would not apply).
    """
    os.environ["FIFTYONE_SERVER"] = "1"  # what fiftyone/server/main.py sets: no stale singletons between processes
    import fiftyone as fo
    from fiftyone.server.app import app
    from fiftyone.server.routes.media import Media
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    fo.config.singleton_cache = False

    class DatasetMedia(Media):
        """FiftyOne's media endpoint for the browsed dataset's files only."""

        async def get(self, request: Request) -> Response:
            asked = request.query_params.getlist("filepath")
            if len(asked) != 1 or asked[0] not in media:  # one path, exactly as the dataset stores it
                return Response("Not found", status_code=404)
            return await super().get(request)

    found = [i for i, route in enumerate(app.router.routes) if getattr(route, "path", None) == MEDIA_ROUTE]
    if len(found) != 1:
        raise BrowseError(
            f"this fiftyone ({fo.__version__}) has {len(found)} {MEDIA_ROUTE} routes, not 1, so `curation browse` "
            "cannot limit which files the App serves; install the fiftyone version in requirements.lock"
        )
    app.router.routes[found[0]] = Route(MEDIA_ROUTE, DatasetMedia)
    app.debug = False  # fiftyone turns Starlette's debug pages on: tracebacks with local paths in error answers
    return HostGuard(OperatorFilter(app, DENIED_OPERATORS), check_origin=True)


class OperatorFilter:
    """ASGI middleware: 403 for a POST to the App's ``/operators/...`` routes that names a ``denied`` operator.

    The operator is named in the JSON body, so the body is read here and handed on unchanged.
    """

    def __init__(self, app: Any, denied: frozenset[str]) -> None:
        self.app = app
        self.denied = denied

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/operators"):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            named = json.loads(body).get("operator_uri")
        except (ValueError, AttributeError):
            named = None  # not a JSON object: FiftyOne answers it (400)
        if named in self.denied:
            answer = json.dumps({"detail": f"operator {named} is disabled by curation browse"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port``, or a clear error when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as err:
        sock.close()
        raise BrowseError(
            f"port {port} on {HOST} is in use ({err.strerror}); pass --port or set browse.port to a free one"
        ) from None
    sock.listen(128)
    return sock


def serve(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM (uvicorn handles both and then re-raises them)."""
    import uvicorn
    from fiftyone.server.events import set_port

    port = sock.getsockname()[1]
    set_port(port)  # as fiftyone/server/main.py does
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
