"""Atomic writes: a reader never sees a half-written output, and a killed run leaves the old file intact.

:func:`publish` makes a stage's outputs one set: everything is written into a staging folder inside the output
folder, then renamed into place, so a failed run changes nothing and readers (:func:`check_published`) refuse a
folder whose swap was interrupted. An ``OSError`` while writing becomes one :class:`OutputError` line
(:func:`os_error_message`) naming the file, the cause and the fix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from curation.errors import InputError, OutputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename is None:  # pyarrow and pandas say "no space left" without saying where
            err.filename = str(path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _write_with(path: Path, writer: Callable[[Path], object]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as sorted, indented UTF-8 JSON (stable bytes for identical data)."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return _write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as UTF-8 CSV without the index."""
    return _write_with(path, lambda tmp: frame.to_csv(tmp, index=False, encoding="utf-8", lineterminator="\n"))


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as Parquet without the index."""
    return _write_with(path, lambda tmp: frame.to_parquet(tmp, index=False))


PUBLISHING = ".publishing.json"  # in an output folder only while a stage swaps its outputs in
_STAGING_PREFIX = ".publish-"

# errno -> (what it means, how to fix it) for the one-line message of an output that cannot be written
_OS_ERRORS = {
    errno.EROFS: ("read-only file system", "choose a writable out folder"),
    errno.EACCES: ("permission denied", "choose an out folder you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose an out folder you can write to, or fix its permissions"),
    errno.ENOSPC: ("no space left on device", "free space there or choose an out folder on a larger disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or choose another out folder"),
    errno.EXDEV: ("cannot rename across file systems", "choose an out folder on one file system"),
    errno.ENOENT: ("folder not found", "check the out folder's path"),
    errno.ENOTDIR: ("a path component is a file, not a folder", "check the out folder's path"),
}

WRITE_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT})  # raised only by writes


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file's bytes, read in 1 MB blocks, or None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def os_error_message(err: OSError, path: Path) -> str:
    """One line for an ``OSError`` met while writing ``path`` (or ``err.filename`` when it names a file).

    Example: ``cannot write data/ingest/manifest.parquet: read-only file system (EROFS); choose a writable out
    folder``.
    """
    where = err.filename if err.filename is not None else path
    code = errno.errorcode.get(err.errno or 0, "")
    what, fix = _OS_ERRORS.get(err.errno or 0, (err.strerror or str(err), "check the out folder"))
    return f"cannot write {where}: {what}" + (f" ({code})" if code else "") + f"; {fix}"


def _about_outputs(err: OSError, out_dir: Path) -> bool:
    """Whether ``err`` came from writing ``out_dir``: a write-only errno, no file named, or a file in or above it."""
    if err.errno in WRITE_ERRNOS or err.filename is None:
        return True
    name, folder = Path(os.fsdecode(err.filename)).absolute(), out_dir.absolute()
    return name.is_relative_to(folder) or folder.is_relative_to(name)


def _name_outputs(err: OSError, out_dir: Path) -> OSError:
    """Say ``out_dir/x`` rather than ``out_dir/.publish-…/x`` in the message: the staging folder is ours."""
    if err.filename is not None:
        name = Path(os.fsdecode(err.filename))
        if name.is_relative_to(out_dir):
            parts = name.relative_to(out_dir).parts
            if parts and parts[0].startswith(_STAGING_PREFIX):
                err.filename = str(out_dir.joinpath(*parts[1:]))
    return err


@contextmanager
def publish(out_dir: Path, *, owner: str | None = None) -> Iterator[Path]:
    """Write a stage's outputs as one set: yield an empty staging folder, then swap its entries into ``out_dir``.

    The staging folder is inside ``out_dir`` (hidden, ``.publish-<pid>-*``), so every move is a rename on one
    file system, also when ``out_dir`` is a mount point. Nothing in ``out_dir`` changes until the block has
    succeeded: a failed or killed run leaves the previous outputs whole. Then :data:`PUBLISHING` is written, each
    entry (file or folder) replaces its namesake (``owner`` last), and :data:`PUBLISHING` is removed; readers
    refuse a folder where it is left (a run killed during the renames). The marker is gone after a run, so reruns
    leave byte-identical folders and DVC sees only its declared outs. Other entries of ``out_dir`` (DVC's
    ``.gitignore``) are left alone.

    Args:
        out_dir: The stage's output folder (created when missing).
        owner: A file only this stage writes there (its metrics JSON). When given, entries are replaced only if
            ``out_dir`` already holds it, so a folder of someone else's files is never overwritten.

    Raises:
        OutputError: ``out_dir`` cannot be written (read-only, full, no permission), in one line naming the file
            and the fix; or ``owner`` is set and ``out_dir`` holds other files of the same names.
    """
    out_dir = Path(out_dir)
    staging = trash = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(out_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-new-", dir=out_dir))
        yield staging
        entries = sorted(staging.iterdir(), key=lambda p: (p.name == owner, p.name))
        clashes = [e.name for e in entries if (out_dir / e.name).exists()]
        if owner and clashes and not (out_dir / owner).exists():
            raise OutputError(
                f"{out_dir}: holds {clashes} but no {owner}, so it is not an output of this stage; nothing was "
                "replaced: choose another folder"
            )
        trash = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-old-", dir=out_dir))
        write_json(out_dir / PUBLISHING, {"replacing": [e.name for e in entries]})
        for entry in entries:
            target = out_dir / entry.name
            if target.is_dir() or target.is_symlink():  # a folder cannot be renamed over either
                os.replace(target, trash / entry.name)
            os.replace(entry, target)
        (out_dir / PUBLISHING).unlink()
    except OSError as err:
        if not _about_outputs(err, out_dir):
            raise  # reading an input inside the block: not ours to explain as a write
        raise OutputError(os_error_message(_name_outputs(err, out_dir), out_dir)) from err
    finally:
        for folder in (staging, trash):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)


def _remove_abandoned(out_dir: Path) -> None:
    """Delete staging folders left by killed runs (their process is gone), so they do not fill the disk."""
    for entry in out_dir.glob(f"{_STAGING_PREFIX}*"):
        pid = entry.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def check_published(path: Path) -> Path:
    """Refuse an input whose folder a stage was killed while publishing to (its files may mix two runs).

    ``path`` is a stage output (a file, or a folder a stage writes into); returns it unchanged.

    Raises:
        InputError: the folder holds :data:`PUBLISHING`.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if (folder / PUBLISHING).exists():
        raise InputError(
            f"{path}: the run that wrote {folder} stopped while replacing its outputs ({folder / PUBLISHING} is "
            "there), so they may mix two runs; re-run the stage that writes that folder"
        )
    return path
