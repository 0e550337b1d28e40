"""The raw splits a converter hands to `write_dataset` (`RawSplits`), in the releases' common shapes.

    read_csv_splits / read_libfm_splits   releases that ship train/valid/test files (CSV or libfm)
    split_positives                       a positives-only log -> sampled negatives -> seeded split
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import SPLITS
from preprocess.bad_rows import BadRows
from preprocess.inputs import progress
from preprocess.readers import LABEL, parse_labels, read_csv, read_libfm
from preprocess.rules import CategoricalRules


def sample_negatives(positives: pl.DataFrame, sampled: str, exclude_by: Sequence[str], per_positive: int,
                     seed: int) -> pl.DataFrame:
    """`per_positive` negatives for each positive row, drawn the NFM way.

    A negative copies its positive row and replaces the `sampled` column (e.g. the item) by a value
    drawn uniformly from all values of that column in `positives`, excluding every value that occurs
    with the row's `exclude_by` key (e.g. the user) anywhere in `positives`, and distinct from the
    row's other negatives. Negative j of positive i is output row i * per_positive + j.

    Vectorized rejection sampling: all draws at once, then only the rejected ones are redrawn, round
    after round (a handful of rounds unless most values are excluded for some key).
    """
    values = positives[sampled]
    universe = values.unique().sort()
    n_values = len(universe)
    value_code = universe.search_sorted(values).to_numpy().astype(np.int64)
    key_code = positives.select(pl.struct(exclude_by).rank("dense")).to_series().to_numpy().astype(np.int64) - 1
    used = np.sort(key_code * n_values + value_code)  # (key, value) pairs that occur, sorted and deduplicated
    used = used[np.concatenate([[True], used[1:] != used[:-1]])]
    free = n_values - np.bincount(used // n_values, minlength=int(key_code.max()) + 1)
    if free.min() < per_positive:
        row = int(np.argmax(free[key_code] < per_positive))
        key = positives.select(exclude_by).row(row, named=True)
        raise CtrbenchError(f"cannot sample {per_positive} negatives for {key}: only {int(free[key_code[row]])} "
                            f"of the {n_values} {sampled} values never occur with it")

    rng = np.random.default_rng(seed)
    keys = np.repeat(key_code, per_positive)  # draw d belongs to positive d // per_positive
    draws = rng.integers(0, n_values, size=len(keys))
    pending = np.arange(len(keys))
    while pending.size:
        pair = keys[pending] * n_values + draws[pending]
        rejected = used[np.minimum(np.searchsorted(used, pair), len(used) - 1)] == pair
        first_of_row = pending - pending % per_positive
        for other in range(per_positive):  # equal to another draw of the same positive
            sibling = first_of_row + other
            rejected |= (sibling != pending) & (draws[sibling] == draws[pending])
        pending = pending[rejected]
        draws[pending] = rng.integers(0, n_values, size=pending.size)
    negatives = positives.select(pl.all().gather(np.repeat(np.arange(len(positives)), per_positive)))
    return negatives.with_columns(universe.gather(draws).alias(sampled))


def split_rows(rows: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """A seeded random partition of row indices 0..rows-1 into len(fractions) parts, each sorted.

    Part k ends at round(rows * (f_0 + ... + f_k)) (half to even) of a seeded permutation.
    """
    order = np.random.default_rng(seed).permutation(rows)
    bounds = np.round(np.cumsum([0.0, *fractions]) * rows).astype(np.int64)
    bounds[-1] = rows
    return [np.sort(order[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])]


@dataclass
class RawSplits:
    """What a converter read: per split, a frame of raw column values plus a float32 0/1 `label`
    (eager or lazy), and the rows it kept from each input file (bad rows skipped are counted by `BadRows`;
    for a vector table, its vectors). Without a `valid` frame, the test split serves as valid
    (`ValidationRule`). `notes` go to the feature map's `source`."""

    frames: dict[str, pl.DataFrame | pl.LazyFrame]
    rows_kept: dict[Path, int]
    notes: dict[str, Any] = field(default_factory=dict)


def read_csv_splits(raw_dir: Path, files: dict[str, str], fields: Sequence[str], policy: BadRows) -> RawSplits:
    """Given splits as CSV files (BARS x1 style): header `label,<fields>`, labels 0/1. The fields are
    categorical: an empty one is a missing value (null, encoded as OOV, as FuxiCTR's `fill_na` does), an
    empty label a bad row."""
    frames = {}
    for split, name in files.items():
        frame = read_csv(raw_dir / name, [LABEL, *fields], policy, optional=fields)
        frames[split] = parse_labels(frame, raw_dir / name, policy)
    return RawSplits(frames, {raw_dir / files[split]: len(frame) for split, frame in frames.items()})


def read_libfm_splits(raw_dir: Path, files: dict[str, str], fields: Sequence[str], policy: BadRows,
                      index_ranges: Sequence[tuple[int, int]] | None = None) -> RawSplits:
    """Given splits as libfm files (NFM/AFN style): labels -1/1, one `index:1` token per field."""
    frames = {split: read_libfm(raw_dir / name, fields, ("-1", "1"), policy, index_ranges)
              for split, name in files.items()}
    return RawSplits(frames, {raw_dir / files[split]: len(frame) for split, frame in frames.items()})


def split_positives(positives: pl.DataFrame, source: Path, sampled: str, exclude_by: Sequence[str],
                    rules: CategoricalRules) -> RawSplits:
    """Splits built from a positives-only log (read from `source`).

    Adds `rules.negatives_per_positive` sampled negatives per positive (`sample_negatives`, seeded by
    `rules.seed`), then splits all rows at random by `rules.split` (seeded by `rules.seed + 1`), as
    NFM/AFN built Frappe and MovieLens for BARS.
    """
    per_positive = rules.negatives_per_positive
    with progress(f"sampling {per_positive} negatives for each of {len(positives):,} positives"):
        negatives = sample_negatives(positives, sampled, exclude_by, per_positive, rules.seed)
    rows = pl.concat([positives.with_columns(pl.lit(1.0, pl.Float32).alias(LABEL)),
                      negatives.with_columns(pl.lit(0.0, pl.Float32).alias(LABEL))])
    parts = split_rows(len(rows), rules.split, rules.seed + 1)
    return RawSplits({split: rows[part] for split, part in zip(SPLITS, parts)}, {source: len(positives)})
