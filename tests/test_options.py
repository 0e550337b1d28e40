"""`RunOptions`: the quick-mode epoch cap and the order of overrides, in their one place."""

from __future__ import annotations

from pathlib import Path

from ctrbench.app.parser import build_parser, run_options
from ctrbench.app.options import QUICK_EPOCHS, RunOptions


def test_quick_caps_epochs_unless_an_explicit_value_is_given():
    assert RunOptions().run_overrides() == {"model": {}, "train": {}}
    assert RunOptions(quick=True).run_overrides() == {"model": {}, "train": {"epochs": QUICK_EPOCHS}}
    assert RunOptions(quick=True, overrides={"train": {"epochs": 7}}).run_overrides()["train"] == {"epochs": 7}
    # a grid point's value is explicit too; --set goes over it
    point = {"model": {"embedding_dim": 8}, "train": {"epochs": 5, "learning_rate": 0.1}}
    options = RunOptions(quick=True, overrides={"model": {"embedding_dim": 16}})
    assert options.run_overrides(point) == {"model": {"embedding_dim": 16}, "train": {"epochs": 5, "learning_rate": 0.1}}
    assert point["model"] == {"embedding_dim": 8}  # not modified


def test_checkpoints_default_beside_the_results_store():
    assert RunOptions(results_path=Path("out/r.jsonl")).checkpoints() == Path("out/checkpoints")
    assert RunOptions(results_path=Path("out/r.jsonl"), checkpoint_dir=Path("ck")).checkpoints() == Path("ck")


def test_the_command_line_builds_one_run_options():
    argv = ["bench", "--dataset", "synthetic", "--results", "r.jsonl", "--set", "train.epochs=2", "--quick",
            "--workers", "2", "--stream", "--checkpoint-dir", "ck", "--device", "cpu"]
    args = build_parser().parse_args(argv)
    args.command_line = "ctrbench " + " ".join(argv)
    assert run_options(args) == RunOptions(
        data_dir=args.data_dir, results_path=Path("r.jsonl"), overrides={"model": {}, "train": {"epochs": 2}},
        quick=True, device="cpu", progress=False, stream=True, command=args.command_line, checkpoint_dir=Path("ck"))
    args = build_parser().parse_args(["train", "--model", "lr", "--dataset", "synthetic", "--in-memory"])
    args.command_line = "ctrbench train"
    options = run_options(args)
    assert options.progress and options.stream is False and options.checkpoint_dir is None
