"""The processed-dataset contract: parquet splits plus `feature_map.json`.

A processed dataset is a directory:

    feature_map.json        FeatureMap below (features, label, splits, row counts, content hash)
    train/part-*.parquet    one or more files per split
    valid/... test/...
    pretrained/NAME.npy     frozen embedding tables for `pretrained_embedding` features (row = index)
    index_maps/NAME.npy     index maps of sequences that read another sequence's column (below)

Parquet columns, one per feature plus the label:
    categorical, pretrained_embedding  int32 index; 0 = padding, 1 = out-of-vocabulary, 2.. = vocabulary
    numeric                            float32, already transformed (the feature records how)
    sequence                           list<int32> of exactly `max_len` indices, padded with 0
    label                              float32 in {0, 1}
A sequence with `column` has no column of its own: it reads the column of the sequence it names (the
same raw history in another vocabulary, e.g. KuaiVideo's pos_items reads pos_items_emb's), through
its `index_map` (index_maps/NAME.npy, int32: index in the column's vocabulary -> index in its own).

Writers build datasets through `DatasetWriter`, which writes into a temporary directory and renames it
into place only once everything (feature map last) is written, so an interrupted run never leaves a
directory that looks complete.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ctrbench.core.config import build_dataclass, check_kwargs
from ctrbench.core.console import console
from ctrbench.core.errors import CtrbenchError, unknown_name
from ctrbench.core.io import atomic_write_text, sha256_file
from ctrbench.data.shuffle import shuffle_parquet_rows

FEATURE_MAP_FILE = "feature_map.json"
SPLITS = ("train", "valid", "test")
PADDING_INDEX = 0
OOV_INDEX = 1
FeatureType = Literal["categorical", "numeric", "sequence", "pretrained_embedding"]
INDEXED_TYPES = ("categorical", "sequence", "pretrained_embedding")


@dataclass
class FeatureSpec:
    """One input feature.

    `vocab_size` counts the padding and OOV rows, so valid indices are 0 .. vocab_size - 1.
    A sequence with `share_embedding` looks its items up in that feature's table (and then has the
    same vocabulary). A `pretrained_embedding` feature reads a frozen table from `embedding_source`
    (a .npy file relative to the dataset directory, `vocab_size` x `pretrained_dim`).
    A sequence with `column` is stored once, in the parquet column of the sequence feature it names
    (the same items of the same raw column, in that feature's vocabulary); `index_map` (a .npy file
    relative to the dataset directory, int32 [that feature's vocab_size]) maps those indices to this
    feature's, or is None where the two vocabularies are the same.
    """

    name: str
    type: FeatureType
    vocab_size: int | None = None
    padding_idx: int | None = None
    oov_idx: int | None = None
    max_len: int | None = None
    share_embedding: str | None = None
    embedding_source: str | None = None
    pretrained_dim: int | None = None
    transform: str | None = None
    min_count: int | None = None
    column: str | None = None
    index_map: str | None = None

    def __post_init__(self) -> None:
        where = f"feature {self.name!r}"
        if self.type in INDEXED_TYPES and (self.vocab_size is None or self.vocab_size < 2):
            raise CtrbenchError(f"{where}: a {self.type} feature needs vocab_size >= 2 (padding + OOV)")
        if self.type == "sequence" and (self.max_len is None or self.max_len < 1):
            raise CtrbenchError(f"{where}: a sequence feature needs max_len >= 1")
        if self.type == "pretrained_embedding" and (not self.embedding_source or not self.pretrained_dim):
            raise CtrbenchError(f"{where}: a pretrained_embedding feature needs embedding_source and pretrained_dim")
        if self.index_map is not None and self.column is None:
            raise CtrbenchError(f"{where}: index_map maps the indices of another feature's column; name it in `column`")

    @property
    def stored_as(self) -> str:
        """The parquet column (and `Batch` entry) holding this feature's values."""
        return self.column or self.name


@dataclass
class SplitInfo:
    """Files of one split (relative to the dataset directory) and their total row count."""

    rows: int
    files: list[str]


@dataclass
class FeatureMap:
    """Everything a model and a loader need to know about a processed dataset."""

    dataset: str
    label: str
    features: list[FeatureSpec]
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    content_hash: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    root: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise CtrbenchError(f"feature map {self.dataset!r}: duplicate feature names {duplicates}")
        if self.label in names:
            raise CtrbenchError(f"feature map {self.dataset!r}: label {self.label!r} is also a feature")
        for spec in self.features:
            if spec.share_embedding is not None:
                target = self.feature(spec.share_embedding)
                if target.type not in ("categorical", "pretrained_embedding"):
                    raise CtrbenchError(
                        f"feature {spec.name!r}: share_embedding must name a categorical or "
                        f"pretrained_embedding feature, {target.name!r} is {target.type}"
                    )
            if spec.column is not None:
                _check_shared_column(spec, self.feature(spec.column))

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise unknown_name(f"feature of dataset {self.dataset!r}", name, [f.name for f in self.features])

    def of_type(self, *types: str) -> list[FeatureSpec]:
        return [f for f in self.features if f.type in types]

    def stored(self, *types: str) -> list[FeatureSpec]:
        """The features of these types (all, if none named) that have a parquet column of their own."""
        return [f for f in self.features if f.column is None and (not types or f.type in types)]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("root")
        data["features"] = [{k: v for k, v in f.items() if v is not None} for f in data["features"]]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> FeatureMap:
        if not isinstance(data, dict):
            raise CtrbenchError(f"{where}: expected a JSON object")
        data = dict(data)
        features = data.pop("features", None)
        splits = data.pop("splits", {})
        if not isinstance(features, list) or not features:
            raise CtrbenchError(f"{where}: 'features' must be a non-empty list")
        if not isinstance(splits, dict):
            raise CtrbenchError(f"{where}: 'splits' must be an object of split name -> {{rows, files}}")
        for required in ("dataset", "label"):
            if required not in data:
                raise CtrbenchError(f"{where}: missing key {required!r}")
        hints = {k: v for k, v in typing.get_type_hints(cls).items() if k not in ("features", "splits", "root")}
        top = check_kwargs(data, hints, where)
        specs = [build_dataclass(FeatureSpec, f, f"{where}: features[{i}]") for i, f in enumerate(features)]
        split_infos = {k: build_dataclass(SplitInfo, v, f"{where}: splits.{k}") for k, v in splits.items()}
        return cls(**top, features=specs, splits=split_infos)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FEATURE_MAP_FILE
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> FeatureMap:
        path = Path(directory) / FEATURE_MAP_FILE
        if not path.is_file():
            raise CtrbenchError(
                f"{path}: no feature map; this is not a processed dataset (run `ctrbench preprocess` first)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CtrbenchError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        fmap = cls.from_json(data, str(path))
        fmap.root = Path(directory)
        return fmap

    def split_paths(self, split: str) -> list[Path]:
        if split not in self.splits:
            raise CtrbenchError(f"dataset {self.dataset!r} has no {split!r} split; it has {sorted(self.splits)}")
        assert self.root is not None, "split_paths needs a feature map loaded from disk"
        return [self.root / f for f in self.splits[split].files]


# FeatureSpec fields added after datasets were first built: they enter a dataset's content hash only when
# set, so a dataset that does not use them keeps the hash it had (and the runs stored on it their keys).
LATER_FIELDS = ("column", "index_map")


def _hashed_fields(spec: FeatureSpec) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(spec).items() if k not in LATER_FIELDS or v is not None}


def _check_shared_column(spec: FeatureSpec, target: FeatureSpec) -> None:
    where = f"feature {spec.name!r}: column {spec.column!r}"
    if spec.type != "sequence" or target.type != "sequence" or target.column is not None:
        raise CtrbenchError(f"{where}: only a sequence may read another sequence's column, one stored under its own name")
    if spec.max_len != target.max_len:
        raise CtrbenchError(f"{where}: max_len {spec.max_len} differs from that column's {target.max_len}")
    if spec.index_map is None and spec.vocab_size != target.vocab_size:
        raise CtrbenchError(f"{where}: without an index_map the two vocabularies must be the same, but their sizes "
                            f"are {spec.vocab_size} and {target.vocab_size}")


def parquet_schema(fmap_label: str, features: list[FeatureSpec]) -> pa.Schema:
    """The arrow schema a split file must have for these features."""
    columns = []
    for spec in (f for f in features if f.column is None):  # a feature reading another's column has none
        if spec.type == "numeric":
            columns.append(pa.field(spec.name, pa.float32()))
        elif spec.type == "sequence":
            columns.append(pa.field(spec.name, pa.list_(pa.int32())))
        else:
            columns.append(pa.field(spec.name, pa.int32()))
    columns.append(pa.field(fmap_label, pa.float32()))
    return pa.schema(columns)


def to_parquet_frame(frame: pl.DataFrame, label: str, features: list[FeatureSpec]) -> pa.Table:
    """Cast a polars frame holding the feature and label columns to the contract's arrow schema."""
    schema = parquet_schema(label, features)
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise CtrbenchError(f"cannot write split: columns {missing} are missing from the frame")
    table = frame.select(schema.names).to_arrow()
    return table.cast(schema)


def remove_stale_temporaries(out_dir: Path) -> None:
    """Remove the temporary folders earlier runs for `out_dir` left behind when killed (SIGKILL, out of
    memory): those whose owner process is no longer running. Gigabytes each at full size."""
    for folder in out_dir.parent.glob(f".{out_dir.name}.tmp-*-*"):
        owner = folder.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if not owner.isdigit() or _running(int(owner)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        console.print(f"removed {folder}, left behind by a preprocess run (pid {owner}) that is no longer running",
                      highlight=False)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def disk_full_error(exc: BaseException | None, out_dir: Path, partial: Path) -> CtrbenchError | None:
    """One line for an error of a full disk while writing `out_dir` (None for any other error): how far the
    partial output in the temporary folder `partial` got and the space free there; call before removing it.

    A full disk reaches Python as OSError ENOSPC (Python's own writes, pyarrow's) or as a polars error that
    quotes the OS error (`... (os error 28)`)."""
    if not ((isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or f"(os error {errno.ENOSPC})" in str(exc)):
        return None
    written = sum(path.stat().st_size for path in partial.rglob("*") if path.is_file())
    free = shutil.disk_usage(partial).free
    return CtrbenchError(f"{out_dir}: no space left on the disk after writing {written / 2**20:,.1f} MiB of output "
                         f"({free / 2**20:,.1f} MiB free there); free some space or choose another --out")


class DatasetWriter:
    """Builds a processed dataset in a temporary directory and renames it into place on `commit`.

    Use as a context manager: leaving the block with an exception removes the temporary directory,
    and the previous dataset at `out_dir` (if any) stays untouched; a full disk stops with one line
    (`disk_full_error`). With `shuffle_seed`, `commit` first rewrites each train file in a seeded random
    order (`ctrbench.data.shuffle`; file i with seed `shuffle_seed + i`) and records the seed in the
    feature map's `source` (`train_shuffle_seed`).
    """

    def __init__(self, out_dir: str | Path, row_group_rows: int = 1 << 17, shuffle_seed: int | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)
        # the owner's pid in the name tells a later run whether this folder is still being written
        self.tmp_dir = self.out_dir.with_name(f".{self.out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.tmp_dir.mkdir()
        self.row_group_rows = row_group_rows
        self.shuffle_seed = shuffle_seed
        self.files: dict[str, list[str]] = {}
        self.rows: dict[str, int] = {}

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        full = disk_full_error(exc, self.out_dir, self.tmp_dir)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        if full is not None:
            raise full from None

    def path(self, relative: str) -> Path:
        """Absolute path inside the temporary directory, for writers that stream files themselves."""
        full = self.tmp_dir / relative
        full.parent.mkdir(parents=True, exist_ok=True)
        return full

    def add_file(self, split: str, relative: str, rows: int) -> None:
        """Register a split file already written under `path(relative)`."""
        self.files.setdefault(split, []).append(relative)
        self.rows[split] = self.rows.get(split, 0) + rows

    def write_split(self, split: str, table: pa.Table, part: int = 0) -> None:
        relative = f"{split}/part-{part:05d}.parquet"
        pq.write_table(table, self.path(relative), row_group_size=self.row_group_rows, compression="zstd")
        self.add_file(split, relative, table.num_rows)

    def write_array(self, relative: str, array: np.ndarray) -> None:
        np.save(self.path(relative), array)

    def commit(self, fmap: FeatureMap) -> FeatureMap:
        """Fill in splits and content hash, write the feature map, and move the dataset into place.

        Stops with one line when every split would be empty, saying whether all rows were skipped as
        bad. (One empty split can be legitimate: a Criteo Terabyte day 23 of one line has an empty
        first half, the valid split.)"""
        if self.files and all(self.rows[split] == 0 for split in self.files):
            skipped = sum((fmap.source.get("skipped_rows") or {}).values())
            why = (f"every row was skipped as bad ({skipped:,} rows; the counts per problem are above); fix the raw "
                   "files" if skipped else "the raw files hold no rows; check that they are complete")
            raise CtrbenchError(f"{self.out_dir}: every split would be empty: {why}; nothing was written")
        fmap.splits = {s: SplitInfo(rows=self.rows[s], files=self.files[s]) for s in self.files}
        if self.shuffle_seed is not None:
            for i, relative in enumerate(self.files.get("train", [])):
                shuffle_parquet_rows(self.tmp_dir / relative, self.shuffle_seed + i, self.row_group_rows)
            fmap.source = {**(fmap.source or {}), "train_shuffle_seed": self.shuffle_seed}
        digest = hashlib.sha256(json.dumps([_hashed_fields(f) for f in fmap.features]).encode())
        for relative in sorted(p.relative_to(self.tmp_dir).as_posix() for p in self.tmp_dir.rglob("*") if p.is_file()):
            digest.update(relative.encode() + sha256_file(self.tmp_dir / relative).encode())
        fmap.content_hash = digest.hexdigest()
        fmap.save(self.tmp_dir)
        if self.out_dir.exists():
            # A directory cannot be renamed over a non-empty one, so the old one moves aside first; Ctrl-C
            # or SIGTERM between the two renames would leave no dataset, so they wait until both are done.
            trash = self.out_dir.with_name(f".{self.out_dir.name}.old-{uuid.uuid4().hex[:8]}")
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                os.replace(self.out_dir, trash)
                os.replace(self.tmp_dir, self.out_dir)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.tmp_dir, self.out_dir)
        fmap.root = self.out_dir
        return fmap
