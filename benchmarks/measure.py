"""How the performance benchmark measures: the machine, its load, a matmul peak, one worker process per
measurement (its wall time and its own peak RSS), and timed training steps inside this process."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import atomic_write_text
from ctrbench.store.environment import cpu_name

REPO = Path(__file__).resolve().parent.parent
FULLSIZE_RESULTS = REPO / "benchmarks" / "fullsize_results"


def load_average() -> float:
    """The 1-minute load average (what `uptime` prints first)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def matmul_peak_gflops(size: tuple[int, int, int] = (4096, 1024, 1024), repeats: int = 5,
                       dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                       clock: Callable[[], float] = time.perf_counter) -> float:
    """Best-of-`repeats` GFLOP/s of one torch.matmul [m, k] x [k, n] on `device`: 2 m k n FLOPs over the
    shortest of `repeats` timed calls, after one untimed call (a CPU: at the current thread count; a GPU:
    each call timed to its end, so the kernel, not its launch). `clock` reads seconds (tests pass a fake)."""
    m, k, n = size
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    finish = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    torch.matmul(a, b)  # first call allocates and picks the kernel
    finish()
    best = float("inf")
    for _ in range(repeats):
        started = clock()
        torch.matmul(a, b)
        finish()
        best = min(best, clock() - started)
    return 2 * m * k * n / best / 1e9


def machine(threads: int) -> dict[str, Any]:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__}


def add_record_options(parser: argparse.ArgumentParser, made_by: str) -> None:
    """The options every full-size measurement script takes: how its input was made, the record's dataset
    name and a note on the conditions (`write_fullsize_record`)."""
    parser.add_argument("--input", required=True, help=f"the commands that made the {made_by}, as typed")
    parser.add_argument("--record-dataset", help="the records' dataset field (default: DATASET)")
    parser.add_argument("--note", default="", help="conditions of the run, e.g. what else the machine ran")


def write_fullsize_record(name: str, record: dict[str, Any], made_by: str, note: str, load_before: float,
                          commit: str | None, dirty: bool | None, results_dir: Path = FULLSIZE_RESULTS) -> Path:
    """Write one full-size measurement as RESULTS_DIR/NAME.json: `record`, then how its input was made, the
    machine (with its load average before the run), the commit and the note."""
    machine_facts = {"cpu": cpu_name(), "cores": os.cpu_count(),
                     "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
                     "load_average_before": load_before}
    path = results_dir / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**record, "input": made_by, "machine": machine_facts, "commit": commit,
                                        "dirty": dirty, "note": note}, indent=1) + "\n")
    return path


@dataclass
class Measured:
    """What `run_measured` saw of one child process."""

    stdout: str
    stderr: str  # where ctrbench's status lines go
    wall_s: float
    cpu_s: float  # user + system seconds of the child (its threads included)
    peak_rss_mib: float  # the child's own maximum resident set size


def run_measured(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `command` and measure it (`os.wait4`: the child's own CPU time and peak RSS, what
    `/usr/bin/time -v` reports)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        errors = err.read()
        if status:
            raise CtrbenchError(f"{shlex.join(command)} failed:\n{errors[-3000:]}")
        return Measured(out.read(), errors, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def run_worker(command: list[str], job: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one worker process on `job`: its JSON result (last stdout line), wall seconds and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.json"
        path.write_text(json.dumps(job))
        measured = run_measured([*command, str(path)], env)
    return {**json.loads(measured.stdout.strip().splitlines()[-1]), "wall_seconds": measured.wall_s,
            "peak_rss_mib": measured.peak_rss_mib}


class Workers:
    """How to start each side's worker process: ours (`benchmarks/ours.py`) and FuxiCTR's
    (`benchmarks/fuxictr_side.py` in FuxiCTR's own virtual environment, when `fxvenv` is given)."""

    def __init__(self, fxvenv: Path | None, threads: int):
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.ours = [sys.executable, "-m", "benchmarks.ours"]
        self.fuxictr = None if fxvenv is None else [str(fxvenv / "bin" / "python"), "benchmarks/fuxictr_side.py"]

    def run(self, side: str, job: dict[str, Any]) -> dict[str, Any]:
        command = self.ours if side == "ctrbench" else self.fuxictr
        if command is None:
            raise CtrbenchError("--fxvenv is needed for the FuxiCTR side (see benchmarks/requirements-fuxictr.txt)")
        return run_worker(command, job, self.env)


def timed_steps(model, optimizer, config, batches: list, warmup: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process's) of ctrbench's `train_step` over `batches[warmup:]`, after
    untimed steps on `batches[:warmup]` (pre-built batches: no data loading)."""
    from ctrbench.training.loop import train_step

    model.train()
    for step, batch in enumerate(batches[:warmup]):
        train_step(model, batch, optimizer, config, step + 1, None)
    wall, cpu = time.perf_counter(), time.process_time()
    for step, batch in enumerate(batches[warmup:]):
        train_step(model, batch, optimizer, config, step + 1, None)
    return time.perf_counter() - wall, time.process_time() - cpu
