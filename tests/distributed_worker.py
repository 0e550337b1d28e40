"""Runs a list of distributed-track configs in one process group (tests/test_distributed.py launches it
with torchrun), so the tests pay torch's and torchrec's import time once for several runs.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_worker.py RUNS.json OUT.json

RUNS.json is a list of {"config": path, "overrides": [KEY=VALUE, ...], "stop_after": steps or null};
rank 0 writes the list of the runs' records (`RunRecord.to_json`; null for a stopped session) to OUT.json.
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from ctrbench.distributed.config import load_config
from ctrbench.distributed.train import run


def main(runs_path: str, out_path: str) -> None:
    runs = json.loads(Path(runs_path).read_text())
    dist.init_process_group("gloo")
    try:
        rank = dist.get_rank()
        records = [run(load_config(item["config"], item["overrides"]), stop_after=item["stop_after"]) for item in runs]
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(out_path).write_text(json.dumps([record and record.to_json() for record in records]))


if __name__ == "__main__":
    main(*sys.argv[1:])
