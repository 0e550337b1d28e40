"""The command-line options every converter takes (`ctrbench preprocess DATASET ...`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PreprocessOptions:
    skip_bad_rows: bool = False  # count and report malformed rows instead of stopping at the first
    release: str | None = None  # which release to read when the raw directory holds several
    jobs: int = 1  # input files converted at once, where a converter reads several (Criteo's day files)
    # write the train rows in a seeded random order (`ctrbench.data.shuffle`); None: as read. `ctrbench
    # preprocess` takes it from the dataset config's `shuffle_train`.
    shuffle_seed: int | None = None
