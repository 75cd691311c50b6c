"""The recommender's TFX DAG, in one function.

  MovieLensExampleGen ─┬─ StatisticsGen(sequence) ── SchemaGen(sequence)
                       ├─ StatisticsGen(rating)   ── SchemaGen(rating)
                       ├─ Trainer(retrieval | multitask)   on rating examples
                       ├─ Trainer(ranking)                  on rating examples
                       └─ Trainer(sequential)               on sequence examples

Evaluators and Pushers join as their issues land (see README.md).
"""

from __future__ import annotations

from typing import List

from tfx import v1 as tfx
from tfx.dsl.components.base import base_node

from components.example_gen.component import MovieLensExampleGen
from components.trainer.component import RecommenderTrainer
from pipeline.configs import PipelineConfig


def create_components(config: PipelineConfig) -> List[base_node.BaseNode]:
    """The DAG's components, wired, in topological order."""
    eg = config.example_gen
    example_gen = MovieLensExampleGen(
        data_dir=config.data_dir,
        input_fingerprint=config.input_fingerprint,
        min_rating=eg.min_rating,
        min_timeline_length=eg.min_timeline_length,
        max_context_length=eg.max_context_length,
        max_context_movie_genre_length=eg.max_context_movie_genre_length,
        split_strategy=eg.split_strategy,
        train_fraction=eg.train_fraction,
        rating_train_fraction=eg.rating_train_fraction,
        seed=eg.seed,
        max_bad_fraction=eg.max_bad_fraction,
    )
    sequence_statistics = tfx.components.StatisticsGen(
        examples=example_gen.outputs["sequence_examples"]).with_id("SequenceStatisticsGen")
    sequence_schema = tfx.components.SchemaGen(
        statistics=sequence_statistics.outputs["statistics"]).with_id("SequenceSchemaGen")
    rating_statistics = tfx.components.StatisticsGen(
        examples=example_gen.outputs["rating_examples"]).with_id("RatingStatisticsGen")
    rating_schema = tfx.components.SchemaGen(
        statistics=rating_statistics.outputs["statistics"]).with_id("RatingSchemaGen")
    trainers = []
    for name in config.training.models:
        hparams = config.training.model_hparams(name)
        kind = "sequence" if hparams["model"] == "sequential" else "rating"
        trainers.append(RecommenderTrainer(
            examples=example_gen.outputs[f"{kind}_examples"],
            vocabulary=example_gen.outputs["vocabulary"],
            hparams=hparams,
        ).with_id(f"{name.capitalize()}Trainer"))
    return [example_gen, sequence_statistics, sequence_schema, rating_statistics,
            rating_schema, *trainers]


def create_pipeline(config: PipelineConfig, local: bool = True) -> tfx.dsl.Pipeline:
    """The TFX pipeline for ``config``.

    local: SQLite metadata under the output root (LocalDagRunner); otherwise none, as
      Kubeflow and Vertex AI bring their own metadata store.
    """
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata
        .sqlite_metadata_connection_config(config.metadata_path) if local else None,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
