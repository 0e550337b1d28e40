"""Markdown leaderboards generated from the results store, next to the paper's Table 2.

For every (dataset, model) the config with the best mean validation AUC is shown (model selection on
validation, never on test), as mean +- std of test AUC and LogLoss over its seeds. Output is a pure
function of the results store, so regenerating gives byte-identical files.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrbench.datasets import REPO_ROOT, dataset_names, load_dataset_config
from ctrbench.features import atomic_write_text

PAPER_DIR = REPO_ROOT / "leaderboards" / "paper"


@dataclass
class Summary:
    dataset: str
    model: str
    display_name: str
    config_hash: str
    seeds: list[int]
    diverged: int
    valid_auc: float
    test_auc: list[float]
    test_logloss: list[float]
    mflop_per_example: float
    params: int


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(records: list[dict[str, Any]]) -> dict[tuple[str, str], Summary]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["dataset"], record["model"], record["config_hash"])].append(record)
    best: dict[tuple[str, str], Summary] = {}
    for (dataset, model, config_hash), runs in sorted(groups.items()):
        ok = sorted((r for r in runs if r["status"] == "ok"), key=lambda r: r["seed"])
        summary = Summary(
            dataset=dataset, model=model, display_name=runs[0].get("display_name", model), config_hash=config_hash,
            seeds=[r["seed"] for r in ok], diverged=len(runs) - len(ok),
            valid_auc=statistics.fmean(r["valid"]["auc"] for r in ok) if ok else float("-inf"),
            test_auc=[r["test"]["auc"] for r in ok], test_logloss=[r["test"]["logloss"] for r in ok],
            mflop_per_example=runs[0]["mflop_per_example"],
            params=runs[0]["dense_params"] + runs[0]["embedding_params"],
        )
        current = best.get((dataset, model))
        if current is None or summary.valid_auc > current.valid_auc:
            best[(dataset, model)] = summary
    return best


def paper_table2() -> dict[tuple[str, str], tuple[float, float]]:
    """(paper dataset name, paper model name) -> (AUC, LogLoss)."""
    with (PAPER_DIR / "table2.csv").open() as handle:
        return {(r["dataset"], r["model"]): (float(r["auc"]), float(r["logloss"])) for r in csv.DictReader(handle)}


def _fmt(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def dataset_table(dataset: str, summaries: list[Summary], command: str) -> str:
    display = load_dataset_config(dataset).display_name if dataset in dataset_names() else dataset
    paper = paper_table2()
    best_auc = max((statistics.fmean(s.test_auc) for s in summaries if s.test_auc), default=None)
    lines = [
        f"## {display}", "",
        f"Produced by: `{command}`", "",
        "| Model | Seeds | Test AUC | Test LogLoss | Paper AUC | Paper LogLoss | Δ AUC | Params | MFLOP/example |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summaries, key=lambda s: s.display_name):
        auc = _fmt(s.test_auc)
        if s.test_auc and statistics.fmean(s.test_auc) == best_auc:
            auc = f"**{auc}**"
        if s.diverged:
            auc += f" ({s.diverged} diverged: LossX)"
        paper_auc, paper_logloss = paper.get((display, s.display_name), (None, None))
        delta = f"{statistics.fmean(s.test_auc) - paper_auc:+.4f}" if paper_auc is not None and s.test_auc else "-"
        lines.append(
            f"| {s.display_name} | {len(s.seeds)} | {auc} | {_fmt(s.test_logloss)} | "
            f"{'-' if paper_auc is None else f'{paper_auc:.4f}'} | "
            f"{'-' if paper_logloss is None else f'{paper_logloss:.4f}'} | {delta} | {s.params:,} | {s.mflop_per_example:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_leaderboards(records: list[dict[str, Any]], out_dir: str | Path, command: str) -> list[Path]:
    """One markdown file per dataset with results; returns the paths written."""
    by_dataset: dict[str, list[Summary]] = defaultdict(list)
    for (dataset, _), summary in sorted(summarize(records).items()):
        by_dataset[dataset].append(summary)
    written = []
    for dataset, summaries in sorted(by_dataset.items()):
        path = Path(out_dir) / f"{dataset}.md"
        atomic_write_text(path, f"# Leaderboard: {dataset}\n\n" + dataset_table(dataset, summaries, command))
        written.append(path)
    return written
