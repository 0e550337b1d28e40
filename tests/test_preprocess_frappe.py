"""Frappe converter: the three releases on tiny fixtures (exact encodings), bad input, the CLI, real files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_split
from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.frappe import FIELDS, preprocess_frappe, read_release
from preprocess.options import PreprocessOptions
from preprocess.rules import CategoricalRules, load_rules

FIXTURES = Path(__file__).parent / "fixtures" / "frappe"
REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("CTRBENCH_REAL_DATA", REPO_ROOT.parent / "shared" / "data")) / "frappe"
BARS_ROWS = {"train": 202_027, "valid": 57_722, "test": 28_860}

# The fixture rows encoded by hand: per field, train counts decide the order (count desc, then value),
# indices start at 2; values absent from train are OOV (1).
EXPECTED = {
    "train": {"user": [2, 2, 3, 3, 2], "item": [2, 4, 2, 3, 3], "daytime": [2, 2, 3, 3, 4],
              "weekday": [2, 2, 3, 2, 2], "isweekend": [2, 2, 3, 2, 2], "homework": [2, 2, 3, 2, 2],
              "cost": [2, 2, 3, 2, 2], "weather": [2, 2, 3, 3, 2], "country": [2, 2, 3, 2, 2],
              "city": [2, 2, 3, 2, 4], "label": [1, 0, 0, 1, 0]},
    "valid": {"user": [3, 1], "item": [4, 1], "daytime": [2, 1], "weekday": [3, 2], "isweekend": [3, 2],
              "homework": [3, 2], "cost": [3, 2], "weather": [3, 2], "country": [3, 2], "city": [3, 2],
              "label": [1, 0]},
    "test": {"user": [2, 3], "item": [2, 3], "daytime": [3, 2], "weekday": [1, 2], "isweekend": [2, 2],
             "homework": [1, 2], "cost": [2, 2], "weather": [1, 2], "country": [1, 2], "city": [1, 2],
             "label": [0, 1]},
}
EXPECTED_VOCAB_SIZES = {"user": 4, "item": 5, "daytime": 5, "weekday": 4, "isweekend": 4, "homework": 4,
                        "cost": 4, "weather": 4, "country": 4, "city": 5}


def read_split(fmap: FeatureMap, split: str) -> dict[str, list]:
    frame = pl.concat([pl.read_parquet(path) for path in fmap.split_paths(split)])
    return {name: frame[name].to_list() for name in frame.columns}


def copy_release(tmp_path: Path, release: str) -> Path:
    raw = tmp_path / release
    shutil.copytree(FIXTURES / release, raw)
    return raw


@pytest.mark.parametrize("release", ["bars_x1", "libfm"])
def test_given_splits_encode_exactly(release, tmp_path):
    fmap = preprocess_frappe(FIXTURES / release, tmp_path / "out", PreprocessOptions())
    assert [f.name for f in fmap.features] == list(FIELDS)
    assert {f.name: f.vocab_size for f in fmap.features} == EXPECTED_VOCAB_SIZES
    assert all(f.type == "categorical" and f.padding_idx == 0 and f.oov_idx == 1 for f in fmap.features)
    for split, expected in EXPECTED.items():
        assert read_split(fmap, split) == expected
    assert fmap.source["release"] == release
    inputs = fmap.source["inputs"]
    assert [(entry["rows_read"], entry["rows_kept"]) for entry in inputs.values()] == [(5, 5), (2, 2), (2, 2)]
    assert all(len(entry["sha256"]) == 64 for entry in inputs.values())
    # the written dataset loads through the training data path
    batch = load_split(FeatureMap.load(tmp_path / "out"), "valid")
    assert batch.categorical.tolist() == np.array([EXPECTED["valid"][f] for f in FIELDS]).T.tolist()


def test_raw_log_positives_negatives_and_split(tmp_path):
    fmap = preprocess_frappe(FIXTURES / "raw", tmp_path / "out", PreprocessOptions())
    assert {s: info.rows for s, info in fmap.splits.items()} == {"train": 13, "valid": 3, "test": 2}  # 18 rows 7:2:1
    assert fmap.source["inputs"]["frappe.csv"]["rows_kept"] == 6

    # The raw rows behind the written splits: every log row once as a positive, two negatives per positive
    # that keep its user and context and take an item that user never used.
    rules = load_rules("frappe", CategoricalRules)
    splits = read_release(FIXTURES / "raw", "raw", rules, BadRows()).frames
    assert {s: frame["label"].to_list() for s, frame in splits.items()} == \
        {s: read_split(fmap, s)["label"] for s in splits}
    rows = pl.concat(list(splits.values()))
    log = pl.read_csv(FIXTURES / "raw" / "frappe.csv", separator="\t", infer_schema=False).drop("cnt")
    positives, negatives = rows.filter(pl.col("label") == 1), rows.filter(pl.col("label") == 0)
    assert sorted(positives.drop("label").rows()) == sorted(log.rows()) and len(negatives) == 12
    used = set(log.select("user", "item").rows())
    assert not used & set(negatives.select("user", "item").rows())
    assert set(negatives.drop("item", "label").rows()) == set(log.drop("item").rows())

    again = preprocess_frappe(FIXTURES / "raw", tmp_path / "again", PreprocessOptions())
    assert again.content_hash == fmap.content_hash  # seeded: same rows, same files


def test_empty_fields_are_missing_values_and_empty_labels_bad_rows(tmp_path):
    """As FuxiCTR's `fill_na` (an empty field becomes "", which no vocabulary holds): the row is kept and the
    value is OOV (1); it is not counted in train, so city's vocabulary loses 5152, seen only there."""
    raw = copy_release(tmp_path, "bars_x1")
    (raw / "train.csv").write_text((raw / "train.csv").read_text().replace(",5070,5152\n", ",5070,\n"))
    (raw / "test.csv").write_text((raw / "test.csv").read_text().replace("1,5,961,", "1,5,,"))
    fmap = preprocess_frappe(raw, tmp_path / "out", PreprocessOptions())
    assert fmap.source["skipped_rows"] == {} and {s: i.rows for s, i in fmap.splits.items()} == {
        "train": 5, "valid": 2, "test": 2}
    train, test = read_split(fmap, "train"), read_split(fmap, "test")
    assert train["city"] == [2, 2, 3, 2, 1] and fmap.feature("city").vocab_size == 4
    assert test["item"] == [2, 1] and test == {**EXPECTED["test"], "item": [2, 1]}
    (raw / "valid.csv").write_text((raw / "valid.csv").read_text().replace("\n1,5,975,", "\n,5,975,"))
    with pytest.raises(CtrbenchError, match=r"valid.csv:2: missing or empty field 'label'"):
        preprocess_frappe(raw, tmp_path / "out", PreprocessOptions())

    log = copy_release(tmp_path, "raw") / "frappe.csv"  # a context field of the log: missing too
    log.write_text(log.read_text().replace("0\t0\t1\tmorning\t", "0\t0\t1\t\t"))
    fmap = preprocess_frappe(log.parent, tmp_path / "out", PreprocessOptions())
    assert fmap.source["skipped_rows"] == {} and fmap.source["inputs"]["frappe.csv"]["rows_kept"] == 6


@pytest.mark.parametrize("release, file, line, text, message", [
    ("bars_x1", "train.csv", 1, "label,user,item\n", "train.csv:1: wrong header 'label,user,item'; expected "
                                                     "'label,user,item,daytime,"),
    ("bars_x1", "valid.csv", 3, "2,7,999,5044,5046,5053,5055,5058,5060,5070,5150\n",
     "valid.csv:3: label must be 0 or 1, found '2'; fix the file or pass --skip-bad-rows"),
    ("bars_x1", "test.csv", 2, "0,3,960\n", "test.csv:2: fewer than the header's 11 fields"),
    ("bars_x1", "test.csv", 3, "1,5,961,5041,5046,5053,5055,5058,5060,5070,5150,9\n",
     "test.csv:3: more than the header's 11 fields"),
    ("libfm", "frappe.train.libfm", 4, "1 5:1 961:1 5042:1\r\n", "frappe.train.libfm:4: expected 11 tokens"),
    ("libfm", "frappe.train.libfm", 2, "-1 3:1 x75:1 5041:1 5046:1 5053:1 5055:1 5058:1 5060:1 5070:1 5150:1\r\n",
     "frappe.train.libfm:2: token 2 (item) is not index:value with a non-negative integer index, found 'x75:1'"),
    ("libfm", "frappe.test.libfm", 1, "0 3:1 960:1 5042:1 5051:1 5053:1 5057:1 5058:1 5068:1 5148:1 5381:1\r\n",
     "frappe.test.libfm:1: label must be -1 or 1, found '0'"),
    ("libfm", "frappe.validation.libfm", 2, "-1 7:1 999:1 5044:1 5046:1 5053:1 5055:1 5058:1 5060:1 5070:1 5382:1\r\n",
     "frappe.validation.libfm:2: city index outside its block 5149-5381, found 5382"),
    ("raw", "frappe.csv", 5, "1\t0\t2\tnight\n", "frappe.csv:5: fewer than the header's 11 fields"),
])
def test_bad_row_stops_with_file_and_line(release, file, line, text, message, tmp_path):
    raw = copy_release(tmp_path, release)
    path = raw / file
    lines = path.read_bytes().decode().splitlines(keepends=True)
    lines[line - 1] = text
    path.write_text("".join(lines), newline="")
    with pytest.raises(CtrbenchError, match="^" + str(path).replace(".", r"\.") + ":"):
        preprocess_frappe(raw, tmp_path / "out", PreprocessOptions())
    try:
        preprocess_frappe(raw, tmp_path / "out", PreprocessOptions())
    except CtrbenchError as exc:
        assert message in str(exc) and "\n" not in str(exc)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # nothing half-written


def test_skip_bad_rows_counts_and_records_them(tmp_path):
    raw = copy_release(tmp_path, "libfm")
    path = raw / "frappe.train.libfm"
    path.write_bytes(path.read_bytes() + b"2 3:1 960:1 5041:1 5046:1 5053:1 5055:1 5058:1 5060:1 5070:1 5150:1\r\n"
                     b"1 3:1 960:1\r\n\r\n1 3:1 960:1\r\n")
    fmap = preprocess_frappe(raw, tmp_path / "out", PreprocessOptions(skip_bad_rows=True))
    assert fmap.splits["train"].rows == 5
    assert fmap.source["skipped_rows"] == {
        "frappe.train.libfm: expected 11 tokens (label, then index:1 for user, item, daytime, weekday, isweekend, "
        "homework, cost, weather, country, city)": 3,
        "frappe.train.libfm: label must be -1 or 1": 1,
    }
    assert read_split(fmap, "train") == EXPECTED["train"]


def test_missing_files_and_release_choice(tmp_path):
    raw = copy_release(tmp_path, "libfm")
    (raw / "frappe.test.libfm").unlink()
    with pytest.raises(CtrbenchError, match="no known frappe release here; expected one of these file sets: "
                                            "bars_x1: train.csv, valid.csv, test.csv; libfm: frappe.train.libfm"):
        preprocess_frappe(raw, tmp_path / "out", PreprocessOptions())
    with pytest.raises(CtrbenchError, match=r"frappe.test.libfm: file not found; the libfm release of frappe needs"):
        preprocess_frappe(raw, tmp_path / "out", PreprocessOptions(release="libfm"))
    with pytest.raises(CtrbenchError, match="unknown frappe release 'libfn' \\(did you mean 'libfm'\\?\\)"):
        preprocess_frappe(raw, tmp_path / "out", PreprocessOptions(release="libfn"))
    with pytest.raises(CtrbenchError, match="raw directory not found"):
        preprocess_frappe(tmp_path / "nowhere", tmp_path / "out", PreprocessOptions())


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "frappe"
    result = subprocess.run([sys.executable, "-m", "ctrbench", "preprocess", "frappe", "--raw", FIXTURES / "bars_x1",
                             "--out", out], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "found the bars_x1 release" in result.stderr
    assert f"wrote {out} (train 5, valid 2, test 2 rows; 10 features)" in result.stderr
    assert json.loads((out / "feature_map.json").read_text())["splits"]["test"]["rows"] == 2

    assert main(["preprocess", "frappe", "--raw", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'empty'}: raw directory not found\n"


real_files = pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real Frappe files not found in {REAL_DATA} "
                                                               "(set CTRBENCH_REAL_DATA to the shared data directory)")


@real_files
def test_real_libfm_files_give_bars_row_counts(tmp_path):
    fmap = preprocess_frappe(REAL_DATA, tmp_path / "out", PreprocessOptions(release="libfm"))
    assert {s: info.rows for s, info in fmap.splits.items()} == BARS_ROWS
    labels = {s: pl.read_parquet(fmap.split_paths(s))["label"].sum() for s in BARS_ROWS}
    assert labels == {"train": 67_604, "valid": 19_063, "test": 9_536}  # positives, as in the BARS logs
    # train-only vocabularies: 924 users and 4,082 items occur in the train file
    assert fmap.feature("user").vocab_size == 924 + 2 and fmap.feature("item").vocab_size == 4_082 + 2
    assert sum(f.vocab_size - 2 for f in fmap.features) == 5_345


@real_files
def test_real_raw_log_builds_three_rows_per_positive(tmp_path):
    fmap = preprocess_frappe(REAL_DATA, tmp_path / "out", PreprocessOptions(release="raw"))
    assert {s: info.rows for s, info in fmap.splits.items()} == {"train": 202_026, "valid": 57_722, "test": 28_861}
    assert sum(pl.read_parquet(fmap.split_paths(s))["label"].sum() for s in BARS_ROWS) == 96_203
    assert fmap.source["inputs"]["frappe.csv"]["rows_kept"] == 96_203


def test_config_fields_select_features_and_typos_are_named(tmp_path, monkeypatch):
    import preprocess.rules
    from ctrbench.data.datasets import load_dataset_config

    config = load_dataset_config("frappe")
    monkeypatch.setattr(preprocess.rules, "load_dataset_config", lambda name: config)
    config.preprocess = {**config.preprocess, "fields": ["item", "user"]}
    fmap = preprocess_frappe(FIXTURES / "bars_x1", tmp_path / "out", PreprocessOptions())
    assert [f.name for f in fmap.features] == ["item", "user"]
    assert read_split(fmap, "valid") == {k: EXPECTED["valid"][k] for k in ("item", "user", "label")}
    config.preprocess = {**config.preprocess, "fields": ["user", "itme"]}
    with pytest.raises(CtrbenchError, match=r"dataset_configs/frappe.yaml: preprocess.fields: unknown field 'itme' "
                                            r"\(did you mean 'item'\?\); frappe has user, item, daytime"):
        preprocess_frappe(FIXTURES / "bars_x1", tmp_path / "out", PreprocessOptions())
