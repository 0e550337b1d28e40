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
size. Reading is preprocess/criteo_read.py: a compiled parser (preprocess/criteo_parse.py) reads the
lines it is sure of; the few others (bad lines, unusual forms) go through a polars path that names
the broken rule. At most a
few blocks are in flight, so memory does not grow with the file; only `frequency` vocabularies grow
with the data (one entry per distinct value of the train split). `--jobs N` converts N files at once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ctrbench.core.config import check_kwargs
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.datasets import DATASET_CONFIG_DIR, load_dataset_config
from ctrbench.data.features import OOV_INDEX, PADDING_INDEX, DatasetWriter, FeatureMap, FeatureSpec, parquet_schema
from preprocess.bad_rows import BadRows
from preprocess.criteo_read import BLOCK_BYTES, CATEGORICAL_FEATURES, INTEGER_FEATURES, LineBlocks, count_lines, read_rows
from preprocess.inputs import InputRows, detect_release
from preprocess.options import PreprocessOptions
from preprocess.readers import LABEL
from preprocess.rules import rules_from_section
from preprocess.vocabularies import FIRST_VALUE_INDEX

DAYS = 24  # day_0 .. day_23; the last one is held out
RELEASES = {"terabyte": ["day_*"], "kaggle": ["train.txt"]}
MAX_INDEX = np.iinfo(np.int32).max
# Categorical columns with at most this many indices are dictionary-encoded in parquet. Measured on a
# generated day (100k lines, the Terabyte table sizes): 65 ms and 5.02 MiB per 100k lines, against
# 83 ms and 5.12 MiB with every column dictionary-encoded, 72 ms and 5.51 MiB with only the numeric ones.
DICTIONARY_MAX = 1 << 16
NUMERIC_TRANSFORM = "log(1 + max(x, 0)); missing -> 0"

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
    encode, as preprocess.vocabularies.Vocabulary), which scales to tens of millions of ids and thousands of blocks.
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

    source: dict[str, Any]  # sha256, bytes, rows read and kept (`InputRows`) of the raw file
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
    rows = [sink.close() for sink in sinks]
    counts = InputRows(rows_read=blocks.lines, rows_kept=sum(rows))
    return ConvertedFile({"sha256": blocks.sha256, "bytes": blocks.bytes, **dataclasses.asdict(counts)}, rows, policy)


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
    with DatasetWriter(out_dir, shuffle_seed=options.shuffle_seed) as writer:
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
