"""Wukong (Zhang et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation", ICML 2024,
Section 3 "Design of Wukong"): a stack of factorization-machine layers over the embeddings.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.nn.layers import MLP, InnerProductInteraction
from model_zoo.base import CTRModel

FM_VARIANTS = ("full", "optimized", "attentive")


class LinearCompression(nn.Module):
    """W X for X [B, n, d] and W [m, n], no bias: m linear combinations of the n embeddings.

    The paper's Linear Compression Block (LCB(X) = W_L X), and also the residual projection when a
    layer changes the number of embeddings.
    """

    def __init__(self, num_inputs: int, num_outputs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_outputs, num_inputs))
        nn.init.xavier_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weight, x)


class FactorizationMachine(nn.Module):
    """Pairwise dot products of the n embeddings of X [B, n, d], flattened per example.

    full       X X^T                    n*n values (Section 3, "Factorization Machine Block")
    optimized  X (X^T Y), Y [n, k]      n*k values, O(nkd) instead of O(n^2 d) ("Optimized FM");
                                        Y is a learned matrix; k = n and Y = I give the full FM
    attentive  X (X^T Y(X))             Y(X) = softmax over n of reshape(MLP_A(flatten(W_A X)), [n, k])

    The paper says only that Y is made attentive by an MLP over the linearly compressed input. Our
    formula: W_A [k, n] (no bias) compresses the n embeddings to k, MLP_A (`attention_mlp_units`
    hidden ReLU layers, linear output) maps the flattened [k, d] to n*k scores, and a softmax over the
    n embeddings turns each of the k columns into attention weights, so X^T Y(X) holds k
    attention-pooled summaries of the input and the FM scores every embedding against each of them.
    """

    def __init__(self, num_inputs: int, embedding_dim: int, variant: str, rank: int,
                 attention_mlp_units: tuple[int, ...]):
        super().__init__()
        if variant not in FM_VARIANTS:
            raise unknown_name("FM variant", variant, FM_VARIANTS)
        self.variant = variant
        self.num_inputs = num_inputs
        self.rank = rank
        self.output_dim = num_inputs * (num_inputs if variant == "full" else rank)
        if variant == "full":
            self.gram = InnerProductInteraction(num_inputs, "matrix")
        elif variant == "optimized":
            self.projection = nn.Parameter(torch.empty(num_inputs, rank))
            nn.init.xavier_normal_(self.projection)
        elif variant == "attentive":
            self.attention_compression = LinearCompression(num_inputs, rank)
            self.attention_mlp = MLP(rank * embedding_dim, attention_mlp_units, output_dim=num_inputs * rank)

    def attentive_projection(self, x: torch.Tensor) -> torch.Tensor:
        """Y(X) [B, n, k] of the attentive variant."""
        scores = self.attention_mlp(self.attention_compression(x).flatten(1))
        return torch.softmax(scores.view(len(x), self.num_inputs, self.rank), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "full":
            return self.gram(x)
        y = self.projection if self.variant == "optimized" else self.attentive_projection(x)
        return torch.bmm(x, torch.matmul(x.transpose(1, 2), y)).flatten(1)


class FactorizationMachineBlock(nn.Module):
    """FMB(X) = reshape(MLP(LN(flatten(FM(X))))): nF new embeddings [B, nF, d].

    The MLP has ReLU hidden layers (with dropout) and a linear output layer of nF * d units: no
    activation on the output, as the paper specifies.
    """

    def __init__(self, num_inputs: int, embedding_dim: int, num_outputs: int, fm: str, fm_rank: int,
                 attention_mlp_units: tuple[int, ...], mlp_units: tuple[int, ...], layer_norm: bool,
                 dropout: float):
        super().__init__()
        self.num_outputs = num_outputs
        self.embedding_dim = embedding_dim
        self.fm = FactorizationMachine(num_inputs, embedding_dim, fm, fm_rank, attention_mlp_units)
        self.norm = nn.LayerNorm(self.fm.output_dim) if layer_norm else nn.Identity()
        self.mlp = MLP(self.fm.output_dim, mlp_units, output_dim=num_outputs * embedding_dim, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(self.fm(x))).view(len(x), self.num_outputs, self.embedding_dim)


class WukongLayer(nn.Module):
    """X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + residual(X_i)) (Section 3, "Interaction Stack").

    X_i [B, n, d] -> X_{i+1} [B, nF + nL, d]. LCB(X) = W_L X with W_L [nL, n], no bias. The residual
    is X_i itself when nF + nL = n, else W_R X_i with a learned W_R [nF + nL, n] (no bias). LN
    normalises each embedding over its d values. Ablations (paper Fig. 4): `use_fmb=False` /
    `use_lcb=False` put zeros in place of that block's embeddings (the block is not built),
    `use_residual=False` drops the residual term.
    """

    def __init__(self, num_inputs: int, embedding_dim: int, *, fmb_embeddings: int, lcb_embeddings: int,
                 fm: str, fm_rank: int, attention_mlp_units: tuple[int, ...], fmb_mlp_units: tuple[int, ...],
                 fmb_layer_norm: bool, layer_norm: bool, dropout: float, use_fmb: bool, use_lcb: bool,
                 use_residual: bool):
        super().__init__()
        self.fmb_embeddings = fmb_embeddings
        self.lcb_embeddings = lcb_embeddings
        self.num_outputs = fmb_embeddings + lcb_embeddings
        self.fmb = FactorizationMachineBlock(num_inputs, embedding_dim, fmb_embeddings, fm, fm_rank,
                                             attention_mlp_units, fmb_mlp_units, fmb_layer_norm,
                                             dropout) if use_fmb else None
        self.lcb = LinearCompression(num_inputs, lcb_embeddings) if use_lcb else None
        self.use_residual = use_residual
        self.residual_projection = (LinearCompression(num_inputs, self.num_outputs)
                                    if use_residual and num_inputs != self.num_outputs else None)
        self.norm = nn.LayerNorm(embedding_dim) if layer_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x.shape
        fmb = self.fmb(x) if self.fmb is not None else x.new_zeros(batch, self.fmb_embeddings, dim)
        lcb = self.lcb(x) if self.lcb is not None else x.new_zeros(batch, self.lcb_embeddings, dim)
        out = torch.cat([fmb, lcb], dim=1)
        if self.use_residual:
            out = out + (x if self.residual_projection is None else self.residual_projection(x))
        return self.norm(out)


class Wukong(CTRModel):
    """Embedding layer, a stack of `num_layers` Wukong layers, and an MLP head on the flattened output.

    Embedding layer (Section 3, "Embedding Layer"): X0 [n, d] is, in this order,
      * the dense (numeric) features through the bottom MLP (ReLU after every layer), reshaped into
        `dense_embeddings` d-dim embeddings (absent when the dataset has no numeric features);
      * one d-dim embedding per other feature (categorical, pretrained, pooled sequence);
      * optional, for features the paper calls important: `important_embeddings` (m) embeddings per
        feature in `important_features`, looked up in a table of width m * d and split into m;
      * optional, for less important features: the `small_features` get narrow tables of width
        `small_embedding_dim`; their embeddings are concatenated and an MLP (`small_group_mlp_units`
        hidden ReLU layers, linear output) maps them to `small_group_embeddings` d-dim embeddings.
    Defaults: one embedding per feature, no important or small features. A sequence that shares the
    table of an important or small feature is embedded with that feature's width only when listed too;
    otherwise it gets a d-wide copy of the table in the plain embedding layer.

    Interaction stack: X_{i+1} = WukongLayer_i(X_i), i = 0 .. l-1 (see WukongLayer, FactorizationMachine
    for the equations and the three FM variants). Every layer outputs nF + nL embeddings.
    Head: logit = MLP(flatten(X_l)), ReLU hidden layers with dropout, one linear output unit.
    """

    name = "wukong"
    display_name = "Wukong"

    def __init__(
        self,
        feature_map: FeatureMap,
        *,
        embedding_dim: int = 16,
        bottom_mlp_units: tuple[int, ...] = (64,),
        dense_embeddings: int = 1,
        important_features: tuple[str, ...] = (),
        important_embeddings: int = 2,
        small_features: tuple[str, ...] = (),
        small_embedding_dim: int = 4,
        small_group_embeddings: int = 1,
        small_group_mlp_units: tuple[int, ...] = (),
        num_layers: int = 2,
        fmb_embeddings: int = 8,
        lcb_embeddings: int = 8,
        fm: Literal["full", "optimized", "attentive"] = "optimized",
        fm_rank: int = 8,
        attention_mlp_units: tuple[int, ...] = (32,),
        fmb_mlp_units: tuple[int, ...] = (64, 64),
        fmb_layer_norm: bool = True,
        layer_norm: bool = True,
        head_mlp_units: tuple[int, ...] = (64,),
        dropout: float = 0.0,
        use_fmb: bool = True,
        use_lcb: bool = True,
        use_residual: bool = True,
    ):
        super().__init__(feature_map)
        for name in (*important_features, *small_features):
            if feature_map.feature(name).type == "numeric":
                raise CtrbenchError(f"wukong: {name!r} is numeric; numeric features go through the bottom MLP "
                                    "(dense_embeddings sets how many embeddings they make)")
        both = sorted(set(important_features) & set(small_features))
        if both:
            raise CtrbenchError(f"wukong: {both} are in both important_features and small_features")
        self.embedding_dim = embedding_dim
        special = {*important_features, *small_features}
        self.embedding = FeatureEmbedding(
            feature_map, embedding_dim, numeric_mode="mlp", numeric_mlp_units=bottom_mlp_units,
            numeric_fields=dense_embeddings, features=[f.name for f in feature_map.features if f.name not in special],
        )
        num_embeddings = self.embedding.num_fields
        if not num_embeddings:
            raise CtrbenchError("wukong: every feature is important or small; leave at least one plain feature")
        self.important = None
        if important_features:
            self.important = FeatureEmbedding(feature_map, important_embeddings * embedding_dim,
                                              features=important_features)
            num_embeddings += len(important_features) * important_embeddings
        self.small = self.small_group_mlp = None
        if small_features:
            self.small = FeatureEmbedding(feature_map, small_embedding_dim, features=small_features)
            self.small_group_mlp = MLP(len(small_features) * small_embedding_dim, small_group_mlp_units,
                                       output_dim=small_group_embeddings * embedding_dim)
            num_embeddings += small_group_embeddings

        layers = []
        for _ in range(num_layers):
            layers.append(WukongLayer(
                num_embeddings, embedding_dim, fmb_embeddings=fmb_embeddings, lcb_embeddings=lcb_embeddings,
                fm=fm, fm_rank=fm_rank, attention_mlp_units=attention_mlp_units, fmb_mlp_units=fmb_mlp_units,
                fmb_layer_norm=fmb_layer_norm, layer_norm=layer_norm, dropout=dropout,
                use_fmb=use_fmb, use_lcb=use_lcb, use_residual=use_residual,
            ))
            num_embeddings = layers[-1].num_outputs
        self.layers = nn.Sequential(*layers)
        self.head = MLP(num_embeddings * embedding_dim, head_mlp_units, output_dim=1, dropout=dropout)

    def embed(self, batch: Batch) -> torch.Tensor:
        """X0 [B, n, d]."""
        parts = [self.embedding(batch)]
        if self.important is not None:
            parts.append(self.important(batch).view(len(batch), -1, self.embedding_dim))
        if self.small is not None:
            grouped = self.small_group_mlp(self.small(batch).flatten(1))
            parts.append(grouped.view(len(batch), -1, self.embedding_dim))
        return torch.cat(parts, dim=1)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.head(self.layers(self.embed(batch)).flatten(1)).squeeze(-1)
