"""The run record: what one finished run stores, one JSON object a line of the results store.

`RunRecord` is the one shape of a run for every writer (`ctrbench.app.runner.execute`, the distributed
track's `ctrbench.distributed.train.run`) and every reader (model selection, leaderboard, tuner,
protocol, scaling report, CLI). `to_json` gives the stored object and `from_json` reads one back,
checking every field: a bad one stops with one line naming it (`record.valid.auc: expected float,
got 'x'`), to which the store adds its file and line.

On disk a record is a flat JSON object written with sorted keys (`ResultsStore.append`):

    model, display_name, dataset, config_hash, seed        which run (key: model, dataset, config_hash, seed)
    config {model: {...}, train: {...}}, data_hash         what ran, on which build of the data
    status ("ok" | "diverged"), diverged                   LossX: where the loss or gradient became non-finite
    valid, test {auc, logloss[, gauc]}                     metrics; {} when the run diverged or has no such split
    best_epoch, epochs, steps, history [{epoch, ...}]      the training loop
    train_seconds, wall_seconds, samples_per_second        time
    dense_params, embedding_params, mflop_per_example      size and compute (`ctrbench.nn.flops`)
    versions, git_commit, git_dirty, device {type, name, threads}   the environment
    command, finished_at                                   provenance
    bayes                                                  only on a dataset that knows its Bayes limit (teacher)
    distributed                                            only for a run of the distributed track

Records written before a field existed still load: only the fields that model selection and the
leaderboard need (`REQUIRED_FIELDS`) must be there, the others default to null.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ctrbench.core.config import build_dataclass
from ctrbench.core.errors import CtrbenchError

BASE_SEED = 2021  # BARS's seed; seed i of a multi-seed benchmark is BASE_SEED + i
STATUSES = ("ok", "diverged")
KEY_FIELDS = ("model", "dataset", "config_hash", "seed")
# What model selection, the leaderboard and the results table read from every record.
REQUIRED_FIELDS = (*KEY_FIELDS, "status", "config", "valid", "test", "dense_params", "embedding_params",
                   "mflop_per_example", "samples_per_second", "device")
ENVIRONMENT_FIELDS = ("versions", "git_commit", "git_dirty", "device")


def hash_config(model: str, dataset: str, config: dict[str, Any], data_hash: str) -> str:
    """Identifies a config and the exact data it ran on (not the seed): 12 hex digits of a SHA-256."""
    blob = json.dumps({"model": model, "dataset": dataset, "config": config, "data": data_hash},
                      sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class Metrics:
    """AUC and LogLoss of one split; gAUC on datasets that group rows by user."""

    auc: float
    logloss: float
    gauc: float | None = None

    def to_json(self) -> dict[str, float]:
        values = {"auc": self.auc, "logloss": self.logloss}
        return values if self.gauc is None else {**values, "gauc": self.gauc}


@dataclass
class RunConfig:
    """The model's constructor arguments and the training settings (`TrainConfig`, or the distributed
    track's training keys)."""

    model: dict[str, Any]
    train: dict[str, Any]


@dataclass
class Epoch:
    """One entry of a single-node run's history."""

    epoch: int
    train_loss: float
    valid_auc: float
    valid_logloss: float
    seconds: float
    samples_per_second: float


@dataclass
class Divergence:
    """Where a run diverged (LossX): the step, the last finite loss before it, and what was not finite."""

    step: int | None
    last_finite_loss: float | None
    what: str


@dataclass
class Device:
    type: str  # "cpu" or "cuda"
    name: str  # the CPU's or GPU's model name
    threads: int | None = None  # torch's CPU threads in the training process

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "threads": self.threads}


@dataclass
class Environment:
    """Where a run ran: device, library versions, and the git commit of the code (with whether tracked
    files had uncommitted changes when the process started)."""

    device: Device
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    git_dirty: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {"versions": self.versions, "git_commit": self.git_commit, "git_dirty": self.git_dirty,
                "device": self.device.to_json()}


@dataclass
class BayesLimit:
    """On a generated dataset that knows how its labels were drawn (teacher): the LogLoss and AUC of the
    true probabilities on one split, the best any model can reach, and the split's click rate."""

    logloss: float
    auc: float
    ctr: float


def bayes_limits(source: dict[str, Any]) -> dict[str, BayesLimit] | None:
    """Split -> Bayes limit, from a feature map's `source` (None for a dataset that does not know it)."""
    limits = source.get("bayes")
    return {split: BayesLimit(**values) for split, values in limits.items()} if limits else None


@dataclass
class StepLoss:
    step: int
    loss: float  # mean training loss over the steps since the previous entry, over every process


@dataclass
class PeakMemory:
    kind: str  # "cuda_max_memory_allocated" (tensors on the GPU) or "peak_rss" (the process, on the CPU)
    bytes_per_rank: list[int]


@dataclass
class DistributedRun:
    """What only a run of the distributed track has: its processes, the tables' layout, its one pass."""

    world_size: int
    sharding: dict[str, dict[str, Any]]  # EBC -> table -> {type, shards: [{rank, offsets, sizes}]}
    eval_splits: list[str]  # the splits `test` was computed on
    eval_rows: int
    train_rows: int
    resumed_at: int  # the step this session started from (0: not resumed)
    peak_memory: PeakMemory
    loss_history: list[StepLoss]


@dataclass
class RunRecord:
    """One finished run; see the module docstring for the fields' meaning."""

    model: str
    dataset: str
    config_hash: str
    seed: int
    status: Literal["ok", "diverged"]
    config: RunConfig
    valid: Metrics | None  # None: diverged, or no validation split (the distributed track)
    test: Metrics | None
    dense_params: int
    embedding_params: int
    mflop_per_example: float
    samples_per_second: float | None  # None only for a resumed distributed run that trained no step itself
    environment: Environment
    display_name: str | None = None
    data_hash: str | None = None
    diverged: Divergence | None = None
    best_epoch: int | None = None
    epochs: int | None = None
    steps: int | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    history: list[Epoch] = field(default_factory=list)
    command: str | None = None
    finished_at: str | None = None
    bayes: dict[str, BayesLimit] | None = None  # split -> the teacher's own LogLoss, AUC and click rate
    distributed: DistributedRun | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        """(model, dataset, config hash, seed): a run is stored once under its key."""
        return self.model, self.dataset, self.config_hash, self.seed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def device(self) -> Device:
        return self.environment.device

    @property
    def entry(self) -> str:
        """The leaderboard row the run is ranked in: its model, or `MODEL (distributed)` for a run of the
        distributed track (one pass, no validation split: ranked apart from the model's tuned configs)."""
        return f"{self.model} (distributed)" if self.distributed else self.model

    def metric(self, split: Literal["valid", "test"], name: str) -> float | None:
        """e.g. metric("test", "auc"); None when the run has no such metrics."""
        metrics = self.valid if split == "valid" else self.test
        return None if metrics is None else getattr(metrics, name)

    def to_json(self) -> dict[str, Any]:
        """The stored JSON object (the results store writes it with sorted keys)."""
        data = {
            "model": self.model, "display_name": self.display_name, "dataset": self.dataset,
            "config_hash": self.config_hash, "seed": self.seed,
            "config": {"model": self.config.model, "train": self.config.train},
            "data_hash": self.data_hash, "status": self.status,
            "valid": self.valid.to_json() if self.valid else {}, "test": self.test.to_json() if self.test else {},
            "diverged": None if self.diverged is None else vars(self.diverged).copy(),
            "best_epoch": self.best_epoch, "epochs": self.epochs, "steps": self.steps,
            "train_seconds": self.train_seconds, "wall_seconds": self.wall_seconds,
            "samples_per_second": self.samples_per_second,
            "dense_params": self.dense_params, "embedding_params": self.embedding_params,
            "mflop_per_example": self.mflop_per_example,
            "history": [vars(epoch).copy() for epoch in self.history],
            "command": self.command, "finished_at": self.finished_at,
            **self.environment.to_json(),
        }
        if self.bayes is not None:
            data["bayes"] = {split: vars(limit).copy() for split, limit in self.bayes.items()}
        if self.distributed is not None:
            run = self.distributed
            data["distributed"] = {
                "world_size": run.world_size, "sharding": run.sharding, "eval_splits": run.eval_splits,
                "eval_rows": run.eval_rows, "train_rows": run.train_rows, "resumed_at": run.resumed_at,
                "peak_memory": vars(run.peak_memory).copy(),
                "loss_history": [vars(entry).copy() for entry in run.loss_history],
            }
        return data

    def to_line(self) -> str:
        """The record as one line of the store: compact JSON, keys sorted."""
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: Any) -> RunRecord:
        """Read a stored record, checking every field; errors name the field (`record.FIELD: ...`)."""
        if not isinstance(data, dict):
            raise CtrbenchError("not a JSON object")
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            raise CtrbenchError(f"record lacks {missing}")
        known = [f for f in cls.__dataclass_fields__ if f != "environment"] + list(ENVIRONMENT_FIELDS)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise CtrbenchError(f"record: unknown field {unknown[0]!r}; the fields are: {', '.join(sorted(known))}")
        if data["status"] not in STATUSES:
            raise CtrbenchError(f"status {data['status']!r} is not one of {STATUSES}")
        values = {name: value for name, value in data.items() if name not in ENVIRONMENT_FIELDS}
        for split in ("valid", "test"):  # {}: no metrics (a diverged run)
            if values[split] == {}:
                values[split] = None
        nested = {"valid": Metrics, "test": Metrics, "diverged": Divergence, "distributed": DistributedRun}
        for name, kind in nested.items():
            if isinstance(values.get(name), dict):  # built here, so that an error names the field inside
                values[name] = build_dataclass(kind, values[name], f"record.{name}")
        values["environment"] = build_dataclass(
            Environment, {name: data[name] for name in ENVIRONMENT_FIELDS if name in data}, "record")
        return build_dataclass(cls, values, "record")
