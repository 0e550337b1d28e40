"""Checks every registered model passes, whatever it is: new models are covered by adding them to MODELS."""

import csv

import pytest
import torch

from ctrbench.app.runner import resolve_spec
from ctrbench.core.config import parse_overrides
from ctrbench.data.batches import load_split
from ctrbench.data.sources import InMemory
from ctrbench.nn.flops import ModelStats, model_stats
from ctrbench.training.loop import fit, seed_everything
from model_zoo import MODELS, TABLE2_MODELS

ALL = sorted(MODELS)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_on_every_feature_type(name, tiny_fmap, tiny_batch):
    torch.manual_seed(0)
    model = MODELS[name](tiny_fmap)
    model.train()
    logits = model(tiny_batch)
    assert logits.shape == (len(tiny_batch),) and torch.isfinite(logits).all()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, tiny_batch.label).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tiny_batch), model(tiny_batch))


def test_size_and_compute_are_reported(categorical_only):
    """`model_stats` (what `ctrbench models --flops` and every run record report) against counts by hand.

    Three categorical fields of 5, 7 and 4 values: one table of 16 rows. FLOPs: 2 per multiply-add of a
    matrix product, 0 for lookups and element-wise ops (ctrbench/nn/flops.py).
    """
    fmap, batch = categorical_only({"a": 5, "b": 7, "c": 4}, rows=32)
    # LR: a 1-wide table (16 weights) and the bias; the sum of looked-up weights costs no FLOPs.
    assert model_stats(MODELS["lr"](fmap), batch) == ModelStats(dense_params=1, embedding_params=16 * 1,
                                                                mflop_per_example=0.0)
    # DLRM, d = 4, dot interaction, top MLP 3 -> 6 -> 1 (no numeric features: no bottom MLP, no dense field).
    # Tables 16 x 4 = 64. Top MLP: (3 x 6 + 6) + (6 x 1 + 1) = 31.
    # FLOPs: the Gram matrix of the F = 3 fields, 2 F^2 d = 2 x 9 x 4 = 72 (its 3 pairs i < j feed the MLP),
    # then 2 x 3 x 6 + 2 x 6 x 1 = 48: 120 per example.
    dlrm = MODELS["dlrm"](fmap, embedding_dim=4, top_mlp_units=(6,), interaction="dot")
    assert model_stats(dlrm, batch) == ModelStats(dense_params=31, embedding_params=64, mflop_per_example=120 / 1e6)
    # Wukong, d = 4, one layer over n = 3 embeddings: optimized FM of rank k = 2, nF = nL = 2, FMB MLP 6 -> 6 -> 8
    # (nF x d), head 16 -> 5 -> 1. Parameters: Y [n, k] 6; LayerNorm over the n k = 6 FM outputs 12; FMB MLP
    # (6 x 6 + 6) + (6 x 8 + 8) = 98; W_L [nL, n] 6; W_R [nF + nL, n] 12 (n = 3 -> 4); LayerNorm over d 8;
    # head (16 x 5 + 5) + (5 x 1 + 1) = 91: 233 dense, 64 in the table.
    # FLOPs: X^T Y 2 d n k = 48 and X (X^T Y) 2 n d k = 48; FMB MLP 2 x 6 x 6 + 2 x 6 x 8 = 168; W_L X
    # 2 x 2 x 3 x 4 = 48; W_R X 2 x 4 x 3 x 4 = 96; head 2 x 16 x 5 + 2 x 5 x 1 = 170: 578 per example.
    wukong = MODELS["wukong"](fmap, embedding_dim=4, num_layers=1, fmb_embeddings=2, lcb_embeddings=2, fm="optimized",
                              fm_rank=2, fmb_mlp_units=(6,), head_mlp_units=(5,))
    assert model_stats(wukong, batch) == ModelStats(dense_params=233, embedding_params=64, mflop_per_example=578 / 1e6)


@pytest.fixture(scope="module")
def synthetic_splits(synthetic_fmap):
    return {s: InMemory(load_split(synthetic_fmap, s)) for s in ("train", "valid", "test")}


def _synthetic_auc(name, fmap, splits):
    spec = resolve_spec(name, "synthetic", 0, overrides=parse_overrides(["train.epochs=6"]))
    seed_everything(0)
    model = MODELS[name](fmap, **spec.model_params)
    result = fit(model, splits["train"], splits["valid"], splits["test"], spec.train, 0, progress=False)
    assert result.status == "ok"
    return result.test["auc"]


@pytest.fixture(scope="module")
def logistic_regression_auc(synthetic_fmap, synthetic_splits):
    return _synthetic_auc("lr", synthetic_fmap, synthetic_splits)


@pytest.mark.parametrize("name", [n for n in ALL if n != "lr"])
def test_learns_planted_interactions_better_than_logistic_regression(
        name, synthetic_fmap, synthetic_splits, logistic_regression_auc):
    auc = _synthetic_auc(name, synthetic_fmap, synthetic_splits)
    assert auc > logistic_regression_auc + 0.03, (auc, logistic_regression_auc)


def test_registry_names_match_the_paper(paper_dir):
    with (paper_dir / "table2.csv").open() as handle:
        paper_models = {row["model"] for row in csv.DictReader(handle)}
    assert {MODELS[n].display_name for n in TABLE2_MODELS} <= paper_models
    assert all(MODELS[n].name == n for n in MODELS)


def test_every_config_entry_validates():
    from ctrbench.core.config import load_yaml
    from ctrbench.data.datasets import MODEL_CONFIG_DIR

    from ctrbench.app.protocol import search_space
    from ctrbench.app.scaling import ladder
    from ctrbench.store.protocol_spec import PROTOCOL_FILE, load_protocol

    for path in sorted(MODEL_CONFIG_DIR.glob("*.yaml")):
        if path.name == PROTOCOL_FILE:
            load_protocol("paper")
            continue
        assert path.stem in MODELS, f"{path}: no model named {path.stem!r}"
        for dataset, entry in (load_yaml(path) or {}).items():
            resolve_spec(path.stem, dataset, 0)  # raises on unknown keys or wrong types
            search_space(path.stem, dataset)  # so does a search space
            if "ladder" in entry:
                ladder(path.stem, dataset)
