"""Part 6: where our training step spends its time (torch.profiler), at each precision, eager and compiled.

One process, the model's Frappe config on pre-built shuffled Frappe batches; throughput is given per
wall second and per CPU second of this process (the latter is steadier on a loaded machine).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import torch

from benchmarks.measure import Workers, timed_steps
from ctrbench.app.runner import resolve_spec
from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from ctrbench.store.record import BASE_SEED

VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))  # (precision, compiled)


def run(args, workers: Workers) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from ctrbench.data.sources import InMemory
    from ctrbench.training.loop import make_optimizer, train_step
    from model_zoo import get_model_class

    fmap = FeatureMap.load(args.frappe)
    rows = []
    for model_name in args.models:
        spec = resolve_spec(model_name, "frappe", BASE_SEED)
        generator = torch.Generator().manual_seed(0)
        batches = list(InMemory(load_split(fmap, "train")).batches(spec.train.batch_size, True, generator))
        batches = batches[:args.warmup + args.steps]
        for precision, compiled in VARIANTS:
            config = dataclasses.replace(spec.train, precision=precision)
            torch.manual_seed(0)
            model = get_model_class(model_name)(fmap, **spec.model_params)
            if compiled:
                model.compile()
            optimizer = make_optimizer(model, config)
            wall, cpu = timed_steps(model, optimizer, config, batches, args.warmup)
            samples = sum(len(b) for b in batches[args.warmup:])
            row = {"model": model_name, "precision": precision, "compiled": compiled,
                   "samples_per_second": samples / wall, "samples_per_cpu_second": samples / cpu}
            if not compiled:
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for batch in batches[args.warmup:]:
                        train_step(model, batch, optimizer, config, 0, None)
                row["top_ops"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
            rows.append(row)
            print({k: v for k, v in row.items() if k != "top_ops"}, file=sys.stderr, flush=True)
    return {"rows": rows, "warmup_steps": args.warmup, "steps": args.steps}
