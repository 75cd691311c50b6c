"""What the Evaluator's metric implementation costs, side by side in one run: the ranking
Evaluator (TFMA, in-process DirectRunner) on a finished pipeline run's model and eval
examples, with the project's TFMA-native RMSE (components/evaluator/metrics.py) and with
Keras' ``RootMeanSquaredError`` behind TFMA's Keras wrapper (what the Evaluator used
before), in alternating rounds.

    PYTHONPATH=. .venv/bin/python benchmarks/evaluator_metrics.py \\
        --output-root /tmp/scale/run-1m --rounds 2

``benchmarks/scale.py`` leaves such a run per size. Each evaluation runs the
Evaluator's executor exactly as the pipeline does (the Trainer's sample of eval users,
the slices, the gates), in-process. One line per evaluation, then one JSON object: each
implementation's median seconds, the Keras one's over the native one's, and both RMSEs
(which must agree: exit status 1 otherwise).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

def evaluate(output_root: str, keras: bool, work: str) -> dict:
    """Runs the ranking Evaluator's executor once; returns its seconds and RMSE."""
    # pylint: disable=import-outside-toplevel
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts, standard_component_specs as specs

    from components import contract
    from components.evaluator import config as evaluator_config
    from components.evaluator.component import MODEL_NAME_PARAMETER, Executor
    from pipeline import report
    from pipeline.configs import PipelineConfig

    config = PipelineConfig(data_dir="", output_root=output_root)
    runs = {execution["node"]: execution["outputs"]
            for execution in report.latest_run(config)}
    if "RankingTrainer" not in runs:
        raise SystemExit(f"error: no RankingTrainer in the latest run under {output_root}")
    examples = standard_artifacts.Examples()
    examples.uri = runs["MovieLensExampleGen"][contract.RATING_EXAMPLES][0]
    examples.split_names = json.dumps(list(contract.SPLITS))
    model = standard_artifacts.Model()
    model.uri = runs["RankingTrainer"]["model"][0]
    eval_config = evaluator_config.eval_config(contract.RANKING, config.evaluation)
    if keras:  # the same class name without a module: TFMA wraps Keras' own metric
        for metric in eval_config.metrics_specs[0].metrics:
            if metric.class_name == evaluator_config.RMSE_CLASS:
                metric.module = ""
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = (os.path.join(work, "evaluation"),
                                    os.path.join(work, "blessing"))
    executor = Executor(base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
        tmp_dir=os.path.join(work, "tmp", ""), unique_id="1"))
    started = time.time()
    executor.Do({specs.EXAMPLES_KEY: [examples], specs.MODEL_KEY: [model]},
                {specs.EVALUATION_KEY: [evaluation], specs.BLESSING_KEY: [blessing]},
                {specs.EVAL_CONFIG_KEY: json_format.MessageToJson(eval_config),
                 specs.EXAMPLE_SPLITS_KEY: json.dumps([evaluator_config.EVAL_SPLIT]),
                 MODEL_NAME_PARAMETER: contract.RANKING})
    seconds = time.time() - started
    result = tfma.load_eval_result(evaluation.uri)
    overall = dict(result.slicing_metrics)[()][""][""]
    return {"seconds": round(seconds, 1), "rmse": overall["rmse"]["doubleValue"],
            "examples": overall["example_count"]["doubleValue"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True,
                        help="a finished pipeline run's output root")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    import components  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    runs = {"native": [], "keras": []}
    for number in range(args.rounds):
        # Alternating which goes first, so that a slow spell falls on both.
        order = ("native", "keras") if number % 2 == 0 else ("keras", "native")
        for name in order:
            with tempfile.TemporaryDirectory() as work:
                figures = evaluate(args.output_root, name == "keras", work)
            runs[name].append(figures)
            print(f"round {number + 1} {name}: {figures}", flush=True)
    medians = {name: statistics.median(r["seconds"] for r in rows)
               for name, rows in runs.items()}
    rmse = {name: rows[0]["rmse"] for name, rows in runs.items()}
    agree = abs(rmse["native"] - rmse["keras"]) < 1e-5
    print(json.dumps({"seconds": medians, "keras_over_native": round(
        medians["keras"] / medians["native"], 3), "rmse": rmse, "rmse_agree": agree,
        "examples": runs["native"][0]["examples"], "runs": runs}))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
