"""BatchRecommender: the top-k movies of every user (or of a list) from the pushed
two-stage model, written by a Beam job (components/batch_recommend/job.py).

Input: ``pushed_model`` (the TwoStagePusher's PushedModel; its ``pushed_destination`` is
the exact variant's version directory, which the workers load).
Output: ``recommendations`` (InferenceResult): ``tfrecords/part-*.tfrecord.gz`` (one
tf.Example per row), ``parquet/part-*.parquet`` (columns ``contract.BATCH_COLUMNS``) and
``batch.json``; custom properties ``users``, ``rows``, ``seconds``, ``users_per_second``.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.batch_recommend import executor
from components.batch_recommend.executor import BATCH_SIZE, K, PUSHED_MODEL, RECOMMENDATIONS, USERS


class BatchRecommenderSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        K: component_spec.ExecutionParameter(type=int),
        USERS: component_spec.ExecutionParameter(type=str, optional=True),  # JSON list
        BATCH_SIZE: component_spec.ExecutionParameter(type=int),
    }
    INPUTS = {
        PUSHED_MODEL: component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }
    OUTPUTS = {
        RECOMMENDATIONS: component_spec.ChannelParameter(
            type=standard_artifacts.InferenceResult),
    }


class BatchRecommender(base_beam_component.BaseBeamComponent):
    """Args:
      pushed_model: the TwoStagePusher's output.
      k: movies per user.
      users: user ids to recommend for (default: every user in the model's users.tsv).
      batch_size: users per call of the model.
    """

    SPEC_CLASS = BatchRecommenderSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, pushed_model: types.BaseChannel, k: int = 10,
                 users: Optional[Sequence[int]] = None, batch_size: int = 256):
        spec = BatchRecommenderSpec(
            pushed_model=pushed_model, k=k, users=json.dumps([int(u) for u in users or ()]),
            batch_size=batch_size,
            recommendations=types.Channel(type=standard_artifacts.InferenceResult))
        super().__init__(spec=spec)
