"""Shared fixtures: a tiny dataset with every feature type, and a small synthetic dataset."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from ctrbench.data.batches import Batch, load_split
from ctrbench.data.features import DatasetWriter, FeatureMap, FeatureSpec, to_parquet_frame
from ctrbench.data.synthetic import write_synthetic


def write_tiny_dataset(directory, rows: int = 64, seed: int = 0) -> FeatureMap:
    """Every feature type: 2 numeric, 2 categorical, 1 pretrained, 2 sequences (one shared, one pretrained)."""
    rng = np.random.default_rng(seed)
    specs = [
        FeatureSpec(name="price", type="numeric", transform="none"),
        FeatureSpec(name="age", type="numeric", transform="none"),
        FeatureSpec(name="user", type="categorical", vocab_size=7, padding_idx=0, oov_idx=1),
        FeatureSpec(name="item", type="categorical", vocab_size=12, padding_idx=0, oov_idx=1),
        FeatureSpec(name="video", type="pretrained_embedding", vocab_size=9, padding_idx=0, oov_idx=1,
                    embedding_source="pretrained/video.npy", pretrained_dim=3),
        FeatureSpec(name="clicked_items", type="sequence", vocab_size=12, padding_idx=0, oov_idx=1, max_len=4,
                    share_embedding="item"),
        FeatureSpec(name="watched_videos", type="sequence", vocab_size=9, padding_idx=0, oov_idx=1, max_len=3,
                    share_embedding="video"),
    ]
    sequence = lambda vocab, length: [list(rng.integers(0, vocab, size=length)) for _ in range(rows)]  # noqa: E731
    frame = pl.DataFrame({
        "price": rng.normal(size=rows), "age": rng.normal(size=rows),
        "user": rng.integers(1, 7, size=rows), "item": rng.integers(1, 12, size=rows),
        "video": rng.integers(1, 9, size=rows),
        "clicked_items": sequence(12, 4), "watched_videos": sequence(9, 3),
        "label": (np.arange(rows) % 2).astype(np.float32),
    })
    fmap = FeatureMap(dataset="tiny", label="label", features=specs)
    with DatasetWriter(directory) as writer:
        writer.write_array("pretrained/video.npy", rng.normal(size=(9, 3)).astype(np.float32))
        table = to_parquet_frame(frame, "label", specs)
        for split in ("train", "valid", "test"):
            writer.write_split(split, table)
        return writer.commit(fmap)


def make_categorical_dataset(vocab_sizes: list[int], rows: int = 8, seed: int = 0) -> tuple[FeatureMap, Batch]:
    """An in-memory feature map of categorical fields only, and a batch of random indices for it."""
    fmap = FeatureMap(dataset="categorical", label="label", features=[
        FeatureSpec(name=f"c{j}", type="categorical", vocab_size=v, padding_idx=0, oov_idx=1)
        for j, v in enumerate(vocab_sizes)])
    generator = torch.Generator().manual_seed(seed)
    columns = [torch.randint(0, v, (rows,), generator=generator, dtype=torch.int32) for v in vocab_sizes]
    batch = Batch(categorical=torch.stack(columns, dim=1), pretrained=torch.zeros(rows, 0, dtype=torch.int32),
                  numeric=torch.zeros(rows, 0), sequences={}, label=(torch.arange(rows) % 2).float())
    return fmap, batch


@pytest.fixture
def categorical_dataset():
    """`make_categorical_dataset`, for tests that need exact field counts (FLOP and parameter formulas)."""
    return make_categorical_dataset


@pytest.fixture
def tiny_fmap(tmp_path) -> FeatureMap:
    return write_tiny_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny_batch(tiny_fmap):
    return load_split(tiny_fmap, "train")


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A data directory holding a 50k-row synthetic dataset (as `ctrbench` would find it)."""
    data_dir = tmp_path_factory.mktemp("data")
    write_synthetic(data_dir / "synthetic", rows=50_000, seed=2024)
    return data_dir


@pytest.fixture(scope="session")
def synthetic_fmap(synthetic_data_dir) -> FeatureMap:
    return FeatureMap.load(synthetic_data_dir / "synthetic")


@pytest.fixture
def categorical_only():
    """Builds an in-memory feature map of categorical features only (name -> vocab size, e.g. a BARS
    dataset's vocabulary) and a random batch of it: exact parameter and FLOP counts need no files."""

    def build(vocab_sizes: dict[str, int], rows: int = 32, seed: int = 0) -> tuple[FeatureMap, Batch]:
        specs = [FeatureSpec(name=name, type="categorical", vocab_size=size, padding_idx=0, oov_idx=1)
                 for name, size in vocab_sizes.items()]
        generator = torch.Generator().manual_seed(seed)
        categorical = torch.stack([torch.randint(1, size, (rows,), generator=generator, dtype=torch.int32)
                                   for size in vocab_sizes.values()], dim=1)
        batch = Batch(categorical=categorical, pretrained=torch.zeros(rows, 0, dtype=torch.int32),
                      numeric=torch.zeros(rows, 0), sequences={}, label=(torch.arange(rows) % 2).float())
        return FeatureMap(dataset="categorical", label="label", features=specs), batch

    return build


@pytest.fixture
def bars_frappe_vocab() -> dict[str, int]:
    """Frappe_x1 vocabulary sizes as BARS's FuxiCTR 2.x logs print them (FinalMLP_frappe_x1); FuxiCTR
    1.x builds (the xDeepFM and MaskNet BARS runs) had one row fewer per feature (no padding row)."""
    return {"user": 956, "item": 4084, "daytime": 9, "weekday": 9, "isweekend": 4, "homework": 5, "cost": 4,
            "weather": 11, "country": 82, "city": 235}


@pytest.fixture
def preprocess_rules(monkeypatch):
    """`override(dataset, **keys)`: the converters read dataset_configs/<dataset>.yaml's `preprocess` section
    with these keys changed, for this test only (later calls change more keys)."""
    import preprocess.rules
    from ctrbench.data.datasets import load_dataset_config

    configs = {}

    def config(name):
        if name not in configs:
            configs[name] = load_dataset_config(name)
        return configs[name]

    def override(dataset, **changes):
        config(dataset).preprocess = {**config(dataset).preprocess, **changes}

    monkeypatch.setattr(preprocess.rules, "load_dataset_config", config)
    return override



@pytest.fixture
def paper_dir():
    """The paper's tables (../shared/paper, never copied into the repository); skips where they are absent."""
    from ctrbench.report.paper import PAPER_DIR

    if not (PAPER_DIR / "table2.csv").is_file():
        pytest.skip(f"the paper's tables are not in {PAPER_DIR} (../shared/paper or $CTRBENCH_PAPER_DIR)")
    return PAPER_DIR
