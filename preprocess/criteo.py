"""Criteo click logs -> the processed-dataset contract, streamed block by block in bounded memory.

Two releases share one line format and are told apart by their files:

    terabyte  day_0 .. day_23, each plain text or gzip (day_N.gz): the Criteo 1TB click logs
    kaggle    train.txt: the Display Advertising Challenge's labelled file

A line is `label`, I1..I13 (integers), C1..C26 (ids of 8 hex digits), tab-separated, no header.
Empty fields are missing values, and a line may stop early: its absent trailing fields are missing
too (the line is padded to 40 columns). A line breaking a rule (label other than 0/1, more than 40
fields, an I field that is not an integer, a C field that is not 8 hex digits) stops the run with
`file:line: problem`, or with `--skip-bad-rows` is dropped and counted in the feature map's source.

Encodings (dataset_configs/criteo.yaml, `preprocess:`, one section per release):

    I1..I13  float32 log(1 + max(x, 0)); missing -> 0. Negative values are clamped to 0 first, as the
             DLRM reference preprocessing does (only a few fields ever hold them); the log tames the
             heavy-tailed counts so no further scaling is needed.
    C1..C26  `hash`: index 2 + (id mod table_size), where id is the 8 hex digits read as an unsigned
             32-bit integer: one pass, no state, the same on every run and machine (TorchRec's modulo
             convention; the MLPerf DLRM-v2 table sizes cap the largest features at 40M rows).
             `frequency`: values seen at least `min_count` times in the train split get 2, 3, ... by
             decreasing count (ties by id), at most `table_size` of them; other values get 1 (OOV).
             Needs a first pass that counts values over the train split.
             Missing -> 1 in both (index 0 is padding).

Splits and files, in the order the feature map lists them:

    terabyte  train/day_00.parquet .. train/day_22.parquet    days 0-22
              valid/day_23_first_half.parquet                 day 23, lines 1 .. n // 2
              test/day_23_second_half.parquet                 day 23, the rest (TorchRec's val/test halves)
    kaggle    {train,valid,test}/part-00000.parquet           each line drawn by a seeded hash of its line
                                                              number with the `split` fractions

Speed and memory: each file is read `block_bytes` of text at a time (whole lines), on three threads
that overlap: one reads, checksums and decompresses (ISA-L) the next blocks, one parses, checks and
encodes a block, one appends the previous block to its parquet files in row groups of the writer's
size. A compiled parser (preprocess/criteo_parse.py) reads the lines it is sure of; the few others
(bad lines, unusual forms) go through the polars path below, which names the broken rule. At most a
few blocks are in flight, so memory does not grow with the file; only `frequency` vocabularies grow
with the data (one entry per distinct value of the train split). `--jobs N` converts N files at once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
from isal import igzip, isal_zlib
import pyarrow.parquet as pq
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ctrbench.config import check_kwargs
from ctrbench.datasets import DATASET_CONFIG_DIR, load_dataset_config
from ctrbench.errors import CtrbenchError
from ctrbench.features import OOV_INDEX, PADDING_INDEX, DatasetWriter, FeatureMap, FeatureSpec, parquet_schema
from ctrbench.console import console
from preprocess import PreprocessOptions
from preprocess.common import FIRST_VALUE_INDEX, LABEL, BadRows, detect_release, field_counts, rules_from_section

INTEGER_FEATURES = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_FEATURES = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *INTEGER_FEATURES, *CATEGORICAL_FEATURES)
DAYS = 24  # day_0 .. day_23; the last one is held out
RELEASES = {"terabyte": ["day_*"], "kaggle": ["train.txt"]}
MAX_INDEX = np.iinfo(np.int32).max
# Text per block. On 24 generated days x 200,000 lines: 11.5-11.9 CPU-s and 330-370 MiB peak with 4 or 8 MiB,
# 12.4-12.5 CPU-s and 420 MiB with 32 MiB (fresh memory for larger arrays costs system time).
BLOCK_BYTES = 8 << 20
# Categorical columns with at most this many indices are dictionary-encoded in parquet. Measured on a
# generated day (100k lines, the Terabyte table sizes): 65 ms and 5.02 MiB per 100k lines, against
# 83 ms and 5.12 MiB with every column dictionary-encoded, 72 ms and 5.51 MiB with only the numeric ones.
DICTIONARY_MAX = 1 << 16
NUMERIC_TRANSFORM = "log(1 + max(x, 0)); missing -> 0"

# The rules a line must follow, in this order: (problem, raw column quoted in the error; None: the
# line's number of fields).
RULES = (
    ("label must be 0 or 1", LABEL),
    (f"more than {len(COLUMNS)} tab-separated fields", None),
    *((f"{name} is not an integer", name) for name in INTEGER_FEATURES),
    *((f"{name} is not 8 hex digits", name) for name in CATEGORICAL_FEATURES),
)


# --------------------------------------------------------------------------------------------------
# Rules (the YAML's preprocess section)


@dataclass(kw_only=True)
class EncodingRules:
    """How one release's categorical ids become indices (see the module docstring)."""

    encoding: Literal["hash", "frequency"]
    table_size: int | None  # hash: buckets per feature; frequency: most values kept per feature (null: no cap)
    table_sizes: dict[str, int] = field(default_factory=dict)  # per-feature overrides of table_size
    min_count: int = 1  # frequency only: values seen fewer times in the train split map to OOV

    def __post_init__(self) -> None:
        unknown = sorted(set(self.table_sizes) - set(CATEGORICAL_FEATURES))
        if unknown:
            raise CtrbenchError(f"table_sizes: {unknown[0]!r} is not a categorical feature (C1 .. C26)")
        for size in (self.table_size, *self.table_sizes.values()):
            if size is not None and not 1 <= size <= MAX_INDEX - FIRST_VALUE_INDEX:
                raise CtrbenchError(f"table sizes must be between 1 and {MAX_INDEX - FIRST_VALUE_INDEX}, got {size}")
        if self.min_count < 1:
            raise CtrbenchError(f"min_count must be >= 1, got {self.min_count}")
        if self.encoding == "hash":
            unsized = [name for name in CATEGORICAL_FEATURES if self.size(name) is None]
            if unsized:
                raise CtrbenchError(f"encoding hash needs a table size for every feature; {unsized[0]} has none "
                                    "(set table_size)")
            if self.min_count != 1:
                raise CtrbenchError("min_count only applies to encoding frequency; remove it or set it to 1")

    def size(self, feature: str) -> int | None:
        return self.table_sizes.get(feature, self.table_size)


@dataclass(kw_only=True)
class KaggleRules(EncodingRules):
    """The Kaggle release also needs a split rule: it is one file."""

    split: list[float]  # train / valid / test fractions
    seed: int  # seeds the per-line split draw

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seed < 0:
            raise CtrbenchError(f"seed must be >= 0, got {self.seed}")
        if len(self.split) != 3 or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-9:
            raise CtrbenchError(f"split must be 3 positive fractions (train, valid, test) summing to 1, "
                                f"got {self.split}")


def load_rules() -> tuple[EncodingRules, KaggleRules]:
    """The `terabyte` and `kaggle` sections of dataset_configs/criteo.yaml's `preprocess:`."""
    where = f"{DATASET_CONFIG_DIR / 'criteo.yaml'}: preprocess"
    section = check_kwargs(load_dataset_config("criteo").preprocess or {},
                           {"terabyte": dict[str, Any], "kaggle": dict[str, Any]}, where)
    return (rules_from_section(section.get("terabyte"), EncodingRules, f"{where}.terabyte"),
            rules_from_section(section.get("kaggle"), KaggleRules, f"{where}.kaggle"))


# --------------------------------------------------------------------------------------------------
# Reading: blocks of lines -> typed, checked rows


class _DigestingReader:
    """A binary file wrapper that hashes and counts the bytes read through it (the stored, compressed ones)."""

    def __init__(self, handle):
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.sha256.update(data)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer) -> int:
        size = self.handle.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:size])
        self.bytes_read += size
        return size


@dataclass
class Block:
    """Whole lines of a raw file (the file's last line may lack its line end)."""

    text: memoryview
    first_line: int  # number of its first line in the file, from 1
    line_ends: int  # newlines it holds


class LineBlocks:
    """The lines of a raw file (plain or .gz), `block_bytes` of text at a time.

    Iterating yields `Block`s, each ending at a line end. After a full iteration `lines`, `sha256`
    and `bytes` describe the file as stored on disk.
    """

    def __init__(self, path: Path, block_bytes: int = BLOCK_BYTES):
        self.path = path
        self.block_bytes = block_bytes
        self.size = path.stat().st_size
        self.lines = 0
        self.sha256 = ""
        self.bytes = 0
        self._reader: _DigestingReader | None = None

    @property
    def bytes_read(self) -> int:
        return self._reader.bytes_read if self._reader else 0

    def __iter__(self) -> Iterator[Block]:
        with self.path.open("rb") as handle:
            self._reader = _DigestingReader(handle)
            # ISA-L's gzip reader: the same format and checks as the standard library's, 2-3x faster
            text = igzip.GzipFile(fileobj=self._reader, mode="rb") if self.path.suffix == ".gz" else self._reader
            next_line, carry = 1, b""
            while data := self._read(text, next_line):
                data = carry + data if carry else data
                cut = data.rfind(b"\n") + 1
                if cut == 0 and len(data) > 4 * self.block_bytes:
                    raise CtrbenchError(f"{self.path}:{next_line}: no line end in {len(data):,} bytes; "
                                        "is this a Criteo text file?")
                if cut:
                    line_ends = data.count(b"\n", 0, cut)
                    yield Block(memoryview(data)[:cut], next_line, line_ends)  # a view: no copy
                    next_line += line_ends
                carry = data[cut:]
            if carry:  # a last line without a line end
                yield Block(memoryview(carry), next_line, 0)
                next_line += 1
        if next_line == 1:
            raise CtrbenchError(f"{self.path}: empty file; is the download or copy complete?")
        self.lines = next_line - 1
        self.sha256 = self._reader.sha256.hexdigest()
        self.bytes = self._reader.bytes_read

    def _read(self, stream, next_line: int) -> bytes:
        try:
            return stream.read(self.block_bytes)
        except (OSError, EOFError, zlib.error, isal_zlib.error) as exc:
            raise CtrbenchError(f"{self.path}: unreadable gzip data after line {next_line - 1} ({exc}); "
                                "is the file truncated or corrupt?") from None


T = TypeVar("T")
_END = object()


def in_background(items: Iterable[T], ahead: int = 2) -> Iterator[T]:
    """The items of an iterable, produced on a thread of its own up to `ahead` items in advance.

    Errors raised while producing are raised here; leaving the loop early stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not offer((item, None)):
                    return
            offer((_END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            offer((_END, exc))
        finally:
            getattr(iterator, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="criteo-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass
class Rows:
    """Checked rows of a block, column by column; the categorical ids are not encoded yet."""

    lines: np.ndarray  # int64 [n]: each row's line number in its file
    label: np.ndarray  # float32 [n]
    numeric: np.ndarray  # float32 [13, n]: log(1 + max(x, 0)); missing -> 0
    ids: np.ndarray  # int64 [26, n]: the 8 hex digits as an unsigned 32-bit integer; missing -> -1

    def take(self, index: np.ndarray) -> Rows:
        """The rows `index` selects (a boolean mask or positions)."""
        return Rows(self.lines[index], self.label[index], self.numeric[:, index], self.ids[:, index])


def _log_transform(integers: pl.Expr) -> pl.Expr:
    """log(1 + max(x, 0)) as float32, missing -> 0: the numeric features' transform."""
    return integers.clip(lower_bound=0).fill_null(0).cast(pl.Float64).log1p().cast(pl.Float32)


LOG_TABLE_SIZE = 1 << 16  # values below this are looked up; the rare larger ones are computed


@functools.cache
def _log_table() -> np.ndarray:
    return _log_values(np.arange(LOG_TABLE_SIZE, dtype=np.int64))


def _log_values(integers: np.ndarray) -> np.ndarray:
    return pl.DataFrame({"x": integers}).select(_log_transform(pl.col("x")))["x"].to_numpy()


def _numeric(integers: np.ndarray) -> np.ndarray:
    """`_log_transform` of non-negative int64 values: a table lookup, computed by the same polars expression."""
    numeric = _log_table()[np.minimum(integers, LOG_TABLE_SIZE - 1)]
    large = np.nonzero(integers >= LOG_TABLE_SIZE)
    if len(large[0]):
        numeric[large] = _log_values(integers[large])
    return numeric


_RAW_SCHEMA = {name: pl.String for name in COLUMNS}


def _parse_block(block: bytes, path: Path, lines: np.ndarray, policy: BadRows) -> Rows:
    """The careful path: the good rows of lines the fast parser left (numbered `lines`), checked rule by rule.

    A row breaking one of RULES stops the run or is dropped and counted (BadRows).
    """
    raw = pl.read_csv(block, has_header=False, separator="\t", quote_char=None, schema=_RAW_SCHEMA,
                      missing_columns="insert", truncate_ragged_lines=True, extra_columns="ignore",
                      encoding="utf8-lossy")
    fields = field_counts(block, "\t")
    assert raw.height == len(fields) == len(lines), "one parsed row per line"
    integer = {name: pl.col(name).str.to_integer(strict=False) for name in INTEGER_FEATURES}
    hexadecimal = {name: pl.col(name).str.to_integer(base=16, dtype=pl.UInt32, strict=False)
                   for name in CATEGORICAL_FEATURES}
    broken = [
        ~pl.col(LABEL).is_in(["0", "1"]).fill_null(False),
        pl.lit(pl.Series(fields > len(COLUMNS))),
        *(pl.col(name).is_not_null() & integer[name].is_null() for name in INTEGER_FEATURES),
        # to_integer rejects what is not hex and "-", but takes a leading "+"
        *(pl.col(name).is_not_null() & (hexadecimal[name].is_null() | (pl.col(name).str.len_bytes() != 8)
                                        | pl.col(name).str.starts_with("+"))
          for name in CATEGORICAL_FEATURES),
    ]
    typed = raw.select(
        pl.coalesce([pl.when(rule).then(pl.lit(k, pl.Int16)) for k, rule in enumerate(broken)]).alias("broken"),
        pl.col(LABEL).cast(pl.Float32, strict=False),
        *(_log_transform(integer[name]).alias(name) for name in INTEGER_FEATURES),
        *(hexadecimal[name].cast(pl.Int64).fill_null(-1).alias(name) for name in CATEGORICAL_FEATURES),
    )
    first_broken = typed["broken"].fill_null(-1).to_numpy()  # each row's first broken rule, -1 for none
    keep = first_broken < 0
    if not keep.all():
        checks = [(first_broken == k, RULES[k][0], pl.Series(fields) if RULES[k][1] is None
                   else raw[RULES[k][1]].fill_null("")) for k in np.unique(first_broken[~keep])]
        keep = policy.check_rules(path, lines, checks)
    typed = typed.filter(pl.Series(keep))
    return Rows(lines=lines[keep], label=typed[LABEL].to_numpy(),
                numeric=np.ascontiguousarray(typed.select(INTEGER_FEATURES).to_numpy().T),
                ids=np.ascontiguousarray(typed.select(CATEGORICAL_FEATURES).to_numpy().T))


def _merged(a: Rows, b: Rows) -> Rows:
    """The rows of both, in line order."""
    order = np.argsort(np.concatenate([a.lines, b.lines]), kind="stable")
    return Rows(np.concatenate([a.lines, b.lines])[order], np.concatenate([a.label, b.label])[order],
                np.concatenate([a.numeric, b.numeric], axis=1)[:, order], np.concatenate([a.ids, b.ids], axis=1)[:, order])


def read_rows(blocks: LineBlocks, policy: BadRows, action: str, live: bool = True) -> Iterator[Rows]:
    """Typed, checked rows of a raw file, block by block, with a progress bar (`live`: on a terminal).

    A thread reads (and decompresses) the next blocks while this one is parsed; the fast parser
    (preprocess/criteo_parse.py) reads the lines it is sure of, the careful path the others.
    """
    # numba takes ~1 s to import: loaded when a conversion starts, not with the CLI
    from preprocess.criteo_parse import parse_block

    with _FileProgress(action, blocks, live) as progress:
        for block in in_background(blocks):
            parsed = parse_block(block.text, block.first_line, block.line_ends)
            rows = Rows(parsed.lines, parsed.label, _numeric(parsed.integers), parsed.ids)
            if len(parsed.other_lines):
                rows = _merged(rows, _parse_block(parsed.other_text, blocks.path, parsed.other_lines, policy))
            yield rows
            progress.advance()


class _FileProgress:
    """A progress bar over a file's bytes on a terminal (unless not `live`: several files at once); one
    summary line per file everywhere."""

    def __init__(self, action: str, blocks: LineBlocks, live: bool = True):
        self.action, self.blocks = action, blocks
        self.bar = None
        if live and console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                TimeRemainingColumn(), console=console, transient=True)

    def __enter__(self) -> _FileProgress:
        self.started = time.perf_counter()
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(f"criteo: {self.action} {self.blocks.path.name}", total=self.blocks.size)
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=self.blocks.bytes_read)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            self.bar.stop()
        if exc_type is None:
            seconds = time.perf_counter() - self.started
            console.print(f"criteo: {self.action} {self.blocks.path.name}: {self.blocks.lines:,} lines in "
                          f"{seconds:.1f} s ({self.blocks.lines / max(seconds, 1e-9):,.0f} lines/s)", highlight=False)


# --------------------------------------------------------------------------------------------------
# Categorical encodings


class HashEncoding:
    """Index 2 + (id mod table size); missing ids -> OOV."""

    def __init__(self, rules: EncodingRules):
        self.sizes = {name: rules.size(name) for name in CATEGORICAL_FEATURES}

    def vocab_size(self, feature: str) -> int:
        return FIRST_VALUE_INDEX + self.sizes[feature]

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """int32 indices [26, n] of the ids [26, n] of C1..C26 (-1: missing)."""
        from preprocess.criteo_parse import hash_indices  # numba: see read_rows

        sizes = np.array([self.sizes[name] for name in CATEGORICAL_FEATURES], dtype=np.int64)
        return hash_indices(ids, sizes, OOV_INDEX)

    def spec(self, feature: str) -> FeatureSpec:
        return FeatureSpec(name=feature, type="categorical", vocab_size=self.vocab_size(feature),
                           padding_idx=PADDING_INDEX, oov_idx=OOV_INDEX,
                           transform=f"hash: 2 + (hex id mod {self.sizes[feature]})")


@dataclass
class IdVocabulary:
    """Kept ids of one feature, sorted, and the index each one gets.

    FrequencyEncoding looks ids up in hash tables built from these once (not a map rebuilt on every
    encode, as preprocess.common.Vocabulary), which scales to tens of millions of ids and thousands of blocks.
    """

    ids: np.ndarray  # uint32, ascending
    indices: np.ndarray  # int32


class FrequencyEncoding:
    """Vocabularies counted over the train split; ids outside them and missing ids -> OOV."""

    def __init__(self, rules: EncodingRules, vocabularies: dict[str, IdVocabulary]):
        self.min_count = rules.min_count
        self.vocabularies = vocabularies
        from preprocess.criteo_parse import id_table  # numba: see read_rows

        # One hash table per feature, built once: a lookup costs about one cache miss, whatever the size.
        ordered = [vocabularies[name] for name in CATEGORICAL_FEATURES]
        self._table = id_table(np.concatenate([vocabulary.ids for vocabulary in ordered]).astype(np.int64),
                               np.cumsum([0, *(len(vocabulary.ids) for vocabulary in ordered)]),
                               np.concatenate([vocabulary.indices for vocabulary in ordered]).astype(np.int32))

    def vocab_size(self, feature: str) -> int:
        return FIRST_VALUE_INDEX + len(self.vocabularies[feature].ids)

    def encode(self, ids: np.ndarray) -> np.ndarray:
        """int32 indices [26, n] of the ids [26, n] of C1..C26 (-1: missing)."""
        from preprocess.criteo_parse import vocabulary_indices  # numba: see read_rows

        return vocabulary_indices(ids, *self._table, OOV_INDEX)

    def spec(self, feature: str) -> FeatureSpec:
        return FeatureSpec(name=feature, type="categorical", vocab_size=self.vocab_size(feature),
                           padding_idx=PADDING_INDEX, oov_idx=OOV_INDEX, min_count=self.min_count)


CategoricalEncoding = HashEncoding | FrequencyEncoding  # both: vocab_size(feature), encode(ids), spec(feature)


class ValueCounter:
    """Occurrences of every (feature, id) pair in the rows it is given.

    Each block's counts wait in a queue that is merged into the totals once it holds more entries
    than the totals (or `min_merge` entries), so memory stays within a few times the totals and
    every entry is merged a bounded number of times on average.
    """

    def __init__(self, min_merge: int = 1 << 22):
        self.min_merge = min_merge
        self.totals = pl.DataFrame(schema={"key": pl.UInt64, "count": pl.Int64})
        self.queue: list[pl.DataFrame] = []
        self.queued = 0

    def add(self, ids: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Count the ids [26, n] of C1..C26 (-1: missing, not counted), in the `rows` (a mask) or all."""
        from preprocess.criteo_parse import value_keys  # numba: see read_rows

        # One key per (feature, id): the feature's position in the high 32 bits, the id in the low 32.
        keys = value_keys(ids, np.ones(ids.shape[1], dtype=bool) if rows is None else rows)
        counts = pl.Series("key", keys).value_counts(name="count").with_columns(pl.col("count").cast(pl.Int64))
        self.queue.append(counts)
        self.queued += counts.height
        if self.queued > max(self.totals.height, self.min_merge):
            self._merge()

    def _merge(self) -> None:
        self.totals = pl.concat([self.totals, *self.queue]).group_by("key").agg(pl.col("count").sum())
        self.queue, self.queued = [], 0

    def vocabularies(self, rules: EncodingRules) -> dict[str, IdVocabulary]:
        """Per feature: ids seen >= min_count times, most frequent first (ties by id), at most its table size."""
        self._merge()
        kept = (self.totals.filter(pl.col("count") >= rules.min_count)
                .select((pl.col("key") // (1 << 32)).cast(pl.Int64).alias("feature"),
                        (pl.col("key") % (1 << 32)).cast(pl.UInt32).alias("id"), "count"))
        by_feature = kept.partition_by("feature", as_dict=True, include_key=False)
        vocabularies = {}
        for j, name in enumerate(CATEGORICAL_FEATURES):
            ranked = by_feature.get((j,), kept.clear()).sort(["count", "id"], descending=[True, False])
            if rules.size(name) is not None:
                ranked = ranked.head(rules.size(name))
            ids = ranked["id"].to_numpy()
            order = np.argsort(ids, kind="stable")
            indices = (FIRST_VALUE_INDEX + np.arange(len(ids), dtype=np.int32))
            vocabularies[name] = IdVocabulary(ids=ids[order], indices=indices[order])
        return vocabularies


# --------------------------------------------------------------------------------------------------
# Writing


class ParquetSink:
    """Appends tables to one parquet file in row groups of exactly `row_group_rows` (the last may be shorter).

    Columns are zstd-compressed; those named in `dictionary` are dictionary-encoded too (worth it for
    columns with few distinct values; for hashed ids it costs time and saves nothing).
    """

    def __init__(self, path: Path, schema: pa.Schema, row_group_rows: int, dictionary: list[str] | bool = True):
        self.writer = pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=dictionary)
        self.row_group_rows = row_group_rows
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        if self.pending_rows >= self.row_group_rows:
            self._flush(whole_groups_only=True)

    def _flush(self, whole_groups_only: bool) -> None:
        table = pa.concat_tables(self.pending)
        ready = table.num_rows - table.num_rows % self.row_group_rows if whole_groups_only else table.num_rows
        if ready:
            self.writer.write_table(table.slice(0, ready), row_group_size=self.row_group_rows)
        rest = table.slice(ready)
        self.pending, self.pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
        self.rows += ready

    def close(self) -> int:
        """Write what is left and return the file's row count."""
        if self.pending:
            self._flush(whole_groups_only=False)
        self.writer.close()
        return self.rows


@dataclass
class FilePlan:
    """One raw file: the split files its rows go to and which row goes where."""

    path: Path
    outputs: list[tuple[str, str]]  # (split, parquet file relative to the dataset), indexed by `assign`
    assign: Callable[[np.ndarray], np.ndarray] | None = None  # line numbers -> index into `outputs`; None: all to 0

    def train_output(self) -> int | None:
        splits = [split for split, _ in self.outputs]
        return splits.index("train") if "train" in splits else None


def _write_tables(sinks: list[ParquetSink], tables: list[pa.Table]) -> None:
    for sink, table in zip(sinks, tables):
        sink.write(table)


@dataclass
class ConvertedFile:
    """What converting one raw file gave: the input's description and the rows of each output."""

    source: dict[str, Any]  # sha256, bytes, rows of the raw file
    rows: list[int]  # rows written to each of the plan's outputs
    skipped: BadRows


class _Cancelled(Exception):
    """Another file's conversion failed: this one stops too."""


def _convert_file(plan: FilePlan, encoding: CategoricalEncoding, specs: list[FeatureSpec], writer: DatasetWriter,
                  policy: BadRows, block_bytes: int, live: bool = True,
                  cancelled: threading.Event | None = None) -> ConvertedFile:
    """Encode one raw file into its split files."""
    schema = parquet_schema(LABEL, specs)
    dictionary = [LABEL, *(spec.name for spec in specs if spec.type == "numeric" or spec.vocab_size <= DICTIONARY_MAX)]
    sinks = [ParquetSink(writer.path(relative), schema, writer.row_group_rows, dictionary)
             for _, relative in plan.outputs]
    blocks = LineBlocks(plan.path, block_bytes)
    # One thread writes (parquet encoding and compression release the GIL) while the next block is parsed.
    with ThreadPoolExecutor(1, thread_name_prefix="criteo-writer") as writing:
        written: Future | None = None
        for rows in read_rows(blocks, policy, "converting", live):
            if cancelled is not None and cancelled.is_set():
                raise _Cancelled
            columns = [*rows.numeric, *encoding.encode(rows.ids), rows.label]
            table = pa.Table.from_arrays([pa.array(column) for column in columns], schema=schema)
            target = None if plan.assign is None else plan.assign(rows.lines)
            tables = [table] if target is None else [table.filter(pa.array(target == k)) for k in range(len(sinks))]
            if written is not None:
                written.result()
            written = writing.submit(_write_tables, sinks, tables)
        if written is not None:
            written.result()
    return ConvertedFile({"sha256": blocks.sha256, "bytes": blocks.bytes, "rows": blocks.lines},
                         [sink.close() for sink in sinks], policy)


def _convert_files(plans: list[FilePlan], encoding: CategoricalEncoding, specs: list[FeatureSpec],
                   writer: DatasetWriter, options: PreprocessOptions, block_bytes: int) -> list[ConvertedFile]:
    """Convert every planned file, `options.jobs` files at a time (threads: the work releases the GIL).

    With several jobs the first file to fail stops the others, and its error is raised.
    """
    def convert_one(plan: FilePlan, cancelled: threading.Event | None = None) -> ConvertedFile:
        return _convert_file(plan, encoding, specs, writer, BadRows(skip=options.skip_bad_rows), block_bytes,
                             live=options.jobs == 1, cancelled=cancelled)

    if options.jobs == 1:
        return [convert_one(plan) for plan in plans]
    cancelled = threading.Event()
    with ThreadPoolExecutor(options.jobs, thread_name_prefix="criteo-file") as pool:
        futures = [pool.submit(convert_one, plan, cancelled) for plan in plans]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [future for future in futures if future in done and future.exception() is not None]
        if failed:
            cancelled.set()
            for future in futures:
                future.cancel()
            raise failed[0].exception()
        return [future.result() for future in futures]


def _count_values(plans: list[FilePlan], rules: EncodingRules, options: PreprocessOptions,
                  block_bytes: int) -> FrequencyEncoding:
    """The counting pass of `frequency`: vocabularies over the rows that go to the train split."""
    counter = ValueCounter()
    policy = BadRows(skip=options.skip_bad_rows)  # stops early on a bad row; counts are reported by the next pass
    for plan in plans:
        train = plan.train_output()
        if train is None:
            continue
        for rows in read_rows(LineBlocks(plan.path, block_bytes), policy, "counting values in"):
            counter.add(rows.ids, None if plan.assign is None else plan.assign(rows.lines) == train)
    return FrequencyEncoding(rules, counter.vocabularies(rules))


def convert(plans: list[FilePlan], out_dir: Path, rules: EncodingRules, options: PreprocessOptions,
            source: dict[str, Any], block_bytes: int = BLOCK_BYTES) -> FeatureMap:
    """Encode every planned file and commit the dataset (atomically, through DatasetWriter)."""
    encoding: CategoricalEncoding = (HashEncoding(rules) if rules.encoding == "hash"
                                     else _count_values(plans, rules, options, block_bytes))
    specs = [FeatureSpec(name=name, type="numeric", transform=NUMERIC_TRANSFORM) for name in INTEGER_FEATURES]
    specs += [encoding.spec(name) for name in CATEGORICAL_FEATURES]
    if options.jobs < 1:
        raise CtrbenchError(f"--jobs must be at least 1, got {options.jobs}")
    policy = BadRows(skip=options.skip_bad_rows)
    with DatasetWriter(out_dir) as writer:
        converted = _convert_files(plans, encoding, specs, writer, options, block_bytes)
        for plan, result in zip(plans, converted):  # in plan order, whichever file finished first
            for (split, relative), rows in zip(plan.outputs, result.rows):
                writer.add_file(split, relative, rows)
            policy.skipped.update(result.skipped.skipped)  # keys name the file: no two files share one
        inputs = {plan.path.name: result.source for plan, result in zip(plans, converted)}
        source = {**source, "inputs": inputs, "rules": dataclasses.asdict(rules), "skipped_rows": policy.report()}
        return writer.commit(FeatureMap(dataset="criteo", label=LABEL, features=specs, source=source))


# --------------------------------------------------------------------------------------------------
# The two releases


def day_files(raw_dir: Path) -> list[Path]:
    """day_0 .. day_23 of the terabyte release, each plain or gzip."""
    paths = []
    for day in range(DAYS):
        found = [p for p in (raw_dir / f"day_{day}", raw_dir / f"day_{day}.gz") if p.is_file()]
        if not found:
            raise CtrbenchError(f"{raw_dir / f'day_{day}'}: file not found (plain or .gz); the terabyte release "
                                f"needs day_0 .. day_{DAYS - 1}")
        if len(found) > 1:
            raise CtrbenchError(f"{found[1]}: both {found[0].name} and {found[1].name} exist; keep one")
        paths.append(found[0])
    return paths


def count_lines(path: Path, block_bytes: int = BLOCK_BYTES) -> int:
    """Lines in a raw file, in one streaming pass (day 23 is read once for this, to cut it in halves)."""
    blocks = LineBlocks(path, block_bytes)
    with _FileProgress("counting lines of", blocks) as progress:
        for _ in blocks:
            progress.advance()
    return blocks.lines


def convert_terabyte(raw_dir: Path, out_dir: Path, rules: EncodingRules, options: PreprocessOptions,
                     block_bytes: int = BLOCK_BYTES) -> FeatureMap:
    days = day_files(raw_dir)
    half = count_lines(days[-1], block_bytes) // 2
    plans = [FilePlan(path, [("train", f"train/day_{day:02d}.parquet")]) for day, path in enumerate(days[:-1])]
    plans.append(FilePlan(days[-1], [("valid", "valid/day_23_first_half.parquet"),
                                     ("test", "test/day_23_second_half.parquet")],
                          lambda lines: (lines > half).astype(np.int64)))
    split_rule = f"train: days 0-22; valid: day 23 lines 1-{half}; test: day 23 lines {half + 1}-"
    return convert(plans, out_dir, rules, options, {"release": "terabyte", "split": split_rule}, block_bytes)


def kaggle_split(lines: np.ndarray, fractions: list[float], seed: int) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of each line number.

    A line's uniform draw is splitmix64(seed + line * golden gamma) scaled to [0, 1): it depends on
    the seed and the line number only, never on how the file was cut into blocks.
    """
    z = np.uint64(seed) + lines.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    uniform = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(np.cumsum(fractions)[:-1], uniform, side="right")


def convert_kaggle(raw_dir: Path, out_dir: Path, rules: KaggleRules, options: PreprocessOptions,
                   block_bytes: int = BLOCK_BYTES) -> FeatureMap:
    outputs = [(split, f"{split}/part-00000.parquet") for split in ("train", "valid", "test")]
    plan = FilePlan(raw_dir / "train.txt", outputs, lambda lines: kaggle_split(lines, rules.split, rules.seed))
    split_rule = f"each line drawn by splitmix64(seed + line number) into train/valid/test {rules.split}"
    return convert([plan], out_dir, rules, options, {"release": "kaggle", "split": split_rule}, block_bytes)


def preprocess_criteo(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    terabyte, kaggle = load_rules()
    if detect_release(raw_dir, RELEASES, "criteo", options.release) == "terabyte":
        return convert_terabyte(raw_dir, out_dir, terabyte, options)
    return convert_kaggle(raw_dir, out_dir, kaggle, options)
