"""BatchRecommender's executor: :func:`job.run` on the Beam runner TFX configures
(``beam_pipeline_args``), over the pushed model's exact variant."""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components import contract
from components.batch_recommend import job
from components.pusher.executor import PUSHED_DESTINATION, PUSHED_PROPERTY

# The component's parameters and channels (component.py declares them, Do reads them).
K, USERS, BATCH_SIZE = "k", "users", "batch_size"
PUSHED_MODEL = "pushed_model"
RECOMMENDATIONS = "recommendations"


class Executor(base_beam_executor.BaseBeamExecutor):
    """Records ``users``, ``seconds`` and ``users_per_second`` as custom properties of
    ``recommendations`` (and in its ``batch.json``); prints one line."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed = artifact_utils.get_single_instance(input_dict[PUSHED_MODEL])
        output = artifact_utils.get_single_instance(output_dict[RECOMMENDATIONS])
        if pushed.get_int_custom_property(PUSHED_PROPERTY) != 1:
            raise RuntimeError("BatchRecommender: no two-stage model was pushed "
                               f"(see {pushed.uri}), so there is nothing to recommend with")
        model_dir = pushed.get_string_custom_property(PUSHED_DESTINATION)
        stats = job.run(model_dir, output.uri, k=int(exec_properties[K]),
                        users=json.loads(exec_properties.get(USERS) or "[]"),
                        batch_size=int(exec_properties[BATCH_SIZE]),
                        make_pipeline=self._make_beam_pipeline)
        for name in (job.USERS_COUNTER, job.ROWS_COUNTER):
            if stats[name] is not None:
                output.set_int_custom_property(name, stats[name])
        output.set_float_custom_property("seconds", stats["seconds"])
        if stats[contract.USERS_PER_SECOND] is not None:
            output.set_float_custom_property(contract.USERS_PER_SECOND,
                                             stats[contract.USERS_PER_SECOND])
        message = job.summary_line(stats)
        logging.info(message)
        print(message, file=sys.stderr)
