"""Hyperparameter grid search in the BARS tuner convention.

A search space is a YAML file such as

    tuner_space:
      model:
        embedding_dim: [8, 16]
        top_mlp_units: [[256, 128], [400, 400, 400]]
      train:
        learning_rate: [1.0e-3, 3.0e-3]
        batch_size: 1024

Under `model` (the model's constructor arguments) and `train` (`TrainConfig` fields) a list is a grid
axis whose values are all tried and anything else is fixed; as in BARS, a hyperparameter whose value
is itself a list is written as a list of lists. Every grid point is the model's config for the dataset
(`model_zoo/configs/<model>.yaml`) overridden by the point's values, then by `--set`; each (point, seed)
is an ordinary run in the results store, so an interrupted search resumes like `bench`. The best point
is the one with the best mean validation AUC over its seeds (`results.select_best`, as the leaderboard
chooses), and `best_entry_yaml` writes it as a ready-to-paste entry for the model's config file.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ctrbench.app.options import RunOptions
from ctrbench.app.runner import DatasetSplits, pick_device, resolve_spec, run_plan
from ctrbench.core.config import check_kwargs, load_yaml, signature_hints
from ctrbench.core.errors import CtrbenchError
from ctrbench.store.record import BASE_SEED
from ctrbench.store.results import ConfigResult, ResultsStore, format_mean_std, group_configs
from ctrbench.training.loop import TrainConfig
from model_zoo import get_model_class

SECTIONS = ("model", "train")

Axes = dict[str, dict[str, list[Any]]]  # section -> hyperparameter -> the values to try


def load_space(path: Path, model: str) -> Axes:
    """Read and check a search space file: a single `tuner_space:` key holding the grid."""
    data = load_yaml(path)
    if not isinstance(data, dict) or set(data) != {"tuner_space"}:
        raise CtrbenchError(f"{path}: expected a single top-level key 'tuner_space' holding model: and/or train: mappings")
    return check_space(data["tuner_space"], model, f"{path}: tuner_space")


def check_space(space: Any, model: str, where: str) -> Axes:
    """Check a grid: every key must be a hyperparameter of `model` or of training, every value valid."""
    space = check_kwargs(space, {s: dict[str, Any] for s in SECTIONS}, where)
    hints = {"model": signature_hints(get_model_class(model)), "train": signature_hints(TrainConfig)}
    axes: Axes = {section: {} for section in SECTIONS}
    for section, values in space.items():
        for key, value in values.items():
            options = value if isinstance(value, list) else [value]
            if not options:
                raise CtrbenchError(f"{where}.{section}.{key}: an empty list leaves nothing to try; give at least one value")
            for option in options:
                check_kwargs({key: option}, hints[section], f"{where}.{section}")
            axes[section][key] = options
    if not any(axes.values()):
        raise CtrbenchError(f"{where}: the space has no hyperparameters; add model: or train: keys with lists of values")
    return axes


def check_point(point: Any, model: str, where: str) -> dict[str, dict[str, Any]]:
    """Check one config point given literally (`model:` / `train:` mappings, a list is the value itself)."""
    point = check_kwargs(point, {s: dict[str, Any] for s in SECTIONS}, where)
    hints = {"model": signature_hints(get_model_class(model)), "train": signature_hints(TrainConfig)}
    return {section: check_kwargs(point.get(section), hints[section], f"{where}.{section}") for section in SECTIONS}


def grid_points(axes: Axes) -> list[dict[str, dict[str, Any]]]:
    """Every combination of the axes' values, as config overrides {"model": {...}, "train": {...}}."""
    names = [(section, key) for section in SECTIONS for key in axes[section]]
    points = []
    for values in itertools.product(*(axes[section][key] for section, key in names)):
        point: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
        for (section, key), value in zip(names, values):
            point[section][key] = value
        points.append(point)
    return points


@dataclass
class TuneResult:
    axes: Axes
    ranked: list[ConfigResult]  # every grid point's runs, best mean validation AUC first

    @property
    def best(self) -> ConfigResult:
        return self.ranked[0]


def tune(model: str, dataset: str, space_path: Path, seeds: int = 1,
         options: RunOptions = RunOptions()) -> TuneResult:
    """Run every grid point x seed not yet stored and rank the points by mean validation AUC."""
    axes = load_space(space_path, model)
    clashes = [f"{section}.{key}" for section in SECTIONS for key in axes[section]
               if key in options.overrides.get(section, {})]
    if clashes:
        raise CtrbenchError(f"--set {', '.join(clashes)}: also set in {space_path}; give each hyperparameter in one place")
    plan = [resolve_spec(model, dataset, BASE_SEED + i, options.config_dir, options.run_overrides(point))
            for point in grid_points(axes) for i in range(seeds)]
    store = ResultsStore(options.results_path)
    data = DatasetSplits.open(dataset, options.data_dir, options.stream)
    records = run_plan(plan, data, store, pick_device(options.device), options)
    ranked = sorted(group_configs(records), key=ConfigResult.rank, reverse=True)
    if not ranked[0].ok:
        raise CtrbenchError(f"every grid point diverged on every seed (records in {store.path}); "
                            "lower the learning rates in the space")
    return TuneResult(axes, ranked)


def best_entry(result: ConfigResult) -> dict[str, Any]:
    """The chosen config as a `model_zoo/configs/<model>.yaml` entry: its model values and the
    training values that differ from TrainConfig's defaults (defaults stay in one place)."""
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    train = {key: value for key, value in result.config.train.items() if value != defaults[key]}
    entry = {section: values for section, values in (("model", result.config.model), ("train", train)) if values}
    return {result.dataset: entry}


def best_entry_yaml(tuned: TuneResult, command: str | None) -> str:
    best = tuned.best
    seeds = len(best.runs)
    header = [
        f"# {best.model} on {best.dataset}: the best of {len(tuned.ranked)} grid points by mean validation AUC "
        f"over {seeds} seed{'s' if seeds > 1 else ''} (config {best.config_hash})",
        f"# valid AUC {format_mean_std(best.metric('valid', 'auc'))}, test AUC {format_mean_std(best.metric('test', 'auc'))}, "
        f"test LogLoss {format_mean_std(best.metric('test', 'logloss'))}",
        f"# tuned by: {command or '(command not recorded)'}",
        f"# paste into model_zoo/configs/{best.model}.yaml in place of its {best.dataset}: entry",
    ]
    body = yaml.safe_dump(best_entry(best), default_flow_style=None, sort_keys=True)
    return "\n".join(header) + "\n" + body
