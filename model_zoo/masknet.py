"""MaskNet (Wang, She and Zhang, 2021, "MaskNet: Introducing Feature-Wise Multiplication to CTR
Ranking Models by Instance-Guided Mask", DLP-KDD, Section 3; FuxiCTR's MaskNet as BARS runs it).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP, Dropout, activation, xavier_init
from model_zoo.base import CTRModel


class FieldLayerNorm(nn.Module):
    """LN_EMB (Section 3.3): layer norm of every field's embedding, each field with its own gain
    and bias (FuxiCTR's one nn.LayerNorm per field, computed for all fields at once)."""

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_fields, dim))
        self.bias = nn.Parameter(torch.zeros(num_fields, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, fields, dim]."""
        return nn.functional.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class MaskBlock(nn.Module):
    """One MaskBlock (instance-guided mask: Section 3.2; MaskBlock: Section 3.3):

        V_mask   = W_2 ReLU(W_1 V_emb + b_1) + b_2          instance-guided mask from the flat embedding
        V_output = act(LN(W_h (V_mask * V_hidden)))         W_h has no bias (LN supplies it)

    The mask's aggregation layer is `reduction_ratio` times wider than its projection layer, whose
    width is that of the masked input V_hidden. `layer_norm=False` drops the LN; dropout follows the
    activation (FuxiCTR).
    """

    def __init__(self, embedding_width: int, hidden_width: int, output_width: int, reduction_ratio: float,
                 activation_name: str = "relu", dropout: float = 0.0, layer_norm: bool = True):
        super().__init__()
        aggregation = int(hidden_width * reduction_ratio)
        if aggregation < 1:
            raise CtrbenchError(f"model.reduction_ratio: {reduction_ratio} leaves an empty mask aggregation layer "
                                f"for a {hidden_width}-wide input; use a ratio >= {1 / hidden_width:g}")
        self.mask = MLP(embedding_width, [aggregation], output_dim=hidden_width)
        self.hidden = nn.Linear(hidden_width, output_width, bias=False)
        self.norm = nn.LayerNorm(output_width) if layer_norm else nn.Identity()
        self.activation = activation(activation_name)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        xavier_init(self)

    def forward(self, v_emb: torch.Tensor, v_hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(self.norm(self.hidden(self.mask(v_emb) * v_hidden))))


class MaskNet(CTRModel):
    """Serial or parallel MaskBlocks (instance-guided masks) over the field embeddings.

    The two structures of Section 3.4, then one logit. Every block's mask is computed from the flat embedding V_emb. The first (serial) or every
    (parallel) block masks LN_EMB(V_emb) (V_emb itself with `embedding_layer_norm=False`).

    serial:   V_1 = MaskBlock_1(V_emb, LN_EMB(V_emb)); V_i = MaskBlock_i(V_emb, V_{i-1});
              y = w^T V_last + b.  `serial_block_units` are the blocks' output widths.
    parallel: y = MLP([MaskBlock_1(V_emb, LN_EMB(V_emb)), ..., MaskBlock_n(...)]), n =
              `parallel_num_blocks` blocks of width `parallel_block_dim`, MLP hidden layers
              `parallel_mlp_units` then a linear output (dropout, no layer norm in the MLP).
    """

    name = "masknet"
    display_name = "MaskNet"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 10,
        structure: Literal["serial", "parallel"] = "serial",
        serial_block_units: tuple[int, ...] = (64, 64, 64),
        parallel_num_blocks: int = 1,
        parallel_block_dim: int = 64,
        parallel_mlp_units: tuple[int, ...] = (64, 64, 64),
        reduction_ratio: float = 1.0,
        activation_name: str = "relu",
        dropout: float = 0.0,
        embedding_layer_norm: bool = True,
        block_layer_norm: bool = True,
    ):
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        fields = self.embedding.num_fields
        width = fields * embedding_dim
        self.embedding_norm = FieldLayerNorm(fields, embedding_dim) if embedding_layer_norm else nn.Identity()
        self.structure = structure

        def block(hidden_width: int, output_width: int) -> MaskBlock:
            return MaskBlock(width, hidden_width, output_width, reduction_ratio, activation_name, dropout,
                             block_layer_norm)

        if structure == "serial":
            if not serial_block_units:
                raise CtrbenchError("model.serial_block_units: a serial MaskNet needs at least one block, e.g. [64]")
            widths = [width, *serial_block_units]
            self.blocks = nn.ModuleList(block(widths[i], widths[i + 1]) for i in range(len(serial_block_units)))
            self.head = MLP(widths[-1], [], output_dim=1)
        elif structure == "parallel":
            if parallel_num_blocks < 1:
                raise CtrbenchError(f"model.parallel_num_blocks: must be >= 1, got {parallel_num_blocks}")
            self.blocks = nn.ModuleList(block(width, parallel_block_dim) for _ in range(parallel_num_blocks))
            self.head = MLP(parallel_num_blocks * parallel_block_dim, parallel_mlp_units, output_dim=1,
                            activation_name=activation_name, dropout=dropout)
        else:
            raise CtrbenchError(f"model.structure: expected 'serial' or 'parallel', got {structure!r}")

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch)
        v_emb = x0.flatten(1)
        v_normed = self.embedding_norm(x0).flatten(1)
        if self.structure == "serial":
            hidden = v_normed
            for block in self.blocks:
                hidden = block(v_emb, hidden)
        else:
            hidden = torch.cat([block(v_emb, v_normed) for block in self.blocks], dim=1)
        return self.head(hidden).squeeze(-1)
