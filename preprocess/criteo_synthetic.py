"""Seeded Criteo-format click logs for tests and benchmarks (the real terabyte logs are not redistributable).

Lines follow the real format (label, I1..I13, C1..C26, tab-separated, no header) with its quirks:
empty fields (missing values, at a different rate per feature), negative integers in I2, short lines
(trailing empty fields left out) and gzip on request. Categorical values are heavy-tailed: the value
of rank r (0-based) of a feature with n values has probability log((r + 2) / (r + 1)) / log(n + 1),
about 1 / (r + 1). Its id is a fixed bijective hash of (feature, rank), so a value has the same id in
every file and day. Clicks are drawn from a logistic model of four categorical features and I1, so a
model trained on generated data beats chance.

    python -m preprocess.criteo_synthetic DIR --release terabyte --rows 100000 [--gzip] [--seed 0] [--days 0-23]
    python -m preprocess.criteo_synthetic DIR --release kaggle --rows 5000000

The first writes day_0 .. day_23 with 100,000 lines each (or the days given: a day's lines depend on
the seed and the day only), the second one train.txt.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np
from isal import igzip_threaded

from preprocess.criteo import DAYS
from preprocess.criteo_read import CATEGORICAL_FEATURES, COLUMNS, INTEGER_FEATURES

# Distinct values per categorical feature in the real logs, as TorchRec's DLRM example lists them.
TERABYTE_CARDINALITIES = (45833188, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 29275261, 1572176, 345138, 10,
                          2209, 11267, 128, 4, 974, 14, 48937457, 11316796, 40094537, 452104, 12606, 104, 35)
KAGGLE_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
                        5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572)
SIGNAL_FEATURES = (0, 5, 8, 13)  # positions of the categorical features the click model uses (C1, C6, C9, C14)
I2 = INTEGER_FEATURES.index("I2")


def _mix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer: a bijection on uint32 that scrambles every bit."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


@numba.njit(nogil=True, cache=True)
def _format(label, integers, integer_missing, ids, id_missing, short, cut):  # pragma: no cover - compiled
    """The text of the lines: label, I fields in decimal, C fields as 8 lowercase hex digits, missing
    values empty; a short line blanks its fields from `cut` on and drops its trailing tabs."""
    rows = len(label)
    integer_fields = integers.shape[0]
    fields = 1 + integer_fields + ids.shape[0]
    last = np.empty(rows, dtype=np.int64)  # each line's last field written
    size = 0
    for r in range(rows):
        last[r] = fields - 1
        if short[r]:
            last[r] = 0
            for k in range(min(cut[r], fields) - 1, 0, -1):
                if not (integer_missing[k - 1, r] if k <= integer_fields else id_missing[k - 1 - integer_fields, r]):
                    last[r] = k
                    break
        size += 2 + last[r]  # label, tabs, line end
        for k in range(1, last[r] + 1):
            if k > integer_fields:
                size += 0 if id_missing[k - 1 - integer_fields, r] else 8
            elif not integer_missing[k - 1, r]:
                size += _decimal_length(integers[k - 1, r])
    text = np.empty(size, dtype=np.uint8)
    pos = 0
    for r in range(rows):
        text[pos] = 48 + label[r]
        pos += 1
        for k in range(1, last[r] + 1):
            text[pos] = 9
            pos += 1
            if k > integer_fields:
                if not id_missing[k - 1 - integer_fields, r]:
                    value = ids[k - 1 - integer_fields, r]
                    for shift in range(28, -4, -4):
                        nibble = (value >> shift) & 15
                        text[pos] = 48 + nibble if nibble < 10 else 87 + nibble
                        pos += 1
            elif not integer_missing[k - 1, r]:
                value = integers[k - 1, r]
                length = _decimal_length(value)
                if value < 0:
                    text[pos] = 45
                    value = -value
                end = pos + length
                while True:  # digits from the last
                    end -= 1
                    text[end] = 48 + value % 10
                    value //= 10
                    if value == 0:
                        break
                pos += length
        text[pos] = 10
        pos += 1
    return text


@numba.njit(cache=True)
def _decimal_length(value):  # pragma: no cover - compiled
    """Characters of an int64 in decimal, with its sign."""
    length = 1 if value < 0 else 0
    value = abs(value)
    length += 1
    while value >= 10:
        value //= 10
        length += 1
    return length


class CriteoGenerator:
    """Draws lines; the per-feature parameters depend on `seed` only, the lines on (seed, day)."""

    def __init__(self, seed: int = 0, cardinalities: Sequence[int] = TERABYTE_CARDINALITIES,
                 positive_rate: float = 0.03, short_line_rate: float = 0.02):
        if len(cardinalities) != len(CATEGORICAL_FEATURES):
            raise ValueError(f"need {len(CATEGORICAL_FEATURES)} cardinalities, got {len(cardinalities)}")
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.cardinalities = np.asarray(cardinalities, dtype=np.float64)
        self.int_missing = rng.uniform(0.0, 0.5, size=len(INTEGER_FEATURES))
        self.int_log_mean = rng.uniform(0.0, 4.0, size=len(INTEGER_FEATURES))
        self.int_log_sd = rng.uniform(0.5, 2.0, size=len(INTEGER_FEATURES))
        self.cat_missing = np.where(rng.random(len(CATEGORICAL_FEATURES)) < 0.5, 0.0,
                                    rng.uniform(0.0, 0.45, size=len(CATEGORICAL_FEATURES)))
        self.salts = rng.integers(0, 2**32, size=len(CATEGORICAL_FEATURES), dtype=np.uint64)
        self.bias = np.log(positive_rate / (1 - positive_rate))
        self.short_line_rate = short_line_rate

    def text(self, rows: int, rng: np.random.Generator) -> bytes:
        """`rows` lines, each ended by a newline."""
        integers = np.empty((len(INTEGER_FEATURES), rows), dtype=np.int64)
        integer_missing = np.empty((len(INTEGER_FEATURES), rows), dtype=bool)
        ids = np.empty((len(CATEGORICAL_FEATURES), rows), dtype=np.uint32)
        id_missing = np.empty((len(CATEGORICAL_FEATURES), rows), dtype=bool)
        logit = np.full(rows, self.bias)
        for j in range(len(INTEGER_FEATURES)):
            values = np.floor(np.exp(rng.normal(self.int_log_mean[j], self.int_log_sd[j], size=rows))).astype(np.int64)
            if j == I2:
                values -= 3  # the real I2 goes down to -3
            if j == 0:
                logit += 0.5 * np.tanh(np.log1p(np.maximum(values, 0)) - 2.0)
            integers[j] = values
            integer_missing[j] = rng.random(rows) < self.int_missing[j]
        for j in range(len(CATEGORICAL_FEATURES)):
            rank = np.floor(np.exp(rng.random(rows) * np.log(self.cardinalities[j] + 1))) - 1
            rank = np.minimum(rank, self.cardinalities[j] - 1).astype(np.uint64)
            ids[j] = _mix32((rank + self.salts[j]) % np.uint64(2**32))
            if j in SIGNAL_FEATURES:
                logit += 2.0 * (_mix32(ids[j] ^ np.uint32(0x5BD1E995)) / 2**32 - 0.5)
            id_missing[j] = rng.random(rows) < self.cat_missing[j]
        label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        # A short line leaves out its trailing fields: blank the last 1-10 fields, then drop trailing tabs.
        short = rng.random(rows) < self.short_line_rate
        cut = len(COLUMNS) - rng.integers(1, 11, size=rows)
        return _format(label, integers, integer_missing, ids, id_missing, short, cut).tobytes()

    def write(self, path: str | Path, rows: int, day: int = 0, chunk_rows: int = 200_000) -> Path:
        """Write `rows` lines to `path` (gzip if it ends in .gz, compressed on a thread of its own), chunk by
        chunk; atomic."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        rng = np.random.default_rng([self.seed, day])
        gzipped = path.suffix == ".gz"
        with (igzip_threaded.open(tmp, "wb", compresslevel=1, threads=1) if gzipped else tmp.open("wb")) as handle:
            for start in range(0, rows, chunk_rows):
                handle.write(self.text(min(chunk_rows, rows - start), rng))
        os.replace(tmp, path)
        return path


def write_release(raw_dir: str | Path, release: str, rows: int, seed: int = 0, compress: bool = False,
                  days: Sequence[int] = range(DAYS)) -> list[Path]:
    """A generated raw release: `terabyte` (day_0 .. day_23, or the `days` given, `rows` lines each) or
    `kaggle` (train.txt)."""
    raw_dir = Path(raw_dir)
    suffix = ".gz" if compress else ""
    if release == "terabyte":
        generator = CriteoGenerator(seed)
        return [generator.write(raw_dir / f"day_{day}{suffix}", rows, day=day) for day in days]
    if release == "kaggle":
        if compress:
            raise ValueError("the kaggle release is a plain train.txt")
        generator = CriteoGenerator(seed, KAGGLE_CARDINALITIES, positive_rate=0.25)
        return [generator.write(raw_dir / "train.txt", rows)]
    raise ValueError(f"unknown release {release!r}; expected terabyte or kaggle")


def _day_range(text: str) -> range:
    first, _, last = text.partition("-")
    days = range(int(first), int(last or first) + 1)
    if not days or days[0] < 0 or days[-1] >= DAYS:
        raise argparse.ArgumentTypeError(f"days must lie in 0-{DAYS - 1}, e.g. 0 or 1-23; got {text!r}")
    return days


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m preprocess.criteo_synthetic",
                                     description="Write a generated Criteo-format raw release.")
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("--release", choices=["terabyte", "kaggle"], default="terabyte")
    parser.add_argument("--rows", type=int, required=True, help="lines per day file (terabyte) or in train.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gzip", action="store_true", help="terabyte: write day_N.gz files")
    parser.add_argument("--days", type=_day_range, default=range(DAYS),
                        help="terabyte: the days to write, e.g. 0 or 1-23 (default: all)")
    args = parser.parse_args(argv)
    for path in write_release(args.raw_dir, args.release, args.rows, args.seed, args.gzip, args.days):
        print(path)


if __name__ == "__main__":
    main()
