"""What a model's ``train_example_budget`` costs and buys: trains one model kind on a
finished pipeline run's examples at several budgets and prints each one's fit time and
figures (``run.evaluate``: the Trainer's metrics.json figures, on the same seeded user
sample).

    PYTHONPATH=. .venv/bin/python benchmarks/training_budget.py \
        --output-root /tmp/scale/run-1m --model ranking --budgets 1000000,2000000,3000000

``--output-root``: a run of ``pipeline_runner.py run`` (``benchmarks/scale.py`` leaves one
per size). ``--hparam MODEL.NAME=VALUE`` (the run's own syntax) overrides a
hyperparameter of ``--model`` in every row. One JSON line
per budget, then one JSON object with every row. Run it on a quiet machine: the fit
times are only comparable within one run.
"""

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

_FIGURES = ("rmse", "top_10", "top_100", "top_100_excluding_rated", "ndcg_10")


def run_examples(output_root: str):
    """``(outputs, vocabulary)``: the example generator's outputs (key -> URIs) in the
    latest run under ``output_root``, and its vocabulary; exits with one line if none."""
    # pylint: disable=import-outside-toplevel
    from components import contract
    from components.trainer.vocabulary import load_vocabulary
    from pipeline import report
    from pipeline.configs import PipelineConfig

    outputs = report.latest_outputs(PipelineConfig(data_dir="", output_root=output_root),
                                    contract.VOCABULARY)
    if not outputs:
        raise SystemExit(f"error: no example generation in the run under {output_root}")
    return outputs, load_vocabulary(outputs[contract.VOCABULARY][0])


def sweep(output_root: str, model: str, budgets: List[int],
          overrides: Dict[str, Any]) -> List[Dict[str, Any]]:
    # pylint: disable=import-outside-toplevel
    from components import contract
    from components.trainer import distribute, hparams as hp, run

    outputs, vocabulary = run_examples(output_root)
    rows = []
    for budget in budgets:
        hparams = hp.HParams.from_dict({"model": model, **overrides,
                                        "train_example_budget": budget})
        root = outputs[hparams.kind.examples_key][0]
        train, evaluate = (os.path.join(root, f"Split-{s}") for s in contract.SPLITS)
        started = time.time()
        trained = distribute.build_and_fit(hparams, vocabulary, train)
        fit_seconds = time.time() - started
        metrics = run.evaluate(trained, hparams, vocabulary, train, evaluate)
        row = {"budget": budget, "examples_seen": int(trained.examples_seen),
               "train_examples": int(trained.train_examples),
               "fit_seconds": round(fit_seconds, 1),
               **{name: round(float(metrics[name]), 4) for name in _FIGURES
                  if name in metrics}}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True)
    parser.add_argument("--model", default="ranking")
    parser.add_argument("--budgets", default="1000000,2000000,3000000")
    parser.add_argument("--hparam", action="append", default=[], metavar="MODEL.NAME=VALUE",
                        help="a hyperparameter for every row, as pipeline_runner.py's")
    args = parser.parse_args(argv)
    from pipeline import options  # pylint: disable=import-outside-toplevel

    try:
        overrides = options.parse_hparams(args.hparam)
    except ValueError as error:
        parser.error(str(error))
    unknown = sorted(set(overrides) - {args.model})
    if unknown:
        parser.error(f"--hparam names {unknown}, but --model is {args.model!r}")
    overrides = overrides.get(args.model, {})
    budgets = [int(b) for b in args.budgets.split(",") if b]
    rows = sweep(args.output_root, args.model, budgets, overrides)
    print(json.dumps({"model": args.model, "overrides": overrides, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
