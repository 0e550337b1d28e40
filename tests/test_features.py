import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_split
from ctrbench.data.features import DatasetWriter, FeatureMap, FeatureSpec
from ctrbench.data.sources import InMemory, ParquetStream
from ctrbench.data.synthetic import write_synthetic


def test_feature_map_json_round_trip(tiny_fmap):
    loaded = FeatureMap.load(tiny_fmap.root)
    assert loaded == tiny_fmap
    assert loaded.splits["train"].rows == 64
    assert len(loaded.content_hash) == 64


def test_parquet_round_trip_values(tiny_fmap):
    batch = load_split(tiny_fmap, "train")
    table = pq.read_table(tiny_fmap.split_paths("train")[0])
    assert batch.categorical.dtype == torch.int32 and batch.categorical.shape == (64, 2)
    assert batch.categorical[:, 1].tolist() == table.column("item").to_pylist()
    assert batch.numeric[:, 0].tolist() == pytest.approx(table.column("price").to_pylist())
    assert batch.sequences["clicked_items"].tolist() == table.column("clicked_items").to_pylist()
    assert batch.pretrained[:, 0].tolist() == table.column("video").to_pylist()
    assert batch.label.tolist() == table.column("label").to_pylist()


def test_synthetic_is_deterministic(tmp_path):
    first = write_synthetic(tmp_path / "a", rows=2000, seed=7)
    second = write_synthetic(tmp_path / "b", rows=2000, seed=7)
    third = write_synthetic(tmp_path / "c", rows=2000, seed=8)
    assert first.content_hash == second.content_hash != third.content_hash
    assert {s: i.rows for s, i in first.splits.items()} == {"train": 1600, "valid": 200, "test": 200}


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out) as writer:
            writer.write_split("train", pa.table({"x": [1]}))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_dataset_atomically(tmp_path):
    write_synthetic(tmp_path / "ds", rows=1000, seed=1)
    fmap = write_synthetic(tmp_path / "ds", rows=1000, seed=2)
    assert FeatureMap.load(tmp_path / "ds").content_hash == fmap.content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_in_memory_batches_cover_every_row_once(tiny_fmap):
    source = InMemory(load_split(tiny_fmap, "train"))
    generator = torch.Generator().manual_seed(0)
    batches = list(source.batches(10, shuffle=True, generator=generator))
    assert [len(b) for b in batches] == [10] * 6 + [4]
    labels = torch.cat([b.label for b in batches])
    assert labels.sum() == 32 and len(labels) == 64


def test_stream_yields_same_rows_as_memory(synthetic_fmap):
    stream = ParquetStream(synthetic_fmap, "valid", window_row_groups=1)
    streamed = torch.cat([b.numeric for b in stream.batches(300)])
    assert torch.equal(streamed, load_split(synthetic_fmap, "valid").numeric)
    shuffled = list(stream.batches(300, shuffle=True, generator=torch.Generator().manual_seed(1)))
    assert sum(len(b) for b in shuffled) == stream.num_rows


def _rewrite(fmap, column, values):
    path = fmap.split_paths("train")[0]
    table = pq.read_table(path)
    index = table.column_names.index(column)
    pq.write_table(table.set_column(index, column, values), path)
    return path


def test_index_outside_vocabulary_names_file_and_column(tiny_fmap):
    path = _rewrite(tiny_fmap, "user", pa.array([99] * 64, pa.int32()))
    with pytest.raises(CtrbenchError, match=rf"{path}.*'user'.*outside its vocabulary"):
        load_split(tiny_fmap, "train")


def test_nan_numeric_is_reported(tiny_fmap):
    values = np.zeros(64, np.float32)
    values[5] = np.nan
    _rewrite(tiny_fmap, "price", pa.array(values))
    with pytest.raises(CtrbenchError, match="'price' has 1 NaN.*first at row 5"):
        load_split(tiny_fmap, "train")


def test_label_outside_zero_one_is_reported(tiny_fmap):
    _rewrite(tiny_fmap, "label", pa.array([2.0] * 64, pa.float32()))
    with pytest.raises(CtrbenchError, match="label column 'label' must be 0 or 1; row 0 holds 2.0"):
        load_split(tiny_fmap, "train")


def test_feature_map_not_matching_schema(tiny_fmap):
    path = tiny_fmap.split_paths("train")[0]
    pq.write_table(pq.read_table(path).drop_columns(["age"]), path)
    with pytest.raises(CtrbenchError, match=r"\['age'\] are in the feature map but not in the file"):
        load_split(tiny_fmap, "train")


def test_feature_map_with_typo_key(tiny_fmap):
    path = tiny_fmap.root / "feature_map.json"
    data = json.loads(path.read_text())
    data["features"][0]["vocab_sise"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(CtrbenchError, match="unknown key 'vocab_sise' \\(did you mean 'vocab_size'\\?\\)"):
        FeatureMap.load(tiny_fmap.root)


def test_feature_spec_checks():
    with pytest.raises(CtrbenchError, match="needs max_len"):
        FeatureSpec(name="s", type="sequence", vocab_size=4)
    with pytest.raises(CtrbenchError, match="share_embedding must name a categorical"):
        FeatureMap(dataset="d", label="y", features=[
            FeatureSpec(name="x", type="numeric"),
            FeatureSpec(name="s", type="sequence", vocab_size=4, max_len=2, share_embedding="x")])


def test_a_killed_runs_temporary_folder_is_removed_by_the_next(tmp_path, capsys):
    """A preprocess killed hard leaves `.out.tmp-PID-*`; the next run for the same output removes it when
    that pid no longer runs, and leaves a live run's folder alone."""
    import os
    import subprocess

    from ctrbench.data.features import DatasetWriter

    finished = subprocess.Popen(["true"])
    finished.wait()  # a pid that has exited
    stale = tmp_path / f".out.tmp-{finished.pid}-deadbeef"
    live = tmp_path / f".out.tmp-{os.getpid()}-cafecafe"
    for folder in (stale, live):
        (folder / "train").mkdir(parents=True)
    with DatasetWriter(tmp_path / "out"):
        pass
    assert not stale.exists() and live.exists()
    assert f"removed {stale}" in capsys.readouterr().err


def test_a_dataset_with_no_rows_stops_and_says_why(tmp_path):
    """`--skip-bad-rows` on files whose every row is bad: no 0 / 0 / 0 dataset, one line with the count."""
    import pyarrow as pa

    from ctrbench.core.errors import CtrbenchError
    from ctrbench.data.features import DatasetWriter, FeatureMap

    empty = pa.table({"label": pa.array([], pa.float32())})
    fmap = FeatureMap(dataset="d", label="label", features=[], source={"skipped_rows": {"a.txt: bad label": 7}})
    with pytest.raises(CtrbenchError, match=r"every split would be empty: every row was skipped as bad \(7 rows;"):
        with DatasetWriter(tmp_path / "out") as writer:
            for split in ("train", "valid", "test"):
                writer.write_split(split, empty)
            writer.commit(fmap)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary folder left
