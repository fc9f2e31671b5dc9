"""Errors of the Label Studio round trip. Messages never contain the API token or a password."""

from __future__ import annotations

from curation.errors import CurationError


class StudioError(CurationError):
    """Label Studio could not be started, reached or used."""


class StudioNotRunning(StudioError):
    """No local server is running and no remote server is configured."""


class StudioUnavailable(StudioError):
    """The server did not answer, refused the connection, or failed with a 5xx error."""


class StudioAuthError(StudioError):
    """The server rejected the API token (HTTP 401/403)."""


class StudioRequestError(StudioError):
    """The server rejected a request (HTTP 4xx other than auth)."""
