"""The `ctrbench` command line.

    ctrbench preprocess DATASET --raw DIR --out DIR     raw files -> parquet splits + feature map
    ctrbench train --model M --dataset D               one run, recorded in the results store
    ctrbench bench --dataset D [--models all|m1,m2]    models x seeds, resumable
    ctrbench scale --dataset D --models M1,M2          the scaling study: each model's ladder x seeds
    ctrbench tune --model M --dataset D --space S      grid search, best config by validation AUC
    ctrbench leaderboard                               markdown tables + plots from the results store
    ctrbench models [--dataset D --flops]              the model zoo (and Table 3-style sizes)
    ctrbench datasets                                  the dataset configs and what is processed
    ctrbench datasets --sources                        where each release is published, its files' md5s

Bad input (a `CtrbenchError`, an unreadable file, a bad argument) ends with one line `error: ...`
naming what is wrong and exit status 2; `--debug` shows the traceback instead. Ctrl-C (SIGINT) and
SIGTERM stop the same clean way: the work in progress is abandoned, everything finished stays, one
line says how to resume, and the exit status is 128 + the signal number (130, 143).
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ctrbench.app.options import RunOptions
from ctrbench.core.config import parse_overrides
from ctrbench.core.console import console, stdout
from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.core.io import atomic_write_text
from ctrbench.data.datasets import (DEFAULT_DATA_DIR, DatasetConfig, dataset_names, load_dataset_config,
                                    load_feature_map, processed_dir)
from ctrbench.data.features import FEATURE_MAP_FILE, FeatureMap
from ctrbench.store.record import BASE_SEED, RunRecord
from ctrbench.store.results import DEFAULT_RESULTS, ResultsStore


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _models_arg(value: str) -> list[str]:
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


def _dataset_arg(value: str) -> str:
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
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help=f"number of seeds per model ({BASE_SEED}, {BASE_SEED + 1}, ...)")
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
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help=f"seeds per grid point ({BASE_SEED}, {BASE_SEED + 1}, ...)")
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
    p.add_argument("--seeds", type=_positive_int, default=1, help=f"seeds per rung ({BASE_SEED}, {BASE_SEED + 1}, ...)")
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


def cmd_preprocess(args: argparse.Namespace) -> None:
    config = load_dataset_config(args.dataset)
    out = args.out or processed_dir(args.dataset, args.data_dir)
    if config.generator is not None:
        from ctrbench.data.datasets import generate

        fmap = generate(config, out)
    else:
        from preprocess import PREPROCESSORS
        from preprocess.options import PreprocessOptions

        if args.dataset not in PREPROCESSORS:
            raise CtrbenchError(f"no preprocessor for {args.dataset!r} yet; available: {sorted(PREPROCESSORS)}")
        if args.raw is None:
            raise CtrbenchError(f"preprocess {args.dataset}: --raw DIR is required (the directory of raw files)")
        fmap = PREPROCESSORS[args.dataset](args.raw, out, PreprocessOptions(skip_bad_rows=args.skip_bad_rows,
                                                                          release=args.release, jobs=args.jobs))
        _check_releases(config, args.raw, fmap)
    rows = ", ".join(f"{s} {info.rows:,}" for s, info in fmap.splits.items())
    console.print(f"wrote {out} ({rows} rows; {len(fmap.features)} features)", highlight=False)


def _check_releases(config: DatasetConfig, raw_dir: Path, fmap: FeatureMap) -> None:
    """Compare the inputs whose names have a published md5 with the dataset's published releases (a
    separate read of those files only), say which release file each is, and record it in the feature map
    (`source.inputs.FILE.md5` and `.matches`, null when it matches none). A mismatch is only a warning."""
    from ctrbench.data.releases import check_inputs, names_with_md5
    from preprocess.inputs import progress

    inputs = fmap.source.get("inputs", {})
    names = names_with_md5(config.releases) & set(inputs)
    if not names:
        return
    with progress(f"{config.name}: md5 of {len(names)} input file(s) with published checksums"):
        checks = check_inputs(config.releases, raw_dir, list(names))
    for check in checks:
        console.print(check.message(config.name), highlight=False, style=None if check.matches else "yellow")
        inputs[check.file].update(md5=check.md5, matches=check.matches)
    fmap.save(fmap.root)


def _print_results(records: list[RunRecord]) -> None:
    table = Table(title="Results (test split)")
    grouped = any(r.metric("test", "gauc") is not None for r in records)  # the dataset groups rows by user
    for column in ("model", "seeds", "test AUC", *(["test gAUC"] if grouped else []), "test LogLoss", "MFLOP/ex",
                   "samples/s"):
        table.add_column(column)
    by_model: dict[str, list[RunRecord]] = {}
    for record in records:
        by_model.setdefault(record.model, []).append(record)
    for model, runs in by_model.items():
        ok = [r for r in runs if r.ok]
        auc = statistics.fmean(r.test.auc for r in ok) if ok else None
        logloss = statistics.fmean(r.test.logloss for r in ok) if ok else None
        gauc = [f"{statistics.fmean(r.test.gauc for r in ok):.4f}" if ok else "-"] if grouped else []
        table.add_row(
            runs[0].display_name, str(len(runs)),
            f"{auc:.4f}" if ok else "diverged", *gauc, f"{logloss:.4f}" if ok else "-",
            f"{runs[0].mflop_per_example:.3f}", f"{statistics.fmean(r.samples_per_second for r in runs):,.0f}",
        )
    stdout.print(table)


def cmd_train(args: argparse.Namespace) -> None:
    from ctrbench.app.runner import DatasetSplits, execute, resolve_spec
    from ctrbench.training.device import pick_device

    options = run_options(args)
    spec = resolve_spec(args.model, args.dataset, args.seed, options.config_dir, options.run_overrides())
    store = ResultsStore(options.results_path)  # a bad --results stops here, not after training
    data = DatasetSplits.open(args.dataset, options.data_dir, options.stream)
    record, test_logits = execute(spec, data, pick_device(options.device), label=args.model, progress=options.progress,
                                  checkpoint_path=args.checkpoint, command=options.command)
    store.append(record, test_logits)
    _print_results([record])


def cmd_bench(args: argparse.Namespace) -> None:
    from ctrbench.app.runner import bench, duration, in_workers

    started = time.time()
    arguments = dict(dataset=args.dataset, models=args.models, seeds=args.seeds, options=run_options(args))
    if args.protocol is not None:
        from ctrbench.app.protocol import bench_protocol
        from ctrbench.store.protocol_spec import load_protocol

        arguments["protocol"] = args.protocol
        load_protocol(args.protocol, args.config_dir)  # a bad name stops before any worker starts
        target = bench_protocol
    else:
        target = bench
    if args.workers > 1:
        in_workers(args.workers, target, **arguments)
    outcome = target(**arguments)
    if args.protocol is not None:
        plans, records = outcome
        _print_protocol(plans, args.protocol)
    else:
        records = outcome
    _print_results(records)
    console.print(f"benchmark wall time {duration(time.time() - started)}; results stored in {args.results}; "
                  f"`ctrbench leaderboard --results {args.results}` writes the markdown tables", highlight=False)


def _print_protocol(plans, protocol: str) -> None:
    table = Table(title=f"Protocol {protocol!r}: configs tried per model, chosen on validation AUC (seed {BASE_SEED})")
    for column in ("model", "configs tried", "chosen embedding dim", "chosen config"):
        table.add_column(column)
    for plan in plans:
        winner = plan.winner
        table.add_row(plan.model, str(len(plan.tried)), str(winner.model_params.get("embedding_dim", "-")),
                      plan.winner_hash)
    stdout.print(table)


def cmd_scale(args: argparse.Namespace) -> None:
    from ctrbench.app.runner import duration, in_workers
    from ctrbench.app.scaling import scale

    started = time.time()
    arguments = dict(dataset=args.dataset, models=args.models, points=args.points, seeds=args.seeds,
                     options=run_options(args))
    if args.workers > 1:
        in_workers(args.workers, scale, **arguments)
    records = scale(**arguments)
    _print_results(records)
    console.print(f"scaling runs took {duration(time.time() - started)}; `ctrbench leaderboard --results {args.results}` "
                  "fits and reports them", highlight=False)


def cmd_tune(args: argparse.Namespace) -> None:
    from ctrbench.app.tuner import SECTIONS, best_entry_yaml, tune

    tuned = tune(args.model, args.dataset, args.space, seeds=args.seeds, options=run_options(args))
    varied = [(section, key) for section in SECTIONS for key, values in tuned.axes[section].items() if len(values) > 1]
    table = Table(title=f"{args.model} on {args.dataset}: {len(tuned.ranked)} grid points, best validation AUC first")
    for column in ("config", *(key for _, key in varied), "seeds", "valid AUC", "test AUC"):
        table.add_column(column)
    for result in tuned.ranked:
        valid, test = result.metric("valid", "auc"), result.metric("test", "auc")
        table.add_row(
            result.config_hash, *(str(getattr(result.config, section)[key]) for section, key in varied),
            f"{len(result.ok)}" + (f" + {result.diverged} diverged" if result.diverged else ""),
            f"{statistics.fmean(valid):.4f}" if valid else "LossX", f"{statistics.fmean(test):.4f}" if test else "LossX",
        )
    stdout.print(table)
    entry = best_entry_yaml(tuned, args.command_line)
    out = args.out or args.results.parent / "tuned" / f"{args.model}_{args.dataset}.yaml"
    atomic_write_text(out, entry)
    stdout.print(entry, highlight=False, markup=False, emoji=False)
    console.print(f"wrote {out}", highlight=False)


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from ctrbench.report.leaderboard import write_leaderboards

    store = ResultsStore(args.results)
    records = store.records()
    if not records:
        raise CtrbenchError(f"{args.results}: no results yet; run `ctrbench bench --dataset D` first")
    out = args.out or args.results.parent / "leaderboard"
    for path in write_leaderboards(records, out, args.command_line, store.predictions, _test_labels(args.data_dir)):
        console.print(f"wrote {path}", highlight=False)


def _test_labels(data_dir: Path):
    """(dataset, data hash) -> the test labels of that build, read from the processed data under
    `data_dir` (None when that build is not there: the leaderboard then shows no significance)."""
    def labels(dataset: str, data_hash: str):
        directory = processed_dir(dataset, data_dir)
        if not (directory / FEATURE_MAP_FILE).is_file():
            return None
        fmap = FeatureMap.load(directory)
        if fmap.content_hash != data_hash or "test" not in fmap.splits:
            return None
        from ctrbench.data.batches import load_labels

        return load_labels(fmap, "test")
    return labels


def cmd_models(args: argparse.Namespace) -> None:
    from model_zoo import MODELS

    if args.flops and not args.dataset:
        raise CtrbenchError("models --flops needs --dataset D to build each model for that dataset")
    table = Table(title=f"Models{f' on {args.dataset}' if args.dataset else ''}")
    table.add_column("name")
    table.add_column("paper name")
    if args.flops:
        from ctrbench.app.runner import build_model, resolve_spec
        from ctrbench.data.batches import load_split
        from ctrbench.nn.flops import model_stats
        from ctrbench.report.paper import PaperNumbers

        fmap = load_feature_map(_dataset_arg(args.dataset), args.data_dir)
        batch = load_split(fmap, "valid").slice(0, 256)
        paper = PaperNumbers.load().table3
        paper_dataset = load_dataset_config(args.dataset).display_name
        for column in ("dense params", "embedding params", "params", "MFLOP/example", "paper params", "paper MFLOP"):
            table.add_column(column, justify="right")
        table.caption = ("MFLOP/example: forward pass. paper: Table 3 of the Wukong paper, whose MFLOP count "
                         "forward + backward (3x forward)")
    else:
        table.add_column("description")
    for name, cls in sorted(MODELS.items()):
        if args.flops:
            spec = resolve_spec(name, args.dataset, 0, args.config_dir)
            stats = model_stats(build_model(spec, fmap), batch)
            paper_params, paper_mflop = paper.get((paper_dataset, cls.display_name), (None, None))
            table.add_row(name, cls.display_name, f"{stats.dense_params:,}", f"{stats.embedding_params:,}",
                          f"{stats.params:,}", f"{stats.mflop_per_example:.3f}",
                          "-" if paper_params is None else f"{paper_params:,}",
                          "-" if paper_mflop is None else f"{paper_mflop:.2f}")
        else:
            table.add_row(name, cls.display_name, model_summary(cls))
    # Piped output defaults to 80 columns, which would cut the size columns short.
    Console(soft_wrap=True, width=max(stdout.width, 120)).print(table)


def model_summary(cls: type) -> str:
    """The first paragraph of a model's docstring on one line (whole sentences; the table wraps it)."""
    return " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())


def cmd_datasets(args: argparse.Namespace) -> None:
    if args.sources:
        return _print_sources()
    table = Table(title=f"Datasets (processed data under {args.data_dir})")
    for column in ("name", "paper name", "processed rows (train/valid/test)", "description"):
        table.add_column(column, no_wrap=column != "description")  # row counts stay on one line
    for name in dataset_names():
        config = load_dataset_config(name)
        directory = processed_dir(name, args.data_dir)
        rows = "not processed"
        if (directory / FEATURE_MAP_FILE).is_file():
            fmap = FeatureMap.load(directory)
            rows = " / ".join(f"{info.rows:,}" for info in fmap.splits.values())
        table.add_row(name, config.display_name, rows, config.description)
    stdout.print(table)


def _print_sources() -> None:
    """Per dataset, each release's files and their published md5s (a table), then where each release is
    published and where its md5s were read (plain lines, so that the links stay whole)."""
    table = Table(title="Published releases: the md5 of each file as its publisher states it")
    for column in ("dataset", "release", "read as", "file", "md5", "rows"):
        table.add_column(column, no_wrap=column in ("md5", "rows", "read as"),
                         justify="right" if column == "rows" else "left")
    pages = []
    for name in dataset_names():
        for r, release in enumerate(load_dataset_config(name).releases):
            read_as = f"--release {release.read_as}" if release.read_as else "not read yet"
            for i, file in enumerate(release.files):
                first = i == 0
                table.add_row(name if r == 0 and first else "", release.name if first else "", read_as if first else "",
                              file.name, file.md5 or "none published", "" if file.rows is None else f"{file.rows:,}",
                              end_section=i == len(release.files) - 1)
            read_from = f" (md5s read from {release.checksums_from})" if release.checksums_from else ""
            pages.append(f"{name}: {release.name}: {release.url or 'no download page named in our sources'}{read_from}")
    Console(soft_wrap=True, width=max(stdout.width, 140)).print(table)
    stdout.print("Where each release is published:\n" + "\n".join(pages), highlight=False, markup=False)


COMMANDS = {
    "preprocess": cmd_preprocess, "train": cmd_train, "bench": cmd_bench, "scale": cmd_scale, "tune": cmd_tune,
    "leaderboard": cmd_leaderboard,
    "models": cmd_models, "datasets": cmd_datasets,
}


def _after_interrupt(args: argparse.Namespace) -> str:
    """What an interrupted command leaves behind, and how to carry on."""
    if args.command in ("bench", "scale", "tune"):
        return (f"every finished run is kept in {args.results}; rerun the same command to resume (the interrupted "
                "run restarts from its last finished epoch)")
    if args.command == "train":
        if args.checkpoint is not None:
            return f"nothing was recorded; rerun the same command to resume from the last epoch saved in {args.checkpoint}"
        return "nothing was recorded; pass --checkpoint FILE to make a long run resumable"
    if args.command == "preprocess":
        return "no dataset was written (datasets are written to a temporary directory and renamed when complete)"
    return "nothing was written"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is so that it unwinds like Ctrl-C."""


def _raise_terminated(signum: int, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["ctrbench", *argv])  # recorded with each run and in each leaderboard
    # SIGTERM (a job scheduler, `kill`) stops like Ctrl-C: KeyboardInterrupt unwinds every `with` and
    # `finally` on the way out, so locks are released and no temporary file is left in place.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        if getattr(args, "dataset", None) and args.command != "models":
            _dataset_arg(args.dataset)
        if args.command in ("bench", "scale"):
            args.models = _models_arg(args.models)
        COMMANDS[args.command](args)
    except (CtrbenchError, OSError) as exc:
        if args.debug:
            raise
        unreadable = isinstance(exc, OSError) and exc.filename is not None
        print(f"error: {f'{exc.filename}: {exc.strerror or exc}' if unreadable else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stopped_by = signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT
        print(f"interrupted ({stopped_by.name}): {_after_interrupt(args)}", file=sys.stderr)
        return 128 + stopped_by.value
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
