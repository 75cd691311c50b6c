"""The pipeline's one configuration: paths, example generation, Beam, and later models.

Built once (by ``pipeline_runner.py`` from its command line) and passed down; no module
reads settings of its own.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Tuple

DEFAULT_PIPELINE_NAME = "movielens-recommender"  # Kubeflow needs [a-z0-9-]
DEFAULT_OUTPUT_ROOT = "outputs"
# Where a compiled pipeline spec runs (both read the same KFP v2 JSON).
KUBEFLOW_TARGETS = ("kubeflow", "vertex")


@dataclasses.dataclass(frozen=True)
class ExampleGenConfig:
    """MovieLensExampleGen's parameters; defaults are the sequential tutorial's flags."""

    min_rating: Optional[float] = 2
    min_timeline_length: int = 3
    max_context_length: int = 10
    max_context_movie_genre_length: int = 10
    split_strategy: str = "random"
    train_fraction: float = 0.9
    rating_train_fraction: float = 0.8
    seed: int = 42
    max_bad_fraction: float = 0.0


# Hyperparameters of each trained model (models.HParams fields). Each entry becomes one
# RecommenderTrainer; "retrieval" may be swapped for "multitask" (see TrainingConfig).
DEFAULT_MODEL_HPARAMS: Dict[str, Dict[str, Any]] = {
    "retrieval": {"model": "retrieval"},
    "multitask": {"model": "multitask", "rating_weight": 1.0, "retrieval_weight": 1.0},
    "ranking": {"model": "ranking"},
    "sequential": {"model": "sequential"},
}


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Which models the pipeline trains, and their hyperparameters.

    models: names of DEFAULT_MODEL_HPARAMS entries, each trained by its own Trainer.
    hparams: per model, overrides of DEFAULT_MODEL_HPARAMS.
    epochs: if set, overrides every model's epochs (quick runs and tests).
    """

    models: Tuple[str, ...] = ("retrieval", "ranking", "sequential")
    hparams: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    epochs: Optional[int] = None
    # If set, every model trains on its first train_steps batches only (one pass); 0
    # exports the untrained model (how tests make a degraded model the gates must stop).
    train_steps: Optional[int] = None

    def model_hparams(self, name: str) -> Dict[str, Any]:
        if name not in DEFAULT_MODEL_HPARAMS:
            raise ValueError(f"unknown model {name!r}; known: {sorted(DEFAULT_MODEL_HPARAMS)}")
        merged = {**DEFAULT_MODEL_HPARAMS[name], **dict(self.hparams.get(name, {}))}
        if self.epochs is not None:
            merged["epochs"] = self.epochs
        return merged


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The Evaluators' gates (TFMA) and slices; see components/evaluator/.

    A retrieval or sequential model is blessed only if its top-``top_k`` accuracy over
    the whole movie vocabulary (eval split) is >= ``min_top_k_accuracy`` and not lower
    than the baseline's by more than ``top_k_tolerance``; a ranking model only if its
    RMSE (stars) is <= ``max_rmse`` and not higher than the baseline's by more than
    ``rmse_tolerance``. The baseline is the latest blessed model of the same Trainer
    (none on the first run: then only the absolute thresholds apply).

    Slices: user activity buckets by the user's number of ratings (upper bounds of all
    but the last bucket: (20, 100) gives <=20, 21-100, >100), and movie popularity by the
    movie's rank in the vocabulary (most rated first): ``movie_popularity_quantiles``
    (0.1, 0.5) gives head = top 10% of the catalogue, torso = next 40%, tail = the rest.
    """

    top_k: int = 100
    min_top_k_accuracy: float = 0.1
    top_k_tolerance: float = 0.01
    max_rmse: float = 1.0
    rmse_tolerance: float = 0.0
    user_activity_boundaries: Tuple[int, ...] = (20, 100)
    movie_popularity_quantiles: Tuple[float, ...] = (0.1, 0.5)

    def slices(self) -> Dict[str, Any]:
        """What the Trainer's export needs to compute the slice features."""
        return {"user_activity_boundaries": list(self.user_activity_boundaries),
                "movie_popularity_quantiles": list(self.movie_popularity_quantiles)}


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """What the Pushers export under ``PipelineConfig.serving_root``.

    max_k: the largest k a pushed retrieval model serves (the ScaNN index's k).
    scann: overrides of the tuned ScaNN parameters (components/pusher/ann.py
      ``ScannParams`` fields, e.g. ``{"num_leaves_to_search": 80}``).
    fallback: what ``recommend`` does for an unknown user or movie: "error" (a clear
      message) or "popular" (the most-rated movies).
    """

    max_k: int = 100
    scann: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fallback: str = "error"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything one pipeline run needs.

    data_dir: an extracted MovieLens directory (the runner resolves downloads into one),
      local or a URL Beam's file systems read (``gs://...``).
    input_fingerprint: a hash of the data's files (``movielens.fingerprint``), so that
      the cache reruns example generation on new data; None keys the cache on the path.
    output_root: the pipeline root (artifacts), the metadata store and the serving root
      all live under it.
    beam_pipeline_args: Beam options for every Beam-based component. The default runs
      Beam's DirectRunner in multi-processing mode on all cores.
    """

    data_dir: str
    pipeline_name: str = DEFAULT_PIPELINE_NAME
    output_root: str = DEFAULT_OUTPUT_ROOT
    input_fingerprint: Optional[str] = None
    enable_cache: bool = True
    beam_pipeline_args: Tuple[str, ...] = (
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=0",
    )
    example_gen: ExampleGenConfig = dataclasses.field(default_factory=ExampleGenConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_root, "metadata.sqlite")

    @property
    def serving_root(self) -> str:
        return os.path.join(self.output_root, "serving")
