import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctrbench.app.cli import main, model_summary

REPO = Path(__file__).resolve().parent.parent

TINY_TRAIN = ["--set", "train.epochs=2", "--set", "train.batch_size=2048", "--no-progress"]


def run_cli(*args):
    return main([str(a) for a in args])


def test_preprocess_train_bench_leaderboard_end_to_end(tmp_path, capsys):
    data_dir, results, boards = tmp_path / "data", tmp_path / "results.jsonl", tmp_path / "boards"
    assert run_cli("preprocess", "synthetic", "--out", data_dir / "synthetic") == 0
    assert (data_dir / "synthetic" / "feature_map.json").is_file()

    assert run_cli("train", "--model", "dlrm", "--dataset", "synthetic", "--data-dir", data_dir,
                   "--results", results, *TINY_TRAIN) == 0
    assert run_cli("bench", "--dataset", "synthetic", "--models", "dlrm,lr", "--seeds", "2", "--data-dir", data_dir,
                   "--results", results, *TINY_TRAIN) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    # train's run (seed 2021) is the same run as bench's first dlrm seed, so bench skipped it
    assert [(r["model"], r["seed"]) for r in records] == [("dlrm", 2021), ("dlrm", 2022), ("lr", 2021), ("lr", 2022)]
    for record in records:
        assert record["status"] == "ok" and 0.5 < record["test"]["auc"] <= 1
        assert record["epochs"] == 2 and record["mflop_per_example"] >= 0
        assert record["versions"]["torch"] and record["device"]["type"] == "cpu"
    archived = (REPO / "leaderboards" / "archive" / "results_2026-11-23.jsonl").read_text().splitlines()[0]
    assert list(records[0]) == list(json.loads(archived))  # the same fields, in the same order, as older records
    out = capsys.readouterr()
    assert "already in" in out.err and "DLRM" in out.out

    assert run_cli("leaderboard", "--results", results, "--out", boards) == 0
    board = (boards / "synthetic.md").read_text()
    assert "| DLRM | 2 |" in board and "ctrbench leaderboard --results" in board
    assert "- `ctrbench bench --dataset synthetic --models dlrm,lr --seeds 2" in board
    assert "| [Synthetic](synthetic.md) | DLRM | 2 |" in (boards / "table2.md").read_text()
    plot = (boards / "synthetic_auc_vs_mflop.png").read_bytes()
    assert run_cli("leaderboard", "--results", results, "--out", boards) == 0
    assert (boards / "synthetic.md").read_text() == board
    assert (boards / "synthetic_auc_vs_mflop.png").read_bytes() == plot


def table_rows(out: str) -> dict[str, list[str]]:
    """A rich table's rows by their first cell; a wrapped cell's lines are joined with spaces (lines that
    continue a wrapped row have an empty first cell)."""
    rows, last = {}, None
    for line in out.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.split("│")[1:-1]]
            if cells[0]:
                last = rows[cells[0]] = cells[1:]
            elif last is not None:
                last[:] = [f"{kept} {more}".strip() for kept, more in zip(last, cells[1:])]
    return rows


def test_models_and_datasets_listings(synthetic_data_dir, capsys):
    from ctrbench.data.datasets import dataset_names, load_dataset_config
    from model_zoo import MODELS

    assert run_cli("models") == 0
    listed = table_rows(capsys.readouterr().out)
    assert {name: cells[0] for name, cells in listed.items()} == {name: cls.display_name for name, cls in MODELS.items()}
    # each description: the docstring's whole first paragraph, ending a sentence
    assert {name: cells[1] for name, cells in listed.items()} == {
        name: model_summary(cls) for name, cls in MODELS.items()}
    assert all(cells[1].endswith((".", ".)")) and len(cells[1]) > 20 for cells in listed.values()), listed
    assert run_cli("models", "--dataset", "synthetic", "--flops", "--data-dir", synthetic_data_dir) == 0
    out = capsys.readouterr().out
    assert "MFLOP/example" in out and set(table_rows(out)) == set(MODELS)
    assert run_cli("datasets", "--data-dir", synthetic_data_dir) == 0
    listed = table_rows(capsys.readouterr().out)
    assert {name: cells[:2] for name, cells in listed.items()} == {
        name: [load_dataset_config(name).display_name, "40,000 / 5,000 / 5,000" if name == "synthetic" else "not processed"]
        for name in dataset_names()}


def test_models_flops_listing_sits_next_to_the_papers_table3(tiny_fmap, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "frappe").symlink_to(tiny_fmap.root)  # any processed dataset, under Frappe's name
    assert run_cli("models", "--dataset", "frappe", "--flops", "--data-dir", tmp_path / "data") == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert rows["dlrm"][-2:] == ["1,527,073", "4.99"] and rows["wukong"][-2:] == ["7,769,589", "44.09"]
    assert rows["lr"][-2:] == ["-", "-"]  # not in the paper
    assert "forward + backward" in out


@pytest.mark.parametrize("args, message", [
    (["bench", "--dataset", "synthetic", "--models", "dlmr"], "error: unknown model 'dlmr' (did you mean 'dlrm'?); valid:"),
    (["train", "--model", "dlrm", "--dataset", "frape"], "error: unknown dataset 'frape' (did you mean 'frappe'?); valid:"),
    (["train", "--model", "dlrm", "--dataset", "synthetic", "--set", "train.epoch=2"],
     "model_zoo/configs/dlrm.yaml: synthetic.train: unknown key 'epoch' (did you mean 'epochs'?)"),
    (["leaderboard", "--results", "/nonexistent/results.jsonl"], "error: /nonexistent/results.jsonl: no results yet"),
])
def test_bad_input_is_one_line_error(args, message, capsys, tmp_path):
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_dataset_not_preprocessed(tmp_path, capsys):
    assert run_cli("train", "--model", "dlrm", "--dataset", "frappe", "--data-dir", tmp_path) == 2
    assert f"{tmp_path}/frappe: dataset 'frappe' is not preprocessed yet; run `ctrbench preprocess frappe" in capsys.readouterr().err


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "ctrbench", "bench", "--dataset", "nope"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown dataset 'nope'")
    help_text = subprocess.run([sys.executable, "-m", "ctrbench", "bench", "--help"], capture_output=True, text=True).stdout
    assert "--models" in help_text and "--seeds" in help_text
