"""FinalMLP (Mao et al., 2023, "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction",
AAAI, Section 3; FuxiCTR's FinalMLP as BARS runs it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP
from model_zoo.base import CTRModel


class FeatureSelectionGate(nn.Module):
    """Stream-specific feature selection (Section 3, "Feature Selection"):

        g = 2 * sigmoid(MLP(x_context)),   gated input = g * e    (e: the flat field embeddings)

    The context x_context is the flat embedding of the chosen context features, from a table of
    their own (FuxiCTR's `fsN_context`); with no context features it is one learned vector shared by
    all rows, zeros at the start as in FuxiCTR. The MLP has ReLU hidden layers and a linear output
    of e's width. (With hidden layers and no context, the zero input meets ReLU's zero gradient at 0,
    so only the MLP's output bias ever trains: the gate is a learned per-dimension constant, in
    FuxiCTR as here.)
    """

    def __init__(self, feature_map: FeatureMap, context: tuple[str, ...], embedding_dim: int,
                 hidden_units: tuple[int, ...], gated_width: int):
        super().__init__()
        self.context = FeatureEmbedding(feature_map, embedding_dim, features=context) if context else None
        self.bias = None if context else nn.Parameter(torch.zeros(1, embedding_dim))
        width = self.context.num_fields * embedding_dim if context else embedding_dim
        self.mlp = MLP(width, hidden_units, output_dim=gated_width)

    def forward(self, batch: Batch, flat_embedding: torch.Tensor) -> torch.Tensor:
        # Without context features every row has the same gate: computed once, broadcast over rows.
        context = self.bias if self.context is None else self.context(batch).flatten(1)
        return 2 * torch.sigmoid(self.mlp(context)) * flat_embedding


class MultiHeadBilinearFusion(nn.Module):
    """Stream-level fusion (Section 3, "Multi-Head Bilinear Fusion"):

        y = b + w1^T o1 + w2^T o2 + sum_{j < k} o1_j^T W3_j o2_j

    o1, o2 are the streams' outputs, each cut into k heads (o1_j, o2_j); W3_j is [|o1|/k, |o2|/k].
    W3 is drawn as FuxiCTR draws it: Xavier-normal for a (k |o1|/k |o2|/k) x 1 matrix.
    """

    def __init__(self, width1: int, width2: int, num_heads: int):
        super().__init__()
        if num_heads < 1 or width1 % num_heads or width2 % num_heads:
            raise CtrbenchError(f"model.num_heads: {num_heads} must divide both stream output widths "
                                f"({width1} and {width2}), e.g. 1")
        self.num_heads = num_heads
        self.linear1 = nn.Linear(width1, 1)
        self.linear2 = nn.Linear(width2, 1, bias=False)
        self.bilinear = nn.Parameter(torch.empty(num_heads, width1 // num_heads, width2 // num_heads))
        nn.init.xavier_normal_(self.linear1.weight)
        nn.init.zeros_(self.linear1.bias)
        nn.init.xavier_normal_(self.linear2.weight)
        nn.init.normal_(self.bilinear, std=math.sqrt(2.0 / (1 + self.bilinear.numel())))

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        heads1 = o1.view(len(o1), self.num_heads, -1)
        heads2 = o2.view(len(o2), self.num_heads, -1)
        bilinear = (torch.einsum("bhx,hxy->bhy", heads1, self.bilinear) * heads2).sum(dim=(1, 2))
        return (self.linear1(o1) + self.linear2(o2)).squeeze(-1) + bilinear


class FinalMLP(CTRModel):
    """Two gated MLP streams over the field embeddings, fused by multi-head bilinear fusion.

    Both streams read the same flat field embedding e, each behind its own feature-selection gate:

        o1 = MLP1(gate1(e)),  o2 = MLP2(gate2(e)),  y = fusion(o1, o2)

    `fs1_context` / `fs2_context` name the features whose embeddings drive each gate (e.g. user
    features for one stream, item features for the other); `use_feature_selection=False` feeds e
    to both streams directly (the paper's DualMLP).
    """

    name = "finalmlp"
    display_name = "FinalMLP"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 10,
        mlp1_hidden_units: tuple[int, ...] = (64, 64, 64),
        mlp1_dropout: float = 0.0,
        mlp1_batch_norm: bool = False,
        mlp2_hidden_units: tuple[int, ...] = (64, 64, 64),
        mlp2_dropout: float = 0.0,
        mlp2_batch_norm: bool = False,
        activation_name: str = "relu",
        use_feature_selection: bool = True,
        fs_hidden_units: tuple[int, ...] = (64,),
        fs1_context: tuple[str, ...] = (),
        fs2_context: tuple[str, ...] = (),
        num_heads: int = 1,
    ):
        super().__init__(feature_map)
        names = [spec.name for spec in feature_map.features]
        for key, context in (("fs1_context", fs1_context), ("fs2_context", fs2_context)):
            for feature in context:
                if feature not in names:
                    raise CtrbenchError(f"model.{key}: {unknown_name('feature', feature, names)}")
        for key, units in (("mlp1_hidden_units", mlp1_hidden_units), ("mlp2_hidden_units", mlp2_hidden_units)):
            if not units:
                raise CtrbenchError(f"model.{key}: each stream needs at least one hidden layer, e.g. [64]")
        self.embedding = FeatureEmbedding(feature_map, embedding_dim)
        width = self.embedding.num_fields * embedding_dim
        self.gates = nn.ModuleList(
            FeatureSelectionGate(feature_map, context, embedding_dim, fs_hidden_units, width)
            for context in (fs1_context, fs2_context)
        ) if use_feature_selection else None
        self.mlp1 = MLP(width, mlp1_hidden_units, activation_name=activation_name, dropout=mlp1_dropout,
                        batch_norm=mlp1_batch_norm)
        self.mlp2 = MLP(width, mlp2_hidden_units, activation_name=activation_name, dropout=mlp2_dropout,
                        batch_norm=mlp2_batch_norm)
        self.fusion = MultiHeadBilinearFusion(mlp1_hidden_units[-1], mlp2_hidden_units[-1], num_heads)

    def forward(self, batch: Batch) -> torch.Tensor:
        flat = self.embedding(batch).flatten(1)
        if self.gates is None:
            input1 = input2 = flat
        else:
            input1, input2 = (gate(batch, flat) for gate in self.gates)
        return self.fusion(self.mlp1(input1), self.mlp2(input2))
