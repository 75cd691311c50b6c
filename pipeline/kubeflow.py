"""Kubeflow Pipelines v2 / Vertex AI: compile the DAG, and schedule periodic retraining.

``compile_pipeline`` writes the pipeline spec JSON (KubeflowV2DagRunner) that both
Kubeflow Pipelines v2 and Vertex AI Pipelines run. Every component runs in ``image``,
which must hold this repository and its locked dependencies (see ``Dockerfile``).
Beam-based components take ``config.beam_pipeline_args``, e.g. DataflowRunner options.
With ``config.vertex_training`` on, each Trainer task starts a Vertex AI Training job in
``image`` on the configured machine and accelerators (components/trainer/vertex.py).

The example generator's cache key: the backend runs
components/example_gen/vertex_driver.py before the cache check of MovieLensExampleGen
(the task's ``preCacheCheck`` hook, as TFX does for its FileBasedExampleGen), which
fingerprints the data directory, so a scheduled run retrains exactly when the data changed.

Each Evaluator's baseline: TFX compiles its latest-blessed-model resolver into a Vertex
ML Metadata query for the latest blessed ``tfx.ModelBlessing`` of the pipeline, of any
Evaluator. ``compile_pipeline`` narrows each query to the blessings of the same model,
``metadata.model_name.string_value = "<name>"``, the custom property the
RecommenderEvaluator writes (components/evaluator/component.py).

``schedule`` creates a Vertex AI pipeline schedule for a compiled spec when Google Cloud
credentials are available; otherwise it writes the request it would have sent and says so.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, Iterable, Optional

from pipeline import pipeline as pipeline_module
from pipeline.configs import PipelineConfig


def compile_pipeline(config: PipelineConfig, image: str, output_path: str) -> str:
    """Writes the KFP v2 pipeline spec of ``config``'s DAG to ``output_path``."""
    # pylint: disable=import-outside-toplevel
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
    from tfx.v1.orchestration.experimental import (KubeflowV2DagRunner,
                                                   KubeflowV2DagRunnerConfig)

    config = dataclasses.replace(config, vertex_training=dataclasses.replace(
        config.vertex_training, image=image))  # a Vertex training job runs the same image
    output_dir, output_filename = os.path.split(os.path.abspath(output_path))
    os.makedirs(output_dir, exist_ok=True)
    runner = KubeflowV2DagRunner(
        config=KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=output_dir, output_filename=output_filename)
    job = runner.run(pipeline_module.create_pipeline(config, local=False), write_out=False)
    restrict_baselines_to_their_model(job["pipelineSpec"], config.training.models)
    fingerprint_data_before_cache_check(job["pipelineSpec"], config.beam_pipeline_args)
    path = os.path.join(output_dir, output_filename)
    # TFX's own writer: JSON, or YAML for a .yaml / .yml output path.
    kubeflow_v2_dag_runner._write_pipeline_spec_to_file(  # pylint: disable=protected-access
        job, f"{config.pipeline_name}: compiled by pipeline_runner.py", path)
    return path


def fingerprint_data_before_cache_check(pipeline_spec: Dict[str, Any],
                                        beam_pipeline_args: Iterable[str] = ()) -> None:
    """Attaches the example generator's fingerprinting driver to its compiled task as
    the ``preCacheCheck`` hook (in place)."""
    from tfx.orchestration.kubeflow.v2 import (  # pylint: disable=import-outside-toplevel
        step_builder)

    from components.example_gen import vertex_driver  # pylint: disable=import-outside-toplevel

    label = step_builder._EXECUTOR_LABEL_PATTERN.format(  # pylint: disable=protected-access
        pipeline_module.EXAMPLE_GEN_ID)
    container = pipeline_spec["deploymentSpec"]["executors"][label]["container"]
    container["lifecycle"] = {"preCacheCheck": {
        "command": list(vertex_driver.COMMAND),
        "args": ["--json_serialized_invocation_args", "{{$}}", *beam_pipeline_args]}}


def restrict_baselines_to_their_model(pipeline_spec: Dict[str, Any],
                                      model_names: Iterable[str]) -> None:
    """Adds ``AND metadata.model_name.string_value="<name>"`` to the blessing query of
    each model's baseline resolver in the compiled ``pipeline_spec`` (in place)."""
    from tfx.orchestration.kubeflow.v2 import (  # pylint: disable=import-outside-toplevel
        step_builder)

    from components.evaluator import component as evaluator_component  # pylint: disable=import-outside-toplevel

    executors = pipeline_spec["deploymentSpec"]["executors"]
    for name in model_names:
        task = (pipeline_module.baseline_resolver_id(name)
                + step_builder._MODEL_BLESSING_RESOLVER_SUFFIX)  # pylint: disable=protected-access
        label = step_builder._EXECUTOR_LABEL_PATTERN.format(task)  # pylint: disable=protected-access
        try:
            (query,) = executors[label]["resolver"]["outputArtifactQueries"].values()
        except (KeyError, ValueError) as error:
            raise RuntimeError(
                f"the compiled pipeline has no single blessing query {label!r}: TFX's "
                "Kubeflow v2 compiler changed; the baselines cannot be restricted to "
                "their model") from error
        query["filter"] += (f' AND metadata.{evaluator_component.MODEL_NAME_PROPERTY}'
                            f'.string_value="{name}"')


def schedule_request(
    pipeline_json: str, cron: str, display_name: str, pipeline_root: str,
    project: Optional[str], region: str,
) -> Dict[str, Any]:
    """What ``aiplatform.PipelineJob(...).create_schedule(...)`` is called with."""
    return {
        "project": project, "location": region,
        "pipeline_job": {"display_name": display_name, "template_path": pipeline_json,
                         "pipeline_root": pipeline_root, "enable_caching": True},
        "schedule": {"cron": cron, "display_name": f"{display_name}-schedule",
                     "max_concurrent_run_count": 1},
    }


def _credentials():
    """Google Cloud credentials and project, or (None, None) when there are none."""
    try:
        import google.auth  # pylint: disable=import-outside-toplevel

        return google.auth.default()
    except Exception:  # pylint: disable=broad-except  (any failure means: no credentials)
        return None, None


def schedule(request: Dict[str, Any], request_path: str) -> str:
    """Creates the Vertex AI schedule, or writes ``request`` to ``request_path``.

    Returns a one-line description of what happened.
    """
    credentials, default_project = _credentials()
    if credentials is None:
        os.makedirs(os.path.dirname(os.path.abspath(request_path)), exist_ok=True)
        with open(request_path, "w") as handle:
            json.dump(request, handle, indent=2)
        return (f"no Google Cloud credentials found: nothing was scheduled; the schedule "
                f"request was written to {request_path}")
    from google.cloud import aiplatform  # pylint: disable=import-outside-toplevel

    project = request["project"] or default_project
    aiplatform.init(project=project, location=request["location"], credentials=credentials)
    job = aiplatform.PipelineJob(**request["pipeline_job"])
    created = job.create_schedule(**request["schedule"])
    return f"created Vertex AI schedule {created.resource_name} ({request['schedule']['cron']})"
