"""The recommender's TFX DAG, in one function.

  MovieLensExampleGen ─┬─ StatisticsGen(sequence) ─┬─ SchemaGen(sequence)
                       │                           └─ ExampleValidator ── AnomaliesGate
                       │          CuratedSchemaGen(sequence) ─┘
                       ├─ StatisticsGen(rating)   ─┬─ SchemaGen(rating)
                       │                           └─ ExampleValidator ── AnomaliesGate
                       │            CuratedSchemaGen(rating) ─┘
                       ├─ Trainer(retrieval | multitask)   on rating examples
                       ├─ Trainer(ranking)                  on rating examples
                       └─ Trainer(sequential)               on sequence examples

Every Trainer runs after both AnomaliesGates, which fail the run on any anomaly against
the curated schemas of pipeline/schemas/ (see components/validation/component.py).

After each Trainer ``<Name>Trainer`` (names from TrainingConfig.models):

  <Name>BaselineResolver (the latest model of this Trainer blessed before this one)
      └─ <Name>Evaluator (TFMA on the eval split: top-100 accuracy / RMSE gates, slices)
            └─ <Name>Pusher (blessed models only: <serving_root>/<name>[_scann]/<version>/)

With a retrieval (or multitask) and the ranking model: TwoStageBuilder (a TwoStagePusher)
after both their Pushers (<serving_root>/two_stage[_scann]/<version>/,
components/two_stage), then, with ``--batch-recommendations true``, BatchRecommender
(every user's top-k by a Beam job, components/batch_recommend).

On Kubeflow / Vertex AI the BaselineResolver is TFX's latest-blessed-model resolver,
narrowed to the same model's blessings at compile time (pipeline/kubeflow.py).
"""

from __future__ import annotations

import sys
from typing import List, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
# TFX's classes from their own modules: importing the public ``tfx.v1`` also loads its
# Google Cloud extensions, seconds of every process that builds the pipeline.
from tfx.components import ExampleValidator, SchemaGen, StatisticsGen
from tfx.dsl.components.base import base_node
from tfx.orchestration import metadata
from tfx.orchestration import pipeline as tfx_pipeline

from components import contract
from components.batch_recommend.component import BatchRecommender
from components.evaluator import baseline as evaluator_baseline
from components.evaluator import config as evaluator_config
from components.evaluator.component import RecommenderEvaluator
from components.example_gen.component import MovieLensExampleGen
from components.pusher.component import RecommenderPusher
from components.trainer import component as trainer_component
from components.two_stage import executor as two_stage_executor
from components.two_stage.component import TwoStagePusher
from components.validation.component import AnomaliesGate, CuratedSchemaGen
from pipeline import schemas
from pipeline.configs import PipelineConfig

EXAMPLE_GEN_ID = "MovieLensExampleGen"
# Not "...Pusher": the run report reads every "<Name>Pusher" as a trained model's.
TWO_STAGE_PUSHER_ID = "TwoStageBuilder"
BATCH_RECOMMENDER_ID = "BatchRecommender"


def create_components(config: PipelineConfig,
                      local: bool = True) -> List[base_node.BaseNode]:
    """The DAG's components, wired, in topological order.

    local: each Evaluator's baseline comes from a custom resolver (the same Trainer's
      previous blessed model, components/evaluator/baseline.py); otherwise from TFX's
      latest-blessed-model resolver, the only one Kubeflow v2 / Vertex AI compile,
      which pipeline/kubeflow.py restricts to the same model's blessings.
    """
    example_gen = MovieLensExampleGen(
        data_dir=config.data_dir, config=config.example_gen,
        input_fingerprint=config.input_fingerprint).with_id(EXAMPLE_GEN_ID)
    sequence_statistics = StatisticsGen(
        examples=example_gen.outputs[contract.SEQUENCE_EXAMPLES]
    ).with_id("SequenceStatisticsGen")
    sequence_schema = SchemaGen(
        statistics=sequence_statistics.outputs["statistics"]).with_id("SequenceSchemaGen")
    rating_statistics = StatisticsGen(
        examples=example_gen.outputs[contract.RATING_EXAMPLES]).with_id("RatingStatisticsGen")
    rating_schema = SchemaGen(
        statistics=rating_statistics.outputs["statistics"]).with_id("RatingSchemaGen")
    validation, gates = [], []
    for kind, statistics in ((contract.SEQUENCE, sequence_statistics),
                             (contract.RATING, rating_statistics)):
        curated = CuratedSchemaGen(schemas.schema_file(kind)).with_id(
            f"{kind.capitalize()}CuratedSchemaGen")
        validator = ExampleValidator(
            statistics=statistics.outputs["statistics"],
            schema=curated.outputs["schema"],
        ).with_id(f"{kind.capitalize()}ExampleValidator")
        gates.append(AnomaliesGate(validator.outputs["anomalies"], f"{kind} examples")
                     .with_id(f"{kind.capitalize()}AnomaliesGate"))
        validation += [curated, validator, gates[-1]]
    trainers, pushers = [], {}
    run_config = {trainer_component.SLICES_CONFIG: config.evaluation.slices.to_dict()}
    if config.training.train_steps is not None:
        run_config[trainer_component.TRAIN_STEPS_CONFIG] = config.training.train_steps
    for name in config.training.models:
        examples = example_gen.outputs[contract.model_kind(name).examples_key]
        trainers.append(trainer_component.RecommenderTrainer(
            examples=examples,
            vocabulary=example_gen.outputs[contract.VOCABULARY],
            hparams=config.training.model_hparams(name),
            run_config=run_config,
            vertex_config=None if local else config.vertex_training.custom_config(),
        ).with_id(f"{name.capitalize()}Trainer"))
        trainers[-1].add_upstream_nodes(gates)  # no Trainer before the data passed
        trainers.extend(_evaluate_and_push(config, name, trainers[-1], examples, local))
        pushers[name] = trainers[-1]
    return [example_gen, sequence_statistics, sequence_schema, rating_statistics,
            rating_schema, *validation, *trainers, *_serve_two_stage(config, pushers)]


def _serve_two_stage(config: PipelineConfig, pushers) -> List[base_node.BaseNode]:
    """The TwoStagePusher after the retrieval and ranking Pushers, and the optional
    BatchRecommender reading what it pushed."""
    if config.two_stage_models is None:
        return []
    retrieval, ranking = config.two_stage_models
    two_stage = TwoStagePusher(
        retrieval_pushed_model=pushers[retrieval].outputs["pushed_model"],
        ranking_pushed_model=pushers[ranking].outputs["pushed_model"],
        serving_root=config.serving_root, retrieval_model_name=retrieval,
        ranking_model_name=ranking, num_candidates=config.serving.two_stage_candidates,
        max_k=config.serving.max_k).with_id(TWO_STAGE_PUSHER_ID)
    if not config.batch.batch_recommendations:
        return [two_stage]
    batch = BatchRecommender(
        pushed_model=two_stage.outputs[two_stage_executor.PUSHED_MODEL], k=config.batch.batch_k,
        users=config.batch.batch_users, batch_size=config.batch.batch_size,
    ).with_id(BATCH_RECOMMENDER_ID)
    return [two_stage, batch]


def _evaluate_and_push(config: PipelineConfig, name: str, trainer: base_node.BaseNode,
                       examples, local: bool = True) -> List[base_node.BaseNode]:
    """The baseline resolver, Evaluator and Pusher of one Trainer."""
    prefix = name.capitalize()
    if local:
        baseline = evaluator_baseline.baseline_resolver(
            trainer.outputs["model"], evaluator_id=f"{prefix}Evaluator",
            resolver_id=baseline_resolver_id(name))
    else:
        baseline = evaluator_baseline.latest_blessed_resolver(baseline_resolver_id(name))
    evaluator = RecommenderEvaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs[evaluator_baseline.MODEL_KEY],
        eval_config=evaluator_config.eval_config(name, config.evaluation),
        example_splits=[evaluator_config.EVAL_SPLIT],
        model_name=name,
    ).with_id(f"{prefix}Evaluator")
    pusher = RecommenderPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        serving_root=config.serving_root,
        model_name=name,
        model_kind=name,
        max_k=config.serving.max_k,
        scann_overrides=config.serving.scann,
    ).with_id(f"{prefix}Pusher")
    return [baseline, evaluator, pusher]


def baseline_resolver_id(model_name: str) -> str:
    return f"{model_name.capitalize()}BaselineResolver"


# Beam's options that make TFX leave a pipeline's dependencies alone (tfx/utils/
# dependency_utils.py); without one, every Beam component builds and stages an sdist of
# TFX for remote workers first (~5 s each).
_DEPENDENCY_OPTIONS = ("extra_packages", "setup_file", "requirements_file",
                       "worker_harness_container_image", "sdk_container_image")


def beam_pipeline_args(args: Sequence[str]) -> List[str]:
    """The Beam components' options: ``args``, plus, when they run Beam's DirectRunner
    and name no dependencies, the SDK's own container image (which only container-based
    runners read): the DirectRunner's workers are processes of this Python environment,
    which has TFX already, so there is nothing to build or stage. Any other runner keeps
    TFX's staging."""
    options = PipelineOptions(list(args)).get_all_options()
    if options.get("runner") not in (None, "DirectRunner", "direct") or any(
            options.get(name) for name in _DEPENDENCY_OPTIONS):
        return list(args)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return [*args, f"--sdk_container_image=apache/beam_python{python}_sdk:{beam.__version__}"]


def create_pipeline(config: PipelineConfig, local: bool = True) -> tfx_pipeline.Pipeline:
    """The TFX pipeline for ``config``.

    local: SQLite metadata under the output root (LocalDagRunner); otherwise none, as
      Kubeflow and Vertex AI bring their own metadata store.
    """
    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config, local=local),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata
        .sqlite_metadata_connection_config(config.metadata_path) if local else None,
        beam_pipeline_args=beam_pipeline_args(config.beam_pipeline_args),
    )
