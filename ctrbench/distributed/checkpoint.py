"""Periodic checkpoints with torch.distributed.checkpoint, and resuming from them.

A checkpoint directory holds

    step-000001200/    model and optimizer state written by DCP, each rank its own shards, plus
                       rng-rank<R>.pt (that rank's random state) and run.json (what the run was)
    LATEST             the name of the newest complete step directory, replaced atomically

so a run killed while writing resumes from the previous complete checkpoint. Only the newest
checkpoint is kept. The data position is the step count: resuming at step k makes every rank skip
its first k batches, which is exact only for the same world size, batch size and schedule; `run.json`
records those and a mismatch stops with an error instead of silently training on other rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torchrec.optim.keyed import KeyedOptimizer

from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import atomic_write_text

LATEST = "LATEST"


class Checkpoints:
    """Saves and restores (model, optimizer, step, per-rank random state) under `directory`.

    `run` describes the run (world size, batch size, steps, model, data); a checkpoint is resumed
    only by a run with the same description.
    """

    def __init__(self, directory: str | Path, run: dict[str, Any], group: dist.ProcessGroup):
        self.directory = Path(directory)
        self.run = run
        self.group = group
        self.rank = dist.get_rank(group)

    def _rng_path(self, step_dir: Path) -> Path:
        return step_dir / f"rng-rank{self.rank}.pt"

    def save(self, step: int, model: nn.Module, optimizer: KeyedOptimizer) -> Path:
        step_dir = self.directory / f"step-{step:09d}"
        dcp.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint_id=step_dir,
                 process_group=self.group)
        torch.save(_rng_state(), self._rng_path(step_dir))
        if self.rank == 0:
            atomic_write_text(step_dir / "run.json", json.dumps({**self.run, "step": step}, indent=2, default=str))
        dist.barrier(group=self.group)
        if self.rank == 0:
            atomic_write_text(self.directory / LATEST, step_dir.name + "\n")
            for old in self.directory.glob("step-*"):
                if old != step_dir:
                    shutil.rmtree(old, ignore_errors=True)
        dist.barrier(group=self.group)
        return step_dir

    def restore(self, model: nn.Module, optimizer: KeyedOptimizer) -> int:
        """Load the newest checkpoint into `model` and `optimizer`; the step to continue from (0: none)."""
        latest = self.directory / LATEST
        if not latest.is_file():
            return 0
        step_dir = self.directory / latest.read_text().strip()
        saved = json.loads((step_dir / "run.json").read_text())
        for key, value in self.run.items():
            if json.loads(json.dumps(value, default=str)) != saved.get(key):
                raise CtrbenchError(
                    f"{step_dir}: this checkpoint was written with {key}={saved.get(key)!r}, this run has "
                    f"{value!r}; resume with the same settings or point checkpoint_dir elsewhere"
                )
        optimizer.init_state()  # creates the lazily built Adam state, which DCP loads in place
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
        dcp.load(state, checkpoint_id=step_dir, process_group=self.group)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(torch.load(self._rng_path(step_dir)))
        return saved["step"]


def _rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
