"""Guards for the HTTP servers the tool runs on this machine (``curation browse``, ``curation serve``).

Binding 127.0.0.1 keeps other machines out, but not a web page in the user's browser: with DNS rebinding a page on
``evil.example`` gets its name to resolve to 127.0.0.1 and then reads our answers as same-origin. Such requests
carry the attacker's name in the ``Host`` header, so :class:`HostGuard` answers anything but the loopback names (and
the names the user configured) with 400. It also refuses cross-site requests that a page can send without reading
the answer (a form POST): their ``Origin`` names another site.

Starlette's ``TrustedHostMiddleware`` is not used because it splits ``Host`` at the first colon, so it cannot
accept ``[::1]:PORT``, and it ignores the port; the check is a few lines with :func:`urllib.parse.urlsplit`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def split_host(value: str, default_port: int = 80) -> tuple[str, int] | None:
    """``(hostname, port)`` of a ``Host`` header value such as ``127.0.0.1:5151`` or ``[::1]:9090``; None when it
    is not a plain host[:port] (userinfo, a path, a bad port)."""
    value = value.strip()
    if not value or any(c in value for c in "/?#@\\ "):
        return None
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower().rstrip("."), port if port is not None else default_port


class HostGuard:
    """ASGI middleware: answer 400 unless ``Host`` names this server, and 403 to a request whose ``Origin`` is
    another site.

    Args:
        app: The application to guard.
        names: Extra host names accepted on any port (e.g. the name of a reverse proxy); the loopback names
            (127.0.0.1, localhost, ::1) are always accepted, on the port the server listens on.
        check_origin: Also refuse requests with a foreign ``Origin`` (for servers a browser talks to).
    """

    def __init__(self, app: Any, *, names: Iterable[str] = (), check_origin: bool = False) -> None:
        self.app = app
        self.names = {n.strip().lower().strip("[]").rstrip(".") for n in names if n.strip()} - set(LOOPBACK_NAMES)
        self.check_origin = check_origin

    def allowed(self, value: str, server_port: int | None) -> bool:
        """Whether ``value`` (a Host header, or an Origin's host[:port]) names this server."""
        parsed = split_host(value)
        if parsed is None:
            return False
        name, port = parsed
        if name in self.names:
            return True
        return name in LOOPBACK_NAMES and (server_port is None or port == server_port)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        server = scope.get("server")
        server_port = int(server[1]) if server and server[1] is not None else None
        if not self.allowed(headers.get("host", ""), server_port):
            await _refuse(scope, send, 400, "invalid Host header: this server answers only to 127.0.0.1 or localhost")
            return
        origin = headers.get("origin")
        if self.check_origin and origin is not None:  # "null" (a sandboxed frame) is refused too
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not self.allowed(parts.netloc, server_port):
                await _refuse(scope, send, 403, "cross-site request refused")
                return
        await self.app(scope, receive, send)


async def _refuse(scope: dict, send: Any, status: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
