import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import sha256_file
from preprocess.bad_rows import BadRows
from preprocess.encoding import count_joined_ids, count_values, encode_sequence, stored_once
from preprocess.histories import history_rows, list_column, scratch_dir, with_histories
from preprocess.inputs import InputRows, describe_inputs, detect_release
from preprocess.readers import integer_check, label_check, number_check, read_csv, read_libfm, scan_csv
from preprocess.rules import CategoricalRules, ValidationRule, rules_from_section
from preprocess.splits import sample_negatives, split_rows
from preprocess.vocabularies import Vocabulary, read_h5_table, read_npy_table, write_pretrained_table


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
    assert policy.skipped_in(tmp_path / "x.csv") == 3 and policy.skipped_in(tmp_path / "y.csv") == 0


def test_detect_release(tmp_path):
    (tmp_path / "train.csv").write_text("a\n")
    releases = {"bars_x1": ["train.csv", "valid.csv"], "raw": ["*.log"]}
    with pytest.raises(CtrbenchError, match="no known demo release here; expected one of these file sets: bars_x1: train.csv, valid.csv; raw: \\*.log"):
        detect_release(tmp_path, releases, "demo")
    (tmp_path / "valid.csv").write_text("a\n")
    assert detect_release(tmp_path, releases, "demo") == "bars_x1"
    described = describe_inputs([tmp_path / "train.csv"], {"train.csv": InputRows(rows_read=3, rows_kept=1)})
    assert described["train.csv"] == {"sha256": sha256_file(tmp_path / "train.csv"), "bytes": 2, "rows_read": 3,
                                      "rows_kept": 1}



def test_a_full_disk_in_the_scratch_folder_names_the_output_and_removes_the_folder(tmp_path):
    with pytest.raises(CtrbenchError) as error:
        with scratch_dir(tmp_path / "out") as scratch:
            (scratch / "part").write_bytes(b"x" * (3 << 19))
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(error.value).startswith(f"{tmp_path / 'out'}: no space left on the disk after writing 1.5 MiB of output (")
    assert str(error.value).endswith(" MiB free there); free some space or choose another --out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="Permission denied"), scratch_dir(tmp_path / "out"):  # other errors pass
        raise OSError(errno.EACCES, "Permission denied")

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


# --------------------------------------------------------------------------------------------------
# Lazy CSV scanning, sequences, histories, pretrained tables


def test_scan_csv_checks_rows_in_one_pass_with_exact_lines(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user,time,brand\r\n1,10,NULL\r\n\r\n2,x,7\r\n3,30\r\n4,40,8,extra\r\n5,50,9\r\n")
    checks = [integer_check("time")]
    with pytest.raises(CtrbenchError, match=r"log.csv:3: empty line; fix the file or pass --skip-bad-rows"):
        scan_csv(path, ["user", "time", "brand"], BadRows(), checks, optional=["brand"], null_text="NULL")
    policy = BadRows(skip=True)
    frame, rows = scan_csv(path, ["user", "time", "brand"], policy, checks, optional=["brand"], null_text="NULL")
    assert frame.collect().rows() == [(2, "1", "10", None), (5, "3", "30", None), (7, "5", "50", "9")]
    assert rows == 3
    assert policy.skipped == {"log.csv: empty line": 1, "log.csv: time must be an integer": 1,
                              "log.csv: more than the header's 3 fields": 1}
    policy = BadRows(skip=True)  # with complete_rows, the short line 5 is bad too (counted by separators)
    frame, rows = scan_csv(path, ["user", "time", "brand"], policy, checks, optional=["brand"], null_text="NULL",
                           complete_rows=True)
    assert frame.collect().rows() == [(2, "1", "10", None), (7, "5", "50", "9")] and rows == 2
    assert policy.skipped["log.csv: fewer than the header's 3 fields"] == 1
    path.write_text("user,time,brand\n1,10,3\n2,x,7\n")
    with pytest.raises(CtrbenchError, match=r"log.csv:3: time must be an integer, found 'x'; fix the file"):
        scan_csv(path, ["user", "time", "brand"], BadRows(), checks)
    with pytest.raises(CtrbenchError, match=r"log.csv:1: wrong header 'user,time,brand'; expected 'user,time'"):
        scan_csv(path, ["user", "time"], BadRows())


def test_label_and_number_checks():
    frame = pl.DataFrame({"y": ["0", "1", "1.0", "2", "-1", "yes", None], "p": ["1.5", "2", "x", "inf", "", "3", "4"]})
    assert frame.select(label_check("y")[0]).to_series().to_list() == [False, False, False, True, True, True, True]
    assert frame.select(number_check("p")[0]).to_series().to_list() == [False, False, True, True, True, False, False]


def brute_force_history(event_users, event_times, user, time, max_len, keep):
    """The definition, one impression at a time: the user's events strictly before `time`, oldest first."""
    earlier = [i for i in range(len(event_users)) if event_users[i] == user and event_times[i] < time]
    earlier.sort(key=lambda i: (event_times[i], i))
    return earlier[-max_len:] if keep == "recent" else earlier[:max_len]


@pytest.mark.parametrize("keep", ["recent", "oldest"])
def test_history_rows_match_the_definition_and_never_look_ahead(keep):
    rng = np.random.default_rng(5)
    event_users, event_times = rng.integers(0, 6, 300), rng.integers(0, 40, 300)  # many ties
    users, times = rng.integers(0, 8, 200), rng.integers(0, 45, 200)  # users 6, 7 have no events
    offsets, rows = history_rows(event_users, event_times, users, times, 4, keep)
    for i in range(len(users)):
        history = rows[offsets[i]:offsets[i + 1]].tolist()
        assert history == brute_force_history(event_users, event_times, users[i], times[i], 4, keep)
        assert (event_times[history] < times[i]).all() and (event_users[history] == users[i]).all()


def test_list_column_builds_list_rows():
    values = pl.Series("v", ["a", "b", None, "d"])
    lists = list_column(values, np.array([0, 2, 5, 5]), np.array([3, 2, 2, 1, 0]))
    assert lists.to_list() == [["d", None], [None, "b", "a"], []]


def test_with_histories_in_parts_gives_the_same_rows(tmp_path):
    rng = np.random.default_rng(0)
    impressions = pl.DataFrame({"user": rng.integers(0, 30, 400), "time": rng.integers(0, 100, 400),
                                "row": np.arange(400)})
    events = pl.DataFrame({"user": rng.integers(0, 40, 2000), "time": rng.integers(0, 100, 2000),
                           "item": rng.integers(0, 50, 2000)})
    kwargs = dict(user="user", time="time", max_len=5, keep="recent")
    one = with_histories(impressions, events.lazy(), {"items": "item"}, scratch=tmp_path / "one", **kwargs).collect()
    parts = with_histories(impressions, events.lazy(), {"items": "item"}, scratch=tmp_path / "parts",
                           values_per_part=300, **kwargs).collect()
    assert len(list((tmp_path / "parts" / "histories").glob("*.parquet"))) == 7  # 400 x 5 values / 300
    assert one["row"].to_list() == list(range(400))  # one part: the impressions' order
    assert parts.sort("row").equals(one)
    for row in one.sample(50, seed=1).iter_rows(named=True):
        expected = brute_force_history(events["user"], events["time"], row["user"], row["time"], 5, "recent")
        assert row["items"] == events["item"].gather(expected).to_list()


@pytest.mark.parametrize("keep, expected", [("recent", [[2, 3, 1], [0, 0, 0], [0, 0, 4], [3, 4, 4]]),
                                            ("oldest", [[2, 3, 1], [0, 0, 0], [0, 0, 4], [2, 3, 4]])])
def test_encode_sequence_truncates_and_front_pads(keep, expected):
    vocab = Vocabulary(pl.Series(["a", "b", "c"]))  # a: 2, b: 3, c: 4
    text = pl.Series("s", ["a^b^zz", "", "c", "a^b^c^c"])
    [encoded] = encode_sequence(text, [vocab], 3, keep)
    assert encoded.to_list() == expected and encoded.dtype == pl.List(pl.Int32)
    lists = pl.Series("s", [["a", "b", "zz"], [], None, ["a", "b", "c", "c"]])
    [encoded] = encode_sequence(lists, [vocab], 3, keep)
    assert encoded.to_list() == [expected[0], [0, 0, 0], [0, 0, 0], expected[3]]
    ids = Vocabulary(pl.Series(["10", "30", "20"]))  # integer ids, encoded by array lookup: 10: 2, 30: 3, 20: 4
    other = Vocabulary(pl.Series(["20"]))  # a second vocabulary of the same column: one split for both
    both = encode_sequence(pl.Series("s", ["10^30^99", None, "20", "10^30^20^20"]), [ids, other], 3, keep)
    assert [encoded.to_list() for encoded in both] == [expected, [[1, 1, 1], [0, 0, 0], [0, 0, 2],
                                                                  [1, 2, 2] if keep == "recent" else [1, 1, 2]]]


@pytest.mark.parametrize("keep, text_rows, id_rows", [
    ("recent", [[2, 3, 4], [3, 4, 4], [0, 0, 0], [0, 0, 1]], [[2, 3, 4], [3, 4, 4], [0, 0, 0], [0, 1, 1]]),
    ("oldest", [[2, 3, 4], [2, 3, 4], [0, 0, 0], [0, 0, 1]], [[2, 3, 4], [1, 3, 4], [0, 0, 0], [0, 1, 1]])])
def test_encode_sequence_drops_empty_items_before_truncating(keep, text_rows, id_rows):
    """Empty items (leading, trailing or doubled separators) are dropped, then the rest truncated; non-canonical
    ids ("010", "+20") are out of a vocabulary of ids. Expected values as the converter before commit 09c084e gave."""
    vocab = Vocabulary(pl.Series(["a", "b", "c"]))  # a: 2, b: 3, c: 4
    [encoded] = encode_sequence(pl.Series("s", ["^a^^b^c^", "a^^b^^c^c", "^", "^^zz^"]), [vocab], 3, keep)
    assert encoded.to_list() == text_rows
    ids = Vocabulary(pl.Series(["10", "30", "20"]))  # 10: 2, 30: 3, 20: 4, by array lookup
    [encoded] = encode_sequence(pl.Series("s", ["^10^^30^20^", "010^^30^^20^20", "^", "+20^^7^"]), [ids], 3, keep)
    assert encoded.to_list() == id_rows


def test_integer_lookup_matches_the_hash_map():
    """Vocabularies of ids take an array lookup (built once); any value, id or not, gets what `encode` gives."""
    text = Vocabulary(pl.Series(["7", "0", "12", "3"]))
    values = pl.Series(["7", "07", "+7", "-7", " 7", "0", "-0", "12", "13", "99999999999999999999", "", None, "3",
                        "09223372036854775807"])
    assert text.integer_table is not None
    assert text.lookup(values).tolist() == text.encode(values).to_list() == [2, 1, 1, 1, 1, 3, 1, 4, 1, 1, 1, 1, 5, 1]
    numbers = Vocabulary(pl.Series([7, 0, 12]))
    values = pl.Series([7, -7, 0, 12, 13, None, 1 << 40])
    assert numbers.lookup(values).tolist() == numbers.encode(values).to_list() == [2, 1, 3, 4, 1, 1, 1]
    for other in (["7", "07"], ["a", "1"], [5, -1], [1 << 40]):  # not all canonical ids, or too sparse: hash map
        vocab = Vocabulary(pl.Series(other))
        assert vocab.integer_table is None
        assert vocab.lookup(pl.Series(other)).tolist() == list(range(2, 2 + len(other)))
    sparse = Vocabulary(pl.Series(["3199999", "5"]))  # few ids up to 3.2M (KuaiVideo's item_id): still an array
    assert sparse.integer_table is not None and sparse.lookup(pl.Series(["5", "3199999", "6"])).tolist() == [3, 2, 1]


@pytest.mark.parametrize("rows_per_batch", [2, 100])
def test_joined_ids_are_counted_by_array_and_other_text_by_hash(rows_per_batch):
    text = pl.LazyFrame({"s": ["7^07^7", None, "^x^7", "12^", "+7^x", "99999999999999999999"],
                         "t": ["3^3", "", "3", None, "4^^", "x"]})
    counts = count_joined_ids(text, ["s", "t"], rows_per_batch)  # both columns in one pass
    assert dict(counts["s"].sort("value").iter_rows()) == {"+7": 1, "07": 1, "12": 1, "7": 3, "x": 2,
                                                           "99999999999999999999": 1}
    assert dict(counts["t"].sort("value").iter_rows()) == {"3": 3, "4": 1, "x": 1}
    assert counts["s"].schema == {"value": pl.String, "count": pl.get_index_type()}
    both = count_values(text, [("s", True), ("t", False)])  # the text path for the sequence, group_by for the other
    assert both["s", True].sort("value").equals(counts["s"].sort("value"))
    assert both["t", False].sort("value").rows() == [("", 1), ("3", 1), ("3^3", 1), ("4^^", 1), ("x", 1)]
    lists = pl.LazyFrame({"s": [[5, 5, -1], None, [], [None, 5, 1 << 40]]})
    assert count_values(lists, [("s", True)])["s", True].sort("value").rows() == [(-1, 1), (5, 3), (1 << 40, 1)]


def test_shared_vocabulary_keeps_a_value_frequent_in_one_column():
    item = pl.DataFrame({"value": ["x", "y", "z"], "count": [5, 2, 1]})
    history = pl.DataFrame({"value": ["y", "z", "w"], "count": [4, 2, 9]})
    vocab = Vocabulary.from_counts([item, history], min_count=3)  # z: 1 + 2 but never 3 in one column
    assert vocab.values.to_list() == ["w", "y", "x"]  # by total count: w 9, y 2 + 4, x 5
    assert Vocabulary.from_counts([item, history], min_count=1).values.to_list() == ["w", "y", "x", "z"]


def test_vocabulary_extended_by_table_keys():
    vocab = Vocabulary(pl.Series([7, 3])).extended(pl.Series([9, 3, 1, 9]))
    assert vocab.values.to_list() == [7, 3, 1, 9] and vocab.size == 6


def test_pretrained_tables_from_h5_and_npy_aligned_to_the_vocabulary(tmp_path):
    with h5py.File(tmp_path / "emb.h5", "w") as h5:
        h5.create_dataset("key", data=np.array([b"b", b"a", b"q"]))
        h5.create_dataset("value", data=np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float64))
    table = read_h5_table(tmp_path / "emb.h5")
    assert table.keys.to_list() == ["b", "a", "q"] and table.dim == 2
    vocab = Vocabulary(pl.Series(["a", "c", "b"]))  # c has no vector
    assert write_pretrained_table(tmp_path / "t.npy", vocab, [table]) == 1
    assert np.load(tmp_path / "t.npy").tolist() == [[0, 0], [0, 0], [3, 4], [0, 0], [1, 2]]  # q is not in vocab

    np.save(tmp_path / "first.npy", np.ones((2, 2)))
    np.save(tmp_path / "second.npy", np.full((1, 2), 7.0))
    tables = [read_npy_table(tmp_path / "first.npy"), read_npy_table(tmp_path / "second.npy", first_key=2)]
    assert tables[1].keys.to_list() == [2]
    write_pretrained_table(tmp_path / "u.npy", Vocabulary(pl.Series([2, 0, 1])), tables)
    assert np.load(tmp_path / "u.npy").tolist() == [[0, 0], [0, 0], [7, 7], [1, 1], [1, 1]]
    assert np.load(tmp_path / "u.npy").dtype == np.float32


@pytest.mark.parametrize("key, value, message", [
    (None, np.ones((2, 2)), r"emb.h5: no dataset 'key'; a BARS embedding file holds `key` and `value`, this "
                            r"one holds value"),
    ([1, 2, 3], np.ones((2, 2)), r"emb.h5: 3 keys but 2 vectors"),
    ([1, 1], np.ones((2, 2)), r"emb.h5: key 1 appears more than once"),
    ([1, 2], np.ones(2), r"emb.h5: vectors must be a 2-d numeric matrix, found shape \(2,\)"),
])
def test_h5_table_errors(key, value, message, tmp_path):
    with h5py.File(tmp_path / "emb.h5", "w") as h5:
        if key is not None:
            h5.create_dataset("key", data=key)
        h5.create_dataset("value", data=value)
    with pytest.raises(CtrbenchError, match=message):
        read_h5_table(tmp_path / "emb.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(CtrbenchError, match=r"junk.h5: not a readable HDF5 file"):
        read_h5_table(tmp_path / "junk.h5")


def test_holdout_validation_is_seeded_and_disjoint():
    train = pl.LazyFrame({"line": np.arange(2, 10_002), "x": np.arange(10_000)})
    rule = ValidationRule(valid="holdout", valid_fraction=0.1, seed=3)
    splits = {name: frame.collect() for name, frame in rule.split(train, train.head(5)).items()}
    assert 900 < len(splits["valid"]) < 1_100 and len(splits["train"]) + len(splits["valid"]) == 10_000
    assert not set(splits["train"]["x"]) & set(splits["valid"]["x"])
    assert rule.split(train, train)["valid"].collect().equals(splits["valid"])
    assert not ValidationRule("holdout", 0.1, seed=4).split(train, train)["valid"].collect().equals(splits["valid"])
    assert set(ValidationRule("test", 0.1, 3).split(train, train)) == {"train", "test"}
    with pytest.raises(CtrbenchError, match="valid_fraction must be between 0 and 1, got 1.5"):
        ValidationRule("holdout", 1.5, 3)


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import numpy as np, polars as pl
    from preprocess.bad_rows import BadRows
    from preprocess.encoding import Feature
    from preprocess.histories import write_parts
    from preprocess.rules import ValidationRule
    from preprocess.splits import RawSplits
    from preprocess.writing import write_dataset

    rows, directory = int(sys.argv[1]), Path(sys.argv[2])
    def part(seed):  # 100k rows: two categorical columns and two 50-item histories
        rng = np.random.default_rng(seed)
        items = lambda: pl.Series(rng.integers(0, 5_000, (100_000, 50))).cast(pl.List(pl.Int64))
        return pl.DataFrame({"user": rng.integers(0, 10_000, 100_000), "item": rng.integers(0, 5_000, 100_000),
                             "clicks": items(), "views": items(), "label": rng.integers(0, 2, 100_000) * 1.0})
    frame = write_parts(map(part, range(rows // 100_000)), directory / "parts")
    features = [Feature("user", "categorical"), Feature("item", "categorical"),
                *[Feature(name, "sequence", max_len=50, share_embedding="item") for name in ("clicks", "views")]]
    write_dataset(directory / "out", "demo", "generated", RawSplits({"train": frame, "test": frame.head(10)}, {}),
                  features, ValidationRule("test", 0.1, 0), BadRows(), ("nothing", {"train": 0, "valid": 0, "test": 0}))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
""")


@pytest.mark.slow
def test_write_dataset_streams_list_columns(tmp_path):
    """Peak memory writing 200k rows, then 1.6M rows (each with 100 history items), in fresh processes.

    Measured: +154 MiB; +1,213 MiB when categorical columns were encoded by a whole-column replace_strict.
    """
    peaks = []
    for rows in (200_000, 1_600_000):
        done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(rows), str(tmp_path / str(rows))],
                              cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True)
        peaks.append(int(done.stdout.split()[-1]) / 1024)
    extra_mib = 1_400_000 * 100 * 8 / 2**20  # the larger input's extra history items, as int64: 1,068 MiB
    assert peaks[1] - peaks[0] < extra_mib / 3, f"peak memory grew from {peaks[0]:.0f} to {peaks[1]:.0f} MiB"


def test_histories_are_stored_once_where_one_vocabulary_holds_the_others():
    """b's values all belong to a's, so b reads a's column through the map a index -> b index (a's value
    "1" is OOV in b); c, the same vocabulary as a, reads it unmapped; d's values are not all in a's: stored."""
    a, b, d = (Vocabulary(pl.Series(values)) for values in (["3", "1", "2"], ["2", "3"], ["3", "4"]))
    plan = stored_once([("h_b", "b", b), ("h_a", "a", a), ("h_c", "a", a), ("h_d", "d", d)])
    mapping = plan["h_b"][2]
    assert {name: entry[:2] for name, entry in plan.items()} == {
        "h_a": ("h_a", None), "h_b": ("h_a", "index_maps/a-b.npy"), "h_c": ("h_a", None), "h_d": ("h_d", None)}
    assert mapping.dtype == np.int32 and mapping.tolist() == [0, 1, 3, 1, 2]  # 3 -> 3, 1 -> OOV, 2 -> 2
