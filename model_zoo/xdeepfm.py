"""xDeepFM (Lian et al., 2018, "xDeepFM: Combining Explicit and Implicit Feature Interactions for
Recommender Systems", KDD, Section 3; FuxiCTR's xDeepFM as BARS runs it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP, xavier_init
from model_zoo.base import CTRModel
from model_zoo.logistic_regression import LogisticRegression


class CompressedInteractionNetwork(nn.Module):
    """CIN (Section 3.1): explicit vector-wise interactions of bounded degree.

    With X^0 = X0 [m, D] and X^k [H_k, D]:

        X^k_{h,*} = b^k_h + sum_{i < H_{k-1}} sum_{j < m} W^{k,h}_{i,j} (X^{k-1}_{i,*} * X^0_{j,*})
        p^k_h = sum_d X^k_{h,d}                      (sum pooling)
        CIN(X0) = w^T [p^1, ..., p^T] + b            (one logit)

    The paper's layer has neither activation nor bias; FuxiCTR adds the bias b^k (its 1x1
    convolutions carry one) and no activation, and so do we. With `split_half` (the authors' reference
    implementation), every layer but the last sends half of its H_k feature maps to the next layer and
    the other half to the pooled output; without it (FuxiCTR, BARS), every feature map does both.
    """

    def __init__(self, num_fields: int, layer_units: Sequence[int], split_half: bool = False):
        super().__init__()
        if not layer_units:
            raise CtrbenchError("model.cin_layer_units: the CIN needs at least one layer, e.g. [16, 16, 16]")
        if split_half and any(units % 2 for units in layer_units[:-1]):
            raise CtrbenchError(f"model.cin_layer_units: with cin_split_half every layer but the last "
                                f"needs an even size, got {list(layer_units)}")
        self.split_half = split_half
        self.layers = nn.ModuleList()
        pooled, previous = 0, num_fields
        for k, units in enumerate(layer_units):
            self.layers.append(nn.Linear(previous * num_fields, units))
            halved = split_half and k < len(layer_units) - 1
            previous = units // 2 if halved else units
            pooled += units // 2 if halved else units
        self.output = nn.Linear(pooled, 1)
        xavier_init(self)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0: [B, m, D] -> one logit per row, [B]."""
        # Feature maps are kept as [B, D, channels] so that every layer is one Linear over channels.
        base = x0.transpose(1, 2)
        hidden, pooled = base, []
        for k, layer in enumerate(self.layers):
            # All products X^{k-1}_i * X^0_j as H_{k-1} * m channels.
            products = (hidden.unsqueeze(3) * base.unsqueeze(2)).flatten(2)
            feature_maps = layer(products)  # [B, D, H_k]
            if self.split_half and k < len(self.layers) - 1:
                hidden, direct = feature_maps.chunk(2, dim=2)
            else:
                hidden = direct = feature_maps
            pooled.append(direct.sum(dim=1))
        return self.output(torch.cat(pooled, dim=1)).squeeze(-1)


class XDeepFM(CTRModel):
    """Linear part + compressed interaction network (CIN) + DNN, summed into one logit.

    Section 3.3:

        y = w_linear(x) + CIN(X0) + DNN(flatten(X0))

    The linear part is the zoo's logistic regression (its own 1-dim embeddings); CIN and DNN share
    the d-dim embedding X0 [m fields, d]. An empty `dnn_hidden_units` drops the DNN (BARS's "CIN"
    rows: linear part + CIN only).
    """

    name = "xdeepfm"
    display_name = "xDeepFM"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 10,
        cin_layer_units: tuple[int, ...] = (16, 16, 16),
        cin_split_half: bool = False,
        dnn_hidden_units: tuple[int, ...] = (64, 64, 64),
        dnn_activation: str = "relu",
        dnn_dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(feature_map)
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.linear = LogisticRegression(feature_map)
        fields = self.embedding.num_fields
        self.cin = CompressedInteractionNetwork(fields, cin_layer_units, cin_split_half)
        self.dnn = MLP(fields * embedding_dim, dnn_hidden_units, output_dim=1, activation_name=dnn_activation,
                       dropout=dnn_dropout, batch_norm=batch_norm) if dnn_hidden_units else None

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch)
        logit = self.linear(batch) + self.cin(x0)
        if self.dnn is not None:
            logit = logit + self.dnn(x0.flatten(1)).squeeze(-1)
        return logit
