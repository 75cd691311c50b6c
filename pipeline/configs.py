"""The pipeline's one configuration: paths, Beam, and each component's settings.

Built once (by ``pipeline_runner.py`` from its command line and an optional config file,
pipeline/options.py) and passed down; no module reads settings of its own. Each
component's settings class is owned by the component (``ExampleGenConfig``,
``EvaluationConfig``, ``HParams``); this module only gathers them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from components import contract
from components.batch_recommend.config import BatchConfig
from components.evaluator.gates import EvaluationConfig
from components.example_gen.config import ExampleGenConfig
from components.trainer.hparams import HParams
from components.trainer.vertex import VertexTrainingConfig

__all__ = ["BatchConfig", "EvaluationConfig", "ExampleGenConfig", "PipelineConfig", "ServingConfig",
           "TrainingConfig", "VertexTrainingConfig"]

DEFAULT_PIPELINE_NAME = "movielens-recommender"  # Kubeflow needs [a-z0-9-]
DEFAULT_OUTPUT_ROOT = "outputs"
# Where a compiled pipeline spec runs (both read the same KFP v2 JSON).
KUBEFLOW_TARGETS = ("kubeflow", "vertex")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Which models the pipeline trains, and their hyperparameters.

    models: model kinds (components/contract.py ``MODEL_KINDS``), each trained by its own
      Trainer named after it.
    hparams: per model, overrides of its defaults. Every default lives in
      components/trainer/hparams.py (``HParams`` fields and ``PRESETS``).
    epochs: if set, overrides every model's epochs (quick runs and tests).
    train_steps: if set, every model trains on its first train_steps batches only (one
      pass); 0 exports the untrained model (how tests make a degraded model the gates
      must stop).
    """

    models: Tuple[str, ...] = (contract.RETRIEVAL, contract.RANKING, contract.SEQUENTIAL)
    hparams: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    epochs: Optional[int] = None
    train_steps: Optional[int] = None

    def __post_init__(self):
        for name in list(self.models) + list(self.hparams):
            contract.model_kind(name)  # ValueError naming the known kinds
        for name in self.models:
            self.model_hparams(name)  # bad hyperparameters fail here, before any run

    def model_hparams(self, name: str) -> Dict[str, Any]:
        """The overrides the Trainer of ``name`` gets (its kind's preset fills the rest:
        ``HParams.from_dict``), checked against the hyperparameters there are."""
        merged = {**dict(self.hparams.get(name, {})), "model": name}
        if self.epochs is not None:
            merged["epochs"] = self.epochs
        HParams.from_dict(merged)  # raises ValueError on an unknown or bad value
        return merged


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """What the Pushers export under ``PipelineConfig.serving_root``.

    max_k: the largest k a pushed retrieval model serves (the ScaNN index's k).
    scann: overrides of the tuned ScaNN parameters (components/pusher/ann.py
      ``ScannParams`` fields, e.g. ``{"num_leaves_to_search": 80}``).
    fallback: what ``recommend`` does for an unknown user or movie: "error" (a clear
      message) or "popular" (the most-rated movies).
    two_stage_candidates: N, the candidates the two-stage model retrieves and re-ranks
      (components/two_stage; built when a retrieval and the ranking model are trained).
    """

    max_k: int = 100
    scann: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fallback: str = "error"
    two_stage_candidates: int = 200

    def __post_init__(self):
        if self.two_stage_candidates < 1:
            raise ValueError(f"two_stage_candidates must be at least 1, not "
                             f"{self.two_stage_candidates}")


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
    vertex_training: where compiled Trainers train (Vertex AI Training jobs or their own
      task; components/trainer/vertex.py). Local runs ignore it.
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
    vertex_training: VertexTrainingConfig = dataclasses.field(
        default_factory=VertexTrainingConfig)
    batch: BatchConfig = dataclasses.field(default_factory=BatchConfig)

    def __post_init__(self):
        if self.batch.batch_recommendations and self.two_stage_models is None:
            raise ValueError("--batch-recommendations reads the two-stage model: train "
                             f"{contract.RANKING} and {contract.RETRIEVAL} (or "
                             f"{contract.MULTITASK}) too (--models)")

    @property
    def two_stage_models(self) -> Optional[Tuple[str, str]]:
        """(retrieval model, ranking model) the two-stage model combines: the retrieval
        (else the multitask) model and the ranking model, when both are trained; None
        otherwise (a sequential model is no first stage: it takes no user id)."""
        models = self.training.models
        first = next((m for m in (contract.RETRIEVAL, contract.MULTITASK) if m in models),
                     None)
        return (first, contract.RANKING) if first and contract.RANKING in models else None

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_root, "metadata.sqlite")

    @property
    def serving_root(self) -> str:
        return os.path.join(self.output_root, "serving")
