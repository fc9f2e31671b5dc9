"""Errors of the service. A :class:`ClientError` becomes an HTTP 4xx answer with its message and nothing else."""

from __future__ import annotations

from curation.errors import CurationError


class ServeError(CurationError):
    """The service could not start or do its work."""


class ClientError(ServeError):
    """A request the service will not serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class UnknownModel(ClientError):
    """The request names a model that is not configured."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)
