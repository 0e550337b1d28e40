"""Runs: resolve a model's config for a dataset, train it, and record the result.

A run is (model, dataset, config, seed). Its config is the model's constructor defaults overridden by
`model_zoo/configs/<model>.yaml` -> `<dataset>:` -> {model: ..., train: ...}, then by command-line
`--set section.key=value` overrides. `run_plan` trains a list of runs on one dataset, appending each
finished run to the results store and skipping runs already stored; `bench` plans models x seeds,
`ctrbench.app.tuner.tune` plans grid points x seeds. The options they share (data, results store, overrides,
device, ...) are one `ctrbench.app.options.RunOptions`.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout

from ctrbench.app.options import RunOptions
from ctrbench.core.config import build_dataclass, check_kwargs, load_yaml, signature_hints
from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.datasets import MODEL_CONFIG_DIR, dataset_names, load_dataset_config, load_feature_map
from ctrbench.data.features import FeatureMap
from ctrbench.data.sources import open_splits
from ctrbench.nn.flops import model_stats
from ctrbench.store.environment import code_version, environment
from ctrbench.store.record import BASE_SEED, Divergence, Epoch, Metrics, RunConfig, RunRecord, bayes_limits, hash_config
from ctrbench.store.results import ResultsStore
from ctrbench.training.device import pick_device
from ctrbench.training.loop import TrainConfig, fit, seed_everything
from model_zoo import get_model_class


@dataclass
class RunSpec:
    model: str
    dataset: str
    model_params: dict[str, Any]
    train: TrainConfig
    seed: int

    def config(self) -> dict[str, Any]:
        train = asdict(self.train)
        if train["precision"] == "fp32":  # so float32 runs keep the config hash they had before bf16 existed
            del train["precision"]
        return {"model": self.model_params, "train": train}

    def config_hash(self, data_hash: str) -> str:
        """Identifies the config and the exact data it ran on (not the seed)."""
        return hash_config(self.model, self.dataset, self.config(), data_hash)


def model_config_entry(model: str, dataset: str, config_dir: Path | None = None) -> tuple[dict[str, Any], str]:
    """The `<dataset>:` entry of `model_zoo/configs/<model>.yaml` ({} when there is none) and where it is."""
    get_model_class(model)  # an unknown model name stops here
    path = Path(config_dir or MODEL_CONFIG_DIR) / f"{model}.yaml"
    entries = (load_yaml(path) or {}) if path.is_file() else {}
    if not isinstance(entries, dict):
        raise CtrbenchError(f"{path}: expected a mapping of dataset name -> {{model: ..., train: ..., search: ...}}")
    check_kwargs({k: None for k in entries}, {name: Any for name in dataset_names()}, f"{path}")
    where = f"{path}: {dataset}"
    # `search:` is the model's search space on the dataset (ctrbench.app.protocol), `ladder:` its compute ladder
    # (ctrbench.app.scaling)
    entry = check_kwargs(entries.get(dataset), {"model": dict[str, Any], "train": dict[str, Any], "search": Any,
                                                "ladder": Any}, where)
    return entry, where


def resolve_spec(model: str, dataset: str, seed: int, config_dir: Path | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> RunSpec:
    cls = get_model_class(model)
    entry, where = model_config_entry(model, dataset, config_dir)
    overrides = overrides or {}
    model_values = {**(entry.get("model") or {}), **overrides.get("model", {})}
    train_values = {**(entry.get("train") or {}), **overrides.get("train", {})}
    model_params = check_kwargs(model_values, signature_hints(cls), f"{where}.model")
    train = build_dataclass(TrainConfig, train_values, f"{where}.train")
    return RunSpec(model, dataset, model_params, train, seed)


def build_model(spec: RunSpec, fmap: FeatureMap) -> torch.nn.Module:
    """The run's model; a constructor that rejects its values stops with one line naming them."""
    cls = get_model_class(spec.model)
    try:
        return cls(fmap, **spec.model_params)
    except (ValueError, TypeError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        values = ", ".join(f"{key}={value!r}" for key, value in spec.model_params.items())
        raise CtrbenchError(f"{spec.model} on {spec.dataset}: the model rejects its config ({values}): {reason}; "
                            f"fix the model: values in its config or --set") from exc


class DatasetSplits:
    """A dataset's feature map and its splits, opened once and shared by every run.

    Each split is held in memory or streamed from its parquet files (`ctrbench.data.sources.open_splits`):
    `stream` True or False forces one way, None chooses per split from its size against the memory
    budget (`budget` bytes, default a fraction of the available memory). The choice is printed in one
    line. Splits listing the same files (`valid: test`) are one source, read once.
    """

    def __init__(self, fmap: FeatureMap, stream: bool | None = None, budget: int | None = None):
        self.fmap = fmap
        sources, decision = open_splits(fmap, stream, budget, pin_memory=torch.cuda.is_available())
        console.print(decision, highlight=False, markup=False)
        self.train = sources["train"]
        self.valid = sources["valid"]
        self.test = sources.get("test")

    @classmethod
    def open(cls, dataset: str, data_dir: str | Path | None = None, stream: bool | None = None) -> DatasetSplits:
        load_dataset_config(dataset)
        return cls(load_feature_map(dataset, data_dir), stream)


def group_column(dataset: str, fmap: FeatureMap) -> int | None:
    """The column of the categorical matrix that groups rows for gAUC (`group:` in the dataset config)."""
    group = load_dataset_config(dataset).group
    if group is None:
        return None
    names = [spec.name for spec in fmap.of_type("categorical")]
    if group not in names:
        raise CtrbenchError(f"dataset_configs/{dataset}.yaml: group {group!r} is not a categorical feature of the "
                            f"processed data (categorical features: {', '.join(names)}); fix `group:`")
    return names.index(group)


def execute(spec: RunSpec, data: DatasetSplits, device: torch.device, label: str = "", progress: bool = True,
            checkpoint_path: Path | None = None, command: str | None = None) -> tuple[RunRecord, np.ndarray | None]:
    """Train one run; return its results record and its test logits (None when it diverged or the
    dataset has no test split). `command` is the command line that asked for it."""
    code_version()  # read before training, so the record names the code that ran
    seed_everything(spec.seed)
    model = build_model(spec, data.fmap)
    stats = model_stats(model, next(data.valid.batches(256)))
    started = time.time()
    result = fit(model, data.train, data.valid, data.test, spec.train, spec.seed, device=device,
                 label=label, progress=progress, checkpoint_path=checkpoint_path,
                 group_column=group_column(spec.dataset, data.fmap))
    config = spec.config()
    record = RunRecord(
        model=spec.model,
        display_name=get_model_class(spec.model).display_name,
        dataset=spec.dataset,
        config_hash=spec.config_hash(data.fmap.content_hash),
        seed=spec.seed,
        config=RunConfig(config["model"], config["train"]),
        data_hash=data.fmap.content_hash,
        status=result.status,
        valid=Metrics(**result.valid) if result.valid else None,
        test=Metrics(**result.test) if result.test else None,
        diverged=Divergence(**result.diverged) if result.diverged else None,
        best_epoch=result.best_epoch,
        epochs=result.epochs,
        steps=result.steps,
        train_seconds=round(result.train_seconds, 3),
        wall_seconds=round(time.time() - started, 3),
        samples_per_second=round(result.samples_per_second, 1),
        dense_params=stats.dense_params,
        embedding_params=stats.embedding_params,
        mflop_per_example=round(stats.mflop_per_example, 6),
        history=[Epoch(**entry) for entry in result.history],
        command=command,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        environment=environment(device),
        bayes=bayes_limits(data.fmap.source),  # a generated dataset whose best achievable LogLoss is known
    )
    if result.test_logits is None:
        return record, None
    return record, result.test_logits.numpy()


class Eta:
    """Time left in a plan of runs: each model's mean run time so far, or for a model not timed yet
    the mean over every timed run (models differ in cost by orders of magnitude, so per model first)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def add(self, model: str, seconds: float) -> None:
        self.seconds[model].append(seconds)

    def remaining(self, models: list[str]) -> float | None:
        timed = [s for runs in self.seconds.values() for s in runs]
        if not timed:
            return None
        overall = statistics.fmean(timed)
        return sum(statistics.fmean(self.seconds[m]) if self.seconds.get(m) else overall for m in models)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}"


def checkpoint_path(checkpoint_dir: Path, spec: RunSpec, config_hash: str) -> Path:
    return checkpoint_dir / f"{spec.dataset}_{spec.model}_{config_hash}_{spec.seed}.pt"


def train_unclaimed(spec: RunSpec, data: DatasetSplits, store: ResultsStore, device: torch.device, label: str,
                    options: RunOptions, eta_note: str = "") -> RunRecord | None:
    """Train `spec` and append its record to `store`, unless another process holds its claim or it is
    stored already: then return None. `options` gives the checkpoint directory, the progress bar and
    the command line recorded.

    The run saves its training state to a checkpoint after every epoch (deleted once the run is
    recorded), so a killed run resumes from its last finished epoch. A process claims a run with a
    lock beside its checkpoint; the lock is released if the process dies, however it dies.
    """
    config_hash = spec.config_hash(data.fmap.content_hash)
    key = (spec.model, spec.dataset, config_hash, spec.seed)
    checkpoint = checkpoint_path(options.checkpoints(), spec, config_hash)
    claim_path = checkpoint.with_name(checkpoint.name + ".lock")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    try:
        claim = FileLock(claim_path).acquire(timeout=0)
    except Timeout:
        return None
    with claim:
        if key in store.keys():  # another process finished it since the plan was made
            checkpoint.unlink(missing_ok=True)
            return None
        console.print(f"{label}: config {config_hash}{eta_note}", highlight=False)
        started = time.time()
        record, test_logits = execute(spec, data, device, label, options.progress, checkpoint_path=checkpoint,
                                      command=options.command)
        store.append(record, test_logits)
        checkpoint.unlink(missing_ok=True)
    claim_path.unlink(missing_ok=True)  # safe: a process that still opens it finds the run stored
    if record.ok:
        console.print(f"{label} -> test AUC {record.test.auc:.4f}  logloss {record.test.logloss:.4f}  "
                      f"({record.epochs} epochs, {duration(time.time() - started)})", highlight=False)
    else:
        console.print(f"{label} -> diverged (LossX): {vars(record.diverged)}; continuing", highlight=False)
    return record


def run_plan(plan: list[RunSpec], data: DatasetSplits, store: ResultsStore, device: torch.device,
             options: RunOptions) -> list[RunRecord]:
    """Train every run of `plan` not yet in `store`, appending each as it finishes; return the plan's
    stored records.

    Each run saves its training state under `options.checkpoints()` (default `<store dir>/checkpoints/`)
    after every epoch, so a benchmark killed mid-run resumes from that run's last finished epoch.
    Several processes given the same plan share the work instead of repeating it (`train_unclaimed`);
    runs another process is still training are left to it. A diverged run is recorded as such and
    the plan continues.
    """
    checkpoint_dir = options.checkpoints()
    hashes = [spec.config_hash(data.fmap.content_hash) for spec in plan]
    keys = [(spec.model, spec.dataset, config_hash, spec.seed) for spec, config_hash in zip(plan, hashes)]
    stored = store.keys()
    for spec, key, config_hash in zip(plan, keys, hashes):
        if key in stored:  # left behind by a process stopped between storing its run and deleting this
            checkpoint_path(checkpoint_dir, spec, config_hash).unlink(missing_ok=True)
    todo = [i for i, key in enumerate(keys) if key not in stored]
    console.print(f"{len(plan)} runs planned on {data.fmap.dataset}: {len(plan) - len(todo)} already in {store.path}, "
                  f"{len(todo)} to train", highlight=False)
    eta = Eta()
    for position, index in enumerate(todo, start=1):
        spec = plan[index]
        left = eta.remaining([plan[i].model for i in todo[position - 1:]])
        started = time.time()
        record = train_unclaimed(spec, data, store, device, f"[{position}/{len(todo)}] {spec.model} seed {spec.seed}",
                                 options, "" if left is None else f"; about {duration(left)} left in this benchmark")
        if record is None:
            console.print(f"[{position}/{len(todo)}] {spec.model} seed {spec.seed}: another process is training this "
                          "run; skipped", highlight=False)
        else:
            eta.add(spec.model, time.time() - started)
    records = {r.key: r for r in store.records()}
    missing = [key for key in keys if key not in records]
    if missing:
        console.print(f"{len(missing)} of the planned runs are still being trained by another process; "
                      "rerun to include them", highlight=False)
    return [records[key] for key in keys if key in records]


def bench(dataset: str, models: list[str], seeds: int = 1, options: RunOptions = RunOptions()) -> list[RunRecord]:
    """Train every (model, seed) not yet in the results store; return this benchmark's records."""
    overrides = options.run_overrides()
    plan = [resolve_spec(m, dataset, BASE_SEED + i, options.config_dir, overrides) for m in models for i in range(seeds)]
    store = ResultsStore(options.results_path)
    data = DatasetSplits.open(dataset, options.data_dir, options.stream)
    return run_plan(plan, data, store, pick_device(options.device), options)


def _worker(threads: int, target: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """One worker process of `in_workers`: `threads` torch threads, errors as one line and exit 2."""
    torch.set_num_threads(threads)
    try:
        target(**kwargs)
    except CtrbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def in_workers(workers: int, target: Callable[..., Any], **kwargs: Any) -> None:
    """Run `target(**kwargs)` in `workers` processes at once, the machine's cores split evenly between
    them; they share the work through the results store's claims. Returns when all have finished."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    console.print(f"{workers} worker processes, {threads} thread{'s' if threads > 1 else ''} each", highlight=False)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(threads, target, kwargs)) for _ in range(workers)]
    try:
        for process in processes:
            process.start()
            time.sleep(1.0)  # staggered, so that they claim different runs first
        for process in processes:
            process.join()
    finally:  # SIGTERM or an error here: stop the workers too (their finished runs are stored)
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise CtrbenchError(f"{len(failed)} of {workers} worker processes failed (exit codes {failed}; their messages "
                            "are above); every finished run is stored, rerun to resume")
