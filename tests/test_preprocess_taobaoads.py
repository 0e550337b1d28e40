"""TaobaoAds converter: both releases on tiny fixtures (exact encodings), histories, bad input, the CLI.

No real Tianchi or BARS TaobaoAd files are available on these machines; the fixtures reproduce their
formats, quirks included: user_profile.csv's header ends with a space, profile fields are often empty,
brands are often NULL, timestamps are epoch seconds whose day is counted in UTC+8 (1494000000 is
2017-05-06 00:00 in Beijing but still 2017-05-05 in UTC), and BARS x1 rows are `0`-filled DMR data.
"""

import functools
import shutil
from pathlib import Path

import polars as pl
import pytest

from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.datasets import load_dataset_config
from ctrbench.data.features import FeatureMap
from preprocess.options import PreprocessOptions
from preprocess.rules import load_rules
from preprocess.taobaoads import TaobaoRules, preprocess_taobaoads

FIXTURES = Path(__file__).parent / "fixtures" / "taobaoads"
PROFILE = ("cms_segid", "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level",
           "occupation", "new_user_class_level")
AD = ("adgroup_id", "cate_id", "campaign_id", "customer", "brand")

# raw_sample.csv rows 2-7: user 1 at 05-06 00:00:00 and 05-12 23:59:59 (train) and 05-13 00:00:00 (test,
# Beijing time), user 2 (no profile) on 05-06 and 05-13 (ad 99 has no features), user 3 on 05-05 (left
# out). Encoded by hand with min count 1 and max_len 3; histories are the user's behaviours strictly
# before the impression: user 1's cart at exactly 1494000000 is not in the first impression's history,
# nor the buy at exactly 1494604800 in the test one's.
RAW_TRAIN = {
    "userid": [2, 2, 3], **{name: [2, 2, 1] for name in PROFILE}, "pvalue_level": [1, 1, 1],  # empty -> OOV
    "adgroup_id": [2, 3, 4], "cate_id": [2, 3, 4], "campaign_id": [2, 3, 4], "customer": [2, 3, 4],
    "brand": [2, 1, 4],  # ad 12's brand is NULL
    "pid": [2, 3, 2], "btag": [2, 2, 2], "price": [49.0, 1999.5, 0.5],
    "cate_his": [[0, 0, 2], [2, 3, 2], [0, 0, 4]],  # cates 5 -> 2, 6 -> 3, 8 -> 4
    "brand_his": [[0, 0, 2], [2, 1, 3], [0, 0, 1]],  # brands 100 -> 2, 101 -> 3, 103 -> 4; NULL -> OOV
    "btag_his": [[0, 0, 2], [2, 3, 4], [0, 0, 2]],  # pv -> 2, cart -> 3, fav -> 4
    "label": [0, 1, 0],
}
RAW_TEST = {
    "userid": [2, 3], **{name: [2, 1] for name in PROFILE}, "pvalue_level": [1, 1],
    **{name: [2, 1] for name in AD}, "brand": [2, 1], "pid": [2, 3], "btag": [2, 2], "price": [49.0, 0.0],
    "cate_his": [[2, 3, 2], [0, 0, 4]], "brand_his": [[2, 1, 3], [0, 0, 1]], "btag_his": [[2, 3, 4], [0, 0, 2]],
    "label": [0, 1],
}


@pytest.fixture
def rules(preprocess_rules):
    """Override keys of dataset_configs/taobaoads.yaml's preprocess section (min_count=1, max_len=3 by default)."""
    preprocess_rules("taobaoads", min_count=1, max_len=3)
    return functools.partial(preprocess_rules, "taobaoads")


def read_split(fmap: FeatureMap, split: str) -> dict[str, list]:
    frame = pl.read_parquet(fmap.split_paths(split))
    return {name: frame[name].to_list() for name in frame.columns}


def copy_release(tmp_path: Path, release: str) -> Path:
    shutil.copytree(FIXTURES / release, tmp_path / release)
    return tmp_path / release


def test_raw_release_encodes_exactly(rules, tmp_path):
    fmap = preprocess_taobaoads(FIXTURES / "raw", tmp_path / "out", PreprocessOptions())
    assert [f.name for f in fmap.features] == ["userid", *PROFILE, *AD, "pid", "btag", "price", "cate_his",
                                               "brand_his", "btag_his"]  # BARS's order
    assert (fmap.feature("price").type, fmap.feature("brand_his").share_embedding) == ("numeric", "brand")
    assert read_split(fmap, "train") == {name: RAW_TRAIN[name] for name in read_split(fmap, "train")}
    assert read_split(fmap, "test") == {name: RAW_TEST[name] for name in read_split(fmap, "test")}
    assert fmap.source["impressions_outside_the_days"] == 1
    assert fmap.source["impressions_without_ad_features"] == 1
    assert fmap.source["impressions_without_user_profile"] == 2
    assert {name: entry["rows_kept"] for name, entry in fmap.source["inputs"].items()} == {
        "raw_sample.csv": 6, "ad_feature.csv": 3, "user_profile.csv": 2, "behavior_log.csv": 7}
    assert fmap.source["rules"]["train_days"] == ["2017-05-06", "2017-05-12"]


def test_days_are_counted_in_utc_plus_8(rules, tmp_path):
    rules(utc_offset_hours=0)  # in UTC, 1494000000 falls on 05-05 and 1494604800 on 05-12
    fmap = preprocess_taobaoads(FIXTURES / "raw", tmp_path / "out", PreprocessOptions())
    assert {s: info.rows for s, info in fmap.splits.items()} == {"train": 3, "valid": 1, "test": 1}
    assert fmap.source["impressions_outside_the_days"] == 2


def test_behaviour_log_is_filtered_to_users_and_times_it_can_inform(rules, tmp_path):
    raw = copy_release(tmp_path, "raw")
    with (raw / "behavior_log.csv").open("a") as handle:  # a user without impressions, a behaviour too late
        handle.write("4,1494000001,buy,5,100\n1,1494700000,buy,7,102\n")
    fmap = preprocess_taobaoads(raw, tmp_path / "out", PreprocessOptions())
    assert read_split(fmap, "train") == {name: RAW_TRAIN[name] for name in read_split(fmap, "train")}
    assert read_split(fmap, "test") == {name: RAW_TEST[name] for name in read_split(fmap, "test")}


def test_bars_release_encodes_exactly(rules, tmp_path):
    fmap = preprocess_taobaoads(FIXTURES / "bars_x1", tmp_path / "out", PreprocessOptions())
    train, test = read_split(fmap, "train"), read_split(fmap, "test")
    # `0` fills are values: brand "100" (3 in all) -> 2, then "0", "101", "103" (1 each, by text) -> 3, 4, 5
    assert train["brand"] == [2, 3, 5] and test["brand"] == [2, 3]
    assert train["brand_his"] == [[0, 0, 2], [0, 2, 4], [0, 0, 0]]  # the empty field: no history
    assert train["cate_his"] == [[0, 0, 2], [2, 3, 2], [0, 0, 4]] and test["cate_id"] == [2, 1]
    assert train["btag_his"] == [[0, 0, 2], [2, 3, 4], [0, 0, 2]] and train["btag"] == [2, 2, 2]
    assert train["cms_group_id"] == [2, 2, 3] and train["pvalue_level"] == [2, 2, 2]
    assert train["price"] == [49.0, 1999.5, 0.5] and test["label"] == [0, 1]
    assert fmap.feature("brand").vocab_size == 6 and fmap.feature("btag_his").vocab_size == 5


def test_bars_empty_fields_are_missing_values(rules, tmp_path):
    """An empty categorical field is OOV (FuxiCTR fills "", which no vocabulary holds), an empty price 0.0
    (its numeric fill); the row is kept. An empty clk is a bad row."""
    raw = copy_release(tmp_path, "bars_x1")
    row = "1,1,8,,2,0,0,0,0,0,0,0,0,99,0,0,0,0,0.0,430539_1007,1"
    (raw / "test.csv").write_text((raw / "test.csv").read_text().replace(row, "1,1,8,,2,0,,0,0,0,0,0,0,99,0,0,0,,,"
                                                                                     "430539_1007,1"))
    fmap = preprocess_taobaoads(raw, tmp_path / "out", PreprocessOptions())
    test = read_split(fmap, "test")
    assert fmap.source["skipped_rows"] == {} and test["label"] == [0, 1]
    assert test["brand"] == [2, 1] and test["cms_group_id"] == [2, 1] and test["price"] == [49.0, 0.0]
    (raw / "test.csv").write_text((raw / "test.csv").read_text().replace("\n0,1^2^3,", "\n,1^2^3,"))
    with pytest.raises(CtrbenchError, match=r"test.csv:2: missing or empty field 'clk'"):
        preprocess_taobaoads(raw, tmp_path / "out", PreprocessOptions())


def test_default_min_count_10_maps_rare_values_to_oov(tmp_path):
    assert load_rules("taobaoads", TaobaoRules).min_count == 10
    fmap = preprocess_taobaoads(FIXTURES / "bars_x1", tmp_path / "out", PreprocessOptions())
    assert {f.vocab_size for f in fmap.features if f.type != "numeric"} == {2}  # no value is seen 10 times
    assert fmap.feature("cate_his").max_len == 50 and read_split(fmap, "test")["cate_his"][0] == [0] * 47 + [1] * 3


@pytest.mark.parametrize("release, file, line, text, message", [
    ("raw", "user_profile.csv", 1,
     "userid,cms_segid,cms_group_id,final_gender_code,age_level,pvalue_level,shopping_level,occupation,"
     "new_user_class_level\n", "user_profile.csv:1: wrong header"),
    ("raw", "raw_sample.csv", 3, "1,1494604799,12,430539_1007,0,2\n",
     "raw_sample.csv:3: clk must be 0 or 1, found '2'"),
    ("raw", "raw_sample.csv", 4, "1,1494604800,11,430548_1007,1,1\n", "raw_sample.csv:4: nonclk must be 1 - clk"),
    ("raw", "raw_sample.csv", 5, "2,,13,430548_1007,1,0\n", "raw_sample.csv:5: missing or empty field 'time_stamp'"),
    ("raw", "behavior_log.csv", 6, "2,1494090000,click,8,NULL\n",
     "behavior_log.csv:6: btag must be one of pv, cart, fav, buy, found 'click'"),
    ("raw", "behavior_log.csv", 2, "1,1493900000,pv,5.5,100\n", "behavior_log.csv:2: cate must be an integer"),
    ("raw", "ad_feature.csv", 4, "11,8,903,803,103,0.5\n", "ad_feature.csv:4: adgroup_id appears on an earlier line"),
    ("raw", "ad_feature.csv", 3, "12,6,902,802,NULL,\n", "ad_feature.csv:3: missing or empty field 'price'"),
    ("bars_x1", "test.csv", 2, "0,1,5,100,1,0,5,2,3,0,3,0,2,11,5,901,801,100,cheap,430548_1007,1\n",
     "test.csv:2: price must be a number, found 'cheap'"),
    ("bars_x1", "train.csv", 4, "1,1,8,,2,0\n", "train.csv:4: fewer than the header's 21 fields"),
])
def test_bad_row_stops_with_file_and_line(release, file, line, text, message, tmp_path):
    raw = copy_release(tmp_path, release)
    lines = (raw / file).read_text().splitlines(keepends=True)
    lines[line - 1] = text
    (raw / file).write_text("".join(lines))
    with pytest.raises(CtrbenchError) as error:
        preprocess_taobaoads(raw, tmp_path / "out", PreprocessOptions())
    assert str(error.value).startswith(f"{raw / file}:") and message in str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_skip_bad_rows_counts_them(rules, tmp_path):
    raw = copy_release(tmp_path, "raw")
    with (raw / "behavior_log.csv").open("a") as handle:
        handle.write("1,1494000100,view,5,100\n2,later,pv,8,NULL\n")
    with (raw / "raw_sample.csv").open("a") as handle:
        handle.write("1,1494000100,11,430548_1007,1,1\n")
    fmap = preprocess_taobaoads(raw, tmp_path / "out", PreprocessOptions(skip_bad_rows=True))
    assert fmap.source["skipped_rows"] == {"raw_sample.csv: nonclk must be 1 - clk": 1,
                                           "behavior_log.csv: time_stamp must be an integer": 1,
                                           "behavior_log.csv: btag must be one of pv, cart, fav, buy": 1}
    assert read_split(fmap, "train") == {name: RAW_TRAIN[name] for name in read_split(fmap, "train")}


def test_cli_preprocess_taobaoads(tmp_path, capsys):
    out = tmp_path / "taobaoads"
    assert main(["preprocess", "taobaoads", "--raw", str(FIXTURES / "raw"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "taobaoads: found the raw release" in err and "taobaoads: 1 impressions outside the days" in err
    assert "taobaoads: train / valid / test rows 3 / 2 / 2, BARS TaobaoAd_x1 has 21,929,911 / 3,099,515 / " \
           "3,099,515" in err
    assert FeatureMap.load(out).splits["train"].rows == 3
    assert main(["preprocess", "taobaoads", "--raw", str(FIXTURES / "raw"), "--release", "bars_x1"]) == 2
    assert capsys.readouterr().err == (f"error: {FIXTURES / 'raw' / 'train.csv'}: file not found; the bars_x1 "
                                       "release of taobaoads needs train.csv, test.csv\n")


def test_rules_name_the_bad_key():
    from preprocess.rules import rules_from_section

    good = load_dataset_config("taobaoads").preprocess
    assert rules_from_section(good, TaobaoRules, "t.yaml: preprocess").test_days[0].isoformat() == "2017-05-13"
    for change, message in [
        ({"keep": "newest"}, "t.yaml: preprocess.keep: expected 'recent' | 'oldest', got 'newest'"),
        ({"valid": "train"}, "t.yaml: preprocess.valid: expected 'test' | 'holdout'"),
        ({"max_lenght": 5}, "t.yaml: preprocess: unknown key 'max_lenght' (did you mean 'max_len'?)"),
        ({"test_days": ["2017-05-13"]}, "t.yaml: preprocess.test_days[0]: expected date, got '2017-05-13'"),
        ({"test_days": good["train_days"][::-1]}, "t.yaml: preprocess: test_days must be [first day, last day], "
                                                  "got [2017-05-12, 2017-05-06]"),
        ({"test_days": good["train_days"]}, "t.yaml: preprocess: train_days [2017-05-06, 2017-05-12] and "
                                            "test_days [2017-05-06, 2017-05-12] overlap"),
        ({"max_len": 0}, "t.yaml: preprocess: max_len must be >= 1, got 0"),
    ]:
        with pytest.raises(CtrbenchError) as error:
            rules_from_section({**good, **change}, TaobaoRules, "t.yaml: preprocess")
        assert str(error.value).startswith(message)


def test_generated_release_converts(tmp_path):
    from preprocess.taobaoads_synthetic import main as generate

    generate([str(tmp_path / "raw"), "--impressions", "3000", "--behaviours", "30000", "--seed", "1"])
    assert (tmp_path / "raw" / "user_profile.csv").read_text().splitlines()[0].endswith("new_user_class_level ")
    fmap = preprocess_taobaoads(tmp_path / "raw", tmp_path / "out", PreprocessOptions())
    assert fmap.splits["train"].rows + fmap.splits["test"].rows == 3000 and fmap.source["skipped_rows"] == {}
    histories = pl.read_parquet(fmap.split_paths("train"), columns=["cate_his"])["cate_his"]
    assert histories.list.len().unique().to_list() == [50] and histories.list.get(-1).gt(0).mean() > 0.9
