"""The optional metadata CSV (line, product, camera, lighting, captured_at, ...) joined to images by path or name."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from curation.errors import MetadataError

META_PREFIX = "meta_"


@dataclass(frozen=True)
class MetadataJoin:
    """Metadata rows matched to files, and what did not match."""

    by_file: dict[str, int]
    """rel_path -> position in ``values`` of the row describing the file (one int per file, not a dict per row)."""
    columns: list[str]
    """The ``meta_`` columns, in CSV order."""
    values: np.ndarray
    """Object array, one row per CSV row and one column per entry of ``columns``."""
    unknown_rows: list[tuple[int, str]]
    """(CSV line number, key) of rows that match no file."""
    ambiguous_rows: list[tuple[int, str]]
    """(CSV line number, key) of rows naming a file name that several files share."""


def read_metadata(csv_path: Path, key: str) -> pd.DataFrame:
    """Read the metadata CSV as strings, checking the key column.

    Raises:
        MetadataError: unreadable file, missing key column, empty or repeated keys (naming the lines).
    """
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise MetadataError(f"metadata CSV {csv_path} not found; fix ingest.metadata or --metadata") from err
    except UnicodeDecodeError as err:
        raise MetadataError(f"metadata CSV {csv_path} is not UTF-8; re-save it as UTF-8 (CSV UTF-8 in Excel)") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise MetadataError(f"metadata CSV {csv_path} cannot be parsed: {err}") from err
    if key not in table.columns:
        raise MetadataError(
            f"metadata CSV {csv_path} has no key column {key!r} (columns: {list(table.columns)}); "
            "rename the column holding file paths or set ingest.metadata_key in params.yaml"
        )
    keys = table[key].map(_normalise)
    line = pd.Series(range(2, len(table) + 2), index=table.index)  # line 1 is the header
    empty = line[keys == ""].tolist()
    if empty:
        raise MetadataError(f"metadata CSV {csv_path}: empty {key!r} on line(s) {empty[:20]}; fill them or drop them")
    repeated = keys[keys.duplicated(keep=False)]
    if not repeated.empty:
        listing = "; ".join(f"{k!r} on lines {line[keys == k].tolist()}" for k in sorted(set(repeated))[:10])
        raise MetadataError(f"metadata CSV {csv_path}: the same file is described twice: {listing}; keep one row")
    return table.assign(**{key: keys})


def join_metadata(table: pd.DataFrame, key: str, files: Iterable[str]) -> MetadataJoin:
    """Match rows to files: by path relative to the raw folder first, then by a file name that is unique.

    Args:
        table: Output of :func:`read_metadata`.
        key: The key column.
        files: rel_path of every file the walk found (quarantined ones included, so their rows are not
            reported as unknown).
    """
    files = sorted(files)
    known = set(files)
    by_name: dict[str, list[str]] = defaultdict(list)
    for rel_path in files:
        by_name[PurePosixPath(rel_path).name].append(rel_path)
    value_columns = [c for c in table.columns if c != key]
    columns = [META_PREFIX + _column_name(c) for c in value_columns]
    if len(set(columns)) < len(columns):
        raise MetadataError(f"metadata columns {value_columns} collide once lower-cased; give them distinct names")
    by_file: dict[str, int] = {}
    unknown: list[tuple[int, str]] = []
    ambiguous: list[tuple[int, str]] = []
    for position, name in enumerate(table[key]):
        line = position + 2  # line 1 is the header
        if name in known:
            by_file[name] = position
        elif len(by_name.get(name, [])) == 1:
            by_file[by_name[name][0]] = position
        elif name in by_name:
            ambiguous.append((line, name))
        else:
            unknown.append((line, name))
    return MetadataJoin(by_file, columns, table[value_columns].to_numpy(dtype=object), unknown, ambiguous)


def _normalise(key: str) -> str:
    """Path keys written on Windows or with ``./`` still match."""
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _column_name(column: str) -> str:
    return "_".join(column.strip().lower().split())
