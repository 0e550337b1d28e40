"""Dry run of the sharding planner: where each table would go on a cluster, and the memory per GPU.

    python -m ctrbench.distributed.plan --config distributed_configs/criteo_dlrm.yaml --gpus 8 --gpu-memory-gb 80

Runs on any machine, no GPU or process group needed: it builds the model on the meta device, asks
torchrec's EmbeddingShardingPlanner for the plan `torchrun` would get with that many GPUs, and prints
per table its layout and per GPU the embedding memory: weights, row-wise AdaGrad state (one fp32 per
row of each shard), for data-parallel tables the dense gradient, and the frozen pretrained tables
(KuaiVideo's, MicroVideo's item vectors), which every GPU holds whole: a buffer, with no gradient or
optimizer state. Dense layers, activations and communication buffers come on top.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from ctrbench.distributed.config import DistributedConfig, load_config
from ctrbench.distributed.model import build_sharded_model
from ctrbench.distributed.sharding import make_planner, make_sharder, plan_tables, table_layout
from ctrbench.distributed.train import DATA_TYPES, quiet_libraries

ADAGRAD_STATE_BYTES = 4  # per row of each shard


def embedding_memory(config: DistributedConfig, gpus: int, gpus_per_host: int,
                     gpu_memory_bytes: int) -> tuple[dict, list[int], int]:
    """The planner's layout on `gpus` GPUs, the embedding bytes each GPU holds (frozen tables included) and
    the bytes of the frozen tables alone (the same on every GPU)."""
    fmap = FeatureMap.load(config.data_dir)
    sharded = build_sharded_model(config.model, config.model_params, fmap, config.seed,
                                  DATA_TYPES[config.embedding_precision])
    sharder = make_sharder(config.comm_precision)
    planner = make_planner(sharded, sharder, config, torch.device("cuda"), gpus, gpus_per_host, gpu_memory_bytes)
    layout = table_layout(plan_tables(planner, sharded, sharder))
    value_bytes = 4 if config.embedding_precision == "fp32" else 2
    frozen = sum(buffer.numel() * buffer.element_size() for name, buffer in sharded.model.named_buffers()
                 if name.rsplit(".", 1)[-1].startswith("frozen_"))
    per_gpu = [frozen] * gpus
    for group, configs in sharded.table_configs.items():
        for table in configs:
            placed = layout[group][table.name]
            if placed["type"] == "data_parallel":  # a replica, its gradient and its AdaGrad state on every GPU
                replica = table.num_embeddings * (2 * table.embedding_dim * value_bytes + ADAGRAD_STATE_BYTES)
                per_gpu = [used + replica for used in per_gpu]
            for shard in placed["shards"]:
                rows, columns = shard["sizes"]
                per_gpu[shard["rank"]] += rows * (columns * value_bytes + ADAGRAD_STATE_BYTES)
    return layout, per_gpu, frozen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctrbench.distributed.plan",
                                     description="Show the sharding plan and embedding memory per GPU for a cluster.")
    parser.add_argument("--config", required=True, type=Path, help="run config (YAML) of ctrbench.distributed.train")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key, e.g. --set 'train.sharding={\"*\": row_wise}' "
                             "(the older KEY=VALUE form works too)")
    parser.add_argument("--gpus", type=int, required=True, help="GPUs in all (torchrun's world size)")
    parser.add_argument("--gpus-per-host", type=int, default=8, help="GPUs per host (default 8)")
    parser.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory per GPU in GB (default 80)")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        config = load_config(args.config, args.overrides)
        layout, per_gpu, frozen = embedding_memory(config, args.gpus, min(args.gpus_per_host, args.gpus),
                                           int(args.gpu_memory_gb * 1e9))
    except CtrbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    console = Console(soft_wrap=True)
    tables = Table(title=f"{config.model} on {args.gpus} GPUs ({config.embedding_precision} tables)")
    for column in ("table", "type", "shards (rows x columns @ GPU)"):
        tables.add_column(column)
    for group, placed in layout.items():
        for name, table in placed.items():
            shards = ", ".join(f"{s['sizes'][0]:,} x {s['sizes'][1]} @ {s['rank']}" for s in table["shards"]) or "every GPU"
            tables.add_row(f"{group}.{name}" if len(layout) > 1 else name, table["type"], shards)
    console.print(tables)
    console.print(f"embedding memory per GPU (GB): {', '.join(f'{used / 1e9:.2f}' for used in per_gpu)}; "
                  f"largest {max(per_gpu) / 1e9:.2f}, total {sum(per_gpu) / 1e9:.2f}"
                  + (f"; of which frozen pretrained tables {frozen / 1e9:.2f} on every GPU" if frozen else ""),
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
