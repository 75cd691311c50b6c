"""RecommenderPusher: pushes a blessed model to ``<serving_root>/<model_name>/<version>/``.

Inputs: ``model`` (a RecommenderTrainer's) and ``model_blessing`` (its Evaluator's).
Output: ``pushed_model`` (PushedModel; custom properties ``pushed`` 0/1,
``pushed_version``, ``pushed_destination``; ``push.json`` in its directory says the same
and lists every variant written).

A model that is not blessed is not pushed. Retrieval-like models are pushed as two
variants (brute force for stock TF Serving, ScaNN); ranking models as exported. See
components/pusher/serving.py for the layout and the signatures, executor.py for the steps.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.pusher import executor

SERVING_ROOT = "serving_root"
MODEL_NAME = "model_name"
MODEL_KIND = "model_kind"
MAX_K = "max_k"
SCANN_OVERRIDES = "scann_overrides"


class RecommenderPusherSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        SERVING_ROOT: component_spec.ExecutionParameter(type=str),
        MODEL_NAME: component_spec.ExecutionParameter(type=str),
        MODEL_KIND: component_spec.ExecutionParameter(type=str),
        MAX_K: component_spec.ExecutionParameter(type=int),
        SCANN_OVERRIDES: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "model": component_spec.ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": component_spec.ChannelParameter(
            type=standard_artifacts.ModelBlessing),
    }
    OUTPUTS = {
        "pushed_model": component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }


class RecommenderPusher(base_component.BaseComponent):
    """Args:
      model, model_blessing: the Trainer's model and its Evaluator's blessing.
      serving_root: the base directory of every served model: local, or on an object
        store such as ``gs://`` (see components/pusher/serving.py for how each publishes).
      model_name: the model's directory under it ("retrieval", "sequential", ...).
      model_kind: ``hparams["model"]`` ("retrieval", "multitask", "sequential" get the
        index variants; "ranking" is pushed as exported).
      max_k: the largest k served.
      scann_overrides: ScaNN parameters replacing the tuned ones (ann.ScannParams).
    """

    SPEC_CLASS = RecommenderPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
                 serving_root: str, model_name: str, model_kind: str, max_k: int = 100,
                 scann_overrides: Optional[Mapping[str, Any]] = None):
        spec = RecommenderPusherSpec(
            model=model, model_blessing=model_blessing, serving_root=serving_root,
            model_name=model_name, model_kind=model_kind, max_k=max_k,
            scann_overrides=json.dumps(dict(scann_overrides or {}), sort_keys=True),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel))
        super().__init__(spec=spec)
