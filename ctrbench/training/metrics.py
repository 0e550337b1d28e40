"""AUC and LogLoss, exact and vectorized (tested against scikit-learn)."""

from __future__ import annotations

import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.stats import gauc

LOGLOSS_EPS = 1e-7  # FuxiCTR clips probabilities to [eps, 1 - eps] before the log, as BARS reports it


def auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Area under the ROC curve, ties counted as one half (the Mann-Whitney U statistic).

    AUC = (sum of the positives' ranks - P (P + 1) / 2) / (P N), ranks 1-based over ascending scores,
    tied scores sharing the mean of their ranks. One sort: O(n log n), 10M scores in about a second.
    """
    labels = labels.reshape(-1).to(torch.float64)
    scores = scores.reshape(-1).to(torch.float64)
    positives = labels.sum()
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        raise CtrbenchError("AUC is undefined when the labels hold only one class; use a split with both 0 and 1")
    sorted_scores, order = torch.sort(scores)
    _, group, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    group_end = counts.cumsum(0).to(torch.float64)
    mean_rank = group_end - (counts.to(torch.float64) - 1) / 2
    positive_rank_sum = (mean_rank[group] * labels[order]).sum()
    return float((positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def logloss(labels: torch.Tensor, probabilities: torch.Tensor) -> float:
    """Mean binary cross-entropy of probabilities clipped to [1e-7, 1 - 1e-7]."""
    y = labels.reshape(-1).to(torch.float64)
    p = probabilities.reshape(-1).to(torch.float64).clamp(LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    return float(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean())


def evaluate(labels: torch.Tensor, logits: torch.Tensor, groups: torch.Tensor | None = None) -> dict[str, float]:
    """The two metrics every run reports, and gAUC (`ctrbench.core.stats.gauc`) when rows have groups."""
    metrics = {"auc": auc(labels, logits), "logloss": logloss(labels, torch.sigmoid(logits.to(torch.float64)))}
    if groups is not None:
        metrics["gauc"] = gauc(labels.numpy(), logits.numpy(), groups.numpy())
    return metrics
