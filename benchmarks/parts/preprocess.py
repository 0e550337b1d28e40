"""Part 2: `ctrbench preprocess frappe` against FuxiCTR's FeatureProcessor + build_dataset on the same
BARS Frappe_x1-format CSVs (written from our processed Frappe splits), wall time and peak RSS."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.fuxictr_bridge import preprocess_job, write_csvs
from benchmarks.measure import Workers, load_average, run_measured
from ctrbench.data.features import FeatureMap


def run(args, workers: Workers) -> dict[str, Any]:
    fmap = FeatureMap.load(args.frappe)
    csv_dir = write_csvs(fmap, args.work / "frappe_csv")
    total_rows = sum(s.rows for s in fmap.splits.values())
    rows = []
    for repeat in range(args.repeats):
        sides = ["ctrbench", "fuxictr"] if repeat % 2 == 0 else ["fuxictr", "ctrbench"]
        for side in sides:
            out = Path(tempfile.mkdtemp(dir=args.work))
            load = load_average()
            if side == "ctrbench":
                measured = run_measured([sys.executable, "-m", "ctrbench", "preprocess", "frappe", "--raw",
                                         str(csv_dir), "--out", str(out / "frappe"), "--release", "bars_x1"],
                                        workers.env)
                result = {"wall_seconds": measured.wall_s, "peak_rss_mib": measured.peak_rss_mib}
            else:
                result = workers.run("fuxictr", preprocess_job(fmap, csv_dir, out, args.threads))
            rows.append({"side": side, "repeat": repeat, "rows": total_rows, "load_before": load, **result})
            print(f"preprocess {side} #{repeat}: {result['wall_seconds']:.1f} s, {result['peak_rss_mib']:,.0f} MiB",
                  file=sys.stderr, flush=True)
    return {"rows": rows, "input": "BARS Frappe_x1-format CSVs written from the processed Frappe splits"}
