"""Errors the tool raises on purpose.

Every message says what went wrong, where (file, row, key) and how to fix it. The CLI turns a
``CurationError`` into a one-line message and exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CurationError(Exception):
    """Root of every error the tool raises on purpose."""


class ParamsError(CurationError):
    """params.yaml is missing, unreadable, or does not match the schema."""


class InputError(CurationError):
    """An input file or folder given by the user cannot be used as it is."""


class MetadataError(InputError):
    """The metadata CSV cannot be joined to the images."""


class LabelImportError(InputError):
    """Prior labels (folders, VOC, COCO, YOLO) cannot be read."""


class OutputError(CurationError):
    """An output cannot be written where the user asked (read-only, full disk, no permission, not ours)."""


class EmptyDatasetError(InputError):
    """A split or export would hold no labelled image (``--allow-empty`` makes one on purpose)."""
