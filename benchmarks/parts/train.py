"""Part 1 (and inference of part 3): training and inference samples/s and peak RSS per model and dataset,
ours at each of `--precisions` against FuxiCTR in float32, one worker process per measurement. Every model
runs its Frappe config on every dataset, where that config can be built on the dataset's features."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks.fuxictr_bridge import (
    export_for_fuxictr,
    fuxictr_cannot_run,
    fuxictr_differences,
    model_job,
    shared_train_settings,
)
from benchmarks.measure import Workers, load_average, matmul_peak_gflops
from ctrbench.app.runner import resolve_spec
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from ctrbench.store.record import BASE_SEED
from model_zoo import get_model_class


def frappe_config_error(model: str, fmap: FeatureMap) -> str | None:
    """Why the model's Frappe config cannot be built on this data (e.g. FinalMLP's gates name Frappe's `user`
    and `item`), or None. Built on the meta device: no memory, no time."""
    try:
        with torch.device("meta"):
            get_model_class(model)(fmap, **resolve_spec(model, "frappe", BASE_SEED).model_params)
    except CtrbenchError as error:
        return str(error)
    return None


def train_jobs(args, dataset: str, fmap: FeatureMap, fx_dir: Path | None, repeat: int):
    """(row fields, side, job) of one repeat: per model ours at each of `args.precisions` and FuxiCTR's
    (float32) where it can run, in alternating order."""
    jobs = []
    for model in (m for m in args.models if frappe_config_error(m, fmap) is None):
        spec = resolve_spec(model, "frappe", BASE_SEED)  # the Frappe config, on both datasets
        base = {"kind": "train", "seed": BASE_SEED + repeat, "threads": args.threads, "warmup_steps": args.warmup,
                "steps": args.steps, "eval_batch_size": spec.train.eval_batch_size, "train": shared_train_settings(spec)}
        sides = [("ctrbench", precision) for precision in args.precisions]
        if fx_dir is not None and fuxictr_cannot_run(model, fmap) is None:
            sides.append(("fuxictr", "fp32"))
        for side, precision in (reversed(sides) if repeat % 2 else sides):
            if side == "ctrbench":
                job = {**base, "data": str(fmap.root), "model": model, "model_params": spec.model_params,
                       "train": {**base["train"], "precision": precision}}
            else:
                job = {**base, **model_job(model, spec, fx_dir, args.fuxictr_zoo)}
            fields = {"dataset": dataset, "model": model, "side": side, "precision": precision, "repeat": repeat}
            jobs.append((fields, side, job))
    return jobs


def run(args, workers: Workers) -> dict[str, Any]:
    """With `--concurrent`, all jobs of a repeat run at the same time (one process each), so every
    measurement of the repeat shares the same background load; otherwise one after the other."""
    rows, fuxictr_missing, skipped, differences = [], {}, {}, {}
    peaks = {"fp32": [matmul_peak_gflops()], "bf16": [matmul_peak_gflops(dtype=torch.bfloat16)]}
    for dataset, data_dir in args.datasets:
        fmap = FeatureMap.load(data_dir)
        fx_dir = export_for_fuxictr(fmap, args.work / f"fuxictr_{dataset}") if workers.fuxictr else None
        skipped.update({f"{dataset} {model}": why for model in args.models
                        if (why := frappe_config_error(model, fmap)) is not None})
        for model in (m for m in args.models if f"{dataset} {m}" not in skipped):
            if (why := fuxictr_cannot_run(model, fmap)) is not None:
                fuxictr_missing[f"{dataset} {model}"] = why
            elif differences_of := fuxictr_differences(model, fmap):
                differences[f"{dataset} {model}"] = differences_of
        for repeat in range(args.repeats):
            jobs = train_jobs(args, dataset, fmap, fx_dir, repeat)
            load = load_average()
            with ThreadPoolExecutor(max_workers=len(jobs) if args.concurrent else 1) as pool:
                results = list(pool.map(lambda item: workers.run(item[1], item[2]), jobs))
            for (fields, _, _), result in zip(jobs, results):
                rows.append({**fields, "load_before": load, **result})
                print(f"{fields}: {result['samples_per_second']:,.0f} samples/s, inference "
                      f"{result['inference_samples_per_second']:,.0f}/s, {result['peak_rss_mib']:,.0f} MiB",
                      file=sys.stderr, flush=True)
    peaks["fp32"].append(matmul_peak_gflops())
    peaks["bf16"].append(matmul_peak_gflops(dtype=torch.bfloat16))
    return {"rows": rows, "warmup_steps": args.warmup, "steps": args.steps, "concurrent": args.concurrent,
            "matmul_peak_gflops": peaks, "fuxictr_missing": fuxictr_missing, "skipped": skipped,
            "fuxictr_differences": differences}
