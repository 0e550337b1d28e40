import numpy as np
import polars as pl
import pytest

from ctrbench.errors import CtrbenchError
from preprocess.common import (
    BadRows,
    CategoricalRules,
    Vocabulary,
    describe_inputs,
    detect_release,
    read_csv,
    read_libfm,
    rules_from_section,
    sample_negatives,
    split_rows,
)


def test_bad_rows_stop_at_first_with_line_number(tmp_path):
    path = tmp_path / "x.csv"
    with pytest.raises(CtrbenchError, match=r"x.csv:7: label must be 0 or 1; fix the file or pass --skip-bad-rows"):
        BadRows().check(np.array([False, True, True]), path, np.array([6, 7, 8]), "label must be 0 or 1")


def test_bad_rows_skip_and_count(tmp_path):
    policy = BadRows(skip=True)
    keep = policy.check(np.array([False, True, True]), tmp_path / "x.csv", np.array([2, 3, 4]), "short row")
    policy.check(np.array([True]), tmp_path / "x.csv", np.array([9]), "short row")
    assert keep.tolist() == [True, False, False]
    assert policy.total == 3 and policy.report() == {"x.csv: short row": 3}


def test_detect_release(tmp_path):
    (tmp_path / "train.csv").write_text("a\n")
    releases = {"bars_x1": ["train.csv", "valid.csv"], "raw": ["*.log"]}
    with pytest.raises(CtrbenchError, match="no known demo release here; expected one of these file sets: bars_x1: train.csv, valid.csv; raw: \\*.log"):
        detect_release(tmp_path, releases, "demo")
    (tmp_path / "valid.csv").write_text("a\n")
    assert detect_release(tmp_path, releases, "demo") == "bars_x1"
    assert describe_inputs([tmp_path / "train.csv"], {"train.csv": 1})["train.csv"]["rows"] == 1


def test_bad_rows_report_the_earliest_line_and_count_each_row_once(tmp_path):
    lines = np.array([2, 3, 4, 5])
    rules = [(np.array([False, False, True, True]), "too few fields", None),
             (np.array([False, True, False, True]), "label must be 0 or 1", pl.Series(["0", "7", "1", "x"]))]
    with pytest.raises(CtrbenchError, match=r"x.csv:3: label must be 0 or 1, found '7'; fix the file"):
        BadRows().check_rules(tmp_path / "x.csv", lines, rules)
    policy = BadRows(skip=True)
    assert policy.check_rules(tmp_path / "x.csv", lines, rules).tolist() == [True, False, False, False]
    assert policy.skipped == {"x.csv: too few fields": 2, "x.csv: label must be 0 or 1": 1}


def test_vocabulary_order_min_count_and_oov():
    train = pl.Series("city", ["b", "a", "c", "b", "a", "d", "b"])
    vocab = Vocabulary.build(train, min_count=2)  # b: 3, a: 2 (c, d seen once: OOV)
    assert vocab.values.to_list() == ["b", "a"] and vocab.size == 4
    assert vocab.encode(pl.Series("city", ["a", "b", "c", "zzz", None])).to_list() == [3, 2, 1, 1, 1]
    ties = Vocabulary.build(pl.Series("item", [30, 4, 200, 4, 30]), min_count=1)  # equal counts: by value
    assert ties.values.to_list() == [4, 30, 200]
    assert ties.encode(pl.Series("item", [200, 4, 5])).dtype == pl.Int32


def test_read_csv_quotes_crlf_and_line_numbers(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_bytes(b'userId,movieId,tag,timestamp\r\n1,10,"dark, funny",100\r\n2,20,"a ""quoted"" tag",200\r\n'
                     b'3,30,"two\nlines",300\r\n4,40,plain,400\r\n')
    frame = read_csv(path, ["userId", "movieId", "tag", "timestamp"], BadRows())
    assert frame["tag"].to_list() == ["dark, funny", 'a "quoted" tag', "two\nlines", "plain"]
    assert frame["line"].to_list() == [2, 3, 4, 6] and frame["timestamp"].to_list() == ["100", "200", "300", "400"]

    path.write_bytes(b"userId,movieId,tag,timestamp\n1,10,x,100\n\n2,20,,200\n3,30,y,300,extra\n4,40,z,400\n")
    with pytest.raises(CtrbenchError, match=r"tags.csv:3: empty line; fix the file or pass --skip-bad-rows"):
        read_csv(path, ["userId", "movieId", "tag", "timestamp"], BadRows())
    policy = BadRows(skip=True)
    frame = read_csv(path, ["userId", "movieId", "tag", "timestamp"], policy)
    assert frame["line"].to_list() == [2, 6]
    assert policy.skipped == {"tags.csv: empty line": 1, "tags.csv: more than the header's 4 fields": 1,
                              "tags.csv: missing or empty field 'tag'": 1}
    with pytest.raises(CtrbenchError, match=r"tags.csv:1: wrong header 'userId,movieId,tag,timestamp'; "
                                            r"expected 'userId,movieId,tag'"):
        read_csv(path, ["userId", "movieId", "tag"], BadRows())
    with pytest.raises(CtrbenchError, match=r"nope.csv: file not found"):
        read_csv(tmp_path / "nope.csv", ["a"], BadRows())


def test_read_libfm_crlf_labels_and_token_checks(tmp_path):
    path = tmp_path / "x.libfm"
    path.write_bytes(b"1 3:1 17:1\r\n-1 4:1  9:1\r\n-1\t3:1 9:1\r\n")
    frame = read_libfm(path, ["user", "item"], ("-1", "1"), BadRows())
    assert frame.rows() == [(1, 1.0, 3, 17), (2, 0.0, 4, 9), (3, 0.0, 3, 9)]
    assert frame.columns == ["line", "label", "user", "item"]
    for text, message in [(b"1 3:1 17:1\n1 3:1\n",
                           "x.libfm:2: expected 3 tokens (label, then index:1 for user, item), found 2"),
                          (b"1 3:1 17:1\n0 3:1 17:1\n", "x.libfm:2: label must be -1 or 1, found '0'"),
                          (b"1 3:1 a:1\n", "x.libfm:1: token 2 (item) is not index:value with a non-negative "
                                           "integer index, found 'a:1'"),
                          (b"1 3:1 17\n", "x.libfm:1: token 2 (item) is not index:value"),
                          (b"1 3:0.5 17:1\n", "x.libfm:1: token 1 (user) must have value 1 (one-hot), found '3:0.5'"),
                          (b"1 3:1 17:1\n\xff 1:1 2:1\n", "x.libfm:2: not UTF-8 text")]:
        path.write_bytes(text)
        with pytest.raises(CtrbenchError) as error:
            read_libfm(path, ["user", "item"], ("-1", "1"), BadRows())
        assert str(error.value).startswith(f"{tmp_path}/{message}")
    path.write_bytes(b"0 3:1 17:1\n1 4:1 18:1\n")
    assert read_libfm(path, ["user", "item"], ("0", "1"), BadRows())["label"].to_list() == [0.0, 1.0]


def test_sample_negatives_exact_on_a_tiny_log():
    # items x, y, z; user a used x, user b used x and y, user c used z: b's negatives can only be z.
    positives = pl.DataFrame({"user": ["a", "b", "b", "c"], "item": ["x", "x", "y", "z"], "hour": [1, 2, 3, 4]})
    negatives = sample_negatives(positives, "item", ["user"], per_positive=1, seed=0)
    assert negatives.select("user", "hour").rows() == positives.select("user", "hour").rows()
    assert negatives["item"][0] in ("y", "z") and negatives["item"][1:3].to_list() == ["z", "z"]
    assert negatives["item"][3] in ("x", "y")
    one_each = pl.DataFrame({"user": ["a", "c", "d"], "item": ["x", "y", "z"]})  # 2 negatives: the 2 other items
    pairs = sample_negatives(one_each, "item", ["user"], per_positive=2, seed=0)["item"].to_list()
    assert [sorted(pairs[i:i + 2]) for i in (0, 2, 4)] == [["y", "z"], ["x", "z"], ["x", "y"]]
    with pytest.raises(CtrbenchError, match=r"cannot sample 2 negatives for \{'user': 'b'\}: only 1 of the 3 item "
                                            r"values never occur with it"):
        sample_negatives(positives, "item", ["user"], per_positive=2, seed=0)


def test_sample_negatives_is_seeded_and_never_returns_a_used_value():
    rng = np.random.default_rng(1)
    positives = pl.DataFrame({"user": rng.integers(0, 50, 20_000), "movie": rng.integers(0, 30, 20_000),
                              "tag": rng.integers(0, 40, 20_000)})
    negatives = sample_negatives(positives, "tag", ["user", "movie"], per_positive=2, seed=7)
    assert len(negatives) == 40_000
    assert negatives.select("user", "movie").rows() == positives.select("user", "movie").gather(
        np.repeat(np.arange(20_000), 2)).rows()
    used = positives.select("user", "movie", "tag").unique()
    assert negatives.join(used, on=["user", "movie", "tag"], how="semi").is_empty()
    tags = negatives["tag"].to_numpy().reshape(-1, 2)
    assert (tags[:, 0] != tags[:, 1]).all()
    assert negatives.equals(sample_negatives(positives, "tag", ["user", "movie"], per_positive=2, seed=7))
    assert not negatives.equals(sample_negatives(positives, "tag", ["user", "movie"], per_positive=2, seed=8))


def test_split_rows_sizes_partition_and_seed():
    parts = split_rows(18, [0.7, 0.2, 0.1], seed=3)
    assert [len(p) for p in parts] == [13, 3, 2]  # round(12.6), round(16.2) - 13, the rest
    assert sorted(np.concatenate(parts).tolist()) == list(range(18))
    assert all((np.diff(p) > 0).all() for p in parts)
    assert [p.tolist() for p in split_rows(18, [0.7, 0.2, 0.1], seed=3)] == [p.tolist() for p in parts]
    assert [len(p) for p in split_rows(288_609, [0.7, 0.2, 0.1], seed=0)] == [202_026, 57_722, 28_861]


def test_rules_from_section_names_the_bad_key():
    good = {"fields": ["user"], "min_count": 1, "negatives_per_positive": 2, "split": [0.7, 0.2, 0.1], "seed": 1}
    assert rules_from_section(good, CategoricalRules, "f.yaml: preprocess").split == [0.7, 0.2, 0.1]
    for change, message in [({"seed": None}, "f.yaml: preprocess.seed: expected int, got None"),
                            ({"min_cout": 1}, "f.yaml: preprocess: unknown key 'min_cout' (did you mean 'min_count'?)"),
                            ({"split": [0.5, 0.5]},
                             "f.yaml: preprocess: split must be 3 positive fractions summing to 1"),
                            ({"min_count": 0}, "f.yaml: preprocess: min_count must be >= 1, got 0")]:
        with pytest.raises(CtrbenchError) as error:
            rules_from_section({**good, **change}, CategoricalRules, "f.yaml: preprocess")
        assert str(error.value).startswith(message)
    with pytest.raises(CtrbenchError, match=r"^f.yaml: preprocess: missing key 'seed'; the section needs: fields, "
                                            r"min_count, negatives_per_positive, split, seed$"):
        rules_from_section({k: v for k, v in good.items() if k != "seed"}, CategoricalRules, "f.yaml: preprocess")
