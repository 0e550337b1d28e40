"""A seeded stand-in for the raw Tianchi Taobao release, at any size, for tests and benchmarks.

    python -m preprocess.taobaoads_synthetic DIR --impressions N --behaviours M [--seed S]

writes raw_sample.csv, ad_feature.csv, user_profile.csv and behavior_log.csv in the real formats and
proportions: about 23 impressions per user over 2017-05-06..13 and behaviours over the 22 days before
2017-05-14 (UTC+8), clicks at ~5%, a third of the brands NULL, empty profile fields, the profile
header's trailing space, and a few users without a profile. The values carry no signal; the files
exist to measure and test the converter, not to train on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from preprocess.taobaoads import AD_COLUMNS, BEHAVIOUR_COLUMNS, BEHAVIOUR_TAGS, SAMPLE_COLUMNS, USER_COLUMNS

FIRST_IMPRESSION = 1_494_000_000  # 2017-05-06 00:00 in UTC+8
FIRST_BEHAVIOUR = FIRST_IMPRESSION - 14 * 86_400  # 2017-04-22
END = FIRST_IMPRESSION + 8 * 86_400  # 2017-05-14


def write_release(directory: Path, impressions: int, behaviours: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    users, ads = max(1, impressions // 23), max(1, impressions // 30)
    brands = pl.Series(rng.integers(1, max(2, ads // 3), ads)).cast(pl.String)
    brands = brands.scatter(np.flatnonzero(rng.random(ads) < 0.3), "NULL")
    pl.DataFrame({
        "adgroup_id": np.arange(1, ads + 1), "cate_id": rng.integers(1, 12_000, ads),
        "campaign_id": rng.integers(1, max(2, ads // 2), ads), "customer": rng.integers(1, max(2, ads // 3), ads),
        "brand": brands,
        "price": np.round(rng.lognormal(4, 1.5, ads), 2),
    }).select(AD_COLUMNS).write_csv(directory / "ad_feature.csv")

    with_profile = np.flatnonzero(rng.random(users) < 0.93) + 1
    profile = {"userid": with_profile}
    for name, levels, empty in [("cms_segid", 97, 0), ("cms_group_id", 13, 0), ("final_gender_code", 2, 0),
                                ("age_level", 7, 0), ("pvalue_level", 3, 0.54), ("shopping_level", 3, 0),
                                ("occupation", 2, 0), ("new_user_class_level", 4, 0.32)]:
        values = rng.integers(0 if name in ("cms_segid", "occupation") else 1, levels + 1, len(with_profile))
        profile[name] = pl.Series(values).scatter(np.flatnonzero(rng.random(len(with_profile)) < empty), None)
    # The real header ends with a space after new_user_class_level.
    pl.DataFrame(profile).rename(dict(zip(profile, USER_COLUMNS))).write_csv(directory / "user_profile.csv")

    clk = (rng.random(impressions) < 0.05).astype(np.int64)
    pl.DataFrame({
        "user": rng.integers(1, users + 1, impressions),
        "time_stamp": rng.integers(FIRST_IMPRESSION, END, impressions),
        "adgroup_id": rng.integers(1, ads + 1, impressions),
        "pid": np.where(rng.random(impressions) < 0.6, "430548_1007", "430539_1007"),
        "nonclk": 1 - clk, "clk": clk,
    }).select(SAMPLE_COLUMNS).write_csv(directory / "raw_sample.csv")

    chunk = 5_000_000  # rows generated and appended at a time
    with (directory / "behavior_log.csv").open("wb") as handle:
        for start in range(0, max(behaviours, 1), chunk):
            n = min(chunk, behaviours - start)
            brand = rng.integers(1, max(2, ads // 3), n).astype(str)
            pl.DataFrame({
                "user": rng.integers(1, users + 1, n), "time_stamp": rng.integers(FIRST_BEHAVIOUR, END, n),
                "btag": np.array(BEHAVIOUR_TAGS)[rng.choice(4, n, p=[0.9, 0.04, 0.03, 0.03])],
                "cate": rng.integers(1, 12_000, n), "brand": np.where(rng.random(n) < 0.1, "NULL", brand),
            }).select(BEHAVIOUR_COLUMNS).write_csv(handle, include_header=start == 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--impressions", type=int, required=True, help="rows of raw_sample.csv")
    parser.add_argument("--behaviours", type=int, required=True, help="rows of behavior_log.csv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_release(args.directory, args.impressions, args.behaviours, args.seed)


if __name__ == "__main__":
    main()
