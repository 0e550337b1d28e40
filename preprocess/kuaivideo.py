"""KuaiVideo (Kuaishou, China MM 2018 challenge; 10,000 users, as ALPINE selected them): micro-video clicks
with positive and negative item histories and visual features, as in BARS KuaiVideo_x1.

Two releases are accepted (`ctrbench preprocess kuaivideo --raw DIR`, `--release` to choose when a
directory holds both):

* bars_x1: BARS KuaiVideo_x1, `train.csv` and `test.csv` with header
  `timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items` (the histories are
  `^`-joined item ids, empty for none) and `item_visual_emb_dim64.h5` (datasets `key`: item ids,
  `value`: 64-d visual vectors). An empty field other than is_click is a missing value: OOV (as
  FuxiCTR's `fill_na` fills it with "", which is never in a vocabulary); an empty is_click is a bad row.
* raw: ALPINE's release that BARS converted, `dataset.pkl` and `visual64_select.npy` (row = item id).
  dataset.pkl holds six pickles in a row: the train and test samples, each
  `[[user_id, item_id, is_click, is_like, is_follow, timestamp], pos_len, neg_len]`; then each user's
  clicked (positive) and skipped (negative) items in time order (a list indexed by user id, or a
  dict); then two edge lists, not used. A sample's pos_items are its user's first pos_len positives
  (those before it), neg_items likewise. Only plain lists, numbers and numpy values are unpickled:
  anything else stops the run, since unpickling can run code. Bad samples are reported as
  `dataset.pkl:N` with N the sample's position (from 1) in its list.

BARS's converter kept each history's OLDEST 100 items, so the x1 histories never exceed 100; the raw
release is truncated here by `keep` (`oldest`, as BARS, or `recent`).

Both releases are encoded with BARS's FuxiCTR feature definitions: user_id and item_id categorical
(min count 10); item_emb a pretrained embedding of the same item ids (frozen visual vectors, then a
learned linear map), whose vocabulary holds every item that has a vector; pos_items / neg_items share
item_id's table and pos_items_emb / neg_items_emb (the same histories) item_emb's, each `max_len`
long (BARS: 100). Each history is stored once, in item_emb's vocabulary (which holds every item_id
value): pos_items reads pos_items_emb's column through an index map (`stored_once` in common.py). is_like, is_follow and timestamp are not features. BARS has no validation split;
`valid` in dataset_configs/kuaivideo.yaml says what to do instead.
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.encoding import Feature
from preprocess.histories import list_column, scratch_dir, window_rows, write_parts
from preprocess.inputs import detect_release, progress
from preprocess.options import PreprocessOptions
from preprocess.readers import LABEL, label_check, scan_csv
from preprocess.rules import SequenceRules, load_rules
from preprocess.splits import RawSplits
from preprocess.vocabularies import PretrainedTable, read_h5_table, read_npy_table
from preprocess.writing import write_dataset

BARS_ROWS = {"train": 10_931_092, "valid": 2_730_291, "test": 2_730_291}  # BARS validates on test
BARS_FILES = {"train": "train.csv", "test": "test.csv"}
BARS_TABLE = "item_visual_emb_dim64.h5"
BARS_COLUMNS = ("timestamp", "user_id", "item_id", "is_click", "is_like", "is_follow", "pos_items", "neg_items")
RAW_PICKLE = "dataset.pkl"
RAW_TABLE = "visual64_select.npy"
RELEASES = {"bars_x1": [*BARS_FILES.values(), BARS_TABLE], "raw": [RAW_PICKLE, RAW_TABLE]}
# Globals a plain pickle of lists and numbers may name: numpy scalars and arrays (module paths of numpy 1 and 2).
NUMPY_GLOBALS = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
                 for name in ("scalar", "_reconstruct")} | {("numpy", "dtype"), ("numpy", "ndarray")}


def features(rules: SequenceRules, tables: tuple[PretrainedTable, ...]) -> list[Feature]:
    sequence = dict(type="sequence", max_len=rules.max_len, keep=rules.keep)
    return [
        Feature("user_id", "categorical", min_count=rules.min_count),
        Feature("item_id", "categorical", min_count=rules.min_count),
        Feature("item_emb", "pretrained_embedding", column="item_id", pretrained=tables),
        Feature("pos_items", share_embedding="item_id", **sequence),
        Feature("neg_items", share_embedding="item_id", **sequence),
        Feature("pos_items_emb", column="pos_items", share_embedding="item_emb", **sequence),
        Feature("neg_items_emb", column="neg_items", share_embedding="item_emb", **sequence),
    ]


def read_bars(raw_dir: Path, rules: SequenceRules, policy: BadRows) -> tuple[RawSplits, tuple[PretrainedTable]]:
    frames, rows = {}, {}
    for split, name in BARS_FILES.items():
        with progress(f"kuaivideo: checking {name}"):
            frame, rows[raw_dir / name] = scan_csv(raw_dir / name, BARS_COLUMNS, policy, [label_check("is_click")],
                                                   optional=[c for c in BARS_COLUMNS if c != "is_click"],
                                                   complete_rows=True)
        frames[split] = frame.with_columns(pl.col("is_click").cast(pl.Float32).alias(LABEL))
    with progress(f"kuaivideo: reading {BARS_TABLE}"):
        table = read_h5_table(raw_dir / BARS_TABLE)
    rows[table.path] = table.keys.len()
    return RawSplits(rules.split(frames["train"], frames["test"]), rows), (table,)


class PlainUnpickler(pickle.Unpickler):
    """Unpickles lists, dicts, numbers and numpy values only; any other object stops the run."""

    def __init__(self, handle, path: Path):
        super().__init__(handle)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in NUMPY_GLOBALS:
            raise CtrbenchError(f"{self.path}: holds a {module}.{name} object, not only lists and numbers; it is "
                                "not ALPINE's dataset.pkl, and unpickling it could run code")
        return super().find_class(module, name)


def load_alpine(path: Path) -> tuple[list, list, Any, Any]:
    """The train samples, test samples, positive and negative item lists of ALPINE's dataset.pkl."""
    try:
        with path.open("rb") as handle:  # one unpickler per pickle: each pickle numbers its shared objects anew
            return tuple(PlainUnpickler(handle, path).load() for _ in range(4))
    except (pickle.UnpicklingError, EOFError) as exc:
        raise CtrbenchError(f"{path}: not ALPINE's dataset.pkl (four pickles: train, test, positive and negative "
                            f"items; {exc})") from None


def flat_sequences(sequences: Any, path: Path, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user item lists (a list indexed by user id, or a dict) as `(start, length)` arrays indexed by
    user id (length -1: no list) and the concatenated items."""
    users = list(sequences) if isinstance(sequences, dict) else range(len(sequences))
    lists = list(sequences.values()) if isinstance(sequences, dict) else list(sequences)
    try:
        users = np.fromiter(users, dtype=np.int64, count=len(lists))
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        items = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(lengths.sum()))
    except (TypeError, ValueError) as exc:
        raise CtrbenchError(f"{path}: the {what} items must map user ids to lists of item ids ({exc})") from None
    starts = np.zeros(int(users.max(initial=-1)) + 1, np.int64)
    length = np.full(len(starts), -1, np.int64)
    starts[users], length[users] = np.cumsum(lengths) - lengths, lengths
    return starts, length, items


def read_alpine(raw_dir: Path, rules: SequenceRules, policy: BadRows,
                scratch: Path) -> tuple[RawSplits, tuple[PretrainedTable]]:
    path = raw_dir / RAW_PICKLE
    with progress(f"kuaivideo: unpickling {path.name}"):
        train, test, positive, negative = load_alpine(path)
        sequences = {"pos_items": flat_sequences(positive, path, "positive"),
                     "neg_items": flat_sequences(negative, path, "negative")}
    table = read_npy_table(raw_dir / RAW_TABLE)
    frames, samples_used = {}, 0
    for split, samples in (("train", train), ("test", test)):
        frames[split], used = read_samples(samples, split, path, sequences, rules, policy, scratch)
        samples_used += used
    inputs = {path: samples_used, table.path: table.keys.len()}
    return RawSplits(rules.split(frames["train"], frames["test"]), inputs), (table,)


def read_samples(samples: list, split: str, path: Path, sequences: dict[str, tuple], rules: SequenceRules,
                 policy: BadRows, scratch: Path) -> tuple[pl.LazyFrame, int]:
    """One list of ALPINE samples with their histories, checked, written to `scratch` in parts; and the
    number of samples used."""
    try:
        table = np.array(samples, dtype=object)
        interaction = np.array(table[:, 0].tolist(), dtype=np.float64)
        lengths = dict(zip(sequences, table[:, 1:].astype(np.int64).T))  # pos_len, neg_len
    except (ValueError, TypeError, IndexError) as exc:
        raise CtrbenchError(f"{path}: the {split} samples must each be [[user_id, item_id, is_click, is_like, "
                            f"is_follow, timestamp], pos_len, neg_len] ({exc})") from None
    if interaction.ndim != 2 or interaction.shape[1] != 6:
        raise CtrbenchError(f"{path}: the first element of each {split} sample must hold 6 numbers")
    user, item, click = interaction[:, 0], interaction[:, 1], interaction[:, 2]
    whole = (user == np.round(user)) & (item == np.round(item))
    checks = [(~whole, f"{split} sample: user_id and item_id must be integers", None),
              (~np.isin(click, (0, 1)), f"{split} sample: is_click must be 0 or 1", None)]
    for (name, (starts, available, _)), what in zip(sequences.items(), ("positive", "negative")):
        known = whole & (user >= 0) & (user < len(starts))
        has = np.where(known, available[np.where(known, user, 0).astype(np.int64)], -1)
        checks.append(((lengths[name] < 0) | (lengths[name] > has), f"{split} sample: its count of earlier "
                       f"{what} items exceeds the user's {what} items", None))
    numbers = np.arange(1, len(samples) + 1)  # the sample's position in its list, reported as its line
    keep = policy.check_rules(path, numbers, checks)
    user, item, click, numbers = user[keep].astype(np.int64), item[keep].astype(np.int64), click[keep], numbers[keep]
    lengths = {name: length[keep] for name, length in lengths.items()}

    def part(rows: slice) -> pl.DataFrame:
        lists = {}
        for name, (starts, _, items) in sequences.items():
            kept = np.minimum(lengths[name][rows], rules.max_len)
            first = starts[user[rows]] + (0 if rules.keep == "oldest" else lengths[name][rows] - kept)
            lists[name] = list_column(pl.Series(name, items), *window_rows(first, kept))
        return pl.DataFrame({"line": numbers[rows], "user_id": user[rows], "item_id": item[rows],
                             LABEL: click[rows].astype(np.float32), **lists})

    part_rows = max(1, 25_000_000 // rules.max_len)  # about 50M history items per part
    with progress(f"kuaivideo: histories of {len(user):,} {split} samples"):
        parts = (part(slice(start, start + part_rows)) for start in range(0, len(user), part_rows))
        return write_parts(parts, scratch / split), len(user)


def preprocess_kuaivideo(raw_dir: Path, out_dir: Path, options: PreprocessOptions) -> FeatureMap:
    rules = load_rules("kuaivideo", SequenceRules)
    release = detect_release(raw_dir, RELEASES, "kuaivideo", options.release)
    policy = BadRows(skip=options.skip_bad_rows)
    with scratch_dir(out_dir) as scratch:
        if release == "bars_x1":
            raw, tables = read_bars(raw_dir, rules, policy)
        else:
            raw, tables = read_alpine(raw_dir, rules, policy, scratch)
        return write_dataset(out_dir, "kuaivideo", release, raw, features(rules, tables), rules, policy,
                             ("BARS KuaiVideo_x1", BARS_ROWS), options.shuffle_seed)
