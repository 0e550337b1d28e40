"""A split as a source of batches, held in memory or streamed from its parquet files.

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
from pathlib import Path
from typing import Protocol, TypeVar

import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch, RowGroup, load_split, read_row_groups, split_groups
from ctrbench.data.features import SPLITS, FeatureMap

MEMORY_FRACTION = 0.5  # of MemAvailable, the default budget for splits held in memory
MEMORY_BUDGET_ENV = "CTRBENCH_MEMORY_BUDGET"


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
        self.groups = split_groups(fmap, split)
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
