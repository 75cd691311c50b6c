"""What a model's ``train_example_budget`` costs and buys: trains one model kind on a
finished pipeline run's examples at several budgets and prints each one's fit time and
figures (``run.evaluate``: the Trainer's metrics.json figures, on the same seeded user
sample).

    PYTHONPATH=. .venv/bin/python benchmarks/training_budget.py \
        --output-root /tmp/scale/run-1m --model ranking --budgets 1000000,2000000,3000000

``--output-root``: a run of ``pipeline_runner.py run`` (``benchmarks/scale.py`` leaves one
per size). ``--set name=value`` overrides a hyperparameter in every row. One JSON line
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


def example_outputs(output_root: str) -> Dict[str, List[str]]:
    """The example generator's output artifacts (name -> URIs) of the run's latest
    execution."""
    # pylint: disable=import-outside-toplevel
    from components import contract
    from pipeline import report
    from pipeline.configs import PipelineConfig

    for execution in report.latest_run(PipelineConfig(data_dir="", output_root=output_root)):
        if contract.VOCABULARY in execution["outputs"]:
            return execution["outputs"]
    raise SystemExit(f"error: no example generation in the run under {output_root}")


def sweep(output_root: str, model: str, budgets: List[int],
          overrides: Dict[str, Any]) -> List[Dict[str, Any]]:
    # pylint: disable=import-outside-toplevel
    from components import contract
    from components.trainer import distribute, hparams as hp, run
    from components.trainer.vocabulary import load_vocabulary

    outputs = example_outputs(output_root)
    vocabulary = load_vocabulary(outputs[contract.VOCABULARY][0])
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
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a hyperparameter for every row (JSON value)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value
    budgets = [int(b) for b in args.budgets.split(",") if b]
    rows = sweep(args.output_root, args.model, budgets, overrides)
    print(json.dumps({"model": args.model, "overrides": overrides, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
