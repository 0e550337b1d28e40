"""Our side of the bridge to FuxiCTR 2.3.10: our processed data, model configs and training settings in
FuxiCTR's formats, and which models FuxiCTR can run on which data.

The jobs built here run in FuxiCTR's own virtual environment through `benchmarks/fuxictr_side.py`, which
can import neither ctrbench nor anything that imports it (FuxiCTR needs polars < 2 and installs a
top-level `model_zoo` package); so everything that reads our data or configs is here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ctrbench.data import load_split
from ctrbench.errors import CtrbenchError
from ctrbench.features import FeatureMap
from ctrbench.runner import RunSpec

FUXICTR_CLASSES = {"dlrm": "DLRM", "dcnv2": "DCNv2", "xdeepfm": "xDeepFM"}  # FuxiCTR has no Wukong
# Its npz loader column-stacks ids and values into one float64 array, and its DLRM passes numeric features
# to the bottom MLP without a cast, so float64 meets float32 weights: a RuntimeError in its first step.
FUXICTR_DLRM_NUMERIC = "FuxiCTR 2.3.10's DLRM fails on numeric features (float64 from its npz loader into its float32 bottom MLP)"


def fuxictr_cannot_run(model: str, fmap: FeatureMap) -> str | None:
    """Why FuxiCTR cannot train `model` on this data, or None."""
    if model not in FUXICTR_CLASSES:
        return "FuxiCTR has no such model"
    if model == "dlrm" and any(f.type == "numeric" for f in fmap.features):
        return FUXICTR_DLRM_NUMERIC
    return None


def export_for_fuxictr(fmap: FeatureMap, out: Path) -> Path:
    """Our processed splits as FuxiCTR's in-memory format: feature_map.json + <split>.npz of columns.

    Same indices, same vocabulary sizes, so both sides build tables of the same shape.
    """
    if (out / "feature_map.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    features = []
    for spec in fmap.features:
        if spec.type == "categorical":
            features.append({spec.name: {"source": "", "type": "categorical", "vocab_size": spec.vocab_size,
                                         "padding_idx": 0}})
        elif spec.type == "numeric":
            features.append({spec.name: {"source": "", "type": "numeric"}})
        else:
            raise CtrbenchError(f"feature {spec.name!r}: only categorical and numeric features are exported")
    for split in fmap.splits:
        batch = load_split(fmap, split)
        columns = {"label": batch.label.numpy()}
        categorical = iter(batch.categorical.T.numpy())
        numeric = iter(batch.numeric.T.numpy())
        for spec in fmap.features:
            columns[spec.name] = next(categorical) if spec.type == "categorical" else next(numeric)
        np.savez(out / f"{split}.npz", **columns)
    (out / "feature_map.json").write_text(json.dumps({
        "dataset_id": fmap.dataset, "num_fields": len(features), "total_features": 0,
        "input_length": len(features), "labels": ["label"], "features": features}, indent=1))
    return out


def categorical_fields(fmap: FeatureMap) -> list[str]:
    """The dataset's fields, in feature-map order, when every one is categorical (Frappe's ten)."""
    if other := [spec.name for spec in fmap.features if spec.type != "categorical"]:
        raise CtrbenchError(f"{fmap.root}: features {other} are not categorical; only a categorical dataset "
                            "(Frappe) is written as FuxiCTR CSVs")
    return [spec.name for spec in fmap.features]


def write_csvs(fmap: FeatureMap, out: Path) -> Path:
    """BARS x1-format CSVs (header `label,<field>,...`, e.g. Frappe_x1's `label,user,...,city`) holding our
    processed indices as values, one per split."""
    import polars as pl

    fields = categorical_fields(fmap)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        batch = load_split(fmap, split)
        frame = pl.DataFrame({"label": batch.label.numpy().astype(np.int64),
                              **{f: batch.categorical[:, j].numpy() for j, f in enumerate(fields)}})
        frame.write_csv(out / f"{split}.csv")
    return out


def preprocess_job(fmap: FeatureMap, csv_dir: Path, out: Path, threads: int) -> dict[str, Any]:
    """A `preprocess` job of fuxictr_side.py: FuxiCTR's FeatureProcessor + build_dataset on `write_csvs`'s
    files, every field a categorical string column, as BARS's Frappe_x1 config declares them."""
    return {"kind": "preprocess", "threads": threads, "dataset_id": fmap.dataset, "out": str(out),
            **{f"{split}_csv": str(csv_dir / f"{split}.csv") for split in ("train", "valid", "test")},
            "feature_cols": [{"name": categorical_fields(fmap), "active": True, "dtype": "str", "type": "categorical"}],
            "label_col": {"name": "label", "dtype": "float"}}


def fuxictr_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Our constructor arguments as FuxiCTR's, for the models both libraries have."""
    if model == "dlrm":
        return {"embedding_dim": params["embedding_dim"], "top_mlp_units": list(params["top_mlp_units"]),
                "bottom_mlp_units": list(params.get("bottom_mlp_units", [])),
                "top_mlp_dropout": params.get("top_mlp_dropout", 0.0), "interaction_op": params["interaction"],
                "batch_norm": params.get("batch_norm", False)}
    if model == "dcnv2":
        if params.get("cross_network", "full") != "full":
            raise CtrbenchError("dcnv2: only the full cross network is matched against FuxiCTR")
        return {"embedding_dim": params["embedding_dim"], "model_structure": params["model_structure"],
                "num_cross_layers": params["num_cross_layers"],
                "parallel_dnn_hidden_units": list(params.get("parallel_dnn_hidden_units", [400, 400, 400])),
                "stacked_dnn_hidden_units": list(params.get("stacked_dnn_hidden_units", [400, 400, 400])),
                "net_dropout": params.get("net_dropout", 0.0), "batch_norm": params.get("batch_norm", False)}
    if model == "xdeepfm":
        return {"embedding_dim": params["embedding_dim"], "cin_hidden_units": list(params["cin_layer_units"]),
                "dnn_hidden_units": list(params["dnn_hidden_units"]), "net_dropout": params.get("dnn_dropout", 0.0),
                "batch_norm": params.get("batch_norm", False)}
    raise CtrbenchError(f"{model}: FuxiCTR has no such model")


def shared_train_settings(spec: RunSpec) -> dict[str, Any]:
    """The training settings both sides share (FuxiCTR trains in float32 only)."""
    t = spec.train
    return {"batch_size": t.batch_size, "learning_rate": t.learning_rate, "embedding_regularizer": t.embedding_regularizer,
            "net_regularizer": t.net_regularizer, "max_grad_norm": t.max_grad_norm}


def model_job(model: str, spec: RunSpec, fx_dir: Path, fuxictr_zoo: Path) -> dict[str, Any]:
    """The fields of a `train` or `converge` job of fuxictr_side.py that say which model, on which data."""
    return {"data": str(fx_dir), "fuxictr_class": FUXICTR_CLASSES[model], "model_zoo_dir": str(fuxictr_zoo),
            "num_workers": 1, "model_params": fuxictr_params(model, spec.model_params)}
