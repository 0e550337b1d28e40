"""Checks every registered model passes, whatever it is: new models are covered by adding them to MODELS."""

import csv

import pytest
import torch

from ctrbench.data import InMemory, load_split
from ctrbench.flops import model_stats
from ctrbench.config import parse_overrides
from ctrbench.runner import resolve_spec
from ctrbench.train import fit, seed_everything
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


@pytest.mark.parametrize("name", ALL)
def test_size_and_compute_are_reported(name, tiny_fmap, tiny_batch):
    stats = model_stats(MODELS[name](tiny_fmap), tiny_batch)
    assert stats.embedding_params > 0 and stats.dense_params > 0
    assert stats.mflop_per_example >= 0


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
    from ctrbench.runner import MODEL_CONFIG_DIR
    from ctrbench.config import load_yaml

    from ctrbench.protocol import PROTOCOL_FILE, load_protocol, search_space
    from ctrbench.scaling import ladder

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
