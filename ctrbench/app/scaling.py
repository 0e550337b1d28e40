"""The scaling study (`ctrbench scale`): each model's ladder of configs x seeds, as ordinary runs.

A model's ladder is the `ladder:` key of its entry for a dataset in `model_zoo/configs/<model>.yaml`: a
list of config overrides, smallest first, that grow its compute the way the paper grew it (Table 5 and
Appendix A), each rung's values taken literally. Every (rung, seed) is an ordinary run in the results
store (resumable, shared by processes, a diverged run kept as LossX); `ctrbench leaderboard` fits the
law of `ctrbench.report.powerlaw` to them and writes the report (`ctrbench.report.scaling_report`).
"""

from __future__ import annotations

from pathlib import Path

from ctrbench.app.options import Overrides, RunOptions
from ctrbench.app.runner import (DatasetSplits, RunSpec, build_model, model_config_entry, pick_device,
                                 resolve_spec, run_plan)
from ctrbench.app.tuner import SECTIONS, check_point
from ctrbench.core.errors import CtrbenchError
from ctrbench.nn.flops import model_stats
from ctrbench.store.record import BASE_SEED, RunRecord
from ctrbench.store.results import ResultsStore


def ladder(model: str, dataset: str, config_dir: Path | None = None) -> list[Overrides]:
    """The model's ladder on the dataset, smallest rung first; each rung's values are taken literally."""
    entry, where = model_config_entry(model, dataset, config_dir)
    rungs = entry.get("ladder")
    if not isinstance(rungs, list) or len(rungs) < 2:
        raise CtrbenchError(f"{where}: no `ladder:` of at least 2 rungs for {model}; add a list of config overrides "
                            "(model: / train: mappings), smallest compute first")
    return [check_point(rung, model, f"{where}.ladder[{i}]") for i, rung in enumerate(rungs)]


def ladder_specs(model: str, dataset: str, seeds: int, points: int | None = None,
                 options: RunOptions = RunOptions()) -> list[RunSpec]:
    """Runs of the first `points` rungs (all by default) for seeds 2021, ...; rung by rung. `options`'
    overrides go over each rung's values (`RunOptions.run_overrides`)."""
    overrides = options.run_overrides()
    rungs = ladder(model, dataset, options.config_dir)[:points]
    return [resolve_spec(model, dataset, BASE_SEED + s, options.config_dir,
                         {section: {**rung[section], **overrides[section]} for section in SECTIONS})
            for rung in rungs for s in range(seeds)]


def check_increasing(model: str, mflop: list[float]) -> None:
    """A ladder must grow compute at every rung."""
    for i in range(1, len(mflop)):
        if not mflop[i] > mflop[i - 1]:
            raise CtrbenchError(f"{model}: ladder rung {i} has {mflop[i]:.4g} MFLOP/example, not more than rung {i - 1}'s "
                                f"{mflop[i - 1]:.4g}; order the rungs by compute")


def scale(dataset: str, models: list[str], seeds: int = 1, points: int | None = None,
          options: RunOptions = RunOptions()) -> list[RunRecord]:
    """Train every model's ladder rungs x seeds not yet stored (checking first that each ladder grows its
    compute at every rung); return the study's records."""
    data = DatasetSplits.open(dataset, options.data_dir, options.stream)
    batch = next(data.valid.batches(256))
    plan = []
    for model in models:
        specs = ladder_specs(model, dataset, seeds, points, options)
        check_increasing(model, [model_stats(build_model(spec, data.fmap), batch).mflop_per_example
                                 for spec in specs[::seeds]])
        plan += specs
    return run_plan(plan, data, ResultsStore(options.results_path), pick_device(options.device), options)
