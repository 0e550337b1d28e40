"""The shared embedding layer: a `Batch` in, the field-embedding matrix X0 [B, F, d] out.

Fields come in a fixed order, grouped by feature type (each group in feature-map order):

    numeric fields | categorical | pretrained_embedding | sequence

* categorical: one row of a table per index. All categorical features (and sequences with their own
  vocabulary) share one fused table with per-feature row offsets, so the lookup is one kernel call.
* numeric, mode "scaled": e_j = x_j * v_j with a learned vector v_j per feature (FuxiCTR / BARS).
  Mode "mlp": all numeric values go through one MLP whose output is reshaped into
  `numeric_fields` d-dim fields (DLRM's and Wukong's bottom MLP; ReLU after every layer).
* pretrained_embedding: a frozen table loaded from the dataset, then a learned linear map to d.
* sequence: masked mean (or sum) of the item embeddings; padding (index 0) is left out. A sequence
  with `share_embedding` uses that feature's table (and projection, when pretrained). A sequence that
  reads another's column (`FeatureSpec.column`) maps its items through its index map first.

`features` restricts the layer to some features (FinalMLP's gate context): only those become fields,
with tables of their own, as FuxiCTR's `required_feature_columns`.

Embedding L2 regularisation follows FuxiCTR: lambda / 2 * ||W||^2 over every trainable parameter of
this layer except the numeric MLP (see `regularized_parameters`), added to the loss by the trainer.

What counts as a model's embedding parameters is defined here, once, in two senses:
`embedding_parameters` (what training treats as embeddings: the embedding learning rate and
regulariser) and `table_parameters` (the lookup tables alone: the embedding parameters that
`ctrbench.nn.flops` reports, as the Wukong paper's Table 3 counts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.data.batches import Batch, load_index_map
from ctrbench.data.features import FeatureMap, FeatureSpec
from ctrbench.nn.layers import MLP


class FeatureEmbedding(nn.Module):
    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int,
        numeric_mode: Literal["scaled", "mlp"] = "scaled",
        numeric_mlp_units: Sequence[int] = (),
        numeric_fields: int = 1,
        sequence_pooling: Literal["mean", "sum"] = "mean",
        init_std: float = 1e-4,
        features: Sequence[str] | None = None,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.sequence_pooling = sequence_pooling
        self.numeric_mode = numeric_mode
        self.init_std = init_std
        all_names = [spec.name for spec in feature_map.features]
        selected = set(all_names if features is None else features)
        unknown = sorted(selected - set(all_names))
        if unknown:
            raise unknown_name("feature", unknown[0], all_names)
        # Tables needed: the selected features' own plus those their sequences share.
        needed = selected | {s.share_embedding for s in feature_map.of_type("sequence") if s.name in selected}
        categorical = [f for f in feature_map.of_type("categorical") if f.name in selected]
        pretrained = [f for f in feature_map.of_type("pretrained_embedding") if f.name in selected]
        numeric = [f for f in feature_map.of_type("numeric") if f.name in selected]
        self.sequence_specs = [f for f in feature_map.of_type("sequence") if f.name in selected]
        self.index_maps = [spec.name for spec in self.sequence_specs if spec.index_map is not None]
        for name in self.index_maps:  # data, not parameters: loaded with the dataset, not checkpointed
            self.register_buffer(f"index_map_{name}", load_index_map(feature_map, feature_map.feature(name)),
                                 persistent=False)
        self.column_index = None if features is None else {
            kind: _columns(feature_map.of_type(kind), selected)
            for kind in ("categorical", "pretrained_embedding", "numeric")
        }

        # Fused table: categorical features first, then sequences that have their own vocabulary.
        owners = [f for f in feature_map.of_type("categorical") if f.name in needed] + [
            s for s in feature_map.of_type("sequence") if s.name in needed and s.share_embedding is None]
        offsets = np.cumsum([0] + [spec.vocab_size for spec in owners])
        self.offset_of = {spec.name: int(offsets[i]) for i, spec in enumerate(owners)}
        self.table = nn.Embedding(int(offsets[-1]) or 1, embedding_dim)
        nn.init.normal_(self.table.weight, std=init_std)
        self.register_buffer(
            "categorical_offsets",
            torch.tensor([self.offset_of[s.name] for s in categorical], dtype=torch.int32),
            persistent=False,
        )

        self.pretrained_names = [spec.name for spec in pretrained]
        self.projections = nn.ModuleDict()
        for spec in (f for f in feature_map.of_type("pretrained_embedding") if f.name in needed):
            self.register_buffer(f"frozen_{spec.name}", _load_pretrained(feature_map, spec))
            self.projections[spec.name] = nn.Linear(spec.pretrained_dim, embedding_dim, bias=False)
            nn.init.xavier_normal_(self.projections[spec.name].weight)

        self.numeric_mlp: MLP | None = None
        self.numeric_weight: nn.Parameter | None = None
        if numeric and numeric_mode == "scaled":
            self.numeric_weight = nn.Parameter(torch.empty(len(numeric), embedding_dim))
            nn.init.normal_(self.numeric_weight, std=(2.0 / (1 + embedding_dim)) ** 0.5)
            numeric_fields = len(numeric)
        elif numeric and numeric_mode == "mlp":
            self.numeric_mlp = MLP(len(numeric), numeric_mlp_units, numeric_fields * embedding_dim,
                                   output_activation=True)
        elif numeric_mode not in ("scaled", "mlp"):
            raise CtrbenchError(f"numeric_mode must be 'scaled' or 'mlp', got {numeric_mode!r}")
        self.numeric_fields = numeric_fields if numeric else 0
        self.num_fields = self.numeric_fields + len(categorical) + len(pretrained) + len(self.sequence_specs)
        self.field_names = (
            ([f.name for f in numeric] if numeric_mode == "scaled" else [f"numeric_{i}" for i in range(self.numeric_fields)])
            + [f.name for f in categorical] + self.pretrained_names + [s.name for s in self.sequence_specs]
        )

    def field_index(self, name: str) -> int:
        """Position of a feature's field in X0 (for models that single out features)."""
        if name not in self.field_names:
            raise unknown_name("field", name, self.field_names)
        return self.field_names.index(name)

    def regularized_parameters(self) -> list[nn.Parameter]:
        mlp = set(map(id, self.numeric_mlp.parameters())) if self.numeric_mlp is not None else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in mlp]

    def _pretrained_lookup(self, name: str, index: torch.Tensor) -> torch.Tensor:
        frozen = getattr(self, f"frozen_{name}")
        return self.projections[name](frozen[index.long()])

    def _sequence(self, spec: FeatureSpec, items: torch.Tensor) -> torch.Tensor:
        owner = spec.share_embedding or spec.name
        if spec.name in self.index_maps:  # padding stays 0 (load_index_map checks)
            items = getattr(self, f"index_map_{spec.name}")[items.long()]
        if owner in self.projections:
            vectors = self._pretrained_lookup(owner, items)
        else:
            vectors = self.table(items + self.offset_of[owner])
        mask = (items != 0).unsqueeze(-1).to(vectors.dtype)
        pooled = (vectors * mask).sum(dim=1)
        if self.sequence_pooling == "mean":
            pooled = pooled / mask.sum(dim=1).clamp(min=1.0)
        return pooled

    @property
    def frozen_fields(self) -> list[str]:
        """The fields looked up in frozen pretrained tables (then projected), in X0 order: the pretrained
        features, then the sequences sharing their tables."""
        return self.pretrained_names + [s.name for s in self.sequence_specs
                                        if (s.share_embedding or s.name) in self.projections]

    def embed_frozen(self, pretrained: torch.Tensor, sequences: dict[str, torch.Tensor]) -> torch.Tensor:
        """The `frozen_fields` [B, n, d] from a batch's pretrained columns (all of them, int32 [B, n_pretrained],
        as `Batch.pretrained`) and its stored sequence columns (as `Batch.sequences`), as `forward` makes them."""
        columns = self._columns_of(pretrained, "pretrained_embedding")
        fields = [self._pretrained_lookup(name, columns[:, j]) for j, name in enumerate(self.pretrained_names)]
        fields += [self._sequence(spec, sequences[spec.stored_as]) for spec in self.sequence_specs
                   if (spec.share_embedding or spec.name) in self.projections]
        return torch.stack(fields, dim=1)

    def _columns_of(self, values: torch.Tensor, kind: str) -> torch.Tensor:
        return values if self.column_index is None else values[:, self.column_index[kind]]

    def embed_numeric(self, numeric: torch.Tensor) -> torch.Tensor | None:
        """The numeric fields [B, numeric_fields, d] of X0 from all the batch's numeric values, or None
        when this layer has no numeric features."""
        numeric = self._columns_of(numeric, "numeric")
        if self.numeric_weight is not None:
            return numeric.unsqueeze(-1) * self.numeric_weight
        if self.numeric_mlp is not None:
            return self.numeric_mlp(numeric).view(numeric.shape[0], self.numeric_fields, self.embedding_dim)
        return None

    def forward(self, batch: Batch) -> torch.Tensor:
        numeric = self.embed_numeric(batch.numeric)
        fields = [] if numeric is None else [numeric]
        if self.categorical_offsets.numel():
            categorical = self._columns_of(batch.categorical, "categorical")
            fields.append(self.table(categorical + self.categorical_offsets))
        pretrained = self._columns_of(batch.pretrained, "pretrained_embedding")
        for j, name in enumerate(self.pretrained_names):
            fields.append(self._pretrained_lookup(name, pretrained[:, j]).unsqueeze(1))
        for spec in self.sequence_specs:
            fields.append(self._sequence(spec, batch.sequence(spec)).unsqueeze(1))
        return torch.cat(fields, dim=1)


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What training treats as embedding parameters (`train.embedding_learning_rate`,
    `train.embedding_regularizer`): every `FeatureEmbedding`'s `regularized_parameters`, each once:
    the tables, the numeric features' vectors and the pretrained projections, not the numeric MLP."""
    params: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, FeatureEmbedding):
            params.update((id(p), p) for p in module.regularized_parameters())
    return list(params.values())


def table_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable lookup tables (rows x d) of every `FeatureEmbedding`, each once: the embedding
    parameters of the paper's Table 3 (`ctrbench.nn.flops.count_parameters`); the numeric vectors and
    pretrained projections that `embedding_parameters` adds count as dense parameters there."""
    tables: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, FeatureEmbedding) and module.table.weight.requires_grad:
            tables[id(module.table.weight)] = module.table.weight
    return list(tables.values())


def _columns(specs: list[FeatureSpec], selected: set[str]) -> list[int]:
    """Positions of the selected features among the Batch columns of their type."""
    return [j for j, spec in enumerate(specs) if spec.name in selected]


def _load_pretrained(feature_map: FeatureMap, spec: FeatureSpec) -> torch.Tensor:
    if feature_map.root is None:
        raise CtrbenchError(f"feature {spec.name!r}: pretrained table needs a feature map loaded from disk")
    path = feature_map.root / spec.embedding_source
    if not path.is_file():
        raise CtrbenchError(f"{path}: pretrained embedding table of feature {spec.name!r} is missing")
    table = np.load(path)
    if table.shape != (spec.vocab_size, spec.pretrained_dim):
        raise CtrbenchError(
            f"{path}: pretrained table has shape {table.shape}, the feature map says "
            f"({spec.vocab_size}, {spec.pretrained_dim})"
        )
    return torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32))
