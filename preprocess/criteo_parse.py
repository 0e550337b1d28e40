"""The fast path of the Criteo converter: blocks of lines -> typed columns, compiled with numba.

`parse_block` reads a block of whole lines in one pass over its bytes. It takes only lines it can
read with certainty, a strict subset of what preprocess/criteo.py accepts:

    label     exactly `0` or `1`
    fields    at most 40 (absent trailing fields are missing)
    I1..I13   empty, or an optional sign and 1 to 18 ASCII digits (so the value fits int64)
    C1..C26   empty, or exactly 8 ASCII hex digits

Every other line (a bad one, or a valid one in an unusual form: 19+ digits, a carriage return before
the line end, ...) is handed back by line number and bytes, and the converter reads those with its
careful polars path, which checks them, names the broken rule and the line, and transforms them the
same way. So a line's values never depend on which path read it.

The kernels release the GIL (`nogil`), so reading, parsing and writing overlap on threads; they are
compiled on first use and cached next to this file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

FIELDS = 40
INTEGERS = 13  # I1..I13: fields 1..13
CATEGORICALS = 26  # C1..C26: fields 14..39
MAX_DIGITS = 18  # 10**18 - 1 < 2**63 - 1: no overflow check needed
TAB, NEWLINE = 9, 10


@dataclass
class ParsedBlock:
    """The lines of a block the fast path read, and those it left to the careful path."""

    lines: np.ndarray  # int64 [n]: line number of each parsed row
    label: np.ndarray  # float32 [n]
    integers: np.ndarray  # int64 [13, n]: max(x, 0); missing -> 0
    ids: np.ndarray  # int64 [26, n]: the 8 hex digits as an unsigned 32-bit id; missing -> -1
    other_lines: np.ndarray  # int64 [m]: line numbers of the lines left to the careful path
    other_text: bytes  # those lines, each ended by a newline


def parse_block(block: bytes | memoryview, first_line: int, line_ends: int) -> ParsedBlock:
    """Parse a block of whole lines (the last may lack its line end) holding `line_ends` newlines."""
    data = np.frombuffer(block, dtype=np.uint8)
    (rows, lines, label, integers, ids, others, other_starts, other_ends) = _parse(data, first_line, line_ends + 1)
    other_text = b"".join(bytes(block[start:end]) + b"\n" for start, end in zip(other_starts[:others].tolist(),
                                                                                other_ends[:others].tolist()))
    return ParsedBlock(lines=lines[:rows], label=label[:rows], integers=integers[:, :rows], ids=ids[:, :rows],
                       other_lines=lines[len(lines) - others:][::-1].copy(), other_text=other_text)


def _digit_table(digits: str) -> np.ndarray:
    """Byte -> its value as a digit of `digits` (either case), 255 for other bytes."""
    table = np.full(256, 255, dtype=np.uint8)
    for value, digit in enumerate(digits):
        table[ord(digit)] = table[ord(digit.upper())] = value
    return table


DECIMAL = _digit_table("0123456789")
HEXADECIMAL = _digit_table("0123456789abcdef")


@numba.njit(nogil=True, cache=True)
def _parse(data, first_line, max_lines):  # pragma: no cover - compiled
    # Every cell of a parsed row is written; a line given up on may leave cells that the next row overwrites.
    label = np.empty(max_lines, dtype=np.float32)
    integers = np.empty((INTEGERS, max_lines), dtype=np.int64)
    ids = np.empty((CATEGORICALS, max_lines), dtype=np.int64)
    # Parsed rows fill `lines` from the front; the line numbers of the others fill it from the back.
    lines = np.empty(max_lines, dtype=np.int64)
    other_starts = np.empty(max_lines, dtype=np.int64)
    other_ends = np.empty(max_lines, dtype=np.int64)
    rows = others = 0
    size = len(data)
    pos = 0
    line = first_line
    while pos < size:
        start = pos
        c = data[pos]
        ok = (c == 48 or c == 49) and (pos + 1 == size or data[pos + 1] == TAB or data[pos + 1] == NEWLINE)
        if ok:
            label[rows] = c - 48
            pos += 1
        field = 1
        while ok and pos < size and data[pos] == TAB:  # one more field, from pos + 1 to a tab or line end
            pos += 1
            if field == FIELDS:
                ok = False  # more than 40 fields
                break
            if field <= INTEGERS:
                first = pos
                negative = False
                if pos < size and (data[pos] == 45 or data[pos] == 43):  # '-' or '+'
                    negative = data[pos] == 45
                    pos += 1
                digits = pos
                value = 0
                while pos < size:
                    digit = DECIMAL[data[pos]]
                    if digit > 9:
                        break
                    value = value * 10 + digit
                    pos += 1
                if pos == first:
                    value = 0  # missing
                elif not 1 <= pos - digits <= MAX_DIGITS:
                    ok = False
                elif negative:
                    value = 0  # clamped: max(x, 0)
                integers[field - 1, rows] = value
            elif pos < size and data[pos] != TAB and data[pos] != NEWLINE:
                if pos + 8 > size:
                    ok = False
                else:
                    value = 0
                    for k in range(pos, pos + 8):
                        digit = HEXADECIMAL[data[k]]
                        if digit > 15:
                            ok = False
                            break
                        value = value * 16 + digit
                    if ok:  # (else pos stays on this line, to be skipped to its end)
                        pos += 8
                        ids[field - INTEGERS - 1, rows] = value
            else:
                ids[field - INTEGERS - 1, rows] = -1  # missing
            field += 1
            if ok and pos < size and data[pos] != TAB and data[pos] != NEWLINE:
                ok = False  # the field goes on: not a number of the expected form
        if ok:
            for rest in range(field, FIELDS):  # absent trailing fields are missing
                if rest <= INTEGERS:
                    integers[rest - 1, rows] = 0
                else:
                    ids[rest - INTEGERS - 1, rows] = -1
            lines[rows] = line
            rows += 1
        while pos < size and data[pos] != NEWLINE:
            pos += 1
        if not ok:
            lines[max_lines - 1 - others] = line
            other_starts[others] = start
            other_ends[others] = pos
            others += 1
        pos += 1  # past the line end
        line += 1
    return rows, lines, label, integers, ids, others, other_starts, other_ends


@numba.njit(nogil=True, cache=True)
def hash_indices(ids, sizes, missing):  # pragma: no cover - compiled
    """2 + id mod sizes[j] for each feature j's ids; `missing` where an id is -1 (missing)."""
    out = np.empty(ids.shape, dtype=np.int32)
    for j in range(ids.shape[0]):
        size = sizes[j]
        for r in range(ids.shape[1]):
            value = ids[j, r]
            out[j, r] = missing if value < 0 else 2 + value % size
    return out


GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing's multiplier


@numba.njit(nogil=True, cache=True)
def id_table(ids, starts, indices):  # pragma: no cover - compiled
    """Open-addressing hash tables, one per feature j, of its ids[starts[j]:starts[j + 1]] -> indices.

    Returns (slots' ids, -1 where empty; slots' indices; each table's first slot; each table's log2 size).
    A table has at least twice as many slots as ids, so a lookup probes ~1.5 slots.
    """
    features = len(starts) - 1
    bits = np.empty(features, dtype=np.int64)
    firsts = np.zeros(features + 1, dtype=np.int64)
    for j in range(features):
        bits[j] = 1
        while (1 << bits[j]) < 2 * (starts[j + 1] - starts[j]):
            bits[j] += 1
        firsts[j + 1] = firsts[j] + (1 << bits[j])
    slot_ids = np.full(firsts[features], -1, dtype=np.int64)
    slot_indices = np.empty(firsts[features], dtype=np.int32)
    for j in range(features):
        mask = (1 << bits[j]) - 1
        for k in range(starts[j], starts[j + 1]):
            slot = np.int64((np.uint64(ids[k]) * GOLDEN) >> np.uint64(64 - bits[j]))
            while slot_ids[firsts[j] + slot] != -1:
                slot = (slot + 1) & mask
            slot_ids[firsts[j] + slot] = ids[k]
            slot_indices[firsts[j] + slot] = indices[k]
    return slot_ids, slot_indices, firsts, bits


@numba.njit(nogil=True, cache=True)
def vocabulary_indices(ids, slot_ids, slot_indices, firsts, bits, missing):  # pragma: no cover - compiled
    """Feature j's ids [j, n] -> their indices in table j of `id_table`, or `missing` where an id is not
    in it or is -1 (missing)."""
    out = np.empty(ids.shape, dtype=np.int32)
    for j in range(ids.shape[0]):
        first, mask, shift = firsts[j], (1 << bits[j]) - 1, np.uint64(64 - bits[j])
        for r in range(ids.shape[1]):
            value = ids[j, r]
            out[j, r] = missing
            if value < 0:
                continue
            slot = np.int64((np.uint64(value) * GOLDEN) >> shift)
            while slot_ids[first + slot] != -1:
                if slot_ids[first + slot] == value:
                    out[j, r] = slot_indices[first + slot]
                    break
                slot = (slot + 1) & mask
    return out


@numba.njit(nogil=True, cache=True)
def value_keys(ids, rows):  # pragma: no cover - compiled
    """(j << 32) + id for feature j's ids present (not -1) in the rows selected by the mask `rows`."""
    count = 0
    for j in range(ids.shape[0]):
        for r in range(ids.shape[1]):
            if rows[r] and ids[j, r] >= 0:
                count += 1
    keys = np.empty(count, dtype=np.uint64)
    k = 0
    for j in range(ids.shape[0]):
        for r in range(ids.shape[1]):
            if rows[r] and ids[j, r] >= 0:
                keys[k] = (j << 32) + ids[j, r]
                k += 1
    return keys
