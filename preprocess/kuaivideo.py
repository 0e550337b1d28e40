"""KuaiVideo (Kuaishou, China MM 2018 challenge; 10,000 users, as ALPINE selected them): micro-video clicks
with positive and negative item histories and visual features, as in BARS KuaiVideo_x1.

One release is accepted (`ctrbench preprocess kuaivideo --raw DIR`):

* bars_x1: BARS KuaiVideo_x1, `train.csv` and `test.csv` with header
  `timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items` (the histories are
  `^`-joined item ids, empty for none) and `item_visual_emb_dim64.h5` (datasets `key`: item ids,
  `value`: 64-d visual vectors). BARS's converter built the histories from ALPINE's `dataset.pkl`
  keeping each user's OLDEST 100 earlier positives / negatives, so they never exceed 100 items.

Encoded with BARS's FuxiCTR feature definitions: user_id and item_id categorical (min count 10);
item_emb a pretrained embedding of the same item ids (frozen visual vectors, then a learned linear
map), whose vocabulary holds every item that has a vector; pos_items / neg_items share item_id's
table and pos_items_emb / neg_items_emb (the same histories) item_emb's, each truncated to `max_len`
keeping `keep` (BARS: 100, nothing to truncate). is_like, is_follow and timestamp are not features.
BARS has no validation split; `valid` in dataset_configs/kuaivideo.yaml says what to do instead.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ctrbench.features import FeatureMap
from preprocess import PreprocessOptions
from preprocess.common import (
    LABEL,
    BadRows,
    Feature,
    PretrainedTable,
    RawSplits,
    SequenceRules,
    detect_release,
    label_check,
    load_rules,
    progress,
    read_h5_table,
    scan_csv,
    write_dataset,
)

BARS_ROWS = {"train": 10_931_092, "valid": 2_730_291, "test": 2_730_291}  # BARS validates on test
BARS_FILES = {"train": "train.csv", "test": "test.csv"}
BARS_TABLE = "item_visual_emb_dim64.h5"
BARS_COLUMNS = ("timestamp", "user_id", "item_id", "is_click", "is_like", "is_follow", "pos_items", "neg_items")
RELEASES = {"bars_x1": [*BARS_FILES.values(), BARS_TABLE]}


def features(rules: SequenceRules, tables: tuple[PretrainedTable, ...]) -> list[Feature]:
    sequence = dict(type="sequence", max_len=rules.max_len, keep=rules.keep)
    return [
        Feature("user_id", "categorical", min_count=rules.min_count),
        Feature("item_id", "categorical", min_count=rules.min_count),
        Feature("item_emb", "pretrained_embedding", column="item_id", pretrained=tables),
        Feature("pos_items", share_embedding="item_id", **sequence),
        Feature("neg_items", share_embedding="item_id", **sequence),
        Feature("pos_items_emb", column="pos_items", share_embedding="item_emb", **sequence),
        Feature("neg_items_emb", column="neg_items", share_embedding="item_emb", **sequence),
    ]


def read_bars(raw_dir: Path, rules: SequenceRules, policy: BadRows) -> tuple[RawSplits, tuple[PretrainedTable]]:
    frames, rows = {}, {}
    for split, name in BARS_FILES.items():
        with progress(f"kuaivideo: checking {name}"):
            frame, rows[raw_dir / name] = scan_csv(raw_dir / name, BARS_COLUMNS, policy, [label_check("is_click")],
                                                   optional=("pos_items", "neg_items"))
        frames[split] = frame.with_columns(pl.col("is_click").cast(pl.Float32).alias(LABEL))
    with progress(f"kuaivideo: reading {BARS_TABLE}"):
        table = read_h5_table(raw_dir / BARS_TABLE)
    rows[table.path] = table.keys.len()
    return RawSplits(rules.split(frames["train"], frames["test"]), rows), (table,)


def preprocess_kuaivideo(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_rules("kuaivideo", SequenceRules)
    release = detect_release(raw_dir, RELEASES, "kuaivideo", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    raw, tables = read_bars(raw_dir, rules, policy)
    return write_dataset(out_dir, "kuaivideo", release, raw, features(rules, tables), rules, policy,
                         ("BARS KuaiVideo_x1", BARS_ROWS))
