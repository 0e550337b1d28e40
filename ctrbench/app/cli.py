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

from ctrbench.app.parser import build_parser, dataset_arg, models_arg, run_options
from ctrbench.core.console import console, stdout
from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import atomic_write_text
from ctrbench.data.datasets import DatasetConfig, dataset_names, load_dataset_config, load_feature_map, processed_dir
from ctrbench.data.features import FEATURE_MAP_FILE, FeatureMap
from ctrbench.store.record import BASE_SEED, RunRecord
from ctrbench.store.results import ResultsStore


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
        options = PreprocessOptions(skip_bad_rows=args.skip_bad_rows, release=args.release, jobs=args.jobs,
                                    shuffle_seed=config.shuffle_train)
        fmap = PREPROCESSORS[args.dataset](args.raw, out, options)
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

        fmap = load_feature_map(dataset_arg(args.dataset), args.data_dir)
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
            dataset_arg(args.dataset)
        if args.command in ("bench", "scale"):
            args.models = models_arg(args.models)
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
