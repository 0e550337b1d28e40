"""MicroVideo1.7M converter: both releases on tiny fixtures (exact encodings), histories, bad input, the CLI.

No real MicroVideo files are available on these machines; the fixtures reproduce the published formats:
the BARS x1 CSVs (`^`-joined histories, empty when a user has no earlier click) with an .h5 table written
by h5py, and the THACIL CSVs with 512-d-style .npy cover-image matrices whose test item ids restart at 0.
Both fixtures hold the same interactions; an x1 item id is 10 + the raw id (test ids offset by the 4 train items).
"""

import functools
import shutil
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import torch

from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from ctrbench.nn.embedding import FeatureEmbedding
from preprocess.microvideo import preprocess_microvideo
from preprocess.options import PreprocessOptions

FIXTURES = Path(__file__).parent / "fixtures" / "microvideo"
TRAIN_VECTORS = np.arange(12, dtype=np.float64).reshape(4, 3)  # THACIL train items 0..3
TEST_VECTORS = 100 + np.arange(6, dtype=np.float32).reshape(2, 3)  # THACIL test items 0..1

# The fixtures encoded by hand with max_len 3. Vocabularies on train: users 0 (5 rows) -> 2, 1 -> 3;
# categories 5 -> 2, 7 -> 3 (column + clicked_categories); items by count over item_id and clicked_items:
# item 0 (6) -> 2, item 2 (4) -> 3, item 1 (2) -> 4, item 3 (2) -> 5, then the items that only have a
# vector: test items 0, 1 -> 6, 7. Histories: the user's train clicks strictly before the row's time.
EXPECTED = {
    "train": {"user_id": [2, 2, 3, 2, 2, 3, 2], "item_id": [2, 4, 3, 3, 5, 2, 4], "cate_id": [2, 2, 3, 3, 2, 2, 2],
              "clicked_items": [[0, 0, 0], [0, 0, 2], [0, 0, 0], [0, 0, 2], [0, 0, 2], [0, 0, 3], [2, 3, 5]],
              "clicked_categories": [[0, 0, 0], [0, 0, 2], [0, 0, 0], [0, 0, 2], [0, 0, 2], [0, 0, 3], [2, 3, 2]],
              "label": [1, 0, 1, 1, 1, 0, 1]},
    "test": {"user_id": [2, 3, 1], "item_id": [6, 7, 6], "cate_id": [2, 3, 1],
             "clicked_items": [[2, 3, 5], [0, 0, 0], [0, 0, 0]],
             "clicked_categories": [[2, 3, 2], [0, 0, 0], [0, 0, 0]], "label": [1, 0, 1]},
}
# Rows of the aligned pretrained table, by vocabulary index: padding and OOV are zeros.
EXPECTED_TABLE = [[0, 0, 0], [0, 0, 0], TRAIN_VECTORS[0], TRAIN_VECTORS[2], TRAIN_VECTORS[1], TRAIN_VECTORS[3],
                  TEST_VECTORS[0], TEST_VECTORS[1]]


def make_release(tmp_path: Path, release: str) -> Path:
    """The fixture CSVs plus their binary files, written the way the releases write them."""
    raw = tmp_path / release
    shutil.copytree(FIXTURES / release, raw)
    if release == "raw":
        np.save(raw / "train_cover_image_feature.npy", TRAIN_VECTORS)
        np.save(raw / "test_cover_image_feature.npy", TEST_VECTORS)
    else:
        with h5py.File(raw / "item_image_emb_dim64.h5", "w") as h5:
            h5.create_dataset("key", data=np.arange(10, 16))
            h5.create_dataset("value", data=np.concatenate([TRAIN_VECTORS, TEST_VECTORS]).astype(np.float32))
    return raw


@pytest.fixture
def rules(preprocess_rules):
    """Override keys of dataset_configs/microvideo.yaml's preprocess section (max_len=3 by default)."""
    preprocess_rules("microvideo", max_len=3)
    return functools.partial(preprocess_rules, "microvideo")


def read_split(fmap: FeatureMap, split: str) -> dict[str, list]:
    frame = pl.read_parquet(fmap.split_paths(split))
    return {name: frame[name].to_list() for name in frame.columns}


@pytest.mark.parametrize("release", ["raw", "bars_x1"])
def test_both_releases_encode_exactly(release, rules, tmp_path):
    fmap = preprocess_microvideo(make_release(tmp_path, release), tmp_path / "out", PreprocessOptions())
    assert [(f.name, f.type, f.vocab_size, f.share_embedding) for f in fmap.features] == [
        ("user_id", "categorical", 4, None), ("item_id", "pretrained_embedding", 8, None),
        ("cate_id", "categorical", 4, None), ("clicked_items", "sequence", 8, "item_id"),
        ("clicked_categories", "sequence", 4, "cate_id")]
    expected_test = EXPECTED["test"]
    if release == "bars_x1":  # the x1 fixture's last test row has history "99" (unknown item) in category 9
        expected_test = {**expected_test, "clicked_items": [[2, 3, 5], [0, 0, 0], [0, 0, 1]],
                         "clicked_categories": [[2, 3, 2], [0, 0, 0], [0, 0, 1]]}
    assert read_split(fmap, "train") == EXPECTED["train"]
    assert read_split(fmap, "test") == expected_test
    assert fmap.splits["valid"].files == fmap.splits["test"].files  # `valid: test`, as BARS
    item = fmap.feature("item_id")
    assert (item.embedding_source, item.pretrained_dim) == ("pretrained/item_id.npy", 3)
    table = np.load(fmap.root / item.embedding_source)
    assert table.dtype == np.float32 and np.array_equal(table, np.array(EXPECTED_TABLE, dtype=np.float32))
    assert fmap.source["release"] == release
    rows_kept = [entry["rows_kept"] for entry in fmap.source["inputs"].values()]
    assert rows_kept == ([7, 3, 4, 2] if release == "raw" else [7, 3, 6])  # CSV rows; vectors per table
    assert all(entry["rows_read"] == entry["rows_kept"] for entry in fmap.source["inputs"].values())


def test_raw_histories_hold_only_earlier_train_clicks(rules, tmp_path):
    """Random THACIL-style logs: every history equals its definition, computed row by row."""
    rng = np.random.default_rng(3)
    raw = make_release(tmp_path, "raw")
    rows = {"train": 600, "test": 200}
    logs = {split: pl.DataFrame({"user_id": rng.integers(0, 12, n), "item_id": rng.integers(0, 4 if split == "train"
                                 else 2, n), "cate_id": rng.integers(0, 3, n), "is_click": rng.integers(0, 2, n),
                                 "timestamp": rng.integers(0, 50, n)}) for split, n in rows.items()}
    for split, log in logs.items():
        log.write_csv(raw / f"{split}_data.csv")
    rules(max_len=4, min_count=1)
    fmap = preprocess_microvideo(raw, tmp_path / "out", PreprocessOptions())
    clicks = logs["train"].with_row_index("row").filter(pl.col("is_click") == 1)
    to_index = dict(zip(logs["train"]["item_id"], read_split(fmap, "train")["item_id"]))  # train item -> index
    for split, log in logs.items():
        encoded = read_split(fmap, split)["clicked_items"]
        for i, row in enumerate(log.iter_rows(named=True)):
            earlier = clicks.filter((pl.col("user_id") == row["user_id"]) & (pl.col("timestamp") < row["timestamp"]))
            expected = earlier.sort("timestamp", "row")["item_id"].tail(4).to_list()
            assert encoded[i] == [0] * (4 - len(expected)) + [to_index[item] for item in expected]


@pytest.mark.parametrize("keep, expected", [("recent", [3, 5]), ("oldest", [2, 3])])
def test_keep_recent_or_oldest(keep, expected, rules, tmp_path):
    rules(max_len=2, keep=keep)
    fmap = preprocess_microvideo(make_release(tmp_path, "bars_x1"), tmp_path / "out", PreprocessOptions())
    assert read_split(fmap, "test")["clicked_items"][0] == expected  # from 10^12^13 (indices 2, 3, 5)


def test_holdout_validation_moves_train_rows(rules, tmp_path):
    rules(valid="holdout", valid_fraction=0.4, seed=1)
    fmap = preprocess_microvideo(make_release(tmp_path, "raw"), tmp_path / "out", PreprocessOptions())
    assert {s: info.rows for s, info in fmap.splits.items()} == {"train": 5, "valid": 2, "test": 3}
    assert fmap.splits["valid"].files == ["valid/part-00000.parquet"]
    assert sorted(read_split(fmap, "valid")["label"] + read_split(fmap, "train")["label"]) == [0, 0, 1, 1, 1, 1, 1]


def test_processed_dataset_trains_through_the_embedding_layer(rules, tmp_path):
    fmap = preprocess_microvideo(make_release(tmp_path, "raw"), tmp_path / "out", PreprocessOptions())
    batch = load_split(FeatureMap.load(fmap.root), "train")
    layer = FeatureEmbedding(fmap, embedding_dim=4)
    x0 = layer(batch)
    assert x0.shape == (7, 5, 4)
    x0.sum().backward()
    assert layer.projections["item_id"].weight.grad.abs().sum() > 0  # the learned map of the frozen vectors
    assert torch.equal(layer.frozen_item_id, torch.tensor(np.array(EXPECTED_TABLE, dtype=np.float32)))


@pytest.mark.parametrize("release, file, line, text, message", [
    ("raw", "train_data.csv", 1, "user_id,item_id,cate_id,click,timestamp\n",
     "train_data.csv:1: wrong header 'user_id,item_id,cate_id,click,timestamp'; expected "
     "'user_id,item_id,cate_id,is_click,timestamp'"),
    ("raw", "train_data.csv", 4, "1,2,7,2,105\n", "train_data.csv:4: is_click must be 0 or 1, found '2'"),
    ("raw", "train_data.csv", 3, "0,1,5,0\n", "train_data.csv:3: missing or empty field 'timestamp'"),
    ("raw", "test_data.csv", 3, "1,2,7,0,90\n",
     "test_data.csv:3: item_id has no row in test_cover_image_feature.npy (2 rows), found '2'"),
    ("raw", "test_data.csv", 2, "0,0,5,1,1.5e9\n", "test_data.csv:2: timestamp must be an integer, found '1.5e9'"),
    ("bars_x1", "test.csv", 4, "2,20,9,1,200,99,9,7\n", "test.csv:4: more than the header's 7 fields"),
    ("bars_x1", "train.csv", 2, "0,10,5,yes,100,,\n", "train.csv:2: is_click must be 0 or 1, found 'yes'"),
])
def test_bad_row_stops_with_file_and_line(release, file, line, text, message, tmp_path):
    raw = make_release(tmp_path, release)
    lines = (raw / file).read_text().splitlines(keepends=True)
    lines[line - 1] = text
    (raw / file).write_text("".join(lines))
    with pytest.raises(CtrbenchError) as error:
        preprocess_microvideo(raw, tmp_path / "out", PreprocessOptions())
    assert str(error.value).startswith(f"{raw / file}:") and message in str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # no half dataset, no scratch


def test_skip_bad_rows_counts_them(rules, tmp_path):
    raw = make_release(tmp_path, "raw")
    with (raw / "train_data.csv").open("a") as handle:
        handle.write("0,9,5,1,140\n0,1,5,-1,150\n\n")
    with (raw / "test_data.csv").open("a") as handle:
        handle.write("0,1,5,1,x\n")
    fmap = preprocess_microvideo(raw, tmp_path / "out", PreprocessOptions(skip_bad_rows=True))
    assert fmap.source["skipped_rows"] == {
        "train_data.csv: item_id has no row in train_cover_image_feature.npy (4 rows)": 1,
        "train_data.csv: is_click must be 0 or 1": 1, "train_data.csv: empty line": 1,
        "test_data.csv: timestamp must be an integer": 1}
    assert read_split(fmap, "train") == EXPECTED["train"] and read_split(fmap, "test") == EXPECTED["test"]
    inputs = fmap.source["inputs"]
    assert [(inputs[name]["rows_read"], inputs[name]["rows_kept"]) for name in ("train_data.csv", "test_data.csv")] == [
        (10, 7), (4, 3)]


def test_bad_pretrained_files(tmp_path):
    raw = make_release(tmp_path, "bars_x1")
    with h5py.File(raw / "item_image_emb_dim64.h5", "w") as h5:
        h5.create_dataset("key", data=[10, 11])
    with pytest.raises(CtrbenchError, match=r"item_image_emb_dim64.h5: no dataset 'value'"):
        preprocess_microvideo(raw, tmp_path / "out", PreprocessOptions())
    raw = make_release(tmp_path / "r", "raw")
    np.save(raw / "test_cover_image_feature.npy", np.ones(3))
    with pytest.raises(CtrbenchError, match=r"test_cover_image_feature.npy: vectors must be a 2-d numeric matrix"):
        preprocess_microvideo(raw, tmp_path / "out", PreprocessOptions())


def test_cli_preprocess_microvideo(rules, tmp_path, capsys):
    raw = make_release(tmp_path, "raw")
    (make_release(tmp_path / "x1", "bars_x1") / "train.csv").rename(raw / "train.csv")  # two releases in one dir
    shutil.copy(tmp_path / "x1" / "bars_x1" / "test.csv", raw)
    shutil.copy(tmp_path / "x1" / "bars_x1" / "item_image_emb_dim64.h5", raw)
    out = tmp_path / "microvideo"
    assert main(["preprocess", "microvideo", "--raw", str(raw), "--out", str(out), "--release", "raw"]) == 0
    err = capsys.readouterr().err
    assert "microvideo: found the raw release" in err
    assert "microvideo: train / valid / test rows 7 / 3 / 3, BARS MicroVideo1.7M_x1 has 8,970,309 / 3,767,308 / " \
           "3,767,308" in err
    assert read_split(FeatureMap.load(out), "test") == EXPECTED["test"]
    assert main(["preprocess", "microvideo", "--raw", str(raw), "--out", str(out)]) == 0
    assert "found the bars_x1 release" in capsys.readouterr().err  # the first release found, in RELEASES order
    (raw / "test_data.csv").unlink()
    assert main(["preprocess", "microvideo", "--raw", str(raw), "--release", "raw"]) == 2
    assert capsys.readouterr().err == (f"error: {raw / 'test_data.csv'}: file not found; the raw release of "
                                       "microvideo needs train_data.csv, test_data.csv, train_cover_image_feature.npy, "
                                       "test_cover_image_feature.npy\n")
