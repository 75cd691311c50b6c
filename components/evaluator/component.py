"""RecommenderEvaluator: TFX's Evaluator whose blessings name the model they judge.

With several Trainers in one pipeline, every Evaluator writes ModelBlessing artifacts of
the same type. Locally, each Evaluator's baseline is found through its own node id (see
baseline.py), but Kubeflow v2 / Vertex AI compile only TFX's LatestBlessedModelStrategy,
whose query sees blessings by type and custom properties alone. So this Evaluator stamps
each blessing with ``model_name`` (custom property ``MODEL_NAME_PROPERTY``), and the
compiled query asks for ``metadata.model_name.string_value = "<name>"``
(pipeline/kubeflow.py): the ranking model never becomes the retrieval model's baseline.

When the Trainer evaluated its model on a seeded sample of users (``eval_sample_users``),
the Evaluator evaluates both models on the same users' examples (user_sample.py) and
stamps the blessing and the evaluation with ``contract.EVAL_SAMPLED_USERS``.

Everything else is TFX's Evaluator: same inputs, outputs and parameters, plus
``model_name``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.dsl.components.base import base_beam_component, executor_spec
from absl import logging
from tfx.types import component_spec, standard_artifacts, standard_component_specs

from components import contract
from components.evaluator import user_sample

MODEL_NAME_PARAMETER = "model_name"
MODEL_NAME_PROPERTY = "model_name"  # custom property of each ModelBlessing written


class RecommenderEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    PARAMETERS = {
        **standard_component_specs.EvaluatorSpec.PARAMETERS,
        MODEL_NAME_PARAMETER: component_spec.ExecutionParameter(type=str),
    }


class Executor(tfx_evaluator_executor.Executor):
    """TFX's Evaluator executor, then ``model_name`` on the blessing."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        exec_properties = dict(exec_properties)
        model_name = exec_properties.pop(MODEL_NAME_PARAMETER)
        [model] = input_dict[standard_component_specs.MODEL_KEY]
        users = user_sample.sampled_users(model.uri)
        if users is not None:
            splits = json.loads(
                exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY) or "null"
            ) or [contract.EVAL]
            [examples] = input_dict[standard_component_specs.EXAMPLES_KEY]
            logging.info("Evaluating on the Trainer's sample of %d users", len(users))
            input_dict = {**input_dict, standard_component_specs.EXAMPLES_KEY: [
                user_sample.narrowed_examples(examples, splits, users,
                                              os.path.join(self._get_tmp_dir(), "examples"))]}
        super().Do(input_dict, output_dict, exec_properties)
        for blessing in output_dict[standard_component_specs.BLESSING_KEY]:
            blessing.set_string_custom_property(MODEL_NAME_PROPERTY, model_name)
        if users is not None:
            for artifact in (output_dict[standard_component_specs.BLESSING_KEY]
                             + output_dict[standard_component_specs.EVALUATION_KEY]):
                artifact.set_int_custom_property(contract.EVAL_SAMPLED_USERS, len(users))


class RecommenderEvaluator(base_beam_component.BaseBeamComponent):
    """Args:
      examples: the Examples to evaluate on (``example_splits`` of them).
      model: the candidate Model (a RecommenderTrainer's).
      baseline_model: the Model to compare with (None: thresholds only).
      eval_config: the TFMA EvalConfig (components/evaluator/config.py).
      example_splits: split names to evaluate on.
      model_name: the Trainer's model name ("retrieval", ...), stamped on the blessing.
    """

    SPEC_CLASS = RecommenderEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 baseline_model: Optional[types.BaseChannel], eval_config: tfma.EvalConfig,
                 example_splits: List[str], model_name: str):
        spec = RecommenderEvaluatorSpec(
            examples=examples, model=model, baseline_model=baseline_model,
            eval_config=eval_config, example_splits=json.dumps(example_splits),
            model_name=model_name,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing))
        super().__init__(spec=spec)
