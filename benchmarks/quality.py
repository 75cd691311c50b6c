"""Benchmark: our models beside strong baselines, on honest protocols and the tutorials'.

Protocols (benchmarks/protocols.py says exactly what each splits and measures):

* ``temporal`` (rating models): the last 20% of ratings in time are held out; our
  retrieval preset (and its variants by time features and recency prior) beside
  popularity, recent popularity and EASE (L2 tuned on validation); our ranking preset's
  RMSE beside the mean and biased MF.
* ``leave_last_out`` (sequence models): each user's last kept rating is held out; every
  sequence model kind (its preset) beside popularity, last-item Markov and EASE.
  Metrics of both: HR@10, NDCG@10, Recall@100 over the whole catalogue with the user's
  earlier movies excluded, and the tutorials' top-K accuracy over all movies.
* ``tutorial`` (ML-100K only): the TFRS tutorials' random splits, our presets beside
  the tutorials' recipes, popularity and last-item Markov (benchmarks/
  tutorial_protocol.py). Kept to compare with the tutorials; these figures leak.

Data sets: ``ml-100k`` (``--data-dir``, default ``$MOVIELENS_100K_DIR``) and
``synthetic-csv`` (the project's synthetic generator, CSV layout -- ml-latest's -- with
:data:`SYNTHETIC_CSV`'s sizes, written into the work directory).

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/quality.py                  # everything
    PYTHONPATH=. .venv/bin/python benchmarks/quality.py --protocol temporal \
        --dataset ml-100k --baselines-only
    PYTHONPATH=. .venv/bin/python benchmarks/quality.py --protocol tutorial \
        --only ranking,sequential
    PYTHONPATH=. .venv/bin/python benchmarks/quality.py --protocol leave_last_out \
        --merge-json earlier.log     # the other figures from an earlier run's last line

Prints progress, a table per protocol, and as the last line one JSON object: the
tutorial protocol's figures under their old flat names (``retrieval_top100``, ...),
``honest`` (``{dataset: {run: figures}}``), ``targets`` (each: true, false, or null
when not run), ``targets_met`` (every honest target run and met), ``wall_seconds``,
``presets`` and ``code`` (a hash of ``components/trainer/*.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# components (imported by these) sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads.
from benchmarks import honest, protocols, tutorial_protocol  # noqa: E402
from benchmarks import quality_report as report  # noqa: E402
from benchmarks.training import log  # noqa: E402
from components.trainer import hparams as hp  # noqa: E402

import tensorflow as tf  # noqa: E402

DATASETS = ("ml-100k", "synthetic-csv")
# The synthetic CSV data set: ml-latest-small's users, a third of its movies (EASE's
# dual form costs O(U^2 M); the full softmax's step grows with M), ~60% of its ratings.
SYNTHETIC_CSV = dict(users=610, movies=3000, ratings=60_000, fmt="csv", seed=0)
HONEST = (protocols.TEMPORAL, protocols.LEAVE_LAST_OUT)


def dataset_dir(name: str, args, work: pathlib.Path) -> str:
    if name == "ml-100k":
        return args.data_dir
    from data import synthetic

    out = work / "synthetic-csv"
    if not (out / "ratings.csv").is_file():
        synthetic.generate(str(out), **SYNTHETIC_CSV)
    return str(out)


def code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "components" / "trainer").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=protocols.default_ml100k_dir(),
                        help=f"unpacked ml-100k (default: ${protocols.ML100K_ENV} or "
                        f"{protocols.DEFAULT_DATA_DIR})")
    parser.add_argument("--work-dir", default=None,
                        help="where the examples go (default: a temporary directory, removed)")
    parser.add_argument("--protocol", default=",".join(protocols.PROTOCOLS),
                        help=f"comma-separated subset of {','.join(protocols.PROTOCOLS)}")
    parser.add_argument("--dataset", default=",".join(DATASETS),
                        help=f"comma-separated subset of {','.join(DATASETS)} (the tutorial "
                        f"protocol runs on ml-100k only)")
    parser.add_argument("--only", default=",".join(tutorial_protocol.TASKS),
                        help="tutorial protocol: comma-separated subset of "
                        f"{','.join(tutorial_protocol.TASKS)}")
    parser.add_argument("--no-tutorials", action="store_true",
                        help="tutorial protocol: skip the tutorials' recipes")
    parser.add_argument("--baselines-only", action="store_true",
                        help="honest protocols: the baselines only, no model trained")
    parser.add_argument("--kinds", default=",".join(honest.sequence_kinds()),
                        help="leave-last-out: the sequence model kinds trained (default: "
                        "every one of contract.MODEL_KINDS)")
    parser.add_argument("--merge-json", default=None,
                        help="a file whose last line is an earlier run's JSON: its figures "
                        "fill the runs this one does not make (recorded as merged_from)")
    args = parser.parse_args(argv)

    def listed(value: str, known, what: str) -> List[str]:
        chosen = [name for name in value.split(",") if name]
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {what} {unknown}; known: {list(known)}")
        return chosen

    chosen_protocols = listed(args.protocol, protocols.PROTOCOLS, "protocols")
    datasets = listed(args.dataset, DATASETS, "data sets")
    only = listed(args.only, tutorial_protocol.TASKS, "tasks")
    kinds = listed(args.kinds, honest.sequence_kinds(), "sequence model kinds")
    if "ml-100k" in datasets and not (pathlib.Path(args.data_dir) / "u.data").is_file():
        parser.error(f"MovieLens-100K not found at {args.data_dir} (no u.data); set {protocols.ML100K_ENV}")

    tf.get_logger().setLevel("ERROR")
    start = time.time()
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="quality-benchmark-"))
    tutorial: Dict[str, Any] = {}
    honest_results: Dict[str, Dict[str, Any]] = {}
    try:
        for dataset in datasets:
            data_dir = dataset_dir(dataset, args, work)
            examples = {}  # split strategy -> the example generator's paths
            for protocol in chosen_protocols:
                if protocol == protocols.TUTORIAL and dataset != "ml-100k":
                    continue
                strategy = protocols.SPLIT_STRATEGY[protocol]
                if strategy not in examples:
                    log(f"example generation ({strategy} split): {data_dir}")
                    out = work / f"examples-{dataset}-{strategy}"
                    if out.exists():
                        shutil.rmtree(out)
                    examples[strategy], summary = protocols.generate_examples(
                        data_dir, str(out), strategy)
                    log(f"  {summary} ({time.time() - start:.0f} s)")
                paths = examples[strategy]
                if protocol == protocols.TUTORIAL:
                    tutorial = tutorial_protocol.run(paths, only, not args.no_tutorials)
                    continue
                if protocol == protocols.TEMPORAL:
                    figures = honest.run_temporal(paths, with_models=not args.baselines_only)
                else:
                    figures = honest.run_leave_last_out(
                        paths, with_models=not args.baselines_only, kinds=kinds)
                honest_results.setdefault(dataset, {}).update(figures)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.time() - start

    flat = report.tutorial_figures(tutorial)
    figures = report.honest_figures(honest_results)
    merged = None
    if args.merge_json:
        merged = report.merge_earlier(args.merge_json, flat, figures)
    targets = report.honest_targets(figures.get("ml-100k", {}))
    log("")
    if any(value is not None for value in flat.values()):
        log("Tutorial protocol (ML-100K, random splits; leaks, for comparison only):")
        log(report.tutorial_table(flat))
        log("")
    for dataset, runs in figures.items():
        log(f"Honest protocols, {dataset} (temporal: ratings; leave-last-out: sequences; "
            "full catalogue, the user's earlier movies excluded):")
        log(report.honest_table(runs))
        log("")
    for name, met in {**report.tutorial_targets(flat), **targets}.items():
        log(f"  {'met    ' if met else 'MISSED ' if met is False else 'not run'}  {name}")
    log(f"wall time {wall:.0f} s")
    summary = {
        **report.rounded(flat),
        "honest": figures,
        "tutorial_targets": report.tutorial_targets(flat),
        "targets": targets,
        "targets_met": bool(targets) and all(met is True for met in targets.values()),
        "seconds": {name: round(result["seconds"], 1) for name, result in tutorial.items()
                    if "seconds" in result},
        "presets": {name: config for name, config in hp.PRESETS.items()},
        "tutorial_recipes": {name: {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in config.items()}
                             for name, config in tutorial_protocol.TUTORIALS.items()},
        "synthetic_csv": SYNTHETIC_CSV,
        "merged_from": merged,
        "wall_seconds": round(wall, 1),
        "code": code_hash(),
    }
    print(json.dumps(summary), flush=True)
    return 0 if summary["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
