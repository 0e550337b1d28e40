"""Taobao display-ad clicks (Alibaba, Tianchi dataset 56), as in BARS TaobaoAd_x1.

Two releases are accepted (`ctrbench preprocess taobaoads --raw DIR`, `--release` to choose when a
directory holds both):

* bars_x1: BARS TaobaoAd_x1, `train.csv` and `test.csv` with header `clk,btag_his,cate_his,brand_his,`
  `userid,...,price,pid,btag` (BARS_COLUMNS; histories `^`-joined, possibly empty). BARS built it from
  the DMR work's preprocessed data (missing values filled with 0, histories of 50 behaviours). An empty
  categorical field is a missing value: OOV (as FuxiCTR's `fill_na` fills it with "", which is never in
  a vocabulary); an empty price is 0 (its `fill_na` for numbers); an empty clk is a bad row.
* raw: the Tianchi files. `raw_sample.csv` (user,time_stamp,adgroup_id,pid,nonclk,clk): one impression
  per row, label clk (nonclk must be 1 - clk). `ad_feature.csv` (adgroup_id,cate_id,campaign_id,
  customer,brand,price; brand often NULL) and `user_profile.csv` (userid,cms_segid,...,
  new_user_class_level -- its header really ends with a space; empty fields are common) are joined on
  the ad and the user. `behavior_log.csv` (user,time_stamp,btag,cate,brand; btag pv/cart/fav/buy;
  ~700M rows) gives each impression its btag_his / cate_his / brand_his: the user's behaviours
  strictly before the impression, the `max_len` most recent kept. It is streamed, never loaded whole
  (`with_histories`). Timestamps are epoch seconds; days are counted in UTC+8 (`utc_offset_hours`),
  train is 2017-05-06..12 and test 2017-05-13 (`train_days`, `test_days`), as in BARS. Missing values
  (empty, NULL, a user without a profile, an ad without features) map to OOV, as FuxiCTR does with empty
  fields; a missing price is 0. Every impression gets btag "pv" (BARS x1 sets btag = 1 for all rows).

Both releases are encoded with BARS's FuxiCTR feature definitions: 16 categorical fields (min count
10), price numeric (raw, as BARS), and cate_his / brand_his / btag_his sharing cate_id's / brand's /
btag's tables. BARS has no validation split; `valid` in dataset_configs/taobaoads.yaml says what to
do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows, Check
from preprocess.encoding import Feature
from preprocess.histories import scratch_dir, with_histories
from preprocess.inputs import detect_release, progress
from preprocess.options import PreprocessOptions
from preprocess.readers import LABEL, integer_check, label_check, number_check, scan_csv
from preprocess.rules import SequenceRules, load_rules
from preprocess.splits import RawSplits
from preprocess.writing import write_dataset

# BARS TaobaoAd_x1 (from its training logs; its README leaves the split sizes blank). BARS validates on test.
BARS_ROWS = {"train": 21_929_911, "valid": 3_099_515, "test": 3_099_515}
BARS_FILES = {"train": "train.csv", "test": "test.csv"}
USER_FIELDS = ("userid", "cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level",
               "shopping_level", "occupation", "new_user_class_level")
AD_FIELDS = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")
CATEGORICAL = (*USER_FIELDS, *AD_FIELDS, "pid", "btag")
HISTORIES = {"cate_his": "cate_id", "brand_his": "brand", "btag_his": "btag"}  # history -> feature it shares
BARS_COLUMNS = ("clk", "btag_his", "cate_his", "brand_his", *USER_FIELDS, *AD_FIELDS, "price", "pid", "btag")

RAW_FILES = {"sample": "raw_sample.csv", "ads": "ad_feature.csv", "users": "user_profile.csv",
             "behaviour": "behavior_log.csv"}
SAMPLE_COLUMNS = ("user", "time_stamp", "adgroup_id", "pid", "nonclk", "clk")
AD_COLUMNS = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price")
USER_COLUMNS = (*USER_FIELDS[:-1], USER_FIELDS[-1] + " ")  # the Tianchi header ends with a space
BEHAVIOUR_COLUMNS = ("user", "time_stamp", "btag", "cate", "brand")
BEHAVIOUR_TAGS = ("pv", "cart", "fav", "buy")
BEHAVIOUR_HISTORIES = {"btag_his": "btag", "cate_his": "cate", "brand_his": "brand"}  # history -> log column
RELEASES = {"bars_x1": list(BARS_FILES.values()), "raw": list(RAW_FILES.values())}
NULL_TEXT = "NULL"  # how the Tianchi files write a missing brand
SECONDS_PER_DAY = 86_400


@dataclass
class TaobaoRules(SequenceRules):
    """The sequence rules plus the raw release's day split (first and last day, inclusive)."""

    train_days: list[date]
    test_days: list[date]
    utc_offset_hours: int  # days start at midnight of this time zone (Tianchi: UTC+8, Beijing)

    def __post_init__(self) -> None:
        super().__post_init__()
        shown = {name: "[" + ", ".join(day.isoformat() for day in getattr(self, name)) + "]"
                 for name in ("train_days", "test_days")}
        for name in shown:
            days = getattr(self, name)
            if len(days) != 2 or days[0] > days[1]:
                raise CtrbenchError(f"{name} must be [first day, last day], got {shown[name]}")
        if self.train_days[1] >= self.test_days[0] and self.test_days[1] >= self.train_days[0]:
            raise CtrbenchError(f"train_days {shown['train_days']} and test_days {shown['test_days']} overlap")


def features(rules: TaobaoRules) -> list[Feature]:
    return [
        *[Feature(name, "categorical", min_count=rules.min_count) for name in CATEGORICAL],
        Feature("price", "numeric", transform="none (the raw price, as BARS)"),
        *[Feature(name, "sequence", max_len=rules.max_len, keep=rules.keep, share_embedding=owner)
          for name, owner in HISTORIES.items()],
    ]


def read_bars(raw_dir: Path, rules: TaobaoRules, policy: BadRows) -> RawSplits:
    frames, rows = {}, {}
    for split, name in BARS_FILES.items():
        with progress(f"taobaoads: checking {name}"):
            frame, rows[raw_dir / name] = scan_csv(raw_dir / name, BARS_COLUMNS, policy,
                                                   [label_check("clk"), number_check("price")],
                                                   optional=[c for c in BARS_COLUMNS if c != "clk"],
                                                   complete_rows=True)
        frames[split] = frame.with_columns(pl.col("clk").cast(pl.Float32).alias(LABEL),
                                           pl.col("price").fill_null("0"))
    return RawSplits(rules.split(frames["train"], frames["test"]), rows)


def scan_raw(raw_dir: Path, part: str, columns: tuple[str, ...], policy: BadRows, integers: tuple[str, ...],
             checks: tuple[Check, ...] = (), optional: tuple[str, ...] = ()) -> tuple[pl.LazyFrame, int]:
    """One Tianchi file, checked; `integers` become Int64 columns."""
    path = raw_dir / RAW_FILES[part]
    with progress(f"taobaoads: checking {path.name}"):
        frame, rows = scan_csv(path, columns, policy, [*map(integer_check, integers), *checks], optional, NULL_TEXT)
    return frame.with_columns(pl.col(integers).cast(pl.Int64)), rows


def unique_check(column: str) -> Check:
    return ~pl.col(column).is_first_distinct(), f"{column} appears on an earlier line too", pl.col(column)


def read_tianchi(raw_dir: Path, rules: TaobaoRules, policy: BadRows, scratch: Path) -> RawSplits:
    rows = {}
    sample, rows[raw_dir / RAW_FILES["sample"]] = scan_raw(
        raw_dir, "sample", SAMPLE_COLUMNS, policy, ("user", "time_stamp", "adgroup_id"),
        (label_check("clk"), label_check("nonclk"),
         (pl.col("nonclk").cast(pl.Float64, strict=False) != 1 - pl.col("clk").cast(pl.Float64, strict=False),
          "nonclk must be 1 - clk", pl.col("nonclk"))))
    ads, rows[raw_dir / RAW_FILES["ads"]] = scan_raw(
        raw_dir, "ads", AD_COLUMNS, policy, AD_FIELDS, (number_check("price"), unique_check("adgroup_id")),
        optional=("brand",))
    users, rows[raw_dir / RAW_FILES["users"]] = scan_raw(
        raw_dir, "users", USER_COLUMNS, policy, USER_COLUMNS, (unique_check("userid"),), optional=USER_COLUMNS[1:])
    behaviour, rows[raw_dir / RAW_FILES["behaviour"]] = scan_raw(
        raw_dir, "behaviour", BEHAVIOUR_COLUMNS, policy, ("user", "time_stamp", "cate", "brand"),
        ((~pl.col("btag").is_in(BEHAVIOUR_TAGS), f"btag must be one of {', '.join(BEHAVIOUR_TAGS)}",
          pl.col("btag")),), optional=("brand",))

    # Each impression's day in UTC+offset decides its split; days outside both ranges are left out.
    day = ((pl.col("time_stamp") + rules.utc_offset_hours * 3600) // SECONDS_PER_DAY).cast(pl.Date)
    split = (pl.when(day.is_between(*rules.train_days)).then(pl.lit("train"))
             .when(day.is_between(*rules.test_days)).then(pl.lit("test")))
    impressions = sample.select("line", "user", "time_stamp", "adgroup_id", "pid",
                                pl.col("clk").cast(pl.Float32).alias(LABEL), split.alias("split")).collect()
    outside = impressions["split"].null_count()
    impressions = impressions.drop_nulls("split")
    tags = pl.Enum(BEHAVIOUR_TAGS)  # btag as a small code while histories are gathered, text again after
    history = with_histories(impressions, behaviour.with_columns(pl.col("btag").cast(tags)), BEHAVIOUR_HISTORIES,
                             user="user", time="time_stamp", max_len=rules.max_len, keep=rules.keep, scratch=scratch)
    ads = ads.with_columns(pl.col("price").cast(pl.Float64)).collect()
    users = users.rename({USER_COLUMNS[-1]: USER_FIELDS[-1]}).collect()
    without_ad = impressions.filter(~pl.col("adgroup_id").is_in(ads["adgroup_id"].implode())).height
    without_profile = impressions.filter(~pl.col("user").is_in(users["userid"].implode())).height
    rows_with_features = (history.join(ads.lazy().drop("line"), on="adgroup_id", how="left", maintain_order="left")
                          .join(users.lazy().drop("line"), left_on="user", right_on="userid", how="left",
                                maintain_order="left")
                          .with_columns(pl.col("user").alias("userid"), pl.col("price").fill_null(0.0),
                                        pl.lit("pv").alias("btag"), pl.col("btag_his").cast(pl.List(pl.String))))
    splits = rules.split(rows_with_features.filter(pl.col("split") == "train"),
                         rows_with_features.filter(pl.col("split") == "test"))
    notes = {"impressions_outside_the_days": outside, "impressions_without_ad_features": without_ad,
             "impressions_without_user_profile": without_profile}
    for note, count in notes.items():
        if count:
            console.print(f"taobaoads: {count:,} {note.replace('_', ' ')}", highlight=False)
    return RawSplits(splits, rows, notes)


def preprocess_taobaoads(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_rules("taobaoads", TaobaoRules)
    release = detect_release(raw_dir, RELEASES, "taobaoads", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    with scratch_dir(out_dir) as scratch:
        raw = read_bars(raw_dir, rules, policy) if release == "bars_x1" else read_tianchi(raw_dir, rules, policy,
                                                                                            scratch)
        return write_dataset(out_dir, "taobaoads", release, raw, features(rules), rules, policy,
                             ("BARS TaobaoAd_x1", BARS_ROWS), options.shuffle_seed)
