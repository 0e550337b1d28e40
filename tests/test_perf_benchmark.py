"""The performance benchmark's pieces that run fast: matmul probe, workers, FuxiCTR export, report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import polars as pl
import pytest
import torch

from benchmarks import ours
from benchmarks.report import paired_ratios, render, spread
from benchmarks.fuxictr_bridge import (
    FUXICTR_DLRM_NUMERIC,
    FUXICTR_WUKONG_NUMERIC,
    export_for_fuxictr,
    fuxictr_cannot_run,
    fuxictr_differences,
    fuxictr_params,
    preprocess_job,
    write_csvs,
)
from benchmarks.measure import matmul_peak_gflops, run_measured, run_worker
from benchmarks.parts.scaling import scaling_point
from benchmarks.parts.train import frappe_config_error, train_jobs
from ctrbench.app.runner import resolve_spec
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_split
from ctrbench.data.features import DatasetWriter, FeatureMap, FeatureSpec, to_parquet_frame
from ctrbench.store.record import BASE_SEED


def write_mixed_dataset(directory, rows: int = 40) -> FeatureMap:
    """Two categorical and one numeric feature, the feature types the FuxiCTR export handles."""
    rng = np.random.default_rng(0)
    specs = [FeatureSpec(name="user", type="categorical", vocab_size=6, padding_idx=0, oov_idx=1),
             FeatureSpec(name="price", type="numeric", transform="none"),
             FeatureSpec(name="item", type="categorical", vocab_size=9, padding_idx=0, oov_idx=1)]
    frame = pl.DataFrame({"user": rng.integers(0, 6, rows), "price": rng.normal(size=rows),
                          "item": rng.integers(0, 9, rows), "label": (np.arange(rows) % 2).astype(np.float32)})
    with DatasetWriter(directory) as writer:
        for split in ("train", "valid", "test"):
            writer.write_split(split, to_parquet_frame(frame, "label", specs))
        return writer.commit(FeatureMap(dataset="mixed", label="label", features=specs))


def test_matmul_peak_is_flops_over_best_time():
    """2 m k n FLOPs over the shortest timed call. A clock that makes the three timed calls last 0.5 s,
    0.25 s and 0.4 s: [64, 32] x [32, 16] is 2 * 64 * 32 * 16 = 65,536 FLOPs, so 65,536 / 0.25 = 262,144
    FLOP/s = 0.000262144 GFLOP/s (the untimed first call reads no clock)."""
    ticks = iter([10.0, 10.5, 11.0, 11.25, 12.0, 12.4])
    assert matmul_peak_gflops((64, 32, 16), repeats=3, clock=lambda: next(ticks)) == 262_144 / 1e9
    assert next(ticks, None) is None  # two clock reads per timed call, none else
    ticks = iter([0.0, 2.0, 5.0, 6.0])  # 2 s then 1 s: the best is the later one
    assert matmul_peak_gflops((10, 20, 30), repeats=2, clock=lambda: next(ticks)) == 12_000 / 1.0 / 1e9


def test_spread_and_paired_ratios_by_hand():
    assert spread([3.0, 1.0, 2.0], ".1f") == "2.0 (1.0-3.0)"
    assert spread([5.0], ".1f") == "5.0"
    rows = [{"repeat": 0, "side": "a", "x": 6.0}, {"repeat": 0, "side": "b", "x": 2.0},
            {"repeat": 1, "side": "b", "x": 4.0}, {"repeat": 1, "side": "a", "x": 2.0},
            {"repeat": 2, "side": "a", "x": 9.0}]  # repeat 2 has no partner and is left out
    assert paired_ratios(rows, "x", "a", "b") == [3.0, 0.5]


def test_export_for_fuxictr_keeps_indices_values_and_vocabularies(tmp_path):
    fmap = write_mixed_dataset(tmp_path / "mixed")
    out = export_for_fuxictr(fmap, tmp_path / "fx")
    spec = json.loads((out / "feature_map.json").read_text())
    assert spec["labels"] == ["label"]
    assert [list(f) for f in spec["features"]] == [["user"], ["price"], ["item"]]
    assert spec["features"][2]["item"] == {"source": "", "type": "categorical", "vocab_size": 9, "padding_idx": 0}
    assert spec["features"][1]["price"]["type"] == "numeric"
    batch = load_split(fmap, "valid")
    arrays = np.load(out / "valid.npz")
    np.testing.assert_array_equal(arrays["user"], batch.categorical[:, 0].numpy())
    np.testing.assert_array_equal(arrays["item"], batch.categorical[:, 1].numpy())
    np.testing.assert_array_equal(arrays["price"], batch.numeric[:, 0].numpy())
    np.testing.assert_array_equal(arrays["label"], batch.label.numpy())


def test_csvs_for_fuxictr_preprocessing_take_the_fields_from_the_feature_map(tmp_path):
    fmap = write_mixed_dataset(tmp_path / "mixed")
    with pytest.raises(CtrbenchError, match=r"features \['price'\] are not categorical"):
        write_csvs(fmap, tmp_path / "csv")
    categorical = dataclasses.replace(fmap, features=[f for f in fmap.features if f.type == "categorical"])
    out = write_csvs(categorical, tmp_path / "csv")
    test = pl.read_csv(out / "test.csv")
    assert test.columns == ["label", "user", "item"]  # BARS x1 layout: the label, then the fields in map order
    batch = load_split(fmap, "test")
    np.testing.assert_array_equal(test["item"].to_numpy(), batch.categorical[:, 1].numpy())
    job = preprocess_job(categorical, out, tmp_path / "fx", threads=2)
    assert job["feature_cols"] == [{"name": ["user", "item"], "active": True, "dtype": "str", "type": "categorical"}]
    assert (job["dataset_id"], job["valid_csv"]) == ("mixed", str(out / "valid.csv"))


def test_fuxictr_params_match_names_and_reject_unmatched_structures():
    dlrm = {"embedding_dim": 10, "bottom_mlp_units": [], "top_mlp_units": [400, 400], "interaction": "cat",
            "top_mlp_dropout": 0.4, "batch_norm": True}
    assert fuxictr_params("dlrm", dlrm) == {"embedding_dim": 10, "top_mlp_units": [400, 400], "bottom_mlp_units": [],
                                            "top_mlp_dropout": 0.4, "interaction_op": "cat", "batch_norm": True}
    with pytest.raises(CtrbenchError, match="full cross network"):
        fuxictr_params("dcnv2", {"embedding_dim": 10, "model_structure": "parallel", "num_cross_layers": 2,
                                 "cross_network": "low_rank"})
    with pytest.raises(CtrbenchError, match="no such model"):
        fuxictr_params("lr", {})


# FuxiCTR's model_params for each model's Frappe entry in model_zoo/configs (names as in FuxiCTR 2.3.10's
# AFN.py, AutoInt.py, FinalMLP.py, MaskNet.py and WuKong.py); our defaults fill what a config leaves out
FRAPPE_FUXICTR_PARAMS = {
    "afn_plus": {"embedding_dim": 10, "ensemble_dnn": True, "dnn_hidden_units": [400, 400, 400],
                 "dnn_activations": "relu", "dnn_dropout": 0.2, "afn_hidden_units": [400], "afn_activations": "relu",
                 "afn_dropout": 0.4, "logarithmic_neurons": 1000, "batch_norm": False},
    "autoint_plus": {"embedding_dim": 10, "dnn_hidden_units": [400, 400, 400], "dnn_activations": "relu",
                     "attention_layers": 5, "num_heads": 4, "attention_dim": 128, "net_dropout": 0.1,
                     "batch_norm": True, "layer_norm": True, "use_scale": True, "use_wide": False, "use_residual": True},
    "finalmlp": {"embedding_dim": 10, "mlp1_hidden_units": [400], "mlp1_hidden_activations": "relu",
                 "mlp1_dropout": 0.4, "mlp1_batch_norm": True, "mlp2_hidden_units": [100],
                 "mlp2_hidden_activations": "relu", "mlp2_dropout": 0.4, "mlp2_batch_norm": True, "use_fs": True,
                 "fs_hidden_units": [400], "fs1_context": ["user"], "fs2_context": ["item"], "num_heads": 5},
    "masknet": {"embedding_dim": 10, "model_type": "ParallelMaskNet", "dnn_hidden_units": [400, 400, 400],
                "dnn_hidden_activations": "relu", "parallel_num_blocks": 3, "parallel_block_dim": 50,
                "reduction_ratio": 2.0, "net_dropout": 0.1, "emb_layernorm": False, "net_layernorm": True},
    "wukong": {"embedding_dim": 64, "num_wukong_layers": 2, "lcb_features": 16, "fmb_features": 16,
               "fmb_mlp_units": [256, 256], "fmb_mlp_activations": "relu", "fmp_rank_k": 16,
               "mlp_hidden_units": [400, 400], "mlp_hidden_activations": "relu", "mlp_batch_norm": False,
               "layer_norm": True, "net_dropout": 0.2},
}


@pytest.mark.parametrize("model", sorted(FRAPPE_FUXICTR_PARAMS))
def test_fuxictr_params_of_each_frappe_config(model):
    assert fuxictr_params(model, resolve_spec(model, "frappe", BASE_SEED).model_params) == FRAPPE_FUXICTR_PARAMS[model]


def test_fuxictr_params_of_the_other_structures_and_what_has_no_counterpart():
    serial = {"embedding_dim": 10, "structure": "serial", "serial_block_units": [400, 400, 400], "reduction_ratio": 4,
              "dropout": 0.5, "embedding_layer_norm": False, "block_layer_norm": True}  # MaskNet's MovieLens entry
    assert fuxictr_params("masknet", serial) == {
        "embedding_dim": 10, "model_type": "SerialMaskNet", "dnn_hidden_units": [400, 400, 400],
        "dnn_hidden_activations": "relu", "reduction_ratio": 4, "net_dropout": 0.5, "emb_layernorm": False,
        "net_layernorm": True}
    assert fuxictr_params("wukong", {"fm": "full"})["fmp_rank_k"] is None  # FuxiCTR's vanilla FM: rank_k None
    assert fuxictr_params("autoint_plus", {"dnn_hidden_units": []})["dnn_hidden_units"] == []  # plain AutoInt
    for model, params, message in (
            ("wukong", {"fm": "attentive"}, "important_features, small_features and fm 'attentive'"),
            ("wukong", {"important_features": ["user"]}, "important_features"),
            ("wukong", {"use_residual": False}, "wukong.use_residual: False has no FuxiCTR counterpart"),
            ("afn_plus", {"log_clamp_min": 1e-7}, "afn_plus.log_clamp_min: 1e-07 has no FuxiCTR counterpart")):
        with pytest.raises(CtrbenchError, match=message):
            fuxictr_params(model, params)


def test_ours_train_job_times_the_requested_steps(tmp_path):
    fmap = write_mixed_dataset(tmp_path / "mixed")
    result = ours.train_job({
        "data": str(fmap.root), "model": "dlrm", "seed": 0, "warmup_steps": 1, "steps": 2, "eval_batch_size": 16,
        "model_params": {"embedding_dim": 4, "bottom_mlp_units": [], "top_mlp_units": [8]},
        "train": {"batch_size": 16, "learning_rate": 1e-3, "embedding_regularizer": 0.1, "net_regularizer": 0.0,
                  "max_grad_norm": 10.0, "precision": "bf16"}})
    assert result["steps"] == 2
    assert result["samples_per_second"] > 0 and result["inference_samples_per_second"] > 0
    assert result["forward_mflop_per_example"] > 0


def test_train_jobs_pair_each_model_and_alternate_the_order(tmp_path):
    args = argparse.Namespace(models=["dlrm", "lr", "wukong"], threads=2, warmup=1, steps=2, fuxictr_zoo=tmp_path,
                              precisions=["fp32", "bf16"])
    fmap = write_mixed_dataset(tmp_path / "mixed")
    categorical = dataclasses.replace(fmap, features=[f for f in fmap.features if f.type == "categorical"])
    order = lambda repeat, fmap=categorical: [(f["model"], side, f["precision"]) for f, side, _ in  # noqa: E731
                                              train_jobs(args, "frappe", fmap, tmp_path / "fx", repeat)]
    assert order(0) == [("dlrm", "ctrbench", "fp32"), ("dlrm", "ctrbench", "bf16"), ("dlrm", "fuxictr", "fp32"),
                        ("lr", "ctrbench", "fp32"), ("lr", "ctrbench", "bf16"),  # no LR in FuxiCTR
                        ("wukong", "ctrbench", "fp32"), ("wukong", "ctrbench", "bf16"), ("wukong", "fuxictr", "fp32")]
    assert order(1) == [("dlrm", "fuxictr", "fp32"), ("dlrm", "ctrbench", "bf16"), ("dlrm", "ctrbench", "fp32"),
                        ("lr", "ctrbench", "bf16"), ("lr", "ctrbench", "fp32"),
                        ("wukong", "fuxictr", "fp32"), ("wukong", "ctrbench", "bf16"), ("wukong", "ctrbench", "fp32")]
    # FuxiCTR's DLRM cannot take numeric features: on such data only ours runs
    assert ("dlrm", "fuxictr", "fp32") not in order(0, fmap) and fuxictr_cannot_run("dlrm", fmap) == FUXICTR_DLRM_NUMERIC
    assert fuxictr_cannot_run("dcnv2", fmap) is None and fuxictr_cannot_run("lr", fmap) == "FuxiCTR has no such model"
    # Wukong runs on both sides there, the numeric embedding named as a difference
    assert ("wukong", "fuxictr", "fp32") in order(0, fmap)
    assert fuxictr_differences("wukong", fmap)[-1] == FUXICTR_WUKONG_NUMERIC
    assert FUXICTR_WUKONG_NUMERIC not in fuxictr_differences("wukong", categorical)
    jobs = {(side, f["precision"]): job for f, side, job in
            train_jobs(args, "frappe", categorical, tmp_path / "fx", 0) if f["model"] == "dlrm"}
    ours, bf16, theirs = jobs["ctrbench", "fp32"], jobs["ctrbench", "bf16"], jobs["fuxictr", "fp32"]
    for key in ("steps", "warmup_steps", "threads", "eval_batch_size", "seed"):
        assert ours[key] == theirs[key]  # matched settings
    assert ours["train"] == {**theirs["train"], "precision": "fp32"} and bf16["train"]["precision"] == "bf16"
    assert theirs["model_params"]["embedding_dim"] == ours["model_params"]["embedding_dim"]


def test_a_frappe_config_that_names_frappe_features_is_skipped_on_other_data(tmp_path):
    fmap = write_mixed_dataset(tmp_path / "mixed")
    assert frappe_config_error("finalmlp", fmap) is None  # its gates' context features `user` and `item` exist
    renamed = dataclasses.replace(fmap, features=[dataclasses.replace(f, name=f"f{i}") for i, f in enumerate(fmap.features)])
    assert "model.fs1_context: unknown feature 'user'" in frappe_config_error("finalmlp", renamed)
    assert frappe_config_error("wukong", renamed) is None
    args = argparse.Namespace(models=["finalmlp", "wukong"], threads=2, warmup=1, steps=2, fuxictr_zoo=tmp_path,
                              precisions=["fp32"])
    assert {f["model"] for f, _, _ in train_jobs(args, "other", renamed, tmp_path / "fx", 0)} == {"wukong"}


def test_run_worker_reads_the_last_stdout_line_and_the_childs_peak_rss(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text("import json, sys\nprint('noise')\njob = json.load(open(sys.argv[1]))\n"
                      "print(json.dumps({'doubled': 2 * job['x']}))\n")
    result = run_worker([sys.executable, str(script)], {"kind": "test", "x": 21})
    assert result["doubled"] == 42
    assert result["peak_rss_mib"] > 1 and result["wall_seconds"] > 0


def test_run_measured_names_the_failing_command():
    with pytest.raises(CtrbenchError, match="boom"):
        run_measured([sys.executable, "-c", "import sys; sys.exit('boom')"])


def test_scaling_point_mflops_is_flops_per_example_times_samples_per_second():
    torch.manual_seed(0)
    wukong = {"embedding_dim": 4, "num_layers": 1, "fmb_embeddings": 2, "lcb_embeddings": 2, "fm_rank": 2,
              "fmb_mlp_units": [8], "head_mlp_units": [8]}
    point = scaling_point(num_features=3, batch_size=8, wukong=wukong, steps=1)
    assert point["train_mflop_per_example"] > 0
    assert point["mflops"] == pytest.approx(point["train_mflop_per_example"] * point["samples_per_second"])


def _machine_header(**extra):
    return {"command": "python -m benchmarks.run X", "machine": {"cpu": "CPU", "cores": 2, "threads": 2, "torch": "t"},
            "started": "2026-11-23 16:00 UTC", "minutes": 1.0, "load_before": 2.0, "load_after": 3.0, **extra}


def test_report_tables_by_hand():
    train = _machine_header(steps=8, warmup_steps=3, matmul_peak_gflops={"fp32": [90.0, 110.0], "bf16": [400.0]},
                            fuxictr_missing={"frappe wukong": "FuxiCTR has no such model"}, rows=[
        {"dataset": "frappe", "model": "dlrm", "side": side, "precision": precision, "repeat": r,
         "samples_per_second": sps, "inference_samples_per_second": inf, "peak_rss_mib": 500.0,
         "forward_mflop_per_example": 2.0}
        for side, precision, r, sps, inf in (
            ("ctrbench", "fp32", 0, 3000.0, 9000.0), ("ctrbench", "bf16", 0, 6000.0, 9000.0),
            ("fuxictr", "fp32", 0, 1000.0, 3000.0), ("fuxictr", "fp32", 1, 2000.0, 3000.0),
            ("ctrbench", "bf16", 1, 10000.0, 6000.0), ("ctrbench", "fp32", 1, 5000.0, 6000.0))])
    evaluation = _machine_header(predictions=10, rows=[
        {"side": "ctrbench", "repeat": 0, "seconds": 1.0, "auc": 0.75},
        {"side": "sklearn", "repeat": 0, "seconds": 4.0, "auc": 0.75}])
    text = render({"train": train, "eval": evaluation})
    # medians 4,000 (3,000-5,000) vs 1,500 (1,000-2,000); per-repeat ratios 3.0 and 2.5 -> median 2.75;
    # GFLOP/s = 4,000 x 3 x 2 MFLOP = 24 of the median fp32 peak 100; FuxiCTR's 1,500 x 6 MFLOP = 9
    assert ("| frappe | dlrm | fp32 | 4,000 (3,000-5,000) | 1,500 (1,000-2,000) | 2.75 (2.50-3.00)x "
            "| 7,500 (6,000-9,000) | 3,000 (3,000-3,000) | 2.50 (2.00-3.00)x | 24 (24%) / 9 (9%) "
            "| 500 (500-500) / 500 (500-500) |") in text
    # bf16: ratios 6.0 and 5.0; 8,000 x 6 MFLOP = 48 GFLOP/s of the bf16 peak 400
    assert "| frappe | dlrm | bf16 | 8,000 (6,000-10,000) | 1,500 (1,000-2,000) | 5.50 (5.00-6.00)x " in text
    assert "| 48 (12%) / 9 (9%) |" in text
    assert "No FuxiCTR row for frappe wukong: FuxiCTR has no such model." in text
    assert "| ctrbench | 1.00 | 0.750000000 |" in text
    assert "Speed-up: 4.0x" in text
    assert "`python -m benchmarks.run X`" in text and "load average 2.0 before, 3.0 after" in text


def test_scaling_section_gives_mflops_as_a_fraction_of_the_median_matmul_peak():
    row = {"sweep": "size", "num_layers": 2, "fmb_embeddings": 4, "fm_rank": 6, "fmb_mlp_units": [64, 64, 64],
           "features": 39, "batch_size": 64, "train_mflop_per_example": 2.5, "samples_per_second": 200.0,
           "mflops": 500.0}
    part = _machine_header(rows=[row], matmul_peak_gflops=[1.0, 3.0], matmul_size=[8, 4, 2], scaling_batch=64)
    text = render({"scaling": part})
    assert "| 2 | 4 | 6 | 3x64 | 39 | 64 | 2.50 | 200 | 500 | 25.0% |" in text  # 500 / (median 2 GFLOP/s)
    assert "1.0, 3.0 GFLOP/s" in text


def test_converge_section_lists_every_run_and_each_librarys_mean_per_precision():
    def run(precision, seed, auc):
        return {"precision": precision, "seed": seed, "epochs": 20, "valid_auc": auc + 0.001, "test_auc": auc,
                "test_logloss": 0.15}

    part = _machine_header(fuxictr=[run("fp32", 2021, 0.9855), run("fp32", 2022, 0.9849)],
                           ours=[run("fp32", 2021, 0.9850), run("fp32", 2022, 0.9840), run("bf16", 2021, 0.9845)])
    text = render({"converge": part})
    assert "| FuxiCTR 2.3.10 | fp32 | 2021 | 20 | 0.9865 | 0.9855 | 0.1500 |" in text
    assert "| ctrbench | bf16 | 2021 | 20 | 0.9855 | 0.9845 | 0.1500 |" in text
    # means 0.9852 and 0.9845; sample standard deviations of two values 0.0006 apart: 0.000424, 0.001 apart: 0.000707
    assert "| FuxiCTR 2.3.10 | fp32 | 2 | 0.9852 ± 0.0004 |" in text
    assert "| ctrbench | fp32 | 2 | 0.9845 ± 0.0007 |" in text
    assert "| ctrbench | bf16 | 1 | 0.9845 |" in text


def test_profile_section_gives_each_variant_and_the_eager_operator_tables():
    rows = [{"model": "dlrm", "precision": precision, "compiled": compiled, "samples_per_second": sps,
             "samples_per_cpu_second": 2 * sps, **({} if compiled else {"top_ops": f"table {precision}"})}
            for precision, compiled, sps in (("fp32", False, 100.0), ("fp32", True, 150.0), ("bf16", False, 300.0))]
    text = render({"profile": _machine_header(rows=rows, steps=3, warmup_steps=2)})
    assert "| dlrm | fp32 | yes | 150 | 300 |" in text and "| dlrm | bf16 | no | 300 | 600 |" in text
    assert "Top operators of the eager bf16 dlrm step" in text and "```\ntable bf16\n```" in text
    assert "Top operators of the eager fp32 dlrm step" in text


def test_train_section_names_skipped_models_and_each_models_parameters_and_differences():
    rows = [{"dataset": "frappe", "model": model, "side": side, "precision": "fp32", "repeat": 0,
             "samples_per_second": 1.0, "inference_samples_per_second": 1.0, "peak_rss_mib": 1.0,
             "forward_mflop_per_example": 1.0, "parameters": count}
            for model, side, count in (("wukong", "ctrbench", 2157489), ("wukong", "fuxictr", 2157521),
                                       ("dlrm", "ctrbench", 417651), ("dlrm", "fuxictr", 417651),
                                       ("lr", "ctrbench", 10))]
    part = _machine_header(steps=1, warmup_steps=1, matmul_peak_gflops={"fp32": [1.0], "bf16": [1.0]}, rows=rows,
                           fuxictr_missing={"frappe lr": "FuxiCTR has no such model"},
                           skipped={"other finalmlp": "model.fs1_context: unknown feature 'user'"},
                           fuxictr_differences={"frappe wukong": ["one", "two"]})
    text = render({"train": part})
    assert ("No row for other finalmlp: its Frappe config cannot be built on this data (model.fs1_context: "
            "unknown feature 'user').") in text
    assert "- frappe wukong: 2,157,489 / 2,157,521 parameters; one; two.\n- frappe dlrm: 417,651 / 417,651 parameters.\n" in text
    assert "- frappe lr" not in text  # no FuxiCTR side, no comparison
