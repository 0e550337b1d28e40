"""Converters from each dataset's raw release to the processed-dataset contract (ctrbench.features).

`PREPROCESSORS` maps a dataset name (a file in dataset_configs/) to a function
`(raw_dir, out_dir, options) -> FeatureMap` that reads the raw files, writes the parquet splits and
the feature map through `ctrbench.features.DatasetWriter`, and returns the committed feature map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ctrbench.features import FeatureMap


@dataclass
class PreprocessOptions:
    skip_bad_rows: bool = False  # count and report malformed rows instead of stopping at the first
    release: str | None = None  # which release to read when the raw directory holds several
    jobs: int = 1  # input files converted at once, where a converter reads several (Criteo's day files)


Preprocessor = Callable[[Path, Path, PreprocessOptions], FeatureMap]
PREPROCESSORS: dict[str, Preprocessor] = {}


# The converters import PreprocessOptions from this module, so they are registered after it is defined.
from preprocess.criteo import preprocess_criteo  # noqa: E402
from preprocess.frappe import preprocess_frappe  # noqa: E402
from preprocess.kuaivideo import preprocess_kuaivideo  # noqa: E402
from preprocess.microvideo import preprocess_microvideo  # noqa: E402
from preprocess.movielens import preprocess_movielens  # noqa: E402
from preprocess.taobaoads import preprocess_taobaoads  # noqa: E402

PREPROCESSORS["criteo"] = preprocess_criteo
PREPROCESSORS["frappe"] = preprocess_frappe
PREPROCESSORS["kuaivideo"] = preprocess_kuaivideo
PREPROCESSORS["microvideo"] = preprocess_microvideo
PREPROCESSORS["movielens"] = preprocess_movielens
PREPROCESSORS["taobaoads"] = preprocess_taobaoads
