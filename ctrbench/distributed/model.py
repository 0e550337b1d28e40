"""A zoo model with its embedding tables in torchrec EmbeddingBagCollections.

Zoo models read their inputs only through `FeatureEmbedding` modules (batch -> X0 [B, F, d]), so the
same model classes train sharded without a line of model code changing:

1. the zoo model is built from a copy of the feature map whose vocabularies have 2 rows each: its dense
   layers are created and seeded exactly as on one node, and no full-size table is ever allocated;
2. each of its FeatureEmbedding modules is replaced by a `PooledFieldEmbedding`, which keeps the numeric
   part (bottom MLP or per-feature vectors) and takes the categorical and sequence fields from the
   pooled output of an EmbeddingBagCollection;
3. that EBC is created on the meta device with the real vocabulary sizes: one table per table of the
   FeatureEmbedding (a categorical feature together with the sequences that share it, or a sequence with
   its own vocabulary), mean- or sum-pooled like the FeatureEmbedding's sequences (a categorical bag
   holds one id, so its pooling is the lookup itself).

Pretrained-embedding features stay as on one node: the FeatureEmbedding keeps its frozen table (loaded
from the dataset on every rank: replicated, a buffer, never trained or all-reduced) and the learned
linear map after it, and computes those fields, and those of the sequences sharing the table, from
the batch's pretrained indices and history columns (`SparseBatch.pretrained`, `.sequences`). The map
is a dense parameter: DDP all-reduces its gradient and Adam updates it, with the dense learning rate
(one node: the embedding learning rate). The sharding plan's memory counts the frozen tables on every GPU.

`ShardedCTRModel` puts the EBCs at the top level, next to the zoo model: TrainPipelineSparseDist then
finds their KeyedJaggedTensor input as a plain attribute of the batch and overlaps their input
all-to-all with the previous step, and the zoo model itself stays one opaque dense module.

Tables are initialised like FeatureEmbedding's (normal, std `init_std`), with values that depend only on
(seed, table, row): every sharding layout and world size starts from the same weights.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedTensor, PoolingType
from torchrec.types import DataType

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from ctrbench.distributed.data import SparseBatch, in_frozen_table
from ctrbench.nn.embedding import FeatureEmbedding
from model_zoo import get_model_class

INIT_CHUNK_ROWS = 1 << 16  # rows per independently seeded block of a table's initial values


@dataclass
class PooledInputs:
    """What a zoo model receives in place of a `Batch`: numeric values and the EBCs' pooled outputs."""

    numeric: torch.Tensor  # float32 [B, n_numeric]
    pooled: dict[str, KeyedTensor]  # EBC name -> its pooled embeddings, one key per feature
    pretrained: torch.Tensor  # int32 [B, n_pretrained], as Batch.pretrained
    sequences: dict[str, torch.Tensor]  # the history columns looked up in frozen tables, as Batch.sequences

    def __len__(self) -> int:
        return self.numeric.shape[0]


class PooledFieldEmbedding(nn.Module):
    """Stands in for a FeatureEmbedding: the same X0, its sparse fields read from EBC `group`'s output and
    its frozen-table fields computed by the source itself."""

    def __init__(self, source: FeatureEmbedding, group: str, sparse_fields: list[str]):
        super().__init__()
        source.table = None  # the tables now live in the EBC; the source keeps its numeric and frozen parts
        self.source = source
        self.group = group
        self.sparse_fields = sparse_fields  # EBC output keys, in X0 field order
        self.frozen_fields = source.frozen_fields
        computed, order = sparse_fields + self.frozen_fields, source.field_names[source.numeric_fields:]
        self.reorder = computed != order
        self.register_buffer("field_order", torch.tensor([computed.index(name) for name in order], dtype=torch.long),
                             persistent=False)

    def forward(self, inputs: PooledInputs) -> torch.Tensor:
        numeric = self.source.embed_numeric(inputs.numeric)
        fields = [] if numeric is None else [numeric]
        looked_up = []
        if self.sparse_fields:
            sparse = KeyedTensor.regroup([inputs.pooled[self.group]], [self.sparse_fields])[0]
            looked_up.append(sparse.view(sparse.shape[0], len(self.sparse_fields), self.source.embedding_dim))
        if self.frozen_fields:
            looked_up.append(self.source.embed_frozen(inputs.pretrained, inputs.sequences))
        if looked_up:
            x = torch.cat(looked_up, dim=1)
            fields.append(x.index_select(1, self.field_order) if self.reorder else x)
        return fields[0] if len(fields) == 1 else torch.cat(fields, dim=1)


class ShardedCTRModel(nn.Module):
    """EBCs + zoo model + loss: the module DistributedModelParallel wraps and the train pipeline drives.

    `forward` returns (loss, (loss, logits, labels)), detached outputs as TrainPipelineSparseDist expects.
    `table_configs` and `init_std` describe the EBCs' tables (per EBC name), since sharding replaces
    the EBC modules themselves.
    """

    def __init__(self, model: nn.Module, table_configs: dict[str, list[EmbeddingBagConfig]],
                 init_std: dict[str, float]):
        super().__init__()
        self.model = model
        self.tables = nn.ModuleDict({
            group: EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
            for group, configs in table_configs.items()
        })
        self.table_configs = table_configs
        self.init_std = init_std

    def forward(self, batch: SparseBatch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        pooled = {name: tables(batch.sparse) for name, tables in self.tables.items()}
        logits = self.model(PooledInputs(batch.numeric, pooled, batch.pretrained, batch.sequences))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
        return loss, (loss.detach(), logits.detach(), batch.label)


def _with_tiny_vocabularies(fmap: FeatureMap) -> FeatureMap:
    """The feature map the zoo model is built from: 2 rows for each table that moves to an EBC (a
    categorical feature, a sequence with its own vocabulary), so that none is allocated at full size;
    frozen pretrained tables keep theirs (loaded from the dataset). The sequences read through the
    KeyedJaggedTensor lose `column` and `index_map` (`SparseBatch.from_batch` maps their items)."""
    features = []
    for spec in fmap.features:
        if spec.type == "categorical" or (spec.type == "sequence" and spec.share_embedding is None):
            spec = dataclasses.replace(spec, vocab_size=2)
        if spec.type == "sequence" and not in_frozen_table(fmap, spec):
            spec = dataclasses.replace(spec, column=None, index_map=None)
        features.append(spec)
    return dataclasses.replace(fmap, features=features)


def _table_configs(source: FeatureEmbedding, fmap: FeatureMap, data_type: DataType) -> tuple[list[EmbeddingBagConfig], list[str]]:
    """The EBC tables replacing `source`'s fused table, and the sparse field names in X0 order."""
    sparse_fields = [name for name in source.field_names[source.numeric_fields:] if name not in source.frozen_fields]
    features_of: dict[str, list[str]] = {}  # table (owner feature) -> features looked up in it
    for name in sparse_fields:
        owner = fmap.feature(name).share_embedding or name
        features_of.setdefault(owner, []).append(name)
    pooling = PoolingType.MEAN if source.sequence_pooling == "mean" else PoolingType.SUM
    tables = [
        EmbeddingBagConfig(name=owner, num_embeddings=fmap.feature(owner).vocab_size,
                           embedding_dim=source.embedding_dim, feature_names=names, pooling=pooling,
                           data_type=data_type)
        for owner, names in features_of.items()
    ]
    return tables, sparse_fields


def build_sharded_model(model_name: str, model_params: dict[str, Any], fmap: FeatureMap, seed: int,
                        data_type: DataType = DataType.FP32) -> ShardedCTRModel:
    """The zoo model `model_name` with its tables moved into meta-device EBCs (not yet sharded)."""
    torch.manual_seed(seed)
    model = get_model_class(model_name)(_with_tiny_vocabularies(fmap), **model_params)
    sources = [(path, module) for path, module in model.named_modules() if isinstance(module, FeatureEmbedding)]
    if not sources:
        raise CtrbenchError(f"model {model_name!r} has no FeatureEmbedding; the distributed track shards those")
    table_configs, init_std = {}, {}
    for path, source in sources:
        group = path.replace(".", "_")
        configs, sparse_fields = _table_configs(source, fmap, data_type)
        if configs:  # a layer of numeric features only has no tables
            table_configs[group], init_std[group] = configs, source.init_std
        parent_path, _, attribute = path.rpartition(".")
        setattr(model.get_submodule(parent_path), attribute, PooledFieldEmbedding(source, group, sparse_fields))
    return ShardedCTRModel(model, table_configs, init_std)


def _block_seed(seed: int, table: str, block: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(table.encode()) * 65_537 + block) % (1 << 63)


def initial_rows(seed: int, table: str, std: float, dim: int, start: int, stop: int,
                 device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Initial values of rows start..stop of a table: N(0, std^2), drawn per block of INIT_CHUNK_ROWS rows
    from a generator seeded by (seed, table, block), so any row range gives the same values (on one
    device type: CUDA's generator draws other numbers than the CPU's)."""
    blocks = []
    for block in range(start // INIT_CHUNK_ROWS, -(-stop // INIT_CHUNK_ROWS)):
        generator = torch.Generator(device).manual_seed(_block_seed(seed, table, block))
        values = torch.randn(INIT_CHUNK_ROWS, dim, generator=generator, device=device) * std
        first = max(start - block * INIT_CHUNK_ROWS, 0)
        last = min(stop - block * INIT_CHUNK_ROWS, INIT_CHUNK_ROWS)
        blocks.append(values[first:last])
    return torch.cat(blocks)


@torch.no_grad()
def initialize_tables(model: nn.Module, sharded: ShardedCTRModel, seed: int) -> None:
    """Write every rank's table shards (or replicas) with their layout-independent initial values.

    `model` is the DistributedModelParallel around `sharded`; its state dict holds, per table, a
    ShardedTensor whose local shards are views of this rank's embedding storage, or a plain tensor
    for a data-parallel (replicated) table.
    """
    state = model.state_dict()
    for group, configs in sharded.table_configs.items():
        for config in configs:
            key = f"tables.{group}.embedding_bags.{config.name}.weight"
            weight = state[key]
            pieces = ([(s.tensor, s.metadata.shard_offsets) for s in weight.local_shards()]
                      if hasattr(weight, "local_shards") else [(weight, [0, 0])])
            for tensor, (row, column) in pieces:
                rows, columns = tensor.shape
                values = initial_rows(seed, f"{group}/{config.name}", sharded.init_std[group], config.embedding_dim,
                                      row, row + rows, tensor.device)
                tensor.copy_(values[:, column:column + columns])
