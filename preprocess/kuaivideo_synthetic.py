"""A seeded stand-in for BARS KuaiVideo_x1, at the real sizes or small, for tests and benchmarks.

    python -m preprocess.kuaivideo_synthetic DIR --preset full|small [--seed S]
        [--train-rows N] [--test-rows N] [--users N] [--items N]

writes train.csv, test.csv (header `timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,
neg_items`, histories `^`-joined, empty for none) and item_visual_emb_dim64.h5 (`key`: item ids
0..items-1, `value`: 64-d float32 vectors) as `ctrbench preprocess kuaivideo` reads them. The full preset
has BARS's row counts (10,931,092 train / 2,730,291 test) and the sizes of the data ALPINE selected:
10,000 users and 3.2M items with vectors. Users, items and history items follow the skewed popularity of
`preprocess.history_synthetic`, histories are up to 100 items long. Clicks (1 in 4), likes and follows
(1 in 50) are drawn at fixed rates, independent of everything else: the files exist to measure and test
the converter, not to train on. Written CHUNK_ROWS rows at a time, so memory stays flat at any size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from preprocess.history_synthetic import (
    Sizes,
    history_lengths,
    joined,
    parse_args,
    part_rng,
    write_csv,
    write_h5_table,
    zipf_ranks,
)
from preprocess.kuaivideo import BARS_COLUMNS, BARS_FILES, BARS_ROWS, BARS_TABLE

PRESETS = {
    "full": Sizes(train_rows=BARS_ROWS["train"], test_rows=BARS_ROWS["test"], users=10_000, items=3_200_000),
    "small": Sizes(train_rows=20_000, test_rows=5_000, users=200, items=20_000),
}
DIM = 64
FIRST_TIMESTAMP = 1_500_000_000


def write_release(directory: Path, sizes: Sizes, seed: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = part_rng(seed, 0)
    user_of_rank, item_of_rank = rng.permutation(sizes.users), rng.permutation(sizes.items)

    def items(rng: np.random.Generator, size: int) -> np.ndarray:
        return item_of_rank[zipf_ranks(rng, sizes.items, size)]

    for index, (split, rows) in enumerate((("train", sizes.train_rows), ("test", sizes.test_rows)), start=1):
        def chunk(start: int, n: int, index: int = index) -> pl.DataFrame:
            rng = part_rng(seed, index, start)
            histories = {}
            for name in ("pos_items", "neg_items"):
                lengths = history_lengths(rng, n, sizes.max_len)
                histories[name] = joined(items(rng, int(lengths.sum())), lengths)
            return pl.DataFrame({
                "timestamp": FIRST_TIMESTAMP + start + np.arange(n), "user_id": user_of_rank[zipf_ranks(rng, sizes.users, n)],
                "item_id": items(rng, n), "is_click": (rng.random(n) < 0.25).astype(np.int8),
                "is_like": (rng.random(n) < 0.02).astype(np.int8), "is_follow": (rng.random(n) < 0.02).astype(np.int8),
                **histories,
            }).select(BARS_COLUMNS)

        write_csv(directory / BARS_FILES[split], rows, chunk)
    vectors = part_rng(seed, 3)
    write_h5_table(directory / BARS_TABLE, np.arange(sizes.items),
                   lambda n: vectors.standard_normal((n, DIM), dtype=np.float32), DIM)


def main(argv: list[str] | None = None) -> None:
    directory, sizes, seed = parse_args(__doc__.splitlines()[0], PRESETS, argv)
    write_release(directory, sizes, seed)


if __name__ == "__main__":
    main()
