"""From parquet splits to batches of tensors: the `Batch`, and decoding row groups into it.

A split is a sequence of parquet row groups. Each row group is decoded straight into its slice of
a preallocated `Batch` (one contiguous matrix per feature type), so loading a split peaks at its
tensor bytes plus one row group's arrow table. Every value is checked on the way: indices inside
the vocabulary, finite numerics, labels in {0, 1}, columns present with the right type. A mismatch
stops with the file, column and row at fault.

How a split is served, in memory or streamed, is `ctrbench.data.sources`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import PADDING_INDEX, FeatureMap, FeatureSpec


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


def split_groups(fmap: FeatureMap, split: str) -> list[RowGroup]:
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
    return read_row_groups(fmap, split_groups(fmap, split))


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
