"""The benchmark runner, the results store, model selection, the leaderboard and the tuner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ctrbench.app.cli import main
from ctrbench.app.options import RunOptions
from ctrbench.app.runner import Eta, bench, resolve_spec
from ctrbench.app.tuner import TuneResult, best_entry_yaml, grid_points, load_space, tune
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.synthetic import write_synthetic
from ctrbench.report.leaderboard import _delta, write_leaderboards
from ctrbench.store.record import KEY_FIELDS, RunRecord
from ctrbench.store.results import ResultsStore, select_best
from model_zoo.logistic_regression import LogisticRegression

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_data_dir(tmp_path_factory):
    """A 6,000-row synthetic dataset."""
    data_dir = tmp_path_factory.mktemp("small")
    write_synthetic(data_dir / "synthetic", rows=6_000, seed=7)
    return data_dir


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory):
    """Model configs small enough that a run takes well under a second; 8 epochs without early stopping,
    so that a run is long enough in epochs to be killed between two of them."""
    config_dir = tmp_path_factory.mktemp("configs")
    train = "train: {batch_size: 1024, epochs: 8, early_stop_patience: 8}"
    (config_dir / "dlrm.yaml").write_text(
        f"synthetic:\n  model: {{embedding_dim: 4, bottom_mlp_units: [8], top_mlp_units: [16]}}\n  {train}\n")
    (config_dir / "lr.yaml").write_text(f"synthetic:\n  {train}\n")
    return config_dir


def ctrbench(*args, cwd: Path, wait: bool = True):
    command = [sys.executable, "-m", "ctrbench", *map(str, args)]
    # one thread each: two processes with two threads each on two shared cores run many times slower
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---- results store ------------------------------------------------------------------------------

APPEND_MANY = """
import sys
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ResultsStore
store = ResultsStore(sys.argv[1])
for i in range(40):
    store.append(RunRecord.from_json({
        "model": sys.argv[2], "dataset": "d", "config_hash": "h", "seed": i, "status": "ok",
        "config": {"model": {}, "train": {}}, "valid": {}, "test": {}, "dense_params": 1, "embedding_params": 1,
        "mflop_per_example": 0.0, "samples_per_second": 1.0, "device": {"type": "cpu", "name": "x"},
        "command": "x" * 2000}))
"""


def test_two_processes_appending_to_one_store_lose_nothing(tmp_path):
    path = tmp_path / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", APPEND_MANY, str(path), name], env=env) for name in ("a", "b")]
    assert [w.wait() for w in writers] == [0, 0]
    records = ResultsStore(path).records()
    assert len(records) == 80
    assert {r.key for r in records} == {(m, "d", "h", i) for m in "ab" for i in range(40)}


def test_bad_store_line_names_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    complete = record("lr", "d", "h", 1, 0.8, 0.8, 0.4).to_line()
    unknown_status = complete.replace('"ok"', '"done"')
    for text, message in [(f'{complete}\n{{"model": \n', "results.jsonl:2: not a JSON record"),
                          (f'{complete}\n{{"model": "lr", "dataset": "d", "config_hash": "h", "seed": 2}}\n',
                           r"results.jsonl:2: record lacks \['status', 'config', 'valid', 'test'"),
                          (f"{complete}\n{unknown_status}\n",
                           r"results.jsonl:2: status 'done' is not one of \('ok', 'diverged'\)")]:
        path.write_text(text)
        with pytest.raises(CtrbenchError, match=message):
            ResultsStore(path).records()
    assert ResultsStore(tmp_path / "absent" / "results.jsonl").records() == []
    assert not (tmp_path / "absent").exists()  # reading a store that is not there creates nothing


# ---- model selection and the leaderboard --------------------------------------------------------

def key(record: dict) -> tuple:
    return tuple(record[name] for name in KEY_FIELDS)


def record(model, dataset, config_hash, seed, valid_auc, test_auc, test_logloss, status="ok", **extra) -> RunRecord:
    display = {"dlrm": "DLRM", "lr": "LR", "wukong": "Wukong"}[model]
    ok = status == "ok"
    return RunRecord.from_json({
        "model": model, "display_name": display, "dataset": dataset, "config_hash": config_hash, "seed": seed,
        "config": {"model": {"embedding_dim": 8}, "train": {"learning_rate": 0.001}}, "status": status,
        "valid": {"auc": valid_auc, "logloss": 0.3} if ok else {}, "test": {"auc": test_auc, "logloss": test_logloss} if ok else {},
        "best_epoch": 4, "epochs": 6, "samples_per_second": 1000.0 + seed, "dense_params": 1000, "embedding_params": 500,
        "mflop_per_example": 1.5, "device": {"type": "cpu", "name": "test cpu"},
        "command": f"ctrbench bench --dataset {dataset} --models {model}", **extra,
    })


def frappe_records():
    return [
        # dlrm: config "aaa" wins on validation (0.990 > 0.985) although "bbb" is better on test
        *(record("dlrm", "frappe", "aaa", 2021 + i, 0.990, auc, 0.15) for i, auc in enumerate([0.980, 0.982, 0.984])),
        *(record("dlrm", "frappe", "bbb", 2021 + i, 0.985, 0.999, 0.10) for i in range(3)),
        # wukong: "ccc" has the higher valid AUC on the seed that finished but diverged on the other: "ddd" wins
        record("wukong", "frappe", "ccc", 2021, 0.999, 0.999, 0.05),
        record("wukong", "frappe", "ccc", 2022, None, None, None, status="diverged"),
        record("wukong", "frappe", "ddd", 2021, 0.970, 0.9700, 0.20),
        # lr: every seed diverged: LossX
        record("lr", "frappe", "eee", 2021, None, None, None, status="diverged"),
    ]


def test_model_selection_uses_validation_never_test():
    best = select_best(frappe_records())
    chosen = {model: (result.config_hash, tried) for (_, model), (result, tried) in best.items()}
    assert chosen == {"dlrm": ("aaa", 2), "wukong": ("ddd", 2), "lr": ("eee", 1)}
    duplicated = frappe_records() + [record("dlrm", "frappe", "aaa", 2021, 0.5, 0.5, 0.9)]
    dlrm, _ = select_best(duplicated)[("frappe", "dlrm")]
    assert dlrm.metric("test", "auc") == [0.980, 0.982, 0.984]  # a key stored twice counts once, the first


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """A grouped table's lines by dataset cell (empty on a group's later rows) and model cell."""
    rows: dict[str, dict[str, str]] = {}
    dataset = None
    for line in markdown.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) > 2:
            dataset = cells[0].removeprefix("| ") or dataset
            rows.setdefault(dataset, {})[cells[1]] = line
    return rows


def test_leaderboard_numbers_next_to_the_paper(tmp_path, paper_dir):
    write_leaderboards(frappe_records(), tmp_path, "ctrbench leaderboard --out X")
    table2 = (tmp_path / "table2.md").read_text()
    rows = table_rows(table2)["[Frappe](frappe.md)"]
    # DLRM: mean 0.982, sample std 0.002 over its 3 seeds; paper 0.9846 -> delta -0.0026; LogLoss 0.15 vs 0.1465
    assert rows["DLRM"] == ("|  | DLRM | 3 | **0.9820 ± 0.0020** | 0.9846 | -0.0026 | "
                            "**0.1500 ± 0.0000** | 0.1465 | +0.0035 |")
    assert "| Wukong | 1 | 0.9700 | **0.9868** | -0.0168 | 0.2000 | 0.1757 | +0.0243 |" in rows["Wukong"]
    assert "| LR | 0 + 1 LossX | LossX | – | – | LossX | – | – |" in rows["LR"]
    assert "| AFN+ | – | not run | 0.9812 | – | not run | 0.2340 | – |" in rows["AFN+"]
    assert "| MicroVideo (paper only) | AFN+ | – | – | 0.7220 | – | – | **0.4142** | – |" in table2
    assert "Generated by `ctrbench leaderboard --out X` from the runs made by:" in table2
    assert "- `ctrbench bench --dataset frappe --models dlrm`" in table2

    table3 = (tmp_path / "table3.md").read_text()
    assert "| [Frappe](frappe.md) | AFN+ | – | 13,607,961 | – | – | 81.45 | – | – |" in table3
    assert "|  | DLRM | 1,500 | 1,527,073 | 500 / 1,000 | 1.50 | 4.99 | 3,022 | test cpu |" in table3

    page = (tmp_path / "frappe.md").read_text()
    assert "| DLRM | 3 | 0.9900 ± 0.0000 | **0.9820 ± 0.0020** |" in page
    assert "| 4.0 | 2 | `aaa` |" in page
    assert "![Test AUC vs MFLOP per example on Frappe](frappe_auc_vs_mflop.png)" in page
    assert (tmp_path / "frappe_auc_vs_mflop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dataset_page_marks_a_bf16_config(tmp_path):
    bf16 = record("dlrm", "frappe", "fff", 2021, 0.999, 0.99, 0.1)
    bf16.config.train["precision"] = "bf16"
    write_leaderboards([*frappe_records(), bf16], tmp_path, "ctrbench leaderboard --out X")
    assert "| 3 | `fff` bf16 |" in (tmp_path / "frappe.md").read_text()  # chosen on validation, 3 configs tried


def test_delta_rounds_before_its_sign():
    assert [_delta(0.98679, 0.9868), _delta(0.9853, 0.9846), _delta(0.9, 0.91), _delta(None, 0.9)] == [
        "+0.0000", "+0.0007", "-0.0100", "–"]


def test_leaderboard_regenerated_is_byte_identical(tmp_path):
    records = frappe_records() + [record("dlrm", "synthetic", "fff", 2021, 0.8, 0.79, 0.5)]
    first = write_leaderboards(records, tmp_path / "a", "ctrbench leaderboard")
    second = write_leaderboards(list(reversed(records)), tmp_path / "b", "ctrbench leaderboard")
    names = sorted(p.name for p in first)
    assert names == sorted(p.name for p in second) == [
        "frappe.md", "frappe_auc_vs_mflop.png", "synthetic.md", "synthetic_auc_vs_mflop.png", "table2.md", "table3.md"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_only_runs_on_the_latest_build_of_a_dataset_count(tmp_path):
    """Frappe rebuilt (another content hash): the run on the old build, however good, is left out."""
    old = record("dlrm", "frappe", "old", 2021, 0.999, 0.999, 0.01, data_hash="d1", finished_at="2026-01-01T00:00:00Z")
    new = record("dlrm", "frappe", "new", 2021, 0.900, 0.900, 0.30, data_hash="d2", finished_at="2026-02-01T00:00:00Z")
    write_leaderboards([new, old], tmp_path, "ctrbench leaderboard")
    page = (tmp_path / "frappe.md").read_text()
    assert "| DLRM | 1 | 0.9000 | **0.9000** |" in page and "`new`" in page and "`old`" not in page
    assert "Left out: 1 run on Frappe made on another build of its data" in page
    assert "Left out: 1 run on Frappe" in (tmp_path / "table2.md").read_text()


# ---- bench ----------------------------------------------------------------------------------------

def test_eta_uses_each_models_mean_then_the_overall_mean():
    eta = Eta()
    assert eta.remaining(["dlrm"]) is None
    eta.add("dlrm", 10.0)
    eta.add("dlrm", 20.0)
    eta.add("lr", 3.0)
    # dlrm runs take 15 s on average, lr 3 s; an untimed model is guessed at the mean of all runs, 11 s
    assert eta.remaining(["dlrm", "lr", "lr", "wukong"]) == pytest.approx(15 + 3 + 3 + 11)


def test_diverged_run_is_recorded_and_the_benchmark_continues(small_data_dir, tiny_configs, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.setattr(LogisticRegression, "forward", lambda self, batch: (self.bias * float("nan")).expand(len(batch)))
    results = tmp_path / "results.jsonl"
    options = RunOptions(data_dir=small_data_dir, results_path=results, config_dir=tiny_configs, progress=False)
    records = bench("synthetic", ["lr", "dlrm"], options=options)
    assert [(r.model, r.status) for r in records] == [("lr", "diverged"), ("dlrm", "ok")]
    assert vars(records[0].diverged) == {"step": 1, "last_finite_loss": None, "what": "non-finite loss"}
    assert "diverged (LossX)" in capsys.readouterr().err
    assert not list((tmp_path / "checkpoints").glob("*"))  # nothing left behind

    again = bench("synthetic", ["lr", "dlrm"], options=options)
    assert again == records and len(lines(results)) == 2  # a diverged run is a result, not retried
    write_leaderboards(records, tmp_path / "boards", "ctrbench leaderboard")
    assert "| LR | 0 + 1 LossX | – | LossX |" in (tmp_path / "boards" / "synthetic.md").read_text()


def bench_args(data_dir: Path, config_dir: Path) -> list[str]:
    return ["bench", "--dataset", "synthetic", "--models", "dlrm,lr", "--seeds", "2", "--data-dir", str(data_dir),
            "--config-dir", str(config_dir), "--results", "results.jsonl", "--no-progress"]


@contextlib.contextmanager
def one_thread():
    """Train in this process as the subprocesses do (OMP_NUM_THREADS=1), so that results match bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def outcomes(directory: Path) -> list[tuple]:
    """What a benchmark computed (everything but timings), run by run, in key order."""
    records = sorted((json.loads(line) for line in lines(directory / "results.jsonl")), key=key)
    return [(key(r), r["status"], r["valid"], r["test"], r["best_epoch"], r["epochs"], r["steps"],
             [(h["epoch"], h["train_loss"], h["valid_auc"], h["valid_logloss"]) for h in r["history"]])
            for r in records]


def table2(directory: Path) -> list[str]:
    """The rows of the leaderboard's Table 2 (not the commands it lists) for the results in `directory`."""
    with contextlib.chdir(directory):
        assert main(["leaderboard", "--results", "results.jsonl", "--out", "boards"]) == 0
    return [line for line in (directory / "boards" / "table2.md").read_text().splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def uninterrupted(small_data_dir, tiny_configs, tmp_path_factory):
    """The benchmark of `bench_args` run from start to end, once, for the interrupted ones to match."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    with contextlib.chdir(directory), one_thread():
        assert main(bench_args(small_data_dir, tiny_configs)) == 0
    return outcomes(directory), table2(directory)


def wait_for_checkpoint(process: subprocess.Popen, checkpoints: Path) -> Path:
    """The 2nd run's checkpoint, as soon as it is saved (its first epoch finished): the run is then in an epoch."""
    deadline = time.time() + 300
    while not (found := list(checkpoints.glob("synthetic_dlrm_*_2022.pt"))):
        assert process.poll() is None and time.time() < deadline, "benchmark ended before it could be stopped"
        time.sleep(0.005)
    return found[0]


def resume(args: list[str], directory: Path, capsys) -> str:
    """Rerun the benchmark in `directory` to the end; its stderr."""
    capsys.readouterr()
    with contextlib.chdir(directory), one_thread():
        assert main(args) == 0
    err = capsys.readouterr().err
    assert "4 runs planned on synthetic: 1 already in results.jsonl, 3 to train" in err
    return err


def test_killed_benchmark_resumes_to_the_same_table(small_data_dir, tiny_configs, uninterrupted, tmp_path, capsys):
    """SIGKILL a benchmark mid-run (after an epoch of its second run); the rerun resumes that run from its
    checkpoint and ends with the same results and Table 2 as a benchmark that was never interrupted."""
    args = bench_args(small_data_dir, tiny_configs)
    process = ctrbench(*args, cwd=tmp_path, wait=False)
    wait_for_checkpoint(process, tmp_path / "checkpoints")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(lines(tmp_path / "results.jsonl")) == 1

    assert "[1/3] dlrm seed 2022 resuming after epoch" in resume(args, tmp_path, capsys)
    assert not list((tmp_path / "checkpoints").iterdir())
    assert (outcomes(tmp_path), table2(tmp_path)) == uninterrupted


@pytest.mark.parametrize("stop, checkpoint_dir", [(signal.SIGINT, None), (signal.SIGTERM, "elsewhere")],
                         ids=["SIGINT", "SIGTERM with --checkpoint-dir"])
def test_interrupted_benchmark_stops_cleanly_and_resumes_to_the_same_results(
        stop, checkpoint_dir, small_data_dir, tiny_configs, uninterrupted, tmp_path, capsys):
    """Ctrl-C or SIGTERM in the middle of an epoch of the 2nd run: the 1st run stays stored, the 2nd is
    abandoned with its last finished epoch saved, and the process exits 128 + signal with one line
    saying how to resume. The rerun resumes from that epoch and stores exactly what a benchmark that
    was never interrupted stores; `--checkpoint-dir` puts the checkpoints where it says."""
    args = bench_args(small_data_dir, tiny_configs) + (["--checkpoint-dir", checkpoint_dir] if checkpoint_dir else [])
    checkpoints = tmp_path / (checkpoint_dir or "checkpoints")
    process = ctrbench(*args, cwd=tmp_path, wait=False)
    checkpoint = wait_for_checkpoint(process, checkpoints)
    process.send_signal(stop)
    _, err = process.communicate(timeout=300)

    assert process.returncode == 128 + stop.value
    assert err.splitlines()[-1] == (f"interrupted ({stop.name}): every finished run is kept in results.jsonl; rerun "
                                    "the same command to resume (the interrupted run restarts from its last "
                                    "finished epoch)")
    assert "Traceback" not in err
    finished = err.count("[2/4] dlrm seed 2022 epoch ")
    assert 1 <= finished < 8  # the signal came after epoch `finished` and before the next one ended
    assert torch.load(checkpoint, weights_only=False)["loop"]["epoch"] == finished
    assert [(r["model"], r["seed"]) for r in map(json.loads, lines(tmp_path / "results.jsonl"))] == [("dlrm", 2021)]
    assert not [p.name for p in [*tmp_path.iterdir(), *checkpoints.iterdir()] if p.name.startswith(".")]  # no temp files

    assert f"[1/3] dlrm seed 2022 resuming after epoch {finished} from" in resume(args, tmp_path, capsys)
    assert not list(checkpoints.iterdir())
    assert (outcomes(tmp_path), table2(tmp_path)) == uninterrupted


def test_two_benchmark_processes_share_the_work(small_data_dir, tiny_configs, tmp_path):
    processes = [ctrbench(*bench_args(small_data_dir, tiny_configs), cwd=tmp_path, wait=False) for _ in range(2)]
    outputs = [p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    keys = [key(json.loads(line)) for line in lines(tmp_path / "results.jsonl")]
    assert len(keys) == len(set(keys)) == 4  # each run trained and recorded exactly once


# ---- tune -----------------------------------------------------------------------------------------

def write_space(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_space_axes_and_grid_order(tmp_path):
    space = write_space(tmp_path / "space.yaml", """
tuner_space:
  model:
    embedding_dim: [4, 8]
    top_mlp_units: [[16], [32, 16]]
  train:
    learning_rate: 1.0e-3
""")
    axes = load_space(space, "dlrm")
    assert axes == {"model": {"embedding_dim": [4, 8], "top_mlp_units": [[16], [32, 16]]},
                    "train": {"learning_rate": [1.0e-3]}}
    assert [(p["model"]["embedding_dim"], p["model"]["top_mlp_units"]) for p in grid_points(axes)] == [
        (4, [16]), (4, [32, 16]), (8, [16]), (8, [32, 16])]
    assert all(p["train"] == {"learning_rate": 1.0e-3} for p in grid_points(axes))


@pytest.mark.parametrize("text, message", [
    ("tuner_space:\n  model: {embeding_dim: [4, 8]}\n",
     "space.yaml: tuner_space.model: unknown key 'embeding_dim' (did you mean 'embedding_dim'?)"),
    ("tuner_space:\n  train: {learning_rate: [0.1, fast]}\n",
     "space.yaml: tuner_space.train.learning_rate: expected float, got 'fast'"),
    ("tuner_space:\n  train: {learning_rate: []}\n", "space.yaml: tuner_space.train.learning_rate: an empty list"),
    ("model: {embedding_dim: [4, 8]}\n", "space.yaml: expected a single top-level key 'tuner_space'"),
])
def test_bad_space_is_one_line_error(tmp_path, text, message):
    with pytest.raises(CtrbenchError) as error:
        load_space(write_space(tmp_path / "space.yaml", text), "dlrm")
    assert message in str(error.value)


def test_tune_2x2_grid_keeps_the_best_by_validation_auc(small_data_dir, tiny_configs, tmp_path, capsys):
    space = write_space(tmp_path / "space.yaml", """
tuner_space:
  model: {embedding_dim: [2, 8]}
  train: {learning_rate: [1.0e-4, 3.0e-3], epochs: 2}
""")
    results, out = tmp_path / "results.jsonl", tmp_path / "best.yaml"
    args = ["tune", "--model", "dlrm", "--dataset", "synthetic", "--space", space, "--data-dir", small_data_dir,
            "--config-dir", tiny_configs, "--results", results, "--out", out, "--no-progress"]
    assert main([str(a) for a in args]) == 0
    records = [json.loads(line) for line in lines(results)]
    assert len({r["config_hash"] for r in records}) == 4
    assert {(r["config"]["model"]["embedding_dim"], r["config"]["train"]["learning_rate"]) for r in records} == {
        (2, 1e-4), (2, 3e-3), (8, 1e-4), (8, 3e-3)}
    best = max(records, key=lambda r: r["valid"]["auc"])
    entry = out.read_text()
    assert f"(config {best['config_hash']})" in entry and entry in capsys.readouterr().out

    # the written entry is ready to paste: as a config file it reproduces the best run's config exactly
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "dlrm.yaml").write_text(entry)
    assert yaml.safe_load(entry)["synthetic"]["train"]["epochs"] == 2
    spec = resolve_spec("dlrm", "synthetic", 2021, config_dir)
    assert spec.config_hash(best["data_hash"]) == best["config_hash"]

    assert main([str(a) for a in args]) == 0  # a rerun trains nothing and writes the same entry
    assert "4 runs planned on synthetic: 4 already in" in capsys.readouterr().err
    assert len(lines(results)) == 4 and out.read_text() == entry


def test_tune_rejects_a_set_that_the_space_also_sets(tmp_path):
    space = write_space(tmp_path / "space.yaml", "tuner_space:\n  train: {learning_rate: [1.0e-3, 3.0e-3]}\n")
    with pytest.raises(CtrbenchError, match=r"--set train.learning_rate: also set in .*space.yaml"):
        tune("dlrm", "synthetic", space, options=RunOptions(results_path=tmp_path / "r.jsonl", progress=False,
                                                            overrides={"train": {"learning_rate": 0.01}}))


def test_best_entry_lists_only_non_default_training_values():
    records = [record("dlrm", "synthetic", "abc", 2021, 0.8, 0.79, 0.5)]
    records[0].config.train = {"batch_size": 1024, "epochs": 100, "learning_rate": 0.003, "monitor": {"auc": 1.0}}
    result, _ = select_best(records)[("synthetic", "dlrm")]
    text = best_entry_yaml(TuneResult({"model": {}, "train": {}}, [result]), "ctrbench tune ...")
    assert text.splitlines()[-3:] == ["synthetic:", "  model: {embedding_dim: 8}", "  train: {batch_size: 1024, learning_rate: 0.003}"]


def test_commands_are_shown_as_a_user_would_type_them():
    from ctrbench.report.leaderboard import portable_command

    machine = (f"ctrbench bench --dataset frappe --data-dir /work/data --results {REPO}/leaderboards/results.jsonl "
               "--checkpoint-dir /tmp/x --workers 2 --no-progress --set model.embedding_dim=128 --seeds 3")
    assert portable_command(machine) == ("ctrbench bench --dataset frappe --results leaderboards/results.jsonl "
                                         "--set model.embedding_dim=128 --seeds 3")
    assert portable_command("ctrbench bench --data-dir=/abs/data --results /elsewhere/r.jsonl") == \
        "ctrbench bench --results r.jsonl"
