"""The run record: stored records read back exactly, bad lines stop with file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctrbench.core.errors import CtrbenchError
from ctrbench.store.record import BayesLimit, Device, Environment, Metrics, RunConfig, RunRecord, bayes_limits
from ctrbench.store.results import ResultsStore

ARCHIVE = Path(__file__).resolve().parent.parent / "leaderboards" / "archive" / "results_2026-11-23.jsonl"


def archived_line(number: int = 1) -> str:
    return ARCHIVE.read_text().splitlines()[number - 1]


def test_a_stored_record_reads_back_field_by_field_and_writes_the_same_line():
    line = archived_line()
    data = json.loads(line)
    record = RunRecord.from_json(data)
    assert record.key == (data["model"], "frappe", data["config_hash"], 2021) and record.model == "dlrm"
    assert record.ok and record.entry == "dlrm" and record.distributed is None
    assert isinstance(record.valid, Metrics) and record.test.auc == data["test"]["auc"]
    assert record.history[0].epoch == 1 and len(record.history) == record.epochs
    assert record.device == Device("cpu", "AMD EPYC", 1) and record.environment.git_dirty is False
    assert record.to_line() == line  # same keys, same order, same values: old and new records mix in a store


def test_a_store_round_trips_through_append(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    records = [RunRecord.from_json(json.loads(archived_line(n))) for n in (1, 2)]
    for record in records:
        store.append(record)
    assert store.records() == records
    assert (tmp_path / "results.jsonl").read_text() == archived_line(1) + "\n" + archived_line(2) + "\n"


def test_a_diverged_run_stores_empty_metrics():
    record = RunRecord(model="lr", dataset="d", config_hash="h", seed=1, status="diverged", config=RunConfig({}, {}),
                       valid=None, test=None, dense_params=1, embedding_params=2, mflop_per_example=0.5,
                       samples_per_second=10.0, environment=Environment(Device("cpu", "x", 2)))
    data = record.to_json()
    assert (data["valid"], data["test"], data["history"], "distributed" in data) == ({}, {}, [], False)
    assert RunRecord.from_json(json.loads(record.to_line())) == record


def test_bayes_limits_are_stored_only_for_a_dataset_that_knows_them():
    source = {"bayes": {"test": {"logloss": 0.41, "auc": 0.8, "ctr": 0.25}}}
    assert bayes_limits(source) == {"test": BayesLimit(0.41, 0.8, 0.25)} and bayes_limits({}) is None
    data = json.loads(archived_line())
    assert "bayes" not in data
    teacher = RunRecord.from_json({**data, "bayes": source["bayes"]})
    assert teacher.bayes["test"].logloss == 0.41 and json.loads(teacher.to_line())["bayes"] == source["bayes"]


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["valid"].update(auc="high"), "record.valid.auc: expected float, got 'high'"),
    (lambda r: r["history"][3].update(valid_auc=None), r"record.history\[3\].valid_auc: expected float, got None"),
    (lambda r: r["device"].pop("name"), "record.device: missing key 'name'"),
    (lambda r: r.update(seed="2021"), "record.seed: expected int, got '2021'"),
    (lambda r: r.update(epoch=3), "record: unknown field 'epoch'; the fields are: bayes, best_epoch"),
    (lambda r: r.pop("config"), r"record lacks \['config'\]"),
])
def test_a_bad_line_names_the_store_the_line_and_the_field(tmp_path, edit, message):
    bad = json.loads(archived_line(2))
    edit(bad)
    path = tmp_path / "results.jsonl"
    path.write_text(archived_line(1) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(CtrbenchError, match=f"^{path}:2: {message}.*; fix or remove that line$"):
        ResultsStore(path).records()


def test_two_stores_in_one_folder_keep_their_predictions_apart(tmp_path):
    """results.jsonl keeps `predictions/`; any other store NAME.jsonl keeps `NAME.predictions/`."""
    import numpy as np

    data = {"model": "dlrm", "display_name": "DLRM", "dataset": "d", "config_hash": "c", "seed": 2021, "status": "ok",
            "config": {"model": {}, "train": {}}, "valid": {"auc": 0.7, "logloss": 0.5},
            "test": {"auc": 0.7, "logloss": 0.5}, "samples_per_second": 1.0, "dense_params": 1,
            "embedding_params": 1, "mflop_per_example": 1.0, "device": {"type": "cpu", "name": "cpu"}}
    record = RunRecord.from_json(data)
    stores = {name: ResultsStore(tmp_path / name) for name in ("results.jsonl", "in-memory.jsonl", "stream.jsonl")}
    for value, store in enumerate(stores.values()):
        store.append(record, np.full(3, value, dtype=np.float32))
    assert [store.predictions(record)[0] for store in stores.values()] == [0.0, 1.0, 2.0]
    assert stores["results.jsonl"].predictions_dir == tmp_path / "predictions"
    assert stores["stream.jsonl"].predictions_dir == tmp_path / "stream.predictions"
