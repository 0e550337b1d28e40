"""Pieces every converter shares.

A converter (preprocess/<dataset>.py) is a short script over these steps:

    load_rules / load_categorical_rules     the `preprocess:` section of its YAML, validated
    detect_release                          which release the raw directory holds (or --release)
    read_csv / read_libfm                   raw files -> polars frames of text values, validated row by row
      read_csv_splits / read_libfm_splits   ... for releases that ship train/valid/test files
    split_positives                         positives-only log -> sampled negatives -> seeded split
    write_categorical_dataset               vocabularies on train, encode, write atomically, record sources

Validation is vectorized: a reader computes, for a whole column at once, a mask of the rows that break
each rule, and `BadRows` either stops at the first bad line (`path:line: problem`) or, with
`--skip-bad-rows`, drops and counts them. Long steps show a spinner and their wall time (`progress`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from ctrbench.config import build_dataclass
from ctrbench.datasets import DATASET_CONFIG_DIR, load_dataset_config
from ctrbench.errors import CtrbenchError, closest, unknown_name
from ctrbench.features import (
    OOV_INDEX,
    PADDING_INDEX,
    DatasetWriter,
    FeatureMap,
    FeatureSpec,
    sha256_file,
    to_parquet_frame,
)
from ctrbench.train import console

FIRST_VALUE_INDEX = 2  # vocabulary indices: 0 padding, 1 out-of-vocabulary, values from 2
LABEL = "label"
SPLITS = ("train", "valid", "test")

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
    section = section or {}
    required = [f.name for f in dataclasses.fields(rules_class)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if isinstance(section, dict) and name not in section]
    if missing:
        raise CtrbenchError(f"{where}: missing key {missing[0]!r}; the section needs: {', '.join(required)}")
    try:
        return build_dataclass(rules_class, section, where)
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


@dataclass
class BadRows:
    """What to do with malformed input rows: stop at the first (default) or skip and count them.

    Parsers validate whole columns at once and pass a boolean mask of bad rows together with each
    row's line number in the file; `check` either raises one line naming the file, the line and the
    problem, or returns the mask of rows to keep and adds the skipped ones to the count.
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
                message = problem if found is None else f"{problem}, found {found[row]!r}"
            key = f"{path.name}: {problem}"
            self.skipped[key] = self.skipped.get(key, 0) + int(bad.sum())
            keep &= ~bad
        if first_line is not None and not self.skip:
            raise CtrbenchError(f"{path}:{first_line}: {message}; fix the file or pass --skip-bad-rows")
        return keep

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


def read_lines(path: Path) -> pl.DataFrame:
    """Every line of a text file: columns `line` (1-based number) and `text` (without CR/LF)."""
    data = require_file(path).read_bytes()
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


def read_csv(path: Path, columns: Sequence[str], policy: BadRows, separator: str = ",") -> pl.DataFrame:
    """A CSV file with exactly this header, every value as a string, plus its `line` numbers.

    The header must list `columns` in this order. A row with a missing or empty field, or with more
    fields than the header, breaks a rule (see `BadRows`). Quoted fields may hold separators, quotes
    ("" inside quotes) and newlines; `line` is the line a row starts on. Values keep their text: CR of
    CRLF files is dropped, nothing else is stripped.
    """
    require_file(path)
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    expected = separator.join(columns)
    if header != expected:
        shown = expected.replace("\t", "<TAB>")
        raise CtrbenchError(f"{path}:1: wrong header {header.replace(chr(9), '<TAB>')!r}; expected {shown!r}")
    overflow = "__more_fields__"
    schema = {name: pl.String for name in [*columns, overflow]}
    try:
        frame = pl.read_csv(path, has_header=False, skip_rows=1, separator=separator, schema=schema,
                            missing_columns="insert", truncate_ragged_lines=True)
    except (pl.exceptions.ComputeError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[-1].strip("`")
        raise CtrbenchError(f"{path}: cannot parse as CSV ({reason}); is this the right file?") from None
    # Line of each row: the header, plus one per earlier row, plus the newlines inside earlier quoted values.
    newlines = pl.sum_horizontal(pl.col(c).str.count_matches("\n").fill_null(0) for c in columns)
    frame = frame.with_columns((pl.lit(2, pl.Int64) + pl.int_range(pl.len(), dtype=pl.Int64)
                                + newlines.cum_sum().shift(1, fill_value=0)).alias("line"))
    lines = frame["line"].to_numpy()
    empty_line = frame.select(pl.all_horizontal(pl.col(c).is_null() for c in schema)).to_series().to_numpy()
    keep = policy.check_rules(path, lines, [
        (empty_line, "empty line", None),
        (frame[overflow].is_not_null().to_numpy(), f"more than the header's {len(columns)} fields", None),
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
    value = text.cast(pl.Float64, strict=False)
    bad = ~value.is_in([0.0, 1.0]).fill_null(False).to_numpy()
    keep = policy.check(bad, path, frame["line"].to_numpy(), f"{column} must be 0 or 1", text)
    return frame.with_columns(value.cast(pl.Float32).alias(column)).filter(pl.Series(keep))


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
# Vocabularies and writing


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
        counts = train_values.drop_nulls().value_counts(name="count")
        kept = counts.filter(pl.col("count") >= min_count).sort(["count", train_values.name], descending=[True, False])
        return cls(kept[train_values.name])

    def encode(self, values: pl.Series) -> pl.Series:
        """int32 indices; values not in the vocabulary (and nulls) get the OOV index."""
        indices = pl.int_range(FIRST_VALUE_INDEX, self.size, dtype=pl.Int32, eager=True)
        return values.replace_strict(self.values, indices, default=OOV_INDEX, return_dtype=pl.Int32)


# --------------------------------------------------------------------------------------------------
# Datasets whose features are all categorical: the releases' common shapes, and writing


@dataclass
class RawSplits:
    """What a converter read: per split, a frame of raw field values plus a float32 0/1 `label`,
    and the rows it used from each input file."""

    frames: dict[str, pl.DataFrame]
    input_rows: dict[Path, int]


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


def write_categorical_dataset(out_dir: Path, dataset: str, release: str, raw: RawSplits, rules: CategoricalRules,
                              policy: BadRows, reference: tuple[str, dict[str, int]]) -> FeatureMap:
    """Encode `rules.fields` of the raw splits and write the processed dataset (atomically).

    Vocabularies are built on the train split (`Vocabulary`). The feature map's `source` records the
    release, each input's checksum and rows used, the rules and the skipped bad rows. The written
    split sizes are printed next to the `reference` release's (name, rows per split), e.g. BARS's.
    """
    for split in SPLITS:
        if raw.frames[split].is_empty():
            raise CtrbenchError(f"{dataset}: the {split} split has no rows; are the raw files complete?")
    source = {
        "release": release,
        "inputs": describe_inputs(list(raw.input_rows), {path.name: rows for path, rows in raw.input_rows.items()}),
        "rules": dataclasses.asdict(rules),
        "skipped_rows": policy.report(),
    }
    with progress(f"{dataset}: building vocabularies on train and encoding"):
        vocabularies = {name: Vocabulary.build(raw.frames["train"][name], rules.min_count) for name in rules.fields}
        specs = [FeatureSpec(name=name, type="categorical", vocab_size=vocabularies[name].size,
                             padding_idx=PADDING_INDEX, oov_idx=OOV_INDEX, min_count=rules.min_count)
                 for name in rules.fields]
        encoded = {split: frame.select(*[vocabularies[name].encode(frame[name]) for name in rules.fields], LABEL)
                   for split, frame in raw.frames.items()}
    with progress(f"{dataset}: writing {out_dir}"), DatasetWriter(out_dir) as writer:
        for split in SPLITS:
            writer.write_split(split, to_parquet_frame(encoded[split], LABEL, specs))
        fmap = writer.commit(FeatureMap(dataset=dataset, label=LABEL, features=specs, source=source))
    shown = lambda rows: " / ".join(f"{rows[split]:,}" for split in SPLITS)  # noqa: E731
    name, rows = reference
    ours = {split: info.rows for split, info in fmap.splits.items()}
    verdict = f"as in {name}" if ours == rows else f"{name} has {shown(rows)}"
    console.print(f"{dataset}: train / valid / test rows {shown(ours)}, {verdict}", highlight=False)
    return fmap
