"""Performance benchmark: ctrbench side by side with FuxiCTR 2.3.10, and how Wukong's cost grows.

    python -m benchmarks.run train       --fxvenv /work/fxvenv --fuxictr-zoo DIR [--repeats 3]
    python -m benchmarks.run preprocess  --fxvenv /work/fxvenv [--repeats 3]
    python -m benchmarks.run eval        [--rows 10000000]
    python -m benchmarks.run scaling
    python -m benchmarks.run converge    --fxvenv /work/fxvenv --fuxictr-zoo DIR
    python -m benchmarks.run profile     [--models dlrm]   # torch.profiler table, eager vs torch.compile
    python -m benchmarks.run report      # results/perf/*.json -> benchmarks/perf.md

Each part writes `RESULTS/<part>.json` (default results/perf/) with the exact command, the machine,
and the load average before and after; `report` turns whatever parts exist into one markdown file.

FuxiCTR runs in its own virtual environment (`--fxvenv`, see benchmarks/requirements-fuxictr.txt)
through `benchmarks/fuxictr_side.py`; ours runs through `benchmarks/ours.py`. One process per
measurement, ours and theirs alternating (A B, then B A on the next repeat), so background load hits
both alike; each process's peak RSS comes from `os.wait4`. Both sides get the same processed data
(exported to FuxiCTR's npz + feature_map.json format from our parquet splits), the same
hyperparameters (the model's Frappe config in model_zoo/configs), batch size, Adam, gradient clipping,
regularisers and `torch.set_num_threads`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from benchmarks.report import write_report
from ctrbench.data import load_split
from ctrbench.errors import CtrbenchError
from ctrbench.features import FeatureMap, FeatureSpec
from ctrbench.runner import BASE_SEED, bench, cpu_name, resolve_spec
from ctrbench.train import Precision

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO / "results" / "perf"
DEFAULT_REPORT = REPO / "benchmarks" / "perf.md"
MODELS = ("dlrm", "dcnv2", "xdeepfm", "wukong")
FUXICTR_CLASSES = {"dlrm": "DLRM", "dcnv2": "DCNv2", "xdeepfm": "xDeepFM"}  # FuxiCTR has no Wukong
# Its npz loader column-stacks ids and values into one float64 array, and its DLRM passes numeric features
# to the bottom MLP without a cast, so float64 meets float32 weights: a RuntimeError in its first step.
FUXICTR_DLRM_NUMERIC = "FuxiCTR 2.3.10's DLRM fails on numeric features (float64 from its npz loader into its float32 bottom MLP)"


def fuxictr_cannot_run(model: str, fmap: FeatureMap) -> str | None:
    """Why FuxiCTR cannot train `model` on this data, or None."""
    if model not in FUXICTR_CLASSES:
        return "FuxiCTR has no such model"
    if model == "dlrm" and any(f.type == "numeric" for f in fmap.features):
        return FUXICTR_DLRM_NUMERIC
    return None


# ---------------------------------------------------------------- machine and load

def load_average() -> float:
    """The 1-minute load average (what `uptime` prints first)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def matmul_peak_gflops(size: tuple[int, int, int] = (4096, 1024, 1024), repeats: int = 5,
                       dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> float:
    """Best-of-`repeats` GFLOP/s of one torch.matmul [m, k] x [k, n] on `device` (a CPU: at the current
    thread count; a GPU: each call timed to its end, so the kernel, not its launch)."""
    m, k, n = size
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    finish = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # first call allocates and picks the kernel
    finish()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        finish()
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best / 1e9


def machine(threads: int) -> dict[str, Any]:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__}


# ---------------------------------------------------------------- workers

def run_measured(command: list[str], env: dict[str, str] | None = None) -> tuple[str, float, float]:
    """Run `command`; its stdout, wall seconds and peak RSS in MiB (from `os.wait4`, so the child's own)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if status:
            raise CtrbenchError(f"{shlex.join(command)} failed:\n{err.read()[-3000:]}")
        return out.read(), wall, usage.ru_maxrss / 1024


def run_worker(command: list[str], job: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one worker process on `job`: its JSON result (last stdout line), wall seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.json"
        path.write_text(json.dumps(job))
        stdout, wall, rss = run_measured([*command, str(path)], env)
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_seconds": wall, "peak_rss_mib": rss}


class Workers:
    """How to start each side's worker process."""

    def __init__(self, fxvenv: Path | None, threads: int):
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.ours = [sys.executable, "-m", "benchmarks.ours"]
        self.fuxictr = None if fxvenv is None else [str(fxvenv / "bin" / "python"), "benchmarks/fuxictr_side.py"]

    def run(self, side: str, job: dict[str, Any]) -> dict[str, Any]:
        command = self.ours if side == "ctrbench" else self.fuxictr
        if command is None:
            raise CtrbenchError("--fxvenv is needed for the FuxiCTR side (see benchmarks/requirements-fuxictr.txt)")
        return run_worker(command, job, self.env)


# ---------------------------------------------------------------- data for FuxiCTR

def export_for_fuxictr(fmap: FeatureMap, out: Path) -> Path:
    """Our processed splits as FuxiCTR's in-memory format: feature_map.json + <split>.npz of columns.

    Same indices, same vocabulary sizes, so both sides build tables of the same shape.
    """
    if (out / "feature_map.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    features = []
    for spec in fmap.features:
        if spec.type == "categorical":
            features.append({spec.name: {"source": "", "type": "categorical", "vocab_size": spec.vocab_size,
                                         "padding_idx": 0}})
        elif spec.type == "numeric":
            features.append({spec.name: {"source": "", "type": "numeric"}})
        else:
            raise CtrbenchError(f"feature {spec.name!r}: only categorical and numeric features are exported")
    for split in fmap.splits:
        batch = load_split(fmap, split)
        columns = {"label": batch.label.numpy()}
        categorical = iter(batch.categorical.T.numpy())
        numeric = iter(batch.numeric.T.numpy())
        for spec in fmap.features:
            columns[spec.name] = next(categorical) if spec.type == "categorical" else next(numeric)
        np.savez(out / f"{split}.npz", **columns)
    (out / "feature_map.json").write_text(json.dumps({
        "dataset_id": fmap.dataset, "num_fields": len(features), "total_features": 0,
        "input_length": len(features), "labels": ["label"], "features": features}, indent=1))
    return out


def fuxictr_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Our constructor arguments as FuxiCTR's, for the models both libraries have."""
    if model == "dlrm":
        return {"embedding_dim": params["embedding_dim"], "top_mlp_units": list(params["top_mlp_units"]),
                "bottom_mlp_units": list(params.get("bottom_mlp_units", [])),
                "top_mlp_dropout": params.get("top_mlp_dropout", 0.0), "interaction_op": params["interaction"],
                "batch_norm": params.get("batch_norm", False)}
    if model == "dcnv2":
        if params.get("cross_network", "full") != "full":
            raise CtrbenchError("dcnv2: only the full cross network is matched against FuxiCTR")
        return {"embedding_dim": params["embedding_dim"], "model_structure": params["model_structure"],
                "num_cross_layers": params["num_cross_layers"],
                "parallel_dnn_hidden_units": list(params.get("parallel_dnn_hidden_units", [400, 400, 400])),
                "stacked_dnn_hidden_units": list(params.get("stacked_dnn_hidden_units", [400, 400, 400])),
                "net_dropout": params.get("net_dropout", 0.0), "batch_norm": params.get("batch_norm", False)}
    if model == "xdeepfm":
        return {"embedding_dim": params["embedding_dim"], "cin_hidden_units": list(params["cin_layer_units"]),
                "dnn_hidden_units": list(params["dnn_hidden_units"]), "net_dropout": params.get("dnn_dropout", 0.0),
                "batch_norm": params.get("batch_norm", False)}
    raise CtrbenchError(f"{model}: FuxiCTR has no such model")


def _train_fields(spec) -> dict[str, Any]:
    """The training settings both sides share (FuxiCTR trains in float32 only)."""
    t = spec.train
    return {"batch_size": t.batch_size, "learning_rate": t.learning_rate, "embedding_regularizer": t.embedding_regularizer,
            "net_regularizer": t.net_regularizer, "max_grad_norm": t.max_grad_norm}


# ---------------------------------------------------------------- parts

def train_jobs(args, dataset: str, fmap: FeatureMap, fx_dir: Path | None, repeat: int):
    """(row fields, side, job) of one repeat: per model ours at each of `args.precisions` and FuxiCTR's
    (float32) where it can run, in alternating order."""
    jobs = []
    for model in args.models:
        spec = resolve_spec(model, "frappe", 2021)  # the Frappe config, on both datasets
        base = {"kind": "train", "seed": 2021 + repeat, "threads": args.threads, "warmup_steps": args.warmup,
                "steps": args.steps, "eval_batch_size": spec.train.eval_batch_size, "train": _train_fields(spec)}
        sides = [("ctrbench", precision) for precision in args.precisions]
        if fx_dir is not None and fuxictr_cannot_run(model, fmap) is None:
            sides.append(("fuxictr", "fp32"))
        for side, precision in (reversed(sides) if repeat % 2 else sides):
            if side == "ctrbench":
                job = {**base, "data": str(fmap.root), "model": model, "model_params": spec.model_params,
                       "train": {**base["train"], "precision": precision}}
            else:
                job = {**base, "data": str(fx_dir), "fuxictr_class": FUXICTR_CLASSES[model],
                       "model_zoo_dir": str(args.fuxictr_zoo), "num_workers": 1,
                       "model_params": fuxictr_params(model, spec.model_params)}
            fields = {"dataset": dataset, "model": model, "side": side, "precision": precision, "repeat": repeat}
            jobs.append((fields, side, job))
    return jobs


def part_train(args, workers: Workers) -> dict[str, Any]:
    """Part 1 (and inference of part 3): training and inference samples/s, peak RSS, per model and dataset.

    With `--concurrent`, all jobs of a repeat run at the same time (one process each), so every
    measurement of the repeat shares the same background load; otherwise one after the other.
    """
    from concurrent.futures import ThreadPoolExecutor

    rows, fuxictr_missing = [], {}
    peaks = {"fp32": [matmul_peak_gflops()], "bf16": [matmul_peak_gflops(dtype=torch.bfloat16)]}
    for dataset, data_dir in args.datasets:
        fmap = FeatureMap.load(data_dir)
        fx_dir = export_for_fuxictr(fmap, args.work / f"fuxictr_{dataset}") if workers.fuxictr else None
        fuxictr_missing.update({f"{dataset} {model}": why for model in args.models
                                if (why := fuxictr_cannot_run(model, fmap)) is not None})
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
            "matmul_peak_gflops": peaks, "fuxictr_missing": fuxictr_missing}


FRAPPE_FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")


def write_frappe_csvs(fmap: FeatureMap, out: Path) -> Path:
    """BARS Frappe_x1-format CSVs (header `label,user,...,city`) holding our processed indices as values."""
    import polars as pl

    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.csv"), ("valid", "valid.csv"), ("test", "test.csv")):
        batch = load_split(fmap, split)
        frame = pl.DataFrame({"label": batch.label.numpy().astype(np.int64),
                              **{f: batch.categorical[:, j].numpy() for j, f in enumerate(FRAPPE_FIELDS)}})
        frame.write_csv(out / name)
    return out


def part_preprocess(args, workers: Workers) -> dict[str, Any]:
    """Part 2: `ctrbench preprocess frappe` vs FuxiCTR's FeatureProcessor + build_dataset, same CSVs."""
    fmap = FeatureMap.load(args.frappe)
    csv_dir = write_frappe_csvs(fmap, args.work / "frappe_csv")
    total_rows = sum(s.rows for s in fmap.splits.values())
    rows = []
    for repeat in range(args.repeats):
        sides = ["ctrbench", "fuxictr"] if repeat % 2 == 0 else ["fuxictr", "ctrbench"]
        for side in sides:
            out = Path(tempfile.mkdtemp(dir=args.work))
            load = load_average()
            if side == "ctrbench":
                _, wall, rss = run_measured([sys.executable, "-m", "ctrbench", "preprocess", "frappe", "--raw",
                                             str(csv_dir), "--out", str(out / "frappe"), "--release", "bars_x1"],
                                            workers.env)
                result = {"wall_seconds": wall, "peak_rss_mib": rss}
            else:
                result = workers.run("fuxictr", {
                    "kind": "preprocess", "threads": args.threads, "dataset_id": "frappe", "out": str(out),
                    "train_csv": str(csv_dir / "train.csv"), "valid_csv": str(csv_dir / "valid.csv"),
                    "test_csv": str(csv_dir / "test.csv"),
                    "feature_cols": [{"name": list(FRAPPE_FIELDS), "active": True, "dtype": "str",
                                      "type": "categorical"}],
                    "label_col": {"name": "label", "dtype": "float"}})
            rows.append({"side": side, "repeat": repeat, "rows": total_rows, "load_before": load, **result})
            print(f"preprocess {side} #{repeat}: {result['wall_seconds']:.1f} s, {result['peak_rss_mib']:,.0f} MiB",
                  file=sys.stderr, flush=True)
    return {"rows": rows, "input": "BARS Frappe_x1-format CSVs written from the processed Frappe splits"}


def part_eval(args, workers: Workers) -> dict[str, Any]:
    """Part 3: exact AUC over `rows` predictions, ours vs scikit-learn's roc_auc_score (FuxiCTR's AUC)."""
    from sklearn.metrics import roc_auc_score

    from ctrbench.metrics import auc

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


def categorical_map(num_features: int, vocab_size: int = 1000) -> FeatureMap:
    return FeatureMap(dataset="scaling", label="label", features=[
        FeatureSpec(name=f"c{j}", type="categorical", vocab_size=vocab_size, padding_idx=0, oov_idx=1)
        for j in range(num_features)])


def random_batch(fmap: FeatureMap, rows: int, seed: int = 0):
    from ctrbench.data import Batch

    generator = torch.Generator().manual_seed(seed)
    vocab = fmap.features[0].vocab_size
    return Batch(categorical=torch.randint(0, vocab, (rows, len(fmap.features)), generator=generator, dtype=torch.int32),
                 pretrained=torch.zeros(rows, 0, dtype=torch.int32), numeric=torch.zeros(rows, 0), sequences={},
                 label=(torch.rand(rows, generator=generator) < 0.3).float())


# Table 5's Wukong ladder (l, nF = nL, k, MLP width; MLPs of 3 layers) scaled down: nF, nL and k / 4, MLP width / 32.
WUKONG_LADDER = ((2, 2, 6, 64), (4, 8, 6, 64), (8, 8, 6, 64), (8, 12, 12, 128), (8, 24, 24, 256), (8, 24, 24, 512),
                 (8, 48, 48, 512))


def timed_steps(model, optimizer, config, batches: list, warmup: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process's) of ctrbench's `train_step` over `batches[warmup:]`, after
    untimed steps on `batches[:warmup]` (pre-built batches: no data loading)."""
    from ctrbench.train import train_step

    model.train()
    for step, batch in enumerate(batches[:warmup]):
        train_step(model, batch, optimizer, config, step + 1, None)
    wall, cpu = time.perf_counter(), time.process_time()
    for step, batch in enumerate(batches[warmup:]):
        train_step(model, batch, optimizer, config, step + 1, None)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_training(model, batch, steps: int, warmup: int = 2) -> float:
    """Training samples/s of `model` on one pre-built batch, Adam."""
    from ctrbench.train import TrainConfig, make_optimizer

    config = TrainConfig(batch_size=len(batch))
    wall, _ = timed_steps(model, make_optimizer(model, config), config, [batch] * (warmup + steps), warmup)
    return steps * len(batch) / wall


def scaling_point(num_features: int, batch_size: int, wukong: dict[str, Any], steps: int) -> dict[str, Any]:
    from ctrbench.flops import forward_flops
    from model_zoo.wukong import Wukong

    fmap = categorical_map(num_features)
    batch = random_batch(fmap, batch_size)
    torch.manual_seed(0)
    model = Wukong(fmap, **wukong)
    train_mflop = 3 * forward_flops(model, batch) / batch_size / 1e6  # backward ~ 2x forward
    samples_per_second = measure_training(model, batch, steps)
    return {"features": num_features, "batch_size": batch_size, **wukong, "train_mflop_per_example": train_mflop,
            "samples_per_second": samples_per_second, "mflops": train_mflop * samples_per_second}


def wukong_size(layers: int, n: int, k: int, width: int) -> dict[str, Any]:
    return {"embedding_dim": 16, "num_layers": layers, "fmb_embeddings": n, "lcb_embeddings": n, "fm_rank": k,
            "fmb_mlp_units": [width] * 3, "head_mlp_units": [width] * 3}


def part_scaling(args, workers: Workers) -> dict[str, Any]:
    """Part 4: samples/s and MFLOP/s vs Wukong size, batch size and number of features (ours only)."""
    torch.set_num_threads(args.threads)
    peak_before = matmul_peak_gflops()
    rows = []
    for ladder_step in WUKONG_LADDER[:args.ladder_points]:
        rows.append({"sweep": "size", **scaling_point(39, args.scaling_batch, wukong_size(*ladder_step),
                                                      args.scaling_steps)})
        print(rows[-1], file=sys.stderr, flush=True)
    middle = wukong_size(*WUKONG_LADDER[3])
    for batch_size in args.batch_sizes:
        rows.append({"sweep": "batch", **scaling_point(39, batch_size, middle, args.scaling_steps)})
        print(rows[-1], file=sys.stderr, flush=True)
    for features in args.feature_counts:
        rows.append({"sweep": "features", **scaling_point(features, args.scaling_batch, middle, args.scaling_steps)})
        print(rows[-1], file=sys.stderr, flush=True)
    peak_after = matmul_peak_gflops()
    return {"rows": rows, "matmul_peak_gflops": [peak_before, peak_after], "matmul_size": [4096, 1024, 1024],
            "scaling_batch": args.scaling_batch}


def part_converge(args, workers: Workers) -> dict[str, Any]:
    """Frappe's DLRM (BARS config) trained to convergence by both libraries, seeds 2021.. (`--converge-seeds`):
    FuxiCTR's own `fit`, and ours through `ctrbench.runner.bench` at each of `--precisions`, stored in
    RESULTS/converge_ours.jsonl (runs already stored there are kept, not trained again)."""
    fmap = FeatureMap.load(args.frappe)
    fx_dir = export_for_fuxictr(fmap, args.work / "fuxictr_frappe")
    spec = resolve_spec("dlrm", "frappe", 2021)
    fuxictr = []
    for seed in range(BASE_SEED, BASE_SEED + args.converge_seeds):
        fuxictr.append({"precision": "fp32", "seed": seed, **workers.run("fuxictr", {
            "kind": "converge", "seed": seed, "threads": args.threads, "data": str(fx_dir), "epochs": spec.train.epochs,
            "fuxictr_class": "DLRM", "model_zoo_dir": str(args.fuxictr_zoo), "num_workers": 1,
            "log_file": str(args.work / f"fuxictr_converge_{seed}.log"),
            "model_params": fuxictr_params("dlrm", spec.model_params), "train": _train_fields(spec)})})
        print(f"FuxiCTR seed {seed}: {fuxictr[-1]}", file=sys.stderr, flush=True)
    ours = []
    for precision in args.precisions:
        records = bench("frappe", ["dlrm"], args.converge_seeds, args.frappe.parent, args.results / "converge_ours.jsonl",
                        overrides={"train": {"precision": precision}}, progress=False, command=args.command)
        ours += [{"precision": precision, "seed": r["seed"], "epochs": r["epochs"], "valid_auc": r["valid"]["auc"],
                  "test_auc": r["test"]["auc"], "test_logloss": r["test"]["logloss"], "git_commit": r["git_commit"]}
                 for r in records]
    return {"fuxictr": fuxictr, "ours": ours}


PROFILE_VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))  # (precision, compiled)


def part_profile(args, workers: Workers) -> dict[str, Any]:
    """Where our training step spends its time (torch.profiler), at each precision, eager and compiled.

    One process, the model's Frappe config on pre-built shuffled Frappe batches; throughput is given per
    wall second and per CPU second of this process (the latter is steadier on a loaded machine).
    """
    from torch.profiler import ProfilerActivity, profile

    from ctrbench.data import InMemory
    from ctrbench.train import make_optimizer, train_step
    from model_zoo import get_model_class

    fmap = FeatureMap.load(args.frappe)
    rows = []
    for model_name in args.models:
        spec = resolve_spec(model_name, "frappe", 2021)
        generator = torch.Generator().manual_seed(0)
        batches = list(InMemory(load_split(fmap, "train")).batches(spec.train.batch_size, True, generator))
        batches = batches[:args.warmup + args.steps]
        for precision, compiled in PROFILE_VARIANTS:
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


PARTS = {"train": part_train, "preprocess": part_preprocess, "eval": part_eval, "scaling": part_scaling,
         "converge": part_converge, "profile": part_profile}


def _int_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=[*PARTS, "report"])
    parser.add_argument("--fxvenv", type=Path, help="FuxiCTR's virtual environment (its bin/python runs their side)")
    parser.add_argument("--fuxictr-zoo", type=Path, help="folder with FuxiCTR's DLRM.py, DCNv2.py, xDeepFM.py")
    parser.add_argument("--frappe", type=Path, default=Path("data/frappe"), help="processed Frappe")
    parser.add_argument("--criteo-like", type=Path, help="processed generated Criteo-format dataset")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ctrbench_perf"), help="scratch folder")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where each part's JSON goes")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="markdown report to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--precisions", default="fp32,bf16", help="train: ctrbench's train.precision values to time")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing starts")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--converge-seeds", type=int, default=3, help="converge: seeds per library and precision")
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions for the AUC timing")
    parser.add_argument("--scaling-steps", type=int, default=5, help="timed steps per scaling point")
    parser.add_argument("--scaling-batch", type=int, default=256, help="batch size of the size and feature sweeps")
    parser.add_argument("--ladder-points", type=int, default=len(WUKONG_LADDER), help="first N sizes of the ladder")
    parser.add_argument("--batch-sizes", type=_int_list, default=[64, 256, 1024], help="batch sweep, e.g. 64,256")
    parser.add_argument("--feature-counts", type=_int_list, default=[10, 39, 100], help="feature sweep, e.g. 10,39")
    parser.add_argument("--concurrent", action="store_true",
                        help="train: run all jobs of a repeat at once (for a machine whose load you cannot control)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)])
    args.command = command
    args.results.mkdir(parents=True, exist_ok=True)
    if args.part != "report":
        args.work.mkdir(parents=True, exist_ok=True)
        args.models = [m.strip() for m in args.models.split(",")]
        args.precisions = [p.strip() for p in args.precisions.split(",")]
        if unknown := set(args.precisions) - set(get_args(Precision)):
            parser.error(f"--precisions: unknown {sorted(unknown)}; expected a comma-separated list of "
                         f"{', '.join(get_args(Precision))}")
        args.datasets = [("frappe", args.frappe)] + ([("criteo_like", args.criteo_like)] if args.criteo_like else [])
        workers = Workers(args.fxvenv, args.threads)
        torch.set_num_threads(args.threads)
        load_before = load_average()
        started = time.time()
        result = PARTS[args.part](args, workers)
        result.update(command=command,
                      machine=machine(args.threads), load_before=load_before, load_after=load_average(),
                      started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                      minutes=(time.time() - started) / 60)
        (args.results / f"{args.part}.json").write_text(json.dumps(result, indent=1))
    write_report(args.results, args.report, command)
    print(f"wrote {args.report}", file=sys.stderr)


if __name__ == "__main__":
    main()
