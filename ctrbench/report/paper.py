"""The Wukong paper's published tables (2, 3 and 5) that the leaderboards and scaling reports quote beside ours."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from ctrbench.data.datasets import REPO_ROOT

# The paper's tables are read where the project's shared files live, never copied into the repository.
PAPER_DIR = Path(os.environ.get("CTRBENCH_PAPER_DIR", REPO_ROOT.parent / "shared" / "paper"))
PAPER_SOURCE = "`../shared/paper/` (or `$CTRBENCH_PAPER_DIR`)"


@dataclass(frozen=True)
class PaperNumbers:
    """The paper's Tables 2 and 3, keyed by its (dataset, model) display names, in its order."""

    datasets: list[str]
    models: list[str]
    table2: dict[tuple[str, str], tuple[float, float]]  # test AUC, LogLoss
    table3: dict[tuple[str, str], tuple[int, float]]  # params, MFLOP per example

    @property
    def found(self) -> bool:
        return bool(self.table2)

    @classmethod
    def load(cls, directory: Path | None = None) -> PaperNumbers:
        """The tables from `directory` (default `PAPER_DIR`); empty ones when it does not hold them (the
        leaderboards then show ours only and say where the paper's tables are looked for)."""
        directory = directory or PAPER_DIR
        if not (directory / "table2.csv").is_file() or not (directory / "table3.csv").is_file():
            return cls([], [], {}, {})
        with (directory / "table2.csv").open() as handle:
            rows2 = list(csv.DictReader(handle))
        with (directory / "table3.csv").open() as handle:
            rows3 = list(csv.DictReader(handle))
        return cls(
            datasets=list(dict.fromkeys(r["dataset"] for r in rows2)),
            models=list(dict.fromkeys(r["model"] for r in rows2)),
            table2={(r["dataset"], r["model"]): (float(r["auc"]), float(r["logloss"])) for r in rows2},
            table3={(r["dataset"], r["model"]): (int(r["params"]), float(r["mflop_per_example"])) for r in rows3},
        )


def paper_table5() -> list[dict[str, str]]:
    """The paper's Table 5 rows, or none when its tables are not where the leaderboard looks for them."""
    path = PAPER_DIR / "table5_scaling.csv"
    if not path.is_file():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))
