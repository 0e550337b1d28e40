"""Malformed input rows: stop at the first (`path:line: problem`) or, with `--skip-bad-rows`, drop and count them.

Validation is vectorized: a reader computes, for a whole column at once, a mask of the rows that break
each rule, and `BadRows` decides what happens to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError, quote

Check = tuple[pl.Expr, str, pl.Expr | None]  # a rule over a lazy frame: (bad rows, problem, offending value)


@dataclass
class BadRows:
    """What to do with malformed input rows: stop at the first (default) or skip and count them.

    Parsers validate whole columns at once and pass a boolean mask of bad rows together with each
    row's line number in the file; `check` either raises one line naming the file, the line and the
    problem, or returns the mask of rows to keep and adds the skipped ones to the count. `check_lazy`
    does the same for a lazy frame, in one streaming pass.
    """

    skip: bool = False
    skipped: dict[str, int] = field(default_factory=dict)  # "file: problem" -> rows skipped

    def check(self, bad: np.ndarray, path: Path, line_numbers: np.ndarray, problem: str,
              found: pl.Series | None = None) -> np.ndarray:
        """One rule; `found` (optional, one entry per row) is the offending value, quoted in the error."""
        return self.check_rules(path, line_numbers, [(bad, problem, found)])

    def check_rules(self, path: Path, line_numbers: np.ndarray,
                    rules: Sequence[tuple[np.ndarray, str, pl.Series | None]]) -> np.ndarray:
        """Several rules `(bad mask, problem, found values or None)` over the same rows.

        Stops at the earliest bad line in the file (naming the first rule it breaks); when skipping,
        each bad row is counted once, under the first rule it breaks. Returns the mask of rows to keep.
        """
        keep = np.ones(len(line_numbers), dtype=bool)
        first_line, message = None, ""
        for bad, problem, found in rules:
            bad = np.asarray(bad, dtype=bool) & keep
            if not bad.any():
                continue
            row = int(np.argmax(bad))
            if first_line is None or line_numbers[row] < first_line:
                first_line = int(line_numbers[row])
                message = problem if found is None else f"{problem}, found {quote(found[row])}"
            self._count(path, problem, int(bad.sum()))
            keep &= ~bad
        if first_line is not None and not self.skip:
            self._stop(path, first_line, message)
        return keep

    def check_lazy(self, frame: pl.LazyFrame, path: Path, rules: Sequence[Check]) -> tuple[pl.LazyFrame, int]:
        """`check_rules` for a lazy frame with a `line` column: one streaming pass over it.

        Each `Check` is `(bad rows, problem, offending value or None)` as expressions over the frame's
        columns. Returns the frame without the bad rows and the number of rows it keeps.
        """
        broken = pl.lit(None, dtype=pl.Int32)  # index of the first rule a row breaks
        for index, (bad, _, _) in reversed(list(enumerate(rules))):
            broken = pl.when(bad).then(pl.lit(index, dtype=pl.Int32)).otherwise(broken)
        counts = (frame.group_by(broken.alias("rule")).agg(pl.len().alias("rows"), pl.col("line").min())
                  .collect(engine="streaming"))
        bad = counts.filter(pl.col("rule").is_not_null()).sort("line")
        for rule, rows in bad.select("rule", "rows").iter_rows():
            self._count(path, rules[rule][1], rows)
        if not bad.is_empty() and not self.skip:
            rule, line = bad.row(0)[0], bad["line"][0]
            _, problem, found = rules[rule]
            if found is not None:
                value = frame.filter(pl.col("line") == line).select(found).collect().item()
                problem = f"{problem}, found {value!r}"
            self._stop(path, line, problem)
        kept = int(counts["rows"].sum()) - int(bad["rows"].sum())
        return (frame.filter(broken.is_null()) if not bad.is_empty() else frame), kept

    def _count(self, path: Path, problem: str, rows: int) -> None:
        key = f"{path.name}: {problem}"
        self.skipped[key] = self.skipped.get(key, 0) + rows

    @staticmethod
    def _stop(path: Path, line: int, message: str) -> None:
        raise CtrbenchError(f"{path}:{line}: {message}; fix the file or pass --skip-bad-rows")

    def skipped_in(self, path: Path) -> int:
        """Rows of the file `path` skipped as bad, under every rule."""
        return sum(count for key, count in self.skipped.items() if key.startswith(f"{path.name}: "))

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def report(self) -> dict[str, int]:
        """Print and return the skipped-row counts (recorded in the feature map's `source`)."""
        for key, count in self.skipped.items():
            console.print(f"skipped {count:,} bad rows ({key})", highlight=False)
        return dict(self.skipped)
