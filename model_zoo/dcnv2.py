"""DCNv2 (Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale
Learning to Rank Systems", WWW 2021; FuxiCTR's DCNv2 as BARS runs it).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP, xavier_init
from model_zoo.base import CTRModel


class CrossLayer(nn.Module):
    """One cross layer (paper Eq. 1, "Cross Network"): x_{l+1} = x_0 * (W x_l + b) + x_l.

    `rank=None` keeps W full rank (D x D); `rank=r` factors it as W = U V^T with U, V of shape D x r,
    the low-rank layer x_0 * (U (V^T x_l) + b) + x_l of the paper's "Efficient Mixture of Low-Rank DCN".
    """

    def __init__(self, dim: int, rank: int | None = None):
        super().__init__()
        if rank is None:
            self.project = nn.Linear(dim, dim)
        else:
            self.project = nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
        xavier_init(self)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.project(x) + x


class MixtureCrossLayer(nn.Module):
    """Mixture of K low-rank experts (the paper's "Efficient Mixture of Low-Rank DCN", with its
    nonlinear variant in the projected space):

        E_k(x_l) = x_0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b)
        x_{l+1}  = sum_k softmax_k(G x_l) E_k(x_l) + x_l

    with U_k, V_k of shape D x r, C_k r x r, one bias b per layer shared by its experts, and a linear
    gate G (K x D, no bias). Like FuxiCTR's CrossNetMix except that each layer has its own gate, as in
    the paper (FuxiCTR shares one gate across layers; no BARS best config uses the mixture).
    """

    def __init__(self, dim: int, rank: int, num_experts: int):
        super().__init__()
        self.V = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.C = nn.Parameter(torch.empty(num_experts, rank, rank))
        self.U = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.gate = nn.Linear(dim, num_experts, bias=False)
        for weights in (self.V, self.C, self.U):
            for expert in weights.data:
                nn.init.xavier_normal_(expert)
        xavier_init(self.gate)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        low = torch.tanh(torch.einsum("bd,kdr->bkr", x, self.V))
        low = torch.tanh(torch.einsum("bkr,ksr->bks", low, self.C))
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,kdr->bkd", low, self.U) + self.bias)  # [B, K, D]
        weights = torch.softmax(self.gate(x), dim=-1)  # [B, K]
        return torch.einsum("bk,bkd->bd", weights, experts) + x


class DCNv2(CTRModel):
    """Cross network over the flattened field embeddings, combined with a DNN (paper Section 3,
    "Deep and Cross Combination").

    x_0 = flatten(X0) in R^D, D = fields x embedding_dim; x_L = cross_L(... cross_1(x_0)).
    `cross_network`: "full" (W_l full rank), "low_rank" (W_l = U_l V_l^T of rank `low_rank`) or
    "mixture" (`num_experts` low-rank experts with tanh and a softmax gate, FuxiCTR's
    `use_low_rank_mixture`).
    `model_structure` (FuxiCTR's names; the paper has "stacked" and "parallel"):
        crossnet_only     y = w^T x_L + b
        stacked           y = w^T DNN_s(x_L) + b
        parallel          y = w^T [x_L; DNN_p(x_0)] + b          (BARS's best configs)
        stacked_parallel  y = w^T [DNN_s(x_L); DNN_p(x_0)] + b
    Both DNNs are FuxiCTR MLP blocks (Linear, BatchNorm?, activation, Dropout?) without an output layer.
    """

    name = "dcnv2"
    display_name = "DCNv2"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 10,
        model_structure: Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"] = "parallel",
        num_cross_layers: int = 3,
        cross_network: Literal["full", "low_rank", "mixture"] = "full",
        low_rank: int = 32,
        num_experts: int = 4,
        stacked_dnn_hidden_units: tuple[int, ...] = (400, 400, 400),
        parallel_dnn_hidden_units: tuple[int, ...] = (400, 400, 400),
        dnn_activation: str = "relu",
        net_dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(feature_map)
        if model_structure not in ("crossnet_only", "stacked", "parallel", "stacked_parallel"):
            raise CtrbenchError(f"dcnv2: model_structure must be 'crossnet_only', 'stacked', 'parallel' or "
                                f"'stacked_parallel', got {model_structure!r}")
        if num_cross_layers < 1:
            raise CtrbenchError(f"dcnv2: num_cross_layers must be >= 1, got {num_cross_layers}")
        if cross_network != "full" and (low_rank < 1 or num_experts < 1):
            raise CtrbenchError(f"dcnv2: low_rank and num_experts must be >= 1, got {low_rank} and {num_experts}")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        dim = self.embedding.num_fields * embedding_dim
        if cross_network == "mixture":
            layers = [MixtureCrossLayer(dim, low_rank, num_experts) for _ in range(num_cross_layers)]
        elif cross_network in ("full", "low_rank"):
            rank = low_rank if cross_network == "low_rank" else None
            layers = [CrossLayer(dim, rank) for _ in range(num_cross_layers)]
        else:
            raise CtrbenchError(f"dcnv2: cross_network must be 'full', 'low_rank' or 'mixture', got {cross_network!r}")
        self.cross_layers = nn.ModuleList(layers)

        def dnn(units: tuple[int, ...]) -> MLP:
            return MLP(dim, units, activation_name=dnn_activation, dropout=net_dropout, batch_norm=batch_norm)

        stacked = model_structure in ("stacked", "stacked_parallel")
        parallel = model_structure in ("parallel", "stacked_parallel")
        self.stacked_dnn = dnn(stacked_dnn_hidden_units) if stacked else None
        self.parallel_dnn = dnn(parallel_dnn_hidden_units) if parallel else None
        head = self.stacked_dnn.output_dim if self.stacked_dnn is not None else dim
        if self.parallel_dnn is not None:
            head += self.parallel_dnn.output_dim
        self.output = nn.Linear(head, 1)
        xavier_init(self.output)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(1)
        x = x0
        for layer in self.cross_layers:
            x = layer(x0, x)
        if self.stacked_dnn is not None:
            x = self.stacked_dnn(x)
        if self.parallel_dnn is not None:
            x = torch.cat([x, self.parallel_dnn(x0)], dim=1)
        return self.output(x).squeeze(-1)
