"""The committed results store stays usable by today's code: its runs keep their data and config hashes.

Every run is keyed by a hash of its config and of the data's content hash (`ctrbench.store.record.hash_config`),
so a change that moves either (a new field in the feature map's features, a new default in a config)
would silently orphan every stored run: the leaderboard would drop them as another build and
`bench --protocol` would start over. These tests read `leaderboards/results.jsonl` as committed.
"""

import pytest

from ctrbench.app.cli import main
from ctrbench.app.protocol import ProtocolPlanner
from ctrbench.data.datasets import REPO_ROOT
from ctrbench.data.features import FeatureMap
from ctrbench.store.protocol_spec import load_protocol
from ctrbench.store.record import RunRecord
from ctrbench.store.results import ResultsStore

STORE = REPO_ROOT / "leaderboards" / "results.jsonl"
FRAPPE_RAW = REPO_ROOT.parent / "shared" / "data" / "frappe"
PROTOCOL_MODELS = ["afn_plus", "autoint_plus", "wukong", "dcnv2", "xdeepfm", "finalmlp", "dlrm", "masknet"]


def stored_runs() -> list[RunRecord]:
    return ResultsStore(STORE).records()


def test_real_frappe_builds_to_the_data_the_store_ran_on(tmp_path):
    if not FRAPPE_RAW.is_dir():
        pytest.skip(f"real Frappe is not in {FRAPPE_RAW} (../shared/data/frappe)")
    assert main(["preprocess", "frappe", "--raw", str(FRAPPE_RAW), "--release", "libfm", "--out", str(tmp_path)]) == 0
    assert {r.data_hash for r in stored_runs() if r.dataset == "frappe"} == {FeatureMap.load(tmp_path).content_hash}


def test_the_protocol_plans_every_stored_run_under_its_stored_hash():
    runs = [r for r in stored_runs() if r.dataset == "frappe" and "--protocol paper" in r.command]
    assert runs, "the committed store holds the Frappe protocol's runs"
    planner = ProtocolPlanner(load_protocol("paper"), "frappe", PROTOCOL_MODELS, 3, runs[0].data_hash)
    planned = {spec.config_hash(planner.data_hash) for plan in planner.plan(runs) for spec in plan.tried}
    assert {r.config_hash for r in runs} <= planned  # a seed does not change a config's hash
