"""Errors of the FiftyOne browser stage, under the project's :class:`CurationError` root."""

from __future__ import annotations

from curation.errors import CurationError, InputError


class BrowseError(CurationError):
    """The FiftyOne dataset cannot be built, found or shown."""


class DatabaseError(BrowseError):
    """The MongoDB server behind FiftyOne cannot be started, reached or stopped."""


class BrowseInputError(InputError):
    """A pipeline output given to the browser stage cannot be used as it is."""


class SearchUnavailableError(BrowseError):
    """Text search needs the CLIP model that made the image embeddings, and it cannot be loaded here."""
