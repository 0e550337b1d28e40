"""Pieces every converter shares.

A converter (preprocess/<dataset>.py) is a short script over these steps:

    load_rules / load_categorical_rules     the `preprocess:` section of its YAML, validated
    detect_release                          which release the raw directory holds (or --release)
    read_csv / read_libfm                   small raw files -> polars frames of text values, checked row by row
      read_csv_splits / read_libfm_splits   ... for releases that ship train/valid/test files
    scan_csv                                large unquoted CSV files -> lazy frames, checked in one streaming pass
    split_positives                         positives-only log -> sampled negatives -> seeded split
    with_histories                          impressions + each user's earlier events -> history list columns
    read_h5_table / read_npy_table          pretrained vectors (BARS .h5 `key`/`value`, or a .npy matrix)
    write_dataset                           vocabularies on train, encode, write atomically, record sources
      write_categorical_dataset             ... for datasets whose features are all categorical

Validation is vectorized: a reader computes, for a whole column at once, a mask of the rows that break
each rule, and `BadRows` either stops at the first bad line (`path:line: problem`) or, with
`--skip-bad-rows`, drops and counts them. Long steps show a spinner and their wall time (`progress`).

How features are encoded (`Feature`, `write_dataset`), following FuxiCTR's rules for the BARS datasets:

* Every vocabulary is fitted on the train split only. A sequence with `share_embedding` uses the vocabulary
  of the feature it names, fitted on that feature's column and on the tokens of every sequence sharing it;
  a value is kept when one of those columns alone holds it `min_count` times (FuxiCTR merges the kept
  values of each column the same way).
* A pretrained_embedding feature's vocabulary is extended by every key of its pretrained table, so that
  items first seen in valid/test still get their vector (FuxiCTR's `expand_vocab`). Its table is written
  aligned to the vocabulary (row = index); padding, OOV and values the table lacks get zero rows.
* Sequences are `^`-joined strings or list columns, oldest item first. Empty tokens are dropped; a
  sequence longer than `max_len` keeps its most recent (last) or oldest (first) `max_len` items
  (`keep`); it is then padded with 0 at the front to exactly `max_len` (FuxiCTR's `padding: pre`), so
  the most recent item is always last.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import h5py
import numpy as np
import polars as pl
import polars.selectors as cs
import pyarrow as pa
import pyarrow.parquet as pq

from ctrbench.config import build_dataclass
from ctrbench.datasets import DATASET_CONFIG_DIR, load_dataset_config
from ctrbench.errors import CtrbenchError, closest, quote, unknown_name
from ctrbench.features import (
    OOV_INDEX,
    PADDING_INDEX,
    DatasetWriter,
    FeatureMap,
    FeatureSpec,
    FeatureType,
    sha256_file,
)
from ctrbench.console import console

FIRST_VALUE_INDEX = 2  # vocabulary indices: 0 padding, 1 out-of-vocabulary, values from 2
LABEL = "label"
SPLITS = ("train", "valid", "test")
SEQUENCE_SEPARATOR = "^"  # joins the items of a sequence in the BARS CSV files
MAX_COUNTED_ID = 1 << 24  # values are counted in an array up to this id (128 MiB), beyond by a hash table
# The smallest id written with k digits (k = 0..20: none with 0, and none of 20, beyond int64) and how many there are.
CANONICAL_LOWEST = np.array([1, 0, *10 ** np.arange(1, 19, dtype=np.uint64), 0], dtype=np.uint64)
CANONICAL_SPAN = np.array([0, 10, *9 * 10 ** np.arange(1, 18, dtype=np.uint64), 2**63 - 10**18, 0], dtype=np.uint64)

Keep = Literal["recent", "oldest"]  # which end of a sequence survives truncation to max_len

Rules = TypeVar("Rules")


# --------------------------------------------------------------------------------------------------
# Configuration, release detection, inputs


def load_rules(dataset: str, rules_class: type[Rules]) -> Rules:
    """The `preprocess:` section of dataset_configs/<dataset>.yaml as a `rules_class` dataclass."""
    section = load_dataset_config(dataset).preprocess
    return rules_from_section(section, rules_class, f"{DATASET_CONFIG_DIR / dataset}.yaml: preprocess")


def rules_from_section(section: Any, rules_class: type[Rules], where: str) -> Rules:
    """Validate a config mapping against dataclass `rules_class`.

    Unknown keys, wrong types, missing keys and values the dataclass's `__post_init__` rejects all stop
    with one line starting with `where` and naming the key.
    """
    try:
        return build_dataclass(rules_class, section or {}, where)
    except CtrbenchError as exc:
        message = str(exc)
        raise CtrbenchError(message if message.startswith(where) else f"{where}: {message}") from None


@dataclass
class CategoricalRules:
    """Preprocessing rules of a dataset whose features are all categorical (Frappe, MovieLens).

    The last three keys only apply to a raw release that holds positives only: the converter samples
    `negatives_per_positive` negatives for each positive and splits all rows by `split` fractions.
    """

    fields: list[str]  # the features to keep, by their processed names
    min_count: int  # values seen fewer times in the train split map to the OOV index
    negatives_per_positive: int
    split: list[float]  # train / valid / test fractions
    seed: int  # seeds the negative sampler and the split

    def __post_init__(self) -> None:
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise CtrbenchError(f"fields must be a non-empty list of distinct names, got {self.fields}")
        if self.min_count < 1:
            raise CtrbenchError(f"min_count must be >= 1, got {self.min_count}")
        if self.negatives_per_positive < 1:
            raise CtrbenchError(f"negatives_per_positive must be >= 1, got {self.negatives_per_positive}")
        if len(self.split) != len(SPLITS) or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-9:
            raise CtrbenchError(f"split must be {len(SPLITS)} positive fractions summing to 1, got {self.split}")



def load_categorical_rules(dataset: str, available: Sequence[str]) -> CategoricalRules:
    """`load_rules` for an all-categorical dataset, also checking that `fields` are among `available`."""
    rules = load_rules(dataset, CategoricalRules)
    for name in rules.fields:
        if name not in available:
            raise CtrbenchError(f"{DATASET_CONFIG_DIR / dataset}.yaml: preprocess.fields: unknown field {name!r}"
                                f"{closest(name, available)}; {dataset} has {', '.join(available)}")
    return rules


def detect_release(raw_dir: Path, releases: dict[str, Sequence[str]], dataset: str, prefer: str | None = None) -> str:
    """Name of the release found in raw_dir: `prefer` if given, else the first whose files are all present.

    `releases` maps a release name (e.g. "bars_x1", "raw") to the file names or glob patterns it needs.
    Prints which release was found; stops with the list of expected files when none matches.
    """
    if not raw_dir.is_dir():
        raise CtrbenchError(f"{raw_dir}: raw directory not found")
    if prefer is not None:
        if prefer not in releases:
            raise unknown_name(f"{dataset} release", prefer, releases)
        missing = [pattern for pattern in releases[prefer] if not any(raw_dir.glob(pattern))]
        if missing:
            raise CtrbenchError(f"{raw_dir / missing[0]}: file not found; the {prefer} release of {dataset} needs "
                                f"{', '.join(releases[prefer])}")
        candidates = [prefer]
    else:
        candidates = list(releases)
    for name in candidates:
        if all(any(raw_dir.glob(pattern)) for pattern in releases[name]):
            console.print(f"{dataset}: found the {name} release in {raw_dir}", highlight=False)
            return name
    expected = "; ".join(f"{name}: {', '.join(patterns)}" for name, patterns in releases.items())
    raise CtrbenchError(f"{raw_dir}: no known {dataset} release here; expected one of these file sets: {expected}")


def describe_inputs(paths: Sequence[Path], rows: dict[str, int] | None = None) -> dict[str, dict]:
    """Checksums (and row counts where known) of the raw files, recorded in the feature map's `source`."""
    rows = rows or {}
    return {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size, **({"rows": rows[p.name]} if p.name in rows else {})}
        for p in paths
    }


@contextmanager
def progress(description: str) -> Iterator[None]:
    """A spinner with `description` while the block runs, then one line with its wall time."""
    start = time.perf_counter()
    with console.status(description):
        yield
    console.print(f"{description}: {time.perf_counter() - start:.1f} s", highlight=False)


# --------------------------------------------------------------------------------------------------
# Bad rows


Check = tuple[pl.Expr, str, pl.Expr | None]  # a rule over a lazy frame: (bad rows, problem, offending value)


@dataclass
class BadRows:
    """What to do with malformed input rows: stop at the first (default) or skip and count them.

    Parsers validate whole columns at once and pass a boolean mask of bad rows together with each
    row's line number in the file; `check` either raises one line naming the file, the line and the
    problem, or returns the mask of rows to keep and adds the skipped ones to the count. `check_lazy`
    does the same for a lazy frame, in one streaming pass.
    """

    skip: bool = False
    skipped: dict[str, int] = field(default_factory=dict)  # "file: problem" -> rows skipped

    def check(self, bad: np.ndarray, path: Path, line_numbers: np.ndarray, problem: str,
              found: pl.Series | None = None) -> np.ndarray:
        """One rule; `found` (optional, one entry per row) is the offending value, quoted in the error."""
        return self.check_rules(path, line_numbers, [(bad, problem, found)])

    def check_rules(self, path: Path, line_numbers: np.ndarray,
                    rules: Sequence[tuple[np.ndarray, str, pl.Series | None]]) -> np.ndarray:
        """Several rules `(bad mask, problem, found values or None)` over the same rows.

        Stops at the earliest bad line in the file (naming the first rule it breaks); when skipping,
        each bad row is counted once, under the first rule it breaks. Returns the mask of rows to keep.
        """
        keep = np.ones(len(line_numbers), dtype=bool)
        first_line, message = None, ""
        for bad, problem, found in rules:
            bad = np.asarray(bad, dtype=bool) & keep
            if not bad.any():
                continue
            row = int(np.argmax(bad))
            if first_line is None or line_numbers[row] < first_line:
                first_line = int(line_numbers[row])
                message = problem if found is None else f"{problem}, found {quote(found[row])}"
            self._count(path, problem, int(bad.sum()))
            keep &= ~bad
        if first_line is not None and not self.skip:
            self._stop(path, first_line, message)
        return keep

    def check_lazy(self, frame: pl.LazyFrame, path: Path, rules: Sequence[Check]) -> tuple[pl.LazyFrame, int]:
        """`check_rules` for a lazy frame with a `line` column: one streaming pass over it.

        Each `Check` is `(bad rows, problem, offending value or None)` as expressions over the frame's
        columns. Returns the frame without the bad rows and the number of rows it keeps.
        """
        broken = pl.lit(None, dtype=pl.Int32)  # index of the first rule a row breaks
        for index, (bad, _, _) in reversed(list(enumerate(rules))):
            broken = pl.when(bad).then(pl.lit(index, dtype=pl.Int32)).otherwise(broken)
        counts = (frame.group_by(broken.alias("rule")).agg(pl.len().alias("rows"), pl.col("line").min())
                  .collect(engine="streaming"))
        bad = counts.filter(pl.col("rule").is_not_null()).sort("line")
        for rule, rows in bad.select("rule", "rows").iter_rows():
            self._count(path, rules[rule][1], rows)
        if not bad.is_empty() and not self.skip:
            rule, line = bad.row(0)[0], bad["line"][0]
            _, problem, found = rules[rule]
            if found is not None:
                value = frame.filter(pl.col("line") == line).select(found).collect().item()
                problem = f"{problem}, found {value!r}"
            self._stop(path, line, problem)
        kept = int(counts["rows"].sum()) - int(bad["rows"].sum())
        return (frame.filter(broken.is_null()) if not bad.is_empty() else frame), kept

    def _count(self, path: Path, problem: str, rows: int) -> None:
        key = f"{path.name}: {problem}"
        self.skipped[key] = self.skipped.get(key, 0) + rows

    @staticmethod
    def _stop(path: Path, line: int, message: str) -> None:
        raise CtrbenchError(f"{path}:{line}: {message}; fix the file or pass --skip-bad-rows")

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def report(self) -> dict[str, int]:
        """Print and return the skipped-row counts (recorded in the feature map's `source`)."""
        for key, count in self.skipped.items():
            console.print(f"skipped {count:,} bad rows ({key})", highlight=False)
        return dict(self.skipped)


# --------------------------------------------------------------------------------------------------
# Readers


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise CtrbenchError(f"{path}: file not found")
    return path


def require_text(path: Path) -> Path:
    """A file that exists and is not empty (an empty input is a failed download or copy, never data)."""
    if require_file(path).stat().st_size == 0:
        raise CtrbenchError(f"{path}: empty file; is the download or copy complete?")
    return path


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


def _most_fields_in_a_row(data: bytes, separator: str) -> int:
    """At least the number of fields of the longest CSV row in `data`: a row goes on over the next
    line while a quote is open (an odd number of quotes so far), and separators inside quotes count."""
    fields = field_counts(data, separator)
    open_at_line_end = np.cumsum(_counts_per_line(data, '"')) % 2 == 1
    row = np.cumsum(np.concatenate([[True], ~open_at_line_end[:-1]])) - 1  # row of each line
    return int((np.bincount(row, weights=fields) - (np.bincount(row) - 1)).max())


def read_csv(path: Path, columns: Sequence[str], policy: BadRows, separator: str = ",") -> pl.DataFrame:
    """A CSV file with exactly this header, every value as a string, plus its `line` numbers.

    The header must list `columns` in this order. A row with a missing or empty field, or with a value
    after its last column, breaks a rule (see `BadRows`); empty fields after the last column (a
    trailing separator) are ignored. Quoted fields may hold separators, quotes ("" inside quotes) and
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
    widest = _most_fields_in_a_row(path.read_bytes(), separator)
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
        *[((frame[c].fill_null("") == "").to_numpy(), f"missing or empty field {c!r}", None) for c in columns],
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
             optional: Sequence[str] = (), null_text: str | None = None,
             separator: str = ",") -> tuple[pl.LazyFrame, int]:
    """A large CSV file with exactly this header, lazily: string columns plus `line`, checked in one pass.

    For files whose fields are never quoted (a quote is an ordinary character), so that each line is a
    row and `line` is exact; `read_csv` reads small quoted files. A row breaks a rule when it is empty,
    has more fields than the header, or has a missing or empty field outside `optional` (these become
    null), or when one of `checks` (rules over the string columns, e.g. `integer_check`) says so; `BadRows`
    stops at the earliest or skips and counts them. `null_text` (e.g. "NULL") also reads as missing. The
    caller casts the checked text columns. Returns the frame of the rows to use and their number.
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
    try:
        frame, rows = policy.check_lazy(frame, path, [*structure, *checks])
    except pl.exceptions.ComputeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CtrbenchError(f"{path}: cannot parse as CSV ({reason}); is this the right file?") from None
    return frame.select("line", *columns), rows


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


# --------------------------------------------------------------------------------------------------
# Building splits from positives


def sample_negatives(positives: pl.DataFrame, sampled: str, exclude_by: Sequence[str], per_positive: int,
                     seed: int) -> pl.DataFrame:
    """`per_positive` negatives for each positive row, drawn the NFM way.

    A negative copies its positive row and replaces the `sampled` column (e.g. the item) by a value
    drawn uniformly from all values of that column in `positives`, excluding every value that occurs
    with the row's `exclude_by` key (e.g. the user) anywhere in `positives`, and distinct from the
    row's other negatives. Negative j of positive i is output row i * per_positive + j.

    Vectorized rejection sampling: all draws at once, then only the rejected ones are redrawn, round
    after round (a handful of rounds unless most values are excluded for some key).
    """
    values = positives[sampled]
    universe = values.unique().sort()
    n_values = len(universe)
    value_code = universe.search_sorted(values).to_numpy().astype(np.int64)
    key_code = positives.select(pl.struct(exclude_by).rank("dense")).to_series().to_numpy().astype(np.int64) - 1
    used = np.sort(key_code * n_values + value_code)  # (key, value) pairs that occur, sorted and deduplicated
    used = used[np.concatenate([[True], used[1:] != used[:-1]])]
    free = n_values - np.bincount(used // n_values, minlength=int(key_code.max()) + 1)
    if free.min() < per_positive:
        row = int(np.argmax(free[key_code] < per_positive))
        key = positives.select(exclude_by).row(row, named=True)
        raise CtrbenchError(f"cannot sample {per_positive} negatives for {key}: only {int(free[key_code[row]])} "
                            f"of the {n_values} {sampled} values never occur with it")

    rng = np.random.default_rng(seed)
    keys = np.repeat(key_code, per_positive)  # draw d belongs to positive d // per_positive
    draws = rng.integers(0, n_values, size=len(keys))
    pending = np.arange(len(keys))
    while pending.size:
        pair = keys[pending] * n_values + draws[pending]
        rejected = used[np.minimum(np.searchsorted(used, pair), len(used) - 1)] == pair
        first_of_row = pending - pending % per_positive
        for other in range(per_positive):  # equal to another draw of the same positive
            sibling = first_of_row + other
            rejected |= (sibling != pending) & (draws[sibling] == draws[pending])
        pending = pending[rejected]
        draws[pending] = rng.integers(0, n_values, size=pending.size)
    negatives = positives.select(pl.all().gather(np.repeat(np.arange(len(positives)), per_positive)))
    return negatives.with_columns(universe.gather(draws).alias(sampled))


def split_rows(rows: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """A seeded random partition of row indices 0..rows-1 into len(fractions) parts, each sorted.

    Part k ends at round(rows * (f_0 + ... + f_k)) (half to even) of a seeded permutation.
    """
    order = np.random.default_rng(seed).permutation(rows)
    bounds = np.round(np.cumsum([0.0, *fractions]) * rows).astype(np.int64)
    bounds[-1] = rows
    return [np.sort(order[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


# --------------------------------------------------------------------------------------------------
# Validation split and behaviour histories


@dataclass
class ValidationRule:
    """Where the valid split comes from, for releases that ship only train and test (the BARS x1
    MicroVideo, KuaiVideo and TaobaoAd releases validate on their test rows).

    `valid: test` does as BARS: the valid split is the test split (its files are listed for both), so
    early stopping sees the test set. `valid: holdout` moves a seeded random `valid_fraction` of the
    train rows (chosen by a hash of their line number in the raw file) to valid instead.
    """

    valid: Literal["test", "holdout"]
    valid_fraction: float
    seed: int

    def __post_init__(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise CtrbenchError(f"valid_fraction must be between 0 and 1, got {self.valid_fraction}")

    def split(self, train: pl.LazyFrame, test: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
        """The splits to write from the raw train and test rows (each with a `line` column)."""
        if self.valid == "test":
            return {"train": train, "test": test}
        buckets = 1 << 20
        held_out = pl.col("line").hash(self.seed) % buckets < round(self.valid_fraction * buckets)
        return {"train": train.filter(~held_out), "valid": train.filter(held_out), "test": test}


@dataclass
class SequenceRules(ValidationRule):
    """Preprocessing rules of a dataset with behaviour sequences (MicroVideo, KuaiVideo, TaobaoAds)."""

    min_count: int  # categorical values seen fewer times in train map to OOV
    max_len: int  # items kept per sequence
    keep: Keep  # which end of a longer sequence is kept: the most recent or the oldest items

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_count < 1:
            raise CtrbenchError(f"min_count must be >= 1, got {self.min_count}")
        if self.max_len < 1:
            raise CtrbenchError(f"max_len must be >= 1, got {self.max_len}")


@contextmanager
def scratch_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary directory next to `out_dir` (on the same disk) for intermediate files; removed on exit."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.scratch-") as path:
        yield Path(path)


def history_rows(event_users: np.ndarray, event_times: np.ndarray, users: np.ndarray, times: np.ndarray,
                 max_len: int, keep: Keep) -> tuple[np.ndarray, np.ndarray]:
    """The events in each impression's history, found by sorting, not by looping over users.

    Returns `(offsets, rows)`: the history of impression i is the event rows
    `rows[offsets[i] : offsets[i + 1]]`, i.e. the events of user `users[i]` strictly before `times[i]`,
    oldest first (ties in input order), at most `max_len` of them: the most recent ones
    (`keep="recent"`) or the oldest ones (`keep="oldest"`).
    """
    n_events = len(event_users)
    all_users = np.concatenate([event_users, users])
    all_times = np.concatenate([event_times, times])
    is_event = np.arange(len(all_users)) < n_events
    # One list by user, then time; at equal times impressions come first, so an event at the impression's
    # own time is not part of its history.
    order = np.lexsort((is_event, all_times, all_users))
    sorted_is_event = is_event[order]
    events_before = np.cumsum(sorted_is_event) - sorted_is_event  # events at earlier positions of the list
    sorted_users = all_users[order]
    new_user = np.concatenate([[True], sorted_users[1:] != sorted_users[:-1]])
    events_before_user = events_before[new_user][np.cumsum(new_user) - 1]  # events of earlier users
    position = np.flatnonzero(~sorted_is_event)
    end = events_before[position]
    length = np.minimum(end - events_before_user[position], max_len)
    start = end - length if keep == "recent" else events_before_user[position]
    impression = order[position] - n_events
    starts, lengths = np.empty(len(users), np.int64), np.empty(len(users), np.int64)
    starts[impression], lengths[impression] = start, length
    offsets, windows = window_rows(starts, lengths)
    return offsets, order[sorted_is_event][windows]  # (events sorted by user, then time)[windows]


def window_rows(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive windows `starts[i] .. starts[i] + lengths[i] - 1`, flattened: `(offsets, rows)` with
    window i at `rows[offsets[i] : offsets[i + 1]]`."""
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])


def write_parts(parts: Iterable[pl.DataFrame], directory: Path, row_group_rows: int = 16_384) -> pl.LazyFrame:
    """Write frames one by one to `directory` and scan them: fast lz4 parquet (read back once or twice),
    in small row groups, since a streaming reader decodes a few whole row groups at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for number, part in enumerate(parts):
        files.append(directory / f"part-{number:05d}.parquet")
        part.write_parquet(files[-1], compression="lz4", row_group_size=row_group_rows)
    return pl.scan_parquet(files)


def list_column(values: pl.Series, offsets: np.ndarray, rows: np.ndarray) -> pl.Series:
    """A list column: row i holds `values[rows[offsets[i] : offsets[i + 1]]]`."""
    items = values.gather(rows).to_arrow()
    return pl.Series(values.name, pa.LargeListArray.from_arrays(pa.array(offsets), items))


def with_histories(impressions: pl.DataFrame, events: pl.LazyFrame, histories: dict[str, str], *, user: str,
                   time: str, max_len: int, keep: Keep, scratch: Path,
                   values_per_part: int = 50_000_000) -> pl.LazyFrame:
    """`impressions` plus one list column per `histories` entry (new column -> events column).

    A history holds the values of the same user's `events` strictly before the impression's `time`,
    oldest first, at most `max_len` of them (`history_rows`); so it never sees the impression itself
    or anything after it. `user` and `time` are integer columns of both frames.

    Scales with the data, not with memory: events are streamed once into `scratch`, partitioned by a
    hash of the user (keeping only users with impressions, and events before their last impression);
    then each part's impressions get their histories from that part's events and are written to
    `scratch`, sized so a part holds about `values_per_part` history values. Rows come back grouped by
    part, each part in the impressions' order (one part, the input order, when the data is small).
    The returned lazy frame reads `scratch`, which must outlive it.
    """
    parts = max(1, -(-len(impressions) * max_len * len(histories) // values_per_part))
    part_of = (pl.col(user).hash(seed=0) % parts).alias("part")
    last_impression = impressions.lazy().group_by(user).agg(pl.col(time).max().alias("_last"))
    with progress(f"streaming the events into {parts} part(s) by user"):
        # The streaming join and sink do not keep the input order; `_event` restores it, so that events
        # at equal times stay in input order whatever the number of parts.
        (events.select(user, time, *histories.values())
         .with_row_index("_event")
         .join(last_impression, on=user, how="inner")
         .filter(pl.col(time) < pl.col("_last"))
         .select(part_of, "_event", user, time, *histories.values())
         .sink_parquet(pl.PartitionBy(scratch / "events", key="part", include_key=False), mkdir=True,
                       engine="streaming"))
    impressions = impressions.with_columns(part_of)

    def with_lists(part: int) -> pl.DataFrame:
        chunk = impressions.filter(pl.col("part") == part).drop("part")
        event_files = sorted((scratch / "events" / f"part={part}").glob("*.parquet"))
        chunk_events = pl.read_parquet(event_files).sort("_event") if event_files else pl.DataFrame(
            schema=events.select(user, time, *histories.values()).collect_schema())
        offsets, rows = history_rows(chunk_events[user].to_numpy(), chunk_events[time].to_numpy(),
                                     chunk[user].to_numpy(), chunk[time].to_numpy(), max_len, keep)
        return chunk.with_columns(list_column(chunk_events[column].alias(name), offsets, rows)
                                  for name, column in histories.items())

    with progress(f"building histories of {len(impressions):,} impressions in {parts} part(s)"):
        return write_parts(map(with_lists, range(parts)), scratch / "histories")


# --------------------------------------------------------------------------------------------------
# Vocabularies and pretrained tables


def integer_ids(values: pl.Series) -> np.ndarray:
    """Values as int64 ids: non-negative integers, or their text in canonical decimal form ("7", not "07",
    "+7" or " 7"); -1 for anything else (nulls, other text, negative numbers). A vocabulary of ids holds
    no other text, so all of these are out of it."""
    if values.dtype != pl.String:
        ids = values.cast(pl.Int64, strict=False).fill_null(-1).to_numpy()
        return np.maximum(ids, -1)
    ids = values.str.to_integer(strict=False).fill_null(-1).to_numpy()
    digits = np.minimum(values.str.len_bytes().fill_null(0).to_numpy(), 20)  # canonical text: as many bytes as digits
    # ids of k digits are lowest[k] + 0 .. span[k] - 1 (unsigned: -1 wraps to beyond every span)
    canonical = ids.view(np.uint64) - CANONICAL_LOWEST[digits] < CANONICAL_SPAN[digits]
    return np.where(canonical, ids, -1)


@dataclass(frozen=True)
class Vocabulary:
    """The kept values of one categorical feature; value k of `values` has index FIRST_VALUE_INDEX + k."""

    values: pl.Series

    @property
    def size(self) -> int:
        """Rows of the embedding table: padding, OOV and one per value."""
        return FIRST_VALUE_INDEX + len(self.values)

    @classmethod
    def build(cls, train_values: pl.Series, min_count: int) -> Vocabulary:
        """Values seen at least `min_count` times, most frequent first, ties by ascending value.

        Built on the train split only (as FuxiCTR does), so values seen only in valid/test are OOV.
        """
        counts = train_values.drop_nulls().value_counts(name="count").rename({train_values.name: "value"})
        return cls.from_counts([counts], min_count)

    @classmethod
    def from_counts(cls, counts: Sequence[pl.DataFrame], min_count: int) -> Vocabulary:
        """The vocabulary of several columns sharing one table, from each column's (`value`, `count`)
        frame: a value is kept when one column alone holds it `min_count` times; kept values are
        ordered by their count over all columns, most frequent first, ties by ascending value."""
        totals = pl.concat(counts).group_by("value").agg(pl.col("count").sum(), pl.col("count").max().alias("most"))
        kept = totals.filter(pl.col("most") >= min_count).sort(["count", "value"], descending=[True, False])
        return cls(kept["value"])

    def extended(self, keys: pl.Series) -> Vocabulary:
        """This vocabulary plus the `keys` it lacks, appended in ascending order. The keys are looked up as
        values are encoded (`lookup`: an array for ids), and only the missing ones are sorted."""
        keys = keys.drop_nulls().unique()
        missing = keys.filter(pl.Series(self.lookup(keys) == OOV_INDEX)).sort()
        return Vocabulary(pl.concat([self.values, missing]))

    def encode(self, values: pl.Series | pl.Expr) -> pl.Series | pl.Expr:
        """int32 indices; values not in the vocabulary (and nulls) get the OOV index.

        Builds a hash map of the whole vocabulary on every call: for encoding a split batch by batch,
        `lookup` builds its table once."""
        indices = pl.int_range(FIRST_VALUE_INDEX, self.size, dtype=pl.Int32, eager=True)
        return values.replace_strict(self.values, indices, default=OOV_INDEX, return_dtype=pl.Int32)

    def lookup(self, values: pl.Series, ids: np.ndarray | None = None) -> np.ndarray:
        """`encode(values)` as an int32 array, by an array lookup when the vocabulary is integer ids.

        The array (`integer_table`) is built on the first call and kept, so that the cost per batch
        does not grow with the vocabulary (the hash map of `encode`, rebuilt per batch, took 2.1 s for a
        20k-row column of up-to-100-item histories at 3.2M ids, 0.07 s at 1k ids; the array lookup about
        0.1 s at either). `ids`: `integer_ids(values)`, if already computed.
        """
        table = self.integer_table
        if table is None:
            return self.encode(values).to_numpy()
        ids = integer_ids(values) if ids is None else ids
        return table[np.minimum(ids.view(np.uint64), len(table) - 1)]  # -1 (not an id) becomes the largest

    @functools.cached_property
    def integer_table(self) -> np.ndarray | None:
        """Index of every id 0..max as an array (OOV where absent, and in one last row for values that
        are not ids), when the values are non-negative integers (or their canonical decimal text) and
        the array is at most 4 entries per value or MAX_COUNTED_ID entries (64 MiB); else None."""
        values = self.values
        if values.dtype == pl.String:
            if not values.str.contains(r"^(0|[1-9][0-9]{0,17})$").all():
                return None
            values = values.cast(pl.Int64)
        elif not values.dtype.is_integer():
            return None
        ids = values.to_numpy().astype(np.int64, copy=False)
        if len(ids) == 0 or ids.min() < 0 or ids.max() >= max(4 * len(ids), MAX_COUNTED_ID):
            return None
        table = np.full(int(ids.max()) + 2, OOV_INDEX, dtype=np.int32)
        table[ids] = np.arange(FIRST_VALUE_INDEX, self.size, dtype=np.int32)
        return table


@dataclass(frozen=True)
class PretrainedTable:
    """Pretrained vectors of some values of a feature: row k of `vectors` belongs to value `keys[k]`."""

    keys: pl.Series
    vectors: np.ndarray  # [len(keys), dim]; may be a read-only memory map
    path: Path  # where it was read from, for messages

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


def read_h5_table(path: Path) -> PretrainedTable:
    """A BARS embedding file: HDF5 datasets `key` (N values) and `value` (N x dim vectors)."""
    require_file(path)
    try:
        with h5py.File(path, "r") as h5:
            missing = [name for name in ("key", "value") if name not in h5]
            if missing:
                raise CtrbenchError(f"{path}: no dataset {missing[0]!r}; a BARS embedding file holds `key` and "
                                    f"`value`, this one holds {', '.join(sorted(h5)) or 'nothing'}")
            keys, vectors = h5["key"][:], h5["value"][:]
    except OSError as exc:
        raise CtrbenchError(f"{path}: not a readable HDF5 file ({exc}); is this the right file?") from None
    if keys.dtype.kind in "SO":  # byte strings, as h5py stores text
        keys = np.array([k.decode() if isinstance(k, bytes) else str(k) for k in keys], dtype=object)
    return _checked_table(path, pl.Series("key", keys), vectors)


def read_npy_table(path: Path, first_key: int = 0) -> PretrainedTable:
    """A .npy matrix whose row r is the vector of integer value `first_key + r` (read as a memory map)."""
    require_file(path)
    try:
        vectors = np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise CtrbenchError(f"{path}: not a readable .npy matrix ({exc}); is this the right file?") from None
    keys = pl.int_range(first_key, first_key + len(vectors), dtype=pl.Int64, eager=True).alias("key")
    return _checked_table(path, keys, vectors)


def _checked_table(path: Path, keys: pl.Series, vectors: np.ndarray) -> PretrainedTable:
    if vectors.ndim != 2 or vectors.dtype.kind not in "fiu":
        raise CtrbenchError(f"{path}: vectors must be a 2-d numeric matrix, found shape {vectors.shape} of "
                            f"{vectors.dtype}")
    if keys.len() != len(vectors):
        raise CtrbenchError(f"{path}: {keys.len():,} keys but {len(vectors):,} vectors")
    if keys.is_duplicated().any():
        raise CtrbenchError(f"{path}: key {keys.filter(keys.is_duplicated())[0]!r} appears more than once")
    return PretrainedTable(keys, vectors, path)


def write_pretrained_table(path: Path, vocabulary: Vocabulary, tables: Sequence[PretrainedTable],
                           rows_per_chunk: int = 1 << 16) -> int:
    """The tables' vectors as one float32 .npy matrix aligned to `vocabulary` (row = index).

    Padding, OOV and vocabulary values without a vector get zero rows: frozen, they add nothing (as in
    FuxiCTR); keys outside the vocabulary are left out. Written through a memory map, chunk by chunk.
    Returns the number of vocabulary values without a vector.
    """
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(vocabulary.size, tables[0].dim))
    covered = 0
    for table in tables:
        rows = vocabulary.lookup(table.keys.cast(vocabulary.values.dtype))
        for start in range(0, len(rows), rows_per_chunk):
            chunk_rows = rows[start:start + rows_per_chunk]
            known = chunk_rows != OOV_INDEX  # keys outside the vocabulary have no row
            matrix[chunk_rows[known]] = table.vectors[start:start + rows_per_chunk][known]
        covered += int((rows != OOV_INDEX).sum())
    matrix.flush()
    del matrix
    return len(vocabulary.values) - covered


# --------------------------------------------------------------------------------------------------
# The releases' common shapes


@dataclass
class RawSplits:
    """What a converter read: per split, a frame of raw column values plus a float32 0/1 `label`
    (eager or lazy), and the rows it used from each input file. Without a `valid` frame, the test
    split serves as valid (`ValidationRule`). `notes` go to the feature map's `source`."""

    frames: dict[str, pl.DataFrame | pl.LazyFrame]
    input_rows: dict[Path, int]
    notes: dict[str, Any] = field(default_factory=dict)


def read_csv_splits(raw_dir: Path, files: dict[str, str], fields: Sequence[str], policy: BadRows) -> RawSplits:
    """Given splits as CSV files (BARS x1 style): header `label,<fields>`, labels 0/1."""
    frames = {}
    for split, name in files.items():
        frames[split] = parse_labels(read_csv(raw_dir / name, [LABEL, *fields], policy), raw_dir / name, policy)
    return RawSplits(frames, {raw_dir / files[split]: len(frame) for split, frame in frames.items()})


def read_libfm_splits(raw_dir: Path, files: dict[str, str], fields: Sequence[str], policy: BadRows,
                      index_ranges: Sequence[tuple[int, int]] | None = None) -> RawSplits:
    """Given splits as libfm files (NFM/AFN style): labels -1/1, one `index:1` token per field."""
    frames = {split: read_libfm(raw_dir / name, fields, ("-1", "1"), policy, index_ranges)
              for split, name in files.items()}
    return RawSplits(frames, {raw_dir / files[split]: len(frame) for split, frame in frames.items()})


def split_positives(positives: pl.DataFrame, source: Path, sampled: str, exclude_by: Sequence[str],
                    rules: CategoricalRules) -> RawSplits:
    """Splits built from a positives-only log (read from `source`).

    Adds `rules.negatives_per_positive` sampled negatives per positive (`sample_negatives`, seeded by
    `rules.seed`), then splits all rows at random by `rules.split` (seeded by `rules.seed + 1`), as
    NFM/AFN built Frappe and MovieLens for BARS.
    """
    per_positive = rules.negatives_per_positive
    with progress(f"sampling {per_positive} negatives for each of {len(positives):,} positives"):
        negatives = sample_negatives(positives, sampled, exclude_by, per_positive, rules.seed)
    rows = pl.concat([positives.with_columns(pl.lit(1.0, pl.Float32).alias(LABEL)),
                      negatives.with_columns(pl.lit(0.0, pl.Float32).alias(LABEL))])
    parts = split_rows(len(rows), rules.split, rules.seed + 1)
    return RawSplits({split: rows[part] for split, part in zip(SPLITS, parts)}, {source: len(positives)})


# --------------------------------------------------------------------------------------------------
# Encoding and writing


@dataclass(frozen=True)
class Feature:
    """How one processed feature is made from a column of the raw splits (see the module docstring).

    categorical           values -> vocabulary indices (`min_count` on train)
    pretrained_embedding  the same, plus the vectors of `pretrained` (tables with distinct keys)
    numeric               numbers -> float32; `transform` records what the converter did to them
    sequence              `^`-joined strings or lists -> `max_len` indices, truncated keeping `keep`,
                          front-padded with 0; `share_embedding` names the feature whose vocabulary
                          and table it uses, else it has its own vocabulary (`min_count`)
    """

    name: str
    type: FeatureType
    column: str | None = None  # the raw column, if not `name`
    min_count: int = 1
    max_len: int | None = None
    keep: Keep = "recent"
    share_embedding: str | None = None
    pretrained: tuple[PretrainedTable, ...] = ()
    transform: str | None = None

    @property
    def source(self) -> str:
        return self.column or self.name


def count_values(train: pl.LazyFrame, queries: Sequence[tuple[str, bool]]) -> dict[tuple[str, bool], pl.DataFrame]:
    """(`value`, `count`) of each queried column's values (or, for `(column, True)`, a sequence column's items)
    over the train rows, nulls and empty items left out. The `^`-joined histories are counted together, in one
    pass over the rows (`count_joined_ids`); other columns one at a time by a streaming group_by."""
    schema = train.collect_schema()
    joined = list(dict.fromkeys(column for column, sequence in queries if sequence and schema[column] == pl.String))
    counts = {(column, True): frame for column, frame in count_joined_ids(train, joined).items()}
    for column, sequence in queries:
        if (column, sequence) not in counts:
            values = pl.col(column).explode() if sequence else pl.col(column)
            counts[column, sequence] = (train.select(values.alias("value")).drop_nulls().group_by("value")
                                        .agg(pl.len().alias("count")).collect(engine="streaming"))
    return counts


def count_joined_ids(train: pl.LazyFrame, columns: Sequence[str], rows_per_batch: int = 50_000) -> dict[str, pl.DataFrame]:
    """`count_values` of `^`-joined text columns, read together batch by batch. Their items that are ids
    (`integer_ids`) are counted in an array per column (np.bincount): a group_by over a million distinct
    texts cost more than splitting the histories. Other items go through polars's value_counts. An id
    counted by number is written back as its canonical text, the only form `integer_ids` accepts: the same
    text."""
    by_id = {column: np.zeros(0, dtype=np.int64) for column in columns}
    others: dict[str, list[pl.DataFrame]] = {column: [] for column in columns}
    batches = train.select(columns).collect_batches(chunk_size=rows_per_batch) if columns else ()
    for batch in batches:
        for column in columns:
            items, _ = sequence_items(batch[column])
            ids = integer_ids(items)
            counted = (ids >= 0) & (ids < MAX_COUNTED_ID)
            every = bool(counted.all())  # the usual case: no copy of the ids, no other items
            found = np.bincount(ids if every else ids[counted])
            if len(found) > len(by_id[column]):
                by_id[column] = np.concatenate([by_id[column], np.zeros(len(found) - len(by_id[column]), np.int64)])
            by_id[column][:len(found)] += found
            if not every:
                others[column].append(items.filter(pl.Series(~counted)).rename("value").value_counts(name="count"))
    counts = {}
    for column in columns:
        present = np.flatnonzero(by_id[column])
        frames = [pl.DataFrame({"value": pl.Series(present).cast(pl.String), "count": by_id[column][present]}),
                  *others[column]]
        frame = pl.concat([frame.cast({"count": pl.get_index_type()}) for frame in frames])
        counts[column] = frame.group_by("value").agg(pl.col("count").sum()) if others[column] else frame
    return counts


def sequence_items(column: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """A batch of a sequence column (`^`-joined text or lists) as its items, oldest first, in one flat series,
    and each row's number of items. Null rows have none; empty text items ("", "1^^2", "^1") are dropped."""
    lists = column.str.split(SEQUENCE_SEPARATOR) if column.dtype == pl.String else column
    items = lists.explode(empty_as_null=False, keep_nulls=False)
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    if column.dtype == pl.String:
        empty = items.str.len_bytes().to_numpy() == 0
        if empty.any():
            rows = np.repeat(np.arange(len(column)), lengths)[~empty]
            lengths = np.bincount(rows, minlength=len(column))
            items = items.filter(pl.Series(~empty))
    return items, lengths


def encode_sequence(column: pl.Series, vocabularies: Sequence[Vocabulary], max_len: int,
                    keep: Keep) -> list[pl.Series]:
    """A batch of a sequence column (`^`-joined text or lists) -> for each vocabulary, exactly `max_len`
    int32 indices per row: truncated keeping the most recent (last) or the oldest (first) `max_len`
    items, then padded with 0 at the front. The column is split once, however many vocabularies encode
    it; the items of all rows are encoded at once (`Vocabulary.lookup`) and placed in a matrix by one
    boolean mask (row i's last `kept[i]` cells, filled in row-major order: the rows' items in order)."""
    items, lengths = sequence_items(column)
    kept = np.minimum(lengths, max_len)
    if (kept < lengths).any():
        first = np.cumsum(lengths) - lengths + (lengths - kept if keep == "recent" else 0)
        items = items.gather(window_rows(first, kept)[1])
    ids = integer_ids(items) if any(v.integer_table is not None for v in vocabularies) else None
    filled = np.arange(max_len) >= (max_len - kept)[:, None]
    encoded = []
    for vocabulary in vocabularies:
        matrix = np.full((len(column), max_len), PADDING_INDEX, dtype=np.int32)
        matrix[filled] = vocabulary.lookup(items, ids)
        encoded.append(pl.Series(column.name, matrix).cast(pl.List(pl.Int32)))
    return encoded


def encode_batches(column: pl.Expr, dtype: pl.DataType, encode: Callable[[pl.Series], pl.Series]) -> pl.Expr:
    """`encode` applied to each batch of a column, in a form polars's streaming engine runs batch by batch
    (marked elementwise: each row's result depends on that row only)."""
    return column.map_batches(encode, return_dtype=dtype, is_elementwise=True)


def fit_vocabularies(train: pl.LazyFrame, features: Sequence[Feature]) -> dict[str, Vocabulary]:
    """The vocabulary of every feature that owns a table (all but numeric and shared sequences), fitted
    on the train rows in one streaming pass, and extended by its pretrained tables' keys."""
    owners = [f for f in features if f.type != "numeric" and f.share_embedding is None]
    queries, owner_of = [], []
    for owner in owners:
        for feature in [owner, *[f for f in features if f.share_embedding == owner.name]]:
            queries.append((feature.source, feature.type == "sequence"))
            owner_of.append(owner.name)
    counted = count_values(train, list(dict.fromkeys(queries)))  # a column several features use: counted once
    counts = [counted[query] for query in queries]
    vocabularies = {}
    for owner in owners:
        owned = [frame for frame, name in zip(counts, owner_of) if name == owner.name]
        dtypes = {frame["value"].dtype for frame in owned}
        if len(dtypes) > 1:
            raise CtrbenchError(f"{owner.name}: the columns sharing its vocabulary hold different types {dtypes}")
        vocabulary = Vocabulary.from_counts(owned, owner.min_count)
        for table in owner.pretrained:
            try:
                vocabulary = vocabulary.extended(table.keys.cast(vocabulary.values.dtype))
            except pl.exceptions.InvalidOperationError:
                raise CtrbenchError(f"{table.path}: keys of type {table.keys.dtype} do not match the values of "
                                    f"{owner.name} ({vocabulary.values.dtype})") from None
        vocabularies[owner.name] = vocabulary
    return vocabularies


def stored_once(targets: Sequence[tuple[str, str, Vocabulary]]) -> dict[str, tuple[str, str | None, np.ndarray | None]]:
    """Which of the sequences made from one raw column (name, table owner, vocabulary) are stored.

    A sequence whose vocabulary's values all belong to a stored one's (KuaiVideo's pos_items, item_id
    at min count 10, inside pos_items_emb's item_emb, every item) is not stored: it reads that column
    through an index map, the stored vocabulary's index -> its own (padding and OOV to themselves),
    exact since a value outside the larger vocabulary is outside the smaller one too. Returns, per
    name: the column it reads, its map's file (None: the same vocabulary), and the map (None where
    another sequence writes that file, or none is needed).
    """
    kept: list[tuple[str, str, Vocabulary]] = []
    plan, written = {}, set()
    for name, owner, vocabulary in sorted(targets, key=lambda target: -target[2].size):  # larger first
        into = next((k for k in kept if k[2] is vocabulary or (k[2].lookup(vocabulary.values) != OOV_INDEX).all()), None)
        if into is None:
            kept.append((name, owner, vocabulary))
            plan[name] = name, None, None
        elif into[2] is vocabulary:
            plan[name] = into[0], None, None
        else:
            path = f"index_maps/{into[1]}-{owner}.npy"
            mapping = None if path in written else np.concatenate(
                [np.array([PADDING_INDEX, OOV_INDEX], np.int32), vocabulary.lookup(into[2].values)])
            written.add(path)
            plan[name] = into[0], path, mapping
    return plan


def encoding(features: Sequence[Feature], vocabularies: dict[str, Vocabulary]
             ) -> tuple[list[FeatureSpec], list[pl.Expr], dict[str, np.ndarray]]:
    """Each feature's spec, the expressions computing the processed columns from the raw columns, and the
    index maps to write (relative path -> int32 array).

    The sequences made from one raw column (e.g. KuaiVideo's pos_items and pos_items_emb) come out of
    one struct column, to be unnested: the column is split once for all of them, and stored once where
    one's vocabulary holds the others' (`stored_once`).
    """
    specs, columns, sequences, index_maps = [], [], {}, {}
    for feature in features:
        if feature.type == "numeric":
            specs.append(FeatureSpec(name=feature.name, type=feature.type, transform=feature.transform))
            columns.append(pl.col(feature.source).cast(pl.Float32).alias(feature.name))
            continue
        vocabulary = vocabularies[feature.share_embedding or feature.name]
        specs.append(FeatureSpec(name=feature.name, type=feature.type, vocab_size=vocabulary.size,
                                 padding_idx=PADDING_INDEX, oov_idx=OOV_INDEX, max_len=feature.max_len,
                                 share_embedding=feature.share_embedding, min_count=feature.min_count,
                                 embedding_source=f"pretrained/{feature.name}.npy" if feature.pretrained else None,
                                 pretrained_dim=feature.pretrained[0].dim if feature.pretrained else None))
        if feature.type == "sequence":
            sequences.setdefault((feature.source, feature.max_len, feature.keep), []).append(
                (feature.name, feature.share_embedding or feature.name, vocabulary))
        else:
            columns.append(encode_batches(pl.col(feature.source), pl.Int32,
                                          lambda values, v=vocabulary: pl.Series(v.lookup(values)))
                           .alias(feature.name))
    for (source, max_len, keep), targets in sequences.items():
        plan = stored_once(targets)
        for i, spec in enumerate(specs):
            if spec.name in plan and plan[spec.name][0] != spec.name:
                column, path, mapping = plan[spec.name]
                specs[i] = dataclasses.replace(spec, column=column, index_map=path)
                if mapping is not None:
                    index_maps[path] = mapping
        names, vocabs = zip(*[(name, vocabulary) for name, _, vocabulary in targets if plan[name][0] == name])

        def encode(column: pl.Series, names=names, vocabs=vocabs, max_len=max_len, keep=keep) -> pl.Series:
            encoded = encode_sequence(column, vocabs, max_len, keep)
            return pl.DataFrame(dict(zip(names, encoded))).to_struct(column.name)

        dtype = pl.Struct({name: pl.List(pl.Int32) for name in names})
        columns.append(encode_batches(pl.col(source), dtype, encode).alias(f"{source}:{max_len}:{keep}"))
    return specs, columns, index_maps


def write_dataset(out_dir: Path, dataset: str, release: str, raw: RawSplits, features: Sequence[Feature],
                  rules: Any, policy: BadRows, reference: tuple[str, dict[str, int]]) -> FeatureMap:
    """Encode `features` of the raw splits and write the processed dataset (atomically).

    Vocabularies are fitted on the train split (`fit_vocabularies`); each split is encoded and written
    by one streaming pass, pretrained tables through a memory map. The feature map's `source` records
    the release, each input's checksum and rows used, the rules, the skipped bad rows and the
    converter's notes. The written split sizes are printed next to the `reference` release's (name,
    rows per split), e.g. BARS's.
    """
    frames = {split: frame.lazy() for split, frame in raw.frames.items()}
    with progress(f"{dataset}: checksums of {len(raw.input_rows)} input file(s)"):
        inputs = describe_inputs(list(raw.input_rows), {path.name: rows for path, rows in raw.input_rows.items()})
    source = {
        "release": release,
        "inputs": inputs,
        "rules": json.loads(json.dumps(dataclasses.asdict(rules), default=str)),  # dates as text
        "skipped_rows": policy.report(),
        **raw.notes,
    }
    with progress(f"{dataset}: fitting vocabularies on train"):
        vocabularies = fit_vocabularies(frames["train"], features)
    specs, columns, index_maps = encoding(features, vocabularies)
    with DatasetWriter(out_dir) as writer:
        for relative, mapping in index_maps.items():
            writer.write_array(relative, mapping)
        for feature in features:
            if feature.pretrained:
                with progress(f"{dataset}: aligning the pretrained vectors of {feature.name}"):
                    lacking = write_pretrained_table(writer.path(f"pretrained/{feature.name}.npy"),
                                                     vocabularies[feature.name], feature.pretrained)
                console.print(f"{dataset}: {lacking:,} of {len(vocabularies[feature.name].values):,} {feature.name} "
                              "values have no pretrained vector (zero rows)", highlight=False)
        written = {}  # split -> (file, rows)
        for split, frame in frames.items():
            relative = f"{split}/part-00000.parquet"
            with progress(f"{dataset}: encoding and writing the {split} split"):
                (frame.select(*columns, pl.col(LABEL).cast(pl.Float32)).unnest(cs.struct())
                 .select(*[spec.name for spec in specs if spec.column is None], LABEL)).sink_parquet(
                    writer.path(relative), compression="zstd", row_group_size=writer.row_group_rows,
                    engine="streaming")
            written[split] = relative, pq.read_metadata(writer.path(relative)).num_rows
            if written[split][1] == 0:
                raise CtrbenchError(f"{dataset}: the {split} split has no rows; are the raw files complete?")
        written.setdefault("valid", written["test"])  # validate on the test rows (`ValidationRule`)
        for split in SPLITS:
            writer.add_file(split, *written[split])
        fmap = writer.commit(FeatureMap(dataset=dataset, label=LABEL, features=specs, source=source))
    shown = lambda rows: " / ".join(f"{rows[split]:,}" for split in SPLITS)  # noqa: E731
    name, rows = reference
    ours = {split: info.rows for split, info in fmap.splits.items()}
    verdict = f"as in {name}" if ours == rows else f"{name} has {shown(rows)}"
    console.print(f"{dataset}: train / valid / test rows {shown(ours)}, {verdict}", highlight=False)
    return fmap


def write_categorical_dataset(out_dir: Path, dataset: str, release: str, raw: RawSplits, rules: CategoricalRules,
                              policy: BadRows, reference: tuple[str, dict[str, int]]) -> FeatureMap:
    """`write_dataset` for a dataset whose `rules.fields` are all categorical."""
    features = [Feature(name, "categorical", min_count=rules.min_count) for name in rules.fields]
    return write_dataset(out_dir, dataset, release, raw, features, rules, policy, reference)
