"""TwoStagePusher's executor: :func:`build.build`, its result recorded the Pusher's way."""

from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.pusher.executor import record_push
from components.two_stage import build

# The component's parameters and channels (component.py declares them, Do reads them).
SERVING_ROOT = "serving_root"
RETRIEVAL_MODEL_NAME = "retrieval_model_name"
RANKING_MODEL_NAME = "ranking_model_name"
NUM_CANDIDATES = "num_candidates"
MAX_K = "max_k"
RETRIEVAL_PUSHED_MODEL = "retrieval_pushed_model"
RANKING_PUSHED_MODEL = "ranking_pushed_model"
PUSHED_MODEL = "pushed_model"


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        result = build.build(
            serving_root=exec_properties[SERVING_ROOT],
            retrieval_name=exec_properties[RETRIEVAL_MODEL_NAME],
            ranking_name=exec_properties[RANKING_MODEL_NAME],
            num_candidates=int(exec_properties[NUM_CANDIDATES]),
            max_k=int(exec_properties[MAX_K]))
        record_push(artifact_utils.get_single_instance(output_dict[PUSHED_MODEL]), result)
