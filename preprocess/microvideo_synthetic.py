"""A seeded stand-in for BARS MicroVideo1.7M_x1, at the real sizes or small, for tests and benchmarks.

    python -m preprocess.microvideo_synthetic DIR --preset full|small [--seed S]
        [--train-rows N] [--test-rows N] [--users N] [--items N]

writes train.csv, test.csv (header `user_id,item_id,cate_id,is_click,timestamp,clicked_items,
clicked_categories`, histories `^`-joined, empty for none) and item_image_emb_dim64.h5 (`key`: item ids
0..items-1, `value`: 64-d float32 vectors) as `ctrbench preprocess microvideo` reads them. The full preset
has BARS's row counts (8,970,309 train / 3,767,308 test) and the sizes of MicroVideo1.7M: 10,986 users,
1.7M items in 512 categories. As in that release, the test rows show other items than the train rows
(THACIL numbers them apart): the items are divided between the splits in proportion to their rows, and
histories hold train items only. Each item has one category, and a history's categories are its items'.
Users and items follow the skewed popularity of `preprocess.history_synthetic`, histories are up to 100
clicks long; clicks (1 in 4) are drawn independently of everything else: the files exist to measure and
test the converter, not to train on. Written CHUNK_ROWS rows at a time, so memory stays flat at any size.
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
from preprocess.microvideo import BARS_COLUMNS, BARS_FILES, BARS_ROWS, BARS_TABLE

PRESETS = {
    "full": Sizes(train_rows=BARS_ROWS["train"], test_rows=BARS_ROWS["test"], users=10_986, items=1_700_000),
    "small": Sizes(train_rows=20_000, test_rows=8_000, users=200, items=20_000),
}
CATEGORIES = 512
DIM = 64
FIRST_TIMESTAMP = 1_500_000_000


def write_release(directory: Path, sizes: Sizes, seed: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = part_rng(seed, 0)
    train_items = max(1, min(sizes.items - 1, round(sizes.items * sizes.train_rows / (sizes.train_rows + sizes.test_rows))))
    pools = {"train": rng.permutation(train_items), "test": train_items + rng.permutation(sizes.items - train_items)}
    category = zipf_ranks(rng, CATEGORIES, sizes.items)  # of each item id
    user_of_rank = rng.permutation(sizes.users)

    for index, (split, rows) in enumerate((("train", sizes.train_rows), ("test", sizes.test_rows)), start=1):
        def chunk(start: int, n: int, index: int = index, pool: np.ndarray = pools[split]) -> pl.DataFrame:
            rng = part_rng(seed, index, start)
            item = pool[zipf_ranks(rng, len(pool), n)]
            lengths = history_lengths(rng, n, sizes.max_len)
            clicked = pools["train"][zipf_ranks(rng, len(pools["train"]), int(lengths.sum()))]
            return pl.DataFrame({
                "user_id": user_of_rank[zipf_ranks(rng, sizes.users, n)], "item_id": item, "cate_id": category[item],
                "is_click": (rng.random(n) < 0.25).astype(np.int8), "timestamp": FIRST_TIMESTAMP + start + np.arange(n),
                "clicked_items": joined(clicked, lengths), "clicked_categories": joined(category[clicked], lengths),
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
