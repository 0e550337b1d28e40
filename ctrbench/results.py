"""The results store: one JSON object per finished run in a JSON Lines file.

Appends take an exclusive file lock, rewrite the file to a temporary name and rename it over the
old one, so concurrent benchmark processes never interleave or tear records and a crash leaves the
previous complete file. A run is identified by (model, dataset, config hash, seed); `bench` skips
runs whose key is already stored, which makes an interrupted benchmark resume where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from ctrbench.errors import CtrbenchError
from ctrbench.features import atomic_write_text

DEFAULT_RESULTS = Path("results") / "results.jsonl"
KEY_FIELDS = ("model", "dataset", "config_hash", "seed")


def run_key(record: dict[str, Any]) -> tuple:
    return tuple(record[k] for k in KEY_FIELDS)


class ResultsStore:
    def __init__(self, path: str | Path = DEFAULT_RESULTS):
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CtrbenchError(f"{self.path}:{number}: not a JSON record ({exc.msg}); fix or remove that line") from None
            missing = [k for k in KEY_FIELDS if k not in record]
            if missing:
                raise CtrbenchError(f"{self.path}:{number}: record lacks {missing}; fix or remove that line")
            records.append(record)
        return records

    def records(self) -> list[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            return self._read()

    def keys(self) -> set[tuple]:
        return {run_key(r) for r in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            existing = self.path.read_text() if self.path.exists() else ""
            if existing and not existing.endswith("\n"):
                existing += "\n"
            atomic_write_text(self.path, existing + line + "\n")
