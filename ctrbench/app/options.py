"""`RunOptions`: the options shared by every command that trains (`train`, `bench`, `scale`, `tune`).

The command line builds one from its arguments (`ctrbench.app.parser.run_options`) and passes it down to
`ctrbench.app.runner.bench`, `ctrbench.app.tuner.tune`, `ctrbench.app.scaling.scale` and
`ctrbench.app.protocol.bench_protocol`; Python callers build their own:

    bench("synthetic", ["lr", "dlrm"], seeds=2, options=RunOptions(results_path=Path("r.jsonl"), quick=True))

What to run (models, seeds, a grid, a ladder) stays with each command; these options say where the
data and the results are, how the runs' configs are overridden, and how the runs are trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctrbench.store.results import DEFAULT_RESULTS

Overrides = dict[str, dict[str, Any]]  # {"model": {...}, "train": {...}}
QUICK_EPOCHS = 3  # `--quick`: a smoke test's epoch cap


@dataclass(frozen=True)
class RunOptions:
    """Where the runs' data and results live and how the runs are configured and trained.

    data_dir: parent of the processed datasets (None: `$CTRBENCH_DATA_DIR` or `./data`).
    results_path: the results store (JSON Lines).
    config_dir: directory of `<model>.yaml` configs (None: `model_zoo/configs`).
    overrides: `--set` values by section, {"model": {KEY: VALUE}, "train": {KEY: VALUE}}.
    quick: cap training at `QUICK_EPOCHS` epochs unless `train.epochs` is given (`run_overrides`).
    device: "cpu", "cuda", "cuda:N" or "auto".
    progress: show a live progress bar.
    stream: True / False streams / loads every split, None chooses by size (`runner.DatasetSplits`).
    command: the command line that asked for the runs, recorded with each run.
    checkpoint_dir: where each run saves its state after every epoch (None: `<results dir>/checkpoints`).
    """

    data_dir: Path | None = None
    results_path: Path = DEFAULT_RESULTS
    config_dir: Path | None = None
    overrides: Overrides = field(default_factory=dict)
    quick: bool = False
    device: str = "auto"
    progress: bool = True
    stream: bool | None = None
    command: str | None = None
    checkpoint_dir: Path | None = None

    def run_overrides(self, given: Overrides | None = None) -> Overrides:
        """The overrides of every run: `given` (values the user set elsewhere, e.g. a tuning grid
        point), `--set` over them, and with `quick` the epoch cap unless one of them sets train.epochs.
        A model config's values (its entry, a ladder rung, a protocol's search point) go under these."""
        overrides: Overrides = {section: {**(given or {}).get(section, {}), **self.overrides.get(section, {})}
                                for section in ("model", "train")}
        if self.quick:
            overrides["train"] = {"epochs": QUICK_EPOCHS, **overrides["train"]}
        return overrides

    def checkpoints(self) -> Path:
        """The directory of the runs' per-epoch checkpoints."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir is not None else Path(self.results_path).parent / "checkpoints"
