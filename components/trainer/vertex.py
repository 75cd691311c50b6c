"""Sending the Trainers to Vertex AI Training (compiled pipelines only).

With ``VertexTrainingConfig.vertex_training`` set, ``pipeline_runner.py compile`` gives
every RecommenderTrainer TFX's Google Cloud AI Platform executor (the one behind
``tfx.extensions.google_cloud_ai_platform.Trainer``), wrapped around this project's own
Trainer executor (``vertex_executor.VertexExecutor``): the pipeline's Trainer task then
starts a Vertex AI CustomJob (``custom_config["ai_platform_training_args"]``, a CustomJob spec:
one worker pool of ``machine_type`` with ``accelerator_count`` x ``accelerator_type``,
running the pipeline's image) and waits for it. Inside the job ``run_fn`` trains under
MirroredStrategy over the job's GPUs (components/trainer/distribute.py).

TensorFlow-free (the command line builds these settings). Nothing here has run on
Vertex AI: these machines have no Google Cloud access; the compiled spec is what is
tested.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional


def _setting(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


# Keys of TFX's AI Platform Trainer (tfx.extensions.google_cloud_ai_platform: trainer
# executor TRAINING_ARGS_KEY, constants ENABLE_VERTEX_KEY / VERTEX_REGION_KEY), spelt
# here so that building the settings needs no TFX import; a test checks they agree.
TRAINING_ARGS_KEY = "ai_platform_training_args"
ENABLE_VERTEX_KEY = "ai_platform_enable_vertex"
VERTEX_REGION_KEY = "ai_platform_vertex_region"


@dataclasses.dataclass(frozen=True)
class VertexTrainingConfig:
    """Where the Trainers of a pipeline compiled for Vertex AI train (``compile`` options).

    vertex_training: run each Trainer as a Vertex AI Training CustomJob instead of inside
      the pipeline's own task.
    vertex_project: the Google Cloud project of the jobs (required with vertex_training).
    vertex_region, vertex_machine_type, vertex_accelerator_type,
    vertex_accelerator_count: the job's region and its one worker's machine and
      accelerators (e.g. ``NVIDIA_TESLA_T4`` x 1; type "" and count 0: CPU only).
    image: the container image of the job (``compile --image``; set by the compiler).
    """

    vertex_training: bool = _setting(False, "send the Trainers to Vertex AI Training "
                                            "(compile --target vertex only)")
    vertex_project: str = _setting("", "Google Cloud project of the Vertex AI training jobs")
    vertex_region: str = _setting("us-central1", "region of the Vertex AI training jobs")
    vertex_machine_type: str = _setting("n1-standard-8", "machine type of a training job")
    vertex_accelerator_type: str = _setting(
        "", "accelerator of a training job, e.g. NVIDIA_TESLA_T4 (empty: none)")
    vertex_accelerator_count: int = _setting(0, "accelerators per training job")
    image: str = ""

    def __post_init__(self):
        if self.vertex_accelerator_count < 0:
            raise ValueError("vertex_accelerator_count must be non-negative")
        if bool(self.vertex_accelerator_type) != (self.vertex_accelerator_count > 0):
            raise ValueError("vertex_accelerator_type and vertex_accelerator_count go "
                             "together (a type and a positive count, or neither)")
        if self.vertex_training and not self.vertex_project:
            raise ValueError("vertex_training needs vertex_project")

    def custom_config(self) -> Optional[Dict[str, Any]]:
        """The Trainer's ``custom_config`` entries that send it to Vertex AI (None when
        ``vertex_training`` is off)."""
        if not self.vertex_training:
            return None
        machine: Dict[str, Any] = {"machine_type": self.vertex_machine_type}
        if self.vertex_accelerator_count:
            machine.update(accelerator_type=self.vertex_accelerator_type,
                           accelerator_count=self.vertex_accelerator_count)
        return {
            ENABLE_VERTEX_KEY: True,
            VERTEX_REGION_KEY: self.vertex_region,
            TRAINING_ARGS_KEY: {
                "project": self.vertex_project,
                "worker_pool_specs": [{
                    "machine_spec": machine, "replica_count": 1,
                    "container_spec": {"image_uri": self.image}}],
            },
        }
