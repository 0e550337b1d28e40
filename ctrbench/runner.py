"""Runs: resolve a model's config for a dataset, train it, and record the result.

A run is (model, dataset, config, seed). Its config is the model's constructor defaults overridden by
`model_zoo/configs/<model>.yaml` -> `<dataset>:` -> {model: ..., train: ...}, then by command-line
`--set section.key=value` overrides. `bench` runs a list of models x seeds on one dataset, appending
each finished run to the results store and skipping runs already stored.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars
import pyarrow
import torch
import yaml

import ctrbench
from ctrbench.config import build_dataclass, check_kwargs, load_yaml, signature_hints
from ctrbench.data import InMemory, ParquetStream, load_split
from ctrbench.datasets import REPO_ROOT, dataset_names, load_dataset_config, load_feature_map
from ctrbench.errors import CtrbenchError
from ctrbench.features import FeatureMap
from ctrbench.flops import model_stats
from ctrbench.results import ResultsStore, run_key
from ctrbench.train import TrainConfig, console, fit, seed_everything
from model_zoo import get_model_class

MODEL_CONFIG_DIR = REPO_ROOT / "model_zoo" / "configs"
BASE_SEED = 2021  # BARS's seed; seed i of a multi-seed benchmark is BASE_SEED + i
QUICK_EPOCHS = 3


@dataclass
class RunSpec:
    model: str
    dataset: str
    model_params: dict[str, Any]
    train: TrainConfig
    seed: int

    def config(self) -> dict[str, Any]:
        return {"model": self.model_params, "train": asdict(self.train)}

    def config_hash(self, data_hash: str) -> str:
        """Identifies the config and the exact data it ran on (not the seed)."""
        blob = json.dumps({"model": self.model, "dataset": self.dataset, "config": self.config(), "data": data_hash},
                          sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parse_overrides(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """`["train.epochs=3", "model.embedding_dim=32"]` -> {"train": {"epochs": 3}, "model": {...}}."""
    overrides: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for item in assignments:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in overrides:
            raise CtrbenchError(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE")
        overrides[section][name] = yaml.safe_load(value)
    return overrides


def resolve_spec(model: str, dataset: str, seed: int, config_dir: Path | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> RunSpec:
    cls = get_model_class(model)
    path = Path(config_dir or MODEL_CONFIG_DIR) / f"{model}.yaml"
    entries = (load_yaml(path) or {}) if path.is_file() else {}
    if not isinstance(entries, dict):
        raise CtrbenchError(f"{path}: expected a mapping of dataset name -> {{model: ..., train: ...}}")
    check_kwargs({k: None for k in entries}, {name: Any for name in dataset_names()}, f"{path}")
    where = f"{path}: {dataset}"
    entry = check_kwargs(entries.get(dataset), {"model": dict[str, Any], "train": dict[str, Any]}, where)
    overrides = overrides or {}
    model_values = {**(entry.get("model") or {}), **overrides.get("model", {})}
    train_values = {**(entry.get("train") or {}), **overrides.get("train", {})}
    model_params = check_kwargs(model_values, signature_hints(cls), f"{where}.model")
    train = build_dataclass(TrainConfig, train_values, f"{where}.train")
    return RunSpec(model, dataset, model_params, train, seed)


def environment(device: torch.device) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "versions": {"ctrbench": ctrbench.__version__, "torch": torch.__version__, "python": platform.python_version(),
                     "polars": polars.__version__, "pyarrow": pyarrow.__version__},
        "git_commit": commit,
        "device": {"type": device.type, "name": name, "threads": torch.get_num_threads()},
    }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtrbenchError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


class DatasetSplits:
    """A dataset's feature map and its three splits, loaded once and shared by every run."""

    def __init__(self, fmap: FeatureMap, stream: bool = False):
        self.fmap = fmap
        self.train = ParquetStream(fmap, "train") if stream else InMemory(load_split(fmap, "train"))
        self.valid = InMemory(load_split(fmap, "valid"))
        self.test = InMemory(load_split(fmap, "test")) if "test" in fmap.splits else None

    @classmethod
    def open(cls, dataset: str, data_dir: str | Path | None = None, stream: bool = False) -> DatasetSplits:
        load_dataset_config(dataset)
        return cls(load_feature_map(dataset, data_dir), stream)


def execute(spec: RunSpec, data: DatasetSplits, device: torch.device, label: str = "", progress: bool = True,
            checkpoint_path: Path | None = None) -> dict[str, Any]:
    """Train one run and return its results record."""
    seed_everything(spec.seed)
    model = get_model_class(spec.model)(data.fmap, **spec.model_params)
    stats = model_stats(model, next(data.valid.batches(256)))
    started = time.time()
    result = fit(model, data.train, data.valid, data.test, spec.train, spec.seed, device=device,
                 label=label, progress=progress, checkpoint_path=checkpoint_path)
    return {
        "model": spec.model,
        "display_name": get_model_class(spec.model).display_name,
        "dataset": spec.dataset,
        "config_hash": spec.config_hash(data.fmap.content_hash),
        "seed": spec.seed,
        "config": spec.config(),
        "data_hash": data.fmap.content_hash,
        "status": result.status,
        "valid": result.valid,
        "test": result.test,
        "diverged": result.diverged,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 3),
        "wall_seconds": round(time.time() - started, 3),
        "samples_per_second": round(result.samples_per_second, 1),
        "dense_params": stats.dense_params,
        "embedding_params": stats.embedding_params,
        "mflop_per_example": round(stats.mflop_per_example, 6),
        "history": result.history,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **environment(device),
    }


def bench(
    dataset: str,
    models: list[str],
    seeds: int = 1,
    data_dir: str | Path | None = None,
    results_path: str | Path | None = None,
    config_dir: Path | None = None,
    quick: bool = False,
    device: str = "auto",
    overrides: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train every (model, seed) not yet in the results store; return this benchmark's records."""
    for model in models:
        get_model_class(model)
    overrides = {"model": {}, "train": {}, **(overrides or {})}
    if quick:
        overrides["train"] = {"epochs": QUICK_EPOCHS, **overrides["train"]}
    torch_device = pick_device(device)
    data = DatasetSplits.open(dataset, data_dir)
    store = ResultsStore(results_path) if results_path else ResultsStore()
    done = {run_key(r): r for r in store.records()}
    plan = [resolve_spec(m, dataset, BASE_SEED + i, config_dir, overrides) for m in models for i in range(seeds)]
    records, run_seconds = [], []
    for number, spec in enumerate(plan, start=1):
        key = (spec.model, dataset, spec.config_hash(data.fmap.content_hash), spec.seed)
        if key in done:
            console.print(f"[{number}/{len(plan)}] {spec.model} seed {spec.seed}: already in {store.path}, skipped",
                          highlight=False)
            records.append(done[key])
            continue
        eta = ""
        if run_seconds:
            remaining = (len(plan) - number + 1) * sum(run_seconds) / len(run_seconds)
            eta = f", about {remaining / 60:.1f} min left"
        console.print(f"[{number}/{len(plan)}] {spec.model} on {dataset}, seed {spec.seed}{eta}", highlight=False)
        started = time.time()
        record = execute(spec, data, torch_device, label=f"  {spec.model}", progress=progress)
        run_seconds.append(time.time() - started)
        store.append(record)
        records.append(record)
        if record["status"] == "ok":
            console.print(f"  -> test AUC {record['test']['auc']:.4f}  logloss {record['test']['logloss']:.4f}  "
                          f"({record['epochs']} epochs, {run_seconds[-1]:.0f}s)", highlight=False)
        else:
            console.print(f"  -> diverged ({record['diverged']}); continuing with the next run", highlight=False)
    return records
