"""Walk a raw-image folder: every file found is either an image candidate, a skipped file, or a symlink loop."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from curation.errors import InputError


@dataclass(frozen=True)
class Discovery:
    """What a walk of ``root`` found. All paths are POSIX, relative to ``root``, sorted."""

    candidates: list[str] = field(default_factory=list)
    """Files whose extension is an image extension (including broken symlinks with one)."""
    skipped: list[str] = field(default_factory=list)
    """Files with any other extension (notes, label files, metadata...)."""
    loops: list[str] = field(default_factory=list)
    """Directory symlinks that lead back into a folder already on the walk."""
    unreadable_dirs: list[str] = field(default_factory=list)
    """Folders that could not be listed (permissions, I/O errors): their files cannot be accounted for."""


def discover(root: Path, extensions: list[str]) -> Discovery:
    """Walk ``root`` recursively in a stable order, following directory symlinks but not their loops.

    Args:
        root: The raw-image folder.
        extensions: Lower-case extensions with a leading dot; matching is case-insensitive.

    Raises:
        InputError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"raw image folder {root} does not exist or is not a folder; "
            "check ingest.raw_dir in params.yaml (or run `curation sample-data data/sample` for the demo data)"
        )
    wanted = {e.lower() for e in extensions}
    found = Discovery()
    # Hand-written rather than os.walk(followlinks=True): os.walk follows loops until the path is too long,
    # and reports nothing about the link that caused it.
    stack: list[tuple[Path, str, frozenset[str]]] = [(root, "", frozenset({os.path.realpath(root)}))]
    while stack:
        folder, rel, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            if not rel:
                raise InputError(f"cannot list raw image folder {root}; check its permissions") from None
            found.unreadable_dirs.append(rel)
            continue
        subfolders = []
        for entry in entries:
            rel_path = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=True):
                real = os.path.realpath(entry.path)
                if real in ancestors:
                    found.loops.append(rel_path)
                else:
                    subfolders.append((Path(entry.path), rel_path, ancestors | {real}))
            elif Path(entry.name).suffix.lower() in wanted:
                found.candidates.append(rel_path)
            else:
                found.skipped.append(rel_path)
        stack.extend(reversed(subfolders))
    found.candidates.sort()
    found.skipped.sort()
    found.loops.sort()
    found.unreadable_dirs.sort()
    return found
