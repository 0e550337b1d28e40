"""Statistics for the leaderboard: user-grouped AUC and whether two models' AUCs really differ.

* `gauc`: FuxiCTR's gAUC. Per group (user), the AUC over that group's rows; groups whose labels are all
  equal are skipped; the mean is weighted by each group's row count. One lexicographic sort over
  (group, score) for all groups at once, no loop per group.
* `delong`: DeLong, DeLong and Clarke-Pearson (1988) paired test of two AUCs on the same rows, in the
  O(n log n) form of Sun and Xu (2014, IEEE Signal Processing Letters 21(11)): midranks give each
  positive's and each negative's structural component, whose covariances give the variance of the
  difference of the two AUCs.
* `compare_to_best`: the leaderboard's verdict over seeds. A model differs from the best only when
  both the test-row resampling (DeLong, on every seed both models have) and the seed-to-seed variation
  (a paired t-test on the per-seed AUC differences) reject equality at 5%, each after Holm's
  correction over the models compared with the best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` in ascending order, tied values sharing the mean of their ranks."""
    return scipy_stats.rankdata(values, method="average")


def _check(labels: np.ndarray, *scores: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    for s in scores:
        if np.asarray(s).shape != labels.shape:
            raise ValueError(f"scores of shape {np.asarray(s).shape} for {labels.shape[0]} labels")
    return labels.astype(bool)


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Row-count-weighted mean of the per-group AUCs (ties count one half), over groups with both labels.

    Returns NaN when no group has both labels.
    """
    positive = _check(labels, scores, groups)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    _, group = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
    order = np.lexsort((scores, group))  # by group, then by score
    group, scores, positive = group[order], scores[order], positive[order]
    n = len(group)
    # A tie block is a run of equal (group, score); its rows share the mean of their within-group ranks.
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (group[1:] != group[:-1]) | (scores[1:] != scores[:-1])
    block = np.cumsum(new_block) - 1
    group_start = np.zeros(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    group_start[starts] = starts
    group_start = np.maximum.accumulate(group_start)
    rank = np.arange(1, n + 1) - group_start  # 1-based position within the group
    block_mean = np.bincount(block, weights=rank) / np.bincount(block)
    midrank = block_mean[block]
    count = np.bincount(group)
    pos = np.bincount(group, weights=positive)
    neg = count - pos
    rank_sum = np.bincount(group, weights=midrank * positive)
    both = (pos > 0) & (neg > 0)
    if not both.any():
        return float("nan")
    aucs = (rank_sum[both] - pos[both] * (pos[both] + 1) / 2) / (pos[both] * neg[both])
    return float(np.average(aucs, weights=count[both]))


@dataclass(frozen=True)
class DeLong:
    """Two AUCs on the same rows and the test of their difference."""

    auc_a: float
    auc_b: float
    std_diff: float  # standard error of auc_a - auc_b
    z: float
    p_value: float  # two-sided


def delong(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLong:
    """DeLong's paired test that two score vectors on the same rows have equal AUC (fast algorithm)."""
    positive = _check(labels, scores_a, scores_b)
    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two positives and two negatives")
    components_pos, components_neg, aucs = [], [], []
    for scores in (scores_a, scores_b):
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        x, y = scores[positive], scores[~positive]
        rank_all = midranks(np.concatenate([x, y]))
        rank_x, rank_y = midranks(x), midranks(y)
        aucs.append((rank_all[:m].sum() - m * (m + 1) / 2) / (m * n))
        components_pos.append((rank_all[:m] - rank_x) / n)  # V10: each positive's share of the AUC
        components_neg.append(1.0 - (rank_all[m:] - rank_y) / m)  # V01: each negative's
    s10 = np.cov(np.vstack(components_pos))
    s01 = np.cov(np.vstack(components_neg))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    diff = aucs[0] - aucs[1]
    if variance <= 0:  # identical rankings: no evidence of a difference
        return DeLong(aucs[0], aucs[1], 0.0, 0.0, 1.0)
    std = math.sqrt(variance)
    z = diff / std
    return DeLong(aucs[0], aucs[1], std, z, math.erfc(abs(z) / math.sqrt(2)))


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for position, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - position) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_seed_test(aucs_a: list[float], aucs_b: list[float]) -> float:
    """Two-sided p-value of a paired t-test on per-seed AUC differences; 1.0 with fewer than 2 seeds
    or no variation (no evidence either way)."""
    if len(aucs_a) < 2:
        return 1.0
    diffs = np.asarray(aucs_a) - np.asarray(aucs_b)
    if np.allclose(diffs, diffs[0]) and diffs[0] == 0:
        return 1.0
    if np.std(diffs) == 0:  # the same difference on every seed
        return 0.0
    return float(scipy_stats.ttest_rel(aucs_a, aucs_b).pvalue)


@dataclass(frozen=True)
class Comparison:
    """One model against the best model of a dataset, over the seeds both have."""

    model: str
    seeds: list[int]
    delong_p: list[float]  # per seed, Holm-adjusted over the models compared
    seed_p: float  # paired t-test over seeds, Holm-adjusted
    differs: bool  # both tests reject at 5% (on every seed for DeLong)

    @property
    def decided(self) -> bool:
        """2 or more shared seeds: the test over seeds cannot reject with one, so a single seed leaves the
        comparison open, neither tied nor different."""
        return len(self.seeds) >= 2

    @property
    def tied(self) -> bool:
        """Not distinguishable from the best (on a decided comparison)."""
        return self.decided and not self.differs


def compare_to_best(labels: np.ndarray, best: dict[int, np.ndarray],
                    others: dict[str, dict[int, np.ndarray]], alpha: float = 0.05) -> list[Comparison]:
    """Compare each model's test predictions (seed -> scores) with the best model's, seed by seed."""
    raw = []
    for model, predictions in others.items():
        seeds = sorted(set(predictions) & set(best))
        tests = [delong(labels, best[s], predictions[s]) for s in seeds]
        raw.append((model, seeds, [t.p_value for t in tests],
                    paired_seed_test([t.auc_a for t in tests], [t.auc_b for t in tests])))
    seed_adjusted = holm([r[3] for r in raw])
    width = max((len(r[1]) for r in raw), default=0)
    per_seed = [holm([r[2][k] if k < len(r[2]) else 1.0 for r in raw]) for k in range(width)]
    comparisons = []
    for i, (model, seeds, _, _) in enumerate(raw):
        delong_p = [per_seed[k][i] for k in range(len(seeds))]
        differs = bool(seeds) and all(p < alpha for p in delong_p) and seed_adjusted[i] < alpha
        comparisons.append(Comparison(model, seeds, delong_p, seed_adjusted[i], differs))
    return comparisons
