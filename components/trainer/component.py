"""RecommenderTrainer: TFX's generic Trainer with the example generator's vocabulary.

TFX's Trainer has no input for a vocabulary, and every model here needs the movie
catalogue (the retrieval candidates, titles and genres, popularity for log-Q). This
component is the stock Trainer spec plus a ``vocabulary`` input; its executor hands the
vocabulary directory to ``run_fn`` as ``custom_config["vocabulary_dir"]``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils, component_spec, standard_artifacts, standard_component_specs

from components.example_gen.component import MovieLensVocabulary

VOCABULARY_KEY = "vocabulary"
RUN_FN = "components.trainer.run.run_fn"
# custom_config keys run_fn reads.
VOCABULARY_DIR_CONFIG = "vocabulary_dir"  # set by the executor
HPARAMS_CONFIG = "hparams"
TRAIN_STEPS_CONFIG = "train_steps"
SLICES_CONFIG = "eval_slices"


class RecommenderTrainerSpec(component_spec.ComponentSpec):
    PARAMETERS = dict(standard_component_specs.TrainerSpec.PARAMETERS)
    INPUTS = {
        standard_component_specs.EXAMPLES_KEY:
            component_spec.ChannelParameter(type=standard_artifacts.Examples),
        VOCABULARY_KEY: component_spec.ChannelParameter(type=MovieLensVocabulary),
        standard_component_specs.BASE_MODEL_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = dict(standard_component_specs.TrainerSpec.OUTPUTS)


class Executor(trainer_executor.GenericExecutor):
    """The generic Trainer executor, adding the vocabulary directory to custom_config."""

    def _GetFnArgs(self, input_dict, output_dict, exec_properties):
        fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
        config = dict(fn_args.custom_config or {})
        config[VOCABULARY_DIR_CONFIG] = artifact_utils.get_single_uri(input_dict[VOCABULARY_KEY])
        fn_args.custom_config = config
        return fn_args


class RecommenderTrainer(base_component.BaseComponent):
    """Trains one model of components/trainer/models.py (which kind: ``hparams["model"]``).

    Args:
      examples: rating examples (retrieval, ranking, multitask) or sequence examples
        (sequential), with train and eval splits.
      vocabulary: the example generator's vocabulary output.
      hparams: a dict for ``HParams.from_dict`` (components/trainer/hparams.py); it
        travels as custom_config.
      base_model: optional warm start (unused by run_fn today).
      run_config: more custom_config entries for run_fn: ``TRAIN_STEPS_CONFIG`` (train
        on the first N batches only; 0: export the untrained model) and
        ``SLICES_CONFIG`` (a ``SliceSpec`` dict: the Evaluator's slice features).
    """

    SPEC_CLASS = RecommenderTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, vocabulary: types.BaseChannel,
                 hparams: Dict[str, Any], base_model: Optional[types.BaseChannel] = None,
                 run_config: Optional[Dict[str, Any]] = None,
                 vertex_config: Optional[Dict[str, Any]] = None):
        spec = RecommenderTrainerSpec(
            examples=examples,
            vocabulary=vocabulary,
            base_model=base_model,
            train_args=trainer_pb2.TrainArgs(splits=["train"]),
            eval_args=trainer_pb2.EvalArgs(splits=["eval"]),
            run_fn=RUN_FN,
            custom_config=json.dumps({**(run_config or {}), **(vertex_config or {}),
                                      HPARAMS_CONFIG: hparams}, sort_keys=True),
            model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        )
        custom_executor_spec = None
        if vertex_config:  # TFX's Google Cloud extension: imported only when asked for
            from components.trainer.vertex_executor import VertexExecutor

            custom_executor_spec = executor_spec.ExecutorClassSpec(VertexExecutor)
        super().__init__(spec=spec, custom_executor_spec=custom_executor_spec)
