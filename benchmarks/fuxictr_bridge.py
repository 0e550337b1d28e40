"""Our side of the bridge to FuxiCTR 2.3.10: our processed data, model configs and training settings in
FuxiCTR's formats, and which models FuxiCTR can run on which data.

The jobs built here run in FuxiCTR's own virtual environment through `benchmarks/fuxictr_side.py`, which
can import neither ctrbench nor anything that imports it (FuxiCTR needs polars < 2 and installs a
top-level `model_zoo` package); so everything that reads our data or configs is here.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from ctrbench.app.runner import RunSpec
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from model_zoo import get_model_class

# Our model -> FuxiCTR's class, fetched from reczoo/FuxiCTR (model_zoo/<Class>/src/<Class>.py at 5c42ceb, the
# commit that made it 2.3.10). AFN+ is its AFN with `ensemble_dnn`, AutoInt+ its AutoInt with a DNN; WuKong is
# the rewrite of v2.3.8 (ef890c6, "Update WuKong for reproducing"), whose code is unchanged up to 2.3.10.
FUXICTR_CLASSES = {"afn_plus": "AFN", "autoint_plus": "AutoInt", "dcnv2": "DCNv2", "dlrm": "DLRM",
                   "finalmlp": "FinalMLP", "masknet": "MaskNet", "xdeepfm": "xDeepFM", "wukong": "WuKong"}
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


def _with_defaults(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` completed with our constructor's defaults (a config names only what it changes)."""
    signature = inspect.signature(get_model_class(model).__init__).parameters.values()
    defaults = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    return {**defaults, **params}


def _require(model: str, p: dict[str, Any], **expected: Any) -> None:
    """A CtrbenchError naming the first of our options FuxiCTR's class cannot express."""
    for key, value in expected.items():
        if p[key] != value:
            raise CtrbenchError(f"{model}.{key}: {p[key]!r} has no FuxiCTR counterpart; only {value!r} is matched "
                                "against FuxiCTR")


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
    if model not in FUXICTR_CLASSES:
        raise CtrbenchError(f"{model}: FuxiCTR has no such model")
    p = _with_defaults(model, params)
    if model == "afn_plus":
        _require(model, p, log_clamp_min=1e-5)  # FuxiCTR's AFN clamps |e| at 1e-5, fixed
        return {"embedding_dim": p["embedding_dim"], "ensemble_dnn": p["ensemble_dnn"],
                "dnn_hidden_units": list(p["dnn_hidden_units"]), "dnn_activations": p["activation"],
                "dnn_dropout": p["dnn_dropout"], "afn_hidden_units": list(p["afn_hidden_units"]),
                "afn_activations": p["activation"], "afn_dropout": p["afn_dropout"],
                "logarithmic_neurons": p["logarithmic_neurons"], "batch_norm": p["batch_norm"]}
    if model == "autoint_plus":
        return {"embedding_dim": p["embedding_dim"], "dnn_hidden_units": list(p["dnn_hidden_units"]),
                "dnn_activations": p["dnn_activation"], "attention_layers": p["attention_layers"],
                "num_heads": p["num_heads"], "attention_dim": p["attention_dim"], "net_dropout": p["net_dropout"],
                "batch_norm": p["batch_norm"], "layer_norm": p["layer_norm"], "use_scale": p["use_scale"],
                "use_wide": p["use_wide"], "use_residual": p["use_residual"]}
    if model == "finalmlp":
        return {"embedding_dim": p["embedding_dim"],
                **{f"mlp{i}_{key}": value for i in (1, 2) for key, value in (
                    ("hidden_units", list(p[f"mlp{i}_hidden_units"])), ("hidden_activations", p["activation_name"]),
                    ("dropout", p[f"mlp{i}_dropout"]), ("batch_norm", p[f"mlp{i}_batch_norm"]))},
                "use_fs": p["use_feature_selection"], "fs_hidden_units": list(p["fs_hidden_units"]),
                "fs1_context": list(p["fs1_context"]), "fs2_context": list(p["fs2_context"]), "num_heads": p["num_heads"]}
    if model == "masknet":
        serial = p["structure"] == "serial"
        return {"embedding_dim": p["embedding_dim"], "model_type": "SerialMaskNet" if serial else "ParallelMaskNet",
                "dnn_hidden_units": list(p["serial_block_units"] if serial else p["parallel_mlp_units"]),
                "dnn_hidden_activations": p["activation_name"],
                **({} if serial else {"parallel_num_blocks": p["parallel_num_blocks"],
                                      "parallel_block_dim": p["parallel_block_dim"]}),
                "reduction_ratio": p["reduction_ratio"], "net_dropout": p["dropout"],
                "emb_layernorm": p["embedding_layer_norm"], "net_layernorm": p["block_layer_norm"]}
    # wukong: FuxiCTR's WuKong has the optimized or the full FM, always with both blocks, the residual and the
    # FMB's layer norm, and one embedding per feature (no important / small feature groups)
    _require(model, p, use_fmb=True, use_lcb=True, use_residual=True, fmb_layer_norm=True)
    if p["important_features"] or p["small_features"] or p["fm"] not in ("optimized", "full"):
        raise CtrbenchError("wukong: important_features, small_features and fm 'attentive' have no FuxiCTR "
                            "counterpart; only one embedding per feature and the optimized or full FM are matched")
    return {"embedding_dim": p["embedding_dim"], "num_wukong_layers": p["num_layers"],
            "lcb_features": p["lcb_embeddings"], "fmb_features": p["fmb_embeddings"],
            "fmb_mlp_units": list(p["fmb_mlp_units"]), "fmb_mlp_activations": "relu",
            "fmp_rank_k": p["fm_rank"] if p["fm"] == "optimized" else None,
            "mlp_hidden_units": list(p["head_mlp_units"]), "mlp_hidden_activations": "relu",
            "mlp_batch_norm": False, "layer_norm": p["layer_norm"], "net_dropout": p["dropout"]}


# Where our model and FuxiCTR's differ at the mapped config (checked on Frappe by parameter counts, which the
# train part records for both sides); the report prints these beside the throughput table.
FUXICTR_DIFFERENCES = {
    "afn_plus": ["same structure (FuxiCTR's AFN with `ensemble_dnn`); ours computes the logarithmic layer in "
                 "float32 under bf16 autocast, and its neurons' BatchNorm on a contiguous [B*d, N] layout (same "
                 "statistics)"],
    "autoint_plus": ["same structure (FuxiCTR's AutoInt with a DNN); ours follows FuxiCTR where it departs from the "
                     "paper: the residual is projected only when the width changes, and `use_scale` divides by "
                     "sqrt(head_dim)"],
    "finalmlp": ["FuxiCTR's fusion layer gives both streams' linear terms a bias, ours one (FuxiCTR: 1 parameter "
                 "more)"],
    "masknet": ["same structure (`structure: parallel` / `serial` = FuxiCTR's ParallelMaskNet / SerialMaskNet)"],
    "wukong": ["FuxiCTR's FMB MLP ends in a ReLU, ours in a linear layer (the paper: no activation on the FMB "
               "output)",
               "FuxiCTR's residual projection (a layer whose input count differs from nF + nL, e.g. the first) "
               "has a bias, ours not (FuxiCTR: nF + nL parameters more per such layer)",
               "`dropout` (FuxiCTR's `net_dropout`): FuxiCTR drops only in the FMB MLPs, ours also in the head "
               "MLP's hidden layers",
               "the head MLP without batch norm on both sides (FuxiCTR's `mlp_batch_norm: false`; its default is "
               "true); FuxiCTR draws the FM projection Y from N(0, 1), ours Xavier-normal"],
    "xdeepfm": ["FuxiCTR's linear (LR) term has no bias, ours one (ctrbench: 1 parameter more)"],
}
FUXICTR_WUKONG_NUMERIC = ("numeric features: ours feeds them through the bottom MLP into `dense_embeddings` "
                          "embedding(s) (the paper's dense embedding), FuxiCTR's WuKong embeds each one separately "
                          "(its FeatureEmbedding), so its interaction stack starts from more embeddings")


def fuxictr_differences(model: str, fmap: FeatureMap) -> list[str]:
    """How FuxiCTR's model differs from ours at the mapped config, on this data."""
    numeric = model == "wukong" and any(f.type == "numeric" for f in fmap.features)
    return FUXICTR_DIFFERENCES.get(model, []) + ([FUXICTR_WUKONG_NUMERIC] if numeric else [])


def shared_train_settings(spec: RunSpec) -> dict[str, Any]:
    """The training settings both sides share (FuxiCTR trains in float32 only)."""
    t = spec.train
    return {"batch_size": t.batch_size, "learning_rate": t.learning_rate, "embedding_regularizer": t.embedding_regularizer,
            "net_regularizer": t.net_regularizer, "max_grad_norm": t.max_grad_norm}


def model_job(model: str, spec: RunSpec, fx_dir: Path, fuxictr_zoo: Path) -> dict[str, Any]:
    """The fields of a `train` or `converge` job of fuxictr_side.py that say which model, on which data."""
    return {"data": str(fx_dir), "fuxictr_class": FUXICTR_CLASSES[model], "model_zoo_dir": str(fuxictr_zoo),
            "num_workers": 1, "model_params": fuxictr_params(model, spec.model_params)}
