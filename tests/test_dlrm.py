import pytest
import torch

from ctrbench.data.batches import load_split
from ctrbench.data.sources import InMemory
from ctrbench.training.loop import TrainConfig, fit, seed_everything
from model_zoo.dlrm import DLRM
from model_zoo.logistic_regression import LogisticRegression


@pytest.mark.parametrize("interaction", ["dot", "cat"])
def test_forward_backward_every_feature_type(tiny_fmap, tiny_batch, interaction):
    model = DLRM(tiny_fmap, embedding_dim=4, bottom_mlp_units=(8,), top_mlp_units=(16,), interaction=interaction)
    logits = model(tiny_batch)
    assert logits.shape == (64,)
    logits.sum().backward()
    assert model.embedding.table.weight.grad.abs().sum() > 0
    assert model.embedding.numeric_mlp[0].weight.grad.abs().sum() > 0


def test_dot_interaction_by_hand(tiny_fmap, tiny_batch):
    model = DLRM(tiny_fmap, embedding_dim=3, bottom_mlp_units=(), top_mlp_units=())
    x0 = model.embedding(tiny_batch)  # 6 fields: dense + 5 sparse
    fields = x0.shape[1]
    expected = torch.stack([(x0[:, i] * x0[:, j]).sum(-1) for i in range(fields) for j in range(i + 1, fields)], 1)
    top_input = torch.cat([x0[:, 0], expected], 1)
    assert top_input.shape[1] == 3 + fields * (fields - 1) // 2
    assert torch.allclose(model(tiny_batch), model.top_mlp(top_input).squeeze(-1))


def test_dlrm_learns_planted_interactions_better_than_lr(synthetic_fmap):
    data = {s: InMemory(load_split(synthetic_fmap, s)) for s in ("train", "valid", "test")}
    aucs = {}
    for name, build, config in [
        ("lr", lambda: LogisticRegression(synthetic_fmap), TrainConfig(batch_size=512, epochs=8, learning_rate=1e-2)),
        ("dlrm", lambda: DLRM(synthetic_fmap, embedding_dim=8, bottom_mlp_units=(16,), top_mlp_units=(64,)),
         TrainConfig(batch_size=512, epochs=8, learning_rate=3e-3, embedding_regularizer=1e-2)),
    ]:
        seed_everything(0)
        result = fit(build(), data["train"], data["valid"], data["test"], config, 0, progress=False)
        aucs[name] = result.test["auc"]
    assert aucs["dlrm"] > aucs["lr"] + 0.03, aucs
