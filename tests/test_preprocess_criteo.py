"""The Criteo converter (preprocess/criteo.py, criteo_read.py, criteo_parse.py) and its line generator
(preprocess/criteo_synthetic.py).

Raw files are written by hand (a few lines whose encodings are computed by hand below) or generated;
nothing here needs the real logs.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import json
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.core.io import sha256_file
from ctrbench.data.batches import load_split
from ctrbench.data.datasets import REPO_ROOT, load_dataset_config
from ctrbench.data.features import FeatureMap
from ctrbench.data.sources import ParquetStream
from preprocess.bad_rows import BadRows
from preprocess.options import PreprocessOptions
from preprocess.criteo import (EncodingRules, FrequencyEncoding, KaggleRules, ParquetSink, ValueCounter, convert_kaggle,
                               convert_terabyte, kaggle_split, load_rules)
from preprocess.criteo_read import (CATEGORICAL_FEATURES, COLUMNS, INTEGER_FEATURES, LABEL, LineBlocks, _parse_block,
                                    read_rows)
from preprocess.criteo_synthetic import CriteoGenerator, write_release
from preprocess.criteo_synthetic import main as synthetic_main

HASH = EncodingRules(encoding="hash", table_size=10, table_sizes={"C2": 7})
STOP, SKIP = PreprocessOptions(), PreprocessOptions(skip_bad_rows=True)


def line(label: str = "0", **fields: str) -> str:
    """A full 40-field line: the given fields (I3="7", C1="0000000a"), every other one empty."""
    values = {name: "" for name in COLUMNS} | {LABEL: label} | fields
    return "\t".join(values[name] for name in COLUMNS)


GOOD = line("0", I1="1", C1="0000000a")


def write_terabyte(raw_dir, days: dict[int, list[str]] | None = None, compress: bool = False):
    """day_0 .. day_23 holding the given lines; days not given hold one good line."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for day in range(24):
        text = "".join(f"{row}\n" for row in (days or {}).get(day, [GOOD])).encode()
        path = raw_dir / (f"day_{day}.gz" if compress else f"day_{day}")
        path.write_bytes(gzip.compress(text) if compress else text)
    return raw_dir


def read(fmap: FeatureMap, relative: str) -> pl.DataFrame:
    return pl.from_arrow(pq.read_table(fmap.root / relative))


# --------------------------------------------------------------------------------------------------
# Encodings, by hand


def test_hash_encoding_log_transform_missing_and_short_lines(tmp_path):
    lines = [
        line("1", I1="0", I2="-3", I3="7", C1="0000000a", C2="ffffffff", C4="ABCDEF12"),
        "0\t1\t2",  # a short line: label, I1, I2, then nothing
        line("0", I1="1000000", C1="00000015"),
    ]
    fmap = convert_terabyte(write_terabyte(tmp_path / "raw", {0: lines}), tmp_path / "out", HASH, STOP)
    rows = read(fmap, "train/day_00.parquet")
    assert rows[LABEL].to_list() == [1.0, 0.0, 0.0]
    # log(1 + max(x, 0)): log(1 + 0) = 0; -3 is clamped to 0; log(8) = 2.0794415; missing -> 0
    assert rows["I1"].to_list() == pytest.approx([0.0, 0.6931472, 13.815511], abs=1e-6)
    assert rows["I2"].to_list() == pytest.approx([0.0, 1.0986123, 0.0], abs=1e-6)
    assert rows["I3"].to_list() == pytest.approx([2.0794415, 0.0, 0.0], abs=1e-6)
    assert rows.select(INTEGER_FEATURES[3:]).to_numpy().tolist() == [[0.0] * 10] * 3
    # 2 + id mod size: 0xa mod 10 = 0 -> 2; 0x15 = 21 -> 3; 0xffffffff = 4294967295 mod 7 = 3 -> 5;
    # 0xABCDEF12 = 2882400018 mod 10 = 8 -> 10 (upper-case hex is hex); missing -> 1
    assert rows["C1"].to_list() == [2, 1, 3]
    assert rows["C2"].to_list() == [5, 1, 1]
    assert rows["C4"].to_list() == [10, 1, 1]
    assert rows.select(CATEGORICAL_FEATURES[4:]).to_numpy().tolist() == [[1] * 22] * 3
    assert rows.schema["C1"] == pl.Int32 and rows.schema["I1"] == pl.Float32 and rows.schema[LABEL] == pl.Float32
    assert fmap.feature("C1").vocab_size == 12 and fmap.feature("C2").vocab_size == 9
    assert fmap.feature("C2").transform == "hash: 2 + (hex id mod 7)"
    assert fmap.feature("I1").transform == "log(1 + max(x, 0)); missing -> 0"
    assert [f.name for f in fmap.features] == [*INTEGER_FEATURES, *CATEGORICAL_FEATURES]


def test_terabyte_layout_day_order_halves_and_checksums(tmp_path):
    raw = write_terabyte(tmp_path / "raw", {1: [GOOD] * 3, 23: [line(label, I1=str(i)) for i, label in
                                                              enumerate("10101")]})
    fmap = convert_terabyte(raw, tmp_path / "out", HASH, STOP)
    assert fmap.splits["train"].files == [f"train/day_{day:02d}.parquet" for day in range(23)]
    assert fmap.splits["train"].rows == 22 + 3
    # day 23 has 5 lines: lines 1-2 (5 // 2) are valid, lines 3-5 test
    assert fmap.splits["valid"].files == ["valid/day_23_first_half.parquet"]
    assert fmap.splits["test"].files == ["test/day_23_second_half.parquet"]
    assert read(fmap, "valid/day_23_first_half.parquet")[LABEL].to_list() == [1.0, 0.0]
    assert read(fmap, "test/day_23_second_half.parquet")[LABEL].to_list() == [1.0, 0.0, 1.0]
    inputs = fmap.source["inputs"]
    assert list(inputs) == [f"day_{day}" for day in range(24)]
    assert inputs["day_1"] == {"sha256": sha256_file(raw / "day_1"), "bytes": (raw / "day_1").stat().st_size,
                              "rows_read": 3, "rows_kept": 3}
    assert fmap.source["release"] == "terabyte" and fmap.source["skipped_rows"] == {}
    assert "valid: day 23 lines 1-2" in fmap.source["split"]
    reloaded = FeatureMap.load(tmp_path / "out")
    assert len(load_split(reloaded, "train")) == 25
    assert sum(len(batch) for batch in ParquetStream(reloaded, "train").batches(4)) == 25


def test_gzip_input_gives_the_same_dataset(tmp_path):
    days = {0: [line("1", I3="7", C1="0000000a"), "0\t1\t2"], 23: [GOOD, line("1", C2="ffffffff")]}
    plain = convert_terabyte(write_terabyte(tmp_path / "plain", days), tmp_path / "a", HASH, STOP)
    packed = convert_terabyte(write_terabyte(tmp_path / "gz", days, compress=True), tmp_path / "b", HASH, STOP)
    for split in ("train", "valid", "test"):
        assert load_split(plain, split).categorical.equal(load_split(packed, split).categorical)
        assert load_split(plain, split).numeric.equal(load_split(packed, split).numeric)
    gz = tmp_path / "gz" / "day_0.gz"
    assert packed.source["inputs"]["day_0.gz"] == {"sha256": sha256_file(gz), "bytes": gz.stat().st_size,
                                               "rows_read": 2, "rows_kept": 2}


def test_frequency_vocabulary_counts_train_days_only(tmp_path):
    a, b, c, d, e = "0000000a", "000000b0", "0000000c", "0000000d", "000000a0"
    days = {0: [line(C1=a), line(C1=a), line(C1=b), line(C1=e)],
            1: [line(C1=a), line(C1=b), line(C1=c), line(C1=e)],
            23: [line(C1=a), line(C1=b), line(C1=e), line(C1=c), line(C1=d), line(C1=d), line(C1=d), line()]}
    raw = write_terabyte(tmp_path / "raw", days)
    rules = EncodingRules(encoding="frequency", table_size=None, min_count=2)
    fmap = convert_terabyte(raw, tmp_path / "out", rules, STOP)
    # counts over days 0-22: a 3, b 2, e 2, c 1 (d is only in day 23). Kept (>= 2): a, then the tie b/e
    # by id (e = 0xa0 < b = 0xb0): a -> 2, e -> 3, b -> 4; c, d and missing -> 1.
    held_out = pl.concat([read(fmap, "valid/day_23_first_half.parquet"), read(fmap, "test/day_23_second_half.parquet")])
    assert held_out["C1"].to_list() == [2, 4, 3, 1, 1, 1, 1, 1]
    assert read(fmap, "train/day_00.parquet")["C1"].to_list() == [2, 2, 4, 3]
    assert fmap.feature("C1").vocab_size == 5 and fmap.feature("C1").min_count == 2
    assert fmap.feature("C2").vocab_size == 2  # never seen: padding and OOV only

    capped = convert_terabyte(raw, tmp_path / "capped", EncodingRules(encoding="frequency", table_size=2, min_count=2),
                              STOP)
    assert read(capped, "train/day_00.parquet")["C1"].to_list() == [2, 2, 1, 3]
    assert capped.feature("C1").vocab_size == 4


def test_value_counter_merges_exactly():
    rng = np.random.default_rng(0)
    blocks = [rng.integers(-1, 50, size=(len(CATEGORICAL_FEATURES), 300)) for _ in range(5)]  # -1: missing
    counter = ValueCounter(min_merge=1)  # merge after every block
    for block in blocks:
        counter.add(block)
    vocabularies = counter.vocabularies(EncodingRules(encoding="frequency", table_size=None, min_count=1))
    ids = np.concatenate([block[6] for block in blocks])
    column = pl.Series("C7", ids[ids >= 0])
    expected = column.value_counts().sort(["count", "C7"], descending=[True, False])["C7"].to_list()
    vocab = vocabularies["C7"]
    assert vocab.ids[np.argsort(vocab.indices)].tolist() == expected
    ids = np.full((len(CATEGORICAL_FEATURES), 3), -1)
    ids[6] = [expected[0], -1, 999]
    encoded = FrequencyEncoding(EncodingRules(encoding="frequency", table_size=None), vocabularies).encode(ids)
    assert encoded[6].tolist() == [2, 1, 1] and encoded[5].tolist() == [1, 1, 1]


# --------------------------------------------------------------------------------------------------
# Kaggle


def test_kaggle_split_is_seeded_per_line_and_follows_the_fractions():
    lines = np.arange(1, 100_001)
    split = kaggle_split(lines, [0.8, 0.1, 0.1], seed=7)
    assert np.bincount(split).tolist() == pytest.approx([80_000, 10_000, 10_000], abs=1_000)
    assert np.array_equal(kaggle_split(lines[5_000:6_000], [0.8, 0.1, 0.1], seed=7), split[5_000:6_000])
    assert not np.array_equal(kaggle_split(lines, [0.8, 0.1, 0.1], seed=8), split)


def test_kaggle_counts_values_on_train_lines_only(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.txt").write_text("".join(line(C1=f"{n:08x}") + "\n" for n in range(1, 301)))
    rules = KaggleRules(encoding="frequency", table_size=None, min_count=1, split=[0.6, 0.2, 0.2], seed=3)
    fmap = convert_kaggle(raw, tmp_path / "out", rules, STOP, block_bytes=4096)
    train_lines = int((kaggle_split(np.arange(1, 301), rules.split, rules.seed) == 0).sum())
    assert fmap.splits["train"].rows == train_lines
    assert sum(info.rows for info in fmap.splits.values()) == 300
    assert fmap.feature("C1").vocab_size == 2 + train_lines  # every train line has its own value
    assert sorted(read(fmap, "train/part-00000.parquet")["C1"].to_list()) == list(range(2, 2 + train_lines))
    for split in ("valid", "test"):  # their values never occur in train
        assert set(read(fmap, f"{split}/part-00000.parquet")["C1"].to_list()) == {1}
    again = convert_kaggle(raw, tmp_path / "again", rules, STOP, block_bytes=1 << 20)  # the split ignores blocks
    assert again.content_hash == fmap.content_hash


# --------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("bad, problem", [
    (line("2"), "label must be 0 or 1, found '2'"),
    ("", "label must be 0 or 1, found ''"),
    (line("0", I1="1") + "\t", "more than 40 tab-separated fields, found 41"),
    (line("0", I1="1") + "\t\textra", "more than 40 tab-separated fields, found 42"),
    (line("0", I3="abc"), "I3 is not an integer, found 'abc'"),
    (line("0", I1="1.5"), "I1 is not an integer, found '1.5'"),
    (line("0", C5="12345"), "C5 is not 8 hex digits, found '12345'"),
    (line("0", C5="1234567g"), "C5 is not 8 hex digits, found '1234567g'"),
    (line("0", C5="+1234567"), "C5 is not 8 hex digits, found '+1234567'"),
    (line("0", C5="-1234567"), "C5 is not 8 hex digits, found '-1234567'"),
    (line("0", C26="123456789"), "C26 is not 8 hex digits, found '123456789'"),
])
def test_bad_line_stops_with_file_and_line(tmp_path, bad, problem):
    raw = write_terabyte(tmp_path / "raw", {5: [GOOD, GOOD, bad, GOOD]})
    with pytest.raises(CtrbenchError) as error:
        convert_terabyte(raw, tmp_path / "out", HASH, STOP)
    assert str(error.value) == f"{raw / 'day_5'}:3: {problem}; fix the file or pass --skip-bad-rows"
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_line_numbers_across_blocks_and_earliest_bad_line_first(tmp_path):
    lines = [GOOD] * 9 + [line("0", C26="xyz"), line("7")] + [GOOD] * 3
    raw = write_terabyte(tmp_path / "raw", {0: lines})
    with pytest.raises(CtrbenchError, match=r"day_0:10: C26 is not 8 hex digits"):
        convert_terabyte(raw, tmp_path / "out", HASH, STOP, block_bytes=100)  # a line or two per block
    with pytest.raises(CtrbenchError, match=r"day_0:10: C26 is not 8 hex digits"):  # both in one block
        convert_terabyte(raw, tmp_path / "out", HASH, STOP)


def test_skip_bad_rows_counts_them(tmp_path):
    lines = [GOOD, line("2"), line("0", C5="xyz"), GOOD, line("x"), line("0", I2="1e3"), GOOD]
    raw = write_terabyte(tmp_path / "raw", {0: lines})
    fmap = convert_terabyte(raw, tmp_path / "out", HASH, SKIP)
    assert fmap.source["skipped_rows"] == {"day_0: label must be 0 or 1": 2, "day_0: C5 is not 8 hex digits": 1,
                                           "day_0: I2 is not an integer": 1}
    assert fmap.splits["train"].files[0] == "train/day_00.parquet"
    assert len(read(fmap, "train/day_00.parquet")) == 3
    inputs = fmap.source["inputs"]["day_0"]
    assert (inputs["rows_read"], inputs["rows_kept"]) == (7, 3)  # every line read; the 4 bad ones not kept


def test_missing_duplicate_and_corrupt_files(tmp_path):
    raw = write_terabyte(tmp_path / "raw")
    (raw / "day_23").unlink()
    with pytest.raises(CtrbenchError, match=r"raw/day_23: file not found \(plain or .gz\); the terabyte release needs"):
        convert_terabyte(raw, tmp_path / "out", HASH, STOP)
    (raw / "day_23").write_text(GOOD + "\n")
    (raw / "day_3.gz").write_bytes(gzip.compress(b"0\n"))
    with pytest.raises(CtrbenchError, match=r"day_3.gz: both day_3 and day_3.gz exist; keep one"):
        convert_terabyte(raw, tmp_path / "out", HASH, STOP)
    (raw / "day_3").unlink()
    (raw / "day_3.gz").write_bytes(gzip.compress(("".join(GOOD + "\n" for _ in range(50))).encode())[:-30])
    with pytest.raises(CtrbenchError, match=r"day_3.gz: unreadable gzip data after line \d+ .*truncated or corrupt"):
        convert_terabyte(raw, tmp_path / "out", HASH, STOP)


@pytest.mark.parametrize("values, message", [
    (dict(encoding="hash", table_size=None), "encoding hash needs a table size for every feature; C1 has none"),
    (dict(encoding="hash", table_size=10, table_sizes={"C27": 5}), "'C27' is not a categorical feature"),
    (dict(encoding="hash", table_size=0), "table sizes must be between 1 and"),
    (dict(encoding="hash", table_size=10, min_count=5), "min_count only applies to encoding frequency"),
    (dict(encoding="frequency", table_size=None, min_count=0), "min_count must be >= 1"),
])
def test_rules_are_validated(values, message):
    with pytest.raises(CtrbenchError, match=message):
        EncodingRules(**values)


@pytest.mark.parametrize("section, message", [
    ({"terabyte": {"encoding": "hash", "table_size": 10}}, r"criteo.yaml: preprocess.kaggle: missing key 'encoding'"),
    ({"terabyte": {"encoding": "hash", "table_size": 10, "min_cont": 2}, "kaggle": {}},
     r"criteo.yaml: preprocess.terabyte: unknown key 'min_cont' \(did you mean 'min_count'\?\)"),
    ({"terabyte": {"encoding": "hash", "table_size": None}, "kaggle": {}},
     r"criteo.yaml: preprocess.terabyte: encoding hash needs a table size for every feature"),
    ({"terabite": {}}, r"criteo.yaml: preprocess: unknown key 'terabite' \(did you mean 'terabyte'\?\)"),
])
def test_config_errors_name_the_section_and_key(monkeypatch, section, message):
    config = dataclasses.replace(load_dataset_config("criteo"), preprocess=section)
    monkeypatch.setattr("preprocess.criteo.load_dataset_config", lambda name: config)
    with pytest.raises(CtrbenchError, match=message):
        load_rules()


def test_the_config_holds_the_mlperf_table_sizes_and_bars_kaggle_rules(paper_dir):
    terabyte, kaggle = load_rules()
    sizes = [terabyte.size(name) for name in CATEGORICAL_FEATURES]
    assert sizes == [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209,
                     11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]
    # With embedding dim 128 these tables (plus padding and OOV rows) are all but 0.003% of the paper's
    # DLRM parameter count on Criteo TB (Table 3); the rest is DLRM's MLPs.
    embedding_params = 128 * sum(size + 2 for size in sizes)
    with (paper_dir / "table3.csv").open() as handle:
        paper = {(row["model"], row["dataset"]): int(row["params"]) for row in csv.DictReader(handle)}
    assert embedding_params == 26_135_633_920
    assert 0 < paper["DLRM", "Criteo TB"] - embedding_params < 10**6
    assert (kaggle.encoding, kaggle.min_count, kaggle.split) == ("frequency", 10, [0.8, 0.1, 0.1])
    with pytest.raises(CtrbenchError, match="split must be 3 positive fractions"):
        KaggleRules(encoding="frequency", table_size=None, split=[0.9, 0.1], seed=0)
    with pytest.raises(CtrbenchError, match="seed must be >= 0"):
        KaggleRules(encoding="frequency", table_size=None, split=[0.8, 0.1, 0.1], seed=-1)


# --------------------------------------------------------------------------------------------------
# Generator, writer, CLI, memory


def test_generator_is_seeded_and_has_the_real_quirks(tmp_path):
    first = CriteoGenerator(seed=5).write(tmp_path / "a.gz", rows=3_000, day=2)
    second = CriteoGenerator(seed=5).write(tmp_path / "b", rows=3_000, day=2)
    text = gzip.decompress(first.read_bytes())
    assert text == second.read_bytes()
    fields = [row.split("\t") for row in text.decode().splitlines()]
    assert len(fields) == 3_000
    assert {len(row) for row in fields} > {40} and max(len(row) for row in fields) == 40  # short lines
    assert any(row[2].startswith("-") for row in fields)  # negative I2
    assert any("" in row for row in fields if len(row) == 40)  # missing values
    assert all(len(value) == 8 for row in fields for value in row[14:] if value)
    other_day = CriteoGenerator(seed=5).write(tmp_path / "c", rows=3_000, day=3).read_text().splitlines()
    c6 = {row.split("\t")[19] for row in other_day} - {""}
    assert c6 <= {row[19] for row in fields if len(row) > 19}  # C6 has 3 values: the same ids every day


def test_parquet_sink_writes_exact_row_groups(tmp_path):
    schema = pa.schema([pa.field("x", pa.int32())])
    sink = ParquetSink(tmp_path / "x.parquet", schema, row_group_rows=4)
    for start, stop in ((0, 3), (3, 8), (8, 14)):
        sink.write(pa.table({"x": pa.array(range(start, stop), pa.int32())}))
    assert sink.close() == 14
    parquet = pq.ParquetFile(tmp_path / "x.parquet")
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [4, 4, 4, 2]
    assert parquet.read().column("x").to_pylist() == list(range(14))


def test_cli_preprocess_and_train_on_a_generated_kaggle_release(tmp_path, capsys):
    write_release(tmp_path / "raw", "kaggle", rows=20_000, seed=1)
    data = tmp_path / "data"
    assert main(["preprocess", "criteo", "--raw", str(tmp_path / "raw"), "--out", str(data / "criteo")]) == 0
    assert "criteo: found the kaggle release" in capsys.readouterr().err
    fmap = FeatureMap.load(data / "criteo")
    assert sum(info.rows for info in fmap.splits.values()) == 20_000 and fmap.source["skipped_rows"] == {}
    results = tmp_path / "results.jsonl"
    assert main(["train", "--model", "lr", "--dataset", "criteo", "--data-dir", str(data), "--results", str(results),
                 "--set", "train.epochs=2", "--set", "train.batch_size=1024", "--set", "train.learning_rate=0.1",
                 "--no-progress"]) == 0
    record = json.loads(results.read_text())
    assert record["status"] == "ok" and record["test"]["auc"] > 0.6  # the generator plants a learnable signal


def test_cli_terabyte_release_and_one_line_errors(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_release(raw, "terabyte", rows=50, seed=2, compress=True)
    assert main(["preprocess", "criteo", "--raw", str(raw), "--out", str(tmp_path / "out"), "--jobs", "2"]) == 0
    fmap = FeatureMap.load(tmp_path / "out")
    assert (fmap.splits["train"].rows, fmap.splits["valid"].rows, fmap.splits["test"].rows) == (23 * 50, 25, 25)
    assert fmap.feature("C1").vocab_size == 40_000_002 and fmap.feature("C6").vocab_size == 5

    (raw / "day_4.gz").write_bytes(gzip.compress(f"{GOOD}\n{line('3')}\n".encode()))
    capsys.readouterr()
    assert main(["preprocess", "criteo", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: {raw / 'day_4.gz'}:2: label must be 0 or 1, found '3'; "
                       "fix the file or pass --skip-bad-rows")
    assert main(["preprocess", "criteo", "--raw", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no known criteo release here" in capsys.readouterr().err


MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from preprocess.criteo import EncodingRules, FilePlan, convert
    from preprocess.options import PreprocessOptions

    def convert_file(name):
        plan = FilePlan(Path(sys.argv[1]) / name, [("train", "train/day.parquet")])
        convert([plan], Path(sys.argv[1]) / f"out_{name}", EncodingRules(encoding="hash", table_size=1000),
                PreprocessOptions(), {}, block_bytes=1 << 20)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    print(convert_file("small"), convert_file("large"))
""")


def test_streaming_memory_does_not_grow_with_the_file(tmp_path):
    """Peak memory after a 150k-line file, then after a 450k-line one, in one fresh process."""
    text = CriteoGenerator(seed=3).text(50_000, np.random.default_rng(0))
    (tmp_path / "small").write_bytes(text * 3)
    (tmp_path / "large").write_bytes(text * 9)
    extra_text_mib = len(text) * 6 / 2**20
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True)
    small_kib, large_kib = map(int, done.stdout.split())
    growth_mib = (large_kib - small_kib) / 1024
    assert extra_text_mib > 60  # the large file holds this much more text...
    assert growth_mib < 20, f"peak memory grew by {growth_mib:.0f} MiB"  # ...but memory barely moves


def test_release_option_picks_one_of_two_releases(tmp_path):
    raw = write_terabyte(tmp_path / "raw")
    (raw / "train.txt").write_text("".join(f"{GOOD}\n" for _ in range(20)))
    assert main(["preprocess", "criteo", "--raw", str(raw), "--out", str(tmp_path / "tb")]) == 0
    assert FeatureMap.load(tmp_path / "tb").source["release"] == "terabyte"  # the first listed
    assert main(["preprocess", "criteo", "--raw", str(raw), "--out", str(tmp_path / "kg"), "--release", "kaggle"]) == 0
    assert FeatureMap.load(tmp_path / "kg").source["inputs"]["train.txt"]["rows_read"] == 20


# --------------------------------------------------------------------------------------------------
# The output stays exactly what the converter wrote before the fast parser (issue 19)

# Valid but unusual fields (signs, leading zeros, the largest int64, upper-case hex, short lines, a
# carriage return before the line end), then lines breaking each rule in ways a fast parser could get
# wrong, with the message the converter stopped with before the fast parser.
VALID_EDGE_LINES = [
    line("1", I1="+5", I2="-0", I3="007", I4="9223372036854775807", I5="-9223372036854775808", C1="ABCDEF12",
         C2="00000000", C3="ffffffff", C4="0b101010"),
    line("0", I1="00000000000000000000005", C26="a0B1c2D3"),
    "1", "0\t", "1\t\t\t-3", line("0", I1="1") + "\r", "0\t5\r", line("0", C26="0000000a") + "\r",
]
BAD_EDGE_LINES = {
    line("1", I1="9223372036854775808"): "I1 is not an integer, found '9223372036854775808'",
    line("0", I2="99999999999999999999"): "I2 is not an integer, found '99999999999999999999'",
    line("0", I3=" 5"): "I3 is not an integer, found ' 5'",
    line("0", I4="5 "): "I4 is not an integer, found '5 '",
    line("0", I5="-"): "I5 is not an integer, found '-'",
    line("0", I6="+"): "I6 is not an integer, found '+'",
    line("0", I7="1e3"): "I7 is not an integer, found '1e3'",
    line("0", I8="0x10"): "I8 is not an integer, found '0x10'",
    line("0", I9="-+5"): "I9 is not an integer, found '-+5'",
    line("0", I10="\u0665"): "I10 is not an integer, found '٥'",
    line("0", I11='"5"'): 'I11 is not an integer, found \'"5"\'',
    line("0", I12="1.0"): "I12 is not an integer, found '1.0'",
    line("0", C1="0x123456"): "C1 is not 8 hex digits, found '0x123456'",
    line("0", C2="+1234567"): "C2 is not 8 hex digits, found '+1234567'",
    line("0", C3="-1234567"): "C3 is not 8 hex digits, found '-1234567'",
    line("0", C4=" 1234567"): "C4 is not 8 hex digits, found ' 1234567'",
    line("0", C5="1234567 "): "C5 is not 8 hex digits, found '1234567 '",
    line("0", C6="_1234567"): "C6 is not 8 hex digits, found '_1234567'",
    line("0", C7="\u00e4123456"): "C7 is not 8 hex digits, found 'ä123456'",
    line("0", C8="1234567"): "C8 is not 8 hex digits, found '1234567'",
    line("0", C9="123456789"): "C9 is not 8 hex digits, found '123456789'",
    line("0", C10='"1234567'): 'C10 is not 8 hex digits, found \'"1234567\'',
    "": "label must be 0 or 1, found ''",
    " 0": "label must be 0 or 1, found ' 0'",
    "0 ": "label must be 0 or 1, found '0 '",
    "1.0": "label must be 0 or 1, found '1.0'",
    "-1": "label must be 0 or 1, found '-1'",
    "+1": "label must be 0 or 1, found '+1'",
    "01": "label must be 0 or 1, found '01'",
    line("2"): "label must be 0 or 1, found '2'",
    line("1") + "\t": 'more than 40 tab-separated fields, found 41',
    line("1") + "\t\t": 'more than 40 tab-separated fields, found 42',
}
EDGE_LINES = [*VALID_EDGE_LINES, *BAD_EDGE_LINES]


def _insert_edge_lines(text: bytes, every: int) -> bytes:
    rows = text.decode().splitlines()
    for k, edge in enumerate(EDGE_LINES):
        rows.insert(min(every * (k + 1), len(rows)), edge)
    return ("\n".join(rows) + "\n").encode()


def skipped_edge_lines(*files: str) -> dict[str, int]:
    """The skipped-row counts of files holding BAD_EDGE_LINES once each: each under the rule it breaks first."""
    problems = Counter(message.split(", found")[0] for message in BAD_EDGE_LINES.values())
    return {f"{name}: {problem}": count for name in files for problem, count in problems.items()}


def output_digests(fmap: FeatureMap) -> dict[str, str]:
    """Per split file: a SHA-256 of its row group sizes and of every column's values, in schema order."""
    digests = {}
    for split, info in fmap.splits.items():
        for relative in info.files:
            parquet = pq.ParquetFile(fmap.root / relative)
            digest = hashlib.sha256(str([parquet.metadata.row_group(i).num_rows
                                         for i in range(parquet.num_row_groups)]).encode())
            table = parquet.read()
            for name in table.column_names:
                digest.update(name.encode() + table.column(name).to_numpy().tobytes())
            digests[f"{split}:{relative}"] = digest.hexdigest()[:16]
    return digests


# What the converter wrote before the fast parser (commit 30ef7c4) on the inputs of the two tests below.
TERABYTE_DIGESTS = {
    'train:train/day_00.parquet': '89009fbf1694bbc5', 'train:train/day_01.parquet': 'c6ea94131f6210a4',
    'train:train/day_02.parquet': 'ff0022d17754d5ab', 'train:train/day_03.parquet': '695b1382d463dd0a',
    'train:train/day_04.parquet': '99cf7686b271cdad', 'train:train/day_05.parquet': 'dc45bea48cebb3da',
    'train:train/day_06.parquet': '4e39785d12d9028c', 'train:train/day_07.parquet': '61e478a5cc466040',
    'train:train/day_08.parquet': 'a7b38e30f77c2af0', 'train:train/day_09.parquet': '7c62fd019f5d5c6a',
    'train:train/day_10.parquet': 'ef8cdc48999a3b24', 'train:train/day_11.parquet': 'e00b874ef095f394',
    'train:train/day_12.parquet': 'af53e2a88835a438', 'train:train/day_13.parquet': 'd32db99805cc852c',
    'train:train/day_14.parquet': 'be6f1ce6e05378e9', 'train:train/day_15.parquet': 'b68cbc725d6dfa59',
    'train:train/day_16.parquet': '7756fc5fc332b489', 'train:train/day_17.parquet': '7cd0d7d4dffc1999',
    'train:train/day_18.parquet': '6c63954a7a1a7e42', 'train:train/day_19.parquet': '7e8ad945eb60564f',
    'train:train/day_20.parquet': '4fb1b9eb6913b20c', 'train:train/day_21.parquet': 'e57929428cba0022',
    'train:train/day_22.parquet': '1cdd9c5c576afd11', 'valid:valid/day_23_first_half.parquet': 'cc49df53bbd5de1b',
    'test:test/day_23_second_half.parquet': '6b3a7013bbaea793',
}
KAGGLE_DIGESTS = {
    'train:train/part-00000.parquet': '34ae9ccc4794ba84', 'valid:valid/part-00000.parquet': '08793b39c30dfa0c',
    'test:test/part-00000.parquet': '333ff86e33ffb6c6',
}
KAGGLE_VOCAB_SIZES = [1235, 584, 52, 1662, 307, 26, 1543, 623, 5, 1811, 1465, 1048, 1964, 29, 2124, 1519, 12, 1948,
                      1341, 6, 1515, 20, 17, 1854, 107, 1793]


def test_terabyte_output_is_unchanged(tmp_path):
    raw = tmp_path / "raw"
    write_release(raw, "terabyte", rows=1_500, seed=11, compress=True)
    for day in (2, 23):
        path = raw / f"day_{day}.gz"
        path.write_bytes(gzip.compress(_insert_edge_lines(gzip.decompress(path.read_bytes()), 29)))
    fmap = convert_terabyte(raw, tmp_path / "out", load_rules()[0], SKIP, block_bytes=1 << 16)
    assert output_digests(fmap) == TERABYTE_DIGESTS
    assert fmap.source["skipped_rows"] == skipped_edge_lines("day_2.gz", "day_23.gz")
    assert {name: info["rows_read"] for name, info in fmap.source["inputs"].items()} == {
        f"day_{day}.gz": 1_500 + len(EDGE_LINES) * (day in (2, 23)) for day in range(24)}
    assert all(info["rows_kept"] == info["rows_read"] - sum(v for k, v in fmap.source["skipped_rows"].items()
                                                            if k.startswith(f"{name}: "))
               for name, info in fmap.source["inputs"].items())
    assert all(info["sha256"] == sha256_file(raw / name) for name, info in fmap.source["inputs"].items())


def test_kaggle_output_is_unchanged(tmp_path):
    raw = tmp_path / "raw"
    write_release(raw, "kaggle", rows=30_000, seed=12)
    (raw / "train.txt").write_bytes(_insert_edge_lines((raw / "train.txt").read_bytes(), 701))
    rules = KaggleRules(encoding="frequency", table_size=None, table_sizes={"C3": 50}, min_count=2,
                        split=[0.8, 0.1, 0.1], seed=3)
    fmap = convert_kaggle(raw, tmp_path / "out", rules, SKIP, block_bytes=1 << 18)
    assert output_digests(fmap) == KAGGLE_DIGESTS
    assert fmap.source["skipped_rows"] == skipped_edge_lines("train.txt")
    assert [fmap.feature(name).vocab_size for name in CATEGORICAL_FEATURES] == KAGGLE_VOCAB_SIZES


@pytest.mark.parametrize("bad", BAD_EDGE_LINES, ids=list(BAD_EDGE_LINES.values()))
def test_bad_edge_lines_stop_with_the_same_message(tmp_path, bad):
    raw = write_terabyte(tmp_path / "raw", {5: [GOOD, bad, GOOD]}, compress=True)
    with pytest.raises(CtrbenchError) as error:
        convert_terabyte(raw, tmp_path / "out", HASH, STOP)
    assert str(error.value) == f"{raw / 'day_5.gz'}:2: {BAD_EDGE_LINES[bad]}; fix the file or pass --skip-bad-rows"


def test_fast_parser_agrees_with_the_careful_path_on_mutated_lines(tmp_path):
    """Generated lines with random bytes replaced, inserted or deleted: every line the fast parser takes
    gets the careful path's values, and the others are judged by the careful path."""
    rng = np.random.default_rng(7)
    text = bytearray(CriteoGenerator(seed=9).text(3_000, rng))
    alphabet = np.frombuffer(b"0123456789abcdefABCDEFxX+- \t\r\n\"\xc3\xa9", dtype=np.uint8)
    for position in sorted(rng.choice(len(text) - 1, size=600, replace=False), reverse=True):
        action = rng.integers(3)
        if action == 0:
            text[position] = alphabet[rng.integers(len(alphabet))]
        elif action == 1:
            text.insert(position, alphabet[rng.integers(len(alphabet))])
        else:
            del text[position]
    path = tmp_path / "day_0"
    path.write_bytes(bytes(text))
    fast_policy, careful_policy = BadRows(skip=True), BadRows(skip=True)
    fast = list(read_rows(LineBlocks(path, block_bytes=1 << 14), fast_policy, "reading"))
    lines = np.arange(1, text.count(b"\n") + 1)
    careful = _parse_block(bytes(text), path, lines, careful_policy)
    assert sum(len(rows.lines) for rows in fast) == len(careful.lines) > 2_000
    assert fast_policy.skipped == careful_policy.skipped and careful_policy.total > 200
    for name in ("lines", "label", "numeric", "ids"):
        assert np.array_equal(np.concatenate([getattr(rows, name) for rows in fast], axis=-1), getattr(careful, name))


def test_jobs_convert_several_days_at_once_with_the_same_output(tmp_path):
    raw = tmp_path / "raw"
    write_release(raw, "terabyte", rows=400, seed=13, compress=True)
    one = convert_terabyte(raw, tmp_path / "one", HASH, STOP)
    three = convert_terabyte(raw, tmp_path / "three", HASH, PreprocessOptions(jobs=3))
    assert three.content_hash == one.content_hash and three.splits == one.splits and three.source == one.source

    (raw / "day_7.gz").write_bytes(gzip.compress(f"{GOOD}\n{GOOD}\n{line('0', I4='x')}\n".encode()))
    with pytest.raises(CtrbenchError, match=r"day_7.gz:3: I4 is not an integer, found 'x'"):
        convert_terabyte(raw, tmp_path / "bad", HASH, PreprocessOptions(jobs=2))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(CtrbenchError, match="--jobs must be at least 1, got 0"):
        convert_terabyte(raw, tmp_path / "bad", HASH, PreprocessOptions(jobs=0))


def test_generator_writes_the_days_asked_for(tmp_path):
    synthetic_main([str(tmp_path / "some"), "--rows", "40", "--days", "22-23", "--seed", "4"])
    assert sorted(path.name for path in (tmp_path / "some").iterdir()) == ["day_22", "day_23"]
    write_release(tmp_path / "all", "terabyte", rows=40, seed=4)
    assert (tmp_path / "some" / "day_23").read_bytes() == (tmp_path / "all" / "day_23").read_bytes()
    with pytest.raises(SystemExit):
        synthetic_main([str(tmp_path / "bad"), "--rows", "40", "--days", "20-24"])
