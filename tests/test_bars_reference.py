"""BARS's reported results (leaderboards/bars_reference.yaml): the committed table and its checks."""

from __future__ import annotations

import pytest
import yaml

from ctrbench.core.errors import CtrbenchError
from ctrbench.data.datasets import load_dataset_config
from ctrbench.report.bars_reference import BarsResult, load_bars_reference
from model_zoo import MODELS

COMMIT = "5b5e61fe2e4ddf676dd12984365da0ae775fb863"


def test_the_committed_table_loads():
    table = load_bars_reference()
    assert sorted(table) == [(d, m) for d in ("kuaivideo", "microvideo", "taobaoads")
                             for m in ("AutoInt+", "DCNv2", "xDeepFM")]
    assert table[("kuaivideo", "DCNv2")] == BarsResult(
        auc=0.746953, gauc=0.667472, experiment="DCNv2_kuaivideo_x1_008_7047bff3", seed=20222023,
        source=f"reczoo/BARS@{COMMIT} ranking/ctr/DCNv2/DCNv2_kuaivideo_x1/README.md")
    assert table[("microvideo", "xDeepFM")].gauc == 0.688869 and table[("microvideo", "xDeepFM")].seed == 2022
    display_names = {cls.display_name for cls in MODELS.values()}
    for dataset, model in table:
        assert model in display_names, model  # the leaderboard matches rows on display names
        assert load_dataset_config(dataset).group is not None


GOOD = {"auc": 0.7, "gauc": 0.6, "experiment": "DCNv2_kuaivideo_x1_008_7047bff3", "seed": 2022,
        "source": f"reczoo/BARS@{COMMIT} ranking/ctr/DCNv2/DCNv2_kuaivideo_x1/README.md"}


@pytest.mark.parametrize(("table", "message"), [
    ({"kuaivideo": {"DCNv2": {**GOOD, "acu": 0.7}}}, "kuaivideo.DCNv2: unknown key 'acu' (did you mean 'auc'?)"),
    ({"kuaivideo": {"DCNv2": {**GOOD, "gauc": "0.6"}}}, "kuaivideo.DCNv2.gauc: expected float, got '0.6'"),
    ({"kuaivideo": {"DCNv2": {**GOOD, "auc": 74.6953}}}, "kuaivideo.DCNv2.auc: expected a value in (0, 1], got 74.6953"),
    ({"kuaivideo": {"DCNv2": {k: v for k, v in GOOD.items() if k != "seed"}}}, "kuaivideo.DCNv2: missing key 'seed'"),
    ({"kuaivideo": {"DCNv2": {**GOOD, "source": "reczoo/BARS@5b5e61f README.md"}}},
     "kuaivideo.DCNv2.source: expected 'OWNER/REPO@COMMIT PATH' with the 40-hex commit"),
    ({"frappe": {"DCNv2": GOOD}}, "frappe: the dataset has no `group:` (no gAUC)"),
    ({"kuaivdeo": {"DCNv2": GOOD}}, "unknown dataset 'kuaivdeo' (did you mean 'kuaivideo'?)"),
])
def test_a_malformed_entry_stops_with_one_line(tmp_path, table, message):
    path = tmp_path / "bars_reference.yaml"
    path.write_text(yaml.safe_dump(table))
    with pytest.raises(CtrbenchError) as error:
        load_bars_reference(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)
    assert "\n" not in str(error.value)
