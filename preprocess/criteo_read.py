"""Reading Criteo click logs: raw files -> blocks of whole lines -> typed, checked rows (preprocess/criteo.py
encodes and writes them).

A line is `label`, I1..I13 (integers), C1..C26 (ids of 8 hex digits), tab-separated, no header; the
rules it must follow are RULES. Each file is read `block_bytes` of text at a time on a thread of its
own (reading, checksumming and decompressing with ISA-L overlap the parsing); a compiled parser
(preprocess/criteo_parse.py) reads the lines it is sure of, and the polars path here (`_parse_block`)
the others, naming the broken rule and the line.
"""

from __future__ import annotations

import functools
import hashlib
import queue
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
from isal import igzip, isal_zlib
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from preprocess.bad_rows import BadRows
from preprocess.readers import LABEL, field_counts

INTEGER_FEATURES = tuple(f"I{i}" for i in range(1, 14))
CATEGORICAL_FEATURES = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *INTEGER_FEATURES, *CATEGORICAL_FEATURES)
# Text per block. On 24 generated days x 200,000 lines: 11.5-11.9 CPU-s and 330-370 MiB peak with 4 or 8 MiB,
# 12.4-12.5 CPU-s and 420 MiB with 32 MiB (fresh memory for larger arrays costs system time).
BLOCK_BYTES = 8 << 20

# The rules a line must follow, in this order: (problem, raw column quoted in the error; None: the
# line's number of fields).
RULES = (
    ("label must be 0 or 1", LABEL),
    (f"more than {len(COLUMNS)} tab-separated fields", None),
    *((f"{name} is not an integer", name) for name in INTEGER_FEATURES),
    *((f"{name} is not 8 hex digits", name) for name in CATEGORICAL_FEATURES),
)


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
                np.concatenate([a.numeric, b.numeric], axis=1)[:, order],
                np.concatenate([a.ids, b.ids], axis=1)[:, order])


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


def count_lines(path: Path, block_bytes: int = BLOCK_BYTES) -> int:
    """Lines in a raw file, in one streaming pass (day 23 is read once for this, to cut it in halves)."""
    blocks = LineBlocks(path, block_bytes)
    with _FileProgress("counting lines of", blocks) as progress:
        for _ in blocks:
            progress.advance()
    return blocks.lines
