"""Vocabularies of categorical values (fitted on train) and pretrained embedding tables aligned to them.

Indices: 0 padding, 1 out-of-vocabulary, values from `FIRST_VALUE_INDEX` = 2. Pretrained vectors come as
BARS `.h5` files (`key`/`value`) or `.npy` matrices and are written aligned to a vocabulary (row = index).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import OOV_INDEX
from preprocess.inputs import require_file

FIRST_VALUE_INDEX = 2  # vocabulary indices: 0 padding, 1 out-of-vocabulary, values from 2
MAX_COUNTED_ID = 1 << 24  # values are counted in an array up to this id (128 MiB), beyond by a hash table
# The smallest id written with k digits (k = 0..20: none with 0, and none of 20, beyond int64) and how many there are.
CANONICAL_LOWEST = np.array([1, 0, *10 ** np.arange(1, 19, dtype=np.uint64), 0], dtype=np.uint64)
CANONICAL_SPAN = np.array([0, 10, *9 * 10 ** np.arange(1, 18, dtype=np.uint64), 2**63 - 10**18, 0], dtype=np.uint64)


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
