import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from ctrbench.core.errors import CtrbenchError
from ctrbench.training.metrics import auc, evaluate, logloss


def test_auc_by_hand():
    # pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.4) win, (0.4, 0.1) win, (0.4, 0.4) tie -> 3.5 / 4
    labels = torch.tensor([1, 0, 1, 0])
    scores = torch.tensor([0.8, 0.1, 0.4, 0.4])
    assert auc(labels, scores) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_logloss_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    labels = rng.integers(0, 2, size=n)
    scores = np.round(rng.random(n), 2)  # rounding makes many ties
    assert auc(torch.tensor(labels), torch.tensor(scores)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    probabilities = np.clip(rng.random(n), 1e-3, 1 - 1e-3)
    assert logloss(torch.tensor(labels), torch.tensor(probabilities)) == pytest.approx(
        log_loss(labels, probabilities), abs=1e-12)


def test_logloss_clips_extreme_probabilities():
    assert logloss(torch.tensor([1.0]), torch.tensor([0.0])) == pytest.approx(-np.log(1e-7))


def test_evaluate_takes_logits():
    labels = torch.tensor([0.0, 1.0, 1.0])
    logits = torch.tensor([-2.0, 0.5, 3.0])
    metrics = evaluate(labels, logits)
    assert metrics["auc"] == 1.0
    assert metrics["logloss"] == pytest.approx(log_loss(labels.numpy(), torch.sigmoid(logits).numpy()))


def test_auc_needs_both_classes():
    with pytest.raises(CtrbenchError, match="only one class"):
        auc(torch.ones(4), torch.rand(4))
