"""The performance report: each part's JSON (written by `benchmarks/run.py`) as one markdown file.

Throughput figures are medians over repeats with the range (min-max) next to them. A ctrbench /
FuxiCTR ratio is the median of the per-repeat ratios: the two measurements of one repeat ran back to
back, so they shared the same background load.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from ctrbench.report.leaderboard import portable_command

PARTS = ("train", "preprocess", "eval", "scaling", "converge", "profile")


def spread(values: list[float], fmt: str = ",.0f") -> str:
    """`median (min-max)` of `values`, or the one value."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def paired_ratios(rows: list[dict[str, Any]], key: str, ours: str, theirs: str) -> list[float]:
    """Per repeat, ours[key] / theirs[key] for rows sharing every field but `side`."""
    by_repeat: dict[int, dict[str, float]] = {}
    for row in rows:
        by_repeat.setdefault(row["repeat"], {})[row["side"]] = row[key]
    return [sides[ours] / sides[theirs] for sides in by_repeat.values() if ours in sides and theirs in sides]


def _header(part: dict[str, Any]) -> list[str]:
    m = part["machine"]
    return [f"`{portable_command(part['command'])}`", "",
            f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads per side; started "
            f"{part['started']}, {part['minutes']:.0f} min; 1-min load average {part['load_before']:.1f} before, "
            f"{part['load_after']:.1f} after.", ""]


def _groups(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def _cell(rows: list[dict[str, Any]], key: str) -> str:
    return spread([r[key] for r in rows]) if rows else "n/a"


def train_section(part: dict[str, Any]) -> list[str]:
    peaks = {precision: statistics.median(values) for precision, values in part["matmul_peak_gflops"].items()}
    lines = ["## 1. Training and inference throughput", "", *_header(part),
             f"Training samples/s over {part['steps']} timed steps after {part['warmup_steps']} warm-up step(s), data "
             "loading included (each library's own in-memory loader); inference samples/s = predicting the "
             "whole validation split. Peak RSS is the worker process's (data, model, interpreter). "
             "Median (min-max) over repeats; ratio = median of per-repeat ctrbench / FuxiCTR. "
             + ("All jobs of a repeat ran at the same time (one process each), sharing the load alike."
                if part.get("concurrent") else "Jobs ran one after the other, ctrbench and FuxiCTR alternating."),
             "",
             "Precision: ctrbench's `train.precision` (bf16 = forward passes under bfloat16 autocast, float32 "
             "weights and optimizer); FuxiCTR trains in float32. GFLOP/s = train samples/s x 3 x the model's forward "
             "FLOPs per example (`ctrbench.nn.flops` of our model, for both sides: the same structure but for the "
             "differences listed below the table; backward ~ 2x forward), and "
             "its share of the same-precision matmul peak, measured in the same run (torch.matmul [4096x1024] x "
             f"[1024x1024], before and after): fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s.", "",
             "| dataset | model | precision | ctrbench train samples/s | FuxiCTR train samples/s | train ratio | "
             "ctrbench inference/s | FuxiCTR inference/s | inference ratio | train GFLOP/s (of peak) ctrbench / FuxiCTR "
             "| peak RSS MiB ctrbench / FuxiCTR |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (dataset, model), rows in _groups(part["rows"], "dataset", "model").items():
        theirs = [r for r in rows if r["side"] == "fuxictr"]
        for (precision,), ours in _groups([r for r in rows if r["side"] == "ctrbench"], "precision").items():

            def ratio(key: str) -> str:
                return spread(paired_ratios(ours + theirs, key, "ctrbench", "fuxictr"), ".2f") + "x" if theirs else "n/a"

            def gflops(side_rows: list[dict[str, Any]], peak: float) -> str:
                if not side_rows:
                    return "n/a"
                achieved = statistics.median(r["samples_per_second"] for r in side_rows) * 3 * ours[0][
                    "forward_mflop_per_example"] / 1e3
                return f"{achieved:.0f} ({achieved / peak:.0%})"

            lines.append(f"| {dataset} | {model} | {precision} | {_cell(ours, 'samples_per_second')} "
                         f"| {_cell(theirs, 'samples_per_second')} | {ratio('samples_per_second')} "
                         f"| {_cell(ours, 'inference_samples_per_second')} | {_cell(theirs, 'inference_samples_per_second')} "
                         f"| {ratio('inference_samples_per_second')} "
                         f"| {gflops(ours, peaks[precision])} / {gflops(theirs, peaks['fp32'])} "
                         f"| {_cell(ours, 'peak_rss_mib')} / {_cell(theirs, 'peak_rss_mib')} |")
    lines.append("")
    lines += [f"No row for {what}: its Frappe config cannot be built on this data ({why})."
              for what, why in part.get("skipped", {}).items()]
    lines += [f"No FuxiCTR row for {what}: {why}." for what, why in part["fuxictr_missing"].items()]
    return lines + [""] + model_notes(part)


def model_notes(part: dict[str, Any]) -> list[str]:
    """Per dataset and model with a FuxiCTR side: both sides' parameter counts and how the designs differ."""
    counts: dict[str, dict[str, int]] = {}
    for row in part["rows"]:
        if "parameters" in row:
            counts.setdefault(f"{row['dataset']} {row['model']}", {})[row["side"]] = row["parameters"]
    differences = part.get("fuxictr_differences", {})
    keys = [key for key, sides in counts.items() if "fuxictr" in sides and "ctrbench" in sides]
    if not keys:
        return []
    lines = ["The two sides' models at the mapped config (`benchmarks.fuxictr_bridge.fuxictr_params`): parameters "
             "(embedding tables included) ctrbench / FuxiCTR, and where the designs differ.", ""]
    for key in keys:
        notes = [f"{counts[key]['ctrbench']:,} / {counts[key]['fuxictr']:,} parameters", *differences.get(key, [])]
        lines.append(f"- {key}: {'; '.join(notes)}.")
    return lines + [""]


def preprocess_section(part: dict[str, Any]) -> list[str]:
    rows = part["rows"]
    sides = _groups(rows, "side")
    lines = ["## 2. Preprocessing throughput", "", *_header(part),
             f"Input: {part['input']} ({rows[0]['rows']:,} rows). ctrbench: the whole `ctrbench preprocess frappe "
             "--release bars_x1` process; FuxiCTR: a process running `FeatureProcessor` + `build_dataset` (its "
             "Ray transform included; Ray's worker processes are not in the peak RSS). Rows/s = rows / process wall "
             "time, interpreter start included.", "",
             "| side | wall s | rows/s | peak RSS MiB | 1-min load at start |", "|---|---|---|---|---|"]
    for (side,), rs in sides.items():
        lines.append(f"| {side} | {spread([r['wall_seconds'] for r in rs], '.1f')} "
                     f"| {spread([r['rows'] / r['wall_seconds'] for r in rs])} "
                     f"| {spread([r['peak_rss_mib'] for r in rs])} | {spread([r['load_before'] for r in rs], '.1f')} |")
    ratios = [1 / r for r in paired_ratios(rows, "wall_seconds", "ctrbench", "fuxictr")]
    lines += ["", f"ctrbench / FuxiCTR rows/s: {spread(ratios, '.1f')}x.", ""]
    return lines


def eval_section(part: dict[str, Any]) -> list[str]:
    rows = part["rows"]
    lines = ["## 3. Evaluation: AUC over many predictions", "", *_header(part),
             f"Exact AUC of {part['predictions']:,} float32 scores (ties counted half): "
             "`ctrbench.training.metrics.auc` vs scikit-learn's `roc_auc_score`, which FuxiCTR's `evaluate_metrics` "
             "calls.", "",
             "| implementation | seconds | AUC |", "|---|---|---|"]
    for (side,), rs in _groups(rows, "side").items():
        lines.append(f"| {side} | {spread([r['seconds'] for r in rs], '.2f')} | {rs[0]['auc']:.9f} |")
    ratios = [1 / r for r in paired_ratios(rows, "seconds", "ctrbench", "sklearn")]
    lines += ["", f"Speed-up: {spread(ratios, '.1f')}x. Inference samples/s are in part 1.", ""]
    return lines


def scaling_section(part: dict[str, Any]) -> list[str]:
    peak = statistics.median(part["matmul_peak_gflops"]) * 1e3  # MFLOP/s
    m, k, n = part["matmul_size"]
    lines = ["## 4. How Wukong's cost grows (ctrbench only)", "", *_header(part),
             f"Matmul peak: torch.matmul [{m}x{k}] x [{k}x{n}] fp32, best of 5, measured before and after in the same "
             f"run: {', '.join(f'{g:.1f}' for g in part['matmul_peak_gflops'])} GFLOP/s (fractions below use the "
             "median). Training on one pre-built batch of random indices (no data loading), Adam; train MFLOP per "
             "example = 3 x the forward count of `ctrbench.nn.flops` (backward ~ 2x forward), embedding_dim 16, "
             "vocabulary 1,000 per feature.", ""]
    batch = part["scaling_batch"]
    titles = {"size": "Wukong size (Table 5's ladder scaled down: nF = nL and k / 4, MLP width / 32), 39 features, "
                      f"batch {batch}",
              "batch": "batch size, Wukong l=8, nF = nL = 12, k=12, MLP 3x128, 39 features",
              "features": f"number of features, same Wukong, batch {batch}"}
    for sweep, title in titles.items():
        lines += [f"**vs {title}**", "", "| l | nF = nL | k | MLP | features | batch | train MFLOP/example "
                  "| samples/s | MFLOP/s | of matmul peak |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in part["rows"] if r["sweep"] == sweep):
            lines.append(f"| {r['num_layers']} | {r['fmb_embeddings']} | {r['fm_rank']} | 3x{r['fmb_mlp_units'][0]} "
                         f"| {r['features']} | {r['batch_size']} | {r['train_mflop_per_example']:.2f} "
                         f"| {r['samples_per_second']:,.0f} | {r['mflops']:,.0f} | {r['mflops'] / peak:.1%} |")
        lines.append("")
    return lines


def converge_section(part: dict[str, Any]) -> list[str]:
    runs = [{**r, "library": "FuxiCTR 2.3.10"} for r in part["fuxictr"]] + [{**r, "library": "ctrbench"} for r in part["ours"]]
    lines = ["## Convergence on Frappe: DLRM in both libraries", "", *_header(part),
             "BARS DLRM_frappe_x1 config (model_zoo/configs/dlrm.yaml `frappe`), early stopping on validation AUC "
             "(patience 2, best weights restored). FuxiCTR: its own `fit`, float32. ctrbench: "
             "`ctrbench.app.runner.bench` (the code of `ctrbench bench`), runs kept in `converge_ours.jsonl` beside "
             "this report's JSON with the "
             "command, commit and thread count that made each (their speeds are not comparable: see part 1).", "",
             "| library | precision | seed | epochs | valid AUC | test AUC | test logloss |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['library']} | {r['precision']} | {r['seed']} | {r['epochs']} | {r['valid_auc']:.4f} "
                     f"| {r['test_auc']:.4f} | {r['test_logloss']:.4f} |")
    lines += ["", "| library | precision | seeds | test AUC, mean ± sample std |", "|---|---|---|---|"]
    for (library, precision), group in _groups(runs, "library", "precision").items():
        aucs = [r["test_auc"] for r in group]
        std = f" ± {statistics.stdev(aucs):.4f}" if len(aucs) > 1 else ""
        lines.append(f"| {library} | {precision} | {len(aucs)} | {statistics.fmean(aucs):.4f}{std} |")
    return lines + [""]


def profile_section(part: dict[str, Any]) -> list[str]:
    lines = ["## Profile of our training step: precision, eager vs torch.compile", "", *_header(part),
             f"Frappe configs, pre-built batches, {part['steps']} timed steps after {part['warmup_steps']} warm-up "
             "steps (compilation happens in the warm-up). Samples per CPU second count this process's CPU time, "
             "which background load disturbs less than wall time.", "",
             "| model | precision | torch.compile | samples/s | samples per CPU second |", "|---|---|---|---|---|"]
    for r in part["rows"]:
        lines.append(f"| {r['model']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} "
                     f"| {r['samples_per_second']:,.0f} | {r['samples_per_cpu_second']:,.0f} |")
    for r in part["rows"]:
        if "top_ops" in r:
            lines += ["", f"Top operators of the eager {r['precision']} {r['model']} step (torch.profiler, self CPU "
                      "time):", "", "```", r["top_ops"].strip(), "```"]
    return lines + [""]


SECTIONS = {"train": train_section, "preprocess": preprocess_section, "eval": eval_section,
            "scaling": scaling_section, "converge": converge_section,
            "profile": profile_section}


def render(parts: dict[str, dict[str, Any]], command: str = "python -m benchmarks.run report") -> str:
    lines = ["# Performance: ctrbench vs FuxiCTR 2.3.10", "",
             f"Generated by `{command}` from the parts below (each with the command that measured it). "
             "Do not edit by hand.", ""]
    for name in PARTS:
        if name in parts:
            lines += SECTIONS[name](parts[name])
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: Path, out: Path, command: str) -> None:
    parts = {name: json.loads((results_dir / f"{name}.json").read_text())
             for name in PARTS if (results_dir / f"{name}.json").is_file()}
    out.write_text(render(parts, command))
