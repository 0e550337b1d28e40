import json

import pytest

from ctrbench.app.runner import resolve_spec
from ctrbench.core.config import load_yaml, parse_overrides
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.datasets import REPO_ROOT


def test_model_config_typo_suggests_closest(tmp_path):
    (tmp_path / "dlrm.yaml").write_text("synthetic:\n  model: {embeding_dim: 8}\n")
    with pytest.raises(CtrbenchError, match=r"dlrm.yaml: synthetic.model: unknown key 'embeding_dim' \(did you mean 'embedding_dim'\?\)"):
        resolve_spec("dlrm", "synthetic", 1, tmp_path)


def test_train_config_wrong_type(tmp_path):
    (tmp_path / "dlrm.yaml").write_text("synthetic:\n  train: {batch_size: large}\n")
    with pytest.raises(CtrbenchError, match=r"synthetic.train.batch_size: expected int, got 'large'"):
        resolve_spec("dlrm", "synthetic", 1, tmp_path)


def test_unknown_dataset_section(tmp_path):
    (tmp_path / "dlrm.yaml").write_text("frape:\n  train: {batch_size: 8}\n")
    with pytest.raises(CtrbenchError, match=r"unknown key 'frape' \(did you mean 'frappe'\?\)"):
        resolve_spec("dlrm", "synthetic", 1, tmp_path)


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [unclosed\n")
    with pytest.raises(CtrbenchError, match=r"bad.yaml: line \d+: invalid YAML"):
        load_yaml(path)


def test_overrides_and_defaults():
    spec = resolve_spec("dlrm", "synthetic", 3, overrides=parse_overrides(["train.epochs=2", "model.top_mlp_units=[8]"]))
    assert spec.train.epochs == 2 and spec.model_params["top_mlp_units"] == (8,)
    assert spec.train.learning_rate == 0.003  # from model_zoo/configs/dlrm.yaml
    assert spec.train.early_stop_patience == 2  # TrainConfig default
    with pytest.raises(CtrbenchError, match="expected model.KEY=VALUE"):
        parse_overrides(["epochs=2"])


def test_config_hash_changes_with_config_not_seed():
    a = resolve_spec("dlrm", "synthetic", 1)
    b = resolve_spec("dlrm", "synthetic", 2)
    c = resolve_spec("dlrm", "synthetic", 1, overrides=parse_overrides(["train.epochs=5"]))
    assert a.config_hash("h") == b.config_hash("h") != c.config_hash("h")
    assert a.config_hash("h") != a.config_hash("other data")


def test_bf16_is_a_new_config_and_fp32_configs_keep_their_committed_hashes():
    fp32 = resolve_spec("dlrm", "synthetic", 1)
    bf16 = resolve_spec("dlrm", "synthetic", 1, overrides=parse_overrides(["train.precision=bf16"]))
    assert "precision" not in fp32.config()["train"] and bf16.config()["train"]["precision"] == "bf16"
    assert fp32.config_hash("h") != bf16.config_hash("h")
    # every run committed before `precision` existed still finds its config (so a rerun resumes, not repeats)
    stores = [REPO_ROOT / "leaderboards" / "archive" / "results_2026-11-23.jsonl", REPO_ROOT / "leaderboards" / "results.jsonl"]
    records = [json.loads(line) for store in stores if store.is_file() for line in store.read_text().splitlines()]
    assert records
    for record in records:
        spec = resolve_spec(record["model"], record["dataset"], record["seed"], overrides=record["config"])
        assert spec.config_hash(record["data_hash"]) == record["config_hash"], record["model"]
