"""Frappe (Baltrunas et al., 2015): app usage logs, ten categorical fields, as in BARS Frappe_x1.

Three releases are accepted (`ctrbench preprocess frappe --raw DIR`, `--release` to choose when a
directory holds several):

* bars_x1: BARS Frappe_x1, `train.csv`, `valid.csv`, `test.csv` with header
  `label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city`, labels 0/1.
* libfm: the NFM/AFN files `frappe.{train,validation,test}.libfm` behind Frappe_x1 (same rows):
  CRLF lines `LABEL i:1 ... i:1`, label -1/1, one token per field in the order above, each index in
  its field's block (LIBFM_BLOCKS). A field's value is its libfm index.
* raw: the original log `frappe.csv` (tab-separated; `cnt` is ignored). Every row is a positive; for
  each, `negatives_per_positive` negatives copy the user and context and take an item that user never
  used (NFM's rule); all rows are then split at random by `split` fractions. NFM/AFN built Frappe_x1
  the same way but their split rule is unknown, so the row counts differ slightly from BARS's (see
  dataset_configs/frappe.yaml), and the sampled negatives are of course not the same rows.

Every release is encoded the way FuxiCTR encodes Frappe_x1 for BARS: one vocabulary per field, fitted
on the train split only with min count 1, so values seen only in valid/test map to OOV.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from preprocess import PreprocessOptions
from preprocess.common import (
    LABEL,
    SPLITS,
    BadRows,
    CategoricalRules,
    compare_rows,
    describe_inputs,
    detect_release,
    load_rules,
    parse_labels,
    progress,
    read_csv,
    read_libfm,
    sample_negatives,
    split_rows,
    write_categorical_dataset,
)
from ctrbench.features import FeatureMap

FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
BARS_ROWS = {"train": 202_027, "valid": 57_722, "test": 28_860}  # BARS Frappe_x1
BARS_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}
LIBFM_FILES = {"train": "frappe.train.libfm", "valid": "frappe.validation.libfm", "test": "frappe.test.libfm"}
RAW_FILE = "frappe.csv"
RELEASES = {"bars_x1": list(BARS_FILES.values()), "libfm": list(LIBFM_FILES.values()), "raw": [RAW_FILE]}
# First libfm index of each field's block, in FIELDS order, then the end of the last block (NFM's indexing).
LIBFM_BLOCKS = (0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149, 5382)
RAW_COLUMNS = ("user", "item", "cnt", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country",
               "city")

Splits = dict[str, pl.DataFrame]
InputRows = dict[Path, int]  # rows used from each input file


def read_bars(raw_dir: Path, policy: BadRows) -> tuple[Splits, InputRows]:
    splits = {}
    for split, name in BARS_FILES.items():
        path = raw_dir / name
        splits[split] = parse_labels(read_csv(path, [LABEL, *FIELDS], policy), path, policy)
    return splits, {raw_dir / BARS_FILES[split]: len(frame) for split, frame in splits.items()}


def read_libfm_release(raw_dir: Path, policy: BadRows) -> tuple[Splits, InputRows]:
    blocks = list(zip(FIELDS, LIBFM_BLOCKS[:-1], LIBFM_BLOCKS[1:]))
    splits = {}
    for split, name in LIBFM_FILES.items():
        path = raw_dir / name
        frame = read_libfm(path, FIELDS, ("-1", "1"), policy)
        keep = policy.check_rules(path, frame["line"].to_numpy(), [
            (~frame[field].is_between(start, stop - 1).to_numpy(),
             f"{field} index outside its libfm block {start}-{stop - 1}", frame[field])
            for field, start, stop in blocks
        ])
        splits[split] = frame.filter(pl.Series(keep))
    return splits, {raw_dir / LIBFM_FILES[split]: len(frame) for split, frame in splits.items()}


def build_from_raw_log(raw_dir: Path, rules: CategoricalRules, policy: BadRows) -> tuple[Splits, InputRows]:
    """Positives from the log, sampled negatives, a seeded split (seed for sampling, seed + 1 for the split)."""
    log = read_csv(raw_dir / RAW_FILE, RAW_COLUMNS, policy, separator="\t")
    positives = log.select(*FIELDS, pl.lit(1.0, pl.Float32).alias(LABEL))
    with progress(f"frappe: sampling {rules.negatives_per_positive} negatives for each of {len(positives):,} positives"):
        negatives = sample_negatives(positives, "item", ["user"], rules.negatives_per_positive, rules.seed)
    rows = pl.concat([positives, negatives.with_columns(pl.lit(0.0, pl.Float32).alias(LABEL))])
    parts = split_rows(len(rows), rules.split, rules.seed + 1)
    return {split: rows[part] for split, part in zip(SPLITS, parts)}, {raw_dir / RAW_FILE: len(log)}


def preprocess_frappe(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_rules("frappe", CategoricalRules)
    rules.check_fields(FIELDS, "frappe")
    release = detect_release(raw_dir, RELEASES, "frappe", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    with progress(f"frappe: reading the {release} release"):
        if release == "bars_x1":
            splits, input_rows = read_bars(raw_dir, policy)
        elif release == "libfm":
            splits, input_rows = read_libfm_release(raw_dir, policy)
        else:
            splits, input_rows = build_from_raw_log(raw_dir, rules, policy)
    source = {
        "release": release,
        "inputs": describe_inputs(list(input_rows), {path.name: rows for path, rows in input_rows.items()}),
        "rules": dataclasses.asdict(rules),
        "skipped_rows": policy.report(),
    }
    fmap = write_categorical_dataset(out_dir, "frappe", splits, rules.fields, rules.min_count, source)
    compare_rows(fmap, BARS_ROWS, "BARS Frappe_x1")
    return fmap
