"""The equal-budget comparison protocol (`ctrbench bench --protocol`): its file, its stages, its runs."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from ctrbench.app.cli import main
from ctrbench.app.options import RunOptions
from ctrbench.app.protocol import ProtocolPlanner, draw_points, search_space
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.synthetic import write_synthetic
from ctrbench.store.protocol_spec import load_protocol
from ctrbench.store.record import Device, Environment, Metrics, RunConfig, RunRecord
from ctrbench.store.results import ResultsStore, select_best

PROTOCOL = """
even:
  grid_points: 1
  embedding_dims: {synthetic: [4, 8]}
capped:
  grid_points: 1
  caps:
    synthetic:
      dlrm: {embedding_dims: [4], grid_points: 0, reason: too slow}
"""
TRAIN = "train: {batch_size: 1024, epochs: 2, early_stop_patience: 2}"
DLRM = f"""synthetic:
  model: {{embedding_dim: 4, bottom_mlp_units: [8], top_mlp_units: [16]}}
  {TRAIN}
  search:
    model: {{top_mlp_units: [[16], [32]]}}
    train: {{learning_rate: [0.001, 0.003]}}
"""
LR = f"""synthetic:
  {TRAIN}
  search:
    - train: {{learning_rate: 0.01}}
    - train: {{learning_rate: 0.03}}
"""


@pytest.fixture
def configs(tmp_path) -> Path:
    directory = tmp_path / "configs"
    directory.mkdir()
    (directory / "protocol.yaml").write_text(PROTOCOL)
    (directory / "dlrm.yaml").write_text(DLRM)
    (directory / "lr.yaml").write_text(LR)
    return directory


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data")
    write_synthetic(directory / "synthetic", rows=3_000, seed=3)
    return directory


def test_protocol_file_settings_and_caps(configs):
    even = load_protocol("even", configs)
    assert (even.grid_points, even.dims("synthetic", "dlrm", 16)) == (1, [4, 8])
    capped = load_protocol("capped", configs)
    assert capped.dims("synthetic", "lr", 16) == [16, 128]  # dataset not listed: its config's dim and 128
    assert (capped.dims("synthetic", "dlrm", 16), capped.points("synthetic", "dlrm")) == ([4], 0)
    assert capped.cap("synthetic", "dlrm").reason == "too slow"


@pytest.mark.parametrize("text, message", [
    ("even: {grid_points: 1, embedding_dim: {synthetic: [4]}}", "unknown key 'embedding_dim' (did you mean 'embedding_dims'?)"),
    ("even: {grid_points: -1}", "grid_points: must be >= 0"),
    ("even: {grid_points: 1, caps: {synthetic: {dlrm: {embedding_dims: [4]}}}}", "missing key 'reason'"),
])
def test_bad_protocol_file_is_one_line_error(tmp_path, text, message):
    (tmp_path / "protocol.yaml").write_text(text)
    with pytest.raises(CtrbenchError, match=re.escape(message)):
        load_protocol("even", tmp_path)


def test_unknown_protocol_name_lists_the_known_ones(configs):
    with pytest.raises(CtrbenchError, match=r"unknown protocol .* 'evn' \(did you mean 'even'\?\); valid: capped, even"):
        load_protocol("evn", configs)


def test_search_space_grid_and_listed_points(configs):
    assert search_space("dlrm", "synthetic", configs) == [
        {"model": {"top_mlp_units": [16]}, "train": {"learning_rate": 0.001}},
        {"model": {"top_mlp_units": [16]}, "train": {"learning_rate": 0.003}},
        {"model": {"top_mlp_units": [32]}, "train": {"learning_rate": 0.001}},
        {"model": {"top_mlp_units": [32]}, "train": {"learning_rate": 0.003}},
    ]
    assert search_space("lr", "synthetic", configs) == [{"model": {}, "train": {"learning_rate": 0.01}},
                                                        {"model": {}, "train": {"learning_rate": 0.03}}]
    assert search_space("dcnv2", "synthetic", configs) == []  # no config file: no space


@pytest.mark.parametrize("search, message", [
    ("    model: {embedding_dim: [4, 8]}", "embedding_dim is the protocol's first stage"),
    ("    model: {top_mlp_unit: [[16]]}", "unknown key 'top_mlp_unit'"),
    ("    - model: {top_mlp_units: 16}", "top_mlp_units: expected tuple"),
])
def test_bad_search_space_is_one_line_error(configs, search, message):
    (configs / "dlrm.yaml").write_text(DLRM.split("  search:")[0] + "  search:\n" + search + "\n")
    with pytest.raises(CtrbenchError, match=message):
        search_space("dlrm", "synthetic", configs)


def test_points_are_drawn_the_same_way_every_time():
    points = [{"model": {"x": i}, "train": {}} for i in range(10)]
    drawn = draw_points(points, 3, "frappe", "dlrm")
    assert drawn == draw_points(points, 3, "frappe", "dlrm") and len(drawn) == 3
    assert drawn != draw_points(points, 3, "frappe", "dcnv2")  # another model, another draw
    assert [p["model"]["x"] for p in drawn] == sorted(p["model"]["x"] for p in drawn)  # in space order
    assert draw_points(points[:2], 3, "frappe", "dlrm") == points[:2]


def record(planner: ProtocolPlanner, spec, valid_auc: float | None) -> RunRecord:
    """A stored run of `spec` with the given validation AUC (None: diverged)."""
    metrics = Metrics(valid_auc, 0.5) if valid_auc is not None else None
    return RunRecord(model=spec.model, dataset=spec.dataset, config_hash=spec.config_hash(planner.data_hash),
                     seed=spec.seed, status="ok" if valid_auc is not None else "diverged", config=RunConfig({}, {}),
                     valid=metrics, test=metrics, dense_params=1, embedding_params=1, mflop_per_example=1.0,
                     samples_per_second=1.0, environment=Environment(Device("cpu", "test cpu")))


def test_stages_follow_validation_auc_only(configs):
    """Stage 1 tries both dims; the better one on validation (dim 8) carries the grid point; the best of
    all three configs on validation gets the extra seeds. Test AUCs play no part (none are given)."""
    planner = ProtocolPlanner(load_protocol("even", configs), "synthetic", ["dlrm"], seeds=3, data_hash="h",
                              options=RunOptions(config_dir=configs))
    plan = planner.plan([])[0]
    assert plan.stage == "embedding dim" and [s.model_params["embedding_dim"] for s in plan.todo] == [4, 8]
    dim4, dim8 = plan.todo
    stored = [record(planner, dim4, 0.70), record(planner, dim8, 0.72)]
    plan = planner.plan(stored)[0]
    assert plan.stage == "grid" and len(plan.todo) == 1
    (point,) = plan.todo
    assert point.model_params["embedding_dim"] == 8 and point.seed == 2021
    assert point.config_hash("h") not in {dim4.config_hash("h"), dim8.config_hash("h")}

    plan = planner.plan(stored + [record(planner, point, 0.71)])[0]  # the point is worse: dim 8 wins
    assert plan.stage == "seeds" and plan.winner_hash == dim8.config_hash("h")
    assert [(s.config_hash("h"), s.seed) for s in plan.todo] == [(dim8.config_hash("h"), 2022),
                                                                 (dim8.config_hash("h"), 2023)]
    plan = planner.plan(stored + [record(planner, point, None)])[0]  # a diverged point never wins
    assert plan.winner_hash == dim8.config_hash("h")
    plan = planner.plan(stored + [record(planner, point, 0.73)] + [record(planner, s, 0.5) for s in plan.todo])[0]
    assert plan.stage == "seeds" and plan.winner_hash == point.config_hash("h")  # the point wins; dim 8's seeds don't count


def test_a_point_equal_to_the_config_is_not_a_point(configs):
    """The base config (learning rate 0.001, top MLP [16]) is in the space; it is never drawn again."""
    planner = ProtocolPlanner(load_protocol("even", configs), "synthetic", ["dlrm"], seeds=1, data_hash="h",
                              options=RunOptions(config_dir=configs))
    (configs / "protocol.yaml").write_text(PROTOCOL.replace("grid_points: 1\n  embedding", "grid_points: 9\n  embedding"))
    planner.protocol = load_protocol("even", configs)
    dim4, dim8 = planner.plan([])[0].todo
    plan = planner.plan([record(planner, dim4, 0.8), record(planner, dim8, 0.7)])[0]
    assert len(plan.todo) == 3 and dim4.config_hash("h") not in {s.config_hash("h") for s in plan.todo}


def test_set_of_a_searched_hyperparameter_is_refused(configs):
    with pytest.raises(CtrbenchError, match=r"--set train.learning_rate: the protocol tries several values"):
        ProtocolPlanner(load_protocol("even", configs), "synthetic", ["dlrm"], 1, "h",
                        RunOptions(config_dir=configs, overrides={"train": {"learning_rate": 0.1}}))
    with pytest.raises(CtrbenchError, match=r"--set model.embedding_dim"):
        ProtocolPlanner(load_protocol("even", configs), "synthetic", ["dlrm"], 1, "h",
                        RunOptions(config_dir=configs, overrides={"model": {"embedding_dim": 8}}))


def test_protocol_end_to_end_with_two_workers_then_resume(configs, data_dir, tmp_path, capsys):
    """Two worker processes run the whole protocol for two models; each planned run is stored exactly
    once; the leaderboard's choice is the protocol's; a rerun trains nothing."""
    args = ["bench", "--dataset", "synthetic", "--models", "dlrm,lr", "--protocol", "even", "--seeds", "2",
            "--config-dir", str(configs), "--data-dir", str(data_dir), "--results", "results.jsonl",
            "--device", "cpu", "--no-progress"]
    with contextlib.chdir(tmp_path):
        assert main([*args, "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    keys = [(r["model"], r["config_hash"], r["seed"]) for r in records]
    # DLRM: 2 dims + 1 point, then 1 more seed; LR (no embedding): its config + 1 point, then 1 more seed
    assert len(keys) == len(set(keys)) == 4 + 3
    chosen = select_best(ResultsStore(tmp_path / "results.jsonl").records())
    for model, tried in (("dlrm", 3), ("lr", 2)):
        runs = [r for r in records if r["model"] == model]
        first = [r for r in runs if r["seed"] == 2021]
        best = max(first, key=lambda r: r["valid"]["auc"])
        assert {r["config_hash"] for r in runs if r["seed"] == 2022} == {best["config_hash"]}
        assert chosen[("synthetic", model)][0].config_hash == best["config_hash"]
        assert chosen[("synthetic", model)][1] == tried
    assert "configs tried" in out and "benchmark wall time" in err

    with contextlib.chdir(tmp_path):
        assert main(args) == 0
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(records)  # nothing retrained


def test_each_run_keeps_its_test_predictions(data_dir, tmp_path):
    """The store keeps every run's test logits beside it (float32, test rows in order) and nothing of the
    dataset itself; the AUC of those logits on the processed data's test labels is the recorded test AUC."""
    import numpy as np
    import torch

    from ctrbench.data.batches import load_labels, load_split
    from ctrbench.data.datasets import load_feature_map
    from ctrbench.training.metrics import auc

    store = ResultsStore(tmp_path / "store" / "results.jsonl")
    with contextlib.chdir(tmp_path):
        for model in ("lr", "dlrm"):
            assert main(["train", "--model", model, "--dataset", "synthetic", "--data-dir", str(data_dir), "--results",
                         str(store.path), "--quick", "--device", "cpu", "--no-progress"]) == 0
    fmap = load_feature_map("synthetic", data_dir)
    labels = load_labels(fmap, "test")
    assert np.array_equal(labels, load_split(fmap, "test").label.numpy())
    for record in store.records():
        logits = store.predictions(record)
        assert logits.dtype == np.float32 and logits.shape == (len(labels),)
        assert auc(torch.from_numpy(labels), torch.from_numpy(logits)) == record.test.auc
    assert len(list(store.predictions_dir.iterdir())) == 2  # one file per run, no labels
