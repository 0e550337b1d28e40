"""MicroVideo1.7M (Chen et al., MM 2018, THACIL): micro-video clicks with click histories and cover-image
features, as in BARS MicroVideo1.7M_x1.

Two releases are accepted (`ctrbench preprocess microvideo --raw DIR`, `--release` to choose when a
directory holds both):

* bars_x1: BARS MicroVideo1.7M_x1, `train.csv` and `test.csv` with header
  `user_id,item_id,cate_id,is_click,timestamp,clicked_items,clicked_categories` (the histories are
  `^`-joined ids, empty for a user without earlier clicks), and `item_image_emb_dim64.h5` (datasets
  `key`: item ids, `value`: 64-d cover-image vectors). An empty field other than is_click is a missing
  value: OOV (as FuxiCTR's `fill_na` fills it with "", which is never in a vocabulary); an empty is_click is a bad row.
* raw: the THACIL release, `train_data.csv` and `test_data.csv` with header
  `user_id,item_id,cate_id,is_click,timestamp`, and `train_cover_image_feature.npy` /
  `test_cover_image_feature.npy` (512-d cover-image vectors; row r belongs to item id r of that file).
  Test item ids restart at 0, so they are offset by the train matrix's row count: one id space, one
  pretrained table. The histories are built here: an impression's clicked_items / clicked_categories
  are its user's clicks in train_data.csv strictly before its timestamp, oldest first (THACIL also
  draws histories from the train file only), so a row never sees its own click or a later one, and
  no test label reaches any feature.

Both releases are encoded with BARS's FuxiCTR feature definitions: user_id and cate_id categorical;
item_id a pretrained embedding (frozen cover-image vectors, then a learned linear map) whose
vocabulary also holds every item that has a vector; clicked_items shares item_id's table and
clicked_categories cate_id's, each keeping its `max_len` most recent items (BARS: 100, `padding: pre`).
BARS has no validation split; `valid` in dataset_configs/microvideo.yaml says what to do instead.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.encoding import Feature
from preprocess.histories import scratch_dir, with_histories
from preprocess.inputs import detect_release, progress
from preprocess.options import PreprocessOptions
from preprocess.readers import LABEL, integer_check, label_check, scan_csv
from preprocess.rules import SequenceRules, load_rules
from preprocess.splits import RawSplits
from preprocess.vocabularies import PretrainedTable, read_h5_table, read_npy_table
from preprocess.writing import write_dataset

BARS_ROWS = {"train": 8_970_309, "valid": 3_767_308, "test": 3_767_308}  # BARS validates on test
BARS_FILES = {"train": "train.csv", "test": "test.csv"}
BARS_TABLE = "item_image_emb_dim64.h5"
BARS_COLUMNS = ("user_id", "item_id", "cate_id", "is_click", "timestamp", "clicked_items", "clicked_categories")
RAW_FILES = {"train": "train_data.csv", "test": "test_data.csv"}
RAW_TABLES = {"train": "train_cover_image_feature.npy", "test": "test_cover_image_feature.npy"}
RAW_COLUMNS = ("user_id", "item_id", "cate_id", "is_click", "timestamp")
RELEASES = {"bars_x1": [*BARS_FILES.values(), BARS_TABLE], "raw": [*RAW_FILES.values(), *RAW_TABLES.values()]}
HISTORIES = {"clicked_items": "item_id", "clicked_categories": "cate_id"}  # history column -> clicked column


def features(rules: SequenceRules, tables: tuple[PretrainedTable, ...]) -> list[Feature]:
    sequence = dict(type="sequence", max_len=rules.max_len, keep=rules.keep)
    return [
        Feature("user_id", "categorical", min_count=rules.min_count),
        Feature("item_id", "pretrained_embedding", pretrained=tables),
        Feature("cate_id", "categorical", min_count=rules.min_count),
        Feature("clicked_items", share_embedding="item_id", **sequence),
        Feature("clicked_categories", share_embedding="cate_id", **sequence),
    ]


def read_bars(raw_dir: Path, rules: SequenceRules, policy: BadRows) -> tuple[RawSplits, tuple[PretrainedTable]]:
    frames, rows = {}, {}
    for split, name in BARS_FILES.items():
        with progress(f"microvideo: checking {name}"):
            frame, rows[raw_dir / name] = scan_csv(raw_dir / name, BARS_COLUMNS, policy, [label_check("is_click")],
                                                   optional=[c for c in BARS_COLUMNS if c != "is_click"],
                                                   complete_rows=True)
        frames[split] = frame.with_columns(pl.col("is_click").cast(pl.Float32).alias(LABEL))
    with progress(f"microvideo: reading {BARS_TABLE}"):
        table = read_h5_table(raw_dir / BARS_TABLE)
    rows[table.path] = table.keys.len()
    return RawSplits(rules.split(frames["train"], frames["test"]), rows), (table,)


def read_thacil(raw_dir: Path, rules: SequenceRules, policy: BadRows,
                scratch: Path) -> tuple[RawSplits, tuple[PretrainedTable, ...]]:
    train_table = read_npy_table(raw_dir / RAW_TABLES["train"])
    test_table = read_npy_table(raw_dir / RAW_TABLES["test"], first_key=train_table.keys.len())
    tables = {"train": train_table, "test": test_table}
    impressions, rows = [], {}
    for split, name in RAW_FILES.items():
        items = len(tables[split].vectors)
        item_row = pl.col("item_id").str.to_integer(strict=False)
        checks = [*[integer_check(c) for c in ("user_id", "item_id", "cate_id", "timestamp")], label_check("is_click"),
                  (~item_row.is_between(0, items - 1), f"item_id has no row in {RAW_TABLES[split]} ({items:,} rows)",
                   pl.col("item_id"))]
        with progress(f"microvideo: checking {name}"):
            frame, rows[raw_dir / name] = scan_csv(raw_dir / name, RAW_COLUMNS, policy, checks)
        offset = 0 if split == "train" else train_table.keys.len()  # test ids follow the train ids
        impressions.append(frame.select(
            "line", pl.col("user_id", "cate_id", "timestamp").cast(pl.Int64), item_row + offset,
            pl.col("is_click").cast(pl.Float32).alias(LABEL), pl.lit(split).alias("split")).collect())
    impressions = pl.concat(impressions)
    clicks = impressions.lazy().filter((pl.col("split") == "train") & (pl.col(LABEL) == 1))
    rows.update({table.path: table.keys.len() for table in tables.values()})
    history = with_histories(impressions, clicks, HISTORIES, user="user_id", time="timestamp", max_len=rules.max_len,
                             keep=rules.keep, scratch=scratch)
    splits = rules.split(history.filter(pl.col("split") == "train"), history.filter(pl.col("split") == "test"))
    return RawSplits(splits, rows), (train_table, test_table)


def preprocess_microvideo(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_rules("microvideo", SequenceRules)
    release = detect_release(raw_dir, RELEASES, "microvideo", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    with scratch_dir(out_dir) as scratch:
        if release == "bars_x1":
            raw, tables = read_bars(raw_dir, rules, policy)
        else:
            raw, tables = read_thacil(raw_dir, rules, policy, scratch)
        return write_dataset(out_dir, "microvideo", release, raw, features(rules, tables), rules, policy,
                             ("BARS MicroVideo1.7M_x1", BARS_ROWS), options.shuffle_seed)
