"""Benchmark: the whole pipeline at 1M and 10M ratings -- time, memory and quality.

For each size of ``--sizes`` (default ``1m,10m``; ``100k`` for a quick check), synthetic
data in the ML-1M layout (``data.synthetic``: ``1m`` = 6,040 users x 3,706 movies x
1,000,000 ratings, ``10m`` = 70,000 x 10,000 x 10,000,000; generated once under
``--work-dir`` and reused, as benchmarks/example_gen.py does) goes through
``pipeline_runner.py run`` in a subprocess, into a fresh output root, with the
command's default settings (plus any ``--run-arg``):

* **time**: the run's wall clock, and each component's from the console's
  ``[i/n] <Component> ... done in <s> s`` lines (the same figures MLMD's executions
  span);
* **memory**: the peak RSS summed over the run's process tree (Beam workers and
  Trainers included), sampled from /proc once a second; per component, the peak of the
  samples taken while it ran (they run one after another);
* **quality**: each Trainer's eval figures (its ``metrics.json``; for ranking, with the
  RMSE of always predicting the mean rating), beside popularity
  (training counts) scored the same way on the same eval split (and the same seeded
  sample of users, when the models evaluated on one: ``eval_sample_users``), for the
  retrieval and sequential examples.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/scale.py                 # hours on 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/scale.py --sizes 1m      # ~30-60 min
    PYTHONPATH=. .venv/bin/python benchmarks/scale.py --sizes 100k --run-arg=--epochs=1

The last line is one JSON object: ``total_seconds_<size>`` and ``peak_rss_gb_<size>``
per size run, ``cost_growth`` (seconds per rating at 10M over seconds per rating at 1M;
null unless both ran), ``components`` (seconds per component per size),
``component_peak_rss_gb`` (the same for memory), ``quality``
(per size, each model's figures and popularity's) and ``examples_written`` (per size,
kind and split: the records the example files hold, read back, beside the count in
statistics.json; a difference fails the run).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import example_gen as example_gen_benchmark  # noqa: E402  (its data sets and sampler)

SIZES = example_gen_benchmark.SIZES
_log = example_gen_benchmark._log  # pylint: disable=protected-access
_DONE = re.compile(r"\[\d+/\d+\] (\S+).*?done in ([0-9.]+) s")
# mean_rating_rmse: ranking's baseline, the RMSE of predicting the eval labels' mean.
_FIGURES = ("top_10", "top_100", "top_10_excluding_rated", "top_100_excluding_rated",
            "rmse", "mean_rating_rmse", "queries", "eval_sampled_users", "train_examples",
            "examples_seen", "fit_seconds", "evaluate_seconds")


def run_pipeline(data_dir: pathlib.Path, output_root: pathlib.Path,
                 run_args: List[str]) -> Dict:
    """``pipeline_runner.py run`` in a subprocess: wall seconds, per-component seconds,
    peak RSS of its process tree, exit status."""
    if output_root.exists():
        shutil.rmtree(output_root)
    command = [sys.executable, str(REPO / "pipeline_runner.py"), "run",
               "--data-dir", str(data_dir), "--output-root", str(output_root), *run_args]
    _log(" ".join(command))
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    sampler = example_gen_benchmark.TreeMemorySampler(process.pid, output_root.name,
                                                      heartbeat=300)
    sampler.start()
    components: Dict[str, float] = {}
    memory: Dict[str, float] = {}
    for line in process.stdout:
        print("    " + line.rstrip(), flush=True)
        match = _DONE.search(line)
        if match:
            # Components run one after another: the samples since the previous one
            # finished are this one's (its process tree, the runner's included).
            components[match.group(1)] = float(match.group(2))
            memory[match.group(1)] = round(sampler.take_window() / 2**30, 2)
    status = process.wait()
    seconds = time.perf_counter() - started
    sampler.stop()
    return {"seconds": round(seconds, 1), "status": status, "components": components,
            "component_peak_rss_gb": memory,
            "peak_rss_gb": round(sampler.peak_bytes / 2**30, 2)}


def quality(output_root: pathlib.Path) -> Dict[str, Dict]:
    """Each Trainer's figures (metrics.json) and popularity's, from the run's MLMD."""
    # pylint: disable=import-outside-toplevel
    from components import contract
    from components.trainer import evaluation, hparams as hp, inputs, sampling
    from components.trainer import run as trainer_run
    from components.trainer.vocabulary import load_vocabulary
    from pipeline import report
    from pipeline.configs import PipelineConfig

    executions = report.latest_run(PipelineConfig(data_dir="", output_root=str(output_root)))
    figures: Dict[str, Dict] = {}
    for execution in executions:
        for uri in execution["outputs"].get("model_run", []):
            with open(os.path.join(uri, contract.METRICS_FILE)) as handle:
                metrics = json.load(handle)
            figures[metrics["hparams"]["model"]] = {
                name: metrics[name] for name in _FIGURES + ("train_seconds",)
                if name in metrics}
    example_outputs = report.outputs_with(executions, contract.VOCABULARY)
    if not example_outputs:
        return figures
    vocabulary = load_vocabulary(example_outputs[contract.VOCABULARY][0])
    for model in (contract.RETRIEVAL, contract.SEQUENTIAL):
        params = hp.HParams.from_dict({"model": model})
        kind = params.kind
        root = example_outputs[kind.examples_key][0]
        train, evaluate = (os.path.join(root, f"Split-{s}") for s in contract.SPLITS)
        history = evaluation.user_history(
            inputs.input_dataset(params, vocabulary, train, training=False), vocabulary,
            kind.history_keys)
        eval_data = inputs.input_dataset(params, vocabulary, evaluate, training=False)
        users = trainer_run.eval_user_sample(params, vocabulary)  # the models' sample
        if users is not None:
            eval_data = evaluation.sample_users(eval_data, users, params.eval_batch_size)
        popular = evaluation.evaluate_popularity(
            eval_data, vocabulary, kind.label_key, params.top_ks, history,
            counts=sampling.training_movie_counts(params, vocabulary, train))
        figures[f"popularity_{kind.examples}"] = {
            name: popular[name] for name in _FIGURES if name in popular}
    return figures


def examples_written(output_root: pathlib.Path) -> Dict[str, Dict]:
    """For each examples output and split: the records its files hold (every record read
    back, framing checked) and the count statistics.json gives. A writer that loses a
    bundle's files shows here; the tests' small runs cannot show every such loss."""
    # pylint: disable=import-outside-toplevel
    from components import contract
    from components.trainer import inputs
    from pipeline import report
    from pipeline.configs import PipelineConfig

    outputs = report.outputs_with(
        report.latest_run(PipelineConfig(data_dir="", output_root=str(output_root))),
        contract.STATISTICS)
    if not outputs:
        return {}
    with open(os.path.join(outputs[contract.STATISTICS][0], contract.STATISTICS_FILE)) as handle:
        statistics = json.load(handle)
    counts: Dict[str, Dict] = {}
    for kind in (contract.SEQUENCE, contract.RATING):
        for split in contract.SPLITS:
            written = inputs.count_examples(os.path.join(
                outputs[contract.examples_key(kind)][0], f"Split-{split}"))
            counts[f"{kind}_{split}"] = {
                "written": written, "counted": statistics[f"{kind}_examples"][split]}
    return counts


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1m,10m",
                        help=f"comma-separated sizes out of {', '.join(SIZES)}")
    parser.add_argument("--work-dir", default=os.path.join(
        tempfile.gettempdir(), "movielens-scale-benchmark"),
        help="synthetic data (cached between runs) and each size's output root")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--run-arg", action="append", default=[], metavar="ARG",
                        help="an extra option of `pipeline_runner.py run`, repeatable "
                             "(e.g. --run-arg=--epochs=1)")
    args = parser.parse_args(argv)
    sizes = [size for size in args.sizes.split(",") if size]
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"unknown sizes {unknown}; known: {sorted(SIZES)}")
    work_dir = pathlib.Path(args.work_dir)
    summary: Dict[str, object] = {"sizes": sizes, "run_args": args.run_arg,
                                  "components": {}, "quality": {}, "status": {}}
    for size in sizes:
        data_dir = example_gen_benchmark.ensure_data(work_dir, size, args.seed)
        result = run_pipeline(data_dir, work_dir / f"run-{size}", args.run_arg)
        summary[f"total_seconds_{size}"] = result["seconds"]
        summary[f"peak_rss_gb_{size}"] = result["peak_rss_gb"]
        summary["components"][size] = result["components"]
        summary.setdefault("component_peak_rss_gb", {})[size] = result["component_peak_rss_gb"]
        summary["status"][size] = result["status"]
        summary["quality"][size] = quality(work_dir / f"run-{size}") if not result["status"] \
            else {}
        written = examples_written(work_dir / f"run-{size}") if not result["status"] else {}
        summary.setdefault("examples_written", {})[size] = written
        if any(c["written"] != c["counted"] for c in written.values()):
            _log(f"{size}: the example files do not hold what statistics.json counts: "
                 f"{written}")
            summary["status"][size] = summary["status"][size] or "examples lost"
        _log(f"{size}: {result['seconds']} s, peak RSS {result['peak_rss_gb']} GB, "
             f"exit status {result['status']}")
    for size in ("1m", "10m"):
        summary.setdefault(f"total_seconds_{size}", None)
        summary.setdefault(f"peak_rss_gb_{size}", None)
    if summary["total_seconds_1m"] and summary["total_seconds_10m"]:
        per_rating = {size: summary[f"total_seconds_{size}"] / SIZES[size][2]
                      for size in ("1m", "10m")}
        summary["cost_growth"] = round(per_rating["10m"] / per_rating["1m"], 3)
    else:
        summary["cost_growth"] = None
    print(json.dumps(_rounded(summary), sort_keys=True))
    return 0 if not any(summary["status"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
