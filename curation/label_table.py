"""Delimited text tables written by other tools: the delimiter and the header are sniffed, by one fixed rule.

Written here rather than with ``csv.Sniffer``: the sniffer guesses from character frequencies (it can pick a
space or a decimal comma) and has no notion of a whitespace-separated file, so the same file could be read two
ways. The rule, documented in the README:

* delimiter: of tab, comma, semicolon and pipe, those that split every sampled line into two or more fields; the
  one giving the most fields on its worst line wins (ties in that order). When none does, fields are separated by
  runs of spaces or tabs (then a field cannot contain a space).
* header (label CSV): the first line is a header when it names a path column or two known columns, or when its
  box fields are not numbers while the second line's are (a data row ``a.jpg defect`` is not a header).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from curation.errors import LabelImportError

DELIMITERS = ("\t", ",", ";", "|")
WHITESPACE = " "
"""Stands for "runs of spaces or tabs" in :attr:`Table.delimiter`."""
_SAMPLE_LINES = 200

PATH_NAMES = ("path", "file", "filename", "file_name", "image", "image_path", "image_name", "img", "rel_path")
LABEL_NAMES = ("label", "class", "class_name", "category", "defect")
XYXY_NAMES = (
    ("x1", "y1", "x2", "y2"),
    ("xmin", "ymin", "xmax", "ymax"),
    ("x_min", "y_min", "x_max", "y_max"),
    ("left", "top", "right", "bottom"),
)
XYWH_NAMES = (("x", "y", "w", "h"), ("x", "y", "width", "height"))
_KNOWN = {*PATH_NAMES, *LABEL_NAMES, *(n for group in (*XYXY_NAMES, *XYWH_NAMES) for n in group)}


@dataclass(frozen=True)
class Table:
    """A delimited file split into fields; ``lines`` gives each row's 1-based line number in the file."""

    rows: list[list[str]]
    lines: list[int]
    delimiter: str


@dataclass(frozen=True)
class LabelRow:
    """One row of a label CSV: the image key, its label and a pixel box (x, y, w, h) or None."""

    line: int
    key: str
    label: str
    box: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class LabelTable:
    rows: list[LabelRow]
    problems: list[tuple[int, str]]
    """(line, what is wrong and how to fix it) for rows that cannot be used."""


def sniff_delimiter(lines: list[str]) -> str | None:
    """The delimiter of ``lines`` by the module's rule, or None when only whitespace separates fields."""
    best, best_fields = None, 1
    for delimiter in DELIMITERS:
        fewest = min((len(fields) for fields in csv.reader(lines, delimiter=delimiter)), default=0)
        if fewest > best_fields:
            best, best_fields = delimiter, fewest
    return best


def read_table(path: Path, *, what: str, fix: str) -> Table:
    """Read a delimited UTF-8 text file, skipping blank lines.

    Args:
        path: The file.
        what: How messages name the file (e.g. "label CSV").
        fix: Where to set the path, for messages (e.g. "ingest.labels_path").

    Raises:
        LabelImportError: the file is missing, unreadable, not UTF-8 or has no rows.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelImportError(f"{what} {path} not found; fix {fix}") from None
    except OSError as err:
        raise LabelImportError(f"cannot read {what} {path}: {err.strerror}; check {fix}") from err
    except UnicodeDecodeError as err:
        raise LabelImportError(f"{what} {path} is not UTF-8 ({err.reason}); re-save it as UTF-8") from err
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        raise LabelImportError(f"{what} {path} has no rows; fill it or unset {fix}")
    delimiter = sniff_delimiter([line for _, line in numbered[:_SAMPLE_LINES]])
    texts = [line for _, line in numbered]
    if delimiter is None:
        rows = [line.split() for line in texts]
    else:
        rows = [[field.strip() for field in fields] for fields in csv.reader(texts, delimiter=delimiter)]
    return Table(rows, [number for number, _ in numbered], delimiter or WHITESPACE)


def read_label_table(path: Path, *, headerless_box: str = "xyxy") -> LabelTable:
    """Read a box/label CSV: ``path, label`` and optionally four box columns (pixels).

    With a header, columns are found by name (:data:`PATH_NAMES`, :data:`LABEL_NAMES`, ``x1 y1 x2 y2`` or
    ``x y w h`` and their aliases), in any order, other columns ignored. Without one, the columns are
    ``path label`` then ``x1 y1 x2 y2`` (``headerless_box="xyxy"``) or ``x y w h``.

    Raises:
        LabelImportError: the file cannot be read, or its header lacks a path or label column.
    """
    fix = "ingest.labels_path"
    table = read_table(path, what="label CSV", fix=fix)
    rows, lines = table.rows, table.lines
    has_header = _is_header(rows)
    if has_header:
        columns = _header_columns(path, rows[0])
        rows, lines = rows[1:], lines[1:]
    else:
        columns = (0, 1, (2, 3, 4, 5), headerless_box)
    path_at, label_at, box_at, box_kind = columns
    parsed: list[LabelRow] = []
    problems: list[tuple[int, str]] = []
    for line, fields in zip(lines, rows, strict=True):
        try:
            parsed.append(_label_row(line, fields, path_at, label_at, box_at, box_kind, header=has_header))
        except ValueError as err:
            problems.append((line, str(err)))
    return LabelTable(parsed, problems)


def _is_header(rows: list[list[str]]) -> bool:
    first = rows[0]
    names = [field.strip().lower() for field in first]
    if any(name in PATH_NAMES for name in names) or sum(name in _KNOWN for name in names) >= 2:
        return True
    if len(rows) < 2 or len(first) < 3:
        return False
    return not all(_is_number(v) for v in first[2:] if v) and all(_is_number(v) for v in rows[1][2:] if v)


def _header_columns(path: Path, header: list[str]) -> tuple[int, int, tuple[int, ...] | None, str]:
    names = [field.strip().lower() for field in header]
    path_at = next((names.index(n) for n in PATH_NAMES if n in names), None)
    label_at = next((names.index(n) for n in LABEL_NAMES if n in names), None)
    if path_at is None or label_at is None:
        missing = "an image path column" if path_at is None else "a label column"
        allowed = PATH_NAMES if path_at is None else LABEL_NAMES
        raise LabelImportError(
            f"label CSV {path} has a header ({', '.join(header)}) without {missing}; name it one of: "
            f"{', '.join(allowed)}"
        )
    for kind, groups in (("xyxy", XYXY_NAMES), ("xywh", XYWH_NAMES)):
        for group in groups:
            if all(n in names for n in group):
                return path_at, label_at, tuple(names.index(n) for n in group), kind
    return path_at, label_at, None, "xyxy"


def _label_row(
    line: int,
    fields: list[str],
    path_at: int,
    label_at: int,
    box_at: tuple[int, ...] | None,
    box_kind: str,
    *,
    header: bool,
) -> LabelRow:
    width = max(path_at, label_at) + 1
    if not header and len(fields) not in (2, 6):
        raise ValueError(
            f"{len(fields)} fields; expected 'path label' or 'path label' + 4 box numbers ({' '.join(fields)!r})"
        )
    if len(fields) < width:
        raise ValueError(f"only {len(fields)} fields; the path and label columns need {width}")
    key, label = fields[path_at].strip(), fields[label_at].strip()
    if not key or not label:
        raise ValueError("empty path or label; fill it or delete the row")
    values = [fields[at].strip() if box_at is not None and at < len(fields) else "" for at in box_at or ()]
    if not any(values):
        return LabelRow(line, key, label, None)
    if not all(_is_number(v) for v in values):
        raise ValueError(f"box values {values} are not all numbers; give all four or none")
    a, b, c, d = (float(v) for v in values)
    box = (a, b, c - a, d - b) if box_kind == "xyxy" else (a, b, c, d)
    if box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"box has no area (w={box[2]:g}, h={box[3]:g}); check the column order ({box_kind})")
    return LabelRow(line, key, label, box)


def _is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False
