"""The scaling study: the teacher dataset, the power-law fit, ladders and `ctrbench scale` end to end."""

from __future__ import annotations

import contextlib
import json
import math

import numpy as np
import pytest

from ctrbench.app.cli import main
from ctrbench.app.scaling import check_increasing, ladder
from ctrbench.core.errors import CtrbenchError
from ctrbench.data.features import FeatureMap
from ctrbench.data.teacher import Teacher, binary_entropy, write_teacher
from ctrbench.report.powerlaw import PowerLaw, fit_relative, fit_with_intervals


def test_binary_entropy_by_hand():
    assert binary_entropy(np.array([0.5]))[0] == pytest.approx(math.log(2), abs=1e-15)
    p = 0.2  # -0.2 ln 0.2 - 0.8 ln 0.8
    assert binary_entropy(np.array([p]))[0] == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-15)
    assert binary_entropy(np.array([0.0, 1.0])) == pytest.approx([0.0, 0.0], abs=2e-6)  # clipped as LogLoss clips


def test_teacher_records_the_exact_bayes_logloss(tmp_path):
    """The recorded Bayes LogLoss of a split is the mean entropy of the teacher's probabilities on its rows,
    recomputed here from the same seeded draws; the teacher is fixed by its seed."""
    fmap = write_teacher(tmp_path / "teacher", rows=2_000, seed=5, chunk_rows=700)
    bayes = fmap.source["bayes"]
    teacher, rng = Teacher(5), np.random.default_rng([5, 2])
    for split, size in (("train", 1_600), ("valid", 200), ("test", 200)):
        entropies = []
        for start in range(0, size, 700):
            numeric, categorical = teacher.draw(min(700, size - start), rng)
            p = teacher.probability(numeric, categorical)
            rng.random(len(p))  # the labels' draw
            entropies.append(binary_entropy(p))
        assert bayes[split]["logloss"] == pytest.approx(np.concatenate(entropies).mean(), rel=1e-12)
    assert FeatureMap.load(tmp_path / "teacher").source["bayes"] == json.loads(json.dumps(bayes))
    assert len(fmap.features) == 39 and 0.5 < bayes["test"]["auc"] < 1.0
    other = Teacher(5)
    assert np.array_equal(other.weights[3], teacher.weights[3]) and other.subsets[3][0].tolist() == teacher.subsets[3][0].tolist()


def test_power_law_fit_recovers_a_known_law():
    """Noisy points from L = 0.44 + 0.05 C^-0.3 over 0.1-30 MFLOP, 3 seeds: the fit finds E, A, alpha within
    tolerance and its intervals contain them; an outlier barely moves it (Huber)."""
    rng = np.random.default_rng(0)
    truth = PowerLaw(E=0.44, A=0.05, alpha=0.3)
    compute = np.repeat(np.geomspace(0.1, 30, 6), 3)
    loss = truth(compute) + rng.normal(0, 0.0005, len(compute))
    loss[4] += 0.02  # one bad run
    fit = fit_with_intervals(compute, loss, resamples=100)
    assert fit.law.E == pytest.approx(0.44, abs=0.004)
    assert fit.law.alpha == pytest.approx(0.3, abs=0.08)
    assert fit.intervals["alpha"][0] <= 0.3 <= fit.intervals["alpha"][1]
    c = truth.saturation(0.0005)  # 0.05 (1 - 4^-0.3) C^-0.3 = 0.0005
    assert 0.05 * (1 - 4 ** -0.3) * c ** -0.3 == pytest.approx(0.0005)


def test_relative_form_by_hand():
    x = np.array([0.5, 2.0, 8.0])
    y = -100 + 99.56 * x ** 0.00071  # the paper's Wukong law
    a, b = fit_relative(x, y)
    assert (a, b) == (pytest.approx(99.56, rel=1e-9), pytest.approx(0.00071, rel=1e-6))


def test_every_ladder_grows_compute_at_every_rung(tmp_path, categorical_dataset):
    """The teacher ladders and Frappe's (on Frappe's 10 categorical fields; MFLOP do not depend on the
    vocabulary sizes): compute grows at every rung, over at least 30x."""
    from ctrbench.app.runner import build_model
    from ctrbench.app.scaling import ladder_specs
    from ctrbench.data.batches import load_split
    from ctrbench.nn.flops import model_stats

    teacher = write_teacher(tmp_path / "teacher", rows=600, seed=1)
    frappe = categorical_dataset([50] * 10, rows=32)
    studies = [("teacher", model, teacher, load_split(teacher, "valid").slice(0, 32))
               for model in ("wukong", "dlrm", "dcnv2")] + [("frappe", model, *frappe) for model in ("wukong", "dlrm")]
    for dataset, model, fmap, batch in studies:
        mflop = [model_stats(build_model(spec, fmap), batch).mflop_per_example
                 for spec in ladder_specs(model, dataset, seeds=1)]
        check_increasing(model, mflop)
        assert mflop[-1] / mflop[0] >= 30, (dataset, model)  # the study spans at least 30x
    with pytest.raises(CtrbenchError, match="rung 2 has 1 MFLOP/example, not more than rung 1's 2"):
        check_increasing("m", [0.5, 2.0, 1.0])


TINY = """teacher:
  model: {embedding_dim: 4, bottom_mlp_units: [8], top_mlp_units: [8]}
  train: {batch_size: 256, epochs: 1}
  ladder:
    - model: {top_mlp_units: [8]}
    - model: {top_mlp_units: [32]}
    - model: {top_mlp_units: [128, 128]}
"""


def test_bad_ladder_is_one_line_error(tmp_path):
    (tmp_path / "dlrm.yaml").write_text(TINY.replace("top_mlp_units: [32]", "top_mlp_unit: [32]"))
    with pytest.raises(CtrbenchError, match=r"teacher.ladder\[1\].model: unknown key 'top_mlp_unit'"):
        ladder("dlrm", "teacher", tmp_path)
    (tmp_path / "dlrm.yaml").write_text("teacher:\n  model: {embedding_dim: 4}\n")
    with pytest.raises(CtrbenchError, match="no `ladder:` of at least 2 rungs"):
        ladder("dlrm", "teacher", tmp_path)


def test_scale_end_to_end_then_the_report(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "dlrm.yaml").write_text(TINY)
    write_teacher(tmp_path / "data" / "teacher", rows=3_000, seed=3)
    args = ["scale", "--dataset", "teacher", "--models", "dlrm", "--seeds", "2", "--config-dir", str(configs),
            "--data-dir", str(tmp_path / "data"), "--results", "scaling/results.jsonl", "--device", "cpu",
            "--no-progress"]
    with contextlib.chdir(tmp_path):
        assert main(args) == 0
        assert main(args) == 0  # resumes: nothing retrained
        assert main(["leaderboard", "--results", "scaling/results.jsonl", "--out", "scaling"]) == 0
    records = [json.loads(line) for line in (tmp_path / "scaling" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(r["bayes"]["test"]["logloss"] > 0 for r in records)
    page = (tmp_path / "scaling" / "teacher_scaling.md").read_text()
    assert "Bayes limit" in page and "## DLRM" in page and "Verdict:" in page
    assert page.count("| 2 |") >= 3  # three rungs, two seeds each
    assert "ctrbench scale --dataset teacher --models dlrm --seeds 2" in page and str(tmp_path) not in page
    assert (tmp_path / "scaling" / "teacher_scaling.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "scaling" / "table2.md").exists()  # scaling runs stay out of Tables 2 and 3
