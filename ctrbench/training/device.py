"""Where a model runs and in which number formats: the one home of `pick_device` and the precision types.

* `Precision`: the forward passes' compute precision (`train.precision`; bf16 = torch.autocast to
  bfloat16, weights and optimizer state stay float32).
* `TablePrecision`: how embedding tables are stored and their all-to-alls sent (the distributed
  track's `embedding_precision` and `comm_precision`; fp16 exists there, not as a compute precision).
"""

from __future__ import annotations

from typing import Literal

import torch

from ctrbench.core.errors import CtrbenchError

Precision = Literal["fp32", "bf16"]
TablePrecision = Literal["fp32", "fp16", "bf16"]


def pick_device(name: str, local_rank: int | None = None, option: str = "--device") -> torch.device:
    """The torch device `name` means: cpu, cuda, cuda:N or auto (CUDA when available, else the CPU).

    With `local_rank` (one process per GPU, torchrun's LOCAL_RANK), `cuda` and `auto` mean that
    process's GPU. `option` names the setting in errors (`--device`, or `device:` in a config file).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name != "cpu" and name.partition(":")[0] != "cuda":
        raise CtrbenchError(f"{option} {name}: expected cpu, cuda, cuda:N or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtrbenchError(f"{option} {name}: CUDA is not available on this machine; use {option} cpu")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise CtrbenchError(f"{option} {name}: expected cpu, cuda, cuda:N or auto") from None
