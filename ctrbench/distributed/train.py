"""The distributed track's entry point: one pass over the train split, then an exact AUC on the eval split.

    torchrun --nproc_per_node=8 -m ctrbench.distributed.train --config distributed_configs/criteo_dlrm.yaml
    python -m ctrbench.distributed.train --config ... (one process, no torchrun needed)

Each process drives one GPU (NCCL) or, without CUDA, one CPU process (gloo). Steps run through
torchrec's TrainPipelineSparseDist, which overlaps the next batch's host-to-device copy and embedding
input all-to-all with the current batch's forward and backward. Evaluation gathers every rank's
predictions on rank 0 and computes AUC and LogLoss with `ctrbench.metrics` (exact, as on one node).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.types import DataType

from ctrbench.data import Batch, prefetch
from ctrbench.device import pick_device
from ctrbench.distributed.checkpoint import Checkpoints
from ctrbench.distributed.config import DistributedConfig, load_config
from ctrbench.distributed.data import RankShare, SparseBatch
from ctrbench.distributed.model import build_sharded_model, initialize_tables
from ctrbench.distributed.sharding import (LinearWarmup, make_optimizer, make_planner, make_sharder, plan_tables,
                                           shard, table_layout)
from ctrbench.errors import CtrbenchError
from ctrbench.features import FeatureMap, atomic_write_text
from ctrbench.metrics import evaluate
from ctrbench.console import console

DATA_TYPES = {"fp32": DataType.FP32, "fp16": DataType.FP16, "bf16": DataType.BF16}


def local_device(name: str) -> torch.device:
    """This process's device: GPU LOCAL_RANK when CUDA is used, else the CPU."""
    return pick_device(name, local_rank=int(os.environ.get("LOCAL_RANK", 0)), option="device:")


def _check(config: DistributedConfig, world_size: int, device: torch.device, stop_after: int | None) -> None:
    for key in ("batch_size", "eval_batch_size"):
        if getattr(config, key) % world_size:
            raise CtrbenchError(f"{key}={getattr(config, key)} is not divisible by the {world_size} processes")
    if config.embedding_precision == "bf16" and device.type != "cuda":
        raise CtrbenchError("embedding_precision: bf16 tables need CUDA (fbgemm's CPU embedding kernels "
                            "implement fp32 and fp16); use fp16 or fp32 on CPU")
    if stop_after is not None and config.checkpoint_dir is None:
        raise CtrbenchError("--stop-after needs checkpoint_dir in the config, to resume from")


def _sparse_batches(batches: Iterator[Batch], fmap: FeatureMap, device: torch.device, depth: int) -> Iterator[SparseBatch]:
    def convert(batch: Batch) -> SparseBatch:
        sparse = SparseBatch.from_batch(batch, fmap)
        return sparse.pin_memory() if device.type == "cuda" else sparse  # pinned: asynchronous copies to the GPU

    return prefetch(batches, convert, depth)


def _rows_per_rank(fmap: FeatureMap, splits: list[str], world_size: int) -> list[int]:
    return [RankShare(fmap, splits, rank, world_size).rows for rank in range(world_size)]


@torch.no_grad()
def _predict(pipeline: TrainPipelineSparseDist, batches: Iterator[SparseBatch]) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = [], []
    while True:
        try:
            _, batch_logits, batch_labels = pipeline.progress(batches)
        except StopIteration:
            break
        logits.append(batch_logits.float())
        labels.append(batch_labels)
    return torch.cat(logits), torch.cat(labels)


def _gather_on_rank0(values: torch.Tensor, rows: list[int], group: dist.ProcessGroup) -> torch.Tensor | None:
    """Every rank's `values` (padded to the same length) concatenated on rank 0, padding dropped."""
    rank = dist.get_rank(group)
    gathered = [torch.empty_like(values) for _ in rows] if rank == 0 else None
    dist.gather(values, gathered, group_dst=0, group=group)
    if rank != 0:
        return None
    return torch.cat([part[:count] for part, count in zip(gathered, rows)]).cpu()


def _peak_memory(device: torch.device, group: dist.ProcessGroup) -> dict[str, Any]:
    """Every rank's peak memory so far, gathered on all ranks: `torch.cuda.max_memory_allocated` on a GPU
    (tensors only; the CUDA context and the allocator's cache come on top), the process's peak RSS on the CPU."""
    if device.type == "cuda":
        kind, value = "cuda_max_memory_allocated", torch.cuda.max_memory_allocated(device)
    else:
        kind, value = "peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    mine = torch.tensor([value], dtype=torch.int64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    return {"kind": kind, "bytes_per_rank": [int(t.item()) for t in gathered]}


def run(config: DistributedConfig, group: dist.ProcessGroup | None = None,
        stop_after: int | None = None) -> dict[str, Any] | None:
    """Train and evaluate in an initialised process group; the result on rank 0, None elsewhere.

    `stop_after` ends this session after that many steps with a checkpoint (for job time limits);
    launching the same config again resumes there.
    """
    group = group or dist.group.WORLD
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    device = local_device(config.device)
    _check(config, world_size, device, stop_after)
    local_batch = config.batch_size // world_size
    fmap = FeatureMap.load(config.data_dir)

    sharded = build_sharded_model(config.model, config.model_params, fmap, config.seed,
                                  DATA_TYPES[config.embedding_precision])
    sharder = make_sharder(config.comm_precision)
    plan = plan_tables(make_planner(sharded, sharder, config, device, world_size), sharded, sharder, group)
    model = shard(sharded, sharder, plan, device, config.embedding_learning_rate, group)
    initialize_tables(model, sharded, config.seed)
    optimizer = make_optimizer(model, config.dense_learning_rate, config.embedding_learning_rate)
    torch.manual_seed(config.seed + rank)  # dropout masks differ across ranks

    steps = min(_rows_per_rank(fmap, config.train_splits, world_size)) // local_batch
    steps = min(steps, config.max_steps or steps)
    if steps == 0:
        raise CtrbenchError(f"splits {config.train_splits} hold fewer than batch_size={config.batch_size} rows; "
                            "lower batch_size")
    warmup = LinearWarmup(optimizer, round(config.warmup_fraction * steps))
    checkpoints, start = None, 0
    if config.checkpoint_dir is not None:
        description = {"model": config.model, "model_params": config.model_params, "data": fmap.content_hash,
                       "world_size": world_size, "batch_size": config.batch_size, "steps": steps,
                       "seed": config.seed}
        checkpoints = Checkpoints(config.checkpoint_dir, description, group)
        start = checkpoints.restore(model, optimizer)
        if start and rank == 0:
            console.print(f"resuming at step {start} from {config.checkpoint_dir}", highlight=False)
    end = steps if stop_after is None else min(steps, start + stop_after)
    layout = table_layout(plan)
    if rank == 0:
        types = ", ".join(f"{group + '.' if len(layout) > 1 else ''}{table}: {v['type']}"
                          for group, tables in layout.items() for table, v in tables.items())
        console.print(f"{config.model}: {world_size} x {device.type}, {steps} steps of {config.batch_size} rows; "
                      f"sharding {types}", highlight=False)

    # one pass over the train splits
    share = RankShare(fmap, config.train_splits, rank, world_size)
    batches = _sparse_batches(share.train_batches(local_batch, start, end - start), fmap, device,
                              config.prefetch_batches)
    pipeline = TrainPipelineSparseDist(model, optimizer, device)
    model.train()
    history, window, window_steps = [], torch.zeros((), device=device), 0
    started = time.perf_counter()
    for step in range(start, end):
        warmup.apply(step)
        loss, _, _ = pipeline.progress(batches)
        window += loss
        window_steps += 1
        if (step + 1) % config.log_every == 0 or step + 1 == end:
            dist.all_reduce(window, group=group)
            history.append({"step": step + 1, "loss": window.item() / (window_steps * world_size)})
            if rank == 0:
                speed = (step + 1 - start) * config.batch_size / (time.perf_counter() - started)
                console.print(f"step {step + 1}/{steps}  loss {history[-1]['loss']:.5f}  {speed:,.0f} samples/s",
                              highlight=False)
            window.zero_()
            window_steps = 0
        if checkpoints is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            checkpoints.save(step + 1, model, optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - started
    if checkpoints is not None and end > start and not (config.checkpoint_every and end % config.checkpoint_every == 0):
        checkpoints.save(end, model, optimizer)
    if end < steps:
        if rank == 0:
            console.print(f"stopped after step {end} of {steps}; checkpoint in {config.checkpoint_dir}",
                          highlight=False)
        return {"status": "stopped", "step": end} if rank == 0 else None

    # evaluation: every rank predicts its share (padded to the longest), rank 0 computes the metrics
    eval_rows = _rows_per_rank(fmap, config.eval_splits, world_size)
    eval_share = RankShare(fmap, config.eval_splits, rank, world_size)
    eval_batches = _sparse_batches(eval_share.eval_batches(config.eval_batch_size // world_size, max(eval_rows)),
                                   fmap, device, config.prefetch_batches)
    pipeline.detach()
    model.eval()
    logits, labels = _predict(TrainPipelineSparseDist(model, optimizer, device), eval_batches)
    logits = _gather_on_rank0(logits, eval_rows, group)
    labels = _gather_on_rank0(labels, eval_rows, group)
    memory = _peak_memory(device, group)
    if rank != 0:
        return None
    result = {
        "status": "ok", "model": config.model, "dataset": fmap.dataset, "data_hash": fmap.content_hash,
        "config": dataclasses.asdict(config), "world_size": world_size, "device": device.type,
        "sharding": layout, "steps": steps, "resumed_at": start, "train_rows": steps * config.batch_size,
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round((end - start) * config.batch_size / train_seconds, 1) if end > start else None,
        "eval": {"splits": config.eval_splits, "rows": len(labels), **evaluate(labels, logits)},
        "peak_memory": memory,
        "history": history,
    }
    console.print(f"{config.model}: AUC {result['eval']['auc']:.5f}  logloss {result['eval']['logloss']:.5f} "
                  f"on {'+'.join(config.eval_splits)} ({len(labels):,} rows)", highlight=False)
    if config.output_dir is not None:
        atomic_write_text(Path(config.output_dir) / "result.json", json.dumps(result, indent=2) + "\n")
    return result


def quiet_libraries() -> None:
    """Keep the console to our lines: torchrec logs planner internals and deprecations as warnings on every
    rank, and fbgemm warns that its CPU dense embedding kernel (data-parallel tables) has no autograd
    kernel registered; tests/test_distributed.py checks that data-parallel tables train exactly like
    table-wise ones."""
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torchrec\.")
    warnings.filterwarnings("ignore", message=r"fbgemm::dense_embedding_codegen_lookup_function: an autograd kernel")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctrbench.distributed.train",
                                     description="Train a zoo model with sharded embeddings (launch with torchrun).")
    parser.add_argument("--config", required=True, type=Path, help="run config (YAML), e.g. distributed_configs/criteo_dlrm.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config key, e.g. --set train.max_steps=100 --set model.embedding_dim=64 "
                             "(the older KEY=VALUE and model_params.KEY=VALUE forms work too)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                        help="checkpoint and exit after this many steps (job time limits); rerun to resume")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    quiet_libraries()
    try:
        config = load_config(args.config, args.overrides)
        device = local_device(config.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "RANK" in os.environ:  # launched by torchrun
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
        try:
            run(config, stop_after=args.stop_after)
        finally:
            dist.destroy_process_group()
    except CtrbenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
