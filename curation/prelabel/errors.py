"""Errors of the prelabel stage (all :class:`~curation.errors.CurationError`, so the CLI prints them cleanly)."""

from __future__ import annotations

from curation.errors import CurationError, InputError


class ModelUnavailableError(CurationError):
    """Model weights could not be loaded (not in a local folder or the Hugging Face cache, or broken)."""


class ManifestError(InputError):
    """The manifest, an image it names, or a labels file cannot be used as it is."""
