"""The seeded external shuffle of train files: every row once, in a random order; the writer and the command use it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctrbench.data.features import DatasetWriter, FeatureMap, FeatureSpec
from ctrbench.data.shuffle import shuffle_parquet_rows

ROWS = 10_000


def _write(path, rows: int = ROWS) -> None:
    """Rows numbered 0..rows-1, with a list column (a history) that must travel with its row."""
    index = np.arange(rows)
    history = pa.array([[i, i + 1, i + 2] for i in range(rows)], pa.list_(pa.int32()))
    table = pa.table({"idx": index, "history": history, "label": (index % 2).astype(np.float32)})
    pq.write_table(table, path, row_group_size=4096)


def test_every_row_once_in_a_seeded_random_order(tmp_path):
    path = tmp_path / "part.parquet"
    _write(path)
    shuffle_parquet_rows(path, seed=7, row_group_rows=512, bucket_rows=1000)  # 10 buckets
    shuffled = pq.read_table(path)
    order = shuffled.column("idx").to_numpy()
    assert np.array_equal(np.sort(order), np.arange(ROWS)) and not np.array_equal(order, np.arange(ROWS))
    assert shuffled.column("history").to_pylist()[:3] == [[i, i + 1, i + 2] for i in order[:3]]
    assert np.array_equal(shuffled.column("label").to_numpy(), (order % 2).astype(np.float32))
    metadata = pq.ParquetFile(path).metadata
    assert max(metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)) == 512
    # any row can land anywhere: the first 512 rows come from all over the file (each tenth of the file gives
    # 51.2 of them on average; a file shuffled only within buckets or row groups would give 0 for most tenths)
    per_tenth = np.bincount(order[:512] * 10 // ROWS, minlength=10)
    assert per_tenth.min() >= 25 and per_tenth.max() <= 80
    again = tmp_path / "again.parquet"
    _write(again)
    shuffle_parquet_rows(again, seed=7, row_group_rows=512, bucket_rows=1000)
    assert np.array_equal(pq.read_table(again).column("idx").to_numpy(), order)
    other = tmp_path / "other.parquet"
    _write(other)
    shuffle_parquet_rows(other, seed=8, row_group_rows=512, bucket_rows=1000)
    assert not np.array_equal(pq.read_table(other).column("idx").to_numpy(), order)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.parquet", "other.parquet", "part.parquet"]


def test_positions_are_uniform_over_seeds(tmp_path):
    """Row 0's position over 60 seeds spreads over the whole file and over many places (a shuffle that only
    dealt rows to buckets, without permuting each bucket, would put it at the start of one of 4 buckets)."""
    positions = []
    for seed in range(60):
        path = tmp_path / f"{seed}.parquet"
        _write(path, rows=100)
        shuffle_parquet_rows(path, seed=seed, row_group_rows=16, bucket_rows=30)  # 4 buckets
        positions.append(int(np.flatnonzero(pq.read_table(path).column("idx").to_numpy() == 0)[0]))
    assert np.bincount(np.array(positions) // 25, minlength=4).min() >= 5  # 15 expected per quarter
    assert len(set(positions)) >= 40


def test_writer_shuffles_train_only_and_records_the_seed(tmp_path):
    spec = FeatureSpec(name="idx", type="numeric", transform="none")

    def build(out, seed):
        table = pa.table({"idx": np.arange(3000, dtype=np.float32), "label": np.zeros(3000, dtype=np.float32)})
        with DatasetWriter(out, row_group_rows=1024, shuffle_seed=seed) as writer:
            for split in ("train", "valid", "test"):
                writer.write_split(split, table)
            return writer.commit(FeatureMap(dataset="d", label="label", features=[spec]))

    shuffled, kept = build(tmp_path / "shuffled", 3), build(tmp_path / "kept", None)
    def column(fmap, split):
        return pq.read_table(fmap.root / fmap.splits[split].files[0]).column("idx").to_numpy()

    assert not np.array_equal(column(shuffled, "train"), np.arange(3000))
    assert np.array_equal(np.sort(column(shuffled, "train")), np.arange(3000))
    assert np.array_equal(column(shuffled, "test"), np.arange(3000))
    assert np.array_equal(column(kept, "train"), np.arange(3000))
    assert shuffled.source["train_shuffle_seed"] == 3 and "train_shuffle_seed" not in kept.source
    assert shuffled.content_hash != kept.content_hash
    assert FeatureMap.load(tmp_path / "shuffled").content_hash == shuffled.content_hash


def test_preprocess_command_shuffles_where_the_dataset_config_says(tmp_path):
    """`ctrbench preprocess kuaivideo` (config: shuffle_train 2024) writes the converter's train rows, every one
    once, in another order; the test split as it is; Frappe's config has no shuffle_train."""
    from ctrbench.app.cli import main
    from ctrbench.data.datasets import load_dataset_config
    from preprocess import kuaivideo_synthetic
    from preprocess.kuaivideo import preprocess_kuaivideo
    from preprocess.options import PreprocessOptions
    from preprocess.history_synthetic import Sizes

    kuaivideo_synthetic.write_release(tmp_path / "raw", Sizes(train_rows=3000, test_rows=1000, users=50, items=3000))
    as_read = preprocess_kuaivideo(tmp_path / "raw", tmp_path / "as_read", PreprocessOptions())
    assert main(["preprocess", "kuaivideo", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "cli")]) == 0
    shuffled = FeatureMap.load(tmp_path / "cli")
    assert shuffled.source["train_shuffle_seed"] == 2024 and "train_shuffle_seed" not in as_read.source

    def rows(fmap, split):
        table = pq.read_table(fmap.root / fmap.splits[split].files[0])
        return [tuple(map(str, row.values())) for row in table.to_pylist()]

    train, train_as_read = rows(shuffled, "train"), rows(as_read, "train")
    assert train != train_as_read and sorted(train) == sorted(train_as_read)
    assert rows(shuffled, "test") == rows(as_read, "test")
    assert load_dataset_config("frappe").shuffle_train is None
