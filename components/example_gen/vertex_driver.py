"""Kubeflow v2 / Vertex AI: fingerprint the data before the cache check.

Locally, ``pipeline_runner.py run`` hashes the data and passes the hash to
MovieLensExampleGen as ``input_fingerprint``, so TFX's cache reruns example generation
(and everything after it) exactly when the data changed. A compiled pipeline cannot: it
is compiled once and scheduled for weeks while ``gs://.../ml-1m`` grows, and the
compiling machine may not even read the bucket. With the data directory's path as the
only key, every scheduled run would be served from the cache.

TFX solves this for its FileBasedExampleGen with a driver that the pipeline backend runs
as the task's ``preCacheCheck`` hook: it computes the input's fingerprint and writes it as
an updated execution parameter, which enters the cache key, and which TFX's container
entry point hands to the executor. This module is that driver for MovieLensExampleGen;
pipeline/kubeflow.py attaches it to the compiled task.

Usage (by the pipeline backend, in the component image):
  python -m components.example_gen.vertex_driver --json_serialized_invocation_args '{{$}}'
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import components  # noqa: F401  (Keras 2 before TensorFlow, as every entry point)
from components.example_gen.config import DATA_DIR, INPUT_FINGERPRINT
COMMAND = ["python", "-m", "components.example_gen.vertex_driver"]


def run_driver(executor_input_json: str, inputs_spec_json: Optional[str] = None) -> str:
    """Fingerprints the task's ``data_dir`` and writes an ExecutorOutput carrying it as
    ``input_fingerprint`` to the task's output file. Returns the fingerprint.

    The parameters are read as TFX's own entry point reads them: from ``parameter_values``
    when the inputs spec is given (pipeline spec 2.1), else from ``parameters``; the
    fingerprint is written to both fields."""
    from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
    from kfp.pipeline_spec import pipeline_spec_pb2  # pylint: disable=import-outside-toplevel
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel
    from tfx.orchestration.kubeflow.v2.container import (  # pylint: disable=import-outside-toplevel
        kubeflow_v2_entrypoint_utils)

    from data import movielens  # pylint: disable=import-outside-toplevel

    executor_input = pipeline_spec_pb2.ExecutorInput()
    json_format.Parse(executor_input_json, executor_input, ignore_unknown_fields=True)
    inputs_spec = None
    if inputs_spec_json:
        inputs_spec = json_format.Parse(inputs_spec_json,
                                        pipeline_spec_pb2.ComponentInputsSpec(),
                                        ignore_unknown_fields=True)
    exec_properties = kubeflow_v2_entrypoint_utils.parse_execution_properties(
        executor_input.inputs.parameter_values, executor_input.inputs.parameters,
        inputs_spec)
    data_dir = exec_properties[DATA_DIR]
    fingerprint = movielens.fingerprint(movielens.detect_layout(data_dir))
    print(f"{data_dir}: input fingerprint {fingerprint}", flush=True)

    output = pipeline_spec_pb2.ExecutorOutput()
    output.parameter_values[INPUT_FINGERPRINT].string_value = fingerprint
    output.parameters[INPUT_FINGERPRINT].string_value = fingerprint
    output_file = executor_input.outputs.output_file
    fileio.makedirs(os.path.dirname(output_file))
    with fileio.open(output_file, "w") as handle:
        handle.write(json_format.MessageToJson(output, sort_keys=True))
    return fingerprint


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json_serialized_invocation_args", required=True,
                        help="the task's ExecutorInput, as JSON ({{$}} in the spec)")
    parser.add_argument("--json_serialized_inputs_spec_args",
                        help="the component's inputs spec, as JSON (pipeline spec 2.1)")
    # Beam arguments are appended to every Beam component's command line: ignore them.
    args, _ = parser.parse_known_args(argv)
    run_driver(args.json_serialized_invocation_args, args.json_serialized_inputs_spec_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
