"""Finding and describing a raw release: which release a raw directory holds, its files' checksums, and
the spinner with wall time that long steps show (`progress`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.core.io import sha256_file


def detect_release(raw_dir: Path, releases: dict[str, Sequence[str]], dataset: str, prefer: str | None = None) -> str:
    """Name of the release found in raw_dir: `prefer` if given, else the first whose files are all present.

    `releases` maps a release name (e.g. "bars_x1", "raw") to the file names or glob patterns it needs.
    Prints which release was found; stops with the list of expected files when none matches.
    """
    if not raw_dir.is_dir():
        raise CtrbenchError(f"{raw_dir}: raw directory not found")
    if prefer is not None:
        if prefer not in releases:
            raise unknown_name(f"{dataset} release", prefer, releases)
        missing = [pattern for pattern in releases[prefer] if not any(raw_dir.glob(pattern))]
        if missing:
            raise CtrbenchError(f"{raw_dir / missing[0]}: file not found; the {prefer} release of {dataset} needs "
                                f"{', '.join(releases[prefer])}")
        candidates = [prefer]
    else:
        candidates = list(releases)
    for name in candidates:
        if all(any(raw_dir.glob(pattern)) for pattern in releases[name]):
            console.print(f"{dataset}: found the {name} release in {raw_dir}", highlight=False)
            return name
    expected = "; ".join(f"{name}: {', '.join(patterns)}" for name, patterns in releases.items())
    raise CtrbenchError(f"{raw_dir}: no known {dataset} release here; expected one of these file sets: {expected}")


@dataclass(frozen=True)
class InputRows:
    """Rows of one input file, as the feature map's `source.inputs` records them.

    `rows_read`: every row (data line, or record of a pickle or vector table) the converter read, bad ones
    included, a header not; `rows_kept`: those left after bad rows were skipped (`--skip-bad-rows`). Feature
    maps written before both were recorded hold one `rows`: lines read for Criteo, rows kept elsewhere.
    """

    rows_read: int
    rows_kept: int


def describe_inputs(paths: Sequence[Path], rows: dict[str, InputRows] | None = None) -> dict[str, dict]:
    """Checksums (and row counts where known) of the raw files, recorded in the feature map's `source`."""
    rows = rows or {}
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size,
                     **(dataclasses.asdict(rows[p.name]) if p.name in rows else {})}
            for p in paths}


@contextmanager
def progress(description: str) -> Iterator[None]:
    """A spinner with `description` while the block runs, then one line with its wall time."""
    start = time.perf_counter()
    with console.status(description):
        yield
    console.print(f"{description}: {time.perf_counter() - start:.1f} s", highlight=False)


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise CtrbenchError(f"{path}: file not found")
    return path


def require_text(path: Path) -> Path:
    """A file that exists and is not empty (an empty input is a failed download or copy, never data)."""
    if require_file(path).stat().st_size == 0:
        raise CtrbenchError(f"{path}: empty file; is the download or copy complete?")
    return path
