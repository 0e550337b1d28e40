import copy

import pytest
import torch

import ctrbench.training.loop as train_module
from ctrbench.data.batches import load_split
from ctrbench.data.sources import InMemory
from ctrbench.training.loop import TrainConfig, fit, seed_everything
from model_zoo.dlrm import DLRM


@pytest.fixture(scope="module")
def splits(synthetic_fmap):
    return {s: InMemory(load_split(synthetic_fmap, s)) for s in ("train", "valid", "test")}


def _fit(fmap, splits, seed=1, config=None, **kwargs):
    seed_everything(seed)
    model = DLRM(fmap, embedding_dim=8, bottom_mlp_units=(16,), top_mlp_units=(32,), top_mlp_dropout=0.1)
    config = config or TrainConfig(batch_size=512, epochs=2, learning_rate=3e-3)
    return model, fit(model, splits["train"], splits["valid"], splits["test"], config, seed, progress=False, **kwargs)


def test_same_seed_same_metrics(synthetic_fmap, splits):
    _, first = _fit(synthetic_fmap, splits, seed=5)
    _, second = _fit(synthetic_fmap, splits, seed=5)
    _, other = _fit(synthetic_fmap, splits, seed=6)
    learning_curve = lambda result: [(h["train_loss"], h["valid_auc"]) for h in result.history]  # noqa: E731
    assert first.test == second.test and learning_curve(first) == learning_curve(second)
    assert first.test != other.test


def test_early_stopping_restores_best_epoch(synthetic_fmap, splits, monkeypatch):
    scripted_auc = iter([0.60, 0.70, 0.65, 0.64, 0.70, 0.70])
    snapshots = []

    def scripted_evaluation(model, source, config, device, group_column=None):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return {"auc": next(scripted_auc), "logloss": 0.5}, torch.zeros(1), torch.zeros(1)

    monkeypatch.setattr(train_module, "evaluate_split", scripted_evaluation)
    config = TrainConfig(batch_size=512, epochs=10, learning_rate=1e-3, early_stop_patience=2)
    model, result = _fit(synthetic_fmap, splits, config=config)
    assert result.best_epoch == 2 and result.epochs == 4
    assert [h["valid_auc"] for h in result.history] == [0.60, 0.70, 0.65, 0.64]
    best = snapshots[1]
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(snapshots[3][k], v) for k, v in model.state_dict().items())


def test_lr_reduced_on_plateau(synthetic_fmap, splits, monkeypatch):
    scripted_auc = iter([0.7, 0.6, 0.5, 0.1, 0.1])
    seen_lrs = []
    real_make_optimizer = train_module.make_optimizer

    def recording_optimizer(model, config):
        optimizer = real_make_optimizer(model, config)
        seen_lrs.append(optimizer.param_groups)
        return optimizer

    monkeypatch.setattr(train_module, "make_optimizer", recording_optimizer)
    monkeypatch.setattr(train_module, "evaluate_split", lambda *a: ({"auc": next(scripted_auc), "logloss": 0.5}, torch.zeros(1), torch.zeros(1)))
    config = TrainConfig(batch_size=512, epochs=10, learning_rate=1e-3, early_stop_patience=2)
    _fit(synthetic_fmap, splits, config=config)
    assert [g["lr"] for g in seen_lrs[0]] == pytest.approx([1e-5, 1e-5])


def test_divergence_is_recorded_not_raised(synthetic_fmap, splits):
    seed_everything(0)
    model = DLRM(synthetic_fmap, embedding_dim=4, bottom_mlp_units=(), top_mlp_units=(8,))
    calls = {"n": 0}
    forward = model.forward

    def poisoned(batch):
        calls["n"] += 1
        out = forward(batch)
        return out * float("nan") if calls["n"] == 3 else out

    model.forward = poisoned
    result = fit(model, splits["train"], splits["valid"], splits["test"], TrainConfig(batch_size=512, epochs=3), 0,
                 progress=False)
    assert result.status == "diverged"
    assert result.diverged["step"] == 3 and result.diverged["what"] == "non-finite loss"
    assert isinstance(result.diverged["last_finite_loss"], float)


def test_resume_from_checkpoint_matches_uninterrupted(synthetic_fmap, splits, tmp_path):
    config = TrainConfig(batch_size=512, epochs=3, learning_rate=3e-3, early_stop_patience=10)
    _, straight = _fit(synthetic_fmap, splits, config=config)
    checkpoint = tmp_path / "run.ckpt"
    _fit(synthetic_fmap, splits, config=TrainConfig(batch_size=512, epochs=1, learning_rate=3e-3, early_stop_patience=10),
         checkpoint_path=checkpoint)
    _, resumed = _fit(synthetic_fmap, splits, config=config, checkpoint_path=checkpoint)
    assert resumed.test == straight.test
    assert [h["valid_auc"] for h in resumed.history] == [h["valid_auc"] for h in straight.history]


def test_bf16_runs_the_forward_pass_in_bfloat16_and_keeps_float32_weights(synthetic_fmap, splits, monkeypatch):
    seen = []
    original = train_module.nn.functional.binary_cross_entropy_with_logits

    def recording_loss(logits, labels):
        seen.append(logits.dtype)
        return original(logits, labels)

    config = TrainConfig(batch_size=512, epochs=1, learning_rate=3e-3, precision="bf16")
    monkeypatch.setattr(train_module.nn.functional, "binary_cross_entropy_with_logits", recording_loss)
    model, result = _fit(synthetic_fmap, splits, config=config)
    assert set(seen) == {torch.float32}  # the loss is taken in float32 ...
    with train_module.autocast("bf16", torch.device("cpu")):
        assert model(next(splits["valid"].batches(8))).dtype == torch.bfloat16  # ... of bfloat16 logits
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.status == "ok" and result.test["auc"] > 0.6
    logits, _, _ = train_module.predict(model, splits["valid"], 1024, torch.device("cpu"), "bf16")
    assert logits.dtype == torch.float32
    _, fp32 = _fit(synthetic_fmap, splits, config=TrainConfig(batch_size=512, epochs=1, learning_rate=3e-3))
    assert result.test["auc"] != fp32.test["auc"] and abs(result.test["auc"] - fp32.test["auc"]) < 0.01
