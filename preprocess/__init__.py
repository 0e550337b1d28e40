"""Converters from each dataset's raw release to the processed-dataset contract (ctrbench.data.features).

`PREPROCESSORS` maps a dataset name (a file in dataset_configs/) to a function
`(raw_dir, out_dir, options) -> FeatureMap` that reads the raw files, writes the parquet splits and
the feature map through `ctrbench.data.features.DatasetWriter`, and returns the committed feature map.

A converter (preprocess/<dataset>.py) is a short script over the shared modules:

    options        PreprocessOptions: the command-line options every converter takes
    rules          load_rules / load_categorical_rules: the `preprocess:` section of its YAML, validated
    inputs         detect_release: which release the raw directory holds (or --release); input checksums
    bad_rows       BadRows: stop at the first malformed row, or skip and count them (--skip-bad-rows)
    readers        read_csv / read_libfm: small raw files -> polars frames of text values, checked row by row;
                   scan_csv: large unquoted CSV files -> lazy frames, checked in one streaming pass
    splits         RawSplits, read_csv_splits / read_libfm_splits (releases that ship train/valid/test);
                   split_positives: positives-only log -> sampled negatives -> seeded split
    histories      with_histories: impressions + each user's earlier events -> history list columns
    vocabularies   Vocabulary; read_h5_table / read_npy_table: pretrained vectors (BARS .h5 or a .npy matrix)
    encoding       Feature: how each processed feature is made; vocabularies on train, encoding of the splits
    writing        write_dataset / write_categorical_dataset: encode, write atomically, record sources
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ctrbench.data.features import FeatureMap
from preprocess.criteo import preprocess_criteo
from preprocess.frappe import preprocess_frappe
from preprocess.kuaivideo import preprocess_kuaivideo
from preprocess.microvideo import preprocess_microvideo
from preprocess.movielens import preprocess_movielens
from preprocess.options import PreprocessOptions
from preprocess.taobaoads import preprocess_taobaoads

Preprocessor = Callable[[Path, Path, PreprocessOptions], FeatureMap]
PREPROCESSORS: dict[str, Preprocessor] = {
    "criteo": preprocess_criteo,
    "frappe": preprocess_frappe,
    "kuaivideo": preprocess_kuaivideo,
    "microvideo": preprocess_microvideo,
    "movielens": preprocess_movielens,
    "taobaoads": preprocess_taobaoads,
}
