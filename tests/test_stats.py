"""gAUC, DeLong's test and the leaderboard's verdict, against hand computations and direct forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ctrbench.core.stats import Comparison, compare_to_best, delong, gauc, holm, paired_seed_test


def test_gauc_by_hand():
    # user a: the positive 0.9 beats the negative 0.5 and ties the negative 0.9 -> AUC (1 + 0.5) / 2 = 0.75;
    # user b: the positive is below the negative -> 0; user c: only positives, skipped.
    # weighted by rows: (0.75 * 3 + 0 * 2) / 5 = 0.45
    labels = np.array([1, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.9, 0.5, 0.9, 0.2, 0.1, 0.3, 0.4])
    groups = np.array(["a", "a", "a", "b", "b", "c", "c"])
    assert gauc(labels, scores, groups) == pytest.approx(0.45, abs=1e-15)
    assert math.isnan(gauc(np.array([1, 1]), np.array([0.1, 0.2]), np.array([0, 0])))


def straightforward_gauc(labels, scores, groups):
    """FuxiCTR's loop: scikit-learn's AUC per group with both labels, weighted by the group's rows."""
    total, weight = 0.0, 0
    for g in np.unique(groups):
        rows = groups == g
        if 0 < labels[rows].sum() < rows.sum():
            total += roc_auc_score(labels[rows], scores[rows]) * rows.sum()
            weight += rows.sum()
    return total / weight


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gauc_matches_the_loop_over_groups(seed):
    rng = np.random.default_rng(seed)
    n = 3_000
    groups = rng.integers(0, 200, n)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(labels * 0.5, 1.0), 1)  # rounded: many ties within groups
    assert gauc(labels, scores, groups) == pytest.approx(straightforward_gauc(labels, scores, groups), abs=1e-12)


def direct_delong(labels, a, b):
    """DeLong's variance from the O(n^2) pairwise kernel psi(x, y) = [x > y] + [x = y] / 2."""
    pos, neg = labels == 1, labels == 0
    v10, v01, aucs = [], [], []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(np.vstack(v10)) / pos.sum() + np.cov(np.vstack(v01)) / neg.sum()
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return aucs, var


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_equals_the_pairwise_form(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 400)
    a = np.round(rng.normal(labels * 0.8, 1.0), 2)
    b = np.round(0.5 * a + rng.normal(labels * 0.4, 1.0), 2)
    result = delong(labels, a, b)
    (auc_a, auc_b), var = direct_delong(labels, a, b)
    assert (result.auc_a, result.auc_b) == pytest.approx((auc_a, auc_b), abs=1e-12)
    assert result.auc_a == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert result.std_diff == pytest.approx(math.sqrt(var), rel=1e-9)
    assert result.p_value == pytest.approx(math.erfc(abs(auc_a - auc_b) / math.sqrt(var) / math.sqrt(2)), rel=1e-9)


def test_delong_by_hand():
    """Two positives (0.8, 0.4) and two negatives (0.6, 0.2). A ranks 3 of 4 pairs right (AUC 0.75), B all 4.
    A's components: positives (1, 0.5), negatives (0.5, 1); B's all 1, so only A's variance counts:
    var(0.75 - 1) = var(1, 0.5) / 2 + var(0.5, 1) / 2 = 0.125 / 2 + 0.125 / 2 = 0.125."""
    labels = np.array([1, 1, 0, 0])
    result = delong(labels, np.array([0.8, 0.4, 0.6, 0.2]), np.array([0.8, 0.7, 0.6, 0.2]))
    assert (result.auc_a, result.auc_b) == (0.75, 1.0)
    assert result.std_diff == pytest.approx(math.sqrt(0.125), rel=1e-12)
    assert result.z == pytest.approx(-0.25 / math.sqrt(0.125), rel=1e-12)


def test_delong_of_a_model_with_itself_is_no_evidence():
    labels = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.4, 0.5, 0.7])
    assert delong(labels, scores, scores).p_value == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def test_paired_seed_test():
    assert paired_seed_test([0.9], [0.8]) == 1.0  # one seed: no evidence of the seed spread
    assert paired_seed_test([0.90, 0.91, 0.92], [0.90, 0.91, 0.92]) == 1.0
    # differences 0.01, 0.005, 0.015: mean 0.01, sd 0.005, t = 0.01 / (0.005 / sqrt 3) = sqrt 12 on 2 dof,
    # where the two-sided p is 1 - t / sqrt(2 + t^2) = 1 - sqrt(12 / 14)
    assert paired_seed_test([0.90, 0.905, 0.91], [0.89, 0.90, 0.895]) == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)


def test_verdict_needs_both_tests_on_every_seed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4_000)
    signal = labels * 1.0
    best = {s: signal + rng.normal(0, 1.0, len(labels)) for s in (1, 2, 3)}
    much_worse = {s: signal + rng.normal(0, 3.0, len(labels)) for s in (1, 2, 3)}
    same = {s: best[s] + rng.normal(0, 0.01, len(labels)) for s in (1, 2, 3)}
    one_seed = {1: much_worse[1]}
    verdict = {c.model: c for c in compare_to_best(labels, best, {"worse": much_worse, "same": same, "one": one_seed})}
    assert verdict["worse"].differs and verdict["worse"].seeds == [1, 2, 3]
    assert not verdict["same"].differs
    assert not verdict["one"].differs and verdict["one"].seed_p == 1.0  # one seed cannot show a seed spread


def test_training_reports_and_monitors_gauc(synthetic_fmap, tmp_path):
    """With a group column (here c0 as a stand-in for the user), every evaluation reports gAUC equal to
    ctrbench.core.stats.gauc on the same predictions, and train.monitor may weight it."""
    import torch

    from ctrbench.data.batches import load_split
    from ctrbench.data.sources import InMemory
    from ctrbench.training.loop import TrainConfig, fit, predict
    from ctrbench.training.metrics import evaluate
    from model_zoo.dlrm import DLRM

    splits = {s: InMemory(load_split(synthetic_fmap, s)) for s in ("train", "valid", "test")}
    torch.manual_seed(0)
    model = DLRM(synthetic_fmap, embedding_dim=4, bottom_mlp_units=(8,), top_mlp_units=(8,))
    config = TrainConfig(batch_size=4096, epochs=1, monitor={"auc": 1, "gauc": 1})
    result = fit(model, splits["train"], splits["valid"], splits["test"], config, seed=0, progress=False, group_column=0)
    logits, labels, groups = predict(model, splits["test"], 4096, torch.device("cpu"), group_column=0)
    assert result.test["gauc"] == gauc(labels.numpy(), logits.numpy(), groups.numpy())
    assert evaluate(labels, logits)["auc"] == result.test["auc"] and "gauc" not in evaluate(labels, logits)


def test_one_shared_seed_leaves_the_comparison_open():
    # The seed test cannot reject with one seed, so "not different" would follow from no evidence at all.
    assert not Comparison("a", [2021], [1e-17], 1.0, False).tied
    assert Comparison("a", [2021, 2022], [0.4, 0.3], 0.5, False).tied
    assert not Comparison("a", [2021, 2022], [1e-9, 1e-9], 0.01, True).tied
