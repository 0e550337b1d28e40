import numpy as np
import pytest

from ctrbench.errors import CtrbenchError
from preprocess.common import BadRows, describe_inputs, detect_release


def test_bad_rows_stop_at_first_with_line_number(tmp_path):
    path = tmp_path / "x.csv"
    with pytest.raises(CtrbenchError, match=r"x.csv:7: label must be 0 or 1; fix the file or pass --skip-bad-rows"):
        BadRows().check(np.array([False, True, True]), path, np.array([6, 7, 8]), "label must be 0 or 1")


def test_bad_rows_skip_and_count(tmp_path):
    policy = BadRows(skip=True)
    keep = policy.check(np.array([False, True, True]), tmp_path / "x.csv", np.array([2, 3, 4]), "short row")
    policy.check(np.array([True]), tmp_path / "x.csv", np.array([9]), "short row")
    assert keep.tolist() == [True, False, False]
    assert policy.total == 3 and policy.report() == {"x.csv: short row": 3}


def test_detect_release(tmp_path):
    (tmp_path / "train.csv").write_text("a\n")
    releases = {"bars_x1": ["train.csv", "valid.csv"], "raw": ["*.log"]}
    with pytest.raises(CtrbenchError, match="no known demo release here; expected one of these file sets: bars_x1: train.csv, valid.csv; raw: \\*.log"):
        detect_release(tmp_path, releases, "demo")
    (tmp_path / "valid.csv").write_text("a\n")
    assert detect_release(tmp_path, releases, "demo") == "bars_x1"
    assert describe_inputs([tmp_path / "train.csv"], {"train.csv": 1})["train.csv"]["rows"] == 1
