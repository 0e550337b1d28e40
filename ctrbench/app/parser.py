"""The `ctrbench` command line's arguments: the parser of every command and the argument types.

`build_parser` gives the whole parser; `run_options` turns a training command's arguments into the
`RunOptions` the runner takes. The commands themselves are in `ctrbench.app.cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ctrbench.app.options import RunOptions
from ctrbench.core.config import parse_overrides
from ctrbench.core.errors import unknown_name
from ctrbench.data.datasets import DEFAULT_DATA_DIR, dataset_names
from ctrbench.store.record import BASE_SEED
from ctrbench.store.results import DEFAULT_RESULTS


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def models_arg(value: str) -> list[str]:
    from model_zoo import MODELS, TABLE2_MODELS

    if value == "all":
        return list(TABLE2_MODELS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in MODELS:
            raise unknown_name("model", name, MODELS)
    return names


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


def dataset_arg(value: str) -> str:
    if value not in dataset_names():
        raise unknown_name("dataset", value, dataset_names())
    return value


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that trains (`train`, `bench`, `scale`, `tune`): `run_options`."""
    parser.add_argument("--dataset", required=True, help="dataset name (see `ctrbench datasets`)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="where processed datasets live (default: $CTRBENCH_DATA_DIR or ./data)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results store (JSON Lines)")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="directory of <model>.yaml configs (default: model_zoo/configs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, e.g. --set train.epochs=5 --set model.embedding_dim=32")
    parser.add_argument("--quick", action="store_true", help="cap training at 3 epochs (smoke test)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    memory = parser.add_mutually_exclusive_group()
    memory.add_argument("--stream", dest="stream", action="store_const", const=True, default=None,
                        help="stream every split from its parquet files (default: each split is streamed only when it "
                             "does not fit the memory budget, half the available memory or $CTRBENCH_MEMORY_BUDGET)")
    memory.add_argument("--in-memory", dest="stream", action="store_const", const=False,
                        help="load every split into memory, whatever its size")


def _add_seeds_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seeds", type=_positive_int, default=1, help=f"{what} ({BASE_SEED}, {BASE_SEED + 1}, ...)")


def _add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="train this many runs at once in separate processes, the CPU cores split between them")


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="where each run saves its state after every epoch, so that an interrupted run "
                             "resumes from its last finished epoch (default: RESULTS_DIR/checkpoints)")


def run_options(args: argparse.Namespace) -> RunOptions:
    """The `RunOptions` of a training command's parsed arguments (`_add_run_options`, `_add_plan_options`,
    `_add_workers_option`): with several workers, no process shows a progress bar."""
    return RunOptions(data_dir=args.data_dir, results_path=args.results, config_dir=args.config_dir,
                      overrides=parse_overrides(args.overrides), quick=args.quick, device=args.device,
                      progress=not args.no_progress and getattr(args, "workers", 1) == 1, stream=args.stream,
                      command=args.command_line, checkpoint_dir=getattr(args, "checkpoint_dir", None))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ctrbench", description="Benchmark CTR models (Wukong and baselines).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("preprocess", help="convert a dataset's raw files to parquet splits + feature map",
                            description="Convert a dataset's raw release (or BARS x1 release) to the processed "
                                        "format: train/valid/test parquet files and feature_map.json.")
    p.add_argument("dataset", help="dataset name (see `ctrbench datasets`)")
    p.add_argument("--raw", type=Path, help="directory holding the raw files (not needed for synthetic)")
    p.add_argument("--out", type=Path, help="output directory (default: DATA_DIR/DATASET)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="default parent of --out")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="count and skip malformed rows instead of stopping at the first one")
    p.add_argument("--release", help="which release to read when DIR holds several (default: the first found, "
                                     "in the order the dataset's converter lists them)")
    p.add_argument("--jobs", type=int, default=1, help="input files converted at once (criteo: day files; default 1)")

    p = commands.add_parser("train", help="train one model on one dataset and record the result",
                            description="Train one model on one dataset with its config for that dataset, "
                                        "evaluate on the test split, and append the run to the results store.")
    p.add_argument("--model", required=True, help="model name (see `ctrbench models`)")
    p.add_argument("--seed", type=int, default=BASE_SEED, help=f"random seed (default {BASE_SEED})")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="save the training state here after every epoch and resume from it if it exists")
    _add_run_options(p)

    p = commands.add_parser("bench", help="train chosen models x seeds on a dataset (resumable)",
                            description="Train every chosen model for every seed on one dataset. Finished runs "
                                        "are appended to the results store; runs already there are skipped and a "
                                        "run killed mid-way restarts from its last finished epoch, so an "
                                        "interrupted benchmark resumes where it stopped.")
    p.add_argument("--models", default="all", help="'all' (the paper's eight) or a comma-separated list")
    _add_seeds_option(p, "number of seeds per model")
    p.add_argument("--protocol", default=None,
                   help="give every model the same tuning budget before its seeds: a protocol of "
                        "model_zoo/configs/protocol.yaml, e.g. 'paper' (embedding dim: the dataset's default or 128, "
                        "then the same number of search-space points per model, chosen on validation AUC)")
    _add_workers_option(p)
    _add_plan_options(p)
    _add_run_options(p)

    p = commands.add_parser("tune", help="grid search over a YAML space; keeps the best config by validation AUC",
                            description="Run every point of a grid search space (BARS tuner convention: under "
                                        "tuner_space: model: / train:, a list is a grid axis, anything else is "
                                        "fixed; a list-valued hyperparameter is a list of lists) for every seed. "
                                        "Each run goes to the results store, so tuning resumes like bench. Prints "
                                        "the points ranked by mean validation AUC and writes the best as a "
                                        "ready-to-paste entry for model_zoo/configs/MODEL.yaml.")
    p.add_argument("--model", required=True, help="model name (see `ctrbench models`)")
    p.add_argument("--space", required=True, type=Path, help="YAML search space file")
    _add_seeds_option(p, "seeds per grid point")
    p.add_argument("--out", type=Path, default=None,
                   help="where to write the best config entry (default: RESULTS_DIR/tuned/MODEL_DATASET.yaml)")
    _add_plan_options(p)
    _add_run_options(p)

    p = commands.add_parser("scale", help="the scaling study: each model's ladder of configs x seeds (resumable)",
                            description="Train each model's ladder on a dataset (the `ladder:` key of its entry in "
                                        "model_zoo/configs/MODEL.yaml: configs growing its compute, smallest first) "
                                        "for every seed. Every (rung, seed) is an ordinary run in the results store; "
                                        "`ctrbench leaderboard` fits and reports quality against compute.")
    p.add_argument("--models", required=True, help="comma-separated model names, e.g. wukong,dlrm,dcnv2")
    p.add_argument("--points", type=_positive_int, default=None, help="the first N rungs of each ladder (default: all)")
    _add_seeds_option(p, "seeds per rung")
    _add_workers_option(p)
    _add_plan_options(p)
    _add_run_options(p)

    p = commands.add_parser("leaderboard", help="write markdown leaderboards and plots from the results store",
                            description="Regenerate Table 2 (test AUC / LogLoss), Table 3 (params / MFLOP), a "
                                        "page and a test-AUC-vs-MFLOP plot per dataset, ours next to the paper's.")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results store (JSON Lines)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="processed datasets, whose test labels the significance tests read (default: "
                        "$CTRBENCH_DATA_DIR or ./data); a dataset not processed here shows no significance")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: RESULTS_DIR/leaderboard, beside the results; the published "
                        "leaderboards/ is written with --results leaderboards/results.jsonl --out leaderboards)")

    p = commands.add_parser("models", help="list the model zoo",
                            description="List the models; with --dataset and --flops, their size and compute.")
    p.add_argument("--dataset", help="build each model for this dataset")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--config-dir", type=Path, default=None)
    p.add_argument("--flops", action="store_true", help="print params and MFLOP per example (needs --dataset)")

    p = commands.add_parser("datasets", help="list the datasets and whether they are processed",
                            description="List the dataset configs and the processed datasets under --data-dir.")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--sources", action="store_true",
                   help="where each release is published and the md5s its files should have (check a download)")
    return parser
