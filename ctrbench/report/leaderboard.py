"""Leaderboards generated from the results store, next to the Wukong paper's published numbers.

`write_leaderboards` writes into the output directory:

* `table2.md`: test AUC and LogLoss of every model on every dataset, ours next to the paper's Table 2
  with the difference; datasets we have no runs on show the paper's numbers only, marked as such;
* `table3.md`: parameters and MFLOP per example, ours next to the paper's Table 3, with our training
  throughput and the device it was measured on;
* for each dataset with runs, `<dataset>.md` (both tables for that dataset, plus validation AUC, best
  epoch, configs tried and the chosen config's hash; on the datasets with user groups, our test gAUC
  and BARS's reported test AUC and gAUC, `ctrbench.report.bars_reference`) and `<dataset>_auc_vs_mflop.png` (test AUC
  against MFLOP per example, ours with the seeds' std as error bars, and the paper's).

Only runs on the current build of each dataset count: the processed data (content hash) of its most
recently finished run; runs on another build are left out, and the tables say how many.

"Ours" is always the config `results.select_best` chooses for the (dataset, model): the best mean
validation AUC, never test (`ctrbench.report.boards` builds these per dataset). Metrics are mean ± sample std over that config's seeds; LossX marks a
config whose every seed diverged. The best value per dataset is in bold, ours and the paper's
separately. Each file names the leaderboard command and the distinct commands that made its runs.
Every file is a pure function of the store and that command (no timestamps; PNGs are written without
metadata), so regenerating gives byte-identical files.
"""

from __future__ import annotations

import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from ctrbench.core.io import atomic_write_bytes, atomic_write_text
from ctrbench.data.datasets import REPO_ROOT
from ctrbench.report.bars_reference import BarsResult, load_bars_reference
from ctrbench.report.boards import (Budget, DatasetBoard, Labels, Logits, Row, build_boards, current_build,
                                    plot_points, significance)
from ctrbench.report.paper import PAPER_SOURCE, PaperNumbers
from ctrbench.report.plots import auc_vs_mflop_png
from ctrbench.report.scaling_report import is_scaling_run, scaling_markdown, scaling_png, studies
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ConfigResult, format_mean_std, mean_std

DASH = "–"


def _number(value: float | None) -> str:
    return DASH if value is None else f"{value:.4f}"


def _mflop(value: float | None) -> str:
    """Two decimals as in the paper's Table 3; two significant digits for a count that would round to 0.00."""
    if value is None:
        return DASH
    return f"{value:.2g}" if 0 < value < 0.005 else f"{value:.2f}"


def _delta(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None:
        return DASH
    return f"{round(ours - paper, 4) + 0.0:+.4f}"  # + 0.0 turns a rounded -0.0 into 0.0


def _bold_best(cells: list[str], values: list[float | None], pick: Callable[[Iterable[float]], float]) -> list[str]:
    """Bold the cells whose value, as shown (4 decimals), is the best of the column."""
    shown = [None if v is None else round(v, 4) for v in values]
    present = [v for v in shown if v is not None]
    best = pick(present) if present else None
    return [f"**{cell}**" if value is not None and value == best else cell for cell, value in zip(cells, shown)]


def _ours_metric(row: Row, metric: str) -> str:
    if row.ours is None:
        return "not run"
    values = row.ours.metric("test", metric)
    tied = TIED if metric == "auc" and row.verdict is not None and row.verdict.tied else ""
    return (format_mean_std(values) + tied) if values else "LossX"


def _device(run: RunRecord) -> str:
    """A GPU's name; a CPU's name and thread count, which CPU throughput depends on; and for a
    distributed run the number of processes (one per GPU, or per CPU process with gloo)."""
    device, threads = run.device, run.device.threads
    shown = device.name
    if device.type == "cpu" and threads:
        shown += f", {threads} thread{'s' if threads > 1 else ''}"
    processes = run.distributed.world_size if run.distributed else 0
    return shown + (f", {processes} process{'es' if processes > 1 else ''}" if processes else "")


def _seeds(row: Row) -> str:
    if row.ours is None:
        return DASH
    ok = len(row.ours.ok)
    return f"{ok} + {row.ours.diverged} LossX" if row.ours.diverged else str(ok)


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# Options that never change what a run computes (where the processed data and checkpoints live, how
# progress is shown, how many processes share the work): option -> whether it takes a value.
PLACE_OPTIONS = {"--data-dir": True, "--checkpoint-dir": True, "--no-progress": False, "--workers": True}


def portable_command(command: str) -> str:
    """A command as a user would type it: the options above dropped, absolute paths made relative to the
    repository (a path outside it keeps its file name only); every option that changes a result kept."""
    words, kept = shlex.split(command), []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        name = word.partition("=")[0]
        if name in PLACE_OPTIONS:
            skip = PLACE_OPTIONS[name] and "=" not in word
            continue
        if word.startswith("/"):
            path = Path(word)
            word = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else path.name
        kept.append(word)
    return shlex.join(kept)


def _provenance(command: str, boards: list[DatasetBoard]) -> list[str]:
    lines = [f"Generated by `{portable_command(command)}` from the runs made by:", ""]
    lines += [f"- `{c}`" for c in sorted({portable_command(c) for board in boards for c in board.commands})] + [""]
    for board in boards:
        if board.other_builds:
            runs = f"{board.other_builds} run{'s' if board.other_builds > 1 else ''}"
            lines += [f"Left out: {runs} on {board.display} made on another build of its data "
                      "(a different content hash) than its latest run.", ""]
    return lines


def _has_groups(board: DatasetBoard) -> bool:
    """Whether our runs on the dataset report gAUC (a dataset with users, as BARS's sequential ones)."""
    return any(r.ours is not None and r.ours.metric("test", "gauc") for r in board.rows)


def _gauc_cells(board: DatasetBoard) -> list[str]:
    """Our test gAUC per model (mean ± std over seeds), the best in bold; – where a model has none."""
    cells = [format_mean_std(r.ours.metric("test", "gauc")) if r.ours and r.ours.metric("test", "gauc") else DASH
             for r in board.rows]
    return _bold_best(cells, [r.mean("gauc") for r in board.rows], max)


def _metric_columns(board: DatasetBoard, gauc: bool = False) -> dict[str, list[str]]:
    """The Table 2 columns of one dataset, best values in bold; with `gauc`, our test gAUC too (the paper
    reports none)."""
    rows = board.rows
    columns = {
        "Seeds": [_seeds(r) for r in rows],
        "AUC (ours)": _bold_best([_ours_metric(r, "auc") for r in rows], [r.mean("auc") for r in rows], max),
        "AUC (paper)": _bold_best([_number(r.paper_auc) for r in rows], [r.paper_auc for r in rows], max),
        "Δ AUC": [_delta(r.mean("auc"), r.paper_auc) for r in rows],
        "LogLoss (ours)": _bold_best([_ours_metric(r, "logloss") for r in rows], [r.mean("logloss") for r in rows], min),
        "LogLoss (paper)": _bold_best([_number(r.paper_logloss) for r in rows], [r.paper_logloss for r in rows], min),
        "Δ LogLoss": [_delta(r.mean("logloss"), r.paper_logloss) for r in rows],
        **({"gAUC (ours)": _gauc_cells(board)} if gauc else {}),
    }
    if board.name is None:  # the paper's numbers only
        columns = {k: v if "paper" in k else [DASH] * len(rows) for k, v in columns.items()}
    return columns


def _size_columns(board: DatasetBoard) -> dict[str, list[str]]:
    """The Table 3 columns of one dataset: size and compute, ours next to the paper's, and throughput."""
    columns: dict[str, list[str]] = defaultdict(list)
    for row in board.rows:
        result = row.ours
        runs = result.runs if result else []
        columns["Params (ours)"].append(f"{result.params:,}" if result else DASH)
        columns["Params (paper)"].append(DASH if row.paper_params is None else f"{row.paper_params:,}")
        columns["Embedding / dense params (ours)"].append(
            f"{result.first.embedding_params:,} / {result.first.dense_params:,}" if result else DASH)
        columns["MFLOP/example (ours)"].append(_mflop(result.first.mflop_per_example if result else None))
        columns["MFLOP/example (paper)"].append(_mflop(row.paper_mflop))
        speeds = [r.samples_per_second for r in runs if r.samples_per_second is not None]
        columns["Train samples/s (ours)"].append(f"{mean_std(speeds)[0]:,.0f}" if speeds else DASH)
        columns["Device (ours)"].append(", ".join(sorted({_device(r) for r in runs})) or DASH)
    return columns


def _grouped_table(boards: list[DatasetBoard], columns_of: Callable[[DatasetBoard], dict[str, list[str]]]) -> list[str]:
    """One table over all datasets: the dataset named on its first row, paper-only datasets marked."""
    header, rows = ["Dataset", "Model", *columns_of(boards[0])], []
    for board in boards:
        columns = columns_of(board)
        dataset = f"[{board.display}]({board.name}.md)" if board.name else f"{board.display} (paper only)"
        for i, row in enumerate(board.rows):
            rows.append([dataset if i == 0 else "", row.model, *(cells[i] for cells in columns.values())])
    return _markdown(header, rows)


def _dataset_table(board: DatasetBoard, columns: dict[str, list[str]]) -> list[str]:
    return _markdown(["Model", *columns], [[row.model, *(cells[i] for cells in columns.values())]
                                           for i, row in enumerate(board.rows)])


TIED = " ≈"
SELECTION_NOTE = ("Ours: the config with the best mean validation AUC for each (dataset, model), never chosen on test; "
                  "mean ± sample std over its seeds. LossX: every seed of that config diverged (non-finite loss). "
                  "Δ = ours − paper. Best per dataset in bold, ours and the paper's separately. "
                  f"{TIED.strip()}: not distinguishable from our best model on that dataset "
                  "(`ctrbench/core/stats.py`: it differs only if DeLong's paired test on every seed and a paired "
                  "t-test over seeds both give p < 0.05 after Holm's correction); unmarked: it differs, it shares "
                  "fewer than 2 seeds with the best (the test over seeds needs 2: the comparison stays open), or "
                  "no test predictions are stored for it.")
MFLOP_NOTE = ("MFLOP: ours count the forward pass (2 FLOPs per multiply-add, `ctrbench/nn/flops.py`); the paper's "
              "Table 3 counts forward + backward, 3x the forward pass: divide the paper's figure by 3 to compare.")


GAUC_NOTE = ("gAUC (ours): the test AUC per user averaged with the users' row counts as weights (users whose rows "
             "all have one label left out; FuxiCTR's definition, `ctrbench/core/stats.py`), on the datasets with users; "
             "the paper reports none.")


def table2_markdown(boards: list[DatasetBoard], command: str, paper_found: bool = True) -> str:
    gauc = any(map(_has_groups, boards))
    lines = [
        "# Table 2: test AUC and LogLoss, ours next to the paper's", "",
        SELECTION_NOTE + f" Paper: Zhang et al., ICML 2024, Table 2 ({PAPER_SOURCE}: `table2.csv`"
        + ("" if paper_found else ", not found when this file was generated: paper columns empty") + ")."
        + (f" {GAUC_NOTE}" if gauc else ""), "",
        *_provenance(command, boards),
        *_distributed_note(boards),
        *_grouped_table(boards, lambda board: _metric_columns(board, gauc)),
    ]
    return "\n".join(lines) + "\n"


def table3_markdown(boards: list[DatasetBoard], command: str, paper_found: bool = True) -> str:
    lines = [
        "# Table 3: model size and compute, ours next to the paper's", "",
        "Parameters are trainable parameters (embedding tables + dense layers). " + MFLOP_NOTE + " Ours: the "
        "config chosen on validation AUC as in Table 2; train samples/s is the mean over its seeds on the device "
        f"shown. Paper: Table 3 ({PAPER_SOURCE}: `table3.csv`"
        + ("" if paper_found else ", not found when this file was generated: paper columns empty") + ").", "",
        *_provenance(command, boards),
        *_distributed_note(boards),
        *_grouped_table(boards, _size_columns),
    ]
    return "\n".join(lines) + "\n"


CAPPED = "(capped)"


def _config_cell(result: ConfigResult) -> str:
    bf16 = result.config.train.get("precision") == "bf16"
    quick = any("--quick" in (r.command or "").split() for r in result.runs)
    return (f"`{result.config_hash}`" + (" bf16" if bf16 else "") + (" quick" if quick else "")
            + (" distributed" if result.distributed else ""))


DISTRIBUTED_NOTE = ("(distributed) rows: runs of the distributed track (`python -m ctrbench.distributed.train`, under "
                    "`torchrun` for several processes) with the embedding tables sharded over their processes: one "
                    "pass over the train split and no validation split, so such a row is shown beside the model's "
                    "tuned config rather than chosen against it (of several distributed configs, the one run last), "
                    "its test metrics are on the splits listed below, and it takes no part in the significance tests.")


def _distributed_note(boards: list[DatasetBoard]) -> list[str]:
    """The note and, per distributed row, its processes, evaluation splits and tables' layout; nothing
    when no board has a distributed run."""
    runs = [(board, row.ours.first) for board in boards for row in board.rows if row.ours and row.ours.distributed]
    if not runs:
        return []
    lines = [DISTRIBUTED_NOTE, ""]
    for board, run in runs:
        layout = Counter(table["type"] for tables in run.distributed.sharding.values() for table in tables.values())
        tables = ", ".join(f"{kind} {count}" for kind, count in sorted(layout.items()))
        processes = run.distributed.world_size
        lines.append(f"- {board.display}, {run.display_name or run.model} (distributed): {processes} "
                     f"process{'es' if processes > 1 else ''}, evaluated on {' + '.join(run.distributed.eval_splits)} "
                     f"({run.distributed.eval_rows:,} rows), tables: {tables}")
    return [*lines, ""]


def _runs_cell(budget: Budget) -> str:
    """Runs stored, "of" the protocol's plan while it is under way, and the cap mark."""
    runs = str(budget.runs)
    if budget.planned_runs and budget.runs < budget.planned_runs:
        runs += f" of {budget.planned_runs} planned"
    return runs + (f" {CAPPED}" if budget.cap else "")


def _hours(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def _verdict_cell(row: Row, board: DatasetBoard) -> str:
    if row.model == board.best:
        return "(best)"
    if row.verdict is None:
        return DASH
    pvalues = ", ".join(f"{p:.2g}" for p in row.verdict.delong_p)
    if not row.verdict.decided:
        return f"open: {len(row.verdict.seeds)} shared seed ({pvalues} / –)"
    return f"{'differs' if row.verdict.differs else 'tied'} ({pvalues} / {row.verdict.seed_p:.2g})"


BARS_NOTE = ("BARS: the test AUC and gAUC that BARS reports for the model on this dataset (one run of its best config, "
             "FuxiCTR 2.0.1; not measured here; `leaderboards/bars_reference.yaml` names each experiment, seed and the "
             f"file read); {DASH}: BARS has no result for it.")


def _bars_columns(board: DatasetBoard, bars: dict[tuple[str, str], BarsResult]) -> dict[str, list[str]]:
    """BARS's test AUC and gAUC beside ours, on a dataset the reference lists (grouped ones only)."""
    if not any(dataset == board.name for dataset, _ in bars):
        return {}
    quoted = [bars.get((board.name, row.model)) for row in board.rows]
    return {"Test AUC (BARS)": [_number(r.auc if r else None) for r in quoted],
            "Test gAUC (BARS)": [_number(r.gauc if r else None) for r in quoted]}


def dataset_markdown(board: DatasetBoard, command: str, bars: dict[tuple[str, str], BarsResult] | None = None) -> str:
    chosen = [r.ours if r.ours and r.ours.ok else None for r in board.rows]
    bars_columns = _bars_columns(board, bars or {})
    columns = _metric_columns(board)
    metrics = {
        "Seeds": columns.pop("Seeds"),
        "Valid AUC (ours)": [format_mean_std(c.metric("valid", "auc")) if c and c.metric("valid", "auc") else DASH
                             for c in chosen],
        **columns,
        **({"Test gAUC (ours)": _gauc_cells(board)} if _has_groups(board) else {}),
        **bars_columns,
        "Best epoch": [f"{mean_std([run.best_epoch for run in c.ok])[0]:.1f}" if c else DASH for c in chosen],
        "Configs tried": [str(r.configs_tried) if r.ours else DASH for r in board.rows],
        "Config": [_config_cell(r.ours) if r.ours else DASH for r in board.rows],
        "Runs": [_runs_cell(r.budget) if r.budget else DASH for r in board.rows],
        "Training time": [_hours(r.budget.train_hours) if r.budget else DASH for r in board.rows],
        f"vs {board.best or 'best'}: p DeLong per seed / p seeds": [_verdict_cell(r, board) for r in board.rows],
    }
    caps = [f"- {CAPPED} {r.model}: a smaller tuning budget than the others: {r.budget.cap}"
            for r in board.rows if r.budget and r.budget.cap]
    lines = [
        f"# {board.display}", "",
        SELECTION_NOTE + " Config: the hash of the chosen config (`config_hash` in the results store), marked "
        "bf16 when it trains with `train.precision: bf16` and quick when a run of it was capped by `--quick`. "
        "Runs and training time: every run stored for the model on this build of the data (all configs tried, "
        "all seeds), the cost of its tuning budget." + (f" {BARS_NOTE}" if bars_columns else ""), "",
        *_provenance(command, [board]),
        *_distributed_note([board]),
        *_dataset_table(board, metrics), "",
        *([*caps, ""] if caps else []),
        "## Size and compute", "",
        MFLOP_NOTE, "",
        *_dataset_table(board, _size_columns(board)), "",
        f"![Test AUC vs MFLOP per example on {board.display}]({board.name}_auc_vs_mflop.png)",
    ]
    return "\n".join(lines) + "\n"


def write_leaderboards(records: list[RunRecord], out_dir: str | Path, command: str,
                       predictions: Logits = lambda record: None, labels_of: Labels = lambda dataset, data_hash: None,
                       ) -> list[Path]:
    """Write the tables and plots described above, and for the runs `ctrbench scale` made the scaling
    report of each dataset (`DATASET_scaling.md` / `.png`, `ctrbench.report.scaling_report`); return the paths
    written. `predictions` gives a run's stored test logits (`ResultsStore.predictions`) and `labels_of`
    a dataset build's test labels, for the significance verdicts."""
    out_dir = Path(out_dir)
    written = []
    scaling_runs = [r for r in records if is_scaling_run(r)]
    records = [r for r in records if not is_scaling_run(r)]
    if records:
        paper, bars = PaperNumbers.load(), load_bars_reference()
        boards = build_boards(records, paper)
        for board in boards:
            significance(board, predictions, labels_of)
        for name, text in (("table2.md", table2_markdown(boards, command, paper.found)),
                           ("table3.md", table3_markdown(boards, command, paper.found))):
            atomic_write_text(out_dir / name, text)
            written.append(out_dir / name)
        for board in boards:
            if board.name is None:
                continue
            atomic_write_text(out_dir / f"{board.name}.md", dataset_markdown(board, command, bars))
            plot = out_dir / f"{board.name}_auc_vs_mflop.png"
            atomic_write_bytes(plot, auc_vs_mflop_png(board.display, *plot_points(board)))
            written += [out_dir / f"{board.name}.md", plot]
    scaling_runs, _ = current_build(scaling_runs)
    for dataset, models in studies(scaling_runs).items():
        runs = [r for r in scaling_runs if r.dataset == dataset]
        bayes = next((r.bayes for r in runs if r.bayes), None)
        commands = sorted({portable_command(r.command or "(command not recorded)") for r in runs})
        page, plot = out_dir / f"{dataset}_scaling.md", out_dir / f"{dataset}_scaling.png"
        atomic_write_text(page, scaling_markdown(dataset, models, bayes, portable_command(command), commands))
        atomic_write_bytes(plot, scaling_png(dataset, models, bayes))
        written += [page, plot]
    return written
