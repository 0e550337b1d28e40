"""AutoInt+ (Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
Networks", CIKM 2019, Section 4; FuxiCTR's AutoInt as BARS runs it).
"""

from __future__ import annotations

import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP, Dropout, xavier_init
from model_zoo.base import CTRModel


class MultiHeadSelfAttention(nn.Module):
    """One interacting layer (the paper's "Interacting Layer", Section 4) over the fields of X [B, F, d_in].

    Per head h (head_dim = attention_dim / num_heads):
        A_h = softmax(Q_h K_h^T / s),  Q_h = X W_Q^h, K_h = X W_K^h, V_h = X W_V^h   (no biases)
        s   = sqrt(head_dim) with `use_scale`, else 1 (the paper does not scale)
    out = ReLU(LN?([A_1 V_1, ..., A_H V_H] + R)),  R = X W_res when d_in != attention_dim, else X
    (`use_residual`; the paper always projects, FuxiCTR projects only when the width changes). Dropout
    acts on the attention weights; `layer_norm` is FuxiCTR's option, not in the paper.
    """

    def __init__(self, input_dim: int, attention_dim: int, num_heads: int, dropout: float = 0.0,
                 use_residual: bool = True, use_scale: bool = False, layer_norm: bool = False):
        super().__init__()
        if num_heads < 1 or attention_dim % num_heads:
            raise CtrbenchError(
                f"autoint_plus: attention_dim ({attention_dim}) must be a multiple of num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.scale = self.head_dim ** 0.5 if use_scale else 1.0
        self.query = nn.Linear(input_dim, attention_dim, bias=False)
        self.key = nn.Linear(input_dim, attention_dim, bias=False)
        self.value = nn.Linear(input_dim, attention_dim, bias=False)
        self.use_residual = use_residual
        self.residual = (nn.Linear(input_dim, attention_dim, bias=False)
                         if use_residual and input_dim != attention_dim else None)
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.layer_norm = nn.LayerNorm(attention_dim) if layer_norm else None
        xavier_init(self)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F, H * head_dim] -> [B, H, F, head_dim]."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        weights = torch.softmax(torch.matmul(query, key.transpose(-1, -2)) / self.scale, dim=-1)
        if self.dropout is not None:
            weights = self.dropout(weights)
        out = torch.matmul(weights, value).transpose(1, 2).flatten(2)  # heads concatenated: [B, F, A]
        if self.use_residual:
            out = out + (self.residual(x) if self.residual is not None else x)
        if self.layer_norm is not None:
            out = self.layer_norm(out)
        return torch.relu(out)


class AutoIntPlus(CTRModel):
    """Stacked multi-head self-attention over the field embeddings, plus a DNN (AutoInt+).

    X_0 = embeddings [B, F, d];  X_l = interacting_layer_l(X_{l-1}), l = 1..attention_layers
    y = w^T flatten(X_L) + b  +  DNN(flatten(X_0))  [+ sum_j w_j(x_j) with `use_wide`]
    The DNN is a FuxiCTR MLP block with a 1-unit output layer (`dnn_hidden_units=()` drops it: plain
    AutoInt); `use_wide` adds FuxiCTR's bias-free logistic-regression term. `net_dropout` applies to
    the attention weights and to the DNN, as in FuxiCTR.
    """

    name = "autoint_plus"
    display_name = "AutoInt+"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 10,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 64,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
        dnn_hidden_units: tuple[int, ...] = (400, 400, 400),
        dnn_activation: str = "relu",
        net_dropout: float = 0.0,
        batch_norm: bool = False,
        use_wide: bool = False,
    ):
        super().__init__(feature_map)
        if attention_layers < 1:
            raise CtrbenchError(f"autoint_plus: attention_layers must be >= 1, got {attention_layers}")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        self.attention = nn.Sequential(*[
            MultiHeadSelfAttention(embedding_dim if i == 0 else attention_dim, attention_dim, num_heads,
                                   net_dropout, use_residual, use_scale, layer_norm)
            for i in range(attention_layers)
        ])
        fields = self.embedding.num_fields
        self.attention_output = nn.Linear(fields * attention_dim, 1)
        xavier_init(self.attention_output)
        self.dnn = (MLP(fields * embedding_dim, dnn_hidden_units, output_dim=1, activation_name=dnn_activation,
                        dropout=net_dropout, batch_norm=batch_norm) if dnn_hidden_units else None)
        self.wide = FeatureEmbedding(feature_map, embedding_dim=1) if use_wide else None

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch)
        logit = self.attention_output(self.attention(x0).flatten(1))
        if self.dnn is not None:
            logit = logit + self.dnn(x0.flatten(1))
        logit = logit.squeeze(-1)
        if self.wide is not None:
            logit = logit + self.wide(batch).sum(dim=(1, 2))
        return logit
