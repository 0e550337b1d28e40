"""Frappe (Baltrunas et al., 2015): app usage logs, ten categorical fields, as in BARS Frappe_x1.

Three releases are accepted (`ctrbench preprocess frappe --raw DIR`, `--release` to choose when a
directory holds several):

* bars_x1: BARS Frappe_x1, `train.csv`, `valid.csv`, `test.csv` with header
  `label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city`, labels 0/1. An
  empty field is a missing value: OOV (as FuxiCTR's `fill_na` fills it with "", which is never in a
  vocabulary); an empty label is a bad row.
* libfm: the NFM/AFN files `frappe.{train,validation,test}.libfm` behind Frappe_x1 (same rows):
  CRLF lines `LABEL i:1 ... i:1`, label -1/1, one token per field in the order above, each index in
  its field's block (LIBFM_BLOCKS). A field's value is its libfm index.
* raw: the original log `frappe.csv` (tab-separated; `cnt` is ignored). Every row is a positive; for
  each, `negatives_per_positive` negatives copy the user and context and take an item that user never
  used (NFM's rule); all rows are then split at random by `split` fractions. NFM/AFN built Frappe_x1
  the same way but their split rule is unknown, so the row counts differ slightly from BARS's (see
  dataset_configs/frappe.yaml), and the sampled negatives are of course not the same rows. An empty
  context field is a missing value (OOV); an empty user or item, which the sampling needs, a bad row.

Every release is encoded the way FuxiCTR encodes Frappe_x1 for BARS: one vocabulary per field, fitted
on the train split only with min count 1, so values seen only in valid/test map to OOV.
"""

from __future__ import annotations

from pathlib import Path

from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.inputs import detect_release, progress
from preprocess.options import PreprocessOptions
from preprocess.readers import read_csv
from preprocess.rules import CategoricalRules, load_categorical_rules
from preprocess.splits import RawSplits, read_csv_splits, read_libfm_splits, split_positives
from preprocess.writing import write_categorical_dataset

FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")
BARS_ROWS = {"train": 202_027, "valid": 57_722, "test": 28_860}  # BARS Frappe_x1
BARS_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}
LIBFM_FILES = {"train": "frappe.train.libfm", "valid": "frappe.validation.libfm", "test": "frappe.test.libfm"}
RAW_FILE = "frappe.csv"
RELEASES = {"bars_x1": list(BARS_FILES.values()), "libfm": list(LIBFM_FILES.values()), "raw": [RAW_FILE]}
# Each field's block of libfm indices (NFM's indexing), in FIELDS order.
LIBFM_BLOCKS = ((0, 956), (957, 5038), (5039, 5045), (5046, 5052), (5053, 5054), (5055, 5057), (5058, 5059),
                (5060, 5068), (5069, 5148), (5149, 5381))
RAW_COLUMNS = ("user", "item", "cnt", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country",
               "city")


def read_release(raw_dir: Path, release: str, rules: CategoricalRules, policy: BadRows) -> RawSplits:
    if release == "bars_x1":
        return read_csv_splits(raw_dir, BARS_FILES, FIELDS, policy)
    if release == "libfm":
        return read_libfm_splits(raw_dir, LIBFM_FILES, FIELDS, policy, LIBFM_BLOCKS)
    context = [name for name in FIELDS if name not in ("user", "item")]  # the sampling keys must be present
    log = read_csv(raw_dir / RAW_FILE, RAW_COLUMNS, policy, separator="\t", optional=context)
    return split_positives(log.select(FIELDS), raw_dir / RAW_FILE, "item", ["user"], rules)


def preprocess_frappe(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_categorical_rules("frappe", FIELDS)
    release = detect_release(raw_dir, RELEASES, "frappe", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    with progress(f"frappe: reading the {release} release"):
        raw = read_release(raw_dir, release, rules, policy)
    return write_categorical_dataset(out_dir, "frappe", release, raw, rules, policy, ("BARS Frappe_x1", BARS_ROWS),
                                     options.shuffle_seed)
