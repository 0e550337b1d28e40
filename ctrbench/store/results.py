"""The results store (one JSON object per finished run in a JSON Lines file) and model selection.

Each line is a `ctrbench.store.record.RunRecord` (`to_json` / `from_json`); reading checks every line and
stops at the first bad one with the store's file, the line number and the field.

Appends take an exclusive file lock, rewrite the file to a temporary name and rename it over the
old one, so concurrent benchmark processes never interleave or tear records and a crash leaves the
previous complete file. A run is identified by (model, dataset, config hash, seed); `bench` and
`tune` skip runs whose key is already stored, which makes an interrupted benchmark resume where it
stopped.

Model selection happens here, once, for the leaderboard and the tuner alike: the runs of one
(dataset, model, config) over its seeds form a `ConfigResult`, and for each (dataset, model) the
chosen config is the one with the best mean validation AUC (never test) over the seeds every
candidate has. A config that diverged on any seed ranks below every config that did not.
"""

from __future__ import annotations

import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import atomic_write_bytes, atomic_write_text
from ctrbench.store.record import RunConfig, RunRecord


DEFAULT_RESULTS = Path("results") / "results.jsonl"
PREDICTIONS_DIR = "predictions"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class ResultsStore:
    def __init__(self, path: str | Path = DEFAULT_RESULTS):
        self.path = Path(path)
        if self.path.is_dir():
            raise CtrbenchError(f"{self.path}: is a directory; the results store is a file, e.g. "
                                f"{self.path / DEFAULT_RESULTS.name}")
        self.lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> list[RunRecord]:
        if not self.path.exists():
            return []
        records = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(RunRecord.from_json(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise CtrbenchError(f"{self.path}:{number}: not a JSON record ({exc.msg}); fix or remove that line") from None
            except CtrbenchError as exc:
                raise CtrbenchError(f"{self.path}:{number}: {exc}; fix or remove that line") from None
        return records

    def records(self) -> list[RunRecord]:
        if not self.path.parent.is_dir():  # nothing stored yet; reading creates nothing
            return []
        with self.lock:
            return self._read()

    def keys(self) -> set[tuple]:
        return {record.key for record in self.records()}

    @property
    def predictions_dir(self) -> Path:
        """Where runs' test predictions are kept: `predictions/` beside a store named `results.jsonl`,
        `NAME.predictions/` beside any other store `NAME.jsonl`, so that two stores in one folder, which
        may hold runs with the same key (the same bench command with --stream and --in-memory), never
        share a predictions file."""
        if self.path.name == DEFAULT_RESULTS.name:
            return self.path.parent / PREDICTIONS_DIR
        return self.path.parent / f"{self.path.stem}.{PREDICTIONS_DIR}"

    def predictions_path(self, record: RunRecord) -> Path:
        return self.predictions_dir / f"{record.dataset}_{record.model}_{record.config_hash}_{record.seed}.npy"

    def predictions(self, record: RunRecord) -> np.ndarray | None:
        """The run's test logits (float32, test rows in order), or None when they were not kept. The
        labels are the dataset's: they stay with the processed data, never beside the store."""
        path = self.predictions_path(record)
        return np.load(path) if path.is_file() else None

    def append(self, record: RunRecord, test_logits: np.ndarray | None = None) -> None:
        """Add a finished run; its test logits (when given, 4 bytes a test row) go first to their own file."""
        line = record.to_line()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if test_logits is not None:
            atomic_write_bytes(self.predictions_path(record), _npy(test_logits.astype(np.float32, copy=False)))
        with self.lock:
            existing = self.path.read_text() if self.path.exists() else ""
            if existing and not existing.endswith("\n"):
                existing += "\n"
            atomic_write_text(self.path, existing + line + "\n")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def format_mean_std(values: list[float], digits: int = 4) -> str:
    """"0.9852 ± 0.0008" over several values, "0.9852" for one."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


@dataclass
class ConfigResult:
    """All stored runs of one config of one model on one dataset, one per seed, sorted by seed."""

    dataset: str
    model: str
    config_hash: str
    runs: list[RunRecord]

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    @property
    def entry(self) -> str:
        """The leaderboard row these runs are ranked in (`RunRecord.entry`)."""
        return self.first.entry

    @property
    def distributed(self) -> bool:
        return self.first.distributed is not None

    @property
    def display_name(self) -> str:
        name = self.first.display_name or self.model
        return f"{name} (distributed)" if self.distributed else name

    @property
    def config(self) -> RunConfig:
        return self.first.config

    @property
    def ok(self) -> list[RunRecord]:
        return [r for r in self.runs if r.ok]

    @property
    def diverged(self) -> int:
        return len(self.runs) - len(self.ok)

    def metric(self, split: str, name: str) -> list[float]:
        """One value per finished (not diverged) seed that has it, e.g. metric("test", "auc")."""
        values = [r.metric(split, name) for r in self.ok]
        return [v for v in values if v is not None]

    @property
    def valid_auc(self) -> float:
        """Mean validation AUC over the finished seeds; -inf when every seed diverged."""
        values = self.metric("valid", "auc")
        return statistics.fmean(values) if values else float("-inf")

    def rank(self, seeds: set[int] | None = None) -> tuple[bool, float]:
        """Sort key for model selection: no diverged seed first, then mean validation AUC (over `seeds`
        when given, so that configs run with different numbers of seeds compare on the same ones)."""
        if seeds is None:
            return self.diverged == 0, self.valid_auc
        values = [r.valid.auc for r in self.ok if r.seed in seeds and r.valid is not None]
        return self.diverged == 0, statistics.fmean(values) if values else float("-inf")

    @property
    def seeds(self) -> set[int]:
        return {r.seed for r in self.runs}

    @property
    def finished_at(self) -> str:
        """When its last run finished ("" when no run recorded it)."""
        return max(r.finished_at or "" for r in self.runs)

    @property
    def params(self) -> int:
        return self.first.dense_params + self.first.embedding_params

    @property
    def commands(self) -> list[str]:
        """The distinct command lines that produced these runs (older records may lack one)."""
        return sorted({r.command or "(command not recorded)" for r in self.runs})


def group_configs(records: list[RunRecord]) -> list[ConfigResult]:
    """Records grouped by (dataset, model, config hash), sorted; a key stored twice counts once (the first)."""
    groups: dict[tuple[str, str, str], dict[int, RunRecord]] = defaultdict(dict)
    for record in records:
        groups[(record.dataset, record.model, record.config_hash)].setdefault(record.seed, record)
    return [ConfigResult(dataset, model, config_hash, [runs[seed] for seed in sorted(runs)])
            for (dataset, model, config_hash), runs in sorted(groups.items())]


def select_best(records: list[RunRecord]) -> dict[tuple[str, str], tuple[ConfigResult, int]]:
    """(dataset, entry) -> (the config with the best mean validation AUC, how many configs were tried);
    the entry is the model (`RunRecord.entry`: distributed runs are ranked apart, as `MODEL (distributed)`).

    Configs are compared on the seeds they all have (a protocol's candidates on seed 2021, even after
    its winner got more seeds), or on all their seeds when they share none. Ties go to the config whose
    hash sorts first, so the choice never depends on record order. Distributed runs have no validation
    split: of several configs, the one whose run finished last is shown (never a choice on test).
    """
    candidates: dict[tuple[str, str], list[ConfigResult]] = defaultdict(list)
    for result in group_configs(records):
        candidates[(result.dataset, result.entry)].append(result)
    chosen = {}
    for key, results in sorted(candidates.items()):
        if results[0].distributed:
            chosen[key] = (max(results, key=lambda result: result.finished_at), len(results))
            continue
        common = set.intersection(*(result.seeds for result in results)) or None
        chosen[key] = (max(results, key=lambda result: result.rank(common)), len(results))
    return chosen
