"""The ctrbench side of the performance benchmark: the same jobs as `fuxictr_side.py`, with our code.

    python -m benchmarks.ours JOB.json

prints one JSON line. The benchmark starts one process per measurement (`benchmarks.measure.Workers`, so
each process's peak memory is its own) and alternates them with FuxiCTR's.

The training job uses what `ctrbench train` uses: `load_split` + `InMemory` batches, the model from
the zoo, `make_optimizer` and `train_step` from `ctrbench.training.loop`; inference is `ctrbench.training.loop.predict`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from ctrbench.data.sources import InMemory
from ctrbench.nn.flops import model_stats
from ctrbench.training.loop import TrainConfig, make_optimizer, predict, train_step
from model_zoo import get_model_class


def train_job(job: dict[str, Any]) -> dict[str, Any]:
    """Samples/s over `steps` training steps after `warmup_steps`, then inference samples/s on valid
    (both at the job's `train.precision`), the model's forward MFLOP per example and its parameter count."""
    fmap = FeatureMap.load(job["data"])
    config = TrainConfig(**job["train"])
    started = time.perf_counter()
    train = InMemory(load_split(fmap, "train"))
    load_seconds = time.perf_counter() - started
    torch.manual_seed(job["seed"])
    model = get_model_class(job["model"])(fmap, **job["model_params"])
    mflop_per_example = model_stats(model, next(train.batches(256))).mflop_per_example
    optimizer = make_optimizer(model, config)
    generator = torch.Generator().manual_seed(job["seed"])
    model.train()
    warmup, steps = job["warmup_steps"], job["steps"]
    samples, done = 0, 0
    while done < warmup + steps:
        for batch in train.batches(config.batch_size, shuffle=True, generator=generator):
            if done == warmup:
                started, samples = time.perf_counter(), 0
            train_step(model, batch, optimizer, config, done + 1, None)
            samples += len(batch)
            done += 1
            if done == warmup + steps:
                break
    train_seconds = time.perf_counter() - started
    valid = InMemory(load_split(fmap, "valid"))
    started = time.perf_counter()
    logits, _, _ = predict(model, valid, job["eval_batch_size"], torch.device("cpu"), config.precision)
    predict_seconds = time.perf_counter() - started
    return {"samples_per_second": samples / train_seconds, "train_seconds": train_seconds, "steps": steps,
            "inference_samples_per_second": len(logits) / predict_seconds, "load_seconds": load_seconds,
            "forward_mflop_per_example": mflop_per_example,
            "parameters": sum(p.numel() for p in model.parameters())}


JOBS = {"train": train_job}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(job["threads"])
    print(json.dumps(JOBS[job["kind"]](job)))


if __name__ == "__main__":
    main()
