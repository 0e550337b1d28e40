"""Behaviour histories: impressions + each user's earlier events -> history list columns.

`with_histories` streams the events through a scratch directory next to the output (`scratch_dir`),
so it scales with the data, not with memory; `history_rows` finds each impression's events by sorting.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ctrbench.data.features import disk_full_error
from preprocess.inputs import progress
from preprocess.rules import Keep


@contextmanager
def scratch_dir(out_dir: Path) -> Iterator[Path]:
    """A temporary directory next to `out_dir` (on the same disk) for intermediate files; removed on exit.
    A full disk while it is in use stops with one line (`disk_full_error`)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.scratch-") as path:
        try:
            yield Path(path)
        except Exception as exc:
            full = disk_full_error(exc, out_dir, Path(path))
            if full is None:
                raise
            raise full from None


def history_rows(event_users: np.ndarray, event_times: np.ndarray, users: np.ndarray, times: np.ndarray,
                 max_len: int, keep: Keep) -> tuple[np.ndarray, np.ndarray]:
    """The events in each impression's history, found by sorting, not by looping over users.

    Returns `(offsets, rows)`: the history of impression i is the event rows
    `rows[offsets[i] : offsets[i + 1]]`, i.e. the events of user `users[i]` strictly before `times[i]`,
    oldest first (ties in input order), at most `max_len` of them: the most recent ones
    (`keep="recent"`) or the oldest ones (`keep="oldest"`).
    """
    n_events = len(event_users)
    all_users = np.concatenate([event_users, users])
    all_times = np.concatenate([event_times, times])
    is_event = np.arange(len(all_users)) < n_events
    # One list by user, then time; at equal times impressions come first, so an event at the impression's
    # own time is not part of its history.
    order = np.lexsort((is_event, all_times, all_users))
    sorted_is_event = is_event[order]
    events_before = np.cumsum(sorted_is_event) - sorted_is_event  # events at earlier positions of the list
    sorted_users = all_users[order]
    new_user = np.concatenate([[True], sorted_users[1:] != sorted_users[:-1]])
    events_before_user = events_before[new_user][np.cumsum(new_user) - 1]  # events of earlier users
    position = np.flatnonzero(~sorted_is_event)
    end = events_before[position]
    length = np.minimum(end - events_before_user[position], max_len)
    start = end - length if keep == "recent" else events_before_user[position]
    impression = order[position] - n_events
    starts, lengths = np.empty(len(users), np.int64), np.empty(len(users), np.int64)
    starts[impression], lengths[impression] = start, length
    offsets, windows = window_rows(starts, lengths)
    return offsets, order[sorted_is_event][windows]  # (events sorted by user, then time)[windows]


def window_rows(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive windows `starts[i] .. starts[i] + lengths[i] - 1`, flattened: `(offsets, rows)` with
    window i at `rows[offsets[i] : offsets[i + 1]]`."""
    offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])


def write_parts(parts: Iterable[pl.DataFrame], directory: Path, row_group_rows: int = 16_384) -> pl.LazyFrame:
    """Write frames one by one to `directory` and scan them: fast lz4 parquet (read back once or twice),
    in small row groups, since a streaming reader decodes a few whole row groups at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for number, part in enumerate(parts):
        files.append(directory / f"part-{number:05d}.parquet")
        part.write_parquet(files[-1], compression="lz4", row_group_size=row_group_rows)
    return pl.scan_parquet(files)


def list_column(values: pl.Series, offsets: np.ndarray, rows: np.ndarray) -> pl.Series:
    """A list column: row i holds `values[rows[offsets[i] : offsets[i + 1]]]`."""
    items = values.gather(rows).to_arrow()
    return pl.Series(values.name, pa.LargeListArray.from_arrays(pa.array(offsets), items))


def with_histories(impressions: pl.DataFrame, events: pl.LazyFrame, histories: dict[str, str], *, user: str,
                   time: str, max_len: int, keep: Keep, scratch: Path,
                   values_per_part: int = 50_000_000) -> pl.LazyFrame:
    """`impressions` plus one list column per `histories` entry (new column -> events column).

    A history holds the values of the same user's `events` strictly before the impression's `time`,
    oldest first, at most `max_len` of them (`history_rows`); so it never sees the impression itself
    or anything after it. `user` and `time` are integer columns of both frames.

    Scales with the data, not with memory: events are streamed once into `scratch`, partitioned by a
    hash of the user (keeping only users with impressions, and events before their last impression);
    then each part's impressions get their histories from that part's events and are written to
    `scratch`, sized so a part holds about `values_per_part` history values. Rows come back grouped by
    part, each part in the impressions' order (one part, the input order, when the data is small).
    The returned lazy frame reads `scratch`, which must outlive it.
    """
    parts = max(1, -(-len(impressions) * max_len * len(histories) // values_per_part))
    part_of = (pl.col(user).hash(seed=0) % parts).alias("part")
    last_impression = impressions.lazy().group_by(user).agg(pl.col(time).max().alias("_last"))
    with progress(f"streaming the events into {parts} part(s) by user"):
        # The streaming join and sink do not keep the input order; `_event` restores it, so that events
        # at equal times stay in input order whatever the number of parts.
        (events.select(user, time, *histories.values())
         .with_row_index("_event")
         .join(last_impression, on=user, how="inner")
         .filter(pl.col(time) < pl.col("_last"))
         .select(part_of, "_event", user, time, *histories.values())
         .sink_parquet(pl.PartitionBy(scratch / "events", key="part", include_key=False), mkdir=True,
                       engine="streaming"))
    impressions = impressions.with_columns(part_of)

    def with_lists(part: int) -> pl.DataFrame:
        chunk = impressions.filter(pl.col("part") == part).drop("part")
        event_files = sorted((scratch / "events" / f"part={part}").glob("*.parquet"))
        chunk_events = pl.read_parquet(event_files).sort("_event") if event_files else pl.DataFrame(
            schema=events.select(user, time, *histories.values()).collect_schema())
        offsets, rows = history_rows(chunk_events[user].to_numpy(), chunk_events[time].to_numpy(),
                                     chunk[user].to_numpy(), chunk[time].to_numpy(), max_len, keep)
        return chunk.with_columns(list_column(chunk_events[column].alias(name), offsets, rows)
                                  for name, column in histories.items())

    with progress(f"building histories of {len(impressions):,} impressions in {parts} part(s)"):
        return write_parts(map(with_lists, range(parts)), scratch / "histories")
