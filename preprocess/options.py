"""The command-line options every converter takes (`ctrbench preprocess DATASET ...`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PreprocessOptions:
    skip_bad_rows: bool = False  # count and report malformed rows instead of stopping at the first
    release: str | None = None  # which release to read when the raw directory holds several
    jobs: int = 1  # input files converted at once, where a converter reads several (Criteo's day files)
