"""Where a run ran, for its record: the device, the library versions and the code version (git commit)."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import polars
import pyarrow
import torch

import ctrbench
from ctrbench.data.datasets import REPO_ROOT
from ctrbench.store.record import Device, Environment


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def code_version() -> tuple[str | None, bool | None]:
    """The git commit this process's code came from and whether tracked files had uncommitted changes,
    read once, when the process first asks (before its first run): edits made while a long benchmark
    runs do not change the code it runs, so they must not mark its records dirty."""
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD") or None, None if changes is None else bool(changes)


def environment(device: torch.device) -> Environment:
    """This process's device, library versions and code version, for its run records."""
    commit, dirty = code_version()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return Environment(
        versions={"ctrbench": ctrbench.__version__, "torch": torch.__version__, "python": platform.python_version(),
                  "polars": polars.__version__, "pyarrow": pyarrow.__version__},
        git_commit=commit,
        git_dirty=dirty,  # uncommitted changes to tracked files when the process started
        device=Device(device.type, name, torch.get_num_threads()),
    )
