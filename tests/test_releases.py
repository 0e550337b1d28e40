"""Published release checksums: the table in the dataset configs, matching inputs, `preprocess`'s verdict and
record, `datasets --sources`."""

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import ctrbench.app.cli
from ctrbench.app.cli import main
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.datasets import dataset_names, load_dataset_config
from ctrbench.data.releases import InputCheck, Release, ReleaseFile, check_inputs

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "frappe"
REAL_DATA = Path(os.environ.get("CTRBENCH_REAL_DATA", REPO_ROOT.parent / "shared" / "data")) / "frappe"
FRAPPE_X1_MD5 = ["ba7306e6c4fc19dd2cd84f2f0596d158", "88d51bf2173505436d3a8f78f2a59da8", "3470f6d32713dc5f7715f198ca7c612a"]


def test_a_published_md5_matches_and_anything_else_is_reported(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"label,user\n1,7\n")
    (tmp_path / "test.csv").write_bytes(b"label,user\n0,8\n")
    (tmp_path / "notes.txt").write_bytes(b"not in the table")
    releases = [Release("BARS Tiny_x1", files=[ReleaseFile("train.csv", hashlib.md5(b"label,user\n1,7\n").hexdigest()),
                                               ReleaseFile("test.csv", hashlib.md5(b"label,user\n0,9\n").hexdigest())],
                        checksums_from="by hand")]
    checks = check_inputs(releases, tmp_path, ["train.csv", "test.csv", "notes.txt"])
    other = hashlib.md5(b"label,user\n0,8\n").hexdigest()
    assert checks == [InputCheck("test.csv", other, None),  # notes.txt: no md5 published under its name, not hashed
                      InputCheck("train.csv", hashlib.md5(b"label,user\n1,7\n").hexdigest(), "BARS Tiny_x1 train.csv")]
    assert checks[1].message("tiny") == "tiny: train.csv matches BARS Tiny_x1 train.csv"
    assert checks[0].message("tiny") == (f"tiny: warning: test.csv does not match any known release (md5 {other}); "
                                         "see `ctrbench datasets --sources` for the published checksums")
    # a file under another published name is still recognised by its content
    (tmp_path / "test.csv").write_bytes(b"label,user\n1,7\n")
    assert check_inputs(releases, tmp_path, ["test.csv"])[0].matches == "BARS Tiny_x1 train.csv"


def _with_fixture_md5s(monkeypatch):
    """Frappe's config with a BARS release whose md5s are those of the tiny bars_x1 fixture."""
    config = load_dataset_config("frappe")
    files = [ReleaseFile(name, hashlib.md5((FIXTURES / "bars_x1" / name).read_bytes()).hexdigest())
             for name in ("train.csv", "valid.csv", "test.csv")]
    config = dataclasses.replace(config, releases=[Release("BARS Tiny_x1", files=files, read_as="bars_x1",
                                                           checksums_from="computed in this test")])
    monkeypatch.setattr(ctrbench.app.cli, "load_dataset_config", lambda name: config)
    return files


def test_preprocess_says_which_release_and_records_it(tmp_path, monkeypatch, capsys):
    files = _with_fixture_md5s(monkeypatch)
    assert main(["preprocess", "frappe", "--raw", str(FIXTURES / "bars_x1"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    for name in ("train.csv", "valid.csv", "test.csv"):
        assert f"frappe: {name} matches BARS Tiny_x1 {name}" in err
    inputs = json.loads((tmp_path / "out" / "feature_map.json").read_text())["source"]["inputs"]
    assert {name: (entry["md5"], entry["matches"]) for name, entry in inputs.items()} == {
        f.name: (f.md5, f"BARS Tiny_x1 {f.name}") for f in files}
    assert all(len(entry["sha256"]) == 64 for entry in inputs.values())


def test_preprocess_warns_but_converts_a_file_of_no_known_release(tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURES / "bars_x1", raw)  # the real table: BARS's md5s, which the tiny fixture has not
    assert main(["preprocess", "frappe", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    md5 = hashlib.md5((raw / "train.csv").read_bytes()).hexdigest()
    assert f"frappe: warning: train.csv does not match any known release (md5 {md5})" in err
    assert "matches BARS" not in err and "wrote" in err
    inputs = json.loads((tmp_path / "out" / "feature_map.json").read_text())["source"]["inputs"]
    assert inputs["train.csv"]["md5"] == md5 and inputs["train.csv"]["matches"] is None


def test_datasets_sources_lists_where_and_what_to_download(capsys):
    assert main(["datasets", "--sources"]) == 0
    out = capsys.readouterr().out
    assert all(md5 in out for md5 in FRAPPE_X1_MD5)
    assert "frappe: BARS Frappe_x1: https://huggingface.co/datasets/reczoo/Frappe_x1 (md5s read from reczoo/Datasets@" in out
    assert "none published" in out and "not read yet" in out  # raw releases; BARS Criteo_x1


def test_the_table_holds_the_published_md5s_and_names_the_converters_releases():
    from preprocess import criteo, frappe, kuaivideo, microvideo, movielens, taobaoads

    converters = {"criteo": criteo, "frappe": frappe, "kuaivideo": kuaivideo, "microvideo": microvideo,
                  "movielens": movielens, "taobaoads": taobaoads}
    assert [f.md5 for f in load_dataset_config("frappe").releases[0].files] == FRAPPE_X1_MD5
    for name in dataset_names():
        for release in load_dataset_config(name).releases:
            assert release.read_as is None or release.read_as in converters[name].RELEASES, (name, release.name)
            if release.name.startswith("BARS ") and release.read_as:
                assert {f.name for f in release.files if f.md5} <= {"train.csv", "valid.csv", "test.csv"}


def test_a_bad_md5_in_a_config_is_a_one_line_error(tmp_path, monkeypatch):
    import ctrbench.data.datasets

    config = yaml.safe_load((REPO_ROOT / "dataset_configs" / "frappe.yaml").read_text())
    config["releases"][0]["files"][0]["md5"] = "BA7306E6"
    (tmp_path / "frappe.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(ctrbench.data.datasets, "DATASET_CONFIG_DIR", tmp_path)
    with pytest.raises(CtrbenchError, match=r"frappe.yaml: releases: release 'BARS Frappe_x1', file 'train.csv': md5 "
                                            r"must be 32 lowercase hex digits, got 'BA7306E6'"):
        load_dataset_config("frappe")
    config["releases"][0]["files"][0] = {"name": "train.csv", "sha1": "x"}
    (tmp_path / "frappe.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CtrbenchError, match=r"releases\[0\].files\[0\]: unknown key 'sha1'"):
        load_dataset_config("frappe")


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real Frappe files not found in {REAL_DATA} "
                                                   "(set CTRBENCH_REAL_DATA to the shared data directory)")
def test_real_libfm_release_has_no_published_checksum_and_converts(tmp_path, capsys):
    assert main(["preprocess", "frappe", "--raw", str(REAL_DATA), "--release", "libfm", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "matches" not in err and "does not match" not in err  # libfm files: no md5 published, none hashed
    inputs = json.loads((tmp_path / "out" / "feature_map.json").read_text())["source"]["inputs"]
    assert sorted(inputs) == ["frappe.test.libfm", "frappe.train.libfm", "frappe.validation.libfm"]
    assert not any("matches" in entry or "md5" in entry for entry in inputs.values())
