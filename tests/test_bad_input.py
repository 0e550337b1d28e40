"""Every CLI entry point given bad input exits 2 with one line `error: ...` naming the file / field /
line at fault and the fix, and no traceback (`--debug` shows one).

Each case builds its bad input under a temporary directory and gives the command line; the table says
which words the error line must hold. The cases run `main()` in this process (a subprocess each would
cost seconds of importing torch); `test_cli.py` checks the console entry point in a subprocess.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctrbench.app import cli
from ctrbench.data.synthetic import write_synthetic
from ctrbench.distributed import plan as distributed_plan

FIXTURES = Path(__file__).parent / "fixtures"
CRITEO_LINE = "1\t" + "\t".join(["3"] * 13) + "\t" + "\t".join(["68fd1e64"] * 26)
TRAIN_FAST = ["--set", "train.epochs=1", "--no-progress"]


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    """A 2,000-row synthetic dataset that each case copies and breaks."""
    data_dir = tmp_path_factory.mktemp("processed")
    write_synthetic(data_dir / "synthetic", rows=2000, seed=1)
    return data_dir


# ---- ways to break things -------------------------------------------------------------------------

def raw_release(tmp: Path, dataset: str, release: str, edit: Callable[[Path], None] | None = None) -> Path:
    """A copy of a fixture release, changed by `edit(directory)`."""
    raw = tmp / "raw"
    shutil.copytree(FIXTURES / dataset / release, raw)
    if edit is not None:
        edit(raw)
    return raw


def replace_line(path: Path, number: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def data_dir(tmp: Path, processed: Path, edit: Callable[[Path], None] | None = None) -> Path:
    """A copy of the processed synthetic dataset, changed by `edit(dataset directory)`."""
    shutil.copytree(processed, tmp / "data")
    if edit is not None:
        edit(tmp / "data" / "synthetic")
    return tmp / "data"


def set_column(dataset: Path, split: str, column: str, values: Callable[[pa.Array], pa.Array]) -> None:
    path = dataset / split / "part-00000.parquet"
    table = pq.read_table(path)
    index = table.column_names.index(column)
    pq.write_table(table.set_column(index, column, values(table.column(column).combine_chunks())), path)


def with_nan_at_row_5(column: pa.Array) -> pa.Array:
    values = column.to_numpy().copy()
    values[5] = np.nan
    return pa.array(values)


def edit_feature_map(dataset: Path, change: Callable[[dict], None]) -> None:
    path = dataset / "feature_map.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def train(tmp: Path, data: Path, *extra: str) -> list[str]:
    return ["train", "--model", "lr", "--dataset", "synthetic", "--data-dir", str(data),
            "--results", str(tmp / "results.jsonl"), *TRAIN_FAST, *extra]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- the table: (name, command line built under tmp, words the error line must hold) -------------

Case = tuple[str, Callable[[Path, Path], list[str]], str]

CASES: list[Case] = [
    # preprocess: raw files
    ("raw dir missing", lambda tmp, _: ["preprocess", "frappe", "--raw", str(tmp / "absent")],
     "absent: raw directory not found"),
    ("raw file missing", lambda tmp, _: ["preprocess", "frappe", "--raw", str(tmp), "--release", "libfm"],
     "frappe.train.libfm: file not found; the libfm release of frappe needs"),
    ("empty libfm file", lambda tmp, _: ["preprocess", "frappe", "--out", str(tmp / "out"), "--raw", str(raw_release(
        tmp, "frappe", "libfm", lambda raw: (raw / "frappe.validation.libfm").write_text("")))],
     "frappe.validation.libfm: empty file; is the download or copy complete?"),
    ("empty CSV file", lambda tmp, _: ["preprocess", "frappe", "--out", str(tmp / "out"), "--raw", str(raw_release(
        tmp, "frappe", "bars_x1", lambda raw: (raw / "test.csv").write_text("")))],
     "test.csv: empty file"),
    ("empty Criteo file", lambda tmp, _: ["preprocess", "criteo", "--out", str(tmp / "out"), "--raw",
                                          str(write(tmp / "raw" / "train.txt", "").parent)],
     "train.txt: empty file"),
    ("wrong CSV header", lambda tmp, _: ["preprocess", "frappe", "--out", str(tmp / "out"), "--raw", str(raw_release(
        tmp, "frappe", "bars_x1", lambda raw: replace_line(raw / "train.csv", 1, "label,user,item")))],
     "train.csv:1: wrong header 'label,user,item'; expected 'label,user,item,daytime,"),
    ("malformed libfm row", lambda tmp, _: ["preprocess", "frappe", "--out", str(tmp / "out"), "--raw", str(raw_release(
        tmp, "frappe", "libfm", lambda raw: replace_line(raw / "frappe.train.libfm", 3, "-1 3:1 960:1")))],
     "frappe.train.libfm:3: expected 11 tokens (label, then index:1 for user, item,"),
    ("label outside 0/1", lambda tmp, _: ["preprocess", "frappe", "--out", str(tmp / "out"), "--raw", str(raw_release(
        tmp, "frappe", "bars_x1",
        lambda raw: replace_line(raw / "valid.csv", 2, "2,3,960,5041,5046,5053,5055,5058,5060,5070,5150")))],
     "valid.csv:2: label must be 0 or 1, found '2'; fix the file or pass --skip-bad-rows"),
    ("unclosed CSV quote", lambda tmp, _: ["preprocess", "movielens", "--out", str(tmp / "out"), "--raw", str(
        raw_release(tmp, "movielens", "raw", lambda raw: replace_line(raw / "tags.csv", 3, '2,60756,"funny,1445714994')))],
     "tags.csv:3: a quote opened on this line is never closed; fix the file"),
    ("inf in a Criteo integer column", lambda tmp, _: ["preprocess", "criteo", "--out", str(tmp / "out"), "--raw", str(
        write(tmp / "raw" / "train.txt", f"{CRITEO_LINE}\n{CRITEO_LINE.replace(chr(9) + '3', chr(9) + 'inf', 1)}\n").parent)],
     "train.txt:2: I1 is not an integer, found 'inf'"),
    ("unknown release", lambda tmp, _: ["preprocess", "frappe", "--raw", str(tmp), "--release", "bars"],
     "unknown frappe release 'bars' (did you mean 'bars_x1'?); valid: bars_x1, libfm, raw"),
    ("unknown dataset", lambda tmp, _: ["preprocess", "frape", "--raw", str(tmp)],
     "unknown dataset 'frape' (did you mean 'frappe'?); valid:"),
    # train / bench: processed data
    ("NaN in a numeric column", lambda tmp, p: train(tmp, data_dir(
        tmp, p, lambda ds: set_column(ds, "valid", "n1", with_nan_at_row_5))),
     "valid/part-00000.parquet: numeric column 'n1' has 1 NaN/inf/null values (first at row 5)"),
    ("label 2 in a split", lambda tmp, p: train(tmp, data_dir(
        tmp, p, lambda ds: set_column(ds, "train", "label", lambda c: pa.array(np.full(len(c), 2, np.float32))))),
     "train/part-00000.parquet: label column 'label' must be 0 or 1; row 0 holds 2.0"),
    ("feature map lists a column the parquet lacks", lambda tmp, p: train(tmp, data_dir(tmp, p, lambda ds: pq.write_table(
        pq.read_table(ds / "test" / "part-00000.parquet").drop_columns(["c3"]), ds / "test" / "part-00000.parquet"))),
     "test/part-00000.parquet: columns ['c3'] are in the feature map but not in the file"),
    ("feature map row count differs from the parquet", lambda tmp, p: train(tmp, data_dir(
        tmp, p, lambda ds: edit_feature_map(ds, lambda fm: fm["splits"]["valid"].update(rows=250)))),
     "the valid split's files hold 200 rows but the feature map says 250"),
    ("misspelled feature map key", lambda tmp, p: train(tmp, data_dir(
        tmp, p, lambda ds: edit_feature_map(ds, lambda fm: fm["features"][3].update(vocab_sise=fm["features"][3].pop("vocab_size"))))),
     "feature_map.json: features[3]: unknown key 'vocab_sise' (did you mean 'vocab_size'?)"),
    ("feature map entry without its type", lambda tmp, p: train(tmp, data_dir(
        tmp, p, lambda ds: edit_feature_map(ds, lambda fm: fm["features"][0].pop("type")))),
     "feature_map.json: features[0]: missing key 'type'; the section needs: name, type"),
    ("empty feature map", lambda tmp, p: train(tmp, data_dir(tmp, p, lambda ds: (ds / "feature_map.json").write_text(""))),
     "feature_map.json: invalid JSON at line 1"),
    ("empty parquet file", lambda tmp, p: train(tmp, data_dir(
        tmp, p, lambda ds: (ds / "train" / "part-00000.parquet").write_bytes(b""))),
     "train/part-00000.parquet: not a readable parquet file"),
    ("dataset not preprocessed", lambda tmp, _: ["train", "--model", "lr", "--dataset", "frappe", "--data-dir", str(tmp)],
     "dataset 'frappe' is not preprocessed yet; run `ctrbench preprocess frappe --raw RAW_DIR"),
    ("unknown model", lambda tmp, p: ["bench", "--dataset", "synthetic", "--models", "lr,dlmr", "--data-dir", str(p)],
     "unknown model 'dlmr' (did you mean 'dlrm'?); valid:"),
    # configs
    ("misspelled --set key", lambda tmp, p: train(tmp, p, "--set", "train.learning_rat=0.1"),
     "model_zoo/configs/lr.yaml: synthetic.train: unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    ("misspelled config file key", lambda tmp, p: train(tmp, p, "--config-dir", str(write(
        tmp / "configs" / "lr.yaml", "synthetic:\n  trian: {epochs: 2}\n").parent)),
     "lr.yaml: synthetic: unknown key 'trian' (did you mean 'train'?); valid keys: ladder, model, search, train"),
    ("config value of the wrong type", lambda tmp, p: train(tmp, p, "--config-dir", str(write(
        tmp / "configs" / "lr.yaml", "synthetic:\n  train: {batch_size: large}\n").parent)),
     "lr.yaml: synthetic.train.batch_size: expected int, got 'large'"),
    ("config section of the wrong type", lambda tmp, p: train(tmp, p, "--config-dir", str(write(
        tmp / "configs" / "lr.yaml", "synthetic: [1, 2]\n").parent)),
     "lr.yaml: synthetic: expected a mapping of keys to values, got list"),
    ("invalid YAML", lambda tmp, p: train(tmp, p, "--config-dir", str(write(
        tmp / "configs" / "lr.yaml", "synthetic:\n  train: {epochs: [2}\n").parent)),
     "lr.yaml: line 2: invalid YAML"),
    ("value the model rejects", lambda tmp, p: ["train", "--model", "dlrm", "--dataset", "synthetic", "--data-dir", str(p),
                                                "--results", str(tmp / "r.jsonl"), "--set", "model.embedding_dim=-3"],
     "dlrm on synthetic: the model rejects its config (embedding_dim=-3, "),
    ("value TrainConfig rejects", lambda tmp, p: train(tmp, p, "--set", "train.batch_size=0"),
     "train.batch_size must be >= 1, got 0"),
    ("--set without a section", lambda tmp, p: train(tmp, p, "--set", "epochs=2"),
     "--set 'epochs=2': expected model.KEY=VALUE or train.KEY=VALUE"),
    # arguments and files given on the command line
    ("argument of the wrong form", lambda tmp, p: ["bench", "--dataset", "synthetic", "--seeds", "two"],
     "ctrbench bench: argument --seeds: expected a whole number >= 1, got 'two' (see `ctrbench bench --help`)"),
    ("unknown device", lambda tmp, p: train(tmp, p, "--device", "tpu"), "--device tpu: expected cpu, cuda, cuda:N or auto"),
    ("results store is a directory", lambda tmp, p: train(tmp, p, "--results", str(tmp)),
     "is a directory; the results store is a file"),
    ("corrupt checkpoint", lambda tmp, p: train(tmp, p, "--checkpoint", str(write(tmp / "run.pt", "not a checkpoint"))),
     "run.pt: not a training checkpoint ("),
    # tune
    ("search space missing", lambda tmp, p: ["tune", "--model", "lr", "--dataset", "synthetic", "--space",
                                             str(tmp / "space.yaml")], "space.yaml: config file not found"),
    ("misspelled search space key", lambda tmp, p: ["tune", "--model", "lr", "--dataset", "synthetic", "--space", str(write(
        tmp / "space.yaml", "tuner_space:\n  train: {learning_rat: [0.1, 0.01]}\n"))],
     "space.yaml: tuner_space.train: unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    # leaderboard: the results store
    ("results line not JSON", lambda tmp, _: ["leaderboard", "--out", str(tmp / "boards"), "--results", str(write(
        tmp / "results.jsonl", '{"model": "lr",\n'))], "results.jsonl:1: not a JSON record"),
    ("results record incomplete", lambda tmp, _: ["leaderboard", "--out", str(tmp / "boards"), "--results", str(write(
        tmp / "results.jsonl", '{"model": "lr", "dataset": "synthetic", "config_hash": "abc", "seed": 1}\n'))],
     "results.jsonl:1: record lacks ['status', 'config',"),
    ("empty results store", lambda tmp, _: ["leaderboard", "--results", str(write(tmp / "results.jsonl", ""))],
     "results.jsonl: no results yet; run `ctrbench bench --dataset D` first"),
    # models, datasets
    ("models --flops without a dataset", lambda tmp, _: ["models", "--flops"], "models --flops needs --dataset D"),
    ("datasets over a broken feature map", lambda tmp, p: ["datasets", "--data-dir", str(data_dir(
        tmp, p, lambda ds: (ds / "feature_map.json").write_text("{")))], "feature_map.json: invalid JSON at line 1"),
]


def run(main: Callable[[list[str]], int], argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("build, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_naming_the_fault(build, message, processed, tmp_path, capsys):
    status, err = run(cli.main, build(tmp_path, processed), capsys)
    last = err.splitlines()[-1] if err else ""
    assert status == 2 and last.startswith("error: ") and message in last, err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(processed, tmp_path):
    with pytest.raises(Exception, match="--device tpu: expected cpu, cuda, cuda:N or auto"):
        cli.main(["--debug", *train(tmp_path, processed, "--device", "tpu")])


def test_distributed_entry_point_bad_config_is_one_line(tmp_path, capsys):
    status, err = run(distributed_plan.main, ["--config", str(tmp_path / "absent.yaml"), "--gpus", "2"], capsys)
    assert (status, err) == (2, f"error: {tmp_path / 'absent.yaml'}: config file not found\n")
    space = write(tmp_path / "run.yaml", "model: dlrm\ndata_dir: data\nbatch_sise: 8\n")
    status, err = run(distributed_plan.main, ["--config", str(space), "--gpus", "2"], capsys)
    assert status == 2 and "unknown key 'batch_sise' (did you mean 'batch_size'?)" in err and err.count("\n") == 1


def test_a_long_header_is_quoted_short(tmp_path):
    """A 1.7 KB header in an error is cut to about 200 characters, saying how much was left out."""
    from ctrbench.core.errors import quote

    header = "x" * 1700
    assert quote(header) == repr(header)[:200] + f"... ({len(repr(header)) - 200:,} more characters)"
    assert quote("short") == "'short'" and quote(3) == "3"


def fill_the_disk_after(megabytes: int, error: Exception, target: Callable[..., str]):
    """A stand-in for a file writer method that writes `megabytes` to its file (`target(self, *args)`) and
    then fails as a full disk does."""
    def write(self, *args, **kwargs):
        Path(target(self, *args)).write_bytes(b"x" * (megabytes << 20))
        raise error
    return write


@pytest.mark.parametrize("dataset, raw, writer, error, target", [
    ("frappe", lambda tmp: raw_release(tmp, "frappe", "bars_x1"), (pl.LazyFrame, "sink_parquet"),
     pl.exceptions.ComputeError("parquet: underlying IO error: No space left on device (os error 28)"),
     lambda frame, path, *_: path),
    ("criteo", lambda tmp: write(tmp / "raw" / "train.txt", f"{CRITEO_LINE}\n" * 20).parent,
     (pq.ParquetWriter, "write_table"), OSError(errno.ENOSPC, "Error writing bytes to file"),
     lambda writer, *_: writer.where),
], ids=["polars", "pyarrow"])
def test_a_full_disk_is_one_line_naming_the_output(dataset, raw, writer, error, target, tmp_path, capsys,
                                                   monkeypatch):
    """ENOSPC while writing: one line with the output folder, how far it got, the space free and the fix;
    the hidden temporary folder is removed."""
    raw_dir = raw(tmp_path)
    monkeypatch.setattr(*writer, fill_the_disk_after(1, error, target))
    status, err = run(cli.main, ["preprocess", dataset, "--raw", str(raw_dir), "--out", str(tmp_path / "out")], capsys)
    free = shutil.disk_usage(tmp_path).free / 2**20
    last = err.splitlines()[-1]
    assert status == 2 and re.fullmatch(rf"error: {re.escape(str(tmp_path / 'out'))}: no space left on the disk after "
                                        r"writing 1\.0 MiB of output \(([\d,.]+) MiB free there\); free some space "
                                        r"or choose another --out", last), err
    assert abs(float(re.search(r"\(([\d,.]+) MiB", last)[1].replace(",", "")) - free) < 64  # as free as now
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
