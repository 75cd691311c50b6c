"""The run report's charts: matplotlib figures rendered to PNG bytes (Agg, no display).

Each function takes plain data (dicts and lists, as pipeline/run_report.py gathers them)
and returns one PNG; pipeline/report_html.py inlines it as base64. Figures are built with
``matplotlib.figure.Figure`` and the Agg canvas directly, never pyplot: no global state,
nothing opened on a screen. Sizes are in pixels at :data:`DPI`: :data:`HALF` fits two
charts side by side on a 1280 px page, :data:`FULL` one across it.
"""

from __future__ import annotations

import datetime
import io
from typing import Dict, Mapping, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
HALF = (600, 300)  # pixels
FULL = (1220, 300)
CURRENT, BASELINE, BAD = "#1f77b4", "#b0b0b0", "#d62728"
# Figures not worth a line: constants of the schedule, not of the model.
_NOT_CURVES = ("epoch", "lr", "learning_rate")


def _figure(size: Tuple[int, int], rows: int = 1, columns: int = 1):
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, [axis for row in axes for axis in row]


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _empty(axis, text: str) -> None:
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes,
              color="#666666")
    axis.set_xticks([])
    axis.set_yticks([])


def comparison(title: str, current: Mapping[str, float],
               baseline: Optional[Mapping[str, float]], names: Sequence[str]) -> bytes:
    """This run's figures beside the baseline's (grey), one pair of bars per figure."""
    figure, [axis] = _figure(HALF)
    shown = [name for name in names if name in current]
    ys = range(len(shown))
    height = 0.38 if baseline else 0.6
    axis.barh([y - (height / 2 if baseline else 0) for y in ys],
              [current[name] for name in shown], height, color=CURRENT, label="this run")
    if baseline:
        axis.barh([y + height / 2 for y in ys], [baseline.get(name, 0.0) for name in shown],
                  height, color=BASELINE, label="baseline (last blessed)")
    for y, name in zip(ys, shown):
        axis.text(current[name], y - (height / 2 if baseline else 0), f" {current[name]:.3f}",
                  va="center", fontsize=8)
    axis.set_yticks(list(ys), shown, fontsize=8)
    axis.invert_yaxis()
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    if not shown:
        _empty(axis, "no figures")
    return png(figure)


def history(title: str, points: Sequence[Dict], names: Sequence[str],
            runs: Sequence[int] = ()) -> bytes:
    """Each figure over the runs: ``points`` [{"run": n, "metrics", "blessed",
    "pushed_version"}]; blessed runs filled circles, the others red crosses, pushed
    versions labelled. ``runs``: every run's number (the x axis), with or without a point."""
    figure, [axis] = _figure(FULL)
    runs = sorted(set(runs) | {point["run"] for point in points})
    for name in names:
        values = [(point["run"], point["metrics"][name], point["blessed"])
                  for point in points if name in point["metrics"]]
        if not values:
            continue
        line, = axis.plot([v[0] for v in values], [v[1] for v in values], "-", label=name)
        blessed = [v for v in values if v[2]]
        refused = [v for v in values if v[2] is False]
        axis.plot([v[0] for v in blessed], [v[1] for v in blessed], "o",
                  color=line.get_color(), markersize=7)
        axis.plot([v[0] for v in refused], [v[1] for v in refused], "x", color=BAD,
                  markersize=9, markeredgewidth=2)
    for point in points:
        if point.get("pushed_version"):
            axis.axvline(point["run"], color="#2ca02c", alpha=0.3, linewidth=6)
            axis.annotate(f"pushed v{point['pushed_version']}", (point["run"], 1.0),
                          xycoords=("data", "axes fraction"), ha="center", va="bottom",
                          fontsize=7, color="#2ca02c")
    if not runs:
        _empty(axis, "no runs")
    else:
        axis.set_xticks(runs, [f"run {run}" for run in runs], fontsize=8)
        axis.set_xlim(min(runs) - 0.5, max(runs) + 0.5)
        axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    axis.set_title(title + "  (o blessed, x not blessed, green: pushed)", fontsize=10,
                   pad=14)
    axis.grid(alpha=0.3)
    return png(figure)


def slices(title: str, by_feature: Mapping[str, Mapping[str, Mapping[str, float]]],
           metric: str, baseline: Optional[Mapping] = None) -> bytes:
    """``metric`` per bucket of each slice feature, one panel per feature, the baseline's
    (same eval data) in grey beside it when given; each bucket's example count under it."""
    features = [feature for feature in by_feature if feature]
    figure, axes = _figure(HALF, 1, max(1, len(features)))
    baseline = baseline or {}
    for axis, feature in zip(axes, features):
        buckets = list(by_feature[feature])
        xs = list(range(len(buckets)))
        values = [by_feature[feature][b].get(metric, 0.0) for b in buckets]
        counts = [by_feature[feature][b].get("example_count") for b in buckets]
        theirs = baseline.get(feature, {})
        width = 0.4 if theirs else 0.7
        axis.bar([x - (width / 2 if theirs else 0) for x in xs], values, width,
                 color=CURRENT, label="this run")
        if theirs:
            axis.bar([x + width / 2 for x in xs],
                     [theirs.get(b, {}).get(metric, 0.0) for b in buckets], width,
                     color=BASELINE, label="baseline")
            axis.legend(fontsize=6)
        axis.set_xticks(xs, [b if c is None else f"{b}\n{c:.0f} ex."
                             for b, c in zip(buckets, counts)], fontsize=7)
        axis.set_title(feature, fontsize=9)
        axis.tick_params(axis="y", labelsize=7)
    if not features:
        _empty(axes[0], "no slices")
    figure.suptitle(f"{title}: {metric}", fontsize=10)
    return png(figure)


def training_curves(title: str, epochs: Sequence[Mapping[str, float]]) -> bytes:
    """Loss (left) and the other training figures (right) per epoch, from metrics.json's
    ``history``; figures that stay 0 (metrics not computed in training) are left out."""
    figure, (loss_axis, other_axis) = _figure(HALF, 1, 2)
    xs = [row.get("epoch", i + 1) for i, row in enumerate(epochs)]
    names = sorted({name for row in epochs for name in row} - set(_NOT_CURVES))
    for name in names:
        values = [row.get(name) for row in epochs]
        if all(v in (None, 0.0) for v in values):
            continue
        axis = loss_axis if "loss" in name else other_axis
        axis.plot(xs, values, "o-", markersize=4, label=name.split("/")[-1])
    for axis, what in ((loss_axis, "loss"), (other_axis, "metrics")):
        if axis.lines:
            axis.legend(fontsize=7)
            axis.set_xlabel("epoch", fontsize=8)
            axis.tick_params(labelsize=7)
            axis.set_xticks(xs)
        else:
            _empty(axis, f"no {what} per epoch")
        axis.set_title(f"{title}: {what}", fontsize=9)
    return png(figure)


def ratings_per_day(days: Sequence[Sequence[int]]) -> bytes:
    """Kept ratings per day (distributions.json's ``ratings_per_day``)."""
    figure, [axis] = _figure(FULL)
    if days:
        dates = [datetime.datetime.fromtimestamp(day, datetime.timezone.utc)
                 for day, _ in days]
        axis.bar(dates, [count for _, count in days], width=1.0, color=CURRENT)
        axis.set_ylabel("ratings", fontsize=8)
        axis.tick_params(labelsize=7)
    else:
        _empty(axis, "no ratings")
    axis.set_title("Ratings per day", fontsize=10)
    return png(figure)


def long_tail(bins: Sequence[Sequence[int]], noun: str) -> bytes:
    """How many ``noun``s have 1, 2, 3-4, 5-8, ... ratings (power-of-two bins)."""
    figure, [axis] = _figure(HALF)
    labels = [str(low) if low == high else f"{low}-{high}" for low, high, _ in bins]
    axis.bar(range(len(bins)), [count for _, _, count in bins], color=CURRENT)
    axis.set_xticks(range(len(bins)), labels, fontsize=7, rotation=45)
    axis.set_xlabel("ratings", fontsize=8)
    axis.set_ylabel(f"{noun}s", fontsize=8)
    axis.set_title(f"{noun.capitalize()}s by number of ratings", fontsize=10)
    if not bins:
        _empty(axis, "no ratings")
    return png(figure)


def dropped_lines(dropped: Mapping[str, int]) -> bytes:
    """Dropped rating lines by reason (statistics.json's ``dropped``)."""
    figure, [axis] = _figure(HALF)
    reasons = list(dropped)
    axis.barh(range(len(reasons)), [dropped[r] for r in reasons], color=BAD)
    axis.set_yticks(range(len(reasons)), reasons, fontsize=8)
    for y, reason in enumerate(reasons):
        axis.text(dropped[reason], y, f" {dropped[reason]}", va="center", fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, max(list(dropped.values()) + [1]) * 1.15)
    axis.set_title(f"Dropped lines by reason ({sum(dropped.values())} in all)", fontsize=10)
    return png(figure)


def data_change(figures: Sequence[Tuple[str, Optional[float], Optional[float]]]) -> bytes:
    """What changed since the previous run's data: ``figures`` [(name, previous, this)]
    as the change in percent, each bar labelled ``previous -> this``."""
    figure, [axis] = _figure(HALF)
    known = [(name, p, c) for name, p, c in figures if p is not None and c is not None]
    changes = [100.0 * (c - p) / p if p else 0.0 for _, p, c in known]
    axis.barh(range(len(known)), changes,
              color=[CURRENT if change >= 0 else BAD for change in changes])
    for y, ((_, previous, current), change) in enumerate(zip(known, changes)):
        axis.text(0, y, f" {previous:,.0f} -> {current:,.0f} ({change:+.1f}%) ",
                  va="center", ha="left" if change <= 0 else "right", fontsize=8,
                  color="black")
    axis.set_yticks(range(len(known)), [name for name, _, _ in known], fontsize=8)
    axis.axvline(0, color="#444444", linewidth=1)
    limit = max([abs(c) for c in changes] + [10.0]) * 1.1
    axis.set_xlim(-limit, limit)
    axis.invert_yaxis()
    axis.set_xlabel("change since the previous run's data (%)", fontsize=8)
    axis.set_title("Data: what changed since the previous run", fontsize=10)
    if not known:
        _empty(axis, "no previous run to compare with")
    return png(figure)
