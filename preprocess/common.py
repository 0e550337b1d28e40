"""Pieces every converter shares: release detection, input checksums and the bad-row policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctrbench.errors import CtrbenchError
from ctrbench.features import sha256_file
from ctrbench.train import console


def detect_release(raw_dir: Path, releases: dict[str, Sequence[str]], dataset: str) -> str:
    """Name of the first release whose files (globs relative to raw_dir) are all present.

    `releases` maps a release name (e.g. "bars_x1", "raw") to the file names or glob patterns it needs.
    Prints which release was found; stops with the list of expected files when none matches.
    """
    if not raw_dir.is_dir():
        raise CtrbenchError(f"{raw_dir}: raw directory not found")
    for name, patterns in releases.items():
        if all(any(raw_dir.glob(pattern)) for pattern in patterns):
            console.print(f"{dataset}: found the {name} release in {raw_dir}", highlight=False)
            return name
    expected = "; ".join(f"{name}: {', '.join(patterns)}" for name, patterns in releases.items())
    raise CtrbenchError(f"{raw_dir}: no known {dataset} release here; expected one of these file sets: {expected}")


def describe_inputs(paths: Sequence[Path], rows: dict[str, int] | None = None) -> dict[str, dict]:
    """Checksums (and row counts where known) of the raw files, recorded in the feature map's `source`."""
    rows = rows or {}
    return {
        p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size, **({"rows": rows[p.name]} if p.name in rows else {})}
        for p in paths
    }


@dataclass
class BadRows:
    """What to do with malformed input rows: stop at the first (default) or skip and count them.

    Parsers validate whole columns at once and pass a boolean mask of bad rows together with each
    row's line number in the file; `check` either raises one line naming the file, the line and the
    problem, or returns the mask of rows to keep and adds the skipped ones to the count.
    """

    skip: bool = False
    skipped: dict[str, int] = field(default_factory=dict)  # "file: problem" -> rows skipped

    def check(self, bad: np.ndarray, path: Path, line_numbers: np.ndarray, problem: str) -> np.ndarray:
        bad = np.asarray(bad, dtype=bool)
        if bad.any():
            first = int(np.argmax(bad))
            if not self.skip:
                raise CtrbenchError(
                    f"{path}:{int(line_numbers[first])}: {problem}; fix the file or pass --skip-bad-rows"
                )
            key = f"{path.name}: {problem}"
            self.skipped[key] = self.skipped.get(key, 0) + int(bad.sum())
        return ~bad

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def report(self) -> dict[str, int]:
        """Print and return the skipped-row counts (recorded in the feature map's `source`)."""
        for key, count in self.skipped.items():
            console.print(f"skipped {count:,} bad rows ({key})", highlight=False)
        return dict(self.skipped)
