"""The run report's data: every run of the pipeline, read back from ML Metadata.

:func:`gather` walks the metadata store's pipeline runs (pipeline/report.py's
:func:`~pipeline.report.pipeline_runs`) and, for each run, reads what its artifacts hold:
each Trainer's ``metrics.json`` (eval figures and per-epoch ``history``), each
Evaluator's verdict (the blessing's ``blessed`` property, the failed thresholds) and
slices (TFMA's metrics), the baseline the verdict compared with (the blessing's
``baseline_model_id``), each Pusher's version (the pushed model's properties), and the
example generator's statistics.json and distributions.json. :func:`sample_recommendations`
asks the pushed models (pipeline/recommend.py) for a few fixed users.
:func:`write_report` puts it together into one HTML page (pipeline/report_html.py).

The data comes from the store and the artifacts it names, never from logs. Files are read
through TFX's ``fileio`` (artifact URIs may be on ``gs://``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, List, Optional

from tfx.components.evaluator import constants as evaluator_constants

from components import contract
from components.evaluator.slices import (SliceSpec, activity_bucket_names,
                                         popularity_bucket_names)
from components.pusher import executor as pusher_executor
from pipeline import report
from pipeline.configs import PipelineConfig

TRAINER, EVALUATOR, PUSHER = "Trainer", "Evaluator", "Pusher"
EXAMPLE_GEN = "MovieLensExampleGen"
SAMPLE_USERS = 3  # sample recommendations for the first few user ids
SAMPLE_K = 5


@dataclasses.dataclass
class ModelRun:
    """One model in one pipeline run."""

    name: str  # the model's name (its Trainer is <Name>Trainer)
    state: str  # the Trainer's: "ran", "cached", "FAILED"...
    model_id: Optional[int] = None  # the Model artifact's id in the store
    metrics: Dict = dataclasses.field(default_factory=dict)  # metrics.json
    blessed: Optional[bool] = None  # None: no verdict (no Evaluator ran)
    verdict: str = ""  # report.blessing_summary: BLESSED, or NOT blessed (which threshold)
    thresholds: List[str] = dataclasses.field(default_factory=list)  # the gates applied
    baseline_id: Optional[int] = None  # the Model it was compared with
    baseline_metrics: Optional[Dict] = None  # its metrics.json (its own run's eval data)
    # The Evaluator's figures by slice (TFMA): this model's, and the baseline's on the
    # same eval data (what the verdict compared), {feature: {bucket: {metric: value}}}.
    slices: Dict[str, Dict[str, Dict[str, float]]] = dataclasses.field(default_factory=dict)
    baseline_slices: Dict[str, Dict[str, Dict[str, float]]] = dataclasses.field(
        default_factory=dict)

    @property
    def gated_metric(self) -> Optional[str]:
        """The Evaluator's figure (besides the example count and diffs)."""
        overall = self.slices.get("", {}).get("all", {})
        return next((name for name in overall
                     if name != "example_count" and not name.endswith("_diff")), None)
    pushed_version: Optional[str] = None
    push: str = ""  # report.push_summary
    eval_sampled_users: Optional[int] = None  # the Evaluator's user sample (None: all)


@dataclasses.dataclass
class RunRecord:
    """One pipeline run: its models and its data."""

    index: int  # 1-based, oldest first
    name: str  # the pipeline_run context's name
    time: float  # Unix seconds
    models: Dict[str, ModelRun]
    data_state: str = ""  # the example generator's
    statistics: Optional[Dict] = None  # statistics.json
    distributions: Optional[Dict] = None  # distributions.json (None before it existed)
    failed: List[str] = dataclasses.field(default_factory=list)  # nodes that FAILED

    @property
    def outcome(self) -> str:
        """"complete", or which component failed (or is still running)."""
        return f"FAILED at {', '.join(self.failed)}" if self.failed else "complete"


@dataclasses.dataclass
class RunReport:
    """What the page shows: every run (the last is the one reported on) and samples."""

    pipeline_name: str
    runs: List[RunRecord]
    samples: Dict[str, List[Dict]] = dataclasses.field(default_factory=dict)
    sample_notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def current(self) -> RunRecord:
        return self.runs[-1]

    @property
    def previous(self) -> Optional[RunRecord]:
        """The latest earlier run with data statistics (what the data is compared with)."""
        earlier = [run for run in self.runs[:-1] if run.statistics is not None]
        return earlier[-1] if earlier else None


def model_name(node: str) -> Optional[str]:
    """"RetrievalTrainer" -> "retrieval" (pipeline/pipeline.py's node ids); else None."""
    for suffix in (TRAINER, EVALUATOR, PUSHER):
        if node.endswith(suffix) and len(node) > len(suffix):
            return node[:-len(suffix)].lower()
    return None


def _property(artifact, name: str):
    """A custom property's value (int or string), or None."""
    if name not in artifact.custom_properties:
        return None
    value = artifact.custom_properties[name]
    return value.string_value if value.HasField("string_value") else value.int_value


def model_metrics(model_uri: str) -> Optional[Dict]:
    """The metrics.json a Trainer exported beside its SavedModel."""
    from tfx.utils import path_utils  # pylint: disable=import-outside-toplevel

    return report.read_json(os.path.join(path_utils.serving_model_path(model_uri),
                                         contract.EXTRA_ASSETS, contract.METRICS_FILE))


def evaluation_slices(evaluation_uri: str,
                      model: str = "") -> Dict[str, Dict[str, Dict[str, float]]]:
    """TFMA's figures of one evaluated model by slice: {slice feature: {bucket: {metric:
    value}}}, the overall figures under ``{"": {"all": ...}}``. ``model``: its name in the
    EvalConfig ("candidate", "baseline" when there was a baseline; "" otherwise). Empty
    when unreadable."""
    try:
        import tensorflow_model_analysis as tfma  # pylint: disable=import-outside-toplevel

        result = tfma.load_eval_result(evaluation_uri, model_name=model or None)
    except Exception:  # pylint: disable=broad-except  (a report without slices)
        return {}
    slices: Dict[str, Dict[str, Dict[str, float]]] = {}
    for slice_key, by_output in result.slicing_metrics:
        figures = {}
        for by_sub_key in by_output.values():
            for values in by_sub_key.values():
                for name, value in values.items():
                    if isinstance(value, dict) and "doubleValue" in value:
                        figures[name] = float(value["doubleValue"])
        if not slice_key:
            slices.setdefault("", {})["all"] = figures
        elif len(slice_key) == 1:
            feature, bucket = slice_key[0]
            bucket = bucket.decode() if isinstance(bucket, bytes) else str(bucket)
            slices.setdefault(feature, {})[bucket] = figures
    return slices


def _eval_config(evaluation_uri: str) -> Dict:
    """The Evaluator's EvalConfig as TFMA wrote it beside its results (JSON form)."""
    config = report.read_json(os.path.join(evaluation_uri, "eval_config.json")) or {}
    return config.get("evalConfig", {})


def evaluated_models(evaluation_uri: str) -> Dict[str, str]:
    """{"candidate": its name in the results, "baseline": ...} ("baseline" only when the
    Evaluator compared with one)."""
    names = {}
    for spec in _eval_config(evaluation_uri).get("modelSpecs", []) or [{}]:
        names["baseline" if spec.get("isBaseline") else "candidate"] = spec.get("name", "")
    return names


def _bound(name: str, threshold: Dict) -> List[str]:
    """A TFMA threshold (eval_config.json's JSON form) as text."""
    texts = []
    value = threshold.get("valueThreshold", {})
    if "lowerBound" in value:
        texts.append(f"{name} >= {float(value['lowerBound']):g}")
    if "upperBound" in value:
        texts.append(f"{name} <= {float(value['upperBound']):g}")
    change = threshold.get("changeThreshold", {})
    if "absolute" in change:
        higher = change.get("direction") == "HIGHER_IS_BETTER"
        texts.append(f"{name} {'>=' if higher else '<='} baseline "
                     f"{float(change['absolute']):+g}")
    return texts


def gate_thresholds(evaluation_uri: str) -> List[str]:
    """The thresholds the Evaluator applied, from its eval_config.json: e.g.
    ``top_100_accuracy >= 0.1``, ``top_100_accuracy >= baseline -0.01``."""
    texts: List[str] = []
    for spec in _eval_config(evaluation_uri).get("metricsSpecs", []):
        for metric in spec.get("metrics", []):
            name = json.loads(metric.get("config") or "{}").get("name", metric.get("className"))
            thresholds = [t.get("threshold", {}) for t in metric.get("perSliceThresholds", [])]
            for threshold in thresholds + [metric.get("threshold", {})]:
                texts += _bound(name, threshold)
    return texts


def _ordered(slices: Dict[str, Dict], spec: SliceSpec) -> Dict[str, Dict]:
    """Buckets in the order of the pipeline's slice spec (TFMA's order is arbitrary)."""
    known = {contract.USER_ACTIVITY: activity_bucket_names(spec.user_activity_boundaries),
             contract.MOVIE_POPULARITY: popularity_bucket_names(spec.movie_popularity_quantiles)}
    ordered = {}
    for feature, buckets in slices.items():
        order = list(known.get(feature, ()))
        ordered[feature] = dict(sorted(buckets.items(), key=lambda item: (
            order.index(item[0]) if item[0] in order else len(order), item[0])))
    return ordered


def _read_model_node(models: Dict[str, ModelRun], execution: Dict, store,
                     spec: SliceSpec) -> None:
    """Fills ``models`` from one Trainer, Evaluator or Pusher execution."""
    name = model_name(execution["node"])
    if name is None:
        return
    artifacts = execution["artifacts"]
    node = execution["node"]
    if node.endswith(TRAINER):
        model = models.setdefault(name, ModelRun(name, execution["state"]))
        model.state = execution["state"]
        for artifact in artifacts.get("model", []):
            model.model_id = artifact.id
            model.metrics = model_metrics(artifact.uri) or {}
        return
    model = models.setdefault(name, ModelRun(name, "?"))
    if node.endswith(EVALUATOR):
        for blessing in artifacts.get("blessing", []):
            blessed = _property(blessing, evaluator_constants.ARTIFACT_PROPERTY_BLESSED_KEY)
            model.blessed = None if blessed is None else bool(blessed)
            model.verdict = report.blessing_summary(blessing.uri)
            model.eval_sampled_users = _property(blessing, contract.EVAL_SAMPLED_USERS)
            model.baseline_id = _property(
                blessing, evaluator_constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY) or None
            if model.baseline_id:
                [baseline] = store.get_artifacts_by_id([model.baseline_id])
                model.baseline_metrics = model_metrics(baseline.uri)
        for evaluation in artifacts.get("evaluation", []):
            names = evaluated_models(evaluation.uri)
            model.slices = _ordered(evaluation_slices(evaluation.uri, names["candidate"]),
                                    spec)
            if "baseline" in names:
                model.baseline_slices = _ordered(
                    evaluation_slices(evaluation.uri, names["baseline"]), spec)
            model.thresholds = gate_thresholds(evaluation.uri)
    elif node.endswith(PUSHER):
        for pushed in artifacts.get("pushed_model", []):
            if _property(pushed, pusher_executor.PUSHED_PROPERTY):
                model.pushed_version = _property(pushed,
                                                 pusher_executor.PUSHED_VERSION_PROPERTY)
            model.push = report.push_summary(pushed.uri)


def gather(config: PipelineConfig) -> RunReport:
    """Every run in ``config``'s metadata store, read back (see the module docstring)."""
    store = report.metadata_store_of(config)
    runs = []
    for index, run in enumerate(report.pipeline_runs(config, store), start=1):
        record = RunRecord(index, run["run"], run["time"], {})
        for execution in run["executions"]:
            _read_model_node(record.models, execution, store, config.evaluation.slices)
            if execution["state"] in ("FAILED", "running", "canceled"):
                record.failed.append(execution["node"])
            if execution["node"] == EXAMPLE_GEN:
                record.data_state = execution["state"]
                for uri in execution["outputs"].get(contract.STATISTICS, []):
                    record.statistics = report.read_json(
                        os.path.join(uri, contract.STATISTICS_FILE))
                    record.distributions = report.read_json(
                        os.path.join(uri, contract.DISTRIBUTIONS_FILE))
        runs.append(record)
    if not runs:
        raise ValueError(f"no pipeline run in {config.metadata_path}: run the pipeline first")
    return RunReport(config.pipeline_name, runs)


def sample_recommendations(serving_root: str, users: int = SAMPLE_USERS,
                           k: int = SAMPLE_K) -> tuple:
    """({model: [{"user", "query", "items": [(title, movie id), ...]}]}, notes): the
    latest pushed version of every model that retrieves, asked for the first ``users``
    user ids it knows (a user-based model by user id; the sequential model with the
    user's rated movies as the history), through pipeline/recommend.py."""
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel

    from pipeline import recommend  # pylint: disable=import-outside-toplevel

    samples: Dict[str, List[Dict]] = {}
    notes: List[str] = []
    loaded: Dict[str, object] = {}
    names = (sorted(name.rstrip("/") for name in fileio.listdir(serving_root))
             if fileio.isdir(serving_root) else [])
    for name in names:
        kind = contract.MODEL_KINDS.get(name)
        if kind is None or not kind.retrieves:
            continue  # a ScaNN variant's directory, or a ranking model (no top-k)
        try:
            path = recommend.model_dir(serving_root, name, recommend.BRUTE_FORCE)
            catalogue = recommend.Catalogue.load(path)
            ids = sorted(catalogue.users or
                         (catalogue.rated.user_ids.tolist() if catalogue.rated else []))
            rows = []
            for user in ids[:users]:
                if contract.USER_ID in kind.query_keys:
                    query, asked = f"user {user}", dict(user=user)
                else:
                    history = catalogue.recent_history(user)
                    query, asked = f"user {user}'s {len(history)} movies", dict(history=history)
                _, items, _ = recommend.recommend(
                    serving_root, k, model_name=name, variant=recommend.BRUTE_FORCE,
                    loaded=loaded, **asked)
                rows.append({"user": user, "query": query, "version": os.path.basename(path),
                             "items": [(item.title, item.movie_id) for item in items]})
            samples[name] = rows
        except Exception as error:  # pylint: disable=broad-except  (the page still shows)
            notes.append(f"{name}: no sample recommendations ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})")
    return samples, notes


def report_path(config: PipelineConfig, run: RunRecord) -> str:
    """``<output_root>/reports/run-<n>-<run name>.html``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", run.name).strip("-")
    return os.path.join(config.output_root, contract.REPORT_DIR,
                        f"run-{run.index:03d}-{safe}.html")


def write_report(config: PipelineConfig, samples: bool = True) -> str:
    """Builds the page of the latest run (history of every run) and returns its path."""
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel

    from pipeline import report_html  # pylint: disable=import-outside-toplevel

    gathered = gather(config)
    if samples:
        gathered.samples, gathered.sample_notes = sample_recommendations(config.serving_root)
    path = report_path(config, gathered.current)
    fileio.makedirs(os.path.dirname(path))
    with fileio.open(path, "w") as handle:
        handle.write(report_html.render(gathered))
    return path
