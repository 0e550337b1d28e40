"""The distributed track's entry point: one pass over the train split, then an exact AUC on the eval split.

    torchrun --nproc_per_node=8 -m ctrbench.distributed.train --config distributed_configs/criteo_dlrm.yaml
    python -m ctrbench.distributed.train --config ... (one process, no torchrun needed)

Each process drives one GPU (NCCL) or, without CUDA, one CPU process (gloo). Steps run through
torchrec's TrainPipelineSparseDist, which overlaps the next batch's host-to-device copy and embedding
input all-to-all with the current batch's forward and backward. Evaluation gathers every rank's
predictions on rank 0 and computes AUC and LogLoss with `ctrbench.training.metrics` (exact, as on one node).

A finished run is a `ctrbench.store.record.RunRecord` like any single-node run, appended by rank 0 to the
results store (`--results`, default `results/results.jsonl`, the store `ctrbench train` and `bench`
use), so `ctrbench leaderboard` shows it beside the single-node runs of its dataset; with `output_dir`
in the config the same record is also written to `output_dir/result.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchrec import KeyedTensor
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
from torchrec.types import DataType

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import atomic_write_text
from ctrbench.data.batches import Batch
from ctrbench.data.features import FeatureMap
from ctrbench.data.sources import prefetch
from ctrbench.distributed.checkpoint import Checkpoints
from ctrbench.distributed.config import DistributedConfig, load_config
from ctrbench.distributed.data import RankShare, SparseBatch, frozen_columns, load_index_maps
from ctrbench.distributed.model import PooledInputs, ShardedCTRModel, build_sharded_model, initialize_tables
from ctrbench.distributed.sharding import (LinearWarmup, make_optimizer, make_planner, make_sharder, plan_tables,
                                           shard, table_layout)
from ctrbench.nn.flops import ModelStats, forward_flops
from ctrbench.store.environment import environment
from ctrbench.store.record import (DistributedRun, Metrics, PeakMemory, RunConfig, RunRecord, StepLoss, bayes_limits,
                                   hash_config)
from ctrbench.store.results import DEFAULT_RESULTS, ResultsStore
from ctrbench.training.device import pick_device
from ctrbench.training.metrics import evaluate
from model_zoo import get_model_class

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
    index_maps = load_index_maps(fmap)

    def convert(batch: Batch) -> SparseBatch:
        sparse = SparseBatch.from_batch(batch, fmap, index_maps)
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


def _model_stats(sharded: ShardedCTRModel, fmap: FeatureMap) -> ModelStats:
    """Size and compute as `ctrbench.nn.flops` counts them on one node: the zoo model's trainable dense
    parameters, rows x dim of its tables, and its forward FLOPs per example (matrix products; lookups
    count 0, so the pooled embeddings of a batch can be zeros of the right shape)."""
    dense = sum(p.numel() for p in sharded.model.parameters() if p.requires_grad)
    configs = [config for group in sharded.table_configs.values() for config in group]
    rows = 256
    pooled = {}
    for group, tables in sharded.table_configs.items():
        keys = [name for table in tables for name in table.feature_names]
        widths = [table.embedding_dim for table in tables for _ in table.feature_names]
        pooled[group] = KeyedTensor(keys=keys, length_per_key=widths, values=torch.zeros(rows, sum(widths)))
    numeric = torch.zeros(rows, len(fmap.of_type("numeric")))
    pretrained = torch.zeros(rows, len(fmap.of_type("pretrained_embedding")), dtype=torch.int32)
    sequences = {name: torch.zeros(rows, fmap.feature(name).max_len, dtype=torch.int32) for name in frozen_columns(fmap)}
    flops = forward_flops(sharded.model, PooledInputs(numeric, pooled, pretrained, sequences))
    return ModelStats(dense, sum(c.num_embeddings * c.embedding_dim for c in configs), flops / rows / 1e6)


# Config keys that say where things are or how the run is watched, not what it computes: kept out of the
# record's config (and so of its config hash), as `--data-dir` is for single-node runs.
PLACE_KEYS = ("model", "model_params", "seed", "data_dir", "checkpoint_dir", "checkpoint_every", "log_every",
              "output_dir", "device", "prefetch_batches")


def command_line(argv: list[str]) -> str:
    """This run's command as a user would type it: under torchrun (its environment says how many processes
    per host and hosts), `torchrun [--nnodes=N] --nproc_per_node=P -m ctrbench.distributed.train ARGS`."""
    args = ["-m", "ctrbench.distributed.train", *argv]
    if "LOCAL_WORLD_SIZE" not in os.environ:
        return shlex.join(["python", *args])
    local = int(os.environ["LOCAL_WORLD_SIZE"])
    nodes = int(os.environ.get("WORLD_SIZE", local)) // local
    return shlex.join(["torchrun", *([f"--nnodes={nodes}"] if nodes > 1 else []), f"--nproc_per_node={local}", *args])


def run(config: DistributedConfig, group: dist.ProcessGroup | None = None, stop_after: int | None = None,
        results: str | Path | None = None, command: str | None = None) -> RunRecord | None:
    """Train and evaluate in an initialised process group; on rank 0 return the run's record (appended to
    the results store `results` when given, and written to `output_dir/result.json` when the config has
    one), None on the other ranks and when the session stopped early.

    `stop_after` ends this session after that many steps with a checkpoint (for job time limits);
    launching the same config again resumes there. `command` is the command line recorded with the run.
    """
    started_at = time.time()
    group = group or dist.group.WORLD
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    store = ResultsStore(results) if results is not None and rank == 0 else None  # a bad path stops before training
    device = local_device(config.device)
    _check(config, world_size, device, stop_after)
    local_batch = config.batch_size // world_size
    fmap = FeatureMap.load(config.data_dir)

    sharded = build_sharded_model(config.model, config.model_params, fmap, config.seed,
                                  DATA_TYPES[config.embedding_precision])
    stats = _model_stats(sharded, fmap) if rank == 0 else None
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
        return None

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
    train = {key: value for key, value in dataclasses.asdict(config).items() if key not in PLACE_KEYS}
    train["world_size"] = world_size  # the layout and the summation order of gradients depend on it
    metrics = Metrics(**evaluate(labels, logits))
    record = RunRecord(
        model=config.model, display_name=get_model_class(config.model).display_name, dataset=fmap.dataset,
        config_hash=hash_config(config.model, fmap.dataset, {"model": config.model_params, "train": train},
                                fmap.content_hash),
        seed=config.seed, config=RunConfig(config.model_params, train), data_hash=fmap.content_hash, status="ok",
        valid=None, test=metrics,
        best_epoch=1, epochs=1, steps=steps,  # one pass over the train split (its first max_steps steps, if set)
        train_seconds=round(train_seconds, 3),  # this session's, as samples/s
        wall_seconds=round(time.time() - started_at, 3),
        samples_per_second=round((end - start) * config.batch_size / train_seconds, 1) if end > start else None,
        dense_params=stats.dense_params, embedding_params=stats.embedding_params,
        mflop_per_example=round(stats.mflop_per_example, 6),
        command=command, finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        environment=environment(device), bayes=bayes_limits(fmap.source),
        distributed=DistributedRun(
            world_size=world_size, sharding=layout, eval_splits=list(config.eval_splits), eval_rows=len(labels),
            train_rows=steps * config.batch_size, resumed_at=start,
            peak_memory=PeakMemory(**memory), loss_history=[StepLoss(**entry) for entry in history]),
    )
    console.print(f"{config.model}: AUC {metrics.auc:.5f}  logloss {metrics.logloss:.5f} "
                  f"on {'+'.join(config.eval_splits)} ({len(labels):,} rows)", highlight=False)
    if config.output_dir is not None:
        atomic_write_text(Path(config.output_dir) / "result.json",
                          json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
    if store is not None:
        store.append(record)
        console.print(f"recorded in {store.path}", highlight=False)
    return record


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
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, metavar="FILE",
                        help="the results store the finished run is appended to, as by `ctrbench train` "
                             f"(default: {DEFAULT_RESULTS}); `ctrbench leaderboard --results FILE` shows it")
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
            run(config, stop_after=args.stop_after, results=args.results,
                command=command_line(sys.argv[1:] if argv is None else argv))
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
