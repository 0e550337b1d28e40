"""The data-scale measurement scripts: one-epoch full-size records, the README table made from them, and
the streamed-against-in-memory comparison."""

from __future__ import annotations

import json

import pytest

from benchmarks import fullsize_table, fullsize_train, stream_check
from benchmarks.measure import REPO
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ResultsStore


def test_readme_table_is_generated_from_the_committed_json():
    assert fullsize_table.main(["--check"]) == 0


def test_table_rows_say_stage_model_rows_and_aucs(tmp_path):
    machine = {"cpu": "CPU", "cores": 2, "memory_gib": 24, "load_average_before": 1.5}
    (tmp_path / "d_train_dlrm.json").write_text(json.dumps({
        "dataset": "d", "stage": "train", "model": "dlrm", "train_rows": 1000, "valid_rows": 10, "test_rows": 10,
        "wall_s": 12.5, "cpu_s": 20.0, "peak_rss_mib": 900, "samples_per_s": 4321, "epoch_s": 3.2,
        "valid_auc": 0.71234, "test_auc": 0.7, "machine": machine, "commit": "0123456789"}))
    (tmp_path / "d_preprocess.json").write_text(json.dumps({
        "dataset": "d", "stage": "preprocess", "train_rows": 1000, "valid_rows": 10, "test_rows": 10,
        "wall_s": 2.0, "cpu_s": 1.5, "peak_rss_mib": 100, "rows_per_s": 505, "machine": machine, "commit": None}))
    lines = fullsize_table.render(tmp_path).splitlines()
    assert lines[0] == fullsize_table.BEGIN and lines[-1] == fullsize_table.END
    assert lines[3] == "| `d_preprocess` | preprocess |  | 1,000 / 10 / 10 | 2.0 s | 1.5 s | 100 MiB | 505 rows/s |  | 1.5 | - |"
    assert lines[4] == ("| `d_train_dlrm` | train | dlrm | 1,000 / 10 / 10 | 12.5 s | 20.0 s | 900 MiB | "
                        "4,321 samples/s, epoch 3.2 s | 0.7123 / 0.7000 | 1.5 | 0123456 |")
    with pytest.raises(SystemExit, match="must hold the line"):
        fullsize_table.replace_block("no markers", "x")


def test_one_epoch_run_is_measured_and_recorded(synthetic_data_dir, tmp_path):
    """DLRM for one epoch on the 50k-row synthetic dataset through `ctrbench bench` in a child process: the
    record matches the run in the store, and a second call refuses to measure a run `bench` would skip."""
    store = tmp_path / "runs.jsonl"
    args = ["synthetic", "--data-dir", str(synthetic_data_dir), "--models", "dlrm", "--input", "write_synthetic",
            "--results", str(store), "--out", str(tmp_path), "--set", "train.batch_size=4096"]
    fullsize_train.main(args)
    record = json.loads((tmp_path / "synthetic_train_dlrm.json").read_text())
    (run,) = ResultsStore(store).records()
    assert run.config.train["epochs"] == 1 and run.config.train["batch_size"] == 4096
    assert (record["stage"], record["model"], record["train_rows"]) == ("train", "dlrm", 40_000)
    assert record["test_auc"] == round(run.test.auc, 6) and record["samples_per_s"] == round(run.samples_per_second)
    assert record["epoch_s"] > 0 and record["wall_s"] > record["epoch_s"] and 100 < record["peak_rss_mib"] < 8192
    assert record["data"].startswith("synthetic data: train 40,000 rows") and "in memory" in record["data"]
    assert record["command"] == (f"ctrbench bench --dataset synthetic --data-dir {synthetic_data_dir} --models dlrm "
                                 f"--seeds 1 --set train.epochs=1 --results {store} --no-progress "
                                 "--set train.batch_size=4096")
    assert record["input"] == "write_synthetic" and record["machine"]["cores"] >= 1 and REPO.is_dir()
    with pytest.raises(SystemExit, match="already holds a run of dlrm"):
        fullsize_train.main(args)


def _run(model: str, seed: int, auc: float, data_hash: str = "build") -> RunRecord:
    return RunRecord.from_json({
        "model": model, "display_name": model, "dataset": "frappe", "config_hash": "c", "seed": seed, "status": "ok",
        "config": {"model": {}, "train": {}}, "data_hash": data_hash, "valid": {"auc": auc, "logloss": 0.2},
        "test": {"auc": auc, "logloss": 0.1}, "samples_per_second": 1.0, "dense_params": 1, "embedding_params": 1,
        "mflop_per_example": 1.0, "device": {"type": "cpu", "name": "cpu"}})


def test_stream_check_calls_a_difference_within_the_seed_spread_the_same():
    in_memory = [_run("dlrm", 2021 + i, auc) for i, auc in enumerate([0.980, 0.982, 0.984])]
    in_memory += [_run("wukong", 2021 + i, auc) for i, auc in enumerate([0.980, 0.981, 0.982])]
    in_memory += [_run("wukong", 2024, 0.5, data_hash="other build")]  # another build: left out
    streamed = [_run("dlrm", 2021 + i, auc) for i, auc in enumerate([0.981, 0.983, 0.985])]
    streamed += [_run("wukong", 2021 + i, auc) for i, auc in enumerate([0.990, 0.991])]  # seed 2023 missing
    dlrm, wukong = stream_check.compare(in_memory, streamed)
    assert dlrm == ("| dlrm | 2021, 2022, 2023 | 0.9820 ± 0.0020 | 0.9830 ± 0.0020 | +0.0010 | 0.0020 "
                    "| 0.1000 ± 0.0000 | 0.1000 ± 0.0000 | same |")
    assert wukong.startswith("| wukong | 2021, 2022 | 0.9805 ± 0.0007 | 0.9905 ± 0.0007 | +0.0100 | 0.0007 |")
    assert wukong.endswith("| differs |")
