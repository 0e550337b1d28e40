"""The distributed track's run config: one plain YAML file, validated on load.

    model: dlrm                          # a zoo model (`ctrbench models`)
    model_params: {embedding_dim: 128}   # its constructor arguments, checked against its signature
    data_dir: data/criteo                # a processed dataset (`ctrbench preprocess criteo ...`)
    batch_size: 131072                   # global: every step trains on batch_size / world_size rows per rank

Every other key has its default below (the paper's Criteo TB setup, Appendix A). The command line's
`--set` overrides keys in the form every ctrbench command takes (`ctrbench.core.config.parse_overrides`):
`--set model.embedding_dim=64` sets a model constructor argument (a key of model_params) and
`--set train.max_steps=100` any other key of this config. The track's older forms, `--set max_steps=100`
and `--set model_params.embedding_dim=64`, are accepted as aliases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctrbench.core.config import build_dataclass, check_kwargs, load_yaml, parse_overrides, signature_hints
from ctrbench.core.errors import CtrbenchError
from ctrbench.store.record import BASE_SEED
from ctrbench.training.device import TablePrecision
from model_zoo import get_model_class

ShardingType = Literal["data_parallel", "table_wise", "row_wise", "column_wise", "table_row_wise",
                       "table_column_wise"]


@dataclass
class DistributedConfig:
    """One pass over the train split, then evaluation on the eval split."""

    model: str
    data_dir: str
    model_params: dict[str, Any] = field(default_factory=dict)
    train_splits: list[str] = field(default_factory=lambda: ["train"])  # Criteo TB: days 0-22, in order
    eval_splits: list[str] = field(default_factory=lambda: ["test"])  # Criteo TB: day 23 = valid + test
    batch_size: int = 131_072  # global, over all ranks
    eval_batch_size: int = 131_072  # global
    max_steps: int | None = None  # cap on the pass (smoke runs); the warm-up scales with it
    embedding_learning_rate: float = 0.1  # fused row-wise AdaGrad
    dense_learning_rate: float = 0.001  # Adam
    warmup_fraction: float = 0.1  # linear warm-up of both learning rates over this share of the steps
    sharding: dict[str, ShardingType] = field(default_factory=dict)  # table ("*": all others) -> type; else planner
    column_shard_dim: int | None = None  # width of column-wise shards; None: torchrec's default (128)
    embedding_precision: TablePrecision = "fp32"  # storage of the embedding tables
    comm_precision: TablePrecision = "fp32"  # embedding all-to-alls, forward and backward
    checkpoint_dir: str | None = None  # resume from here when it holds a checkpoint
    checkpoint_every: int = 0  # steps between checkpoints; 0: only at the end of the pass / session
    log_every: int = 100  # steps between loss lines (and entries of the result's loss history)
    output_dir: str | None = None  # result.json goes here
    seed: int = BASE_SEED
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: one GPU per process when CUDA is available
    prefetch_batches: int = 4  # batches decoded ahead on a background thread

    def __post_init__(self) -> None:
        for key in ("train_splits", "eval_splits"):
            if not getattr(self, key):
                raise CtrbenchError(f"{key} must name at least one split")
        for key in ("batch_size", "eval_batch_size", "log_every", "prefetch_batches"):
            if getattr(self, key) < 1:
                raise CtrbenchError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("embedding_learning_rate", "dense_learning_rate"):
            if getattr(self, key) <= 0:
                raise CtrbenchError(f"{key} must be > 0, got {getattr(self, key)}")
        if not 0 <= self.warmup_fraction <= 1:
            raise CtrbenchError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        if self.max_steps is not None and self.max_steps < 1:
            raise CtrbenchError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if self.column_shard_dim is not None and (self.column_shard_dim < 4 or self.column_shard_dim % 4):
            raise CtrbenchError(f"column_shard_dim must be a multiple of 4 (>= 4) or null, got {self.column_shard_dim}")
        if self.checkpoint_every < 0:
            raise CtrbenchError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")


def single_node_form(item: str) -> str:
    """An assignment in the form of every command: the older `KEY=VALUE` becomes `train.KEY=VALUE` and
    `model_params.KEY=VALUE` becomes `model.KEY=VALUE`; anything else is returned as it is."""
    key, sep, text = item.partition("=")
    section, dot, name = key.partition(".")
    if sep and key and not dot:
        return f"train.{item}"
    if sep and dot and section == "model_params":
        return f"model.{name}={text}"
    return item


def apply_overrides(values: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """`["train.max_steps=100", "model.embedding_dim=32"]` (or the older `max_steps=100`,
    `model_params.embedding_dim=32`) applied to a config mapping (a copy)."""
    overrides = parse_overrides([single_node_form(item) for item in assignments])
    if "model_params" in overrides["train"]:
        raise CtrbenchError("--set train.model_params=...: set the model's arguments one by one, "
                            "e.g. --set model.embedding_dim=64")
    return {**values, **overrides["train"],
            "model_params": {**(values.get("model_params") or {}), **overrides["model"]}}


def load_config(path: str | Path, overrides: list[str] | None = None) -> DistributedConfig:
    """Read, override and validate a config; the model's parameters are checked against its constructor."""
    values = load_yaml(path)
    if not isinstance(values, dict):
        raise CtrbenchError(f"{path}: expected a mapping of config keys (model, data_dir, batch_size, ...)")
    config = build_dataclass(DistributedConfig, apply_overrides(values, overrides or []), str(path))
    config.model_params = check_kwargs(config.model_params, signature_hints(get_model_class(config.model)),
                                       f"{path}: model_params")
    return config
