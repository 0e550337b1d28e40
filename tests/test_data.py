"""Splits held in memory or streamed: the automatic choice, streamed training and evaluation."""

import json

import pyarrow.parquet as pq
import pytest
import torch

from ctrbench.app.cli import main
from ctrbench.app.runner import DatasetSplits
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from ctrbench.data.sources import (MEMORY_BUDGET_ENV, InMemory, ParquetStream, memory_budget, open_splits, rebatch,
                                   row_bytes)
from ctrbench.data.synthetic import write_synthetic
from ctrbench.training.loop import TrainConfig, evaluate_split, fit, load_trained_state, seed_everything, trained_state
from model_zoo.dlrm import DLRM

ROW_GROUP_ROWS = 500


@pytest.fixture(scope="module")
def small_row_groups(tmp_path_factory) -> FeatureMap:
    """8,000 synthetic rows (6,400 train) whose splits are rewritten in row groups of 500 rows."""
    fmap = write_synthetic(tmp_path_factory.mktemp("data") / "synthetic", rows=8000, seed=7)
    for split in fmap.splits:
        for path in fmap.split_paths(split):
            pq.write_table(pq.read_table(path), path, row_group_size=ROW_GROUP_ROWS)
    return FeatureMap.load(fmap.root)


def test_row_bytes_come_from_the_feature_map(small_row_groups):
    # 3 numeric + 8 categorical columns, a history of 8 items, the label: 20 values of 4 bytes
    assert row_bytes(small_row_groups) == 4 * (3 + 8 + 8 + 1)


def test_automatic_choice_streams_under_a_small_budget_and_loads_under_a_large_one(small_row_groups):
    train_bytes = 6400 * row_bytes(small_row_groups)
    sources, line = open_splits(small_row_groups, budget=train_bytes - 1)
    assert isinstance(sources["train"], ParquetStream)
    assert isinstance(sources["valid"], InMemory) and isinstance(sources["test"], InMemory)
    assert line == ("synthetic data: train 6,400 rows, 500.0 KiB: streamed; valid 800 rows, 62.5 KiB: in memory; "
                    "test 800 rows, 62.5 KiB: in memory [memory budget 500.0 KiB (given)]")
    sources, _ = open_splits(small_row_groups, budget=100_000)  # valid fits, then 36,000 bytes are left for test
    assert [type(sources[s]) for s in ("train", "valid", "test")] == [ParquetStream, InMemory, ParquetStream]
    sources, line = open_splits(small_row_groups, budget=10 * train_bytes)
    assert all(isinstance(source, InMemory) for source in sources.values())
    assert line.count("in memory") == 3
    sources, line = open_splits(small_row_groups, stream=True)
    assert all(isinstance(source, ParquetStream) for source in sources.values())
    assert line.endswith("[forced by --stream]")


def test_memory_budget_reads_the_environment_or_the_available_memory(monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1.5G")
    assert memory_budget() == (3 << 29, "$CTRBENCH_MEMORY_BUDGET")
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "500m")
    assert memory_budget()[0] == 500 << 20
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(CtrbenchError, match="CTRBENCH_MEMORY_BUDGET='lots': expected a size in bytes"):
        memory_budget()
    monkeypatch.delenv(MEMORY_BUDGET_ENV)
    budget, source = memory_budget()
    assert budget > 0 and source == "50% of available memory"


def test_splits_listing_the_same_files_are_read_once(small_row_groups, tmp_path):
    data = json.loads((small_row_groups.root / "feature_map.json").read_text())
    data["splits"]["valid"] = data["splits"]["test"]  # as a dataset config's `valid: test` writes it
    (tmp_path / "feature_map.json").write_text(json.dumps(data))
    for split in ("train", "test"):
        (tmp_path / split).symlink_to(small_row_groups.root / split)
    fmap = FeatureMap.load(tmp_path)
    for stream in (False, True):
        sources, line = open_splits(fmap, stream=stream)
        assert sources["test"] is sources["valid"]
        assert "test = valid (same files, read once)" in line


def test_streaming_sees_every_row_once_per_epoch_mixed_across_row_groups(small_row_groups):
    stream = ParquetStream(small_row_groups, "train", window_row_groups=4)
    memory = load_split(small_row_groups, "train")
    row_id = {value: i for i, value in enumerate(memory.numeric[:, 0].tolist())}  # float draws: distinct
    assert len(row_id) == 6400
    generator = torch.Generator().manual_seed(3)
    epochs = [[b for b in stream.batches(1000, shuffle=True, generator=generator)] for _ in range(2)]
    for batches in epochs:
        assert [len(b) for b in batches] == [1000] * 6 + [400]
        ids = [row_id[v] for b in batches for v in b.numeric[:, 0].tolist()]
        assert sorted(ids) == list(range(6400))  # every row exactly once
        rows = torch.tensor(ids)
        assert torch.equal(torch.cat([b.label for b in batches]), memory.label[rows])  # rows stay whole
        assert len(set((rows[:1000] // ROW_GROUP_ROWS).tolist())) == 4  # a batch mixes a window's row groups
    orders = [[row_id[v] for b in batches for v in b.numeric[:, 0].tolist()] for batches in epochs]
    assert orders[0] != orders[1]  # a new order every epoch ...
    again = torch.Generator().manual_seed(3)
    assert [row_id[v] for b in stream.batches(1000, True, again) for v in b.numeric[:, 0].tolist()] == orders[0]  # seeded
    in_order = list(stream.batches(700))
    assert [len(b) for b in in_order] == [700] * 9 + [100]
    assert torch.equal(torch.cat([b.categorical for b in in_order]), memory.categorical)


def test_rebatch_cuts_chunks_into_batches_across_boundaries(tiny_batch):
    chunks = [tiny_batch.slice(0, 5), tiny_batch.slice(5, 7), tiny_batch.slice(7, 30), tiny_batch.slice(30, 64)]
    batches = list(rebatch(chunks, 10))
    assert [len(b) for b in batches] == [10] * 6 + [4]
    assert torch.equal(torch.cat([b.numeric for b in batches]), tiny_batch.numeric)


def test_streamed_and_in_memory_evaluation_agree(small_row_groups):
    seed_everything(0)
    model = DLRM(small_row_groups, embedding_dim=4, bottom_mlp_units=(), top_mlp_units=(8,))
    config = TrainConfig(eval_batch_size=777)  # batches that span row groups
    for split in ("valid", "test"):
        memory_metrics, memory_logits = evaluate_split(model, InMemory(load_split(small_row_groups, split)), config,
                                                       torch.device("cpu"))[:2]
        stream_metrics, stream_logits = evaluate_split(model, ParquetStream(small_row_groups, split), config,
                                                       torch.device("cpu"))[:2]
        assert torch.equal(memory_logits, stream_logits)
        assert stream_metrics["auc"] == pytest.approx(memory_metrics["auc"], abs=1e-9)
        assert stream_metrics["logloss"] == pytest.approx(memory_metrics["logloss"], abs=1e-9)


def test_a_dataset_larger_than_the_budget_trains_by_streaming(small_row_groups, capsys):
    data = DatasetSplits(small_row_groups, budget=100_000)  # 100 kB: the 500 KiB train split does not fit
    assert isinstance(data.train, ParquetStream)
    assert "train 6,400 rows, 500.0 KiB: streamed" in capsys.readouterr().err
    seed_everything(0)
    model = DLRM(small_row_groups, embedding_dim=4, bottom_mlp_units=(), top_mlp_units=(16,))
    result = fit(model, data.train, data.valid, data.test, TrainConfig(batch_size=256, epochs=2, learning_rate=3e-3),
                 0, progress=False)
    assert result.status == "ok" and result.steps == 2 * 25
    assert 0.5 < result.test["auc"] <= 1 and len(result.test_logits) == 800


def test_cli_stream_flags(small_row_groups, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic").symlink_to(small_row_groups.root)
    args = ["train", "--model", "lr", "--dataset", "synthetic", "--data-dir", tmp_path / "data",
            "--results", tmp_path / "results.jsonl", "--set", "train.epochs=1", "--no-progress"]
    assert main([str(a) for a in [*args, "--stream"]]) == 0
    err = capsys.readouterr().err
    assert "synthetic data: train 6,400 rows, 500.0 KiB: streamed;" in err and "[forced by --stream]" in err
    assert main([str(a) for a in [*args, "--in-memory", "--seed", "1"]]) == 0
    assert "[forced by --in-memory]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        main([str(a) for a in [*args, "--in-memory", "--stream"]])
    assert "not allowed with argument" in capsys.readouterr().err


def test_best_epoch_state_leaves_out_frozen_tables(tiny_fmap):
    seed_everything(0)
    model = DLRM(tiny_fmap, embedding_dim=4, bottom_mlp_units=(), top_mlp_units=(8,))
    frozen = [name for name in model.state_dict() if name.rpartition(".")[2] == "frozen_video"]
    assert frozen
    state = trained_state(model)
    assert not set(frozen) & set(state) and set(state) | set(frozen) == set(model.state_dict())
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    load_trained_state(model, state)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    with pytest.raises(RuntimeError, match="does not fit the model"):
        load_trained_state(model, {**state, "nonsense": torch.zeros(1)})

