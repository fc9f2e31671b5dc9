"""Connecting to Label Studio: which server, the SDK client, and SDK/HTTP errors translated at the boundary.

The server is the local one started by ``curation studio start`` (URL from ``server.json``, token from the 0600
``credentials.json``) unless ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` are both set, which select a remote
server. Error messages name the server, the action and the fix, and never contain the token.

Retries: the SDK retries connection errors, 408/409/429 and 5xx with exponential backoff and jitter
(``max_retries`` = ``labelstudio.retries``), so that is not re-written here. Task imports are not idempotent on
the server, so push turns SDK retries off for them and retries itself after checking what arrived.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlparse

from curation.studio.errors import (
    StudioAuthError,
    StudioError,
    StudioNotRunning,
    StudioRequestError,
    StudioUnavailable,
)
from curation.studio.server import StudioHome, load_credentials, status
from schemas.params_studio import LabelStudioParams

if TYPE_CHECKING:
    from label_studio_sdk.client import LabelStudio

ENV_URL = "LABEL_STUDIO_URL"
ENV_KEY = "LABEL_STUDIO_API_KEY"
ENV_DOCUMENT_ROOT = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"
_DETAIL_CHARS = 400


@dataclass(frozen=True)
class Connection:
    """A server to talk to. ``repr`` hides the token."""

    url: str
    token: str = field(repr=False)
    source: Literal["local", "remote"]
    document_root: Path | None = None

    @property
    def token_hint(self) -> str:
        if self.source == "remote":
            return f"check {ENV_KEY} (an API token or personal access token of {self.url})"
        return (
            "the token in credentials.json does not belong to this server's data dir; "
            "run `curation studio stop`, remove the studio home folder and start again"
        )


def connection(settings: LabelStudioParams) -> Connection:
    """The server selected by the environment, else the running local server.

    Raises:
        StudioNotRunning: neither a remote server is configured nor a local one is running.
    """
    url, key = os.environ.get(ENV_URL, "").strip(), os.environ.get(ENV_KEY, "").strip()
    if url or key:
        if not (url and key):
            missing = ENV_KEY if url else ENV_URL
            raise StudioError(f"{missing} is not set: a remote Label Studio needs both {ENV_URL} and {ENV_KEY}")
        _check_url(url)
        root = os.environ.get(ENV_DOCUMENT_ROOT)
        return Connection(
            url.rstrip("/"), key, "remote", Path(root) if root else Path(settings.document_root).resolve()
        )
    home = StudioHome(settings.home)
    current = status(home)
    creds = load_credentials(home)
    if current.state is None or not current.alive or creds is None:
        raise StudioNotRunning(
            f"no Label Studio server is running (looked in {home.root}/server.json); start one with "
            f"`curation studio start`, or set {ENV_URL} and {ENV_KEY} to use a remote server"
        )
    return Connection(current.state.url, creds.token, "local", Path(current.state.document_root))


def _check_url(url: str) -> None:
    """Refuse a ``LABEL_STUDIO_URL`` that is not ``http(s)://host[:port][/path]`` (httpx would fail deep inside).

    Raises:
        StudioError: one line naming the variable, what is wrong and the expected form.
    """
    form = "set it like http://127.0.0.1:8080 (http or https, a host, an optional port)"
    parsed = urlparse(url)
    shown = f"{ENV_URL}={url!r}" if "@" not in url else ENV_URL  # user info may hold a password: never echo it
    if "://" not in url:
        problem = "has no scheme"
    elif parsed.scheme.lower() not in {"http", "https"}:
        problem = f"has the unknown scheme {parsed.scheme!r}"
    elif not parsed.hostname:
        problem = "has no host"
    else:
        try:
            parsed.port  # noqa: B018 - reading the port is the check: a non-number or out of range raises
            return
        except ValueError:
            problem = "has a bad port"
    raise StudioError(f"{shown} {problem}; {form}")


def make_client(conn: Connection, *, retries: int = 4, timeout_s: float = 120.0) -> LabelStudio:
    """An SDK client for ``conn``. Loopback traffic bypasses any HTTP proxy from the environment."""
    import httpx
    from label_studio_sdk.client import LabelStudio

    loopback = urlparse(conn.url).hostname in {"127.0.0.1", "localhost", "::1"}
    http = httpx.Client(timeout=timeout_s, follow_redirects=True, trust_env=not loopback)
    return LabelStudio(base_url=conn.url, api_key=conn.token, httpx_client=http, max_retries=retries)


def scrub(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` masked."""
    return text.replace(token, "***") if token else text


@contextmanager
def translate(action: str, conn: Connection) -> Iterator[None]:
    """Turn SDK and HTTP errors raised inside the block into :class:`StudioError` subclasses.

    Args:
        action: What was being done, for the message ("importing tasks").
        conn: The server, for its URL and the token to keep out of messages.
    """
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except StudioError:
        raise
    except (httpx.ConnectError, httpx.ConnectTimeout) as err:
        fix = "start it with `curation studio start`" if conn.source == "local" else f"check {ENV_URL}"
        raise StudioUnavailable(
            f"cannot reach Label Studio at {conn.url} while {action} ({type(err).__name__}); {fix}"
        ) from None
    except httpx.TimeoutException:
        raise StudioUnavailable(
            f"Label Studio at {conn.url} did not answer in time while {action}; retry, or lower "
            "labelstudio.batch_size / raise labelstudio.timeout_s"
        ) from None
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as err:
        raise StudioUnavailable(
            f"Label Studio at {conn.url} dropped the connection while {action} ({type(err).__name__}); "
            "is it still running? (`curation studio status`)"
        ) from None
    except ApiError as err:
        code = err.status_code
        detail = scrub(_detail(err.body), conn.token)
        if code in (401, 403):
            raise StudioAuthError(
                f"Label Studio at {conn.url} rejected the API token (HTTP {code}) while {action}; {conn.token_hint}"
            ) from None
        if code is not None and code >= 500:
            raise StudioUnavailable(
                f"Label Studio at {conn.url} failed with HTTP {code} while {action} (after retries): {detail}"
            ) from None
        raise StudioRequestError(f"Label Studio at {conn.url} refused {action} (HTTP {code}): {detail}") from None


def _detail(body: object) -> str:
    if isinstance(body, dict):
        parts = [f"{k}: {v}" for k, v in body.items() if k in {"detail", "validation_errors", "label_config"}]
        text = "; ".join(parts) or str(body)
    else:
        text = str(body)
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "..."


def check_auth(client: LabelStudio, conn: Connection) -> str:
    """The e-mail of the token's user; raises a clear error when the server is down or rejects the token."""
    with translate("checking the API token", conn):
        return client.users.whoami().email or ""
