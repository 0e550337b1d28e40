"""Bytes per row of processed datasets with histories, in memory and on disk, and what jagged storage would give.

    python -m benchmarks.history_bytes DIR [DIR ...] [--batch-size 4096] [--repeats 30]

For each processed dataset directory: the split files' bytes per row (parquet as written, index maps and
pretrained tables apart), the tensor bytes per row of the loaded train split (summed over its tensors, the
figure `ctrbench.data.sources.row_bytes` predicts), and for each stored history column: the mean number of items
per row, the fraction of its padded [rows, max_len] cells that are padding, and the bytes per row jagged
storage would take (int32 values plus one int64 offset per row), in memory and as a zstd parquet column. Then the cost at batch time, on the train
rows, same batches in the same run (the fastest of `--repeats` shuffled batches of `--batch-size` rows: on a
busy machine the slower ones measure the other processes): a
padded batch is one gather of [B, max_len]; a jagged one gathers each row's values by its offsets (what
an EmbeddingBag or a KeyedJaggedTensor consumes), and padding it back to [B, max_len] (what the masked
mean of `ctrbench.nn.embedding` consumes) adds a scatter. A check: the padded matrix rebuilt from the jagged
rows of a batch equals the padded gather.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from ctrbench.data.sources import row_bytes


def jagged(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A front-padded [rows, max_len] history matrix as (values, offsets [rows + 1], int64)."""
    present = matrix != 0
    lengths = present.sum(dim=1)
    return matrix[present], torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])


def jagged_rows(values: torch.Tensor, offsets: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The values of rows `index`, concatenated, and their lengths."""
    starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
    first = torch.cumsum(lengths, 0) - lengths  # where each row starts in the output
    positions = torch.repeat_interleave(starts - first, lengths) + torch.arange(int(lengths.sum()))
    return values.index_select(0, positions), lengths


def padded(items: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """Jagged rows front-padded with 0 to [rows, max_len], as the stored histories are: one scatter of the
    items to row i's last lengths[i] cells."""
    first = torch.cumsum(lengths, 0) - lengths
    row_end = (torch.arange(len(lengths)) + 1) * max_len - lengths  # row i's first filled cell
    cells = torch.repeat_interleave(row_end - first, lengths) + torch.arange(len(items))
    out = torch.zeros(len(lengths) * max_len, dtype=items.dtype)
    out.index_copy_(0, cells, items)
    return out.view(len(lengths), max_len)


def parquet_bytes(values: torch.Tensor, offsets: torch.Tensor) -> int:
    """Bytes of one list<int32> column written as the converters write splits (zstd, one row group)."""
    column = pa.ListArray.from_arrays(pa.array(offsets.numpy().astype(np.int32)), pa.array(values.numpy()))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"items": column}), sink, compression="zstd", row_group_size=len(offsets))
    return sink.getvalue().size


def fastest_seconds(work, batches: list[torch.Tensor]) -> float:
    times = []
    for index in batches:
        start = time.perf_counter()
        work(index)
        times.append(time.perf_counter() - start)
    return min(times)


def report(directory: Path, batch_size: int, repeats: int) -> None:
    fmap = FeatureMap.load(directory)
    print(f"{directory}: {', '.join(f.name + (f' (reads {f.column})' if f.column else '') for f in fmap.features)}")
    for split, info in fmap.splits.items():
        size = sum((fmap.root / relative).stat().st_size for relative in info.files)
        print(f"  {split}: {info.rows:,} rows, parquet {size / info.rows:.1f} B/row")
    train = load_split(fmap, "train")
    tensors = [train.categorical, train.pretrained, train.numeric, train.label, *train.sequences.values()]
    measured = sum(t.nbytes for t in tensors) / len(train)
    print(f"  in memory: {measured:.1f} B/row (row_bytes: {row_bytes(fmap)}), "
          f"{len(train.sequences)} history column(s) held")
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(train), generator=generator)[:batch_size] for _ in range(repeats)]
    for name, matrix in train.sequences.items():
        max_len = matrix.shape[1]
        values, offsets = jagged(matrix)
        mean = len(values) / len(matrix)
        print(f"  {name}: mean {mean:.1f} of {max_len} items, padding {1 - mean / max_len:.1%} of the cells; "
              f"in memory padded {4 * max_len} B/row, jagged {4 * mean + 8:.1f} B/row; as a zstd parquet column "
              f"padded {parquet_bytes(matrix.view(-1), torch.arange(len(matrix) + 1) * max_len) / len(matrix):.1f} "
              f"B/row, jagged {parquet_bytes(values, offsets) / len(matrix):.1f} B/row")
        rebuilt = padded(*jagged_rows(values, offsets, batches[0]), max_len)
        assert torch.equal(rebuilt, matrix.index_select(0, batches[0])), "jagged rows do not rebuild the matrix"
        gather = fastest_seconds(lambda index: matrix.index_select(0, index), batches)
        rows = fastest_seconds(lambda index: jagged_rows(values, offsets, index), batches)
        back = fastest_seconds(lambda index: padded(*jagged_rows(values, offsets, index), max_len), batches)
        print(f"    batch of {batch_size}: padded gather {gather * 1e3:.3f} ms; jagged gather {rows * 1e3:.3f} ms "
              f"({rows / gather:.2f}x), jagged gather + padding {back * 1e3:.3f} ms ({back / gather:.2f}x)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for directory in args.directories:
        report(directory, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
