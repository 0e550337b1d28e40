"""From parquet splits to batches of tensors, held in memory or streamed.

A split is a sequence of parquet row groups. Each row group is decoded straight into its slice of
a preallocated `Batch` (one contiguous matrix per feature type), so loading a split peaks at its
tensor bytes plus one row group's arrow table. Every value is checked on the way: indices inside
the vocabulary, finite numerics, labels in {0, 1}, columns present with the right type. A mismatch
stops with the file, column and row at fault.

A split is served in one of two ways (both give the `BatchSource` the training loop iterates):
- `InMemory`: the whole split loaded once; training batches are index gathers of a seeded
  permutation, evaluation batches are slices. Per batch: a handful of tensor ops.
- `ParquetStream`: for a split larger than memory. Shuffled (training), its row groups are taken in
  a seeded random order across all its files, `window_row_groups` at a time; the rows of a window
  are shuffled together, so a row can land next to any row of the other row groups of its window.
  In order (evaluation), row groups are read one by one in file order, so predictions come out in
  row order and the metrics are exact over all rows. A background thread reads, decodes, shuffles
  (and, for CUDA, pins) the next window while the model trains on the current one, through a queue
  `prefetch_windows` windows deep; batches are slices of a window (plus one concatenation where a
  batch spans two windows). Memory: up to `prefetch_windows` + 2 windows (the one trained on, those
  queued, the one being decoded), a window being `window_row_groups` x the row group's tensor bytes;
  the window is the trade-off between randomness and memory. All random draws on the caller's
  generator happen when `batches` is called, so a seed gives the same order whatever the thread's
  timing.

`open_splits` chooses per split: a split is streamed when its tensor bytes (rows x `row_bytes`)
exceed what is left of a memory budget after the splits before it (train, valid, test in that
order), else loaded. The budget is `MEMORY_FRACTION` of MemAvailable (/proc/meminfo) when the
splits are opened, or the bytes in $CTRBENCH_MEMORY_BUDGET (e.g. `8G`, `500M`); half of what is
free leaves room for the model, its optimizer state and the activations. `--stream` /
`--in-memory` force one way for every split. Splits that list the same files (a dataset config's
`valid: test`) share one source, so their rows are read once.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import PADDING_INDEX, SPLITS, FeatureMap, FeatureSpec

MEMORY_FRACTION = 0.5  # of MemAvailable, the default budget for splits held in memory
MEMORY_BUDGET_ENV = "CTRBENCH_MEMORY_BUDGET"


@dataclass
class Batch:
    """Inputs and labels of a set of rows, grouped by feature type.

    Column j of `categorical` is feature `feature_map.of_type("categorical")[j]`, likewise for
    `pretrained` (pretrained_embedding features) and `numeric`; `sequences` maps each stored sequence
    column (`FeatureMap.stored`) to its [rows, max_len] index matrix: a sequence reading another's
    column (`FeatureSpec.column`) gets that very tensor from `sequence`, held once.
    """

    categorical: torch.Tensor  # int32 [B, n_categorical]
    pretrained: torch.Tensor  # int32 [B, n_pretrained]
    numeric: torch.Tensor  # float32 [B, n_numeric]
    sequences: dict[str, torch.Tensor]  # name -> int32 [B, max_len]
    label: torch.Tensor  # float32 [B]

    def __len__(self) -> int:
        return self.label.shape[0]

    @staticmethod
    def empty(fmap: FeatureMap, rows: int) -> Batch:
        """An uninitialised batch of `rows` rows with the feature map's columns."""
        def matrix(columns: int, dtype: torch.dtype) -> torch.Tensor:
            return torch.empty(rows, columns, dtype=dtype)

        return Batch(
            categorical=matrix(len(fmap.of_type("categorical")), torch.int32),
            pretrained=matrix(len(fmap.of_type("pretrained_embedding")), torch.int32),
            numeric=matrix(len(fmap.of_type("numeric")), torch.float32),
            sequences={f.name: matrix(f.max_len, torch.int32) for f in fmap.stored("sequence")},
            label=torch.empty(rows, dtype=torch.float32),
        )

    def sequence(self, spec: FeatureSpec) -> torch.Tensor:
        """A sequence feature's items, int32 [B, max_len]: indices in the vocabulary of its column's
        feature (map them with `load_index_map` where the feature has an index_map)."""
        return self.sequences[spec.stored_as]

    def _map(self, fn) -> Batch:
        return Batch(
            categorical=fn(self.categorical),
            pretrained=fn(self.pretrained),
            numeric=fn(self.numeric),
            sequences={name: fn(t) for name, t in self.sequences.items()},
            label=fn(self.label),
        )

    def take(self, index: torch.Tensor) -> Batch:
        """Rows at `index` (a gather, copying)."""
        return self._map(lambda t: t.index_select(0, index))

    def slice(self, start: int, stop: int) -> Batch:
        """Rows start..stop (views, no copy)."""
        return self._map(lambda t: t[start:stop])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy in page-locked memory, so that copies to a GPU can be asynchronous."""
        return self._map(lambda t: t.pin_memory())

    @staticmethod
    def concat(parts: list[Batch]) -> Batch:
        first = parts[0]
        return Batch(
            categorical=torch.cat([p.categorical for p in parts]),
            pretrained=torch.cat([p.pretrained for p in parts]),
            numeric=torch.cat([p.numeric for p in parts]),
            sequences={name: torch.cat([p.sequences[name] for p in parts]) for name in first.sequences},
            label=torch.cat([p.label for p in parts]),
        )


def _column(table: pa.Table, name: str, where: str) -> pa.Array:
    if name not in table.column_names:
        raise CtrbenchError(
            f"{where}: column {name!r} is missing (the feature map lists it; columns are {table.column_names})"
        )
    return table.column(name).combine_chunks()


def _index_column(column: pa.Array, spec: FeatureSpec, where: str) -> np.ndarray:
    if not pa.types.is_integer(column.type):
        raise CtrbenchError(f"{where}: column {spec.name!r} must hold integer indices, found {column.type}")
    if column.null_count:
        raise CtrbenchError(f"{where}: column {spec.name!r} has {column.null_count} null values; expected indices")
    values = column.to_numpy(zero_copy_only=False)
    _check_range(values, spec, where)
    return values


def _check_range(values: np.ndarray, spec: FeatureSpec, where: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= spec.vocab_size):
        raise CtrbenchError(
            f"{where}: column {spec.name!r} has indices in [{values.min()}, {values.max()}] outside its "
            f"vocabulary [0, {spec.vocab_size}); the feature map does not match this file"
        )


def _sequence_column(column: pa.Array, spec: FeatureSpec, where: str) -> np.ndarray:
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise CtrbenchError(f"{where}: sequence column {spec.name!r} must be a list of indices, found {column.type}")
    if column.null_count:
        raise CtrbenchError(f"{where}: sequence column {spec.name!r} has {column.null_count} null rows")
    rows = len(column)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    if flat.size != rows * spec.max_len:
        raise CtrbenchError(
            f"{where}: sequence column {spec.name!r} must hold exactly max_len={spec.max_len} items per row "
            f"(padded with 0); found {flat.size} items over {rows} rows"
        )
    _check_range(flat, spec, where)
    return flat.reshape(rows, spec.max_len)


def _numeric_column(column: pa.Array, spec: FeatureSpec, where: str, first_row: int) -> np.ndarray:
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise CtrbenchError(f"{where}: numeric column {spec.name!r} must be float, found {column.type}")
    values = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        raise CtrbenchError(
            f"{where}: numeric column {spec.name!r} has {int(bad.sum())} NaN/inf/null values "
            f"(first at row {first_row + int(np.argmax(bad))}); fill or drop them when preprocessing"
        )
    return values


def _label_column(column: pa.Array, name: str, where: str, first_row: int) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = ~((values == 0) | (values == 1))
    if bad.any():
        first = int(np.argmax(bad))
        raise CtrbenchError(
            f"{where}: label column {name!r} must be 0 or 1; row {first_row + first} holds {column[first].as_py()!r}"
        )
    return values


def batch_from_arrow(table: pa.Table, fmap: FeatureMap, where: str, out: Batch | None = None,
                     first_row: int = 0) -> Batch:
    """Convert (and check) an arrow table holding a split's columns, written into `out` (a batch of
    `table.num_rows` rows) when given. `first_row` is the table's first row in its file (for errors)."""
    out = Batch.empty(fmap, table.num_rows) if out is None else out
    for target, kind in ((out.categorical, "categorical"), (out.pretrained, "pretrained_embedding")):
        columns = target.numpy()
        for j, spec in enumerate(fmap.of_type(kind)):
            columns[:, j] = _index_column(_column(table, spec.name, where), spec, where)
    numeric = out.numeric.numpy()
    for j, spec in enumerate(fmap.of_type("numeric")):
        numeric[:, j] = _numeric_column(_column(table, spec.name, where), spec, where, first_row)
    for spec in fmap.stored("sequence"):
        out.sequences[spec.name].numpy()[:] = _sequence_column(_column(table, spec.name, where), spec, where)
    out.label.numpy()[:] = _label_column(_column(table, fmap.label, where), fmap.label, where, first_row)
    return out


def parquet_columns(fmap: FeatureMap) -> list[str]:
    """The columns a split file holds: each stored feature's, then the label."""
    return [f.name for f in fmap.stored()] + [fmap.label]


def _read_schema(path: Path, fmap: FeatureMap) -> pq.FileMetaData:
    """A split file's metadata, once the file is found readable and holding the feature map's columns."""
    if not path.is_file():
        raise CtrbenchError(f"{path}: split file listed in the feature map is missing; re-run `ctrbench preprocess`")
    try:
        metadata = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CtrbenchError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in parquet_columns(fmap) if c not in metadata.schema.to_arrow_schema().names]
    if missing:
        raise CtrbenchError(f"{path}: columns {missing} are in the feature map but not in the file; "
                            "the feature map does not match this parquet schema")
    return metadata


@dataclass(frozen=True)
class RowGroup:
    """Rows start .. start + rows of row group `index` of a parquet file."""

    path: Path
    index: int
    start: int
    rows: int


def row_groups(paths: list[Path]) -> list[RowGroup]:
    """Every row group of these parquet files, in order (reads only the footers)."""
    groups = []
    for path in paths:
        if not path.is_file():
            raise CtrbenchError(f"{path}: split file listed in the feature map is missing")
        metadata = pq.ParquetFile(path).metadata
        groups.extend(RowGroup(path, i, 0, metadata.row_group(i).num_rows) for i in range(metadata.num_row_groups))
    return groups


def read_row_groups(fmap: FeatureMap, groups: list[RowGroup]) -> Batch:
    """The rows of `groups`, in that order, checked, as one batch. Each row group is decoded straight
    into its slice of the batch, so the peak is the batch plus one row group's arrow table."""
    out = Batch.empty(fmap, sum(group.rows for group in groups))
    files: dict[Path, tuple[pq.ParquetFile, list[int]]] = {}
    start = 0
    for group in groups:
        if group.path not in files:
            parquet = pq.ParquetFile(group.path)
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
            files[group.path] = parquet, np.cumsum([0] + sizes).tolist()
        parquet, first_rows = files[group.path]
        table = parquet.read_row_group(group.index, columns=parquet_columns(fmap)).slice(group.start, group.rows)
        batch_from_arrow(table, fmap, str(group.path), out.slice(start, start + group.rows),
                         first_row=first_rows[group.index] + group.start)
        del table  # before the next row group is read
        start += group.rows
    return out


def _split_groups(fmap: FeatureMap, split: str) -> list[RowGroup]:
    """A split's row groups, once its files are found readable, with the columns and the row count
    the feature map says."""
    paths = fmap.split_paths(split)
    for path in paths:
        _read_schema(path, fmap)
    groups = row_groups(paths)
    _check_rows(fmap, split, sum(group.rows for group in groups))
    return groups


def _check_rows(fmap: FeatureMap, split: str, rows: int) -> None:
    """The rows found in a split's files must be the feature map's count, and more than none."""
    expected = fmap.splits[split].rows
    if rows != expected:
        raise CtrbenchError(f"{fmap.root}: the {split} split's files hold {rows:,} rows but the feature map says "
                            f"{expected:,}; the feature map does not match the parquet files (re-run `ctrbench preprocess`)")
    if rows == 0:
        raise CtrbenchError(f"{fmap.root}: the {split} split has no rows; re-run `ctrbench preprocess` on complete raw files")


def load_split(fmap: FeatureMap, split: str) -> Batch:
    """Read a whole split into memory as one checked `Batch`."""
    return read_row_groups(fmap, _split_groups(fmap, split))


def load_index_map(fmap: FeatureMap, spec: FeatureSpec) -> torch.Tensor | None:
    """The index map of a sequence reading another's column (int32 [column vocab_size], values in
    [0, spec.vocab_size)), checked against the feature map; None where the feature needs none."""
    if spec.index_map is None:
        return None
    path = fmap.root / spec.index_map
    if not path.is_file():
        raise CtrbenchError(f"{path}: index map of feature {spec.name!r} is missing; re-run `ctrbench preprocess`")
    values = np.load(path)
    expected = fmap.feature(spec.column).vocab_size
    if values.shape != (expected,) or values.dtype != np.int32:
        raise CtrbenchError(f"{path}: index map of feature {spec.name!r} must be int32 of shape ({expected},) "
                            f"(the vocabulary of column {spec.column!r}), found {values.dtype} {values.shape}")
    _check_range(values, spec, str(path))
    if values[0] != PADDING_INDEX:
        raise CtrbenchError(f"{path}: index map of feature {spec.name!r} maps padding (0) to {values[0]}, not to 0")
    return torch.from_numpy(values)


def load_labels(fmap: FeatureMap, split: str) -> np.ndarray:
    """A split's labels alone (float32, rows in order): the label column read, the features not."""
    tables = [pq.read_table(fmap.root / relative, columns=[fmap.label]) for relative in fmap.splits[split].files]
    return np.concatenate([table.column(fmap.label).to_numpy().astype(np.float32) for table in tables])


class BatchSource(Protocol):
    """What the training loop iterates: a split that yields batches, shuffled or not."""

    num_rows: int

    def batches(self, batch_size: int, shuffle: bool, generator: torch.Generator | None) -> Iterator[Batch]: ...


class InMemory:
    """A split held in memory; batches are gathers of a seeded permutation or plain slices."""

    def __init__(self, data: Batch):
        self.data = data
        self.num_rows = len(data)

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        if shuffle:
            order = torch.randperm(self.num_rows, generator=generator)
            for start in range(0, self.num_rows, batch_size):
                yield self.data.take(order[start:start + batch_size])
        else:
            for start in range(0, self.num_rows, batch_size):
                yield self.data.slice(start, start + batch_size)


class ParquetStream:
    """A split read row group by row group on a background thread, for data larger than memory.

    Shuffled, row groups come in a seeded random order across files, `window_row_groups` at a time,
    rows shuffled within each window; in order, one row group at a time. `prefetch_windows` windows
    are decoded ahead; with `pin_memory` they are in page-locked memory (for CUDA).
    """

    def __init__(self, fmap: FeatureMap, split: str, window_row_groups: int = 4, prefetch_windows: int = 1,
                 pin_memory: bool = False):
        if window_row_groups < 1 or prefetch_windows < 1:
            raise CtrbenchError(f"ParquetStream: window_row_groups ({window_row_groups}) and prefetch_windows "
                                f"({prefetch_windows}) must be >= 1")
        self.fmap = fmap
        self.groups = _split_groups(fmap, split)
        self.num_rows = fmap.splits[split].rows
        self.window_row_groups = window_row_groups
        self.prefetch_windows = prefetch_windows
        self.pin_memory = pin_memory

    def _read(self, groups: list[RowGroup], seed: int | None) -> Batch:
        window = read_row_groups(self.fmap, groups)
        if seed is not None:
            window = window.take(torch.randperm(len(window), generator=torch.Generator().manual_seed(seed)))
        return window.pin_memory() if self.pin_memory else window

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        if shuffle:
            order = torch.randperm(len(self.groups), generator=generator).tolist()
            windows = [[self.groups[i] for i in order[start:start + self.window_row_groups]]
                       for start in range(0, len(order), self.window_row_groups)]
            seeds = torch.randint(0, 2**62, (len(windows),), generator=generator).tolist()
        else:
            windows, seeds = [[group] for group in self.groups], [None] * len(self.groups)
        return rebatch(prefetch(zip(windows, seeds), lambda window: self._read(*window), self.prefetch_windows),
                       batch_size)


def rebatch(chunks: Iterable[Batch], batch_size: int) -> Iterator[Batch]:
    """Cut a stream of row chunks into batches of `batch_size` rows (the last one may be shorter):
    slices of a chunk, and one concatenation for a batch that spans two chunks."""
    carry: Batch | None = None
    for chunk in chunks:
        start = 0
        if carry is not None:
            start = min(batch_size - len(carry), len(chunk))
            carry = Batch.concat([carry, chunk.slice(0, start)])
            if len(carry) < batch_size:
                continue
            yield carry
        full = start + (len(chunk) - start) // batch_size * batch_size
        for begin in range(start, full, batch_size):
            yield chunk.slice(begin, begin + batch_size)
        carry = chunk.slice(full, len(chunk)) if full < len(chunk) else None
    if carry is not None:
        yield carry


T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], transform: Callable[[T], object], depth: int) -> Iterator:
    """`transform(item)` for each item, computed `depth` items ahead on a background thread.

    Parquet decoding, validation and tensor copies release the GIL for most of their time, so the
    next items are ready while the model trains on the current one. An exception in the thread is
    raised in the consumer; abandoning the iterator stops the thread.
    """
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(transform(item)):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="ctrbench-prefetch", daemon=True)
    thread.start()
    try:
        while (value := ready.get()) is not _DONE:
            if isinstance(value, BaseException):
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def row_bytes(fmap: FeatureMap) -> int:
    """Bytes one row takes in memory: 4 per categorical, pretrained and numeric column, 4 per item of
    each stored sequence's max_len (a sequence reading another's column adds nothing), 4 for the label."""
    flat = len(fmap.of_type("categorical", "pretrained_embedding", "numeric"))
    return 4 * (flat + sum(f.max_len for f in fmap.stored("sequence")) + 1)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_budget() -> tuple[int, str]:
    """Bytes the splits held in memory may take, and where that figure comes from: $CTRBENCH_MEMORY_BUDGET,
    else `MEMORY_FRACTION` of MemAvailable in /proc/meminfo (of the free physical pages elsewhere)."""
    value = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if value:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", value, re.IGNORECASE)
        if match is None:
            raise CtrbenchError(f"${MEMORY_BUDGET_ENV}={value!r}: expected a size in bytes, e.g. 8G, 500M or 1000000")
        return int(float(match[1]) * _UNITS[match[2].upper()]), f"${MEMORY_BUDGET_ENV}"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)[1]) * 1024
    except (OSError, TypeError):
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(available * MEMORY_FRACTION), f"{MEMORY_FRACTION:.0%} of available memory"


def _size(nbytes: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def open_splits(fmap: FeatureMap, stream: bool | None = None, budget: int | None = None,
                pin_memory: bool = False) -> tuple[dict[str, InMemory | ParquetStream], str]:
    """Every split of `fmap` as a batch source, and the one-line decision.

    `stream` True or False forces every split; None streams a split whose tensor bytes exceed what
    is left of `budget` (default: `memory_budget()`) after the splits before it. Splits listing the
    same files share one source.
    """
    source_of_budget = "given"
    if stream is None and budget is None:
        budget, source_of_budget = memory_budget()
    left = budget
    sources: dict[str, InMemory | ParquetStream] = {}
    read: dict[tuple[str, ...], str] = {}
    notes = []
    for split in [s for s in SPLITS if s in fmap.splits] + [s for s in fmap.splits if s not in SPLITS]:
        files = tuple(fmap.splits[split].files)
        if files in read:
            sources[split] = sources[read[files]]
            notes.append(f"{split} = {read[files]} (same files, read once)")
            continue
        read[files] = split
        size = fmap.splits[split].rows * row_bytes(fmap)
        streamed = stream if stream is not None else size > left
        if streamed:
            sources[split] = ParquetStream(fmap, split, pin_memory=pin_memory)
        else:
            sources[split] = InMemory(load_split(fmap, split))
            if left is not None:
                left -= size
        notes.append(f"{split} {fmap.splits[split].rows:,} rows, {_size(size)}: {'streamed' if streamed else 'in memory'}")
    if stream is not None:
        why = "forced by --stream" if stream else "forced by --in-memory"
    else:
        why = f"memory budget {_size(budget)} ({source_of_budget})"
    return sources, f"{fmap.dataset} data: {'; '.join(notes)} [{why}]"
