"""The leaderboard's budget columns, significance markers, notes and portability."""

from __future__ import annotations

import contextlib
import json
import re

import numpy as np

from ctrbench.app.cli import main
from ctrbench.report.leaderboard import write_leaderboards
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ResultsStore

ROWS = 3_000


def run(model: str, seed: int, test_auc: float, config_hash: str = "h1", command: str = "", **extra) -> RunRecord:
    display = {"dlrm": "DLRM", "wukong": "Wukong", "afn_plus": "AFN+", "dcnv2": "DCNv2"}[model]
    return RunRecord.from_json({"model": model, "display_name": display, "dataset": "frappe", "config_hash": f"{model}-{config_hash}",
            "seed": seed, "config": {"model": {}, "train": {}}, "status": "ok", "data_hash": "d",
            "valid": {"auc": 0.9, "logloss": 0.3}, "test": {"auc": test_auc, "logloss": 0.3}, "best_epoch": 3,
            "epochs": 5, "samples_per_second": 1000.0, "dense_params": 10, "embedding_params": 10,
            "mflop_per_example": 1.0, "device": {"type": "cpu", "name": "cpu"}, "train_seconds": 1800.0,
            "command": command or f"ctrbench bench --dataset frappe --models {model} --data-dir /home/me/data", **extra})


def synthetic_predictions():
    """Wukong best; DLRM much noisier (differs); DCNv2 Wukong plus a little noise (tied)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, ROWS)
    noise = {"wukong": 1.0, "dlrm": 3.0}
    table = {}
    for seed in (2021, 2022, 2023):
        for model, scale in noise.items():
            table[(model, seed)] = (labels + rng.normal(0, scale, ROWS)).astype(np.float32)
        table[("dcnv2", seed)] = table[("wukong", seed)] + rng.normal(0, 0.01, ROWS).astype(np.float32)
    return labels, table


def test_budget_significance_and_notes(tmp_path):
    labels, table = synthetic_predictions()
    records = [run(m, s, auc) for m, auc in (("wukong", 0.98), ("dlrm", 0.95), ("dcnv2", 0.979))
               for s in (2021, 2022, 2023)]
    records.append(run("dlrm", 2021, 0.94, config_hash="h2"))  # a second config tried for DLRM
    protocol = "ctrbench bench --dataset frappe --models afn_plus --protocol paper --seeds 1"
    records.append(run("afn_plus", 2021, 0.90, command=protocol))

    def predictions(record):
        key = (record.model, record.seed)
        return table.get(key)

    write_leaderboards(records, tmp_path, "ctrbench leaderboard --out /home/me/boards", predictions,
                       lambda dataset, data_hash: labels if (dataset, data_hash) == ("frappe", "d") else None)
    page = (tmp_path / "frappe.md").read_text()
    results = page.split("## Size")[0]
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in results.splitlines() if line.startswith("| ")}
    assert rows["Wukong"].endswith("| 3 | 1.5 h | (best) |")
    assert re.search(r"\| 4 \| 2.0 h \| differs \((\d\.\d+e-\d+, ){2}\d\.\d+e-\d+ / 0\.\d+\) \|$", rows["DLRM"]), rows["DLRM"]
    assert re.search(r"\| 3 \| 1.5 h \| tied \(", rows["DCNv2"])
    assert "0.9790 ± 0.0000 ≈" in rows["DCNv2"] and "≈" not in rows["DLRM"]
    # one seed: not testable; protocol paper on Frappe plans 1 dim (capped) + 2 points + 0 more seeds for AFN+
    assert rows["AFN+"].endswith("| 1 of 3 planned (capped) | 30 min | – |")
    assert "- (capped) AFN+: a smaller tuning budget than the others: at embedding dim 128" in page
    assert "divide the paper's figure by 3 to compare" in page
    assert "0.9790 ± 0.0000 ≈" in (tmp_path / "table2.md").read_text()
    for path in tmp_path.glob("*.md"):
        assert "/home/me" not in path.read_text(), path  # no paths of the machine that made them


def test_leaderboard_goes_beside_the_results_by_default(tmp_path, capsys):
    store = ResultsStore(tmp_path / "results" / "results.jsonl")
    store.append(run("dlrm", 2021, 0.95))
    with contextlib.chdir(tmp_path):
        assert main(["leaderboard", "--results", "results/results.jsonl"]) == 0
    assert (tmp_path / "results" / "leaderboard" / "table2.md").is_file()
    assert not (tmp_path / "leaderboards").exists()


def test_quick_runs_are_marked(tmp_path):
    quick = run("dlrm", 2021, 0.95, command="ctrbench bench --dataset frappe --quick")
    write_leaderboards([quick], tmp_path, "ctrbench leaderboard")
    assert "`dlrm-h1` quick |" in (tmp_path / "frappe.md").read_text()
    assert json.loads(quick.to_line())["command"] == "ctrbench bench --dataset frappe --quick"  # plain JSON


def test_without_the_papers_tables_the_leaderboard_shows_ours_and_says_so(tmp_path, monkeypatch):
    import ctrbench.report.paper as paper

    monkeypatch.setattr(paper, "PAPER_DIR", tmp_path / "nowhere")
    write_leaderboards([run("dlrm", 2021, 0.95)], tmp_path, "ctrbench leaderboard")
    table2 = (tmp_path / "table2.md").read_text()
    assert "not found when this file was generated: paper columns empty" in table2
    assert "| [Frappe](frappe.md) | DLRM | 1 | **0.9500** | – |" in table2


def test_a_grouped_datasets_page_quotes_bars_beside_ours(tmp_path, monkeypatch):
    import ctrbench.report.paper as paper

    monkeypatch.setattr(paper, "PAPER_DIR", tmp_path / "nowhere")  # rows: our models only
    kuaivideo = [run(model, seed, auc, dataset="kuaivideo", test={"auc": auc, "logloss": 0.44, "gauc": gauc})
                 for model, auc, gauc in (("dcnv2", 0.745, 0.665), ("dlrm", 0.744, 0.664)) for seed in (2021, 2022)]
    write_leaderboards([*kuaivideo, run("dlrm", 2021, 0.95)], tmp_path, "ctrbench leaderboard")
    page = (tmp_path / "kuaivideo.md").read_text().split("## Size")[0]
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in page.splitlines() if line.startswith("| ")}
    assert "| Test gAUC (ours) | Test AUC (BARS) | Test gAUC (BARS) | Best epoch |" in rows["Model"]
    # BARS DCNv2_kuaivideo_x1_008_7047bff3: AUC 0.746953, gAUC 0.667472; BARS has no DLRM run on KuaiVideo
    assert "| **0.6650 ± 0.0000** | 0.7470 | 0.6675 | 3.0 |" in rows["DCNv2"]
    assert "| 0.6640 ± 0.0000 | – | – | 3.0 |" in rows["DLRM"]
    assert "`leaderboards/bars_reference.yaml` names each experiment" in page
    assert "BARS" not in (tmp_path / "frappe.md").read_text()  # no groups: no BARS columns
    # Table 2: a gAUC column as soon as one dataset has users; – for the datasets without
    table2 = (tmp_path / "table2.md").read_text()
    assert "| Δ LogLoss | gAUC (ours) |" in table2 and "FuxiCTR's definition" in table2
    assert "| [KuaiVideo](kuaivideo.md) | DCNv2 | 2 | **0.7450 ± 0.0000** | – | – | **0.4400 ± 0.0000** | – | – | **0.6650 ± 0.0000** |" in table2
    assert "|  | DLRM | 2 | 0.7440 ± 0.0000 | – | – | **0.4400 ± 0.0000** | – | – | 0.6640 ± 0.0000 |" in table2
    frappe = next(line for line in table2.splitlines() if line.startswith("| [Frappe](frappe.md) | DLRM | 1 | **0.9500** |"))
    assert frappe.endswith(" | – |")  # no users, no gAUC


def test_table2_has_no_gauc_column_without_users(tmp_path):
    write_leaderboards([run("dlrm", 2021, 0.95)], tmp_path, "ctrbench leaderboard")
    assert "gAUC" not in (tmp_path / "table2.md").read_text()
