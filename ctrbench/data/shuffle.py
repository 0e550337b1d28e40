"""A seeded shuffle of a parquet file's rows, in memory bounded by one bucket, for train splits that are streamed.

A streamed train split is read a window of row groups at a time (`ctrbench.data.sources.ParquetStream`),
so rows mix only within a window: a file written in the raw order (Criteo's days, a log sorted by user
or time) would give batches of neighbouring rows. Preprocessing therefore rewrites each train file in a
seeded random order (`DatasetWriter(shuffle_seed=...)`), and then every row group is a random sample of
the file.

`shuffle_parquet_rows` is the two-pass external shuffle: pass 1 reads the file row group by row group and
sends each row to one of K buckets drawn uniformly at random (K = rows / `bucket_rows`, rounded up), each
bucket a temporary Arrow IPC stream (lz4; unlike a parquet writer, it holds no page buffers, so K open
buckets cost next to no memory); pass 2 reads the buckets one by one, permutes each one's rows and
appends them to the output. Every permutation of the rows is equally likely, and memory holds one bucket
plus rows waiting to be appended to a bucket (`PENDING_ROWS` per bucket), whatever the file's size. Each
file of a split is shuffled on its own; the reader's random order of row groups mixes the files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PENDING_ROWS = 8192  # rows gathered per bucket before they are appended to its file


def shuffle_parquet_rows(path: Path, seed: int, row_group_rows: int, bucket_rows: int = 1 << 20) -> None:
    """Rewrite the parquet file at `path` with its rows in a seeded random order, in row groups of
    `row_group_rows` (zstd), holding about `bucket_rows` rows in memory at a time."""
    source = pq.ParquetFile(path, pre_buffer=False)  # pre-buffering keeps every range it read until the file closes
    rows = source.metadata.num_rows
    buckets = max(1, -(-rows // bucket_rows))
    rng = np.random.default_rng(seed)
    scratch = path.with_name(f".{path.name}.shuffle")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    output = path.with_name(f".{path.name}.shuffled")
    try:
        schema = source.schema_arrow
        options = pa.ipc.IpcWriteOptions(compression="lz4")  # an Arrow IPC stream buffers no pages, unlike parquet
        writers = [pa.ipc.new_stream(scratch / f"{k:05d}.arrows", schema, options=options) for k in range(buckets)]
        pending: list[list[pa.Table]] = [[] for _ in range(buckets)]
        waiting = np.zeros(buckets, dtype=np.int64)

        def flush(k: int) -> None:
            writers[k].write_table(pa.concat_tables(pending[k]))
            pending[k], waiting[k] = [], 0

        for batch in source.iter_batches(batch_size=row_group_rows):
            bucket = rng.integers(0, buckets, batch.num_rows)
            order = np.argsort(bucket, kind="stable")
            counts = np.bincount(bucket, minlength=buckets)
            ends = np.cumsum(counts)
            grouped = pa.Table.from_batches([batch]).take(pa.array(order))
            for k in np.flatnonzero(counts):
                start = ends[k - 1] if k else 0
                pending[k].append(grouped.slice(start, ends[k] - start))
                waiting[k] += ends[k] - start
                if waiting[k] >= PENDING_ROWS:
                    flush(k)
        for k in range(buckets):
            if pending[k]:
                flush(k)
            writers[k].close()
        with pq.ParquetWriter(output, schema, compression="zstd") as writer:
            for k in range(buckets):
                with pa.ipc.open_stream(scratch / f"{k:05d}.arrows") as bucket_file:
                    table = bucket_file.read_all()
                writer.write_table(table.take(pa.array(rng.permutation(table.num_rows))), row_group_size=row_group_rows)
        os.replace(output, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        output.unlink(missing_ok=True)
