"""What Beam's DirectRunner mode costs the statistics step: runs TFX's StatisticsGen
executor on a finished pipeline run's examples under each ``--direct_running_mode``, in
alternating rounds, and prints each round's wall time and the ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/statistics_mode.py \
        --output-root /tmp/scale/run-1m --rounds 2

``--output-root``: a run of ``pipeline_runner.py run`` (``benchmarks/scale.py`` leaves one
per size); ``--kind`` picks its rating or its sequence examples. Or ``--examples DIR``:
any directory of example files under ``Split-train/`` and ``Split-eval/``. Each run is the
pipeline's StatisticsGen work (every split, TFDV's default options) in this process, as
LocalDagRunner runs it, writing into a fresh temporary directory. The modes alternate
(multi_processing, in_memory, multi_processing, ...) so that a drift in the machine's
speed reaches both. Last line: one JSON object with every round and the median ratio
``in_memory / multi_processing``.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

MODES = ("multi_processing", "in_memory")


def time_statistics(examples_uri: str, split_names: List[str], mode: str) -> float:
    """Seconds for StatisticsGen's executor on the examples at ``examples_uri``."""
    # pylint: disable=import-outside-toplevel
    from tfx.components.statistics_gen import executor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor as BaseExecutor
    from tfx.types import artifact_utils, standard_artifacts, standard_component_specs

    from pipeline.pipeline import beam_pipeline_args

    examples = standard_artifacts.Examples()
    examples.uri = examples_uri
    examples.split_names = artifact_utils.encode_split_names(split_names)
    with tempfile.TemporaryDirectory() as out:
        statistics_artifact = standard_artifacts.ExampleStatistics()
        statistics_artifact.uri = out
        context = BaseExecutor.Context(
            beam_pipeline_args=beam_pipeline_args(
                [f"--direct_running_mode={mode}", "--direct_num_workers=0"]),
            tmp_dir=os.path.join(out, ".tmp"), unique_id="statistics_mode")
        started = time.time()
        executor.Executor(context).Do(
            {standard_component_specs.EXAMPLES_KEY: [examples]},
            {standard_component_specs.STATISTICS_KEY: [statistics_artifact]}, {})
        return time.time() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--output-root")
    source.add_argument("--examples", help="a directory holding Split-train/, Split-eval/")
    parser.add_argument("--kind", choices=("rating", "sequence"), default="rating")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    # pylint: disable=import-outside-toplevel
    from benchmarks.training_budget import run_examples
    from components import contract

    if args.examples:
        uri = args.examples
    else:
        outputs, _ = run_examples(args.output_root)
        uri = outputs[contract.examples_key(args.kind)][0]
    rounds: List[Dict[str, float]] = []
    for number in range(args.rounds):
        row = {mode: round(time_statistics(uri, list(contract.SPLITS), mode), 1)
               for mode in MODES}
        row["ratio"] = round(row["in_memory"] / row["multi_processing"], 3)
        print(json.dumps({"round": number + 1, **row}), flush=True)
        rounds.append(row)
    print(json.dumps({"examples": uri,
                      "rounds": rounds,
                      "median_ratio": statistics.median(r["ratio"] for r in rounds)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
