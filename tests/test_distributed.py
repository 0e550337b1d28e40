"""The distributed track: exact pieces in-process, then real gloo runs with 1 and 2 processes.

The multi-process runs use a dataset whose row groups hold exactly `batch_size / 2` rows, so a step of
the 2-process run (rank 0 reads row group 2i, rank 1 row group 2i + 1) trains on the same global batch
as step i of the 1-process run, and both start from the same weights (table values depend only on
(seed, table, row), never on the layout).
"""

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from torch import nn
from torchrec import EmbeddingBagCollection
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.optim.keyed import KeyedOptimizerWrapper

from ctrbench.app.cli import main as cli_main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import Batch, load_split
from ctrbench.data.features import DatasetWriter, FeatureMap, FeatureSpec
from ctrbench.data.synthetic import write_synthetic
from ctrbench.distributed.config import load_config
from ctrbench.distributed.data import RankShare, SparseBatch
from ctrbench.distributed.model import INIT_CHUNK_ROWS, build_sharded_model, initial_rows
from ctrbench.distributed.plan import embedding_memory
from ctrbench.distributed.sharding import LinearWarmup, available_sharding_types, sharding_constraints
from ctrbench.nn.embedding import FeatureEmbedding
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ResultsStore
from model_zoo import get_model_class
from preprocess import kuaivideo_synthetic
from preprocess.criteo import EncodingRules, convert_terabyte
from preprocess.criteo_synthetic import write_release
from preprocess.history_synthetic import Sizes
from preprocess.kuaivideo import preprocess_kuaivideo
from preprocess.options import PreprocessOptions

REPO = Path(__file__).resolve().parent.parent
CPU_SHARDING_TYPES = ["data_parallel", "table_wise", "column_wise", "table_column_wise"]


# ---------------------------------------------------------------- exact pieces, in-process


def test_sparse_batch_holds_one_id_per_categorical_row_and_unpadded_sequences():
    specs = [FeatureSpec("n", "numeric"), FeatureSpec("a", "categorical", vocab_size=9),
             FeatureSpec("b", "categorical", vocab_size=9),
             FeatureSpec("h", "sequence", vocab_size=9, max_len=3, share_embedding="a")]
    fmap = FeatureMap(dataset="t", label="y", features=specs)
    batch = Batch(categorical=torch.tensor([[2, 5], [3, 6]], dtype=torch.int32),
                  pretrained=torch.zeros(2, 0, dtype=torch.int32), numeric=torch.tensor([[0.5], [1.5]]),
                  sequences={"h": torch.tensor([[4, 0, 7], [0, 0, 0]], dtype=torch.int32)},
                  label=torch.tensor([1.0, 0.0]))
    sparse = SparseBatch.from_batch(batch, fmap).sparse
    assert sparse.keys() == ["a", "b", "h"] and sparse.stride() == 2
    assert sparse.values().tolist() == [2, 3, 5, 6, 4, 7]
    assert sparse.lengths().tolist() == [1, 1, 1, 1, 2, 0]


def test_a_sequence_reading_another_columns_items_gets_them_mapped_to_its_vocabulary(tmp_path):
    """h_a is h_b's history (one column) in a's vocabulary: the bag holds map[item] of h_b's items."""
    specs = [FeatureSpec("a", "categorical", vocab_size=4), FeatureSpec("b", "categorical", vocab_size=6),
             FeatureSpec("h_b", "sequence", vocab_size=6, max_len=3, share_embedding="b"),
             FeatureSpec("h_a", "sequence", vocab_size=4, max_len=3, share_embedding="a", column="h_b",
                         index_map="index_maps/b-a.npy")]
    fmap = FeatureMap(dataset="t", label="y", features=specs, root=tmp_path)
    (tmp_path / "index_maps").mkdir()
    np.save(tmp_path / "index_maps" / "b-a.npy", np.array([0, 1, 3, 1, 2, 1], np.int32))
    batch = Batch(categorical=torch.tensor([[2, 5], [3, 4]], dtype=torch.int32),
                  pretrained=torch.zeros(2, 0, dtype=torch.int32), numeric=torch.zeros(2, 0),
                  sequences={"h_b": torch.tensor([[4, 0, 2], [0, 0, 5]], dtype=torch.int32)},
                  label=torch.tensor([1.0, 0.0]))
    sparse = SparseBatch.from_batch(batch, fmap).sparse
    assert sparse.keys() == ["a", "b", "h_b", "h_a"]
    assert sparse.values().tolist() == [2, 3, 5, 4, 4, 2, 5, 2, 3, 1]
    assert sparse.lengths().tolist() == [1, 1, 1, 1, 2, 1, 2, 1]


def _row_id_dataset(directory, file_rows, group_rows):
    """One numeric column holding the global row number, files of `file_rows` rows."""
    specs = [FeatureSpec("row", "numeric"), FeatureSpec("c", "categorical", vocab_size=4)]
    with DatasetWriter(directory, row_group_rows=group_rows) as writer:
        start = 0
        for part, rows in enumerate(file_rows):
            ids = np.arange(start, start + rows)
            table = pa.table({"row": pa.array(ids, pa.float32()), "c": pa.array(ids % 4, pa.int32()),
                              "label": pa.array(ids % 2, pa.float32())})
            writer.write_split("train", table, part=part)
            start += rows
        return writer.commit(FeatureMap(dataset="rows", label="label", features=specs))


def _rows(batches):
    return [batch.numeric[:, 0].int().tolist() for batch in batches]


def test_rank_shares_deal_row_groups_round_robin_and_resume_mid_group(tmp_path):
    fmap = _row_id_dataset(tmp_path / "rows", file_rows=[10, 10], group_rows=4)  # groups: 4 4 2 | 4 4 2
    shares = [RankShare(fmap, ["train"], rank, 2, pieces_per_rank=1) for rank in range(2)]
    assert [share.rows for share in shares] == [10, 10]
    assert _rows(shares[0].train_batches(3, skip_batches=0, num_batches=3)) == [[0, 1, 2], [3, 8, 9], [14, 15, 16]]
    assert _rows(shares[0].train_batches(3, skip_batches=1, num_batches=2)) == [[3, 8, 9], [14, 15, 16]]
    assert _rows(shares[1].train_batches(3, skip_batches=2, num_batches=1)) == [[12, 13, 18]]
    # evaluation: every row once, then copies of the share's first rows up to the longest share
    assert _rows(shares[1].eval_batches(4, padded_rows=12)) == [[4, 5, 6, 7], [10, 11, 12, 13], [18, 19, 4, 5]]
    with pytest.raises(CtrbenchError, match="fewer than 4 batches of 3"):
        list(shares[0].train_batches(3, skip_batches=1, num_batches=3))


def test_a_split_with_few_row_groups_is_cut_into_equal_pieces(tmp_path):
    fmap = _row_id_dataset(tmp_path / "rows", file_rows=[16, 5], group_rows=16)  # row groups of 16 and 5 rows
    shares = [RankShare(fmap, ["train"], rank, 2, pieces_per_rank=2) for rank in range(2)]  # pieces of <= 6 rows
    assert [share.rows for share in shares] == [11, 10]
    assert _rows(shares[0].eval_batches(11, padded_rows=11)) == [[0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15]]
    assert _rows(shares[1].eval_batches(11, padded_rows=11)) == [[5, 6, 7, 8, 9, 16, 17, 18, 19, 20, 5]]


def test_initial_table_values_do_not_depend_on_the_row_range():
    whole = initial_rows(7, "embedding/c7", 0.1, 4, 0, INIT_CHUNK_ROWS + 10)
    split = INIT_CHUNK_ROWS - 3
    parts = torch.cat([initial_rows(7, "embedding/c7", 0.1, 4, 0, split),
                       initial_rows(7, "embedding/c7", 0.1, 4, split, INIT_CHUNK_ROWS + 10)])
    assert torch.equal(whole, parts)
    assert abs(whole.std().item() - 0.1) < 0.002
    assert not torch.equal(whole[:5], initial_rows(7, "embedding/c6", 0.1, 4, 0, 5))


def _copy_zoo_weights(zoo: nn.Module, sharded) -> None:
    """Give the sharded model (with unsharded CPU EBCs) exactly the zoo model's weights."""
    state = zoo.state_dict()
    for path, module in zoo.named_modules():
        if not isinstance(module, FeatureEmbedding):
            continue
        group = path.replace(".", "_")
        for config in sharded.table_configs.get(group, []):  # a layer without trainable tables has no EBC
            rows = module.table.weight[module.offset_of[config.name]:][:config.num_embeddings]
            sharded.tables[group].embedding_bags[config.name].weight.data.copy_(rows)
        state = {(f"{path}.source.{k[len(path) + 1:]}" if k.startswith(f"{path}.") else k): v
                 for k, v in state.items() if k != f"{path}.table.weight"}
    sharded.model.load_state_dict(state)


@pytest.mark.parametrize("name, params", [
    ("dlrm", {"embedding_dim": 8, "bottom_mlp_units": [16], "top_mlp_units": [16]}),
    ("lr", {}),
])
def test_sharded_model_computes_the_zoo_models_logits(name, params, synthetic_fmap):
    batch = load_split(synthetic_fmap, "valid").take(torch.arange(64))
    batch.sequences["history"][:4] = 0  # empty bags
    batch.sequences["history"][4:8, 1] = 0  # padding inside a sequence
    torch.manual_seed(0)
    zoo = get_model_class(name)(synthetic_fmap, **params)
    with torch.no_grad():
        for module in zoo.modules():
            if isinstance(module, FeatureEmbedding):
                module.table.weight.normal_(std=0.5)  # rows far apart, so a wrong row would show
    sharded = build_sharded_model(name, params, synthetic_fmap, seed=0)
    sharded.tables = nn.ModuleDict({group: EmbeddingBagCollection(tables=configs)
                                    for group, configs in sharded.table_configs.items()})
    _copy_zoo_weights(zoo, sharded)
    [configs] = sharded.table_configs.values()
    assert {c.name: c.feature_names for c in configs}["c7"] == ["c7", "history"]  # shared embedding: one table
    loss, (_, logits, labels) = sharded(SparseBatch.from_batch(batch, synthetic_fmap))
    expected = zoo(batch)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, nn.functional.binary_cross_entropy_with_logits(expected, batch.label))


@pytest.mark.parametrize("name, params", [
    ("dlrm", {"embedding_dim": 4, "bottom_mlp_units": [8], "top_mlp_units": [8]}),
    ("finalmlp", {"embedding_dim": 4, "mlp1_hidden_units": [8], "mlp2_hidden_units": [8], "fs_hidden_units": [8],
                  "fs1_context": ["video", "item"], "fs2_context": ["watched_videos"]}),  # gates: subsets of the fields
])
def test_pretrained_features_are_frozen_replicas_with_the_zoo_models_logits(name, params, tiny_fmap):
    """The tiny dataset's pretrained `video` and the `watched_videos` history sharing its table: looked up in
    the frozen table each rank holds (a buffer, not a parameter, not in the EBCs), then the learned map (a
    dense parameter); the logits are the zoo model's, fields in the same order."""
    batch = load_split(tiny_fmap, "train")
    torch.manual_seed(0)
    zoo = get_model_class(name)(tiny_fmap, **params)
    with torch.no_grad():
        for module in zoo.modules():
            if isinstance(module, FeatureEmbedding):
                module.table.weight.normal_(std=0.5)
    sharded = build_sharded_model(name, params, tiny_fmap, seed=0)
    assert {n for configs in sharded.table_configs.values() for c in configs for n in c.feature_names} == {
        "user", "item", "clicked_items"}  # video and watched_videos stay out of the EBCs
    frozen = dict(sharded.model.named_buffers())["embedding.source.frozen_video"]
    assert frozen.shape == (9, 3) and not any(p is frozen for p in sharded.parameters())
    assert "embedding.source.projections.video.weight" in dict(sharded.model.named_parameters())
    sharded.tables = nn.ModuleDict({group: EmbeddingBagCollection(tables=configs)
                                    for group, configs in sharded.table_configs.items()})
    _copy_zoo_weights(zoo, sharded)
    loss, (_, logits, _) = sharded(SparseBatch.from_batch(batch, tiny_fmap))
    torch.testing.assert_close(logits, zoo(batch), rtol=1e-5, atol=1e-6)


def test_cpu_sharding_types_and_planner_constraints(synthetic_fmap):
    sharder = EmbeddingBagCollectionSharder()
    # torchrec 1.8 offers row-wise, table-row-wise and grid sharding only on CUDA
    assert available_sharding_types(sharder, "cpu", "fp32") == CPU_SHARDING_TYPES
    assert "row_wise" in available_sharding_types(sharder, "cuda", "fp32")
    assert "data_parallel" not in available_sharding_types(sharder, "cuda", "fp16")
    sharded = build_sharded_model("dlrm", {}, synthetic_fmap, seed=0)
    constraints = sharding_constraints(sharded, {"c7": "column_wise"}, 8, CPU_SHARDING_TYPES)
    assert constraints["c7"].sharding_types == ["column_wise"] and constraints["c7"].min_partition == 8
    assert constraints["c0"].sharding_types == CPU_SHARDING_TYPES
    with pytest.raises(CtrbenchError, match="sharding.c7: row_wise is not available here .* choose one of data_parallel"):
        sharding_constraints(sharded, {"c7": "row_wise"}, None, CPU_SHARDING_TYPES)
    with pytest.raises(CtrbenchError, match=r"sharding.c77: no such table \(did you mean 'c7'\?\)"):
        sharding_constraints(sharded, {"c77": "table_wise"}, None, CPU_SHARDING_TYPES)
    # fbgemm's fused kernels need shards of 4k columns: logistic regression's 1-column tables stay replicated
    logistic = build_sharded_model("lr", {}, synthetic_fmap, seed=0)
    assert {c.sharding_types[0] for c in sharding_constraints(logistic, {}, None, CPU_SHARDING_TYPES).values()} == {
        "data_parallel"}
    with pytest.raises(CtrbenchError, match="table 'c1': its width \\[1\\] is not a multiple of 4"):
        sharding_constraints(logistic, {"c1": "table_wise"}, None, CPU_SHARDING_TYPES)


def test_plan_dry_run_counts_every_shards_memory(synthetic_data_dir, tmp_path):
    """Row-wise on 2 GPUs: each table's rows split over both, weights (16 fp32) plus one fp32 AdaGrad
    state per row; all data-parallel: every GPU holds each table, its gradient and its state."""
    fmap = FeatureMap.load(synthetic_data_dir / "synthetic")
    path = tmp_path / "run.yaml"
    path.write_text(f"model: dlrm\ndata_dir: {synthetic_data_dir / 'synthetic'}\nmodel_params: {{embedding_dim: 16}}\n")
    rows = sum(spec.vocab_size for spec in fmap.of_type("categorical"))
    layout, per_gpu, frozen = embedding_memory(load_config(path, ['sharding={"*": row_wise}']), 2, 2, 10**9)
    assert {table["type"] for table in layout["embedding"].values()} == {"row_wise"}
    assert sum(per_gpu) == rows * (16 * 4 + 4) and frozen == 0
    _, per_gpu, _ = embedding_memory(load_config(path, ['sharding={"*": data_parallel}']), 2, 2, 10**9)
    assert per_gpu == [rows * (2 * 16 * 4 + 4)] * 2
    with pytest.raises(CtrbenchError, match="the sharding planner found no layout: .*storage"):
        embedding_memory(load_config(path, ['sharding={"*": data_parallel}']), 2, 2, 1000)


def test_plan_counts_the_frozen_pretrained_tables_on_every_gpu(tiny_fmap, tmp_path):
    """The tiny dataset: user (7 rows) and item (12, shared by clicked_items) are sharded row-wise; the frozen
    `video` table (9 x 3 fp32 = 108 bytes, shared by watched_videos) is held whole by both GPUs."""
    path = tmp_path / "run.yaml"
    path.write_text(f"model: dlrm\ndata_dir: {tmp_path / 'tiny'}\nmodel_params: {{embedding_dim: 4}}\n")
    _, per_gpu, frozen = embedding_memory(load_config(path, ['sharding={"*": row_wise}']), 2, 2, 10**9)
    assert frozen == 9 * 3 * 4
    assert sum(per_gpu) == (7 + 12) * (4 * 4 + 4) + 2 * frozen


def test_linear_warmup_scales_every_group_then_holds():
    weight = nn.Parameter(torch.zeros(2))
    optimizer = KeyedOptimizerWrapper({"w": weight}, lambda params: torch.optim.Adam(params, lr=0.4))
    warmup = LinearWarmup(optimizer, warmup_steps=4)
    rates = []
    for step in (0, 1, 3, 9):
        warmup.apply(step)
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.1, 0.2, 0.4, 0.4])


def test_config_is_validated_with_the_key_at_fault(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: dlrm\ndata_dir: data/x\nmodel_params: {embedding_dim: 8}\n")
    config = load_config(path, ["max_steps=5", "model_params.top_mlp_units=[4]", "sharding={c1: table_wise}"])
    assert (config.max_steps, config.model_params, config.sharding) == (5, {"embedding_dim": 8, "top_mlp_units": (4,)},
                                                                        {"c1": "table_wise"})
    assert config.batch_size == 131_072 and config.embedding_learning_rate == 0.1  # the paper's setup
    for overrides, message in [
        (["batch_sise=4"], "unknown key 'batch_sise' (did you mean 'batch_size'?)"),
        (["model_params.embeding_dim=4"], "model_params: unknown key 'embeding_dim'"),
        (["sharding={c1: diagonal}"], "sharding.c1: expected 'data_parallel' | 'table_wise'"),
        (["warmup_fraction=2"], "warmup_fraction must be in [0, 1]"),
    ]:
        with pytest.raises(CtrbenchError, match=re.escape(message)):
            load_config(path, overrides)


def test_set_takes_every_commands_section_form_and_the_older_one_alike(tmp_path):
    """`--set model.KEY=V` is a model argument and `train.KEY=V` any other key, as `ctrbench train` reads
    them; the track's older `KEY=V` and `model_params.KEY=V` mean the same."""
    path = tmp_path / "run.yaml"
    path.write_text("model: dlrm\ndata_dir: data/x\nmodel_params: {embedding_dim: 8}\n")
    new = load_config(path, ["train.max_steps=5", "model.top_mlp_units=[4]", "train.sharding={c1: table_wise}"])
    old = load_config(path, ["max_steps=5", "model_params.top_mlp_units=[4]", "sharding={c1: table_wise}"])
    assert new == old
    assert (new.max_steps, new.model_params, new.sharding) == (5, {"embedding_dim": 8, "top_mlp_units": (4,)},
                                                               {"c1": "table_wise"})
    mixed = load_config(path, ["train.max_steps=5", "max_steps=7", "model_params.embedding_dim=2", "model.embedding_dim=4"])
    assert (mixed.max_steps, mixed.model_params) == (7, {"embedding_dim": 4})  # the last assignment wins
    for overrides, message in [
        (["train.epochs=2"], "run.yaml: unknown key 'epochs'"),  # a single-node key the track does not have
        (["model.embeding_dim=4"], "model_params: unknown key 'embeding_dim' (did you mean 'embedding_dim'?)"),
        (["data.dir=x"], "--set 'data.dir=x': expected model.KEY=VALUE or train.KEY=VALUE"),
        (["train.model_params={embedding_dim: 4}"], "set the model's arguments one by one, e.g. --set model.embedding_dim=64"),
        (["max_steps"], "--set 'max_steps': expected model.KEY=VALUE or train.KEY=VALUE"),
    ]:
        with pytest.raises(CtrbenchError, match=re.escape(message)):
            load_config(path, overrides)


# ---------------------------------------------------------------- real runs: gloo, 1 and 2 processes

BATCH = 128  # global; 64 rows per rank with 2 processes
CRITEO_DAY_ROWS = 1500
STEPS = 200
KUAIVIDEO_SIZES = Sizes(train_rows=3000, test_rows=1000, users=50, items=3000)
KUAIVIDEO_DLRM = {"embedding_dim": 8, "bottom_mlp_units": [16], "top_mlp_units": [16]}
KUAIVIDEO_STEPS = 20
MIXED = {"c0": "data_parallel", "c1": "table_wise", "c2": "column_wise", "c3": "table_column_wise",
         "c7": "column_wise"}  # c7 also holds the `history` sequence (shared embedding)


def write_days(directory, days: int, rows_per_day: int, group_rows: int) -> FeatureMap:
    """The synthetic dataset rewritten as `days` train files with row groups of `group_rows` rows (its
    valid and test splits as they are: `ctrbench train --dataset synthetic` trains on it too)."""
    source = write_synthetic(Path(directory).with_name("synthetic-source"), rows=int(days * rows_per_day / 0.8) + 10,
                             seed=3)
    train = pq.read_table(source.split_paths("train")[0])
    with DatasetWriter(directory, row_group_rows=group_rows) as writer:
        for day in range(days):
            writer.write_split("train", train.slice(day * rows_per_day, rows_per_day), part=day)
        for split in ("valid", "test"):
            writer.write_split(split, pq.read_table(source.split_paths(split)[0]))
        return writer.commit(FeatureMap(dataset="synthetic", label=source.label, features=source.features))


def _environment():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _check(process: subprocess.CompletedProcess) -> None:
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: 2 processes, every CPU sharding type. B: the same, stopped at step 120, then resumed.
    L: logistic regression, 2 processes. DP, TW: 30 steps with every table data-parallel, then table-wise.
    criteo: the Criteo converter's output for a generated Terabyte release (a file per day), 2 processes.
    half: TW's run with fp16 tables and bf16 all-to-alls. kuaivideo: the KuaiVideo converter's output for
    a generated BARS x1 release (frozen item vectors, histories stored once), 2 processes.
    S: run A's config in 1 process, via the CLI."""
    root = tmp_path_factory.mktemp("distributed")
    fmap = write_days(root / "synthetic", days=4, rows_per_day=STEPS * BATCH // 4, group_rows=BATCH // 2)
    base = {"data_dir": "synthetic", "batch_size": BATCH, "eval_batch_size": 1024, "log_every": 20}
    mixed = root / "mixed.yaml"
    mixed.write_text(yaml.safe_dump({
        "model": "dlrm", "model_params": {"embedding_dim": 16, "bottom_mlp_units": [32], "top_mlp_units": [64, 32]},
        **base, "sharding": MIXED, "column_shard_dim": 8, "checkpoint_every": 50}))
    logistic = root / "lr.yaml"
    logistic.write_text(yaml.safe_dump({"model": "lr", **base, "max_steps": 40}))
    write_release(root / "criteo_raw", "terabyte", rows=CRITEO_DAY_ROWS, seed=0)
    convert_terabyte(root / "criteo_raw", root / "criteo", EncodingRules(encoding="hash", table_size=1000),
                     PreprocessOptions())
    criteo = root / "criteo.yaml"
    criteo.write_text(yaml.safe_dump({
        "model": "dlrm", "model_params": {"embedding_dim": 16, "bottom_mlp_units": [32], "top_mlp_units": [32]},
        "data_dir": str(root / "criteo"), "eval_splits": ["valid", "test"], "batch_size": 512, "log_every": 10}))
    kuaivideo_synthetic.write_release(root / "kv_raw", KUAIVIDEO_SIZES, seed=0)
    preprocess_kuaivideo(root / "kv_raw", root / "kuaivideo", PreprocessOptions())
    kuaivideo = root / "kuaivideo.yaml"
    kuaivideo.write_text(yaml.safe_dump({"model": "dlrm", "model_params": KUAIVIDEO_DLRM, "data_dir": str(root / "kuaivideo"),
                                         "batch_size": BATCH, "eval_batch_size": 1024, "log_every": 1,
                                         "max_steps": KUAIVIDEO_STEPS}))
    plan = [
        {"config": str(mixed), "overrides": [f"checkpoint_dir={root / 'A'}"], "stop_after": None},
        {"config": str(mixed), "overrides": [f"checkpoint_dir={root / 'B'}"], "stop_after": 120},
        {"config": str(mixed), "overrides": [f"checkpoint_dir={root / 'B'}"], "stop_after": None},
        {"config": str(logistic), "overrides": [], "stop_after": None},
        {"config": str(mixed), "overrides": ['sharding={"*": data_parallel}', "max_steps=30"], "stop_after": None},
        {"config": str(mixed), "overrides": ['sharding={"*": table_wise}', "max_steps=30"], "stop_after": None},
        {"config": str(criteo), "overrides": [], "stop_after": None},
        {"config": str(mixed), "overrides": ['sharding={"*": table_wise}', "max_steps=30", "embedding_precision=fp16",
                                             "comm_precision=bf16"], "stop_after": None},
        {"config": str(kuaivideo), "overrides": [], "stop_after": None},
    ]
    (root / "plan.json").write_text(json.dumps(plan))
    _check(subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "distributed_worker.py"), str(root / "plan.json"), str(root / "out.json")],
        cwd=root, env=_environment(), capture_output=True, text=True, timeout=600))
    a, b_stopped, b, logistic_result, replicated, table_wise, criteo_result, half, kuaivideo_result = [
        record and RunRecord.from_json(record) for record in json.loads((root / "out.json").read_text())]
    single = subprocess.run(
        [sys.executable, "-m", "ctrbench.distributed.train", "--config", "mixed.yaml", "--set", "train.output_dir=S",
         "--results", "S/results.jsonl"],
        cwd=root, env=_environment(), capture_output=True, text=True, timeout=600)
    _check(single)
    return {"A": a, "B_stopped": b_stopped, "B": b, "L": logistic_result, "DP": replicated, "TW": table_wise,
            "criteo": criteo_result, "criteo_fmap": FeatureMap.load(root / "criteo"), "half": half,
            "kuaivideo": kuaivideo_result, "kuaivideo_config": load_config(kuaivideo, []),
            "stderr_S": single.stderr, "root": root,
            "S": RunRecord.from_json(json.loads((root / "S" / "result.json").read_text())), "B_dir": root / "B",
            "test_rows": fmap.splits["test"].rows}


def test_two_process_run_trains_on_every_cpu_sharding_type(runs):
    a = runs["A"]
    assert a.ok and a.distributed.world_size == 2 and a.steps == STEPS
    layout = a.distributed.sharding["embedding"]
    assert {table: layout[table]["type"] for table in MIXED} == MIXED
    for table in ("c2", "c3", "c7"):  # split into two 8-column shards, on both ranks for the tables sharded across ranks
        assert [shard["sizes"][1] for shard in layout[table]["shards"]] == [8, 8]
    assert {shard["rank"] for shard in layout["c7"]["shards"]} == {0, 1}
    losses = [entry.loss for entry in a.distributed.loss_history]
    assert len(losses) == STEPS // 20 and max(losses[-3:]) < losses[0] - 0.03
    assert a.distributed.eval_rows == runs["test_rows"] and a.test.auc > 0.65
    memory = a.distributed.peak_memory  # each rank's own peak RSS, gathered: the CPU's "memory per GPU"
    assert memory.kind == "peak_rss" and len(memory.bytes_per_rank) == 2 and min(memory.bytes_per_rank) > 2**27


def test_a_finished_run_is_recorded_in_the_store_and_shown_beside_single_node_runs(runs, tmp_path):
    """The single-process CLI run appended its record to `--results` (the same record as its result.json);
    a single-node `ctrbench train` of the same model on the same data joins it there, with the same size
    and compute, and `ctrbench leaderboard` shows both rows, the distributed one marked as such."""
    root, single = runs["root"], runs["S"]
    [line] = (root / "S" / "results.jsonl").read_text().splitlines()
    assert RunRecord.from_json(json.loads(line)) == single and single.to_line() == line
    assert single.command == ("python -m ctrbench.distributed.train --config mixed.yaml --set train.output_dir=S "
                              "--results S/results.jsonl")
    assert (single.model, single.dataset, single.seed, single.valid, single.epochs) == (
        "dlrm", "synthetic", 2021, None, 1)
    assert single.config.train["world_size"] == 1 and single.config.train["sharding"] == MIXED
    assert single.config_hash != runs["A"].config_hash  # 1 and 2 processes: two configs
    model = ["--set", "model.embedding_dim=16", "--set", "model.bottom_mlp_units=[32]",
             "--set", "model.top_mlp_units=[64,32]"]
    with contextlib.chdir(root):
        assert cli_main(["train", "--model", "dlrm", "--dataset", "synthetic", "--data-dir", ".", "--config-dir",
                         str(tmp_path), "--results", "S/results.jsonl", *model, "--set", "train.epochs=1",
                         "--set", "train.batch_size=1024", "--no-progress"]) == 0
        assert cli_main(["leaderboard", "--results", "S/results.jsonl", "--out", "boards", "--data-dir", "."]) == 0
    stored, one_node = ResultsStore(root / "S" / "results.jsonl").records()
    assert stored == single and one_node.distributed is None and one_node.data_hash == single.data_hash
    assert (one_node.dense_params, one_node.embedding_params, one_node.mflop_per_example) == (
        single.dense_params, single.embedding_params, single.mflop_per_example)
    page = (root / "boards" / "synthetic.md").read_text()
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in page.split("## Size")[0].splitlines()
            if line.startswith("| DLRM")}
    assert f"| `{one_node.config_hash}` |" in rows["DLRM"]
    assert f"{single.test.auc:.4f}" in rows["DLRM (distributed)"]
    assert f"| `{single.config_hash}` distributed |" in rows["DLRM (distributed)"]
    assert ("- Synthetic, DLRM (distributed): 1 process, evaluated on test (3,201 rows), tables: column_wise 2, "
            "data_parallel 1, table_column_wise 1, table_wise") in page
    assert "- `python -m ctrbench.distributed.train --config mixed.yaml" in page
    assert "|  | DLRM (distributed) | 1 |" in (root / "boards" / "table2.md").read_text()


def test_sharded_and_single_process_runs_agree(runs):
    """Same global batches and initial weights; what differs is the order in which gradients are summed
    and that a sharded table's gradient is the sum of the two ranks' batch means (twice the
    single-process gradient), which row-wise AdaGrad divides out up to its epsilon (1e-8). The runs
    agree to float32 rounding: losses and metrics within 1e-5."""
    a, single = runs["A"], runs["S"]
    assert single.distributed.world_size == 1 and "resuming" not in runs["stderr_S"]
    assert [h.step for h in single.distributed.loss_history] == [h.step for h in a.distributed.loss_history]
    for mine, theirs in zip(single.distributed.loss_history, a.distributed.loss_history):
        assert mine.loss == pytest.approx(theirs.loss, abs=1e-5)
    assert single.distributed.eval_rows == a.distributed.eval_rows
    assert single.test.auc == pytest.approx(a.test.auc, abs=1e-5)
    assert single.test.logloss == pytest.approx(a.test.logloss, abs=1e-5)


def test_checkpoint_and_resume_give_the_uninterrupted_result(runs):
    stopped, resumed, uninterrupted = runs["B_stopped"], runs["B"], runs["A"]
    assert stopped is None  # a session stopped early records nothing
    assert resumed.distributed.resumed_at == 120
    assert resumed.test == uninterrupted.test  # bit for bit
    assert resumed.distributed.loss_history[-4:] == uninterrupted.distributed.loss_history[-4:]  # after step 120
    assert resumed.config_hash == uninterrupted.config_hash
    assert (runs["B_dir"] / "LATEST").read_text().strip() == f"step-{STEPS:09d}"
    assert sorted(p.name for p in runs["B_dir"].glob("step-*")) == [f"step-{STEPS:09d}"]


def test_logistic_regression_trains_with_replicated_one_column_tables(runs):
    result = runs["L"]
    assert result.steps == 40
    assert {table["type"] for table in result.distributed.sharding["weights"].values()} == {"data_parallel"}
    losses = [entry.loss for entry in result.distributed.loss_history]
    assert losses[-1] < losses[0] - 0.05 and result.test.auc > 0.5


def test_data_parallel_tables_train_exactly_like_table_wise_ones(runs):
    """Replicas are updated by a non-fused row-wise AdaGrad on DDP-averaged gradients, sharded tables by
    fbgemm's fused one on summed gradients: the same updates up to AdaGrad's epsilon."""
    replicated, table_wise = runs["DP"], runs["TW"]
    assert {t["type"] for t in replicated.distributed.sharding["embedding"].values()} == {"data_parallel"}
    assert {t["type"] for t in table_wise.distributed.sharding["embedding"].values()} == {"table_wise"}
    for mine, theirs in zip(replicated.distributed.loss_history, table_wise.distributed.loss_history, strict=True):
        assert mine.loss == pytest.approx(theirs.loss, abs=1e-5)
    assert replicated.test.auc == pytest.approx(table_wise.test.auc, abs=1e-5)


def test_criteo_converter_output_trains_one_pass_over_the_days(runs):
    """The converter writes day_00 .. day_22 as the train split and day 23's halves as valid and test;
    the run reads the 23 day files in one pass and evaluates on all of day 23."""
    result, fmap = runs["criteo"], runs["criteo_fmap"]
    assert [Path(f).name for f in fmap.splits["train"].files] == [f"day_{day:02d}.parquet" for day in range(23)]
    assert result.steps >= 23 * CRITEO_DAY_ROWS // 512 - 1  # the ranks' shares differ by at most a piece
    assert result.distributed.eval_rows == CRITEO_DAY_ROWS == fmap.splits["valid"].rows + fmap.splits["test"].rows
    assert result.distributed.eval_splits == ["valid", "test"] and result.dataset == "criteo"
    assert len(result.distributed.sharding["embedding"]) == 26
    losses = [entry.loss for entry in result.distributed.loss_history]
    assert losses[-1] < losses[0] - 0.1 and result.test.auc > 0.55


def test_half_precision_tables_and_communication_train_close_to_fp32(runs):
    """fp16 storage rounds every update and bf16 all-to-alls keep 8 bits of mantissa: not the fp32
    numbers, but the same run to within a few thousandths of loss and AUC over 30 steps."""
    half, full = runs["half"], runs["TW"]
    for mine, theirs in zip(half.distributed.loss_history, full.distributed.loss_history, strict=True):
        assert mine.loss == pytest.approx(theirs.loss, abs=0.01)
    assert half.test.auc == pytest.approx(full.test.auc, abs=0.01)
    assert half.test.auc != full.test.auc  # the half-precision paths did run
    assert half.config_hash != full.config_hash  # table and all-to-all precision are part of the config


def _zoo_with_initial_weights(sharded, fmap: FeatureMap, name: str, params: dict, seed: int) -> nn.Module:
    """The single-node zoo model with the weights a distributed run starts from: its dense part (seeded
    as `build_sharded_model` seeds it, frozen tables and their linear maps included) and each EBC table's
    layout-independent initial rows (`initial_rows`) at that table's offset in the fused table."""
    zoo = get_model_class(name)(fmap, **params)
    state = zoo.state_dict()
    for key, value in sharded.model.state_dict().items():
        state[key.replace(".source.", ".")] = value
    for path, module in zoo.named_modules():
        if isinstance(module, FeatureEmbedding):
            group = path.replace(".", "_")
            for config in sharded.table_configs.get(group, []):
                offset = module.offset_of[config.name]
                state[f"{path}.table.weight"][offset:offset + config.num_embeddings] = initial_rows(
                    seed, f"{group}/{config.name}", sharded.init_std[group], config.embedding_dim, 0,
                    config.num_embeddings)
    zoo.load_state_dict(state)
    return zoo


def test_pretrained_features_train_on_two_processes_from_the_single_node_loss(runs):
    """KuaiVideo's frozen item vectors (item_emb, and the pos_items_emb / neg_items_emb histories looked up in
    them) on the distributed track, histories stored once (pos_items read through the index map into the
    KeyedJaggedTensor). Its first step's loss, averaged over the two ranks, is the single-node DLRM's loss
    on the same 128 rows (each rank's first 64) from the same weights, to float32 rounding (1e-5); and it
    trains (the generated clicks carry no signal but their 1-in-4 rate, so the loss falls towards that
    rate's entropy and the AUC stays near 0.5)."""
    result, config = runs["kuaivideo"], runs["kuaivideo_config"]
    fmap = FeatureMap.load(config.data_dir)
    assert fmap.feature("pos_items").index_map and fmap.of_type("pretrained_embedding")
    assert result.ok and result.steps == KUAIVIDEO_STEPS and result.distributed.world_size == 2
    assert set(result.distributed.sharding["embedding"]) == {"user_id", "item_id"}  # item_emb: a frozen replica
    batch = Batch.concat([next(RankShare(fmap, config.train_splits, rank, 2).train_batches(BATCH // 2, 0, 1))
                          for rank in range(2)])
    sharded = build_sharded_model("dlrm", KUAIVIDEO_DLRM, fmap, seed=config.seed)
    zoo = _zoo_with_initial_weights(sharded, fmap, "dlrm", KUAIVIDEO_DLRM, config.seed)
    with torch.no_grad():
        expected = nn.functional.binary_cross_entropy_with_logits(zoo(batch), batch.label).item()
    losses = [entry.loss for entry in result.distributed.loss_history]
    assert len(losses) == KUAIVIDEO_STEPS and losses[0] == pytest.approx(expected, abs=1e-5)
    assert np.mean(losses[-5:]) < losses[0] - 0.02
    assert result.distributed.eval_rows == fmap.splits["test"].rows
