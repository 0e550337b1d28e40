"""Part 5: Frappe's DLRM (BARS config) trained to convergence by both libraries, seeds BASE_SEED.. (as many
as `--converge-seeds`): FuxiCTR's own `fit`, and ours through `ctrbench.app.runner.bench` at each of
`--precisions`, stored in RESULTS/converge_ours.jsonl (runs already stored there are kept, not trained again)."""

from __future__ import annotations

import sys
from typing import Any

from benchmarks.fuxictr_bridge import export_for_fuxictr, model_job, shared_train_settings
from benchmarks.measure import Workers
from ctrbench.app.options import RunOptions
from ctrbench.app.runner import bench, resolve_spec
from ctrbench.data.features import FeatureMap
from ctrbench.store.record import BASE_SEED


def run(args, workers: Workers) -> dict[str, Any]:
    fmap = FeatureMap.load(args.frappe)
    fx_dir = export_for_fuxictr(fmap, args.work / "fuxictr_frappe")
    spec = resolve_spec("dlrm", "frappe", BASE_SEED)
    fuxictr = []
    for seed in range(BASE_SEED, BASE_SEED + args.converge_seeds):
        fuxictr.append({"precision": "fp32", "seed": seed, **workers.run("fuxictr", {
            "kind": "converge", "seed": seed, "threads": args.threads, "epochs": spec.train.epochs,
            "log_file": str(args.work / f"fuxictr_converge_{seed}.log"),
            **model_job("dlrm", spec, fx_dir, args.fuxictr_zoo), "train": shared_train_settings(spec)})})
        print(f"FuxiCTR seed {seed}: {fuxictr[-1]}", file=sys.stderr, flush=True)
    ours = []
    for precision in args.precisions:
        options = RunOptions(data_dir=args.frappe.parent, results_path=args.results / "converge_ours.jsonl",
                             overrides={"train": {"precision": precision}}, progress=False, command=args.command)
        records = bench("frappe", ["dlrm"], args.converge_seeds, options)
        ours += [{"precision": precision, "seed": r.seed, "epochs": r.epochs, "valid_auc": r.valid.auc,
                  "test_auc": r.test.auc, "test_logloss": r.test.logloss, "git_commit": r.environment.git_commit}
                 for r in records]
    return {"fuxictr": fuxictr, "ours": ours}
