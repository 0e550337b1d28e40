"""Model size and compute: the quantities of the paper's Table 3.

* embedding parameters: rows x dim of the lookup tables (`ctrbench.nn.embedding.table_parameters`);
* dense parameters: every other trainable parameter (MLPs, interaction weights, projections);
* MFLOP per example: forward-pass FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`
  (matrix products, 2 FLOPs per multiply-add; embedding lookups and element-wise ops count 0)
  on an evaluation-mode batch, divided by the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ctrbench.data.batches import Batch
from ctrbench.nn.embedding import table_parameters


@dataclass
class ModelStats:
    dense_params: int
    embedding_params: int
    mflop_per_example: float

    @property
    def params(self) -> int:
        return self.dense_params + self.embedding_params


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(dense, embedding) trainable parameter counts."""
    tables = {id(p) for p in table_parameters(model)}
    embedding = sum(p.numel() for p in model.parameters() if id(p) in tables)
    dense = sum(p.numel() for p in model.parameters() if id(p) not in tables and p.requires_grad)
    return dense, embedding


def forward_flops(model: nn.Module, batch: Batch) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def model_stats(model: nn.Module, batch: Batch) -> ModelStats:
    dense, embedding = count_parameters(model)
    return ModelStats(dense, embedding, forward_flops(model, batch) / len(batch) / 1e6)
