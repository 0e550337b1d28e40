"""The scaling study's report: per dataset a markdown page and a plot of test LogLoss against compute,
with each model's fitted law (`ctrbench.scaling`), the Bayes limit where the dataset knows it, and the
paper's Table 5 quoted beside ours. Written by `ctrbench leaderboard` for the runs `ctrbench scale` made.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ctrbench.errors import CtrbenchError
from ctrbench.record import BayesLimit, RunRecord
from ctrbench.results import format_mean_std, group_configs, mean_std
from ctrbench.powerlaw import SATURATION_THRESHOLD, LawFit, fit_with_intervals

DASH = "–"


def is_scaling_run(record: RunRecord) -> bool:
    return (record.command or "").startswith("ctrbench scale ")


@dataclass
class Rung:
    config_hash: str
    mflop: float
    params: int
    runs: list[RunRecord]

    def values(self, split: str, metric: str) -> list[float]:
        return [r.metric(split, metric) for r in self.runs if r.ok]

    @property
    def diverged(self) -> int:
        return sum(not r.ok for r in self.runs)


@dataclass
class ModelStudy:
    model: str
    display_name: str
    rungs: list[Rung]  # by compute
    fit: LawFit | None
    fit_error: str | None


def studies(records: list[RunRecord]) -> dict[str, list[ModelStudy]]:
    """dataset -> one study per model: its rungs by compute and the fit of test LogLoss on MFLOP."""
    by_model: dict[tuple[str, str], list[Rung]] = defaultdict(list)
    for group in group_configs(records):
        first = group.first
        by_model[(group.dataset, group.model)].append(Rung(group.config_hash, first.mflop_per_example, group.params,
                                                           group.runs))
    result: dict[str, list[ModelStudy]] = defaultdict(list)
    for (dataset, model), rungs in sorted(by_model.items()):
        rungs.sort(key=lambda rung: rung.mflop)
        compute = np.array([rung.mflop for rung in rungs for _ in rung.values("test", "logloss")])
        loss = np.array([v for rung in rungs for v in rung.values("test", "logloss")])
        fit, error = None, None
        try:
            fit = fit_with_intervals(compute, loss)
        except CtrbenchError as exc:
            error = str(exc)
        result[dataset].append(ModelStudy(model, rungs[0].runs[0].display_name or model, rungs, fit, error))
    return result


def paper_table5() -> list[dict[str, str]]:
    """The paper's Table 5 rows, or none when its tables are not where the leaderboard looks for them."""
    from ctrbench.leaderboard import PAPER_DIR  # noqa: PLC0415 (leaderboard imports this module)

    path = PAPER_DIR / "table5_scaling.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _interval(bounds: tuple[float, float], digits: str = ".3g") -> str:
    return DASH if any(np.isnan(bounds)) else f"[{bounds[0]:{digits}}, {bounds[1]:{digits}}]"  # inf prints as inf


def verdict(study: ModelStudy) -> str:
    """Whether the model was still improving at its largest rung, by the fitted law and its interval."""
    if study.fit is None:
        return f"no fit ({study.fit_error})"
    largest = study.rungs[-1].mflop
    low, high = study.fit.intervals["saturation"]
    saturation = study.fit.law.saturation()
    if saturation > largest and low > largest:
        return f"still improving at its largest rung ({largest:.3g} MFLOP): the law's 4x gain stays above {SATURATION_THRESHOLD} up to {saturation:.3g} MFLOP"
    if saturation < largest and high < largest:
        return f"stopped improving at about {saturation:.3g} MFLOP, before its largest rung ({largest:.3g})"
    return (f"undecided: the compute where another 4x gains < {SATURATION_THRESHOLD} is {saturation:.3g} MFLOP, interval "
            f"{_interval((low, high))}, which contains its largest rung ({largest:.3g})")


def scaling_markdown(dataset: str, models: list[ModelStudy], bayes: dict[str, BayesLimit] | None, command: str,
                     commands: list[str]) -> str:
    lines = [f"# Scaling on {dataset}: test LogLoss against compute", "",
             "Each model's ladder (`ladder:` in `model_zoo/configs/MODEL.yaml`) trained by `ctrbench scale`; "
             "MFLOP: forward, per example (`ctrbench/flops.py`). Fit per model over its runs (rungs x seeds): "
             "L(C) = E + A C^-alpha by Huber-robust least squares, 95% percentile intervals from 200 bootstrap "
             "resamples of the runs (`ctrbench/scaling.py`); C*: the compute past which another 4x of compute "
             f"gains less than {SATURATION_THRESHOLD} LogLoss; (a, b): the paper's relative form y = -100 + a x^b "
             "(y: LogLoss relative to the model's smallest rung, %; x: GFLOP).", ""]
    if bayes:
        test = bayes["test"]
        lines += [f"Bayes limit (the teacher's own probabilities on the test rows): LogLoss {test.logloss:.5f}, "
                  f"AUC {test.auc:.4f}. Excess = test LogLoss − Bayes LogLoss.", ""]
    lines += [f"Generated by `{command}` from the runs made by:", ""] + [f"- `{c}`" for c in commands] + [""]
    for study in models:
        lines += [f"## {study.display_name}", "", f"Verdict: {verdict(study)}.", ""]
        if study.fit is not None:
            law, ci = study.fit.law, study.fit.intervals
            lines += [f"Fit: E = {law.E:.5f} {_interval(ci['E'], '.5f')}, A = {law.A:.4g} {_interval(ci['A'])}, "
                      f"alpha = {law.alpha:.3g} {_interval(ci['alpha'])}, C* = {law.saturation():.3g} MFLOP "
                      f"{_interval(ci['saturation'])}; relative form a = {study.fit.relative[0]:.4g}, "
                      f"b = {study.fit.relative[1]:.3g} ({study.fit.bootstraps} bootstrap fits).", ""]
        header = ["Rung", "MFLOP/example", "Params", "Seeds", "Valid LogLoss", "Test LogLoss", "Test AUC"]
        header += ["Excess over Bayes"] if bayes else []
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for i, rung in enumerate(study.rungs):
            test = rung.values("test", "logloss")
            cells = [str(i), f"{rung.mflop:.3g}", f"{rung.params:,}",
                     f"{len(test)}" + (f" + {rung.diverged} LossX" if rung.diverged else ""),
                     _cell(rung.values("valid", "logloss")), _cell(test), _cell(rung.values("test", "auc"))]
            if bayes:
                cells.append(f"{mean_std(test)[0] - bayes['test'].logloss:.5f}" if test else "LossX")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    table5 = paper_table5()
    lines += ["## The paper's Table 5 (internal dataset, for comparison)", ""]
    if table5:
        lines += ["| Model | Hyperparameters | GFLOP/example | Relative LogLoss task 1 (%) |", "|---|---|---|---|"]
        lines += [f"| {row['model']} | {row['hyperparameters']} | {row['gflop_per_example']} | {row['rel_logloss_task1']} |"
                  for row in table5]
    else:
        lines += ["(`table5_scaling.csv` was not found in `../shared/paper/` or `$CTRBENCH_PAPER_DIR` when this page was "
                  "generated.)"]
    lines += ["", "The paper's Wukong law: y = -100 + 99.56 x^0.00071 (x in GFLOP/example), about 0.1% better per 4x.",
              "", f"![{dataset}: test LogLoss vs compute]({dataset}_scaling.png)", ""]
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    return format_mean_std(values, digits=5) if values else "LossX"


def scaling_png(dataset: str, models: list[ModelStudy], bayes: dict[str, BayesLimit] | None) -> bytes:
    figure = Figure(figsize=(7.5, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for study in models:
        points = [(rung.mflop, *mean_std(rung.values("test", "logloss"))) for rung in study.rungs
                  if rung.values("test", "logloss")]
        if not points:
            continue
        x, y, std = map(np.array, zip(*points))
        line = axes.errorbar(x, y, yerr=std if std.any() else None, fmt="o", capsize=3, label=study.display_name)
        if study.fit is not None:
            grid = np.geomspace(x.min(), x.max(), 100)
            axes.plot(grid, study.fit.law(grid), color=line[0].get_color(), alpha=0.6)
    if bayes:
        axes.axhline(bayes["test"].logloss, color="black", linestyle="--", linewidth=1, label="Bayes limit")
    axes.set_xscale("log")
    axes.set_xlabel("forward MFLOP per example (log scale)")
    axes.set_ylabel("test LogLoss")
    axes.set_title(f"{dataset}: test LogLoss vs compute (points: mean ± std over seeds; lines: fitted laws)")
    axes.title.set_fontsize(9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
