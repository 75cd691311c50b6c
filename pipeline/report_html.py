"""The run report as one self-contained HTML page: :func:`render`.

Sections: the verdicts of this run; each model beside its baseline with its training
curves; the history of every run; the Evaluators' slices; the data (ratings per day,
long tails, dropped lines, what changed since the previous run); sample
recommendations. Every chart is a PNG from pipeline/report_charts.py inlined as base64
(``<img data-chart="<kind>-<model>">``): no script, no server, no network. The layout is
one column at most 1240 px wide, pairs of charts side by side (readable at 1280 px).
"""

from __future__ import annotations

import base64
import datetime
import html
import struct
from typing import Dict, List, Optional, Sequence, Tuple

from components import contract
from components.example_gen import generate
from pipeline import report, report_charts
from pipeline.run_report import ModelRun, RunRecord, RunReport

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1240px; margin: 0 auto; padding: 12px 20px; font-size: 14px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 15px; }
.meta { color: #666; } .row { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 4px 0; } figure img { display: block; max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; font-size: 13px; }
th { background: #f4f4f4; } .ok { color: #2a7d2a; font-weight: bold; }
.bad { color: #c62828; font-weight: bold; } .none { color: #888; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def png_size(png: bytes) -> Tuple[int, int]:
    """(width, height) from a PNG's header (its IHDR chunk)."""
    return struct.unpack(">II", png[16:24])


def chart(kind: str, subject: str, png: bytes, alt: str) -> str:
    """One inline chart: ``<figure><img data-chart="<kind>-<subject>" src=data:...>``,
    its size given (the page lays out before the images decode)."""
    data = base64.b64encode(png).decode("ascii")
    width, height = png_size(png)
    return (f'<figure><img class="chart" data-chart="{_e(kind)}-{_e(subject)}" '
            f'width="{width}" height="{height}" alt="{_e(alt)}" '
            f'src="data:image/png;base64,{data}"></figure>')


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict_html(model: ModelRun) -> str:
    """BLESSED / NOT blessed (with the failed thresholds) / no verdict, coloured."""
    if model.blessed is None:
        return f'<span class="none">{_e(model.verdict or "no verdict")}</span>'
    return f'<span class="{"ok" if model.blessed else "bad"}">{_e(model.verdict)}</span>'


def _figures(metrics: Optional[Dict]) -> Dict[str, float]:
    return {name: float(metrics[name]) for name in report.SUMMARY_METRICS
            if metrics and isinstance(metrics.get(name), (int, float))}


def compared_figures(model: ModelRun):
    """(names, this model's, the baseline's): first the Evaluator's figure, both models
    on this run's eval data (what the verdict judged), then the Trainer's figures
    (metrics.json: each model on its own run's eval data)."""
    current, baseline = _figures(model.metrics), _figures(model.baseline_metrics)
    names = list(report.SUMMARY_METRICS)
    metric = model.gated_metric
    if metric:
        key = f"{metric} (Evaluator)"
        names.insert(0, key)
        current[key] = model.slices[""]["all"][metric]
        if metric in model.baseline_slices.get("", {}).get("all", {}):
            baseline[key] = model.baseline_slices[""]["all"][metric]
    return names, current, baseline


def models_section(run: RunRecord) -> str:
    """Each model of this run: verdict, thresholds, figures beside the baseline's, and
    its training curves."""
    parts = ["<h2>Models: this run beside its baseline</h2>"]
    rows = [[_e(m.name), _e(m.state), verdict_html(m), _e("; ".join(m.thresholds) or "-"),
             _e(f"model {m.baseline_id}" if m.baseline_id else "none (first blessing)"),
             _e(m.push or "-")] for m in run.models.values()]
    parts.append(_table(["model", "trainer", "verdict", "thresholds", "baseline", "push"],
                        rows))
    parts.append("<p class='meta'>The Evaluator's figure compares both models on this "
                 "run's eval data; the Trainer's figures are each model's own run's.</p>")
    for model in run.models.values():
        names, current, baseline = compared_figures(model)
        parts.append(f"<h3>{_e(model.name)}</h3>")
        parts.extend(f"<p class='meta'>{_e(note)}</p>" for note in scale_notes(model))
        parts.append("<div class='row'>")
        parts.append(chart("comparison", model.name, report_charts.comparison(
            f"{model.name}: this run vs baseline", current, baseline, names),
            f"{model.name} figures beside the baseline"))
        parts.append(chart("training", model.name, report_charts.training_curves(
            model.name, model.metrics.get(contract.METRICS_HISTORY, [])),
            f"{model.name} training curves"))
        parts.append("</div>")
    return "".join(parts)


def scale_notes(model: ModelRun) -> List[str]:
    """What a model's figures and training left out at scale: the user samples its
    Trainer and Evaluator scored on, and a training budget that cut its epochs."""
    notes = []
    metrics = model.metrics
    trainer_sample = metrics.get(contract.EVAL_SAMPLED_USERS)
    if trainer_sample:
        notes.append(f"Trainer figures on a seeded sample of {trainer_sample:,} users "
                     f"(seed {metrics.get('eval_sample_seed')}).")
    if model.eval_sampled_users:
        notes.append(f"Evaluator figures (this model's and the baseline's) on the "
                     f"Trainer's sample of {model.eval_sampled_users:,} users.")
    seen, size = metrics.get("examples_seen"), metrics.get("train_examples")
    epochs = metrics.get("hparams", {}).get("epochs")
    if seen and size and epochs and seen < epochs * size:
        notes.append(f"Trained on {seen:,} examples ({seen / size:.2f} passes over the "
                     f"{size:,} of the training split) in {epochs} segments, not "
                     f"{epochs} epochs: train_example_budget.")
    return notes


def history_points(runs: Sequence[RunRecord], name: str) -> List[Dict]:
    """One point per run that trained model ``name`` (a cached Trainer's model once)."""
    points, seen = [], set()
    for run in runs:
        model = run.models.get(name)
        if model is None or not model.metrics or model.model_id in seen:
            continue
        seen.add(model.model_id)
        points.append({"run": run.index, "metrics": _figures(model.metrics),
                       "blessed": model.blessed, "pushed_version": model.pushed_version})
    return points


def history_section(runs: Sequence[RunRecord]) -> str:
    """Every run in the store: a table, and each model's figures over the runs."""
    names = sorted({name for run in runs for name in run.models})
    rows = []
    for run in runs:
        outcome = (f'<span class="bad">{_e(run.outcome)}</span>' if run.failed
                   else _e(run.outcome))
        cells = [_e(f"run {run.index}"), _e(_when(run.time)), _e(run.name), outcome,
                 _e(run.data_state or "-")]
        for name in names:
            model = run.models.get(name)
            if model is None:
                cells.append('<span class="none">-</span>')
                continue
            pushed = f" &rarr; pushed v{_e(model.pushed_version)}" if model.pushed_version else ""
            cells.append(f"{_e(model.state)}: {verdict_html(model)}{pushed}")
        rows.append(cells)
    parts = ["<h2>History of every run</h2>",
             _table(["run", "time", "run id", "outcome", "data", *map(_e, names)], rows)]
    for name in names:
        parts.append(chart("history", name, report_charts.history(
            f"{name} over the runs", history_points(runs, name), report.SUMMARY_METRICS,
            [run.index for run in runs]),
            f"{name} figures over every run"))
    return "".join(parts)


def slices_section(run: RunRecord) -> str:
    """The Evaluators' figures by user activity and movie popularity."""
    parts = ["<h2>Evaluation slices (user activity, movie popularity)</h2><div class='row'>"]
    for model in run.models.values():
        parts.append(chart("slices", model.name, report_charts.slices(
            model.name, model.slices, model.gated_metric or "example_count",
            model.baseline_slices), f"{model.name} by slice"))
    return "".join(parts) + "</div>"


def data_changes(previous: Optional[RunRecord], current: RunRecord) -> List:
    """[(figure, previous run's, this run's)]: rows read and kept, users, movies."""
    def figures(run: Optional[RunRecord]) -> Dict[str, Optional[float]]:
        statistics = (run.statistics if run else None) or {}
        spread = (run.distributions if run else None) or {}
        return {"rating lines read": statistics.get("lines_read"),
                "ratings kept": statistics.get("kept"), "users": statistics.get("users"),
                "movies rated": spread.get("movies")}

    before, now = figures(previous), figures(current)
    return [(name, before[name], now[name]) for name in now]


def data_section(run: RunRecord, previous: Optional[RunRecord]) -> str:
    """The data of this run, and what changed since the previous run's."""
    parts = ["<h2>Data</h2>"]
    if run.statistics:
        parts.append(f"<p>{_e(generate.summary_line(run.statistics))}</p>")
    spread = run.distributions or {}
    parts.append(chart("data", "ratings_per_day", report_charts.ratings_per_day(
        spread.get("ratings_per_day", [])), "ratings per day"))
    parts.append("<div class='row'>")
    for key, noun in (("users_by_ratings", "user"), ("movies_by_ratings", "movie")):
        parts.append(chart("data", key, report_charts.long_tail(spread.get(key, []), noun),
                           f"{noun}s by number of ratings"))
    parts.append(chart("data", "dropped_lines", report_charts.dropped_lines(
        (run.statistics or {}).get("dropped", {})), "dropped lines by reason"))
    changes = data_changes(previous, run)
    parts.append(chart("data", "change", report_charts.data_change(changes),
                       "previous run's data vs this run's"))
    parts.append("</div>")
    if previous is None:
        parts.append("<p class='none'>No previous run with data statistics.</p>")
    else:
        same = " (the same data: the example generator came from the cache)" if (
            run.data_state == "cached") else ""
        parts.append(f"<p>Compared with run {previous.index}{_e(same)}:</p>" + _table(
            ["", f"run {previous.index}", f"run {run.index}", "change"],
            [[_e(name), _e("?" if p is None else f"{p:,}"), _e("?" if c is None else f"{c:,}"),
              _e("?" if p is None or c is None else f"{c - p:+,}")]
             for name, p, c in changes]))
    return "".join(parts)


def samples_section(gathered: RunReport) -> str:
    """A few recommendations of each pushed retrieval-like model for fixed users."""
    parts = ["<h2>Sample recommendations (pushed models)</h2><div class='row'>"]
    for name, rows in sorted(gathered.samples.items()):
        version = rows[0]["version"] if rows else "?"
        parts.append(f"<div><h3>{_e(name)} (pushed version {_e(version)})</h3>")
        parts.append(_table(["query", "top movies (id)"], [
            [_e(row["query"]), "<br>".join(_e(f"{title} ({movie})")
                                           for title, movie in row["items"])]
            for row in rows]) + "</div>")
    parts.append("</div>")
    if not gathered.samples:
        parts.append("<p class='none'>No pushed model to ask.</p>")
    parts += [f"<p class='none'>{_e(note)}</p>" for note in gathered.sample_notes]
    return "".join(parts)


def render(gathered: RunReport) -> str:
    """The whole page of ``gathered``'s latest run."""
    run = gathered.current
    body = [f"<h1>Run report: {_e(gathered.pipeline_name)}, run {run.index} of "
            f"{len(gathered.runs)}</h1>",
            f"<p class='meta'>{_e(run.name)} &middot; {_e(_when(run.time))}</p>",
            models_section(run), history_section(gathered.runs), slices_section(run),
            data_section(run, gathered.previous), samples_section(gathered)]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>Run {run.index}: {_e(gathered.pipeline_name)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")
