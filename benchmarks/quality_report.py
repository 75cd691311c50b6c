"""The quality benchmark's figures, targets and tables (no TensorFlow).

Tutorial protocol: the flat figure names of earlier runs (``retrieval_top100``, ...),
its old targets and table. Honest protocols: per data set and run, HR@10 (``hr_10``),
NDCG@10, Recall@100 (``recall_100``) with the user's earlier movies excluded, the
tutorials' top-K over all movies (``top_{k}_all``, our models), RMSE; the issue's
targets on ML-100K (:func:`honest_targets`).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from components import contract

RETRIEVAL_MARGIN = 1.05   # retrieval: Recall@100 and NDCG@10 at least 5% above EASE's
SEQUENCE_MARGIN = 1.10    # self-attention: HR@10 at least 10% above the GRU's and Markov's
HONEST_METRICS = {"top_10": "hr_10", "ndcg_10": "ndcg_10", "top_100": "recall_100",
                  "top_10_all": "top_10_all", "top_100_all": "top_100_all", "rmse": "rmse",
                  "l2": "l2", "window_days": "window_days", "queries": "queries",
                  "seconds": "seconds"}


def rounded(figures: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
    return {key: None if value is None else round(value, 4) for key, value in figures.items()}


def _check(ok: Callable[[], bool], *needed: Optional[float]) -> Optional[bool]:
    return None if any(value is None for value in needed) else bool(ok())


def fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(header: Sequence[str], rows: List[Tuple]) -> str:
    lines = [tuple(header)] + [tuple(row[:1]) + tuple(
        cell if isinstance(cell, str) else fmt(cell) for cell in row[1:]) for row in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        out.append("  ".join(str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
                             for i, (cell, width) in enumerate(zip(line, widths))).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# Honest protocols.


def honest_figures(results: Dict[str, Dict[str, Dict]]) -> Dict[str, Dict[str, Dict]]:
    """``{dataset: {run: {figure: value}}}`` with the figures renamed (HONEST_METRICS);
    the data description entries (``*_data``) as they are."""
    out: Dict[str, Dict[str, Dict]] = {}
    for dataset, runs in results.items():
        for run, figures in runs.items():
            if run.endswith("_data"):
                out.setdefault(dataset, {})[run] = figures
                continue
            out.setdefault(dataset, {})[run] = {
                new: round(float(figures[old]), 4) if old not in ("queries",) else figures[old]
                for old, new in HONEST_METRICS.items() if old in figures}
    return out


def merge_earlier(path: str, flat: Dict[str, Optional[float]],
                  figures: Dict[str, Dict[str, Dict]]) -> Dict[str, Any]:
    """Fills, in place, the tutorial figures (``flat``: None ones) and honest runs
    (``figures``: absent ones) this run did not make from the JSON on the last line of
    ``path`` (an earlier run's output); returns what was taken (``merged_from``)."""
    with open(path) as handle:
        earlier = json.loads(handle.read().strip().splitlines()[-1])
    taken: Dict[str, Any] = {"file": path, "code": earlier.get("code"), "figures": []}
    for name, value in earlier.items():
        if name in flat and flat[name] is None and value is not None:
            flat[name] = value
            taken["figures"].append(name)
    for dataset, runs in earlier.get("honest", {}).items():
        for run, values in runs.items():
            if run not in figures.setdefault(dataset, {}):
                figures[dataset][run] = values
                taken["figures"].append(f"{dataset}/{run}")
    return taken


def _get(runs: Dict[str, Dict], run: str, figure: str) -> Optional[float]:
    value = runs.get(run, {}).get(figure)
    return None if value is None else float(value)


def attention_kinds() -> List[str]:
    """The sequence model kinds other than the GRU's (the self-attention model(s))."""
    return [name for name, kind in contract.MODEL_KINDS.items()
            if kind.examples == contract.SEQUENCE and kind.retrieves
            and name != contract.SEQUENTIAL]


def honest_targets(runs: Dict[str, Dict]) -> Dict[str, Optional[bool]]:
    """The issue's targets on ML-100K's honest figures (None: not run)."""
    ours, ease = "temporal_retrieval_preset", "temporal_ease"
    targets = {}
    for figure, label in (("recall_100", "Recall@100"), ("ndcg_10", "NDCG@10")):
        mine, theirs = _get(runs, ours, figure), _get(runs, ease, figure)
        targets[f"temporal retrieval {label} >= {RETRIEVAL_MARGIN} x EASE's"] = _check(
            lambda: mine >= RETRIEVAL_MARGIN * theirs, mine, theirs)
    gru = _get(runs, f"leave_last_out_{contract.SEQUENTIAL}", "hr_10")
    markov = _get(runs, "leave_last_out_markov", "hr_10")
    kinds = attention_kinds()
    if not kinds:
        targets["leave-last-out self-attention HR@10 >= 1.1 x GRU's and Markov's "
                "(no self-attention model kind on this branch)"] = None
    for kind in kinds:
        mine = _get(runs, f"leave_last_out_{kind}", "hr_10")
        targets[f"leave-last-out {kind} HR@10 >= {SEQUENCE_MARGIN} x GRU's"] = _check(
            lambda: mine >= SEQUENCE_MARGIN * gru, mine, gru)
        targets[f"leave-last-out {kind} HR@10 >= {SEQUENCE_MARGIN} x Markov's"] = _check(
            lambda: mine >= SEQUENCE_MARGIN * markov, mine, markov)
    return targets


def honest_table(runs: Dict[str, Dict]) -> str:
    header = ("run", "HR@10", "NDCG@10", "Recall@100", "top-100 all", "RMSE")
    rows = [(run, figures.get("hr_10"), figures.get("ndcg_10"), figures.get("recall_100"),
             figures.get("top_100_all"), figures.get("rmse"))
            for run, figures in runs.items() if not run.endswith("_data")]
    return table(header, rows)


# ---------------------------------------------------------------------------------------
# The tutorial protocol (the figures' names and targets of earlier runs).


def tutorial_figures(results: Dict[str, Dict]) -> Dict[str, Optional[float]]:
    def get(run: str, metric: str) -> Optional[float]:
        value = results.get(run, {}).get(metric)
        return None if value is None else float(value)

    names = {
        "retrieval_top100": ("retrieval", "top_100"),
        "retrieval_top100_excl_seen": ("retrieval", "top_100_excluding_rated"),
        "ranking_rmse": ("ranking", "rmse"),
        "multitask_top100": ("multitask", "top_100"),
        "multitask_rmse": ("multitask", "rmse"),
        "sequential_top100": ("sequential", "top_100"),
        "sequential_top10": ("sequential", "top_10"),
        "retrieval_id_only_top100": ("retrieval_id_only", "top_100"),
        "retrieval_timestamps_top100": ("retrieval_timestamps", "top_100"),
        "retrieval_top10": ("retrieval", "top_10"),
        "retrieval_top10_excl_seen": ("retrieval", "top_10_excluding_rated"),
        "multitask_top100_excl_seen": ("multitask", "top_100_excluding_rated"),
        "retrieval_id_only_top100_excl_seen": ("retrieval_id_only", "top_100_excluding_rated"),
        "retrieval_timestamps_top100_excl_seen": ("retrieval_timestamps",
                                                  "top_100_excluding_rated"),
        "tutorial_retrieval_top100": ("tutorial_retrieval", "top_100"),
        "tutorial_retrieval_top100_excl_seen": ("tutorial_retrieval",
                                                "top_100_excluding_rated"),
        "tutorial_retrieval_top10_excl_seen": ("tutorial_retrieval",
                                               "top_10_excluding_rated"),
        "tutorial_ranking_rmse": ("tutorial_ranking", "rmse"),
        "tutorial_multitask_top100": ("tutorial_multitask", "top_100"),
        "tutorial_multitask_rmse": ("tutorial_multitask", "rmse"),
        "tutorial_sequential_top100": ("tutorial_sequential", "top_100"),
        "tutorial_sequential_top10": ("tutorial_sequential", "top_10"),
        "popularity_retrieval_top100": ("popularity_retrieval", "top_100"),
        "popularity_retrieval_top100_excl_seen": ("popularity_retrieval",
                                                  "top_100_excluding_rated"),
        "popularity_retrieval_top10_excl_seen": ("popularity_retrieval",
                                                 "top_10_excluding_rated"),
        "popularity_ranking_rmse": ("popularity_ranking", "rmse"),
        "popularity_sequential_top100": ("popularity_sequential", "top_100"),
        "popularity_sequential_top10": ("popularity_sequential", "top_10"),
        "transition_sequential_top100": ("transition_sequential", "top_100"),
        "transition_sequential_top10": ("transition_sequential", "top_10"),
    }
    return {name: get(run, metric) for name, (run, metric) in names.items()}


def tutorial_targets(f: Dict[str, Optional[float]]) -> Dict[str, Optional[bool]]:
    if all(value is None for value in f.values()):
        return {}
    return {
        "tutorial: retrieval_top100 >= 0.35": _check(lambda: f["retrieval_top100"] >= 0.35,
                                                     f["retrieval_top100"]),
        "tutorial: retrieval_top100_excl_seen >= 0.62": _check(
            lambda: f["retrieval_top100_excl_seen"] >= 0.62, f["retrieval_top100_excl_seen"]),
        "tutorial: ranking_rmse <= 0.92": _check(lambda: f["ranking_rmse"] <= 0.92,
                                                 f["ranking_rmse"]),
        "tutorial: multitask_top100 >= 0.97 x retrieval_top100": _check(
            lambda: f["multitask_top100"] >= 0.97 * f["retrieval_top100"],
            f["multitask_top100"], f["retrieval_top100"]),
        "tutorial: multitask_rmse <= 1.03 x ranking_rmse": _check(
            lambda: f["multitask_rmse"] <= 1.03 * f["ranking_rmse"],
            f["multitask_rmse"], f["ranking_rmse"]),
        "tutorial: sequential_top100 >= 0.55": _check(lambda: f["sequential_top100"] >= 0.55,
                                                      f["sequential_top100"]),
        "tutorial: sequential_top10 >= 0.13": _check(lambda: f["sequential_top10"] >= 0.13,
                                                     f["sequential_top10"]),
    }


def tutorial_table(f: Dict[str, Any]) -> str:
    def ratio(a, b):
        return None if a is None or b is None else a / b

    header = ("figure", "ours", "tutorial", "popularity", "Markov", "target")
    rows = [
        ("retrieval top-100 (all movies)", f["retrieval_top100"],
         f["tutorial_retrieval_top100"], f["popularity_retrieval_top100"], None, ">= 0.35"),
        ("retrieval top-100 excl. seen", f["retrieval_top100_excl_seen"],
         f["tutorial_retrieval_top100_excl_seen"], f["popularity_retrieval_top100_excl_seen"],
         None, ">= 0.62"),
        ("retrieval top-10 excl. seen", f["retrieval_top10_excl_seen"],
         f["tutorial_retrieval_top10_excl_seen"], f["popularity_retrieval_top10_excl_seen"],
         None, ""),
        ("ranking RMSE (stars)", f["ranking_rmse"], f["tutorial_ranking_rmse"],
         f["popularity_ranking_rmse"], None, "<= 0.92"),
        ("multitask (1, 1) top-100", f["multitask_top100"], f["tutorial_multitask_top100"],
         f["popularity_retrieval_top100"], None, ">= 0.97 x retrieval"),
        ("multitask (1, 1) RMSE", f["multitask_rmse"], f["tutorial_multitask_rmse"],
         f["popularity_ranking_rmse"], None, "<= 1.03 x ranking"),
        ("  multitask/retrieval top-100", ratio(f["multitask_top100"], f["retrieval_top100"]),
         ratio(f["tutorial_multitask_top100"], f["tutorial_retrieval_top100"]), None, None,
         ">= 0.97"),
        ("sequential top-100", f["sequential_top100"], f["tutorial_sequential_top100"],
         f["popularity_sequential_top100"], f["transition_sequential_top100"], ">= 0.55"),
        ("sequential top-10", f["sequential_top10"], f["tutorial_sequential_top10"],
         f["popularity_sequential_top10"], f["transition_sequential_top10"], ">= 0.13"),
        ("retrieval top-100, ids only", f["retrieval_id_only_top100"], None, None, None, ""),
        ("retrieval top-100, ids + own time", f["retrieval_timestamps_top100"], None, None,
         None, "(leaks)"),
    ]
    return table(header, rows)
