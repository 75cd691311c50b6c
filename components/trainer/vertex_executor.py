"""The Trainer executor of a pipeline compiled with ``--vertex-training``.

TFX's Google Cloud AI Platform Trainer executor around this project's own
(``component.Executor``): the Trainer task starts a Vertex AI Training CustomJob (its
spec: components/trainer/vertex.py) that runs ``component.Executor``, and waits for it.

A module of its own because importing TFX's Google Cloud extension takes seconds:
``RecommenderTrainer`` imports it only when a ``vertex_config`` is given.
"""

from tfx.extensions.google_cloud_ai_platform.trainer import executor as cloud_executor

from components.trainer import component


class VertexExecutor(cloud_executor.GenericExecutor):
    """TFX's AI Platform Trainer executor whose job runs :class:`component.Executor`."""

    def _GetExecutorClass(self):
        return component.Executor
