"""What a local run did, read back from the ML Metadata store.

After ``pipeline_runner.py run`` this prints, per component, whether it ran or came from
the cache and where its outputs are, plus the example generator's statistics.
:func:`pipeline_runs` gives every run in the store the same way (the run report,
pipeline/run_report.py, reads it). The
artifacts are read through TFX's ``fileio``: their URIs may be on ``gs://``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.io import fileio
from tfx.orchestration import metadata

from components import contract
from components.batch_recommend import executor as batch_executor
from components.batch_recommend import job as batch_job
from components.example_gen import generate
from components.pusher.executor import PUSH_FILE
from pipeline.configs import PipelineConfig

_STATES = {
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.FAILED: "FAILED",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


def metadata_store_of(config: PipelineConfig) -> metadata_store.MetadataStore:
    """The pipeline's ML Metadata store (SQLite)."""
    return metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))


def _executions(store: metadata_store.MetadataStore, run: metadata_store_pb2.Context,
                prefix: str) -> List[Dict]:
    """The executions of one pipeline run (see :func:`pipeline_runs`)."""
    executions = sorted(store.get_executions_by_context(run.id), key=lambda e: e.id)
    result = []
    for execution in executions:
        nodes = [c.name for c in store.get_contexts_by_execution(execution.id)
                 if c.name.startswith(prefix)]
        outputs: Dict[str, List[str]] = {}
        artifacts_by_key: Dict[str, List[metadata_store_pb2.Artifact]] = {}
        events = [e for e in store.get_events_by_execution_ids([execution.id])
                  if e.type in (metadata_store_pb2.Event.OUTPUT,
                                metadata_store_pb2.Event.DECLARED_OUTPUT)]
        artifacts = {a.id: a for a in store.get_artifacts_by_id(
            [e.artifact_id for e in events])}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else "output"
            outputs.setdefault(key, []).append(artifacts[event.artifact_id].uri)
            artifacts_by_key.setdefault(key, []).append(artifacts[event.artifact_id])
        result.append({
            "node": nodes[0][len(prefix):] if nodes else execution.name,
            "state": _STATES.get(execution.last_known_state, str(execution.last_known_state)),
            "outputs": outputs,
            "artifacts": artifacts_by_key,  # the MLMD Artifacts behind ``outputs``
            "id": execution.id,  # the execution's id in the store
        })
    return result


def pipeline_runs(config: PipelineConfig,
                  store: Optional[metadata_store.MetadataStore] = None) -> List[Dict]:
    """Every run of the pipeline in the metadata store, oldest first: ``{"run": the run
    context's name, "time": its creation (Unix seconds), "executions": [...]}``, the
    executions as :func:`latest_run` gives them."""
    store = store or metadata_store_of(config)
    prefix = config.pipeline_name + "."
    contexts = sorted(store.get_contexts_by_type("pipeline_run"),
                      key=lambda context: (context.create_time_since_epoch, context.id))
    return [{"run": context.name, "time": context.create_time_since_epoch / 1000.0,
             "executions": _executions(store, context, prefix)} for context in contexts]


def latest_run(config: PipelineConfig) -> List[Dict]:
    """Executions of the newest pipeline run: node id, state, output URIs by key (and the
    output artifacts by key), the execution's id in the store."""
    store = metadata_store_of(config)
    runs = list(store.get_contexts_by_type("pipeline_run"))
    if not runs:
        return []
    run = max(runs, key=lambda context: context.create_time_since_epoch)
    return _executions(store, run, config.pipeline_name + ".")


def outputs_with(executions: List[Dict], key: str) -> Dict[str, List[str]]:
    """Output URIs by key of the first of ``executions`` (``latest_run``'s) that has an
    output ``key`` (e.g. the example generator's, by ``contract.VOCABULARY``); {} if
    none."""
    for execution in executions:
        if key in execution["outputs"]:
            return execution["outputs"]
    return {}


def latest_outputs(config: PipelineConfig, key: str) -> Dict[str, List[str]]:
    """:func:`outputs_with` of the newest run; {} also when the output root has no
    metadata store (none is created)."""
    if not os.path.isfile(config.metadata_path):
        return {}
    return outputs_with(latest_run(config), key)


# The figures a model summary shows, in this order, when the metrics have them.
SUMMARY_METRICS = ("top_10", "top_100", "top_10_excluding_rated", "top_100_excluding_rated",
                    "rmse", "mean_rating_rmse")


def read_json(path: str) -> Optional[Dict]:
    """The JSON file at ``path`` on any file system, or None if there is none."""
    if not fileio.exists(path):
        return None
    with fileio.open(path) as handle:
        return json.load(handle)


def model_summary(metrics: Dict) -> str:
    """One line of a Trainer's eval metrics (metrics.json)."""
    shown = [f"{name}={metrics[name]:.4f}" for name in SUMMARY_METRICS if name in metrics]
    if metrics.get(contract.EVAL_SAMPLED_USERS):
        shown.append(f"on {metrics[contract.EVAL_SAMPLED_USERS]:,} sampled users")
    return " ".join(shown) + f" ({metrics.get('train_seconds', '?')} s training)"


def blessing_summary(blessing_uri: str) -> str:
    """An Evaluator's verdict, with the failed thresholds when it did not bless."""
    if fileio.exists(os.path.join(blessing_uri, "BLESSED")):
        return "BLESSED"
    if not fileio.exists(os.path.join(blessing_uri, "NOT_BLESSED")):
        return "blessing: none (no thresholds)"
    reasons = []
    evaluation_uri = os.path.join(os.path.dirname(os.path.dirname(blessing_uri)),
                                  "evaluation", os.path.basename(blessing_uri))
    try:
        import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel

        result = tfma.load_validation_result(evaluation_uri)
        for failure in result.metric_validations_per_slice:
            for metric in failure.failures:
                value = metric.metric_value.double_value.value
                reasons.append(f"{metric.metric_key.name} "
                               + (f"{value:+.4f} vs baseline" if metric.metric_key.is_diff
                                  else f"{value:.4f}"))
    except Exception:  # pylint: disable=broad-except  (the verdict stands without details)
        pass
    return "NOT blessed" + (f" ({'; '.join(reasons)})" if reasons else "")


def push_summary(pushed_model_uri: str) -> str:
    """A Pusher's outcome (its push.json)."""
    push = read_json(os.path.join(pushed_model_uri, PUSH_FILE))
    if push is None:
        return "push: unknown"
    if not push.get("pushed"):
        return f"not pushed: {push.get('reason', '?')}"
    where = ", ".join(f"{variant}: {path}" for variant, path
                      in sorted(push.get("destinations", {}).items()))
    again = " (already pushed)" if push.get("already_pushed") else ""
    return f"pushed version {push['version']}{again} -> {where}"


def _details(execution: Dict) -> List[str]:
    """What a component's outputs say: eval metrics, verdict, push, data figures."""
    outputs, details = execution["outputs"], []
    for uri in outputs.get("model_run", []):
        metrics = read_json(os.path.join(uri, contract.METRICS_FILE))
        if metrics is not None:
            details.append(f"eval: {model_summary(metrics)}")
    details += [blessing_summary(uri) for uri in outputs.get("blessing", [])]
    details += [push_summary(uri) for uri in outputs.get("pushed_model", [])]
    for uri in outputs.get(contract.STATISTICS, []):
        statistics = read_json(os.path.join(uri, contract.STATISTICS_FILE))
        if statistics is not None:
            details.append(generate.summary_line(statistics))
    for uri in outputs.get(batch_executor.RECOMMENDATIONS, []):
        stats = read_json(os.path.join(uri, contract.BATCH_STATS_FILE))
        if stats is not None:
            details.append(batch_job.summary_line(stats))
    return details


def print_summary(config: PipelineConfig, executions: List[Dict], seconds: float,
                  stream=None, outputs: bool = True) -> None:
    """Where everything is, what ran and what came from the cache, and the data figures.

    outputs: every component and its output URIs; otherwise (the console of a quiet run,
      whose component lines said what ran) only the components with figures to show.
    """
    stream = stream or sys.stdout
    print(f"\nPipeline '{config.pipeline_name}' finished in {seconds:.0f} s", file=stream)
    print(f"  artifacts: {config.pipeline_root}", file=stream)
    print(f"  metadata:  {config.metadata_path}", file=stream)
    for execution in executions:
        details = _details(execution)
        if not outputs:
            if details:
                print(f"  {execution['node']:<24} {execution['state']:<6} {details[0]}",
                      file=stream)
                for detail in details[1:]:
                    print(f"  {'':<31} {detail}", file=stream)
            continue
        print(f"  {execution['node']:<24} {execution['state']}", file=stream)
        for key, uris in sorted(execution["outputs"].items()):
            for uri in uris:
                print(f"      {key}: {uri}", file=stream)
        for detail in details:
            print(f"      {detail}", file=stream)
