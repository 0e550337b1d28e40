"""Performance benchmark: ctrbench side by side with FuxiCTR 2.3.10, and how Wukong's cost grows.

    python -m benchmarks.run train       --fxvenv /work/fxvenv --fuxictr-zoo DIR [--repeats 3]
    python -m benchmarks.run preprocess  --fxvenv /work/fxvenv [--repeats 3]
    python -m benchmarks.run eval        [--rows 10000000]
    python -m benchmarks.run scaling
    python -m benchmarks.run converge    --fxvenv /work/fxvenv --fuxictr-zoo DIR
    python -m benchmarks.run profile     [--models dlrm]   # torch.profiler table, eager vs torch.compile
    python -m benchmarks.run report      # results/perf/*.json -> benchmarks/perf.md

Each part writes `RESULTS/<part>.json` (default results/perf/) with the exact command, the machine,
and the load average before and after; `report` turns whatever parts exist into one markdown file.

FuxiCTR runs in its own virtual environment (`--fxvenv`, see benchmarks/requirements-fuxictr.txt)
through `benchmarks/fuxictr_side.py`; ours runs through `benchmarks/ours.py`. One process per
measurement, ours and theirs alternating (A B, then B A on the next repeat), so background load hits
both alike; each process's peak RSS comes from `os.wait4`. Both sides get the same processed data
(exported to FuxiCTR's npz + feature_map.json format from our parquet splits), the same
hyperparameters (the model's Frappe config in model_zoo/configs), batch size, Adam, gradient clipping,
regularisers and `torch.set_num_threads`.

This file is the command line only: `benchmarks/measure.py` holds how things are measured (worker
processes, peak RSS, the matmul probe, timed steps), `benchmarks/fuxictr_bridge.py` our data and
configs in FuxiCTR's formats, `benchmarks/parts/<part>.py` each part and `benchmarks/report.py` the
markdown.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import get_args

import torch

from benchmarks.measure import REPO, Workers, load_average, machine
from benchmarks.parts.scaling import WUKONG_LADDER
from benchmarks.report import PARTS, write_report
from ctrbench.training.device import Precision
from model_zoo import TABLE2_MODELS

DEFAULT_RESULTS = REPO / "results" / "perf"
DEFAULT_REPORT = REPO / "benchmarks" / "perf.md"


def _int_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=[*PARTS, "report"])
    parser.add_argument("--fxvenv", type=Path, help="FuxiCTR's virtual environment (its bin/python runs their side)")
    parser.add_argument("--fuxictr-zoo", type=Path,
                        help="folder with FuxiCTR's AFN.py, AutoInt.py, DCNv2.py, DLRM.py, FinalMLP.py, MaskNet.py, "
                             "WuKong.py, xDeepFM.py")
    parser.add_argument("--frappe", type=Path, default=Path("data/frappe"), help="processed Frappe")
    parser.add_argument("--criteo-like", type=Path, help="processed generated Criteo-format dataset")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ctrbench_perf"), help="scratch folder")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where each part's JSON goes")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="markdown report to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(TABLE2_MODELS))
    parser.add_argument("--precisions", default="fp32,bf16", help="train: ctrbench's train.precision values to time")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing starts")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--converge-seeds", type=int, default=3, help="converge: seeds per library and precision")
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions for the AUC timing")
    parser.add_argument("--scaling-steps", type=int, default=5, help="timed steps per scaling point")
    parser.add_argument("--scaling-batch", type=int, default=256, help="batch size of the size and feature sweeps")
    parser.add_argument("--ladder-points", type=int, default=len(WUKONG_LADDER), help="first N sizes of the ladder")
    parser.add_argument("--batch-sizes", type=_int_list, default=[64, 256, 1024], help="batch sweep, e.g. 64,256")
    parser.add_argument("--feature-counts", type=_int_list, default=[10, 39, 100], help="feature sweep, e.g. 10,39")
    parser.add_argument("--concurrent", action="store_true",
                        help="train: run all jobs of a repeat at once (for a machine whose load you cannot control)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    args.command = command
    args.results.mkdir(parents=True, exist_ok=True)
    if args.part != "report":
        args.work.mkdir(parents=True, exist_ok=True)
        args.models = [m.strip() for m in args.models.split(",")]
        args.precisions = [p.strip() for p in args.precisions.split(",")]
        if unknown := set(args.precisions) - set(get_args(Precision)):
            parser.error(f"--precisions: unknown {sorted(unknown)}; expected a comma-separated list of "
                         f"{', '.join(get_args(Precision))}")
        args.datasets = [("frappe", args.frappe)] + ([("criteo_like", args.criteo_like)] if args.criteo_like else [])
        workers = Workers(args.fxvenv, args.threads)
        torch.set_num_threads(args.threads)
        load_before = load_average()
        started = time.time()
        result = import_module(f"benchmarks.parts.{args.part}").run(args, workers)
        result.update(command=command,
                      machine=machine(args.threads), load_before=load_before, load_after=load_average(),
                      started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                      minutes=(time.time() - started) / 60)
        (args.results / f"{args.part}.json").write_text(json.dumps(result, indent=1))
    write_report(args.results, args.report, command)
    print(f"wrote {args.report}", file=sys.stderr)


if __name__ == "__main__":
    main()
