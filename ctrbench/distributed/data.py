"""Each rank's share of a split, as batches of dense values plus a KeyedJaggedTensor.

A split (e.g. Criteo TB's one parquet file per day) is a sequence of parquet row groups, in file order
(several splits: one after the other).
Rank r of W reads row groups r, r + W, r + 2W, ... in order, so the ranks advance through the data
together: one global step covers W neighbouring row groups, and a pass over days 0-22 stays in time
order (no shuffling: the paper trains one pass over the days in order). A rank never opens the other
ranks' row groups (small datasets aside, see `RankShare`).

Every rank must take part in every step (the embedding all-to-alls are collective), so:
- training runs `min over ranks of (rows // local batch)` full batches on every rank, dropping the
  tail of at most one batch per rank;
- evaluation pads every rank's share to the longest share with copies of its own first rows; the
  padded rows' predictions are dropped before the metrics (`RankShare.rows` says how many are real).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torchrec import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch, RowGroup, batch_from_arrow, load_index_map, parquet_columns, row_groups
from ctrbench.data.features import PADDING_INDEX, FeatureMap, FeatureSpec
from ctrbench.data.sources import rebatch


def in_frozen_table(fmap: FeatureMap, spec: FeatureSpec) -> bool:
    """Whether a feature is looked up in a frozen pretrained table: a pretrained_embedding feature, or a
    sequence sharing one's table. Those tables stay out of the EBCs: each rank holds a replica, untrained."""
    owner = fmap.feature(spec.share_embedding) if spec.share_embedding else spec
    return owner.type == "pretrained_embedding"


def sparse_feature_names(fmap: FeatureMap) -> list[str]:
    """Keys of the KeyedJaggedTensor, in order: categorical features, then the sequences looked up in
    trainable tables."""
    return [f.name for f in fmap.of_type("categorical")] + [f.name for f in _sparse_sequences(fmap)]


def _sparse_sequences(fmap: FeatureMap) -> list[FeatureSpec]:
    return [f for f in fmap.of_type("sequence") if not in_frozen_table(fmap, f)]


def frozen_columns(fmap: FeatureMap) -> list[str]:
    """The stored sequence columns the sequences looked up in frozen tables read (`SparseBatch.sequences`)."""
    return list(dict.fromkeys(f.stored_as for f in fmap.of_type("sequence") if in_frozen_table(fmap, f)))


def load_index_maps(fmap: FeatureMap) -> dict[str, torch.Tensor]:
    """The index maps of the KeyedJaggedTensor's sequences that read another's column (`FeatureSpec.index_map`),
    by feature. (A sequence looked up in a frozen table is mapped by the model's FeatureEmbedding.)"""
    return {spec.name: load_index_map(fmap, spec) for spec in _sparse_sequences(fmap) if spec.index_map is not None}


@dataclass
class SparseBatch(Pipelineable):
    """A batch as the sharded model consumes it (and TrainPipelineSparseDist moves it)."""

    numeric: torch.Tensor  # float32 [B, n_numeric]
    sparse: KeyedJaggedTensor  # one id per row for categorical keys, the non-padding items for sequences
    pretrained: torch.Tensor  # int32 [B, n_pretrained]: indices into the frozen tables, as Batch.pretrained
    sequences: dict[str, torch.Tensor]  # `frozen_columns` -> int32 [B, max_len], as in Batch.sequences
    label: torch.Tensor  # float32 [B]

    @classmethod
    def from_batch(cls, batch: Batch, fmap: FeatureMap, index_maps: dict[str, torch.Tensor] | None = None) -> SparseBatch:
        """Categorical columns become bags of one id; sequences lose their padding (index 0), and a sequence
        reading another's column has its items mapped to its own vocabulary. `index_maps`:
        `load_index_maps(fmap)`, loaded once by a caller converting many batches (None: loaded here).
        What frozen tables look up (pretrained columns, `frozen_columns`) is passed on as it is."""
        index_maps = load_index_maps(fmap) if index_maps is None else index_maps
        rows = len(batch)
        values = [batch.categorical.t().reshape(-1)]
        lengths = [torch.ones(batch.categorical.numel(), dtype=torch.int32)]
        for spec in _sparse_sequences(fmap):
            items = batch.sequence(spec)
            present = items != PADDING_INDEX
            values.append(items[present] if spec.name not in index_maps else index_maps[spec.name][items[present].long()])
            lengths.append(present.sum(dim=1, dtype=torch.int32))
        sparse = KeyedJaggedTensor(keys=sparse_feature_names(fmap), values=torch.cat(values),
                                   lengths=torch.cat(lengths), stride=rows)
        return cls(numeric=batch.numeric, sparse=sparse, pretrained=batch.pretrained,
                   sequences={name: batch.sequences[name] for name in frozen_columns(fmap)}, label=batch.label)

    def __len__(self) -> int:
        return self.label.shape[0]

    def _map(self, fn) -> SparseBatch:
        return SparseBatch(numeric=fn(self.numeric), sparse=fn(self.sparse), pretrained=fn(self.pretrained),
                           sequences={name: fn(t) for name, t in self.sequences.items()}, label=fn(self.label))

    def to(self, device: torch.device, non_blocking: bool = False) -> SparseBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        for tensor in (self.numeric, self.sparse, self.pretrained, *self.sequences.values(), self.label):
            tensor.record_stream(stream)

    def pin_memory(self) -> SparseBatch:
        return self._map(lambda t: t.pin_memory())


def cut(groups: list[RowGroup], max_rows: int) -> list[RowGroup]:
    """The row groups cut into equal pieces of at most `max_rows` rows, in order."""
    pieces = []
    for group in groups:
        parts = -(-group.rows // max_rows)
        bounds = [group.rows * k // parts for k in range(parts + 1)]
        pieces.extend(RowGroup(group.path, group.index, bounds[k], bounds[k + 1] - bounds[k]) for k in range(parts))
    return pieces


class RankShare:
    """The row groups of some splits (concatenated) that one rank reads: every `world_size`-th, from `rank`.

    A split with fewer than `pieces_per_rank` row groups per rank (a small dataset; Criteo TB has
    thousands per GPU) first has its row groups cut into pieces of at most rows / (world_size *
    pieces_per_rank) rows, so that the ranks' shares differ by at most one piece. A rank then decodes
    every row group it has a piece of, once.
    """

    def __init__(self, fmap: FeatureMap, splits: list[str], rank: int, world_size: int, pieces_per_rank: int = 64):
        self.fmap = fmap
        self.where = f"splits {splits} of {fmap.root}"
        groups = row_groups([path for split in splits for path in fmap.split_paths(split)])
        max_rows = -(-sum(group.rows for group in groups) // (world_size * pieces_per_rank))
        self.groups = cut(groups, max(max_rows, 1))[rank::world_size]
        self.rows = sum(group.rows for group in self.groups)
        self.columns = parquet_columns(fmap)
        self._decoded: tuple[tuple[Path, int], Batch] | None = None  # the last row group read

    def _read(self, group: RowGroup) -> Batch:
        key = (group.path, group.index)
        if self._decoded is None or self._decoded[0] != key:
            table = pq.ParquetFile(group.path).read_row_group(group.index, columns=self.columns)
            self._decoded = key, batch_from_arrow(table, self.fmap, f"{group.path} row group {group.index}")
        return self._decoded[1].slice(group.start, group.start + group.rows)

    def _chunks(self, skip_rows: int) -> Iterator[Batch]:
        for group in self.groups:
            if skip_rows >= group.rows:
                skip_rows -= group.rows
                continue
            chunk = self._read(group)
            yield chunk.slice(skip_rows, len(chunk)) if skip_rows else chunk
            skip_rows = 0

    def train_batches(self, batch_size: int, skip_batches: int, num_batches: int) -> Iterator[Batch]:
        """Full batches `skip_batches` .. `skip_batches + num_batches - 1` of this share, in order."""
        if (skip_batches + num_batches) * batch_size > self.rows:
            raise CtrbenchError(f"{self.where}: this rank holds {self.rows} rows, fewer than "
                                f"{skip_batches + num_batches} batches of {batch_size}")
        batches = rebatch(self._chunks(skip_batches * batch_size), batch_size)
        for _ in range(num_batches):
            yield next(batches)

    def eval_batches(self, batch_size: int, padded_rows: int) -> Iterator[Batch]:
        """All rows of this share, then copies of its first rows up to `padded_rows`, in batches."""
        if not self.rows:
            raise CtrbenchError(f"{self.where}: this rank got no rows; the splits hold fewer rows than there are ranks")
        padding = padded_rows - self.rows

        def chunks() -> Iterator[Batch]:
            yield from self._chunks(0)
            if padding:
                first = self._read(self.groups[0])
                yield first.take(torch.arange(padding) % len(first))

        return rebatch(chunks(), batch_size)
