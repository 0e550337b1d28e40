"""What the generators of BARS x1 releases with item histories share (`kuaivideo_synthetic`,
`microvideo_synthetic`): sizes by preset, skewed popularity, `^`-joined histories, streamed CSV and
HDF5 writing.

Popularity: the value of rank r (0-based) among n has probability log((r + 2) / (r + 1)) / log(n + 1),
about 1 / (r + 1) (Zipf with exponent 1, as `criteo_synthetic`); ranks map to ids by a seeded
permutation, so the most popular ids are not the smallest. A history's length is
min(max_len, floor(U * 1.5 * max_len)) with U uniform in [0, 1): spread over 0..max_len, a third of the
histories full (the x1 releases cut longer ones at max_len), mean 2/3 of max_len.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pyarrow as pa

CHUNK_ROWS = 200_000  # rows generated and appended at a time: memory is bounded by one chunk
HISTORY_SEPARATOR = "^"


@dataclass(frozen=True)
class Sizes:
    """Row counts and vocabulary sizes of one generated release."""

    train_rows: int
    test_rows: int
    users: int
    items: int
    max_len: int = 100


def zipf_ranks(rng: np.random.Generator, n: int, size: int | tuple[int, ...]) -> np.ndarray:
    """Ranks 0..n-1 drawn with probability log((r + 2) / (r + 1)) / log(n + 1) (by inverting the CDF)."""
    ranks = np.floor(np.exp(rng.random(size) * np.log(n + 1))).astype(np.int64) - 1
    return np.clip(ranks, 0, n - 1)


def history_lengths(rng: np.random.Generator, rows: int, max_len: int) -> np.ndarray:
    """Lengths spread over 0..max_len, a third of them max_len (see the module docstring)."""
    return np.minimum(max_len, np.floor(rng.random(rows) * 1.5 * max_len)).astype(np.int64)


def joined(values: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Consecutive runs of `values` (integers), `lengths[i]` for row i, as `^`-joined text; null (an empty
    CSV field) for an empty history."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    text = pl.Series(values).cast(pl.String).to_arrow()
    lists = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), text))
    return lists.list.join(HISTORY_SEPARATOR).replace("", None)


def write_csv(path: Path, rows: int, chunk: Callable[[int, int], pl.DataFrame]) -> None:
    """`rows` rows made by `chunk(start, n)` frames of at most CHUNK_ROWS rows, appended to one CSV file."""
    with path.open("wb") as handle:
        for start in range(0, rows, CHUNK_ROWS):
            chunk(start, min(CHUNK_ROWS, rows - start)).write_csv(handle, include_header=start == 0)


def write_h5_table(path: Path, keys: np.ndarray, vectors: Callable[[int], np.ndarray], dim: int) -> None:
    """A BARS embedding file, as h5py writes it: datasets `key` (int64) and `value` (len(keys) x dim
    float32), the vectors made CHUNK_ROWS rows at a time by `vectors(n)`."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("key", data=keys.astype(np.int64))
        value = h5.create_dataset("value", shape=(len(keys), dim), dtype=np.float32)
        for start in range(0, len(keys), CHUNK_ROWS):
            value[start:start + CHUNK_ROWS] = vectors(min(CHUNK_ROWS, len(keys) - start))


def part_rng(seed: int, *part: int) -> np.random.Generator:
    """The generator of one part of a release (e.g. split, first row): independent of the other parts, so a
    chunk's rows depend on `seed` and its position only."""
    return np.random.default_rng([seed, *part])


def parse_args(description: str, presets: dict[str, Sizes], argv: list[str] | None) -> tuple[Path, Sizes, int]:
    """`DIR --preset NAME [--seed S]`, and overrides of the preset's sizes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--preset", choices=list(presets), required=True)
    for name in ("train_rows", "test_rows", "users", "items"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help="overrides the preset's value")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = presets[args.preset]
    overrides = {name: getattr(args, name) for name in ("train_rows", "test_rows", "users", "items")}
    sizes = Sizes(**{**sizes.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    if min(sizes.train_rows, sizes.test_rows, sizes.users, sizes.items) < 1:
        parser.error("row counts, users and items must be positive")
    return args.directory, sizes, args.seed
