"""The optional metadata CSV (line, product, camera, lighting, captured_at, ...) joined to images by path or name.

It is read and joined to the walked file names before any image is decoded, so a wrong key column or a repeated
row fails at once. The delimiter is sniffed (comma, tab, semicolon, pipe or whitespace; see
:mod:`curation.label_table`); the first line is the header. A column may also be imported as prior labels
(``ingest.label_column``, :func:`metadata_labels`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from curation.errors import MetadataError
from curation.label_table import sniff_delimiter
from curation.labels import ImageRef, LabelIssue, label_row
from schemas.records import meta_column


@dataclass(frozen=True)
class MetadataJoin:
    """Metadata rows matched to files, and what did not match."""

    by_file: dict[str, int]
    """rel_path -> position in ``values`` of the row describing the file (one int per file, not a dict per row)."""
    columns: list[str]
    """The ``meta_`` columns, in CSV order."""
    values: np.ndarray[Any, np.dtype[np.object_]]
    """Object array, one row per CSV row and one column per entry of ``columns``."""
    unknown_rows: list[tuple[int, str]]
    """(CSV line number, key) of rows that match no file."""
    ambiguous_rows: list[tuple[int, str]]
    """(CSV line number, key) of rows naming a file name that several files share."""


def read_metadata(
    csv_path: Path, key: str, *, label_column: str | None = None, label_threshold: float | None = None
) -> pd.DataFrame:
    """Read the metadata CSV as strings, checking the key column (and the label column, when one is named).

    Raises:
        MetadataError: unreadable file, missing key or label column, empty or repeated keys, non-numeric values
            in a thresholded label column (naming the lines).
    """
    try:
        sep = _separator(Path(csv_path), key)
        engine = "python" if sep != "," else "c"
        table = pd.read_csv(csv_path, sep=sep, engine=engine, dtype=str, keep_default_na=False, encoding="utf-8-sig")
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
    if label_column is not None:
        _check_label_column(csv_path, table, label_column, label_threshold, line)
    return table.assign(**{key: keys})


def _separator(csv_path: Path, key: str) -> str:
    """The CSV's field separator for pandas: a sniffed delimiter, whitespace runs, or comma."""
    try:
        with open(csv_path, encoding="utf-8-sig") as handle:
            sample = [text for text in (handle.readline() for _ in range(200)) if text.strip()]
    except (FileNotFoundError, UnicodeDecodeError):
        return ","  # pandas raises the same error again, and it is explained below
    delimiter = sniff_delimiter(sample)
    if delimiter is not None:
        return delimiter
    header = sample[0].split() if sample else []
    return r"\s+" if len(header) > 1 and key in header else ","


def _check_label_column(
    csv_path: Path, table: pd.DataFrame, column: str, threshold: float | None, line: pd.Series
) -> None:
    if column not in table.columns:
        raise MetadataError(
            f"metadata CSV {csv_path} has no label column {column!r} (columns: {list(table.columns)}); "
            "fix ingest.label_column in params.yaml"
        )
    if threshold is None:
        return
    values = table[column].str.strip()
    numbers = pd.to_numeric(values, errors="coerce")
    bad = line[(values != "") & numbers.isna()].tolist()
    if bad:
        raise MetadataError(
            f"metadata CSV {csv_path}: label column {column!r} is compared with ingest.label_threshold but is not a "
            f"number on line(s) {bad[:20]}; fix the values or unset label_threshold"
        )


def metadata_labels(
    table: pd.DataFrame,
    join: MetadataJoin,
    refs: dict[str, ImageRef],
    *,
    column: str,
    threshold: float | None,
    ok_label: str,
    defect_label: str,
    resolve: Callable[[str], str | None],
    source_file: str,
) -> tuple[list[dict[str, Any]], list[LabelIssue]]:
    """Prior-label rows (``source_format`` ``metadata``) from a metadata column, one per described image copy.

    The value is the source label; with ``threshold``, values at or above it give ``defect_label`` and lower ones
    ``ok_label`` (e.g. a defect probability). An empty value gives no label. A row whose file was not ingested
    (quarantined, a mask) is an issue.
    """
    values = table[column].str.strip().tolist()
    rows, issues = [], []
    for rel, position in sorted(join.by_file.items()):
        value = values[position]
        if not value:
            continue
        source_label = value if threshold is None else (defect_label if float(value) >= threshold else ok_label)
        if rel not in refs:
            issues.append(
                LabelIssue(
                    f"{source_file}:{position + 2}",
                    f"label column {column!r} describes {rel}, which was not ingested (see quarantine.csv, masks.csv)",
                )
            )
            continue
        rows.append(label_row(refs[rel], rel, source_label, resolve(source_label), "metadata", source_file))
    return rows, issues


def join_metadata(table: pd.DataFrame, key: str, files: Iterable[str], *, source: str = "metadata CSV") -> MetadataJoin:
    """Match rows to files: by path relative to the raw folder, then by the longest tail of the key that is such a
    path (a key with a folder prefix), then by a file name that is unique.

    Args:
        table: Output of :func:`read_metadata`.
        key: The key column.
        files: rel_path of every file the walk found (quarantined ones included, so their rows are not
            reported as unknown).
        source: How messages name the CSV.

    Raises:
        MetadataError: two rows describe the same file (e.g. ``a.png`` and ``line-1/a.png``).
    """
    files = sorted(files)
    known = set(files)
    by_name: dict[str, list[str]] = defaultdict(list)
    for rel_path in files:
        by_name[PurePosixPath(rel_path).name].append(rel_path)
    value_columns = [c for c in table.columns if c != key]
    columns = [meta_column(c) for c in value_columns]
    if len(set(columns)) < len(columns):
        raise MetadataError(f"metadata columns {value_columns} collide once lower-cased; give them distinct names")
    by_file: dict[str, int] = {}
    unknown: list[tuple[int, str]] = []
    ambiguous: list[tuple[int, str]] = []
    for position, name in enumerate(table[key]):
        line = position + 2  # line 1 is the header
        match = next((tail for tail in _tails(name) if tail in known), None)
        named = by_name.get(PurePosixPath(name).name, [])
        if match is None and len(named) == 1:
            match = named[0]
        if match is None:
            (ambiguous if named else unknown).append((line, name))
            continue
        if match in by_file:
            raise MetadataError(
                f"{source}: lines {by_file[match] + 2} and {line} both describe {match!r}; keep one row"
            )
        by_file[match] = position
    return MetadataJoin(by_file, columns, table[value_columns].to_numpy(dtype=object), unknown, ambiguous)


def _normalise(key: str) -> str:
    """Path keys written on Windows or with ``./`` still match."""
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _tails(key: str) -> list[str]:
    """``a/b/c.png`` -> ``["a/b/c.png", "b/c.png"]``: the key, then shorter tails that still hold a folder."""
    parts = key.split("/")
    return ["/".join(parts[start:]) for start in range(max(1, len(parts) - 1))]
