"""Measure one-epoch `ctrbench bench` runs on a full-size dataset and record them under benchmarks/fullsize_results/.

    python -m benchmarks.fullsize_train DATASET --data-dir DIR --models dlrm,wukong --input "HOW THE DATA WAS MADE"
        [--record-dataset NAME] [--results STORE] [--set SECTION.KEY=VALUE ...] [--out DIR] [--note TEXT]

For each model, one after the other, runs

    ctrbench bench --dataset DATASET --data-dir DIR --models MODEL --seeds 1 --set train.epochs=1
        --results STORE --no-progress [--set ...]

as a child process (one run, in that process: `bench` with one worker trains in-process) and writes
benchmarks/fullsize_results/NAME_train_MODEL.json (NAME: `--record-dataset`, default DATASET): the split
sizes, wall and CPU seconds (user + system) and peak RSS of the whole command (`os.wait4`, what
`/usr/bin/time -v` reports as maximum resident set size; data loading, model and evaluation included),
the run's training samples/s and epoch seconds, its valid and test metrics as the results store holds
them, the line in which `bench` said how it holds each split (in memory or streamed, and which splits
are read once), the command as typed, the machine and the commit. The run itself stays in STORE
(default benchmarks/fullsize_results/runs.jsonl); a model that already has a run there on this data is
not measured again (`bench` would skip it), the script stops and says so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks.measure import (FULLSIZE_RESULTS, REPO, Measured, add_record_options, load_average, run_measured,
                                write_fullsize_record)
from ctrbench.data.datasets import processed_dir
from ctrbench.data.features import FeatureMap
from ctrbench.store.environment import code_version
from ctrbench.store.results import ResultsStore

DEFAULT_STORE = "benchmarks/fullsize_results/runs.jsonl"


def bench_command(dataset: str, data_dir: str, model: str, store: str, overrides: list[str]) -> list[str]:
    """The `ctrbench bench` command of one model's one-epoch run, as a user would type it."""
    command = ["ctrbench", "bench", "--dataset", dataset, "--data-dir", data_dir, "--models", model,
               "--seeds", "1", "--set", "train.epochs=1", "--results", store, "--no-progress"]
    for override in overrides:
        command += ["--set", override]
    return command


def data_decision(status_lines: str, dataset: str) -> str:
    """The line in which `bench` said how it holds each split (`DATASET data: train N rows, ...`)."""
    lines = [line.strip() for line in status_lines.splitlines() if line.startswith(f"{dataset} data:")]
    return lines[-1] if lines else ""


def train_record(name: str, model: str, fmap: FeatureMap, run: dict[str, Any], measured: Measured,
                 decision: str, command: list[str]) -> dict[str, Any]:
    """The JSON object of one measured run, from its results-store record `run` and the measurement."""
    rows = {split: info.rows for split, info in fmap.splits.items()}
    metrics = {f"{split}_{key}": round(value, 6) for split in ("valid", "test")
               for key, value in (run[split] or {}).items()}
    history = run.get("history") or []
    return {
        "dataset": name, "stage": "train", "model": model,
        "train_rows": rows["train"], "valid_rows": rows["valid"], "test_rows": rows.get("test", 0),
        "wall_s": round(measured.wall_s, 1), "cpu_s": round(measured.cpu_s, 1),
        "peak_rss_mib": round(measured.peak_rss_mib),
        "samples_per_s": round(run["samples_per_second"]),
        "epoch_s": round(history[0]["seconds"], 1) if history else None,
        "status": run["status"], **metrics, "data": decision, "command": " ".join(command),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--data-dir", required=True, help="parent of the processed dataset, relative to the repository")
    parser.add_argument("--models", required=True, help="comma-separated, e.g. dlrm,wukong")
    parser.add_argument("--results", default=DEFAULT_STORE, help=f"results store of the runs (default {DEFAULT_STORE})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="passed to ctrbench bench (train.epochs=1 is always set)")
    parser.add_argument("--out", type=Path, default=FULLSIZE_RESULTS, help="where the JSON files go")
    add_record_options(parser, "processed data")
    args = parser.parse_args(argv)
    name = args.record_dataset or args.dataset
    fmap = FeatureMap.load(processed_dir(args.dataset, REPO / args.data_dir))
    models = args.models.split(",")
    done = sorted({r.model for r in ResultsStore(REPO / args.results).records()
                   if r.model in models and r.dataset == args.dataset and r.data_hash == fmap.content_hash})
    if done:
        raise SystemExit(f"error: {args.results} already holds a run of {', '.join(done)} on this {args.dataset} "
                         "data, which `bench` would skip instead of measuring; give another --results")
    for model in models:
        command = bench_command(args.dataset, args.data_dir, model, args.results, args.overrides)
        commit, dirty = code_version()
        load = load_average()
        measured = run_measured([sys.executable, "-m", *command])
        runs = [r for r in ResultsStore(REPO / args.results).records()
                if r.model == model and r.dataset == args.dataset and r.data_hash == fmap.content_hash]
        if not runs:
            raise SystemExit(f"error: {args.results}: no {model} run on {args.dataset} after the benchmark")
        record = train_record(name, model, fmap, runs[-1].to_json(), measured,
                              data_decision(measured.stderr, args.dataset), command)
        path = write_fullsize_record(f"{name}_train_{model}", record, args.input, args.note, load, commit, dirty,
                                     args.out)
        print(f"{path}: {record['samples_per_s']:,} samples/s, epoch {record['epoch_s']} s, "
              f"peak RSS {record['peak_rss_mib']:,} MiB, test AUC {record.get('test_auc')}")


if __name__ == "__main__":
    main()
