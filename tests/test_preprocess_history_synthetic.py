"""The generated KuaiVideo_x1 and MicroVideo1.7M_x1 stand-ins: the converters accept them, sizes as asked,
the same files for the same seed, and the encoding unchanged by the array lookup (digests recorded from the
converters before it, on the same generated input)."""

import hashlib

import numpy as np
import polars as pl
import pytest

from ctrbench.data.batches import load_index_map
from ctrbench.data.features import FeatureMap
from preprocess import kuaivideo_synthetic, microvideo_synthetic
from preprocess.history_synthetic import Sizes, zipf_ranks
from preprocess.kuaivideo import preprocess_kuaivideo
from preprocess.microvideo import preprocess_microvideo
from preprocess.options import PreprocessOptions

SIZES = Sizes(train_rows=3000, test_rows=1000, users=50, items=3000)
# sha256 of the processed splits (`content_digest`) of the seed-1 releases of SIZES, as written by the
# converters of commit e5e49a2, whose encoding rebuilt a hash map of the vocabulary for every batch and
# which stored KuaiVideo's pos_items and pos_items_emb (neg_ likewise) as two columns each.
DIGESTS = {"kuaivideo": "2733aabd891136ec47c2913c703367be94579fa091103e66d072942f5029d671",
           "microvideo": "8d8ff742c0f436a711f1e946f5677fbda4038245c891227ab04a22acffeabb95"}
CONVERTERS = {"kuaivideo": (kuaivideo_synthetic, preprocess_kuaivideo),
              "microvideo": (microvideo_synthetic, preprocess_microvideo)}


def feature_columns(fmap: FeatureMap, split: str) -> list[pl.Series]:
    """Each feature's column, then the label's, as the converters wrote them before histories were stored
    once: a sequence that reads another's column (KuaiVideo's pos_items) mapped back by its index map."""
    frame = pl.read_parquet(fmap.split_paths(split))
    columns = []
    for spec in fmap.features:
        column, index_map = frame[spec.stored_as], load_index_map(fmap, spec)
        if index_map is not None:
            items = index_map.numpy()[column.explode().to_numpy()].reshape(len(column), spec.max_len)
            column = pl.Series(items).cast(pl.List(pl.Int32))
        columns.append(column.alias(spec.name))
    return [*columns, frame[fmap.label]]


def content_digest(fmap: FeatureMap) -> str:
    """Every value of the train and test splits, feature by feature, and each feature's vocabulary size."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for column in feature_columns(fmap, split):
            name = column.name
            digest.update(name.encode() + str(column.dtype).encode())
            values = column.explode() if column.dtype == pl.List(pl.Int32) else column
            digest.update(np.ascontiguousarray(values.to_numpy()).tobytes())
    for feature in fmap.features:
        digest.update(f"{feature.name}{feature.vocab_size}".encode())
    return digest.hexdigest()


@pytest.mark.parametrize("dataset", ["kuaivideo", "microvideo"])
def test_generated_release_converts_as_before(dataset, tmp_path):
    generator, convert = CONVERTERS[dataset]
    generator.write_release(tmp_path / "raw", SIZES, seed=1)
    fmap = convert(tmp_path / "raw", tmp_path / "out", PreprocessOptions())
    assert {split: info.rows for split, info in fmap.splits.items()} == {"train": 3000, "valid": 1000, "test": 1000}
    assert content_digest(fmap) == DIGESTS[dataset]
    items = fmap.feature("item_emb" if dataset == "kuaivideo" else "item_id")
    assert items.vocab_size == 2 + SIZES.items  # every item has a vector
    train = pl.read_parquet(fmap.split_paths("train"))
    history = train["pos_items_emb" if dataset == "kuaivideo" else "clicked_items"]
    lengths = (history.list.eval(pl.element() > 0).list.sum()).to_numpy()
    assert lengths.min() == 0 and lengths.max() == 100 and 55 < lengths.mean() < 78  # spread over 0..100


@pytest.mark.parametrize("dataset", ["kuaivideo", "microvideo"])
def test_small_preset_and_seed(dataset, tmp_path):
    generator, _ = CONVERTERS[dataset]
    generator.main([str(tmp_path / "a"), "--preset", "small", "--train-rows", "500", "--seed", "3"])
    generator.main([str(tmp_path / "b"), "--preset", "small", "--train-rows", "500", "--seed", "3"])
    generator.main([str(tmp_path / "c"), "--preset", "small", "--train-rows", "500", "--seed", "4"])
    small = generator.PRESETS["small"]
    for name in ("train.csv", "test.csv"):
        rows = pl.read_csv(tmp_path / "a" / name, infer_schema=False)
        assert len(rows) == (500 if name == "train.csv" else small.test_rows)
        assert rows.equals(pl.read_csv(tmp_path / "b" / name, infer_schema=False))
        assert not rows.equals(pl.read_csv(tmp_path / "c" / name, infer_schema=False))
        assert rows["user_id"].cast(pl.Int64).max() < small.users and rows["item_id"].cast(pl.Int64).max() < small.items
    table = next((tmp_path / "a").glob("*.h5"))
    assert table.read_bytes() == (tmp_path / "b" / table.name).read_bytes()
    assert generator.PRESETS["full"].train_rows == {"kuaivideo": 10_931_092, "microvideo": 8_970_309}[dataset]


def test_zipf_ranks_follow_the_stated_law():
    ranks = zipf_ranks(np.random.default_rng(0), 1000, 200_000)
    observed = np.bincount(ranks, minlength=1000)[:3] / len(ranks)
    expected = np.log((np.arange(3) + 2) / (np.arange(3) + 1)) / np.log(1001)  # 0.100, 0.059, 0.042
    assert np.allclose(observed, expected, atol=0.005)
