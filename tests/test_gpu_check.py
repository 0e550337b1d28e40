"""benchmarks/gpu_check.py: the GPU proof's code paths, run small on the CPU (`--size tiny --device cpu`)."""

import json

import pytest
import torch

from benchmarks import gpu_check
from model_zoo import MODELS


def test_tiny_cpu_run_reports_every_part(tmp_path):
    """Every part ok; the CUDA-only layouts skipped with their reasons; figures consistent with each other."""
    out = tmp_path / "out"
    assert gpu_check.main(["--out", str(out), "--device", "cpu", "--size", "tiny"]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["status"] == "ok" and report["size"] == "tiny" and report["budget_seconds"] == 60
    assert report["command"] == f"python -m benchmarks.gpu_check --out {out} --device cpu --size tiny"
    assert report["environment"]["device"]["type"] == "cpu"
    assert {"torch", "torchrec", "fbgemm-gpu-cpu", "cuda"} <= set(report["environment"]["versions"])
    assert "git_commit" in report["environment"]
    parts = {part["name"]: part for part in report["parts"]}
    assert list(parts) == ["bench", "single_node", "distributed"]
    assert all(part["status"] == "ok" and part["error"] is None and part["seconds"] > 0 for part in parts.values())

    bench = parts["bench"]["figures"]
    assert bench["command"].startswith("ctrbench bench --dataset synthetic --models afn_plus,autoint_plus,")
    assert [run["model"] for run in bench["runs"]] == list(MODELS) == bench["models"]  # every zoo model, lr too
    assert all(run["status"] == "ok" and run["epochs"] == 3 and run["samples_per_second"] > 0 for run in bench["runs"])

    single = parts["single_node"]["figures"]
    assert [(r["model"], r["precision"]) for r in single["runs"]] == [
        ("dlrm", "fp32"), ("dlrm", "bf16"), ("wukong", "fp32"), ("wukong", "bf16")]
    assert [len(probes) for probes in single["matmul_peak_gflops"].values()] == [2, 2]  # before and after the runs
    for run in single["runs"]:
        assert run["status"] == "ok" and len(run["epoch_samples_per_second"]) == 2
        assert run["samples_per_second"] == run["epoch_samples_per_second"][-1]
        assert run["memory_kind"] == "peak_rss" and run["peak_memory_bytes"] > 50 * 2**20
        assert run["train_gflops"] == pytest.approx(3 * run["forward_mflop_per_example"] * run["samples_per_second"] / 1e3,
                                                    abs=0.01)
        peak = max(single["matmul_peak_gflops"][run["precision"]])
        assert run["fraction_of_matmul_peak"] == pytest.approx(run["train_gflops"] / peak, abs=1e-4)
        assert f"--set train.precision={run['precision']} --set train.epochs=2" in run["command"]

    distributed = {(r["sharding"], r["embedding_precision"]): r for r in parts["distributed"]["figures"]["runs"]}
    assert parts["distributed"]["figures"]["train_rows"] == 23 * 1000  # days 0-22 of 1,000 lines
    assert distributed["row_wise", "fp32"]["status"] == "skipped"
    assert distributed["row_wise", "fp32"]["reason"] == "torchrec does not offer row_wise sharding on cpu"
    for variant in (("row_wise", "bf16"), ("table_wise", "bf16")):
        assert distributed[variant]["status"] == "skipped" and distributed[variant]["reason"].startswith("bf16 tables need CUDA")
    resumed = distributed["table_wise", "fp32"]  # the only CPU variant, so the one stopped and resumed
    assert resumed["status"] == "ok" and resumed["layout_types"] == ["table_wise"]
    assert resumed["steps"] == 22 and resumed["stopped_at"] == resumed["resumed_at"] == 11  # 23,000 // 1,024 = 22
    assert [c.split(" --set")[0] for c in resumed["commands"]] == [
        "torchrun --standalone --nproc_per_node=1 -m ctrbench.distributed.train --config distributed_configs/criteo_dlrm.yaml"] * 2
    assert resumed["commands"][0].endswith("--stop-after 11") and "--stop-after" not in resumed["commands"][1]
    assert resumed["last_loss"] < resumed["first_loss"] and resumed["auc"] > 0.5
    assert resumed["memory_kind"] == "peak_rss" and len(resumed["peak_memory_bytes_per_rank"]) == 1
    assert (out / "logs" / "distributed_table_wise_fp32_stop.log").is_file()


def test_a_part_that_raises_or_fails_a_check_is_recorded_and_main_exits_1(tmp_path, monkeypatch):
    def raises(check):
        raise RuntimeError("no kernel image is available")

    def fails_a_check(check):
        return gpu_check.BenchPart("ctrbench bench ...", 0.1, [gpu_check.BenchRun("wukong", "diverged", None, 0.0, 1.0, 1)],
                                   ["dlrm", "wukong"])

    monkeypatch.setattr(gpu_check, "PARTS", {"a": raises, "b": fails_a_check})
    assert gpu_check.main(["--out", str(tmp_path), "--device", "cpu", "--size", "tiny"]) == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    (a, b) = report["parts"]
    assert report["status"] == "failed"
    assert a["status"] == "failed" and a["figures"] is None and "RuntimeError: no kernel image is available" in a["error"]
    assert b["status"] == "failed" and b["error"] == "dlrm: no run recorded; wukong: diverged"
    assert b["figures"]["runs"][0]["status"] == "diverged"


def test_cuda_asked_for_without_cuda_is_a_one_line_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_check.main(["--out", str(tmp_path), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "error: --device cuda: CUDA is not available on this machine; use --device cpu\n"
    assert not (tmp_path / "gpu_check.json").exists()


def test_cpu_peak_memory_is_reset_between_measurements():
    cpu = torch.device("cpu")
    gpu_check.reset_peak_memory(cpu)
    block = b"\x01" * (256 * 2**20)  # written, so resident
    kind, with_block = gpu_check.peak_memory(cpu)
    del block
    gpu_check.reset_peak_memory(cpu)
    _, without = gpu_check.peak_memory(cpu)
    assert kind == "peak_rss" and with_block - without >= 200 * 2**20
