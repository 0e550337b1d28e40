"""KuaiVideo converter: the BARS x1 release on a tiny fixture (exact encodings), bad input, the CLI.

No real KuaiVideo files are available on these machines; the fixture reproduces BARS KuaiVideo_x1:
CSVs whose pos_items / neg_items are `^`-joined item ids (empty for none) and an .h5 table written by
h5py as BARS's converter writes it (integer keys 0..n-1 there; here the fixture's item ids).
"""

import dataclasses
import functools
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.batches import load_index_map, load_split
from ctrbench.data.features import DatasetWriter, FeatureMap, to_parquet_frame
from ctrbench.data.sources import ParquetStream, row_bytes
from ctrbench.nn.embedding import FeatureEmbedding
from model_zoo import get_model_class
from preprocess.kuaivideo import preprocess_kuaivideo
from preprocess.options import PreprocessOptions

FIXTURES = Path(__file__).parent / "fixtures" / "kuaivideo"
VECTORS = np.arange(10, dtype=np.float32).reshape(5, 2)  # items 100, 200, 300, 400, 500

# Min count 10, counted per column on train: item 100 is 10 times in item_id; 200 only twice there but 10
# times in pos_items; 300 is 12 times in all (2 + 5 + 5) but never 10 in one column, so it is OOV for
# item_id. item_id: 200 (12 in all) -> 2, 100 -> 3. item_emb (min count 1, plus every key): 200 -> 2,
# 300 -> 3, 100 -> 4, then 400, 500 (vectors only) -> 5, 6. User 7 (10 rows) -> 2; user 8 (4 rows) is OOV.
# Shown with max_len 3 (BARS: 100).
HISTORY = {"pos_items": [0, 2, 1], "neg_items": [0, 0, 1], "pos_items_emb": [0, 2, 3], "neg_items_emb": [0, 0, 3]}
NONE = [0, 0, 0]
EXPECTED_TRAIN = {
    "user_id": [2] * 10 + [1] * 4, "item_id": [3] * 10 + [2, 2, 1, 1], "item_emb": [4] * 10 + [2, 2, 3, 3],
    "pos_items": [HISTORY["pos_items"]] * 5 + [[0, 0, 2]] * 5 + [NONE] * 4,
    "neg_items": [HISTORY["neg_items"]] * 5 + [NONE] * 9,
    "pos_items_emb": [HISTORY["pos_items_emb"]] * 5 + [[0, 0, 2]] * 5 + [NONE] * 4,
    "neg_items_emb": [HISTORY["neg_items_emb"]] * 5 + [NONE] * 9,
    "label": [1, 0] * 7,
}
EXPECTED_TEST = {"user_id": [2, 1], "item_id": [1, 3], "item_emb": [5, 4], "pos_items": [[3, 2, 1], NONE],
                 "neg_items": [NONE, [0, 0, 1]], "pos_items_emb": [[4, 2, 3], NONE], "neg_items_emb": [NONE, [0, 0, 5]],
                 "label": [1, 0]}


def make_release(tmp_path: Path, key_dtype=np.int64) -> Path:
    raw = tmp_path / "bars_x1"
    shutil.copytree(FIXTURES / "bars_x1", raw)
    with h5py.File(raw / "item_visual_emb_dim64.h5", "w") as h5:
        h5.create_dataset("key", data=np.array([100, 200, 300, 400, 500]).astype(key_dtype))
        h5.create_dataset("value", data=VECTORS)
    return raw


@pytest.fixture
def rules(preprocess_rules):
    """Override keys of dataset_configs/kuaivideo.yaml's preprocess section (max_len=3 by default)."""
    preprocess_rules("kuaivideo", max_len=3)
    return functools.partial(preprocess_rules, "kuaivideo")


def read_split(fmap: FeatureMap, split: str) -> dict[str, list]:
    """Each feature's indices, then the label: a sequence that reads another's column mapped by its index map."""
    frame = pl.read_parquet(fmap.split_paths(split))
    values = {}
    for spec in fmap.features:
        values[spec.name] = frame[spec.stored_as].to_list()
        index_map = load_index_map(fmap, spec)
        if index_map is not None:
            values[spec.name] = index_map.numpy()[np.array(values[spec.name], dtype=np.int64)].tolist()
    return {**values, fmap.label: frame[fmap.label].to_list()}


@pytest.mark.parametrize("key_dtype", [np.int64, "S3"])  # integer keys, or byte strings as h5py stores text
def test_bars_release_encodes_exactly(key_dtype, rules, tmp_path):
    fmap = preprocess_kuaivideo(make_release(tmp_path, key_dtype), tmp_path / "out", PreprocessOptions())
    assert [(f.name, f.type, f.vocab_size, f.share_embedding) for f in fmap.features] == [
        ("user_id", "categorical", 3, None), ("item_id", "categorical", 4, None),
        ("item_emb", "pretrained_embedding", 7, None), ("pos_items", "sequence", 4, "item_id"),
        ("neg_items", "sequence", 4, "item_id"), ("pos_items_emb", "sequence", 7, "item_emb"),
        ("neg_items_emb", "sequence", 7, "item_emb")]
    assert read_split(fmap, "train") == EXPECTED_TRAIN
    assert read_split(fmap, "test") == EXPECTED_TEST
    table = np.load(fmap.root / "pretrained" / "item_emb.npy")
    assert table.tolist() == [[0, 0], [0, 0], VECTORS[1].tolist(), VECTORS[2].tolist(), VECTORS[0].tolist(),
                              VECTORS[3].tolist(), VECTORS[4].tolist()]
    assert fmap.splits["valid"] == fmap.splits["test"]
    assert fmap.source["inputs"]["item_visual_emb_dim64.h5"]["rows_kept"] == 5


def test_bars_empty_ids_are_missing_values(rules, tmp_path):
    """An empty user_id or item_id is OOV (FuxiCTR fills "", which no vocabulary holds); the row is kept."""
    raw = make_release(tmp_path)
    (raw / "test.csv").write_text((raw / "test.csv").read_text().replace("16,9,100,0,", "16,,,0,"))
    fmap = preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions())
    test = read_split(fmap, "test")
    assert fmap.source["skipped_rows"] == {} and fmap.splits["test"].rows == 2
    assert test["user_id"][1] == test["item_id"][1] == test["item_emb"][1] == 1


def test_a_history_in_two_vocabularies_is_stored_and_loaded_once(rules, tmp_path):
    """pos_items (item_id's vocabulary, min count 10) is pos_items_emb's history (item_emb's: every item) in a
    smaller vocabulary: the split files hold pos_items_emb alone, pos_items reads it through the index map
    item_emb index -> item_id index, and the loader gives both features one tensor."""
    fmap = preprocess_kuaivideo(make_release(tmp_path), tmp_path / "out", PreprocessOptions())
    assert pq.read_schema(fmap.split_paths("train")[0]).names == [
        "user_id", "item_id", "item_emb", "pos_items_emb", "neg_items_emb", "label"]
    shared = {f.name: (f.column, f.index_map) for f in fmap.features if f.column}
    assert shared == {"pos_items": ("pos_items_emb", "index_maps/item_emb-item_id.npy"),
                      "neg_items": ("neg_items_emb", "index_maps/item_emb-item_id.npy")}
    # item_emb 200, 300, 100, 400, 500 -> 2..6; item_id 200 -> 2, 100 -> 3, the others OOV (1)
    assert np.load(fmap.root / "index_maps" / "item_emb-item_id.npy").tolist() == [0, 1, 2, 1, 3, 1, 1]
    assert row_bytes(fmap) == 4 * (3 + 2 * 3 + 1)  # was 4 * (3 + 4 * 3 + 1)
    [streamed] = ParquetStream(fmap, "train").batches(batch_size=14, shuffle=True, generator=torch.Generator())
    for batch in (load_split(fmap, "train"), streamed):
        assert sorted(batch.sequences) == ["neg_items_emb", "pos_items_emb"]
        assert batch.sequence(fmap.feature("pos_items")) is batch.sequence(fmap.feature("pos_items_emb"))


def _materialized(fmap: FeatureMap, directory: Path) -> FeatureMap:
    """The same dataset in the layout from before: every feature in a column of its own, no index maps."""
    specs = [dataclasses.replace(f, column=None, index_map=None) for f in fmap.features]
    with DatasetWriter(directory) as writer:
        shutil.copytree(fmap.root / "pretrained", writer.path("pretrained"))
        for split in ("train", "test"):
            table = pa.table({name: values for name, values in read_split(fmap, split).items()})
            writer.write_split(split, to_parquet_frame(pl.from_arrow(table), fmap.label, specs))
        return writer.commit(FeatureMap(dataset=fmap.dataset, label=fmap.label, features=specs))


@pytest.mark.parametrize("name", ["dlrm", "wukong"])
def test_a_history_stored_once_gives_the_models_outputs_of_two_columns(name, rules, tmp_path):
    fmap = preprocess_kuaivideo(make_release(tmp_path), tmp_path / "out", PreprocessOptions())
    before = _materialized(fmap, tmp_path / "before")
    assert row_bytes(before) == 4 * (3 + 4 * 3 + 1)
    outputs = []
    for data in (fmap, before):
        torch.manual_seed(0)
        model = get_model_class(name)(data, embedding_dim=4)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, FeatureEmbedding):
                    module.table.weight.normal_(std=0.5)  # rows far apart, so a wrong row would show
            outputs.append(model.eval()(load_split(data, "train")))
    assert torch.equal(outputs[0], outputs[1])


def test_keep_oldest_items_as_the_bars_converter(rules, tmp_path):
    rules(max_len=2)  # the YAML's keep: oldest
    fmap = preprocess_kuaivideo(make_release(tmp_path), tmp_path / "out", PreprocessOptions())
    assert read_split(fmap, "test")["pos_items"][0] == [3, 2]  # 100^200^300 -> 100, 200
    rules(max_len=2, keep="recent")
    fmap = preprocess_kuaivideo(make_release(tmp_path / "recent"), tmp_path / "out", PreprocessOptions())
    assert read_split(fmap, "test")["pos_items"][0] == [2, 1]  # -> 200, 300


@pytest.mark.parametrize("file, line, text, message", [
    ("train.csv", 1, "timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items\n",
     "train.csv:1: wrong header 'timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items'; expected "
     "'timestamp,user_id,item_id,is_click,is_like,is_follow,pos_items,neg_items'"),
    ("train.csv", 5, "4,7,100,0.5,0,0,200^300,300\n", "train.csv:5: is_click must be 0 or 1, found '0.5'"),
    ("test.csv", 3, "16,9,,0,0,0\n", "test.csv:3: fewer than the header's 8 fields"),
])
def test_bad_row_stops_with_file_and_line(file, line, text, message, tmp_path):
    raw = make_release(tmp_path)
    lines = (raw / file).read_text().splitlines(keepends=True)
    lines[line - 1] = text
    (raw / file).write_text("".join(lines))
    with pytest.raises(CtrbenchError) as error:
        preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions())
    assert str(error.value).startswith(f"{raw / file}:") and message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_skip_bad_rows_counts_them(rules, tmp_path):
    raw = make_release(tmp_path)
    with (raw / "test.csv").open("a") as handle:
        handle.write("17,7,100,3,0,0,,\n18,7,100\n")
    fmap = preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions(skip_bad_rows=True))
    assert fmap.source["skipped_rows"] == {"test.csv: is_click must be 0 or 1": 1,
                                           "test.csv: missing or empty field 'is_click'": 1}
    assert read_split(fmap, "test") == EXPECTED_TEST


def test_cli_preprocess_kuaivideo(tmp_path, capsys):
    out = tmp_path / "kuaivideo"
    assert main(["preprocess", "kuaivideo", "--raw", str(make_release(tmp_path)), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "kuaivideo: found the bars_x1 release" in err
    assert "kuaivideo: train / valid / test rows 14 / 2 / 2, BARS KuaiVideo_x1 has 10,931,092 / 2,730,291 / " \
           "2,730,291" in err
    fmap = FeatureMap.load(out)
    assert fmap.feature("pos_items").max_len == 100 and fmap.feature("user_id").min_count == 10
    assert read_split(fmap, "test")["pos_items"][0][-3:] == [3, 2, 1]
    (tmp_path / "bars_x1" / "item_visual_emb_dim64.h5").unlink()
    assert main(["preprocess", "kuaivideo", "--raw", str(tmp_path / "bars_x1")]) == 2
    assert "no known kuaivideo release here; expected one of these file sets: bars_x1: train.csv, test.csv, " \
           "item_visual_emb_dim64.h5" in capsys.readouterr().err


# ALPINE's dataset.pkl: train and test samples [[user, item, click, like, follow, time], pos_len, neg_len],
# then each user's positive and negative items in time order (a dict here, a list there, numpy ints in
# places, as pickles of that era hold), then two edge lists.
ALPINE_TRAIN = [[[7, 100, 1, 0, 0, 1], 0, 0], [[7, 200, 0, 0, 0, 2], 1, 0], [[np.int64(8), 300, 1, 0, 0, 3.0], 0, 1]]
ALPINE_TEST = [[[7, 400, 1, 0, 0, 4], 2, 1], [[9, 100, 0, 0, 0, 5], 0, 0]]
ALPINE_POSITIVES = {7: [100, 300, 500], 8: [], 9: [200]}
ALPINE_NEGATIVES = [[]] * 7 + [[200], [np.int64(100)], []]


def make_alpine_release(tmp_path: Path, train=ALPINE_TRAIN, extra=()) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir(parents=True)
    with (raw / "dataset.pkl").open("wb") as handle:
        for part in (train, ALPINE_TEST, ALPINE_POSITIVES, ALPINE_NEGATIVES, [], [], *extra):
            pickle.dump(part, handle)
    np.save(raw / "visual64_select.npy", np.arange(1200, dtype=np.float32).reshape(600, 2))
    return raw


@pytest.mark.parametrize("keep, one_item", [("oldest", [2]), ("recent", [4])])  # of 100, 300: 100 or 300
def test_alpine_release_encodes_exactly(keep, one_item, rules, tmp_path):
    rules(min_count=1, max_len=2, keep=keep)
    fmap = preprocess_kuaivideo(make_alpine_release(tmp_path), tmp_path / "out", PreprocessOptions())
    # item_id: 100 (item, history, history) -> 2, 200 -> 3, 300 -> 4; item_emb then adds vector rows 0..599
    # skipping those: 400 -> 5 + 400 - 3 = 402. Histories: the user's first pos_len / neg_len items.
    train, test = read_split(fmap, "train"), read_split(fmap, "test")
    assert train["item_id"] == [2, 3, 4] and train["pos_items"] == [[0, 0], [0, 2], [0, 0]]
    assert train["neg_items"] == [[0, 0], [0, 0], [0, 2]] and train["label"] == [1, 0, 1]
    assert test["item_id"] == [1, 2] and test["item_emb"] == [402, 2] and test["user_id"] == [2, 1]
    assert test["pos_items"][0] == [2, 4] and test["neg_items"][0] == [0, 3]  # 100, 300 | 200
    assert fmap.feature("item_emb").vocab_size == 602
    assert {name: entry["rows_kept"] for name, entry in fmap.source["inputs"].items()} == {
        "dataset.pkl": 5, "visual64_select.npy": 600}
    rules(min_count=1, max_len=1, keep=keep)
    fmap = preprocess_kuaivideo(make_alpine_release(tmp_path / "short"), tmp_path / "out", PreprocessOptions())
    assert read_split(fmap, "test")["pos_items"][0] == one_item


def test_alpine_pickle_with_other_objects_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    raw = make_alpine_release(tmp_path, train=[Payload()])
    with pytest.raises(CtrbenchError, match=r"dataset.pkl: holds a (builtins|io).open object, not only lists and "
                                            r"numbers; it is not ALPINE's dataset.pkl, and unpickling it could run"):
        preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions())
    assert not marker.exists()
    (raw / "dataset.pkl").write_bytes(b"not a pickle")
    with pytest.raises(CtrbenchError, match=r"dataset.pkl: not ALPINE's dataset.pkl"):
        preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions())


def test_alpine_bad_samples_stop_or_are_counted(rules, tmp_path):
    train = [*ALPINE_TRAIN, [[7, 100, 2, 0, 0, 6], 0, 0], [[9, 200, 1, 0, 0, 7], 2, 0], [[6, 100, 1, 0, 0, 8], 1, 0]]
    raw = make_alpine_release(tmp_path, train=train)
    with pytest.raises(CtrbenchError, match=r"dataset.pkl:4: train sample: is_click must be 0 or 1; fix the file"):
        preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions())
    rules(min_count=1, max_len=2)
    fmap = preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions(skip_bad_rows=True))
    assert fmap.source["skipped_rows"] == {
        "dataset.pkl: train sample: is_click must be 0 or 1": 1,
        "dataset.pkl: train sample: its count of earlier positive items exceeds the user's positive items": 2}
    assert read_split(fmap, "train")["pos_items"] == [[0, 0], [0, 2], [0, 0]]
    raw = make_alpine_release(tmp_path / "shape", train=[[[7, 100, 1], 0, 0]])
    with pytest.raises(CtrbenchError, match=r"dataset.pkl: the first element of each train sample must hold 6"):
        preprocess_kuaivideo(raw, tmp_path / "out", PreprocessOptions())
