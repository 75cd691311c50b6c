"""TwoStagePusher: after the retrieval and ranking Pushers, publishes the two-stage model
``<serving_root>/two_stage[_scann]/<version>/`` (components/two_stage/model.py says what
it serves, build.py how it is built and when it is rebuilt).

Inputs: ``retrieval_pushed_model`` and ``ranking_pushed_model``, the two Pushers'
outputs (they order this component after both; the versions combined are the latest
loadable ones under the serving root, which are these Pushers' when they pushed).
Output: ``pushed_model`` (PushedModel, marked as the Pusher's: ``pushed``,
``pushed_version``, ``pushed_destination``, and ``push.json`` with the stages' versions).
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.two_stage import build, executor
from components.two_stage.executor import (MAX_K, NUM_CANDIDATES, PUSHED_MODEL,
                                           RANKING_MODEL_NAME, RANKING_PUSHED_MODEL,
                                           RETRIEVAL_MODEL_NAME, RETRIEVAL_PUSHED_MODEL,
                                           SERVING_ROOT)

class TwoStagePusherSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        SERVING_ROOT: component_spec.ExecutionParameter(type=str),
        RETRIEVAL_MODEL_NAME: component_spec.ExecutionParameter(type=str),
        RANKING_MODEL_NAME: component_spec.ExecutionParameter(type=str),
        NUM_CANDIDATES: component_spec.ExecutionParameter(type=int),
        MAX_K: component_spec.ExecutionParameter(type=int),
    }
    INPUTS = {
        RETRIEVAL_PUSHED_MODEL: component_spec.ChannelParameter(
            type=standard_artifacts.PushedModel),
        RANKING_PUSHED_MODEL: component_spec.ChannelParameter(
            type=standard_artifacts.PushedModel),
    }
    OUTPUTS = {
        PUSHED_MODEL: component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }


class TwoStagePusher(base_component.BaseComponent):
    """Args:
      retrieval_pushed_model, ranking_pushed_model: the two Pushers' outputs.
      serving_root: where both are served and the two-stage model goes (local or gs://).
      retrieval_model_name, ranking_model_name: their directories under it.
      num_candidates: N, the candidates retrieved and re-ranked.
      max_k: the largest k served (at most N).
    """

    SPEC_CLASS = TwoStagePusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, retrieval_pushed_model: types.BaseChannel,
                 ranking_pushed_model: types.BaseChannel, serving_root: str,
                 retrieval_model_name: str, ranking_model_name: str,
                 num_candidates: int = build.DEFAULT_NUM_CANDIDATES, max_k: int = 100):
        spec = TwoStagePusherSpec(
            retrieval_pushed_model=retrieval_pushed_model,
            ranking_pushed_model=ranking_pushed_model, serving_root=serving_root,
            retrieval_model_name=retrieval_model_name,
            ranking_model_name=ranking_model_name, num_candidates=num_candidates,
            max_k=max_k, pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super().__init__(spec=spec)
