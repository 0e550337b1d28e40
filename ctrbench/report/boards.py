"""The leaderboard's model of the store: per dataset a board, per model its chosen config, tuning budget,
the paper's numbers and its significance verdict against the best model.

`build_boards` groups the runs of the current build of each dataset (`current_build`) into
`DatasetBoard`s, one `Row` per model ("ours" is the config `results.select_best` chooses: the best mean
validation AUC, never test), with the tuning `Budget` each model got; `significance` then sets each
row's verdict from the runs' stored test predictions. `ctrbench.report.leaderboard` renders them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.stats import Comparison, compare_to_best
from ctrbench.data.datasets import dataset_names, load_dataset_config
from ctrbench.report.paper import PaperNumbers
from ctrbench.report.plots import Point
from ctrbench.store.protocol_spec import load_protocol
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ConfigResult, mean_std, select_best


@dataclass(frozen=True)
class Budget:
    """What tuning one model on one dataset cost: every run stored for it on the current build."""

    runs: int
    train_hours: float  # summed over those runs
    cap: str | None  # why the protocol gave this model a smaller budget, if it did
    planned_runs: int | None = None  # what the protocol that made them plans for the model, if one did


@dataclass
class Row:
    """One model on one dataset: our chosen config (if any) and the paper's numbers (if any)."""

    model: str  # display name
    ours: ConfigResult | None
    configs_tried: int
    paper_auc: float | None
    paper_logloss: float | None
    paper_params: int | None
    paper_mflop: float | None
    budget: Budget | None = None
    verdict: Comparison | None = None  # against the best model of the dataset; None: best, or not testable

    def mean(self, metric: str) -> float | None:
        values = self.ours.metric("test", metric) if self.ours else []
        return mean_std(values)[0] if values else None


@dataclass
class DatasetBoard:
    display: str  # as the paper names it
    name: str | None  # our dataset name, None for a dataset we have no runs on
    rows: list[Row]
    other_builds: int = 0  # runs left out because they used another build of the dataset
    best: str | None = None  # the model the verdicts compare with, once significance is known

    @property
    def commands(self) -> list[str]:
        return sorted({c for row in self.rows if row.ours for c in row.ours.commands})


def current_build(records: list[RunRecord]) -> tuple[list[RunRecord], Counter[str]]:
    """The runs on the build of each dataset that its most recently finished run used, and per dataset
    how many runs on other builds were left out: runs on data with another content hash (other
    preprocessing rules or raw release) are not comparable with them."""
    newest: dict[str, str | None] = {}
    for record in sorted(records, key=lambda r: r.finished_at or ""):
        newest[record.dataset] = record.data_hash
    kept = [r for r in records if r.data_hash == newest[r.dataset]]
    return kept, Counter(r.dataset for r in records if r.data_hash != newest[r.dataset])


def _protocol(name: str):
    """The protocol named in runs' commands, None when it is no longer defined (then no cap or plan shows)."""
    try:
        return load_protocol(name)
    except CtrbenchError:
        return None


def _option(command: str, name: str) -> str | None:
    words = command.split()
    return words[words.index(name) + 1] if name in words[:-1] else None


def budgets(records: list[RunRecord]) -> dict[tuple[str, str], Budget]:
    """(dataset, entry) -> its runs, their summed training time and the cap of the protocol that made
    them (`--protocol NAME` in their commands), if the protocol caps that model there. The entry is the
    model, distributed runs apart (`RunRecord.entry`)."""
    runs: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for record in records:
        runs[(record.dataset, record.entry)].append(record)
    result = {}
    for (dataset, entry), group in runs.items():
        model = group[0].model
        commands = [r.command or "" for r in group]
        made_by = sorted({(name, int(_option(c, "--seeds") or 1)) for c in commands if (name := _option(c, "--protocol"))})
        protocol, seeds = (_protocol(made_by[-1][0]), made_by[-1][1]) if made_by else (None, 1)
        cap = protocol.cap(dataset, model) if protocol else None
        planned = (len(protocol.dims(dataset, model, None)) + protocol.points(dataset, model) + seeds - 1
                   if protocol else None)
        hours = sum(r.train_seconds or 0.0 for r in group) / 3600
        result[(dataset, entry)] = Budget(len(group), hours, cap.reason if cap else None, planned)
    return result


Logits = Callable[[RunRecord], np.ndarray | None]  # a run -> its stored test logits
Labels = Callable[[str, str], np.ndarray | None]  # (dataset, data hash) -> that build's test labels


def significance(board: DatasetBoard, predictions: Logits, labels_of: Labels) -> None:
    """Set each row's verdict against the dataset's best model (highest mean test AUC), from the runs'
    stored test logits and the dataset's test labels; rows whose logits are not all stored keep None,
    and every row does when the labels are not at hand (the dataset is not processed here). Distributed
    runs keep no test logits and take no part."""
    rows = [r for r in board.rows if r.ours and r.ours.ok and not r.ours.distributed]
    if len(rows) < 2:
        return
    best = max(rows, key=lambda r: r.mean("auc"))

    def by_seed(row: Row) -> dict[int, np.ndarray] | None:
        stored = {run.seed: predictions(run) for run in row.ours.ok}
        return None if any(p is None for p in stored.values()) else stored

    best_predictions = by_seed(best)
    others = {row.model: by_seed(row) for row in rows if row is not best}
    others = {model: stored for model, stored in others.items() if stored is not None}
    labels = labels_of(board.name, best.ours.first.data_hash) if best_predictions and others else None
    if labels is None:
        return
    verdicts = compare_to_best(labels, best_predictions, others)
    for row in rows:
        row.verdict = next((v for v in verdicts if v.model == row.model), None)
    board.best = best.model


def build_boards(records: list[RunRecord], paper: PaperNumbers) -> list[DatasetBoard]:
    """One board per dataset: the paper's datasets in its order, then ours that it lacks, by name.

    Rows are the paper's models in its order, then our other models by name.
    """
    display_of = {name: load_dataset_config(name).display_name for name in dataset_names()}
    ours: dict[str, dict[str, tuple[ConfigResult, int]]] = defaultdict(dict)
    names: dict[str, str] = {}
    records, other_builds = current_build(records)
    budget = budgets(records)
    for (dataset, _), (result, tried) in select_best(records).items():
        display = display_of.get(dataset, dataset)
        ours[display][result.display_name] = (result, tried)
        names[display] = dataset
    boards = []
    for display in paper.datasets + sorted(set(ours) - set(paper.datasets)):
        models = [m for m in paper.models if (display, m) in paper.table2 or m in ours[display]]
        models += sorted(set(ours[display]) - set(models))
        rows = []
        for model in models:
            result, tried = ours[display].get(model, (None, 0))
            auc, logloss = paper.table2.get((display, model), (None, None))
            params, mflop = paper.table3.get((display, model), (None, None))
            rows.append(Row(model, result, tried, auc, logloss, params, mflop,
                            budget.get((names.get(display), result.entry)) if result else None))
        name = names.get(display)
        boards.append(DatasetBoard(display, name, rows, other_builds[name] if name else 0))
    return boards


def plot_points(board: DatasetBoard) -> tuple[list[Point], list[Point]]:
    """Ours (mean ± std over seeds; the best and the models tied with it highlighted) and the paper's
    (its forward + backward MFLOP divided by 3, the convention of ours)."""
    ours = [Point(r.model, r.ours.first.mflop_per_example, *mean_std(r.ours.metric("test", "auc")),
                  highlight=r.model == board.best or (r.verdict is not None and r.verdict.tied))
            for r in board.rows if r.ours and r.ours.ok]
    paper = [Point(r.model, r.paper_mflop / 3, r.paper_auc) for r in board.rows
             if r.paper_mflop is not None and r.paper_auc is not None]
    return ours, paper
