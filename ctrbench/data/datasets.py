"""Dataset registry: the YAML configs in `dataset_configs/` and where processed data lives."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctrbench.core.config import build_dataclass, load_yaml
from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.data.features import FEATURE_MAP_FILE, FeatureMap
from ctrbench.data.releases import Release, check_releases

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET_CONFIG_DIR = REPO_ROOT / "dataset_configs"
MODEL_CONFIG_DIR = REPO_ROOT / "model_zoo" / "configs"
DEFAULT_DATA_DIR = Path(os.environ.get("CTRBENCH_DATA_DIR", "data"))


@dataclass
class DatasetConfig:
    """One `dataset_configs/<name>.yaml`."""

    name: str
    display_name: str  # as the Wukong paper's tables name it (leaderboards match on it)
    description: str = ""
    generator: dict[str, Any] | None = None  # generated datasets (synthetic, teacher): generator arguments
    group: str | None = None  # the categorical feature whose value groups rows for gAUC (the user), as BARS
    # The seed with which preprocessing writes the train rows in random order (`ctrbench.data.shuffle`), so
    # that a streamed train split mixes well; None: in the order read (releases already in random order).
    shuffle_train: int | None = None
    # Preprocessing rules (features, min counts, max lengths, split rules), validated by the dataset's own
    # converter in preprocess/<name>.py, which owns their schema.
    preprocess: dict[str, Any] | None = None
    releases: list[Release] = field(default_factory=list)  # where each release is published, its checksums


def dataset_names() -> list[str]:
    return sorted(p.stem for p in DATASET_CONFIG_DIR.glob("*.yaml"))


def load_dataset_config(name: str) -> DatasetConfig:
    if name not in dataset_names():
        raise unknown_name("dataset", name, dataset_names())
    path = DATASET_CONFIG_DIR / f"{name}.yaml"
    config = build_dataclass(DatasetConfig, load_yaml(path), str(path))
    if config.name != name:
        raise CtrbenchError(f"{path}: name is {config.name!r} but the file is named {name!r}")
    check_releases(config.releases, f"{path}: releases")
    return config


# Generated datasets: name -> (module, function(out_dir, **generator arguments) -> FeatureMap)
GENERATORS = {"synthetic": ("ctrbench.data.synthetic", "write_synthetic"),
              "teacher": ("ctrbench.data.teacher", "write_teacher")}


def generate(config: DatasetConfig, directory: str | Path) -> FeatureMap:
    """Write a generated dataset (its config has `generator:` arguments) to `directory`."""
    if config.name not in GENERATORS:
        raise CtrbenchError(f"dataset_configs/{config.name}.yaml: has generator arguments but no generator is "
                            f"registered for it (known: {', '.join(sorted(GENERATORS))})")
    module, function = GENERATORS[config.name]
    return getattr(importlib.import_module(module), function)(directory, **config.generator)


def processed_dir(name: str, data_dir: str | Path | None = None) -> Path:
    return Path(data_dir or DEFAULT_DATA_DIR) / name


def load_feature_map(name: str, data_dir: str | Path | None = None) -> FeatureMap:
    """The processed dataset's feature map; the synthetic dataset is generated on first use."""
    config = load_dataset_config(name)
    directory = processed_dir(name, data_dir)
    if not (directory / FEATURE_MAP_FILE).is_file():
        if config.generator is not None:
            return generate(config, directory)
        raise CtrbenchError(
            f"{directory}: dataset {name!r} is not preprocessed yet; run "
            f"`ctrbench preprocess {name} --raw RAW_DIR --out {directory}`"
        )
    return FeatureMap.load(directory)
