"""The leaderboard's AUC-vs-compute plot: every point inside the axes, no label on another, one FLOP
convention (forward MFLOP per example; the paper's Table 3 figures, forward + backward, divided by 3).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

# Candidate label offsets from a point, in points: right, above, left, below, then further out.
OFFSETS = [(5, 4), (5, -11), (-5, 4), (-5, -11), (5, 12), (-5, 12), (5, -19), (-5, -19), (12, 0), (-12, 0),
           (5, 20), (-5, 20), (5, -27), (-5, -27)]


@dataclass(frozen=True)
class Point:
    label: str
    mflop: float  # forward MFLOP per example
    auc: float
    std: float = 0.0
    highlight: bool = False  # best model, or tied with it


def _place_labels(figure: Figure, axes, texts, points: list[Point]) -> None:
    """Move each label to the first candidate offset where it overlaps no placed label, no marker and no
    error bar and stays inside the axes (the last candidate if none is free)."""
    renderer = figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    markers = []
    for p in points:
        (x, low), (_, high) = axes.transData.transform([(p.mflop, p.auc - p.std), (p.mflop, p.auc + p.std)])
        markers.append(Bbox.from_extents(x - 5, min(low, high) - 5, x + 5, max(low, high) + 5))
    placed: list[Bbox] = []
    for text in texts:
        for dx, dy in OFFSETS:
            text.set_position((dx, dy))
            text.set_horizontalalignment("left" if dx >= 0 else "right")
            box = text.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in placed + markers):
                break
        placed.append(text.get_window_extent(renderer))


def auc_vs_mflop_png(title: str, ours: list[Point], paper: list[Point]) -> bytes:
    """Test AUC against forward MFLOP per example, log x axis; ours with std error bars, the paper's as
    hollow squares; highlighted points (the best model and those tied with it) as filled stars."""
    figure = Figure(figsize=(7.5, 5.2), dpi=100)
    FigureCanvasAgg(figure)  # a renderer to measure the labels with
    axes = figure.add_subplot()
    styles = [(paper, dict(fmt="s", color="tab:gray", mfc="none", label="paper (Table 2; MFLOP = Table 3 ÷ 3)")),
              ([p for p in ours if not p.highlight], dict(fmt="o", color="tab:blue", capsize=3,
                                                          label="ours (mean ± std over seeds)")),
              ([p for p in ours if p.highlight], dict(fmt="*", color="tab:red", capsize=3, markersize=10,
                                                      label="ours: best, or tied with it"))]
    positive = [p.mflop for p in ours + paper if p.mflop > 0] or [1.0]
    floor = min(positive) / 2  # where a model that counts no FLOPs (a table lookup) is drawn, so labelled
    styles = [([Point(f"{p.label} (0 MFLOP)", floor, p.auc, p.std, p.highlight) if p.mflop <= 0 else p
                for p in points], style) for points, style in styles]
    texts, drawn = [], []
    for points, style in styles:
        if not points:
            continue
        drawn += points
        axes.errorbar([p.mflop for p in points], [p.auc for p in points],
                      yerr=[p.std for p in points] if any(p.std for p in points) else None, linestyle="none", **style)
        texts += [axes.annotate(p.label, (p.mflop, p.auc), xytext=(5, 4), textcoords="offset points", fontsize=8,
                                color=style["color"]) for p in points]
    everything = ours + paper
    if everything:
        low = min(p.auc - p.std for p in everything)
        high = max(p.auc + p.std for p in everything)
        pad = max(high - low, 1e-3) * 0.18
        axes.set_ylim(low - pad, high + pad)
        axes.set_xlim(floor / 2.5, max(positive) * 2.5)
    axes.set_xscale("log")
    axes.set_xlabel("forward MFLOP per example (log scale)")
    axes.set_ylabel("test AUC")
    axes.set_title(f"{title}: test AUC vs compute")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    figure.tight_layout()
    _place_labels(figure, axes, texts, drawn)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
