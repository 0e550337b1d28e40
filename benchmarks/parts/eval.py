"""Part 3: exact AUC over `--rows` predictions, ours against scikit-learn's roc_auc_score (FuxiCTR's AUC)."""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.measure import Workers


def run(args, workers: Workers) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from ctrbench.training.metrics import auc

    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(args.rows, generator=generator) < 0.25).float()
    scores = (labels + torch.randn(args.rows, generator=generator)).float()  # float32 scores, as models give
    rows = []
    for repeat in range(args.repeats):
        for side in (["ctrbench", "sklearn"] if repeat % 2 == 0 else ["sklearn", "ctrbench"]):
            started = time.perf_counter()
            value = auc(labels, scores) if side == "ctrbench" else roc_auc_score(labels.numpy(), scores.numpy())
            rows.append({"side": side, "repeat": repeat, "seconds": time.perf_counter() - started, "auc": float(value)})
    return {"rows": rows, "predictions": args.rows}
