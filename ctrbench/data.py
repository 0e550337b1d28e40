"""From parquet splits to batches of tensors.

A split is read once into a `Batch` of contiguous tensors (one matrix per feature type); training
batches are then index gathers (shuffled) or slices (in order) of those tensors, so the per-batch
cost is a handful of tensor ops whatever the number of rows or features. Splits too large for memory
are streamed row group by row group with `ParquetStream`, shuffled within a window of row groups.

Every value is checked on load: indices inside the vocabulary, finite numerics, labels in {0, 1},
columns present with the right type. A mismatch stops with the file and column at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctrbench.errors import CtrbenchError
from ctrbench.features import FeatureMap, FeatureSpec


@dataclass
class Batch:
    """Inputs and labels of a set of rows, grouped by feature type.

    Column j of `categorical` is feature `feature_map.of_type("categorical")[j]`, likewise for
    `pretrained` (pretrained_embedding features) and `numeric`; `sequences` maps a sequence feature's
    name to its [rows, max_len] index matrix.
    """

    categorical: torch.Tensor  # int32 [B, n_categorical]
    pretrained: torch.Tensor  # int32 [B, n_pretrained]
    numeric: torch.Tensor  # float32 [B, n_numeric]
    sequences: dict[str, torch.Tensor]  # name -> int32 [B, max_len]
    label: torch.Tensor  # float32 [B]

    def __len__(self) -> int:
        return self.label.shape[0]

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
    return values.astype(np.int32, copy=False)


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
    return flat.astype(np.int32, copy=True).reshape(rows, spec.max_len)  # copy: arrow buffers are read-only


def _numeric_column(column: pa.Array, spec: FeatureSpec, where: str) -> np.ndarray:
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise CtrbenchError(f"{where}: numeric column {spec.name!r} must be float, found {column.type}")
    values = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        raise CtrbenchError(
            f"{where}: numeric column {spec.name!r} has {int(bad.sum())} NaN/inf/null values "
            f"(first at row {int(np.argmax(bad))}); fill or drop them when preprocessing"
        )
    return values


def _label_column(column: pa.Array, name: str, where: str) -> np.ndarray:
    values = column.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = ~((values == 0) | (values == 1))
    if bad.any():
        first = int(np.argmax(bad))
        raise CtrbenchError(
            f"{where}: label column {name!r} must be 0 or 1; row {first} holds {column[first].as_py()!r}"
        )
    return values


def _matrix(columns: list[np.ndarray], rows: int, dtype) -> torch.Tensor:
    matrix = np.empty((rows, len(columns)), dtype=dtype)
    for j, values in enumerate(columns):
        matrix[:, j] = values
    return torch.from_numpy(matrix)


def batch_from_arrow(table: pa.Table, fmap: FeatureMap, where: str) -> Batch:
    """Convert (and check) an arrow table holding a split's columns."""
    rows = table.num_rows
    return Batch(
        categorical=_matrix(
            [_index_column(_column(table, f.name, where), f, where) for f in fmap.of_type("categorical")],
            rows, np.int32),
        pretrained=_matrix(
            [_index_column(_column(table, f.name, where), f, where) for f in fmap.of_type("pretrained_embedding")],
            rows, np.int32),
        numeric=_matrix(
            [_numeric_column(_column(table, f.name, where), f, where) for f in fmap.of_type("numeric")],
            rows, np.float32),
        sequences={
            f.name: torch.from_numpy(_sequence_column(_column(table, f.name, where), f, where))
            for f in fmap.of_type("sequence")
        },
        label=torch.from_numpy(_label_column(_column(table, fmap.label, where), fmap.label, where).copy()),
    )


def _columns(fmap: FeatureMap) -> list[str]:
    return [f.name for f in fmap.features] + [fmap.label]


def _read_schema(path: Path, fmap: FeatureMap) -> pq.FileMetaData:
    """A split file's metadata, once the file is found readable and holding the feature map's columns."""
    if not path.is_file():
        raise CtrbenchError(f"{path}: split file listed in the feature map is missing; re-run `ctrbench preprocess`")
    try:
        metadata = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CtrbenchError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in _columns(fmap) if c not in metadata.schema.to_arrow_schema().names]
    if missing:
        raise CtrbenchError(f"{path}: columns {missing} are in the feature map but not in the file; "
                            "the feature map does not match this parquet schema")
    return metadata


def _read_parquet(path: Path, fmap: FeatureMap) -> pa.Table:
    _read_schema(path, fmap)
    return pq.read_table(path, columns=_columns(fmap))


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
    parts = [batch_from_arrow(_read_parquet(p, fmap), fmap, str(p)) for p in fmap.split_paths(split)]
    batch = parts[0] if len(parts) == 1 else Batch.concat(parts)
    _check_rows(fmap, split, len(batch))
    return batch


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
    """A split read row group by row group, for data larger than memory.

    With `shuffle`, the file order is permuted and rows are shuffled within a window of
    `window_row_groups` consecutive row groups, the usual trade-off between randomness and memory.
    """

    def __init__(self, fmap: FeatureMap, split: str, window_row_groups: int = 4):
        self.fmap = fmap
        self.paths = fmap.split_paths(split)
        _check_rows(fmap, split, sum(_read_schema(path, fmap).num_rows for path in self.paths))
        self.num_rows = fmap.splits[split].rows
        self.window_row_groups = window_row_groups

    def _windows(self, shuffle: bool, generator: torch.Generator | None) -> Iterator[Batch]:
        order = torch.randperm(len(self.paths), generator=generator).tolist() if shuffle else range(len(self.paths))
        for i in order:
            path = self.paths[i]
            if not path.is_file():
                raise CtrbenchError(f"{path}: split file listed in the feature map is missing")
            parquet = pq.ParquetFile(path)
            groups = list(range(parquet.num_row_groups))
            for start in range(0, len(groups), self.window_row_groups):
                table = parquet.read_row_groups(groups[start:start + self.window_row_groups], columns=_columns(self.fmap))
                yield batch_from_arrow(table, self.fmap, str(path))

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        carry: Batch | None = None
        for window in self._windows(shuffle, generator):
            if shuffle:
                window = window.take(torch.randperm(len(window), generator=generator))
            if carry is not None:
                window = Batch.concat([carry, window])
            full = len(window) - len(window) % batch_size
            for start in range(0, full, batch_size):
                yield window.slice(start, start + batch_size)
            carry = window.slice(full, len(window)) if full < len(window) else None
        if carry is not None:
            yield carry


def open_split(fmap: FeatureMap, split: str, stream: bool = False) -> InMemory | ParquetStream:
    return ParquetStream(fmap, split) if stream else InMemory(load_split(fmap, split))
