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

    def model_hparams(self, name: str) -> Dict[str, Any]:
        if name not in DEFAULT_MODEL_HPARAMS:
            raise ValueError(f"unknown model {name!r}; known: {sorted(DEFAULT_MODEL_HPARAMS)}")
        merged = {**DEFAULT_MODEL_HPARAMS[name], **dict(self.hparams.get(name, {}))}
        if self.epochs is not None:
            merged["epochs"] = self.epochs
        return merged


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything one pipeline run needs.

    data_dir: an extracted MovieLens directory (the runner resolves downloads into one).
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

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_root, "metadata.sqlite")

    @property
    def serving_root(self) -> str:
        return os.path.join(self.output_root, "serving")
