"""Streamed against in-memory training: the same models, seeds and data, read two ways; is test AUC the same?

    python -m benchmarks.stream_check benchmarks/stream_check/in-memory.jsonl benchmarks/stream_check/stream.jsonl

reads two results stores made by the same `ctrbench bench` command with `--in-memory` and with `--stream`
and prints, per model, each mode's test AUC and LogLoss (mean ± sample std over the seeds both stores
hold), the difference of the means, and the verdict: "same" when the difference of the AUC means is
smaller than the larger of the two seed spreads (the project's rule: a difference smaller than the seed
spread is a tie), "differs" otherwise. Runs on other data builds than the first store's are left out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from ctrbench.store.record import RunRecord
from ctrbench.store.results import ResultsStore, format_mean_std


def compare(in_memory: list[RunRecord], streamed: list[RunRecord]) -> list[str]:
    """The markdown table rows, one per model present in both stores (seeds both hold)."""
    build = in_memory[0].data_hash if in_memory else None
    rows = []
    for model in sorted({r.model for r in in_memory} & {r.model for r in streamed}):
        ours = {mode: {r.seed: r for r in runs if r.model == model and r.data_hash == build and r.status == "ok"}
                for mode, runs in (("memory", in_memory), ("stream", streamed))}
        seeds = sorted(set(ours["memory"]) & set(ours["stream"]))
        if len(seeds) < 2:
            continue
        auc = {mode: [ours[mode][s].test.auc for s in seeds] for mode in ours}
        logloss = {mode: [ours[mode][s].test.logloss for s in seeds] for mode in ours}
        difference = statistics.mean(auc["stream"]) - statistics.mean(auc["memory"])
        spread = max(statistics.stdev(auc["memory"]), statistics.stdev(auc["stream"]))
        verdict = "same" if abs(difference) < spread else "differs"
        rows.append(f"| {model} | {', '.join(map(str, seeds))} | {format_mean_std(auc['memory'])} | "
                    f"{format_mean_std(auc['stream'])} | {difference:+.4f} | {spread:.4f} | "
                    f"{format_mean_std(logloss['memory'])} | {format_mean_std(logloss['stream'])} | {verdict} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("in_memory", type=Path, help="store of the --in-memory runs")
    parser.add_argument("streamed", type=Path, help="store of the --stream runs")
    args = parser.parse_args(argv)
    rows = compare(ResultsStore(args.in_memory).records(), ResultsStore(args.streamed).records())
    print("| model | seeds | test AUC in memory | test AUC streamed | streamed - in memory | seed spread (std) "
          "| test LogLoss in memory | test LogLoss streamed | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
