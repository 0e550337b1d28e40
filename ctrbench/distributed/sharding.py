"""Sharding plan, DistributedModelParallel and the two optimizers.

The EmbeddingShardingPlanner picks a sharding type per table (data-parallel, table-wise, row-wise,
column-wise, table-row-wise, table-column-wise) from the tables' sizes, the batch size and the
topology; a table named in `sharding` is restricted to the type given there. torchrec's sharder
offers row-wise, table-row-wise and grid sharding only on CUDA, so on CPU the planner chooses among
data_parallel, table_wise, column_wise and table_column_wise.

Embeddings train with row-wise AdaGrad, dense parameters with Adam; both learning rates warm up
linearly. Sharded tables get the fused AdaGrad of their embedding kernel (the update runs inside the
backward, no gradient is materialised); data-parallel tables are replicas that DDP all-reduces, and
torchrec leaves their in-backward optimizer behind, so `make_optimizer` gives them a (non-fused)
row-wise AdaGrad with the same settings instead of letting Adam pick them up.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.fbgemm_qcomm_codec import CommType, QCommsConfig, get_qcomm_codecs_registry
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.types import PlannerError
from torchrec.distributed.types import ShardingEnv, ShardingPlan
from torchrec.optim import RowWiseAdagrad, apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from ctrbench.core.errors import CtrbenchError, closest
from ctrbench.distributed.config import DistributedConfig
from ctrbench.distributed.model import ShardedCTRModel

ADAGRAD_EPS = 1e-8  # row-wise AdaGrad's denominator epsilon (fbgemm's default), fused and non-fused alike


def make_sharder(comm_precision: str) -> EmbeddingBagCollectionSharder:
    """The EBC sharder; `comm_precision` other than fp32 quantizes the embedding all-to-alls."""
    registry = None
    if comm_precision != "fp32":
        precision = CommType(comm_precision)
        registry = get_qcomm_codecs_registry(QCommsConfig(forward_precision=precision, backward_precision=precision))
    return EmbeddingBagCollectionSharder(qcomm_codecs_registry=registry)


def available_sharding_types(sharder: EmbeddingBagCollectionSharder, device_type: str,
                             embedding_precision: str) -> list[str]:
    """The sharding types the planner may use: those torchrec offers on the device, without
    data_parallel for half-precision tables (their replicas would train with a half-precision AdaGrad
    state, whose epsilon rounds to zero and turns rows without gradient into NaN)."""
    offered = sharder.sharding_types(device_type)
    return offered if embedding_precision == "fp32" else [t for t in offered if t != "data_parallel"]


def sharding_constraints(sharded: ShardedCTRModel, sharding: dict[str, str], column_shard_dim: int | None,
                         available: list[str]) -> dict[str, ParameterConstraints]:
    """Planner constraints per table: the type `sharding` forces on it (key "*": on every table not named),
    else any available type, and the width of column-wise shards (torchrec's default is 128 columns, so
    narrower tables get one shard).

    fbgemm's fused kernels need a multiple of 4 columns per shard, so a narrower table (logistic
    regression's 1-column weights) can only be data-parallel, which uses the dense kernel.
    """
    dims: dict[str, set[int]] = {}
    for configs in sharded.table_configs.values():
        for config in configs:
            dims.setdefault(config.name, set()).add(config.embedding_dim)
    tables = sorted(dims)
    for table, sharding_type in sharding.items():
        if table not in dims and table != "*":
            raise CtrbenchError(f"sharding.{table}: no such table{closest(table, tables)}; tables: {', '.join(tables)}")
        if sharding_type not in available:
            raise CtrbenchError(f"sharding.{table}: {sharding_type} is not available here (CUDA-only in torchrec, or "
                                f"data_parallel with half-precision tables); choose one of {', '.join(available)}")
    constraints = {}
    for table in tables:
        forced = sharding.get(table, sharding.get("*"))
        allowed = [forced] if forced is not None else list(available)
        if any(dim % 4 for dim in dims[table]):
            if "data_parallel" not in allowed:
                raise CtrbenchError(f"table {table!r}: its width {sorted(dims[table])} is not a multiple of 4, so only "
                                    f"data_parallel can hold it (not {', '.join(allowed)}); with half-precision "
                                    "tables use a width that is a multiple of 4")
            allowed = ["data_parallel"]
        constraints[table] = ParameterConstraints(sharding_types=allowed, min_partition=column_shard_dim)
    return constraints


def make_planner(sharded: ShardedCTRModel, sharder: EmbeddingBagCollectionSharder, config: DistributedConfig,
                 device: torch.device, world_size: int, local_world_size: int | None = None,
                 gpu_memory_bytes: int | None = None) -> EmbeddingShardingPlanner:
    """The planner for `world_size` processes, `local_world_size` per host (default: torchrun's
    LOCAL_WORLD_SIZE or the GPUs of this host; all processes on CPU); on CUDA each GPU holds `gpu_memory_bytes` (default: `device`'s memory)."""
    if device.type == "cuda":
        local_world_size = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", torch.cuda.device_count()))
        gpu_memory_bytes = gpu_memory_bytes or torch.cuda.get_device_properties(device).total_memory
    topology = Topology(world_size=world_size, compute_device=device.type,
                        local_world_size=local_world_size or world_size, hbm_cap=gpu_memory_bytes)
    available = available_sharding_types(sharder, device.type, config.embedding_precision)
    constraints = sharding_constraints(sharded, config.sharding, config.column_shard_dim, available)
    return EmbeddingShardingPlanner(topology=topology, batch_size=config.batch_size // world_size,
                                    constraints=constraints, debug=False)


def plan_tables(planner: EmbeddingShardingPlanner, sharded: ShardedCTRModel, sharder: EmbeddingBagCollectionSharder,
                group: dist.ProcessGroup | None = None) -> ShardingPlan:
    """The planner's plan, made on rank 0 and broadcast to `group` (without a group: in this process)."""
    try:
        if group is None:
            return planner.plan(sharded, [sharder])
        return planner.collective_plan(sharded, [sharder], group)
    except PlannerError as exc:
        reason = str(exc).strip().splitlines()[0].strip()
        raise CtrbenchError(f"the sharding planner found no layout: {reason} Use more GPUs, half-precision "
                            "tables (embedding_precision) or fewer forced layouts (sharding)") from None


def shard(sharded: ShardedCTRModel, sharder: EmbeddingBagCollectionSharder, plan: ShardingPlan,
          device: torch.device, embedding_learning_rate: float, group: dist.ProcessGroup) -> DistributedModelParallel:
    """Shard the EBCs by `plan` with fused row-wise AdaGrad, replicate the rest with DDP."""
    for tables in sharded.tables.values():
        apply_optimizer_in_backward(RowWiseAdagrad, tables.parameters(),
                                    {"lr": embedding_learning_rate, "eps": ADAGRAD_EPS})
    return DistributedModelParallel(sharded, env=ShardingEnv.from_process_group(group), device=device,
                                    plan=plan, sharders=[sharder])


def table_layout(plan: ShardingPlan) -> dict[str, dict[str, dict]]:
    """EBC name -> table -> the sharding type the plan chose and its shards (offsets, sizes, rank);
    a data-parallel table has no shards, every rank holds all of it."""
    layout: dict[str, dict[str, dict]] = {}
    for module_path, module_plan in plan.plan.items():
        tables = layout.setdefault(module_path.removeprefix("tables."), {})
        for table, parameter in module_plan.items():
            shards = parameter.sharding_spec.shards if parameter.sharding_spec is not None else []
            tables[table] = {"type": parameter.sharding_type,
                             "shards": [{"offsets": s.shard_offsets, "sizes": s.shard_sizes, "rank": s.placement.rank()}
                                        for s in shards]}
    return layout


def make_optimizer(model: nn.Module, dense_learning_rate: float, embedding_learning_rate: float) -> CombinedOptimizer:
    """The sharded tables' fused optimizer (attached by `shard`), row-wise AdaGrad for data-parallel
    tables and Adam for everything else."""
    remaining = dict(in_backward_optimizer_filter(model.named_parameters()))
    replicated = {name: p for name, p in remaining.items() if name.startswith("tables.")}
    dense = {name: p for name, p in remaining.items() if name not in replicated}
    optimizers: list[KeyedOptimizer] = [
        model.fused_optimizer,
        KeyedOptimizerWrapper(dense, lambda params: torch.optim.Adam(params, lr=dense_learning_rate)),
    ]
    if replicated:
        optimizers.append(KeyedOptimizerWrapper(
            replicated, lambda params: RowWiseAdagrad(params, lr=embedding_learning_rate, eps=ADAGRAD_EPS)))
    return CombinedOptimizer(optimizers)


class LinearWarmup:
    """Learning rate of step t (0-based) = base * min(1, (t + 1) / warmup_steps), for every parameter group.

    The fused embedding optimizer reads the new rate at the next `zero_grad`, which the train pipeline
    calls before each step's forward, so `apply(t)` before step t sets both optimizers' rates for it.
    """

    def __init__(self, optimizer: KeyedOptimizer, warmup_steps: int):
        self.optimizer = optimizer
        self.warmup_steps = max(warmup_steps, 1)
        self.base = [group["lr"] for group in optimizer.param_groups]

    def apply(self, step: int) -> None:
        factor = min(1.0, (step + 1) / self.warmup_steps)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * factor

