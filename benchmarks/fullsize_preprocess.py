"""Measure one `ctrbench preprocess` run and record it under benchmarks/fullsize_results/.

    python -m benchmarks.fullsize_preprocess DATASET --raw DIR --out DIR --input "HOW THE RAW FILES WERE MADE"
        [--name NAME] [--note TEXT] [--jobs N] [--record-dataset NAME]

runs `ctrbench preprocess DATASET --raw DIR --out DIR` as a child process and writes
benchmarks/fullsize_results/NAME.json (NAME defaults to DATASET_preprocess): the split sizes it wrote,
wall seconds, the child's peak RSS (`os.wait4`, what `/usr/bin/time -v` reports as maximum resident set
size), rows per second (train + test rows over wall time; valid lists the test files) and per CPU second
(user + system: what the run itself cost, whatever else the machine ran), the output's size,
the command as typed (paths as given, relative to the repository), the machine, its load average before
the run and the commit. Criteo records its input lines too (`lines`, `lines_per_s`, `lines_per_cpu_s`:
every line of every raw file), and `--record-dataset` names the record (e.g. criteo_tb_day).
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks.measure import REPO, add_record_options, load_average, run_measured, write_fullsize_record
from ctrbench.data.features import FeatureMap
from ctrbench.store.environment import code_version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--raw", required=True, help="raw release directory, relative to the repository")
    parser.add_argument("--out", required=True, help="output directory, relative to the repository")
    parser.add_argument("--name", help="result file name without .json (default: DATASET_preprocess)")
    parser.add_argument("--jobs", type=int, help="passed to ctrbench preprocess")
    add_record_options(parser, "raw files")
    args = parser.parse_args(argv)
    command = ["ctrbench", "preprocess", args.dataset, "--raw", args.raw, "--out", args.out]
    command += ["--jobs", str(args.jobs)] if args.jobs is not None else []
    commit, dirty = code_version()
    load = load_average()
    measured = run_measured([sys.executable, "-m", *command])
    wall, cpu, rss = measured.wall_s, measured.cpu_s, measured.peak_rss_mib
    fmap = FeatureMap.load(REPO / args.out)
    rows = {split: info.rows for split, info in fmap.splits.items()}
    output = sum(path.stat().st_size for path in (REPO / args.out).rglob("*") if path.is_file())
    lines = {}
    if args.dataset == "criteo":
        count = sum(info["rows_read"] for info in fmap.source["inputs"].values())
        lines = {"lines": count, "lines_per_s": round(count / wall), "lines_per_cpu_s": round(count / cpu)}
    record = {
        "dataset": args.record_dataset or args.dataset, "stage": "preprocess", **lines,
        "train_rows": rows["train"], "valid_rows": rows["valid"],
        "test_rows": rows["test"], "wall_s": round(wall, 1), "peak_rss_mib": round(rss),
        "rows_per_s": round((rows["train"] + rows["test"]) / wall), "cpu_s": round(cpu, 1),
        "rows_per_cpu_s": round((rows["train"] + rows["test"]) / cpu), "output_mib": round(output / 2**20),
        "command": " ".join(command),
    }
    write_fullsize_record(args.name or args.dataset + "_preprocess", record, args.input, args.note, load, commit, dirty)
    print(json.dumps(record))


if __name__ == "__main__":
    main()
