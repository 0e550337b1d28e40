"""MovieLens Latest tag applications (user, movie, tag), as in BARS MovielensLatest_x1.

The task (NFM's "ml-tag"): does this user assign this tag to this movie? Three releases are accepted
(`ctrbench preprocess movielens --raw DIR`, `--release` to choose when a directory holds several):

* bars_x1: BARS MovielensLatest_x1, `train.csv`, `valid.csv`, `test.csv` with header
  `label,user_id,item_id,tag_id`, labels 0/1. An empty field is a missing value: OOV (as
  FuxiCTR's `fill_na` fills it with "", which is never in a vocabulary); an empty label is a bad row.
* libfm: the NFM/AFN files `ml-tag.{train,validation,test}.libfm` behind MovielensLatest_x1: lines
  `LABEL user:1 movie:1 tag:1` (label -1/1, CRLF), the three indices in that order. A field's value
  is its libfm index.
* raw: MovieLens `tags.csv` (`userId,movieId,tag,timestamp`; quoted tags may hold commas and quotes;
  the timestamp is ignored). Every tag application is a positive; for each, `negatives_per_positive`
  negatives keep the user and movie and take a tag the user never assigned to that movie; all rows
  are then split at random by `split` fractions. Tags are kept verbatim (case and spaces included).
  NFM's ml-latest dump held 668,953 tag applications; later dumps hold more, so the row counts
  follow the dump. An empty tag is a malformed row: `--skip-bad-rows` drops and counts such rows.

Every release is encoded as FuxiCTR encodes MovielensLatest_x1 for BARS: one vocabulary per field,
fitted on the train split only with min count 1, so values seen only in valid/test map to OOV.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.inputs import detect_release, progress
from preprocess.options import PreprocessOptions
from preprocess.readers import read_csv
from preprocess.rules import CategoricalRules, load_categorical_rules
from preprocess.splits import RawSplits, read_csv_splits, read_libfm_splits, split_positives
from preprocess.writing import write_categorical_dataset

FIELDS = ("user_id", "item_id", "tag_id")
# BARS MovielensLatest_x1. Its README's table says 401,373 validation rows, but its training logs report
# 401,372, which is also what the stated total 2,006,859 (= 3 x 668,953 tag applications) implies.
BARS_ROWS = {"train": 1_404_801, "valid": 401_372, "test": 200_686}
BARS_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}
LIBFM_FILES = {"train": "ml-tag.train.libfm", "valid": "ml-tag.validation.libfm", "test": "ml-tag.test.libfm"}
RAW_FILE = "tags.csv"
RELEASES = {"bars_x1": list(BARS_FILES.values()), "libfm": list(LIBFM_FILES.values()), "raw": [RAW_FILE]}
RAW_COLUMNS = ("userId", "movieId", "tag", "timestamp")
RAW_NAMES = {"userId": "user_id", "movieId": "item_id", "tag": "tag_id"}


def read_release(raw_dir: Path, release: str, rules: CategoricalRules, policy: BadRows) -> RawSplits:
    if release == "bars_x1":
        return read_csv_splits(raw_dir, BARS_FILES, FIELDS, policy)
    if release == "libfm":
        return read_libfm_splits(raw_dir, LIBFM_FILES, FIELDS, policy)
    tags = read_csv(raw_dir / RAW_FILE, RAW_COLUMNS, policy)
    positives = tags.select(pl.col(raw).alias(name) for raw, name in RAW_NAMES.items())
    return split_positives(positives, raw_dir / RAW_FILE, "tag_id", ["user_id", "item_id"], rules)


def preprocess_movielens(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_categorical_rules("movielens", FIELDS)
    release = detect_release(raw_dir, RELEASES, "movielens", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    with progress(f"movielens: reading the {release} release"):
        raw = read_release(raw_dir, release, rules, policy)
    return write_categorical_dataset(out_dir, "movielens", release, raw, rules, policy,
                                     ("BARS MovielensLatest_x1", BARS_ROWS), options.shuffle_seed)
