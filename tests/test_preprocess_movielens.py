"""MovieLens Latest converter: the three releases on tiny fixtures (exact encodings), bad input, the CLI.

No real MovieLens files are available on these machines; the fixtures reproduce the published formats:
BARS MovielensLatest_x1 CSVs, NFM's ml-tag libfm files (CRLF, -1/1 labels, user / movie / tag indices)
and MovieLens tags.csv (quoted tags with commas and doubled quotes, non-ASCII text, case kept).
"""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from preprocess.bad_rows import BadRows
from preprocess.movielens import FIELDS, preprocess_movielens, read_release
from preprocess.options import PreprocessOptions
from preprocess.rules import CategoricalRules, load_rules

FIXTURES = Path(__file__).parent / "fixtures" / "movielens"

# The fixture rows encoded by hand (train counts, then value, decide the order; indices from 2; 1 = OOV).
EXPECTED = {
    "train": {"user_id": [2, 2, 2, 3, 3, 3], "item_id": [3, 3, 3, 2, 2, 2], "tag_id": [3, 2, 4, 3, 5, 2],
              "label": [1, 0, 0, 1, 0, 0]},
    "valid": {"user_id": [3, 1], "item_id": [3, 2], "tag_id": [2, 3], "label": [1, 0]},
    "test": {"user_id": [2, 3], "item_id": [1, 3], "tag_id": [5, 4], "label": [0, 1]},
}
TAG_APPLICATIONS = [  # tags.csv as MovieLens means it, quoting undone
    ("2", "60756", "funny"), ("2", "60756", "Highly quotable"), ("2", "60756", "will ferrell"),
    ("7", "260", "dark hero, sort of"), ("7", "260", '"Hello" world'), ("18", "4141", "Mark Waters"),
    ("18", "260", "funny"), ("21", "1", "Végétarien"), ("21", "60756", "FUNNY"),
]


def read_split(fmap: FeatureMap, split: str) -> dict[str, list]:
    frame = pl.concat([pl.read_parquet(path) for path in fmap.split_paths(split)])
    return {name: frame[name].to_list() for name in frame.columns}


def copy_release(tmp_path: Path, release: str) -> Path:
    raw = tmp_path / release
    shutil.copytree(FIXTURES / release, raw)
    return raw


@pytest.mark.parametrize("release", ["bars_x1", "libfm"])
def test_given_splits_encode_exactly(release, tmp_path):
    fmap = preprocess_movielens(FIXTURES / release, tmp_path / "out", PreprocessOptions())
    assert [(f.name, f.vocab_size) for f in fmap.features] == [("user_id", 4), ("item_id", 4), ("tag_id", 6)]
    for split, expected in EXPECTED.items():
        assert read_split(fmap, split) == expected
    assert fmap.source["release"] == release
    assert [entry["rows_kept"] for entry in fmap.source["inputs"].values()] == [6, 2, 2]


def test_raw_tags_keep_quoted_text_and_sample_unassigned_tags(tmp_path):
    rules = load_rules("movielens", CategoricalRules)
    frames = read_release(FIXTURES / "raw", "raw", rules, BadRows()).frames
    rows = pl.concat([frames[s] for s in ("train", "valid", "test")])
    assert [len(frames[s]) for s in ("train", "valid", "test")] == [19, 5, 3]  # 27 rows split 7:2:1
    positives, negatives = rows.filter(pl.col("label") == 1), rows.filter(pl.col("label") == 0)
    assert sorted(positives.select(FIELDS).rows()) == sorted(TAG_APPLICATIONS)
    assert len(negatives) == 18
    assert not set(negatives.select(FIELDS).rows()) & set(TAG_APPLICATIONS)  # never a tag the user gave that movie
    assert set(negatives["tag_id"]) <= {tag for _, _, tag in TAG_APPLICATIONS}
    per_context = negatives.group_by("user_id", "item_id").agg(pl.len(), pl.col("tag_id").n_unique().alias("tags"))
    applications = pl.DataFrame(TAG_APPLICATIONS, schema=FIELDS, orient="row").group_by("user_id", "item_id").len()
    assert per_context.join(applications, on=["user_id", "item_id"]).select(
        (pl.col("len") == 2 * pl.col("len_right")).all()).item()

    fmap = preprocess_movielens(FIXTURES / "raw", tmp_path / "out", PreprocessOptions())
    assert {s: info.rows for s, info in fmap.splits.items()} == {"train": 19, "valid": 5, "test": 3}
    assert fmap.source["inputs"]["tags.csv"]["rows_read"] == fmap.source["inputs"]["tags.csv"]["rows_kept"] == 9
    assert {s: read_split(fmap, s)["label"] for s in frames} == {s: frames[s]["label"].to_list() for s in frames}

    crlf = copy_release(tmp_path, "raw")
    (crlf / "tags.csv").write_bytes((FIXTURES / "raw" / "tags.csv").read_bytes().replace(b"\n", b"\r\n"))
    assert preprocess_movielens(crlf, tmp_path / "crlf", PreprocessOptions()).content_hash == fmap.content_hash


@pytest.mark.parametrize("release, file, line, text, message", [
    ("raw", "tags.csv", 1, "userId,movieId,tag\n", "tags.csv:1: wrong header 'userId,movieId,tag'; "
                                                    "expected 'userId,movieId,tag,timestamp'"),
    ("raw", "tags.csv", 5, '7,260,"dark hero, sort of"\n', "tags.csv:5: missing or empty field 'timestamp'"),
    ("bars_x1", "train.csv", 4, "-1,17,3504,4066\n", "train.csv:4: label must be 0 or 1, found '-1'"),
    ("bars_x1", "valid.csv", 1, "label,user,item,tag\n", "valid.csv:1: wrong header 'label,user,item,tag'; "
                                                        "expected 'label,user_id,item_id,tag_id'"),
    ("libfm", "ml-tag.train.libfm", 3, "-1 17:1 20549:1 44854:1 5:1\r\n",
     "ml-tag.train.libfm:3: expected 4 tokens (label, then index:1 for user_id, item_id, tag_id), found 5"),
    ("libfm", "ml-tag.test.libfm", 2, "1 92:1 movie:1 44854:1\r\n",
     "ml-tag.test.libfm:2: token 2 (item_id) is not index:value with a non-negative integer index, found 'movie:1'"),
    ("libfm", "ml-tag.validation.libfm", 1, "0 92:1 20549:1 42290:1\r\n",
     "ml-tag.validation.libfm:1: label must be -1 or 1, found '0'"),
])
def test_bad_row_stops_with_file_and_line(release, file, line, text, message, tmp_path):
    raw = copy_release(tmp_path, release)
    path = raw / file
    lines = path.read_bytes().decode().splitlines(keepends=True)
    lines[line - 1] = text
    path.write_text("".join(lines), newline="")
    with pytest.raises(CtrbenchError) as error:
        preprocess_movielens(raw, tmp_path / "out", PreprocessOptions())
    assert str(error.value).startswith(f"{path}:") and message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_skip_bad_rows_drops_empty_tags_and_counts_them(tmp_path):
    raw = copy_release(tmp_path, "raw")
    path = raw / "tags.csv"
    path.write_text(path.read_text() + '30,10,,1450000002\n31,11,"",1450000003\n31,12,ok,1450000004,extra\n')
    with pytest.raises(CtrbenchError, match=r"tags.csv:11: missing or empty field 'tag'; fix the file or pass "
                                            r"--skip-bad-rows"):
        preprocess_movielens(raw, tmp_path / "out", PreprocessOptions())
    fmap = preprocess_movielens(raw, tmp_path / "out", PreprocessOptions(skip_bad_rows=True))
    assert fmap.source["skipped_rows"] == {"tags.csv: missing or empty field 'tag'": 2,
                                           "tags.csv: more than the header's 4 fields": 1}
    inputs = fmap.source["inputs"]["tags.csv"]
    assert (inputs["rows_read"], inputs["rows_kept"]) == (12, 9)  # the 9 good rows and the 3 bad ones

    # A feature map written before both counts were recorded (one `rows`) still loads.
    written = json.loads((tmp_path / "out" / "feature_map.json").read_text())
    written["source"]["inputs"]["tags.csv"] = {"sha256": inputs["sha256"], "bytes": inputs["bytes"], "rows": 9}
    (tmp_path / "out" / "feature_map.json").write_text(json.dumps(written))
    assert FeatureMap.load(tmp_path / "out").source["inputs"]["tags.csv"]["rows"] == 9


def test_cli_preprocess_movielens(tmp_path, capsys):
    out = tmp_path / "movielens"
    assert main(["preprocess", "movielens", "--raw", str(FIXTURES / "libfm"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "movielens: found the libfm release" in err
    assert "movielens: train / valid / test rows 6 / 2 / 2, BARS MovielensLatest_x1 has 1,404,801 / 401,372 / " \
           "200,686" in err
    assert read_split(FeatureMap.load(out), "test") == EXPECTED["test"]
    assert main(["preprocess", "movielens", "--raw", str(FIXTURES / "libfm"), "--release", "raw"]) == 2
    assert capsys.readouterr().err == (f"error: {FIXTURES / 'libfm' / 'tags.csv'}: file not found; the raw release of "
                                       "movielens needs tags.csv\n")
