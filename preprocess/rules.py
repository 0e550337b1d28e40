"""The `preprocess:` section of a dataset's YAML, validated into a dataclass of rules.

`load_rules` reads dataset_configs/<dataset>.yaml's `preprocess:` section into a converter's own
rules dataclass; `CategoricalRules` (Frappe, MovieLens) and `SequenceRules` (MicroVideo, KuaiVideo,
TaobaoAds, with the `ValidationRule` that says where the valid split comes from) are the shared ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import polars as pl

from ctrbench.core.config import build_dataclass
from ctrbench.core.errors import CtrbenchError, closest
from ctrbench.data.datasets import DATASET_CONFIG_DIR, load_dataset_config
from ctrbench.data.features import SPLITS

Keep = Literal["recent", "oldest"]  # which end of a sequence survives truncation to max_len
Rules = TypeVar("Rules")


def load_rules(dataset: str, rules_class: type[Rules]) -> Rules:
    """The `preprocess:` section of dataset_configs/<dataset>.yaml as a `rules_class` dataclass."""
    section = load_dataset_config(dataset).preprocess
    return rules_from_section(section, rules_class, f"{DATASET_CONFIG_DIR / dataset}.yaml: preprocess")


def rules_from_section(section: Any, rules_class: type[Rules], where: str) -> Rules:
    """Validate a config mapping against dataclass `rules_class`.

    Unknown keys, wrong types, missing keys and values the dataclass's `__post_init__` rejects all stop
    with one line starting with `where` and naming the key.
    """
    try:
        return build_dataclass(rules_class, section or {}, where)
    except CtrbenchError as exc:
        message = str(exc)
        raise CtrbenchError(message if message.startswith(where) else f"{where}: {message}") from None


@dataclass
class CategoricalRules:
    """Preprocessing rules of a dataset whose features are all categorical (Frappe, MovieLens).

    The last three keys only apply to a raw release that holds positives only: the converter samples
    `negatives_per_positive` negatives for each positive and splits all rows by `split` fractions.
    """

    fields: list[str]  # the features to keep, by their processed names
    min_count: int  # values seen fewer times in the train split map to the OOV index
    negatives_per_positive: int
    split: list[float]  # train / valid / test fractions
    seed: int  # seeds the negative sampler and the split

    def __post_init__(self) -> None:
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise CtrbenchError(f"fields must be a non-empty list of distinct names, got {self.fields}")
        if self.min_count < 1:
            raise CtrbenchError(f"min_count must be >= 1, got {self.min_count}")
        if self.negatives_per_positive < 1:
            raise CtrbenchError(f"negatives_per_positive must be >= 1, got {self.negatives_per_positive}")
        if len(self.split) != len(SPLITS) or min(self.split) <= 0 or abs(sum(self.split) - 1) > 1e-9:
            raise CtrbenchError(f"split must be {len(SPLITS)} positive fractions summing to 1, got {self.split}")


def load_categorical_rules(dataset: str, available: Sequence[str]) -> CategoricalRules:
    """`load_rules` for an all-categorical dataset, also checking that `fields` are among `available`."""
    rules = load_rules(dataset, CategoricalRules)
    for name in rules.fields:
        if name not in available:
            raise CtrbenchError(f"{DATASET_CONFIG_DIR / dataset}.yaml: preprocess.fields: unknown field {name!r}"
                                f"{closest(name, available)}; {dataset} has {', '.join(available)}")
    return rules


@dataclass
class ValidationRule:
    """Where the valid split comes from, for releases that ship only train and test (the BARS x1
    MicroVideo, KuaiVideo and TaobaoAd releases validate on their test rows).

    `valid: test` does as BARS: the valid split is the test split (its files are listed for both), so
    early stopping sees the test set. `valid: holdout` moves a seeded random `valid_fraction` of the
    train rows (chosen by a hash of their line number in the raw file) to valid instead.
    """

    valid: Literal["test", "holdout"]
    valid_fraction: float
    seed: int

    def __post_init__(self) -> None:
        if not 0 < self.valid_fraction < 1:
            raise CtrbenchError(f"valid_fraction must be between 0 and 1, got {self.valid_fraction}")

    def split(self, train: pl.LazyFrame, test: pl.LazyFrame) -> dict[str, pl.LazyFrame]:
        """The splits to write from the raw train and test rows (each with a `line` column)."""
        if self.valid == "test":
            return {"train": train, "test": test}
        buckets = 1 << 20
        held_out = pl.col("line").hash(self.seed) % buckets < round(self.valid_fraction * buckets)
        return {"train": train.filter(~held_out), "valid": train.filter(held_out), "test": test}


@dataclass
class SequenceRules(ValidationRule):
    """Preprocessing rules of a dataset with behaviour sequences (MicroVideo, KuaiVideo, TaobaoAds)."""

    min_count: int  # categorical values seen fewer times in train map to OOV
    max_len: int  # items kept per sequence
    keep: Keep  # which end of a longer sequence is kept: the most recent or the oldest items

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_count < 1:
            raise CtrbenchError(f"min_count must be >= 1, got {self.min_count}")
        if self.max_len < 1:
            raise CtrbenchError(f"max_len must be >= 1, got {self.max_len}")
