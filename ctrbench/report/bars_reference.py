"""BARS's reported test AUC and gAUC on the datasets with user groups, read from one checked file.

`leaderboards/bars_reference.yaml` holds, per dataset (our name, one whose config declares `group:`) and
model (its display name, as the leaderboards name it), the result BARS reports and the file it was read
from. The leaderboard quotes them beside ours on those datasets' pages. Every entry is checked on load:
a wrong key, type or value stops with one line naming the file, the entry and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ctrbench.core.config import build_dataclass, load_yaml
from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.data.datasets import REPO_ROOT, dataset_names, load_dataset_config

BARS_REFERENCE = REPO_ROOT / "leaderboards" / "bars_reference.yaml"
SOURCE = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40} \S+")  # OWNER/REPO@COMMIT PATH


@dataclass(frozen=True)
class BarsResult:
    """One result as BARS reports it: test metrics of one run of one config."""

    auc: float
    gauc: float
    experiment: str  # the BARS experiment (FuxiCTR model_id)
    seed: int  # the seed of that run
    source: str  # OWNER/REPO@COMMIT PATH of the file the numbers were read from


def load_bars_reference(path: Path = BARS_REFERENCE) -> dict[tuple[str, str], BarsResult]:
    """(dataset, model display name) -> BARS's result; raises CtrbenchError on a malformed entry."""
    table = load_yaml(path)
    if not isinstance(table, dict):
        raise CtrbenchError(f"{path}: expected a mapping of dataset -> model -> result, got {type(table).__name__}")
    results = {}
    for dataset, models in table.items():
        if dataset not in dataset_names():
            raise CtrbenchError(f"{path}: {unknown_name('dataset', str(dataset), dataset_names())}")
        if load_dataset_config(dataset).group is None:
            raise CtrbenchError(f"{path}: {dataset}: the dataset has no `group:` (no gAUC); "
                                "BARS's gAUC is quoted for grouped datasets only")
        if not isinstance(models, dict):
            raise CtrbenchError(f"{path}: {dataset}: expected a mapping of model -> result, got {models!r}")
        for model, values in models.items():
            where = f"{path}: {dataset}.{model}"
            result = build_dataclass(BarsResult, values, where)
            for metric in ("auc", "gauc"):
                if not 0.0 < getattr(result, metric) <= 1.0:
                    raise CtrbenchError(f"{where}.{metric}: expected a value in (0, 1], got {getattr(result, metric)}")
            if not SOURCE.fullmatch(result.source):
                raise CtrbenchError(f"{where}.source: expected 'OWNER/REPO@COMMIT PATH' with the 40-hex commit, "
                                    f"got {result.source!r}")
            results[(dataset, str(model))] = result
    return results
