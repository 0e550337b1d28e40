"""The interface every model in the zoo implements."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap


class CTRModel(nn.Module):
    """A click-through-rate model: `forward(batch)` returns one logit per row, shape [B].

    Subclasses take the feature map first and then their hyperparameters as keyword arguments with
    type annotations and defaults; the defaults are the model's default config, and per-dataset
    YAML configs (`model_zoo/configs/<name>.yaml`) override them. They build their inputs with the
    shared `ctrbench.nn.embedding.FeatureEmbedding`, so the embedding regulariser and the embedding
    learning rate apply to every model alike.
    """

    name: ClassVar[str]  # registry key, e.g. "dcnv2"
    display_name: ClassVar[str]  # as in the paper's tables, e.g. "DCNv2"

    def __init__(self, feature_map: FeatureMap):
        super().__init__()
        self.feature_map = feature_map

    def forward(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError
