"""The service's secret: HTTP Basic credentials that Label Studio sends with every ML backend request.

Label Studio's ML backend model has ``auth_method: BASIC_AUTH`` with ``basic_auth_user`` / ``basic_auth_pass``,
sent on ``/health``, ``/setup`` and ``/predict``; ``curation studio connect-backend`` registers them. The password is
generated like the Label Studio token (:mod:`curation.studio.server`) on the first ``curation serve`` and kept in
``<labelstudio.home>/backend.json`` (mode 0600), beside ``credentials.json``: no route of any server the tool runs
serves that folder.

The check is ASGI middleware rather than a FastAPI dependency so that it runs before the body is read: an
unauthenticated client cannot make the service buffer a request body or load a model.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.serve.errors import ServeError
from curation.studio.server import StudioHome, read_private_json, write_private_json

BACKEND_USER = "label-studio"
BACKEND_FILE = "backend.json"
REALM = "curation serve"


@dataclass(frozen=True)
class BackendSecret:
    """HTTP Basic credentials of the service. ``repr`` hides the password."""

    user: str
    password: str = field(repr=False)

    def header(self) -> dict[str, str]:
        """The ``Authorization`` header a client sends (tests, benchmarks, scripts)."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def secret_path(home: StudioHome) -> Path:
    return home.root / BACKEND_FILE


def load_secret(home: StudioHome) -> BackendSecret:
    """The secret made by ``curation serve``.

    Raises:
        ServeError: there is none yet, or the file is unreadable or readable by others.
    """
    path = secret_path(home)
    if not path.exists():
        raise ServeError(f"{path} not found: start `curation serve` once (it creates the service's secret there)")
    try:
        data = read_private_json(path)
        return BackendSecret(user=data["user"], password=data["password"])
    except (ValueError, KeyError, TypeError) as err:
        raise ServeError(
            f"{path} is damaged ({type(err).__name__}); delete it and start `curation serve` again"
        ) from None


def ensure_secret(home: StudioHome) -> BackendSecret:
    """The service's secret, generated (``secrets.token_hex(20)``, as the Label Studio token) on first use."""
    if secret_path(home).exists():
        return load_secret(home)
    created = BackendSecret(user=BACKEND_USER, password=secrets.token_hex(20))
    home.root.mkdir(parents=True, exist_ok=True)
    write_private_json(secret_path(home), {"user": created.user, "password": created.password})
    return created


def authorized(header: str | None, secret: BackendSecret) -> bool:
    """Whether an ``Authorization`` header carries ``secret`` (compared in constant time)."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    user_ok = hmac.compare_digest(user.encode(), secret.user.encode())
    password_ok = hmac.compare_digest(password.encode(), secret.password.encode())
    return bool(sep) and user_ok and password_ok


class BasicAuthGuard:
    """ASGI middleware: 401 for any request without the secret, except ``open_paths`` (``/health``)."""

    def __init__(self, app: Any, secret: BackendSecret, *, open_paths: frozenset[str] = frozenset({"/health"})):
        self.app = app
        self.secret = secret
        self.open_paths = open_paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["path"] in self.open_paths and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        header = next(
            (v.decode("latin-1") for k, v in scope.get("headers") or [] if k.lower() == b"authorization"), None
        )
        if authorized(header, self.secret):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "detail": "authentication required: send HTTP Basic credentials from "
                f"<labelstudio.home>/{BACKEND_FILE} (`curation studio connect-backend` gives them to Label Studio)"
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", f'Basic realm="{REALM}"'.encode()),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
