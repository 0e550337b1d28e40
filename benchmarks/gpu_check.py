"""GPU proof: every CUDA path of ctrbench in one timed run, written to one JSON file.

    python -m benchmarks.gpu_check --out DIR [--device cuda|cpu] [--size full|tiny] [--work DIR]
    bash benchmarks/gpu_check.sh OUT     # a fresh CUDA machine: venv, pinned CUDA stack, then this module

It makes its own data (no downloads) and runs three parts, each timed and each recorded even when it fails:

1. `bench`: every zoo model on the embedded synthetic dataset, as `ctrbench bench --quick --device D`
   (through `ctrbench.app.runner.bench`, its results store under WORK/bench).
2. `single_node`: DLRM and Wukong with their Criteo configs (`model_zoo/configs`) on a generated
   Kaggle-format Criteo release (`preprocess.criteo_synthetic`, then the Criteo converter), in fp32 and
   bf16 (`train.precision`), 2 epochs each through `ctrbench.app.runner.execute` (what `ctrbench train`
   runs). Per run: samples/s of each epoch (the first includes warm-up: kernel choice, allocator growth),
   peak memory (`torch.cuda.max_memory_allocated` on a GPU; on a CPU the process's peak RSS, reset before
   the run), and training GFLOP/s (3 x the forward MFLOP/example of `ctrbench.nn.flops`, as
   `benchmarks/run.py` counts: backward ~ 2x forward) against a matmul probe of the same precision on
   the same device, taken before and after the runs.
3. `distributed`: `torchrun --nproc_per_node=1 -m ctrbench.distributed.train` with
   `distributed_configs/criteo_dlrm.yaml` (the paper's DLRM) on a generated Terabyte release (24 day
   files, hash-encoded): every table row-wise, then table-wise, with fp32 and bf16 tables, through
   TrainPipelineSparseDist; the last variant is stopped halfway and resumed from its checkpoint. Per run:
   samples/s, peak memory per rank, that the loss fell and that the AUC on day 23 is above 0.5. Layouts
   the device lacks (row-wise and bf16 tables on a CPU) are recorded as skipped, with the reason.

OUT/gpu_check.json holds every figure, the device, the library versions, the git commit and the command;
OUT/logs/ the distributed runs' output. The exit status is 1 when a part failed (the JSON says which and
why), 2 on bad arguments. WORK (default OUT/work) holds the data and checkpoints, several GB at full size.

The lent GPU machines of this workplace reach no package registry and come with their own torch (2.11,
CUDA 13) and without polars, torchrec and fbgemm-gpu: there, run this module with their python3 from the
repository root, carrying the missing wheels (see the device tool's notes). Every part needs polars;
only the distributed part needs torchrec and fbgemm-gpu, and without them it fails with the import error
recorded while the other parts run.

`--size full` is sized to stay within 8 minutes on one H100/H200-class GPU with a 16-core host (an estimate
from the CPU-side rates of the generators and converters; no GPU run has happened yet): synthetic
200,000 rows; Kaggle-format 3,000,000 lines; Terabyte-format 24 days x 150,000 lines (hashed into 500,000
rows per table, so DLRM's 26 tables of dimension 128 take 6.7 GB in fp32). `--size tiny` runs the same
code on small data and models, for the CPU test in tests/test_gpu_check.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import torch

from benchmarks.measure import matmul_peak_gflops
from ctrbench.app.options import RunOptions
from ctrbench.app.runner import DatasetSplits, bench, execute, resolve_spec
from ctrbench.core.config import parse_overrides
from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import atomic_write_text
from ctrbench.data.datasets import load_dataset_config
from ctrbench.data.features import FeatureMap
from ctrbench.data.synthetic import write_synthetic
from ctrbench.store.environment import environment
from ctrbench.store.record import BASE_SEED, RunRecord
from ctrbench.training.device import pick_device
from model_zoo import MODELS
from preprocess.criteo import EncodingRules, convert_terabyte, preprocess_criteo
from preprocess.criteo_synthetic import write_release
from preprocess.options import PreprocessOptions

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTED_CONFIG = "distributed_configs/criteo_dlrm.yaml"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
DISTRIBUTED_VARIANTS = (("row_wise", "fp32"), ("row_wise", "bf16"), ("table_wise", "fp32"), ("table_wise", "bf16"))
LOSS_LINE = re.compile(r"^step \d+/\d+\s+loss (\S+)", re.MULTILINE)  # the track's progress lines on rank 0
Status = Literal["ok", "skipped", "failed"]


@dataclass(frozen=True)
class Sizes:
    """How big each part runs; `full` fits ~8 minutes on one H100/H200-class GPU, `tiny` a CPU test."""

    synthetic_rows: int
    bench_sets: tuple[str, ...]  # `--set` overrides of the bench part
    kaggle_rows: int
    single_node: dict[str, dict[str, dict[str, Any]]]  # model -> overrides of its Criteo config
    terabyte_day_rows: int
    terabyte_table_size: int
    distributed_sets: tuple[str, ...]  # `--set` overrides of distributed_configs/criteo_dlrm.yaml
    matmul_size: tuple[int, int, int]
    launch_timeout: int  # seconds per torchrun launch
    budget_seconds: int


SIZES = {
    "full": Sizes(
        synthetic_rows=load_dataset_config("synthetic").generator["rows"], bench_sets=(),
        kaggle_rows=3_000_000, single_node={"dlrm": {}, "wukong": {}},
        terabyte_day_rows=150_000, terabyte_table_size=500_000,
        # batch 16,384: the paper's global 131,072 over 8 GPUs, the per-GPU batch of the real run
        distributed_sets=("train.batch_size=16384", "train.eval_batch_size=65536", "train.log_every=20"),
        matmul_size=(8192, 8192, 8192), launch_timeout=300, budget_seconds=480),
    "tiny": Sizes(
        synthetic_rows=4000, bench_sets=(),
        kaggle_rows=20_000,
        single_node={
            "dlrm": {"model": {"embedding_dim": 8, "bottom_mlp_units": [16, 8], "top_mlp_units": [16]},
                     "train": {"batch_size": 1024, "eval_batch_size": 4096}},
            "wukong": {"model": {"embedding_dim": 8, "bottom_mlp_units": [16], "num_layers": 1, "fmb_embeddings": 4,
                                 "lcb_embeddings": 4, "fm_rank": 4, "fmb_mlp_units": [16], "head_mlp_units": [16]},
                       "train": {"batch_size": 1024, "eval_batch_size": 4096}}},
        terabyte_day_rows=1000, terabyte_table_size=1000,
        distributed_sets=("train.batch_size=1024", "train.eval_batch_size=4096", "train.log_every=5",
                          "model.embedding_dim=8", "model.bottom_mlp_units=[16, 8]", "model.top_mlp_units=[16]"),
        matmul_size=(256, 256, 256), launch_timeout=120, budget_seconds=60),
}


@dataclass
class Check:
    """What every part gets: where to write, on what, how big."""

    out: Path
    work: Path
    device: torch.device
    size: Sizes

    def fresh(self, name: str) -> Path:
        """WORK/name, emptied (a rerun starts from nothing: the bench part would otherwise resume)."""
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


# ---------------------------------------------------------------- memory

def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: the CUDA allocator's, or the process's RSS high-water mark (Linux clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> tuple[str, int]:
    """(kind, bytes) since `reset_peak_memory`: tensors on a GPU; on a CPU the whole process (interpreter,
    libraries and loaded data included)."""
    if device.type == "cuda":
        return "cuda_max_memory_allocated", torch.cuda.max_memory_allocated(device)
    kib = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return "peak_rss", int(kib.group(1)) * 1024


# ---------------------------------------------------------------- part results

@dataclass
class PartResult:
    name: str
    status: Status
    seconds: float
    error: str | None  # why it failed: the failed checks, or the exception's traceback tail
    figures: Any  # the part's dataclass (BenchPart, SingleNodePart, DistributedPart), None if it raised


def run_part(name: str, part: Callable[[Check], Any], check: Check) -> PartResult:
    """Run one part; an exception or a failed check is recorded, never raised."""
    print(f"== {name}", flush=True)
    started = time.perf_counter()
    try:
        figures = part(check)
        failures = figures.failures()
        status, error = ("failed", "; ".join(failures)) if failures else ("ok", None)
    except Exception:  # noqa: BLE001 - the report must be written whatever broke
        figures, status, error = None, "failed", traceback.format_exc()[-4000:]
    if check.device.type == "cuda":
        torch.cuda.empty_cache()  # this process's cached blocks would count against the next part's processes
    seconds = round(time.perf_counter() - started, 1)
    print(f"== {name}: {status} in {seconds} s" + (f"\n{error}" if error else ""), flush=True)
    return PartResult(name, status, seconds, error, figures)


# ---------------------------------------------------------------- part 1: every zoo model

@dataclass
class BenchRun:
    model: str
    status: str  # the run's record status: ok or diverged
    test_auc: float | None
    samples_per_second: float
    train_seconds: float
    epochs: int


@dataclass
class BenchPart:
    command: str
    data_seconds: float
    runs: list[BenchRun]
    models: list[str]

    def failures(self) -> list[str]:
        done = {run.model for run in self.runs}
        return ([f"{m}: no run recorded" for m in self.models if m not in done]
                + [f"{r.model}: {r.status}" for r in self.runs if r.status != "ok"])


def part_bench(check: Check) -> BenchPart:
    data_dir, results = check.work / "data", check.fresh("bench") / "results.jsonl"
    started = time.perf_counter()
    shutil.rmtree(data_dir / "synthetic", ignore_errors=True)
    write_synthetic(data_dir / "synthetic", check.size.synthetic_rows, load_dataset_config("synthetic").generator["seed"])
    data_seconds = time.perf_counter() - started
    models = list(MODELS)
    sets = [arg for value in check.size.bench_sets for arg in ("--set", value)]
    command = shlex.join(["ctrbench", "bench", "--dataset", "synthetic", "--models", ",".join(models), "--quick",
                          "--device", check.device.type, "--data-dir", str(data_dir), "--results", str(results), *sets])
    records = bench("synthetic", models, options=RunOptions(
        data_dir=data_dir, results_path=results, quick=True, device=check.device.type,
        overrides=parse_overrides(list(check.size.bench_sets)), progress=False, command=command))
    runs = [BenchRun(r.model, r.status, r.metric("test", "auc"), r.samples_per_second, r.train_seconds, r.epochs)
            for r in records]
    return BenchPart(command, round(data_seconds, 1), runs, models)


# ---------------------------------------------------------------- part 2: DLRM and Wukong on one device

@dataclass
class TrainRun:
    model: str
    precision: str
    status: str  # the run's record status: ok or diverged
    command: str
    batch_size: int
    epoch_samples_per_second: list[float]
    samples_per_second: float  # the last epoch's
    memory_kind: str  # cuda_max_memory_allocated or peak_rss
    peak_memory_bytes: int
    forward_mflop_per_example: float
    train_gflops: float  # 3 x forward MFLOP/example x samples/s / 1000
    fraction_of_matmul_peak: float  # train_gflops / the best probe of this precision
    valid_auc: float | None
    test_auc: float | None
    wall_seconds: float


@dataclass
class SingleNodePart:
    data_command: str
    data_seconds: float
    train_rows: int
    matmul_size: tuple[int, int, int]
    matmul_peak_gflops: dict[str, list[float]]  # precision -> probes before and after the runs
    runs: list[TrainRun]

    def failures(self) -> list[str]:
        return [f"{r.model} {r.precision}: {r.status}" for r in self.runs if r.status != "ok"]


def probe(check: Check, peaks: dict[str, list[float]]) -> None:
    for precision, dtype in PRECISIONS.items():
        peaks.setdefault(precision, []).append(round(matmul_peak_gflops(check.size.matmul_size, 10, dtype, check.device), 1))


def part_single_node(check: Check) -> SingleNodePart:
    raw, data_dir = check.fresh("raw_kaggle"), check.work / "data"
    started = time.perf_counter()
    write_release(raw, "kaggle", check.size.kaggle_rows, seed=0)
    shutil.rmtree(data_dir / "criteo", ignore_errors=True)
    fmap = preprocess_criteo(raw, data_dir / "criteo", PreprocessOptions())
    shutil.rmtree(raw)
    data_seconds = time.perf_counter() - started
    data_command = (f"python -m preprocess.criteo_synthetic RAW --release kaggle --rows {check.size.kaggle_rows} "
                    f"&& ctrbench preprocess criteo --raw RAW --out {data_dir / 'criteo'}")
    data = DatasetSplits(fmap)
    peaks: dict[str, list[float]] = {}
    probe(check, peaks)
    runs = []
    for model, overrides in check.size.single_node.items():
        for precision in PRECISIONS:
            train = {**overrides.get("train", {}), "precision": precision, "epochs": 2}
            spec = resolve_spec(model, "criteo", BASE_SEED, overrides={"model": overrides.get("model", {}), "train": train})
            sets = [f"{section}.{key}={value if isinstance(value, str) else json.dumps(value)}"
                    for section, values in (("model", overrides.get("model", {})), ("train", train))
                    for key, value in values.items()]
            command = shlex.join(["ctrbench", "train", "--model", model, "--dataset", "criteo", "--data-dir", str(data_dir),
                                  "--device", check.device.type, *[a for s in sets for a in ("--set", s)]])
            reset_peak_memory(check.device)
            started = time.perf_counter()
            record, _ = execute(spec, data, check.device, label=f"{model} {precision}", progress=False, command=command)
            if check.device.type == "cuda":
                torch.cuda.synchronize(check.device)
            kind, peak = peak_memory(check.device)
            speeds = [round(epoch.samples_per_second, 1) for epoch in record.history]
            speed = speeds[-1] if speeds else 0.0
            gflops = 3 * record.mflop_per_example * speed / 1e3
            runs.append(TrainRun(model, precision, record.status, command, spec.train.batch_size, speeds, speed, kind,
                                 peak, record.mflop_per_example, round(gflops, 2), 0.0,
                                 record.metric("valid", "auc"), record.metric("test", "auc"),
                                 round(time.perf_counter() - started, 1)))
            print(f"{model} {precision}: {speed:,.0f} samples/s, {gflops:,.1f} GFLOP/s, peak {peak / 2**20:,.0f} MiB "
                  f"({kind}), test AUC {runs[-1].test_auc}", flush=True)
    probe(check, peaks)
    for run in runs:
        run.fraction_of_matmul_peak = round(run.train_gflops / max(peaks[run.precision]), 4)
    return SingleNodePart(data_command, round(data_seconds, 1), fmap.splits["train"].rows, check.size.matmul_size, peaks,
                          runs)


# ---------------------------------------------------------------- part 3: the distributed track

@dataclass
class DistributedRun:
    sharding: str
    embedding_precision: str
    status: Status
    reason: str | None = None  # why skipped or failed
    commands: list[str] = field(default_factory=list)
    steps: int | None = None
    stopped_at: int | None = None  # resumed runs: where the first session stopped
    resumed_at: int | None = None
    layout_types: list[str] = field(default_factory=list)  # the sharding types the plan gave the tables
    samples_per_second: float | None = None  # this session's (a resumed run: the second session's)
    memory_kind: str | None = None
    peak_memory_bytes_per_rank: list[int] = field(default_factory=list)
    first_loss: float | None = None  # a resumed run: the first session's first logged loss
    last_loss: float | None = None
    auc: float | None = None
    logloss: float | None = None
    wall_seconds: float | None = None


@dataclass
class DistributedPart:
    data_command: str
    data_seconds: float
    train_rows: int
    runs: list[DistributedRun]

    def failures(self) -> list[str]:
        return [f"{r.sharding} {r.embedding_precision}: {r.reason}" for r in self.runs if r.status == "failed"]


def skip_reason(device: torch.device, sharding: str, precision: str) -> str | None:
    """Why this device cannot run the variant (None: it can), as the track itself decides."""
    from ctrbench.distributed.sharding import available_sharding_types, make_sharder

    if precision == "bf16" and device.type != "cuda":
        return "bf16 tables need CUDA (fbgemm's CPU embedding kernels store fp32 and fp16)"
    if sharding not in available_sharding_types(make_sharder("fp32"), device.type, precision):
        return f"torchrec does not offer {sharding} sharding on {device.type}"
    return None


def launch(check: Check, sets: list[str], log: Path, stop_after: int | None = None) -> str:
    """One `torchrun --nproc_per_node=1` run of the track, recorded in the check's results store; its command
    as a user types it. Raises on failure."""
    args = ["-m", "ctrbench.distributed.train", "--config", DISTRIBUTED_CONFIG, *[a for s in sets for a in ("--set", s)],
            "--results", str(check.out / "distributed" / "results.jsonl")]
    if stop_after is not None:
        args += ["--stop-after", str(stop_after)]
    launcher = ["--standalone", "--nproc_per_node=1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with log.open("w") as handle:
        process = subprocess.run([sys.executable, "-m", "torch.distributed.run", *launcher, *args], cwd=REPO, env=env,
                                 stdout=handle, stderr=subprocess.STDOUT, timeout=check.size.launch_timeout)
    command = shlex.join(["torchrun", *launcher, *args])
    if process.returncode != 0:
        raise CtrbenchError(f"exit status {process.returncode} of {command}:\n{log.read_text()[-3000:]}")
    return command


def distributed_run(check: Check, data: Path, fmap: FeatureMap, sharding: str, precision: str, resume: bool) -> DistributedRun:
    run = DistributedRun(sharding, precision, "ok")
    name = f"{sharding}_{precision}"
    output, checkpoints = check.fresh(f"distributed/{name}"), check.fresh(f"distributed/{name}_checkpoints")
    sets = [f"train.data_dir={data}", *check.size.distributed_sets, f"train.device={check.device.type}",
            f'train.sharding={{"*": {sharding}}}', f"train.embedding_precision={precision}", f"train.output_dir={output}",
            f"train.checkpoint_dir={checkpoints if resume else 'null'}", "train.checkpoint_every=0"]
    started, first_session = time.perf_counter(), check.out / "logs" / f"distributed_{name}_stop.log"
    try:
        if resume:
            batch = int(next(s for s in check.size.distributed_sets if s.startswith("train.batch_size=")).partition("=")[2])
            run.stopped_at = fmap.splits["train"].rows // batch // 2
            run.commands.append(launch(check, sets, first_session, run.stopped_at))
        run.commands.append(launch(check, sets, check.out / "logs" / f"distributed_{name}.log"))
        result = RunRecord.from_json(json.loads((output / "result.json").read_text()))
        losses = LOSS_LINE.findall(first_session.read_text()) if resume else [result.distributed.loss_history[0].loss]
    except (CtrbenchError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
        run.status, run.reason = "failed", str(exc)[-4000:]
        run.wall_seconds = round(time.perf_counter() - started, 1)
        return run
    run.wall_seconds = round(time.perf_counter() - started, 1)
    track = result.distributed
    run.steps, run.resumed_at, run.samples_per_second = result.steps, track.resumed_at, result.samples_per_second
    run.layout_types = sorted({t["type"] for tables in track.sharding.values() for t in tables.values()})
    run.memory_kind = track.peak_memory.kind
    run.peak_memory_bytes_per_rank = track.peak_memory.bytes_per_rank
    run.first_loss, run.last_loss = (float(losses[0]) if losses else None), track.loss_history[-1].loss
    run.auc, run.logloss = result.test.auc, result.test.logloss
    problems = []
    if run.layout_types != [sharding]:
        problems.append(f"asked for {sharding}, the plan gave {run.layout_types}")
    if not run.auc > 0.5:
        problems.append(f"AUC {run.auc} is not above 0.5")
    if resume and run.resumed_at != run.stopped_at:
        problems.append(f"resumed at step {run.resumed_at}, expected {run.stopped_at}")
    if run.first_loss is None or not run.last_loss < run.first_loss:
        problems.append(f"the loss did not fall ({run.first_loss} -> {run.last_loss})")
    if problems:
        run.status, run.reason = "failed", "; ".join(problems)
    return run


def part_distributed(check: Check) -> DistributedPart:
    raw, data = check.fresh("raw_terabyte"), check.work / "data" / "criteo_terabyte"
    started = time.perf_counter()
    write_release(raw, "terabyte", check.size.terabyte_day_rows, seed=0)
    shutil.rmtree(data, ignore_errors=True)
    fmap = convert_terabyte(raw, data, EncodingRules(encoding="hash", table_size=check.size.terabyte_table_size),
                            PreprocessOptions())
    shutil.rmtree(raw)
    data_seconds = time.perf_counter() - started
    data_command = (f"python -m preprocess.criteo_synthetic RAW --release terabyte --rows {check.size.terabyte_day_rows} "
                    f"&& convert_terabyte(RAW, {data}, EncodingRules(encoding='hash', "
                    f"table_size={check.size.terabyte_table_size}))")
    (check.out / "logs").mkdir(parents=True, exist_ok=True)
    reasons = {variant: skip_reason(check.device, *variant) for variant in DISTRIBUTED_VARIANTS}
    runnable = [variant for variant, reason in reasons.items() if reason is None]
    runs = []
    for variant, reason in reasons.items():
        if reason is not None:
            runs.append(DistributedRun(*variant, "skipped", reason))
            continue
        runs.append(distributed_run(check, data, fmap, *variant, resume=variant == runnable[-1]))
        r = runs[-1]
        print(f"{variant[0]} {variant[1]}: {r.status}, {r.samples_per_second} samples/s, AUC {r.auc}", flush=True)
    return DistributedPart(data_command, round(data_seconds, 1), fmap.splits["train"].rows, runs)


# ---------------------------------------------------------------- the report

PARTS: dict[str, Callable[[Check], Any]] = {"bench": part_bench, "single_node": part_single_node,
                                            "distributed": part_distributed}


@dataclass
class Report:
    command: str
    size: str
    status: Literal["ok", "failed"]
    started_at: str
    wall_seconds: float
    budget_seconds: int
    within_budget: bool
    environment: dict[str, Any]  # versions, git commit, device (ctrbench.store.environment, plus the CUDA stack)
    parts: list[PartResult]


def stack_versions(device: torch.device) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"cuda": torch.version.cuda}
    for package in ("torchrec", "fbgemm-gpu", "fbgemm-gpu-cpu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if device.type == "cuda":
        versions["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return versions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for gpu_check.json and logs/")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and checkpoints (default OUT/work)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=list(SIZES), default="full")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        device = pick_device(args.device)
    except CtrbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = Check(args.out, args.work or args.out / "work", device, SIZES[args.size])
    check.out.mkdir(parents=True, exist_ok=True)
    started_at, started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    env = environment(device).to_json()
    env["versions"].update(stack_versions(device))
    parts = [run_part(name, part, check) for name, part in PARTS.items()]
    wall = round(time.perf_counter() - started, 1)
    report = Report(shlex.join(["python", "-m", "benchmarks.gpu_check", *argv]), args.size,
                    "ok" if all(p.status == "ok" for p in parts) else "failed", started_at, wall,
                    check.size.budget_seconds, wall <= check.size.budget_seconds, env, parts)
    atomic_write_text(check.out / "gpu_check.json", json.dumps(dataclasses.asdict(report), indent=2, default=str) + "\n")
    print(f"gpu check {report.status} in {wall} s (budget {check.size.budget_seconds} s): "
          + ", ".join(f"{p.name} {p.status} {p.seconds} s" for p in parts) + f"; {check.out / 'gpu_check.json'}")
    return 0 if report.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
