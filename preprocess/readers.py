"""Raw files -> polars frames of text values, checked row by row (`BadRows`).

    read_csv / read_libfm     small raw files, read whole (quoted CSV; libfm `index:1` tokens)
    scan_csv                  large unquoted CSV files, lazily, checked in one streaming pass
    integer_check / number_check / label_check   extra `scan_csv` rules over a column
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ctrbench.core.errors import CtrbenchError, quote
from preprocess.bad_rows import BadRows, Check
from preprocess.inputs import require_file, require_text

LABEL = "label"


def _locate_bad_quoting(path: Path, separator: str) -> str:
    """`path:line: problem` for a CSV file whose quoting broke the parser, as far as it can be told.

    A quote left open makes every later line's running count of quotes odd, so it is on the last line
    where that count turns odd and stays odd; otherwise Python's strict csv reader finds a quote in the
    wrong place (e.g. `"a"b`). Only called once parsing failed: it reads the whole file again.
    """
    lines = read_lines(path)  # stops at the first line that is not UTF-8 itself
    odd = (lines["text"].str.count_matches('"', literal=True).cum_sum() % 2 == 1).to_numpy()
    if odd.size and odd[-1]:
        opened = int(np.flatnonzero(odd & ~np.concatenate([[False], odd[:-1]]))[-1])
        return f"{path}:{lines['line'][opened]}: a quote opened on this line is never closed"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=separator, strict=True)
        try:
            for _ in reader:
                pass
        except csv.Error as exc:
            return f"{path}:{reader.line_num}: misplaced quote ({exc})"
    return f"{path}: broken quoting"


def read_lines(path: Path) -> pl.DataFrame:
    """Every line of a text file: columns `line` (1-based number) and `text` (without CR/LF)."""
    data = require_text(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise CtrbenchError(f"{path}:{line}: not UTF-8 text ({exc.reason}); is this the right file?") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    frame = pl.DataFrame({"text": pl.Series(lines, dtype=pl.String)})
    return frame.select(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("line"),
                        pl.col("text").str.strip_suffix("\r"))


def _counts_per_line(data: bytes, character: str) -> np.ndarray:
    """How often an ASCII `character` occurs on each line of `data`."""
    array = np.frombuffer(data, dtype=np.uint8)
    line_ends = np.flatnonzero(array == ord("\n"))
    if not data.endswith(b"\n"):
        line_ends = np.append(line_ends, len(array))
    return np.diff(np.searchsorted(np.flatnonzero(array == ord(character)), line_ends), prepend=0)


def field_counts(data: bytes, separator: str) -> np.ndarray:
    """Number of `separator`-separated fields on each line of `data` (quotes are not looked at)."""
    return _counts_per_line(data, separator) + 1


def _fields_per_row(data: bytes, separator: str) -> np.ndarray:
    """At least the number of fields of each CSV row in `data` (the header's first): a row goes on over
    the next line while a quote is open (an odd number of quotes so far), and separators inside quotes
    count, so that a row counted short is short."""
    fields = field_counts(data, separator)
    open_at_line_end = np.cumsum(_counts_per_line(data, '"')) % 2 == 1
    row = np.cumsum(np.concatenate([[True], ~open_at_line_end[:-1]])) - 1  # row of each line
    return (np.bincount(row, weights=fields) - (np.bincount(row) - 1)).astype(np.int64)


def read_csv(path: Path, columns: Sequence[str], policy: BadRows, separator: str = ",",
             optional: Sequence[str] = ()) -> pl.DataFrame:
    """A CSV file with exactly this header, every value as a string, plus its `line` numbers.

    The header must list `columns` in this order. A row with fewer fields than the header, a missing or
    empty field outside `optional` (an empty optional field is a missing value: null), or a value after
    its last column, breaks a rule (see `BadRows`); empty fields after the last column (a trailing
    separator) are ignored. Quoted fields may hold separators, quotes ("" inside quotes) and
    newlines; `line` is the line a row starts on. Values keep their text: CR of CRLF files is dropped,
    nothing else is stripped.
    """
    require_text(path)
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    expected = separator.join(columns)
    if header != expected:
        shown = expected.replace("\t", "<TAB>")
        raise CtrbenchError(f"{path}:1: wrong header {quote(header.replace(chr(9), '<TAB>'))}; expected {quote(shown)}")
    # One column for every field the longest row could hold, so that no value after the last column
    # goes unseen (the parser cannot tell an empty field from an absent one, so empty ones pass).
    fields = _fields_per_row(path.read_bytes(), separator)
    widest = int(fields.max())
    overflow = [f"__field_{k}__" for k in range(len(columns) + 1, max(widest, len(columns) + 1) + 1)]
    schema = {name: pl.String for name in [*columns, *overflow]}
    try:
        frame = pl.read_csv(path, has_header=False, skip_rows=1, separator=separator, schema=schema,
                            missing_columns="insert", truncate_ragged_lines=True, extra_columns="ignore")
    except (pl.exceptions.ComputeError, UnicodeDecodeError):
        raise CtrbenchError(f"{_locate_bad_quoting(path, separator)}; fix the file (broken quoting cannot be "
                            "skipped: a quote may span lines)") from None
    # Line of each row: the header, plus one per earlier row, plus the newlines inside earlier quoted values.
    newlines = pl.sum_horizontal(pl.col(c).str.count_matches("\n").fill_null(0) for c in schema)
    frame = frame.with_columns((pl.lit(2, pl.Int64) + pl.int_range(pl.len(), dtype=pl.Int64)
                                + newlines.cum_sum().shift(1, fill_value=0)).alias("line"))
    lines = frame["line"].to_numpy()
    empty_line = frame.select(pl.all_horizontal(pl.col(c).is_null() for c in schema)).to_series().to_numpy()
    keep = policy.check_rules(path, lines, [
        (empty_line, "empty line", None),
        (frame.select(pl.any_horizontal(pl.col(overflow).fill_null("") != "")).to_series().to_numpy(),
         f"more than the header's {len(columns)} fields", None),
        *[((frame[c].fill_null("") == "").to_numpy(), f"missing or empty field {c!r}", None)
          for c in columns if c not in optional],
        # one count per row, as polars reads one row per line outside quotes (empty lines included)
        (fields[1:] < len(columns), f"fewer than the header's {len(columns)} fields", None),
    ])
    return frame.filter(pl.Series(keep)).select("line", *columns)


def read_libfm(path: Path, fields: Sequence[str], labels: tuple[str, str], policy: BadRows,
               index_ranges: Sequence[tuple[int, int]] | None = None) -> pl.DataFrame:
    """A libfm file with one `index:1` token per categorical field, as columns `line`, label, *fields.

    Each line is `LABEL index:1 index:1 ...` with exactly one token per field, in `fields` order
    (CRLF or LF; tokens separated by any whitespace). `labels` are the negative and positive label
    texts, e.g. ("-1", "1"), mapped to 0 and 1. Each field's column holds the token's integer index,
    which must lie in the field's (first, last) entry of `index_ranges` when those are given.
    """
    lines = read_lines(path)
    tokens = lines.select(pl.col("text").str.extract_all(r"\S+")).to_series()
    count = tokens.list.len()
    label_text = tokens.list.get(0, null_on_oob=True)
    columns: dict[str, Any] = {LABEL: (label_text == labels[1]).cast(pl.Float32)}
    rules = [
        ((count != len(fields) + 1).to_numpy(),
         f"expected {len(fields) + 1} tokens (label, then index:1 for {', '.join(fields)})", count),
        (~label_text.is_in(labels).fill_null(False).to_numpy(), f"label must be {labels[0]} or {labels[1]}",
         label_text),
    ]
    for position, name in enumerate(fields, start=1):
        token = tokens.list.get(position, null_on_oob=True)
        parts = token.str.extract_groups(r"^(\d+):(.*)$")
        index = parts.struct.field("1").cast(pl.Int64, strict=False)
        value = parts.struct.field("2").cast(pl.Float64, strict=False)
        parsed = index.is_not_null().to_numpy()
        rules.append((token.is_not_null().to_numpy() & ~parsed,
                      f"token {position} ({name}) is not index:value with a non-negative integer index", token))
        rules.append((parsed & (value != 1).fill_null(True).to_numpy(),
                      f"token {position} ({name}) must have value 1 (one-hot)", token))
        if index_ranges is not None:
            first, last = index_ranges[position - 1]
            rules.append((parsed & ~index.is_between(first, last).fill_null(False).to_numpy(),
                          f"{name} index outside its block {first}-{last}", index))
        columns[name] = index
    keep = policy.check_rules(path, lines["line"].to_numpy(), rules)
    frame = pl.DataFrame({"line": lines["line"], **columns})
    return frame.filter(pl.Series(keep))


def parse_labels(frame: pl.DataFrame, path: Path, policy: BadRows, column: str = LABEL) -> pl.DataFrame:
    """Replace a text label column by float32 0/1; any other value breaks a rule."""
    text = frame[column]
    bad = frame.select(label_check(column)[0]).to_series().to_numpy()
    keep = policy.check(bad, path, frame["line"].to_numpy(), f"{column} must be 0 or 1", text)
    return frame.with_columns(text.cast(pl.Float32, strict=False).alias(column)).filter(pl.Series(keep))


def scan_csv(path: Path, columns: Sequence[str], policy: BadRows, checks: Sequence[Check] = (),
             optional: Sequence[str] = (), null_text: str | None = None, separator: str = ",",
             complete_rows: bool = False) -> tuple[pl.LazyFrame, int]:
    """A large CSV file with exactly this header, lazily: string columns plus `line`, checked in one pass.

    For files whose fields are never quoted (a quote is an ordinary character), so that each line is a
    row and `line` is exact; `read_csv` reads small quoted files. A row breaks a rule when it is empty,
    has more fields than the header, has a missing or empty field outside `optional` (missing or empty
    optional fields become null), or, with `complete_rows`, has fewer fields than the header, or when one
    of `checks` (rules over the string columns, e.g. `integer_check`) says so; `BadRows` stops at the
    earliest or skips and counts them. `null_text` (e.g. "NULL") also reads as missing. The caller casts
    the checked text columns. Returns the frame of the rows to use and their number.
    """
    require_file(path)
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    if header != separator.join(columns):
        raise CtrbenchError(f"{path}:1: wrong header {quote(header)}; expected {quote(separator.join(columns))}")
    overflow = "__more_fields__"
    frame = pl.scan_csv(path, has_header=False, skip_rows=1, separator=separator, quote_char=None,
                        schema={name: pl.String for name in [*columns, overflow]}, null_values=null_text,
                        missing_columns="insert", truncate_ragged_lines=True, row_index_name="line",
                        row_index_offset=2)
    frame = frame.with_columns(pl.col("line").cast(pl.Int64))
    structure: list[Check] = [
        (pl.all_horizontal(pl.col(name).is_null() for name in [*columns, overflow]), "empty line", None),
        (pl.col(overflow).is_not_null(), f"more than the header's {len(columns)} fields", None),
        *[(pl.col(name).is_null(), f"missing or empty field {name!r}", None)
          for name in columns if name not in optional],
    ]
    # The parser reads an absent field as an empty one: a short row is caught above when it lacks a
    # required last column, else by counting separators (a second, numpy-only pass over the file: 4.6 s
    # besides the 7.4 s of the checking pass for a 580 MiB KuaiVideo-like file).
    short = _short_lines(path, separator, len(columns)) if complete_rows and columns[-1] in optional else []
    if len(short):
        structure.append((pl.col("line").is_in(short), f"fewer than the header's {len(columns)} fields", None))
    try:
        frame, rows = policy.check_lazy(frame, path, [*structure, *checks])
    except pl.exceptions.ComputeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CtrbenchError(f"{path}: cannot parse as CSV ({reason}); is this the right file?") from None
    return frame.select("line", *columns), rows


def _short_lines(path: Path, separator: str, fields: int, block_bytes: int = 1 << 24) -> np.ndarray:
    """Numbers of the lines after the header of an unquoted text file with fewer than `fields` fields
    (empty lines included), read `block_bytes` at a time."""
    short, line, carried, pending = [], 1, 0, 0  # line: number of the first line ending in the next block
    with path.open("rb") as handle:
        while block := handle.read(block_bytes):
            array = np.frombuffer(block, dtype=np.uint8)
            ends, separators = np.flatnonzero(array == ord("\n")), np.flatnonzero(array == ord(separator))
            if ends.size:
                counts = np.diff(np.searchsorted(separators, ends), prepend=0)
                counts[0] += carried
                short.append(line + np.flatnonzero(counts + 1 < fields))
                line += ends.size
                carried = separators.size - int(np.searchsorted(separators, ends[-1]))
                pending = array.size - int(ends[-1]) - 1
            else:
                carried, pending = carried + separators.size, pending + array.size
    if pending and carried + 1 < fields:  # a last line without a line end
        short.append(np.array([line]))
    lines = np.concatenate([np.zeros(0, np.int64), *short]).astype(np.int64)
    return lines[lines > 1]


def integer_check(column: str) -> Check:
    """`scan_csv` rule: a present value must be an integer."""
    text = pl.col(column)
    return text.is_not_null() & text.str.to_integer(strict=False).is_null(), f"{column} must be an integer", text


def number_check(column: str) -> Check:
    """`scan_csv` rule: a present value must be a finite number."""
    value = pl.col(column).cast(pl.Float64, strict=False)
    return (pl.col(column).is_not_null() & ~value.is_finite().fill_null(False), f"{column} must be a number",
            pl.col(column))


def label_check(column: str) -> Check:
    """`scan_csv` rule: a label must be 0 or 1 (any number format, e.g. 1.0)."""
    value = pl.col(column).cast(pl.Float64, strict=False)
    return ~value.is_in([0.0, 1.0]).fill_null(False), f"{column} must be 0 or 1", pl.col(column)
