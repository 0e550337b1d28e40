"""Comparison protocols: every model gets the same tuning budget on a dataset, chosen on validation only.

`ctrbench bench --dataset D --protocol paper --seeds 3` plans, for each model, three stages of ordinary
runs in the results store (so a protocol resumes, and several processes share it, like any benchmark):

1. embedding dim: the model's config for D at each of the protocol's embedding dims for D (the paper's
   rule: "BARS default or 128, whichever was better"), seed 2021;
2. grid: `grid_points` further points of the model's search space for D (the `search:` key of its entry in
   `model_zoo/configs/<model>.yaml`), drawn without replacement by a generator seeded with the dataset and
   model names, each at the embedding dim stage 1 chose, seed 2021;
3. seeds: the config with the best validation AUC of stages 1-2 gets seeds 2022, ... up to `--seeds`.

Selection is on validation AUC only (a diverged run ranks last; ties go to the config hash that sorts
first, as `results.select_best`). A stage is planned once the runs of the one before it are stored, so
the protocol is a function of the store. A model whose budget is cut for cost says so in the protocol
file (`model_zoo/configs/protocol.yaml`: `caps`), and the leaderboard shows the reason.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctrbench.app.options import Overrides, RunOptions
from ctrbench.app.runner import (DatasetSplits, RunSpec, model_config_entry, pick_device, resolve_spec,
                                 train_unclaimed)
from ctrbench.app.tuner import SECTIONS, check_point, check_space, grid_points
from ctrbench.core.config import signature_hints
from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from ctrbench.store.protocol_spec import Protocol, load_protocol
from ctrbench.store.record import BASE_SEED, RunRecord
from ctrbench.store.results import ResultsStore
from model_zoo import get_model_class

RunKey = tuple[str, str, str, int]


def search_space(model: str, dataset: str, config_dir: Path | None = None) -> list[Overrides]:
    """Every point of the model's search space on the dataset, as config overrides, in file order.

    `search:` is either a grid in the tuner convention (`model:` / `train:` mappings whose lists are
    axes) or a list of such mappings, each one point whose values are taken literally (for points whose
    hyperparameters move together, such as Wukong's nF = nL).
    """
    entry, where = model_config_entry(model, dataset, config_dir)
    space = entry.get("search")
    if space is None:
        return []
    if isinstance(space, list):
        points = [check_point(point, model, f"{where}.search[{i}]") for i, point in enumerate(space)]
    else:
        points = grid_points(check_space(space, model, f"{where}.search"))
    for point in points:
        if "embedding_dim" in point["model"]:
            raise CtrbenchError(f"{where}.search: embedding_dim is the protocol's first stage, not a grid axis; "
                                "remove it from the space")
    return points


def draw_points(points: list[Overrides], count: int, dataset: str, model: str) -> list[Overrides]:
    """`count` of `points`, drawn without replacement by a generator seeded with the names, so every
    process (and every rerun) draws the same ones; all of them when there are fewer."""
    order = list(range(len(points)))
    random.Random(f"{dataset}/{model}").shuffle(order)
    return [points[i] for i in sorted(order[:count])]


def _merge(*layers: Overrides) -> Overrides:
    merged: Overrides = {section: {} for section in SECTIONS}
    for layer in layers:
        for section in SECTIONS:
            merged[section].update(layer.get(section, {}))
    return merged


@dataclass
class ModelPlan:
    """Where one model stands under the protocol, given the runs stored so far."""

    model: str
    stage: str  # "embedding dim", "grid", "seeds" or "done"
    todo: list[RunSpec]  # the runs this stage still needs
    tried: list[RunSpec]  # every config planned so far (seed 2021), stored or not
    winner: RunSpec | None  # the chosen config, once stages 1 and 2 are stored
    winner_hash: str | None = None


class ProtocolPlanner:
    """Plans the protocol's runs for some models on one dataset from the records stored so far; the
    model configs and overrides are `options`' (`config_dir`, `run_overrides()`)."""

    def __init__(self, protocol: Protocol, dataset: str, models: list[str], seeds: int, data_hash: str,
                 options: RunOptions = RunOptions()):
        self.protocol, self.dataset, self.models, self.seeds = protocol, dataset, models, seeds
        self.data_hash, self.config_dir = data_hash, options.config_dir
        self.overrides = options.run_overrides()
        for model in models:
            clashes = sorted({f"{s}.{k}" for point in search_space(model, dataset, self.config_dir)
                              for s in SECTIONS for k in point[s] if k in self.overrides[s]})
            if "embedding_dim" in self.overrides["model"]:
                clashes.insert(0, "model.embedding_dim")
            if clashes:
                raise CtrbenchError(f"--set {', '.join(clashes)}: the protocol tries several values of it for {model}; "
                                    "drop it from --set or edit the search space in the model's config")

    def key(self, spec: RunSpec) -> RunKey:
        return spec.model, spec.dataset, spec.config_hash(self.data_hash), spec.seed

    def spec(self, model: str, point: Overrides, seed: int = BASE_SEED) -> RunSpec:
        return resolve_spec(model, self.dataset, seed, self.config_dir, _merge(point, self.overrides))

    def _best(self, specs: list[RunSpec], stored: dict[RunKey, RunRecord]) -> RunSpec:
        """The spec whose seed-2021 run has the best validation AUC (diverged last; ties: hash order)."""
        def rank(spec: RunSpec) -> tuple[bool, float]:
            record = stored[self.key(spec)]
            return record.ok, record.valid.auc if record.ok else float("-inf")
        by_hash = sorted(specs, key=lambda spec: spec.config_hash(self.data_hash))
        return max(by_hash, key=rank)

    def plan_model(self, model: str, stored: dict[RunKey, RunRecord]) -> ModelPlan:
        if "embedding_dim" in signature_hints(get_model_class(model)):
            base = resolve_spec(model, self.dataset, BASE_SEED, self.config_dir, self.overrides)
            dims = self.protocol.dims(self.dataset, model, base.model_params.get("embedding_dim"))
            at_dims: list[Overrides] = [{"model": {"embedding_dim": d}} for d in dims]
        else:  # no embedding (logistic regression): stage 1 is its config alone
            at_dims = [{}]
        stage1 = [self.spec(model, at) for at in at_dims]
        missing = [s for s in stage1 if self.key(s) not in stored]
        if missing:
            return ModelPlan(model, "embedding dim", missing, stage1, None)
        at = at_dims[stage1.index(self._best(stage1, stored))]
        base_config = self.spec(model, at).config()
        candidates = [p for p in search_space(model, self.dataset, self.config_dir)
                      if self.spec(model, _merge(p, at)).config() != base_config]
        drawn = draw_points(candidates, self.protocol.points(self.dataset, model), self.dataset, model)
        stage2 = [self.spec(model, _merge(p, at)) for p in drawn]
        tried = stage1 + stage2
        missing = [s for s in stage2 if self.key(s) not in stored]
        if missing:
            return ModelPlan(model, "grid", missing, tried, None)
        winner = self._best(tried, stored)
        stage3 = [RunSpec(winner.model, winner.dataset, winner.model_params, winner.train, BASE_SEED + i)
                  for i in range(1, self.seeds)]
        missing = [s for s in stage3 if self.key(s) not in stored]
        return ModelPlan(model, "seeds" if missing else "done", missing, tried, winner,
                         winner.config_hash(self.data_hash))

    def plan(self, records: list[RunRecord]) -> list[ModelPlan]:
        stored = {r.key: r for r in records}
        return [self.plan_model(model, stored) for model in self.models]


def run_protocol(planner: ProtocolPlanner, data: DatasetSplits, store: ResultsStore, device: Any,
                 options: RunOptions, poll_seconds: float = 20.0) -> list[ModelPlan]:
    """Train the protocol's runs until every model is done; return the final plans.

    After each finished run the plan is made again (a run can open its model's next stage). When every
    run left is being trained by another process, this one waits for them (`poll_seconds`).
    """
    waiting = False
    while True:
        plans = planner.plan(store.records())
        todo = [(plan, spec) for plan in plans for spec in plan.todo]
        if not todo:
            return plans
        for plan, spec in todo:
            dim = spec.model_params.get("embedding_dim")
            label = f"{plan.model} ({plan.stage} stage) seed {spec.seed}" + (f" dim {dim}" if dim else "")
            if train_unclaimed(spec, data, store, device, label, options) is not None:
                waiting = False
                break
        else:
            if not waiting:
                console.print(f"waiting for {len(todo)} runs that other processes are training", highlight=False)
                waiting = True
            time.sleep(poll_seconds)


def bench_protocol(dataset: str, models: list[str], protocol: str, seeds: int = 1,
                   options: RunOptions = RunOptions()) -> tuple[list[ModelPlan], list[RunRecord]]:
    """`ctrbench bench --protocol NAME`: run the protocol for `models` on `dataset` to the end; return
    the final plans and the stored records of each model's chosen config (every seed)."""
    data = DatasetSplits.open(dataset, options.data_dir, options.stream)
    planner = ProtocolPlanner(load_protocol(protocol, options.config_dir), dataset, models, seeds,
                              data.fmap.content_hash, options)
    store = ResultsStore(options.results_path)
    plans = run_protocol(planner, data, store, pick_device(options.device), options)
    chosen = {(plan.model, plan.winner_hash) for plan in plans}
    return plans, [r for r in store.records() if r.dataset == dataset and (r.model, r.config_hash) in chosen]
