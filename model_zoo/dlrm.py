"""DLRM (Naumov et al., 2019, "Deep Learning Recommendation Model for Personalization and
Recommendation Systems", Section 2; FuxiCTR's DLRM as BARS runs it).
"""

from __future__ import annotations

from typing import Literal

import torch

from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP, InnerProductInteraction
from model_zoo.base import CTRModel


class DLRM(CTRModel):
    """Bottom MLP for dense features, pairwise dot interaction, top MLP.

    X0 = [bottom_mlp(x_dense); e_1; ...; e_m]  (F fields of dimension d; the bottom MLP output is
    one field, present only when the dataset has numeric features)
    interaction "dot": z = [bottom_mlp(x_dense), (<X0_i, X0_j>)_{i<j}]  (no self-terms)
    interaction "cat": z = flatten(X0)  (BARS's best Frappe config uses this)
    y = top_mlp(z), a linear output layer on top.
    """

    name = "dlrm"
    display_name = "DLRM"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        bottom_mlp_units: tuple[int, ...] = (64, 64),
        top_mlp_units: tuple[int, ...] = (256, 128),
        interaction: Literal["dot", "cat"] = "dot",
        top_mlp_dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim, numeric_mode="mlp",
                                          numeric_mlp_units=bottom_mlp_units, numeric_fields=1)
        self.has_dense = self.embedding.numeric_fields > 0
        self.interaction = interaction
        fields = self.embedding.num_fields
        self.dot = InnerProductInteraction(fields, "pairs") if interaction == "dot" else None
        if self.dot is not None:
            top_input = self.dot.output_dim + (embedding_dim if self.has_dense else 0)
        else:
            top_input = fields * embedding_dim
        self.top_mlp = MLP(top_input, top_mlp_units, output_dim=1, dropout=top_mlp_dropout, batch_norm=batch_norm)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch)
        if self.dot is None:
            z = x0.flatten(1)
        else:
            z = self.dot(x0)
            if self.has_dense:
                z = torch.cat([x0[:, 0], z], dim=1)
        return self.top_mlp(z).squeeze(-1)
