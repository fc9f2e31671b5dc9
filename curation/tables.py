"""Read a table one stage wrote for another, checked against its record in :mod:`schemas.records`.

:func:`read_table` is the one reader of stage tables: it finds the file, refuses a half-published folder, reads only
the columns asked for, checks that the required ones are there with the record's types, and turns every way this
can fail (missing file, not Parquet/CSV, missing column, wrong type) into one :class:`~curation.errors.CurationError`
line naming the file, the problem and the fix.
"""

from __future__ import annotations

import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pandas as pd

from curation.errors import CurationError, InputError
from curation.io import check_published
from schemas.base import StrictModel
from schemas.records import required_columns

Kind = Literal["str", "int", "float", "bool", "list", "any"]
_DEFAULT_FIX = "re-run the stage that writes it"


def read_table(
    path: Path,
    record: type[StrictModel],
    *,
    columns: Iterable[str] | None = None,
    optional: Iterable[str] | Literal["all"] = (),
    extra: bool = False,
    missing_fix: str = "",
    fix: str = _DEFAULT_FIX,
    error: type[CurationError] = InputError,
    keep_default_na: bool = True,
) -> pd.DataFrame:
    """Read ``path`` (Parquet, or CSV when it ends in ``.csv``) as a table of ``record`` rows.

    Columns the file has under a name the record lists in ``RENAMED`` (an earlier version's name) are read under
    the current name.

    Args:
        path: The file another stage wrote.
        record: Its record: the columns and their types.
        columns: The columns the reader needs; each must be in the file. ``None``: every column of the file is
            read and the record's required ones (fields without a default) must be there.
        optional: Columns read when the file has them (e.g. ones older versions did not write); ``"all"``: every
            column of the file.
        extra: Also read the record's extra columns (names starting with its ``EXTRA_PREFIX``).
        missing_fix: What to do when the file is missing (e.g. "run `curation ingest` first"); "" says nothing.
        fix: What to do when the file is unreadable or lacks a column.
        error: The stage's error class to raise.
        keep_default_na: CSV only: read "", "NA", "null" ... as missing (pandas' default) or keep them as text.

    Raises:
        CurationError: (``error``) the file is missing, half-published, not readable as Parquet/CSV, lacks a needed
            column, or holds a column of the wrong type; one line naming the file, the problem and the fix.
    """
    path = Path(path)
    renamed: dict[str, str] = dict(getattr(record, "RENAMED", {}))
    prefix: str | None = getattr(record, "EXTRA_PREFIX", None)
    needed = list(columns) if columns is not None else required_columns(record)
    everything = columns is None or optional == "all"
    wanted = [*needed, *(() if optional == "all" else optional)]
    unknown = [c for c in needed if c not in record.model_fields and not (prefix and c.startswith(prefix))]
    if unknown:
        raise ValueError(f"{record.__name__} has no column(s) {unknown}")  # a programming error, not the user's
    if not path.is_file():
        raise error(f"{path}: file not found" + (f"; {missing_fix}" if missing_fix else ""))
    check_published(path)
    is_csv = path.suffix.lower() == ".csv"
    names = _names(path, is_csv, fix, error)
    present = {renamed.get(n, n): n for n in names}  # current name -> name in the file
    absent = [c for c in needed if c not in present]
    if absent:
        raise error(
            f"{path}: missing column(s) {absent} ({record.__name__} needs {needed}; the file has {names}); {fix}"
        )
    if everything:
        chosen = list(present)
    else:
        chosen = [c for c in present if c in wanted or (extra and prefix and c.startswith(prefix))]
    kinds = {c: column_kind(record, c) for c in chosen}
    frame = _read(path, is_csv, [present[c] for c in chosen], kinds, keep_default_na, fix, error)
    frame = frame.rename(columns={present[c]: c for c in chosen if present[c] != c})
    _check_types(path, frame, record, kinds, is_csv, fix, error)
    return frame


def column_kind(record: type[StrictModel], name: str) -> Kind:
    """What a column of ``record`` holds, from its field's annotation (extra columns: anything)."""
    info = record.model_fields.get(name)
    if info is None:
        return "any"
    kinds = {_kind(arg) for arg in _members(info.annotation)} - {"none"}
    if kinds == {"int", "float"}:
        return "float"
    return kinds.pop() if len(kinds) == 1 else "any"  # type: ignore[return-value]


def _members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _kind(annotation: Any) -> str:
    if annotation is type(None):
        return "none"
    if get_origin(annotation) is Literal or annotation is str:
        return "str"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is list or get_origin(annotation) is list:
        return "list"
    return "any"


def _names(path: Path, is_csv: bool, fix: str, error: type[CurationError]) -> list[str]:
    """The file's column names, read from its header or Parquet schema only."""
    try:
        if is_csv:
            return [str(c) for c in pd.read_csv(path, nrows=0, index_col=False, encoding="utf-8-sig").columns]
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    except pd.errors.EmptyDataError:
        return []  # an empty CSV: no columns, so the missing-column line says what is wanted
    except Exception as err:  # pyarrow and pandas raise several types for a damaged file
        kind = "CSV" if is_csv else "Parquet"
        raise error(f"{path}: cannot read it as {kind} ({_short(err)}); {fix}") from err


def _read(
    path: Path,
    is_csv: bool,
    names: list[str],
    kinds: dict[str, Kind],
    keep_default_na: bool,
    fix: str,
    error: type[CurationError],
) -> pd.DataFrame:
    try:
        if is_csv:
            text = {name: str for name, kind in zip(names, kinds.values(), strict=True) if kind == "str"}
            # without pandas' NA spellings an empty cell is still missing in a column of numbers or booleans
            empty = {name: [""] for name in names if name not in text}
            return pd.read_csv(
                path,
                usecols=names,
                dtype=text,
                keep_default_na=keep_default_na,
                na_values=None if keep_default_na else empty,
                index_col=False,
                encoding="utf-8-sig",
            )[names]
        return pd.read_parquet(path, columns=names)
    except Exception as err:  # pyarrow and pandas raise several types for a damaged file
        kind = "CSV" if is_csv else "Parquet"
        raise error(f"{path}: cannot read it as {kind} ({_short(err)}); {fix}") from err


def _check_types(
    path: Path,
    frame: pd.DataFrame,
    record: type[StrictModel],
    kinds: dict[str, Kind],
    is_csv: bool,
    fix: str,
    error: type[CurationError],
) -> None:
    """Each column's values are of its field's kind (a column of nulls fits every kind)."""
    for name, kind in kinds.items():
        values = frame[name]
        if kind == "any" or values.isna().all():
            continue
        dtype = values.dtype
        fits = {
            "str": not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)),
            "int": pd.api.types.is_integer_dtype(dtype)
            or (pd.api.types.is_float_dtype(dtype) and bool((values.dropna() % 1 == 0).all())),
            "float": pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype),
            "bool": pd.api.types.is_bool_dtype(dtype) or _all_bools(values),
            "list": _all_lists(values),
        }[kind]
        if not fits:
            where = "column" if not is_csv else "CSV column"
            raise error(
                f"{path}: {where} {name!r} holds {dtype} values (e.g. {values.dropna().iloc[0]!r}), "
                f"{record.__name__} expects {kind}; {fix}"
            )


def _all_bools(values: pd.Series) -> bool:
    return all(isinstance(v, bool) or type(v).__name__ == "bool_" for v in values.dropna())


def _all_lists(values: pd.Series) -> bool:
    return all(hasattr(v, "__len__") and not isinstance(v, (str, bytes)) for v in values.dropna())


def _short(err: Exception, limit: int = 200) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
