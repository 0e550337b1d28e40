"""gAUC and DeLong in ctrbench.core.stats against straightforward implementations: same values, speed ratio.

    python -m benchmarks.stats_timing --out benchmarks/perf_results/stats.json [--rows 1000000 10000000]

* gAUC: ours (one lexicographic sort for all groups) against FuxiCTR's way, scikit-learn's
  `roc_auc_score` per group in a Python loop, on random predictions with 10k and 100k groups.
* DeLong: ours (O(n log n), midranks) against the O(n^2) pairwise form on a 4,000-row sample (the
  pairwise form needs n_pos x n_neg memory), and ours alone on every size.
Each timing is the best of `--repeats` runs; the values must agree to 1e-9.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from ctrbench.core.io import atomic_write_text
from ctrbench.core.stats import delong, gauc


def loop_gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """FuxiCTR's definition the straightforward way: one scikit-learn AUC per group with both labels."""
    order = np.argsort(groups, kind="stable")
    labels, scores, groups = labels[order], scores[order], groups[order]
    bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    total = weight = 0.0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        y = labels[start:stop]
        if 0 < y.sum() < len(y):
            total += roc_auc_score(y, scores[start:stop]) * len(y)
            weight += len(y)
    return total / weight


def pairwise_delong_variance(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    pos, neg = labels == 1, labels == 0
    v10, v01 = [], []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(np.vstack(v10)) / pos.sum() + np.cov(np.vstack(v01)) / neg.sum()
    return float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - started)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--groups", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = {"command": "python -m benchmarks.stats_timing " + " ".join(
        [f"--out {args.out}", "--rows", *map(str, args.rows), "--groups", *map(str, args.groups),
         f"--repeats {args.repeats}"]), "machine": platform.processor() or platform.machine(), "gauc": [], "delong": []}
    for rows in args.rows:
        labels = (rng.random(rows) < 0.3).astype(np.int64)
        a = (labels + rng.normal(0, 1.5, rows)).astype(np.float32)
        b = (a + rng.normal(0, 0.5, rows)).astype(np.float32)
        for groups in args.groups:
            group = rng.integers(0, groups, rows)
            ours_s, ours = best_of(args.repeats, gauc, labels, a, group)
            loop_s, loop = best_of(1, loop_gauc, labels, a, group)
            assert abs(ours - loop) < 1e-9, (ours, loop)
            results["gauc"].append({"rows": rows, "groups": groups, "ours_s": ours_s, "loop_s": loop_s,
                                    "ratio": loop_s / ours_s, "gauc": ours})
            print(results["gauc"][-1], flush=True)
        ours_s, test = best_of(args.repeats, delong, labels, a, b)
        results["delong"].append({"rows": rows, "ours_s": ours_s, "p_value": test.p_value})
        print(results["delong"][-1], flush=True)
    sample = 4_000
    labels, a, b = (labels[:sample], a[:sample], b[:sample])
    ours_s, test = best_of(args.repeats, delong, labels, a, b)
    pair_s, variance = best_of(1, pairwise_delong_variance, labels, a, b)
    assert abs(test.std_diff ** 2 - variance) < 1e-9 * max(variance, 1e-12) + 1e-15
    results["delong_pairwise"] = {"rows": sample, "ours_s": ours_s, "pairwise_s": pair_s, "ratio": pair_s / ours_s}
    print(results["delong_pairwise"], flush=True)
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
