"""Logistic regression: the first-order baseline every interaction model must beat."""

from __future__ import annotations

import torch

from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from model_zoo.base import CTRModel


class LogisticRegression(CTRModel):
    """y = b + sum_j w_j(x_j): a learned scalar per categorical value (1-dim embeddings), a weight
    times the value for numeric features, mean-pooled weights for sequences. No interactions.
    """

    name = "lr"
    display_name = "LR"

    def __init__(self, feature_map: FeatureMap):
        super().__init__(feature_map)
        self.weights = FeatureEmbedding(feature_map, embedding_dim=1)
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.weights(batch).sum(dim=(1, 2)) + self.bias
