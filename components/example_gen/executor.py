"""MovieLensExampleGen's executor: :func:`generate.generate` on the TFX-configured runner.

The work is all in components/example_gen/generate.py; this maps the component's
artifacts to output paths, runs it on the Beam pipeline TFX configures
(``beam_pipeline_args``), and marks the example artifacts for downstream components.
"""

from __future__ import annotations

import sys

from absl import logging
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components import contract
from components.example_gen import generate
from components.example_gen.config import CONFIG, DATA_DIR, ExampleGenConfig


def _mark_examples(artifact: types.Artifact) -> None:
    artifact.split_names = artifact_utils.encode_split_names(list(contract.SPLITS))
    examples_utils.set_payload_format(artifact, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(artifact, "tfrecords_gzip")


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs :func:`generate.generate` on the configured Beam runner."""

    def Do(self, input_dict, output_dict, exec_properties):
        config = ExampleGenConfig.from_json(exec_properties[CONFIG])
        artifacts = {key: artifact_utils.get_single_instance(output_dict[key])
                     for key in (contract.SEQUENCE_EXAMPLES, contract.RATING_EXAMPLES,
                                 contract.VOCABULARY, contract.STATISTICS)}
        paths = generate.OutputPaths(**{key: a.uri for key, a in artifacts.items()})
        logging.info("MovieLensExampleGen: %s with %s", exec_properties[DATA_DIR], config)
        statistics = generate.generate(exec_properties[DATA_DIR], config, paths,
                                       make_pipeline=self._make_beam_pipeline)
        for key in (contract.SEQUENCE_EXAMPLES, contract.RATING_EXAMPLES):
            _mark_examples(artifacts[key])
        message = "MovieLensExampleGen: " + generate.summary_line(statistics)
        logging.info(message)
        print(message, file=sys.stderr)
