"""Runs a compiled Kubeflow Pipelines v2 spec's container tasks locally, as the backend
(Vertex AI Pipelines) would run them.

Nobody can run the compiled pipeline on Vertex AI from a development machine (no Google
Cloud, no container engine), and LocalDagRunner calls the executors in-process with
Python-typed parameters, so it misses what only happens in a deployed task: parameters
arriving as KFP ``Value`` protos, artifacts rebuilt from their type schema and metadata,
the ``preCacheCheck`` hook's output merged into the executor's parameters, output
metadata translated for the next task. This module plays the backend's part for one
pipeline run:

* walks the DAG in topological order (``dependentTasks`` and artifact producers), at most
  ``parallel`` tasks at a time;
* for each container task builds the ``ExecutorInput`` of pipeline spec 2.0 (what TFX
  1.16's compiler writes): ``inputs.parameters`` from the task's constant parameters,
  ``inputs.artifacts`` from the producers' executor output files (uri, metadata) with the
  producer's artifact type, ``outputs.artifacts`` with fresh URIs under the pipeline root
  and a resource name each (the Evaluator's blessing refers to its models by those), and
  ``outputs.outputFile``; the output directories exist, as on an object store;
* runs the container's ``lifecycle.preCacheCheck`` command, then its command, each with
  ``{{$}}`` replaced by that ExecutorInput's JSON, in a subprocess whose environment is
  the Dockerfile's (``PYTHONPATH`` = the repository, ``TF_USE_LEGACY_KERAS=1``) and whose
  working directory is the repository (the image's WORKDIR): a fresh interpreter, or,
  given a ``fork_server`` (tests/task_fork_server.py), a fork of one that imported the
  heavy third-party libraries already;
* reads each task's executor output file for its output artifacts, and records them (type,
  resource name, uri, metadata, creation order) in a :class:`MetadataStore`, as Vertex
  ML Metadata does in the pipeline's context;
* answers each resolver task (``resolver.outputArtifactQueries``: TFX's compiled
  latest-blessed-model resolver) by evaluating its filter against that store: the latest
  (most recently created) match, or nothing. A placeholder
  ``{{$.inputs.artifacts['<key>'].metadata['<field>']}}`` in a filter is filled from the
  artifact the task's input ``<key>`` is wired to (the blessing the model query follows).

Several runs of one compiled spec share a store (pass the first run's ``store`` to the
next), so a second run's resolvers find what the first run's tasks produced: each
Evaluator's baseline, on Vertex, comes only from those queries. Every recorded artifact
is taken to be LIVE. The cache is not emulated: every container task of every run runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set

import yaml

EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
_ARTIFACT_NAME = "projects/emulator/locations/local/metadataStores/default/artifacts/{}"
# {{$.inputs.artifacts['input'].metadata['current_model_id']}} in a resolver's filter
_INPUT_METADATA_PLACEHOLDER = re.compile(
    r"\{\{\$\.inputs\.artifacts\['([^']+)'\]\.metadata\['([^']+)'\]\}\}")


def task_environment(repo: str) -> Dict[str, str]:
    """A task's environment: the Dockerfile's ENV over this process's environment."""
    return {**os.environ, "PYTHONPATH": repo, "TF_USE_LEGACY_KERAS": "1"}


def schema_title(artifact_type: Dict[str, Any]) -> str:
    """The title of a compiled ``ArtifactTypeSchema`` (given directly or in its YAML)."""
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    return yaml.safe_load(artifact_type["instanceSchema"])["title"]


def matches(query_filter: str, artifact: Dict[str, Any]) -> bool:
    """Whether ``artifact`` (name, type, uri, metadata) meets a compiled Vertex ML Metadata
    filter: clauses ``schema_title="<title>"``, ``name="<resource name>"``,
    ``state=LIVE`` (every artifact of the emulated store is live) and
    ``metadata.<key>.<number|string>_value=<value>``, joined by `` AND ``. Any other clause
    raises ValueError: answering a query the emulator does not understand would show
    nothing."""
    for clause in query_filter.split(" AND "):
        title = re.fullmatch(r'schema_title="(.+)"', clause)
        name = re.fullmatch(r'name="(.+)"', clause)
        field = re.fullmatch(r"metadata\.(\w+)\.(number|string)_value=(.+)", clause)
        if title:
            if schema_title(artifact["type"]) != title.group(1):
                return False
        elif name:
            if artifact["name"] != name.group(1):
                return False
        elif field:
            key, kind, expected = field.groups()
            value = artifact["metadata"].get(key)
            if (value != float(expected) if kind == "number"
                    else value != json.loads(expected)):
                return False
        elif clause != "state=LIVE":
            raise ValueError(f"a filter clause the emulator does not evaluate: {clause!r}")
    return True


class MetadataStore:
    """The artifacts the emulated runs of one pipeline produced, in creation order, as
    Vertex ML Metadata keeps them for the pipeline's context. Also hands out the ids of
    resource names and task directories, unique across runs."""

    def __init__(self):
        self.artifacts: List[Dict[str, Any]] = []  # {name, type, uri, metadata}
        self.runs = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def record(self, artifact: Dict[str, Any]) -> None:
        """Keeps ``artifact`` (a task's output, as the backend records it)."""
        with self._lock:
            self.artifacts.append(artifact)

    def latest(self, query_filter: str) -> Optional[Dict[str, Any]]:
        """The most recently created artifact that ``query_filter`` matches, or None.
        (Resource names are minted in creation order, as a task starts.)"""
        with self._lock:
            found = [a for a in self.artifacts if matches(query_filter, a)]
        return max(found, key=_creation_order, default=None)


def _creation_order(artifact: Dict[str, Any]) -> int:
    return int(artifact["name"].rsplit("/", 1)[1])


@dataclasses.dataclass
class TaskRun:
    """What the emulated backend did for one task."""

    name: str
    kind: str  # "container" or "resolver"
    # Output artifacts by key, as the backend records them (name, type, uri, metadata);
    # a resolver's: what its query found (an empty list: nothing).
    artifacts: Dict[str, List[Dict[str, Any]]] = dataclasses.field(default_factory=dict)
    executor_input: Dict[str, Any] = dataclasses.field(default_factory=dict)
    hook_returncode: Optional[int] = None  # the preCacheCheck command's, if any
    hook_output: Optional[Dict[str, Any]] = None  # the output file after the hook
    returncode: Optional[int] = None
    output: Dict[str, Any] = dataclasses.field(default_factory=dict)  # ExecutorOutput
    log_path: str = ""
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.kind == "resolver" or (self.returncode == 0
                                           and self.hook_returncode in (None, 0))

    def log(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def output_artifact(self, key: str) -> Dict[str, Any]:
        """The single output artifact ``key`` as the backend records it."""
        (artifact,) = self.artifacts[key]
        return artifact


class PipelineEmulator:
    """One run of the compiled ``job`` (the JSON KubeflowV2DagRunner writes); ``store``
    holds the artifacts of the pipeline's earlier runs (None: this is its first run)."""

    def __init__(self, job: Dict[str, Any], pipeline_root: str, repo: str,
                 parallel: int = 2, timeout: float = 600,
                 store: Optional[MetadataStore] = None, fork_server=None):
        spec = job["pipelineSpec"]
        if not spec.get("schemaVersion", "2.0.0").startswith("2.0"):
            raise ValueError(f"only pipeline spec 2.0 is emulated, not "
                             f"{spec['schemaVersion']}")
        self.tasks: Dict[str, Dict[str, Any]] = spec["root"]["dag"]["tasks"]
        self.components: Dict[str, Dict[str, Any]] = spec["components"]
        self.executors: Dict[str, Dict[str, Any]] = spec["deploymentSpec"]["executors"]
        self.pipeline_root = pipeline_root
        self.repo = repo
        self.parallel = parallel
        self.timeout = timeout
        # A task_fork_server.ForkServer started with environment(): ``python -m`` tasks
        # run in its forks instead of fresh interpreters (same argv, env, cwd, log).
        self.fork_server = fork_server
        self.runs: Dict[str, TaskRun] = {}
        self.store = store or MetadataStore()
        self.store.runs += 1
        # As on Vertex: <pipeline root>/<job>/<task>_<task id>/<output key>
        self.job_root = os.path.join(
            pipeline_root, f"{spec['pipelineInfo']['name']}-run-{self.store.runs}")

    def environment(self) -> Dict[str, str]:
        return task_environment(self.repo)

    def dependencies(self, task: str) -> Set[str]:
        spec = self.tasks[task]
        producers = {artifact["taskOutputArtifact"]["producerTask"]
                     for artifact in spec.get("inputs", {}).get("artifacts", {}).values()
                     if "taskOutputArtifact" in artifact}
        return set(spec.get("dependentTasks", [])) | producers

    def topological_order(self) -> List[str]:
        order: List[str] = []
        done: Set[str] = set()
        while len(order) < len(self.tasks):
            ready = sorted(t for t in self.tasks
                           if t not in done and self.dependencies(t) <= done)
            if not ready:
                raise ValueError(f"cycle among {sorted(set(self.tasks) - done)}")
            order += ready
            done |= set(ready)
        return order

    def executor_spec(self, task: str) -> Dict[str, Any]:
        component = self.components[self.tasks[task]["componentRef"]["name"]]
        return self.executors[component["executorLabel"]]

    def run(self) -> Dict[str, TaskRun]:
        """Runs every task once its dependencies succeeded; stops scheduling at the first
        failure (as the backend does). Returns the runs by task name."""
        pending = self.topological_order()
        running: Dict[concurrent.futures.Future, str] = {}
        failed = False
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            while pending or running:
                done = {name for name, run in self.runs.items() if run.succeeded}
                ready = [] if failed else [
                    t for t in pending if self.dependencies(t) <= done]
                for task in ready[:self.parallel - len(running)]:
                    pending.remove(task)
                    running[pool.submit(self._run_task, task)] = task
                if not running:
                    break  # a failure: what is pending never runs
                finished, _ = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    run = future.result()
                    del running[future]
                    self.runs[run.name] = run
                    failed |= not run.succeeded
        return self.runs

    def _run_task(self, task: str) -> TaskRun:
        executor = self.executor_spec(task)
        if "resolver" in executor:
            return self._resolve(task, executor["resolver"])
        if "container" not in executor:
            raise ValueError(f"{task}: executor kind {sorted(executor)} is not emulated")
        task_root = os.path.join(self.job_root, f"{task}_{self.store.next_id()}")
        os.makedirs(task_root)
        run = TaskRun(task, "container", executor_input=self.executor_input(task, task_root),
                      log_path=os.path.join(task_root, "log.txt"))
        container = executor["container"]
        started = time.time()
        with open(run.log_path, "w") as log:
            hook = container.get("lifecycle", {}).get("preCacheCheck")
            if hook:
                run.hook_returncode = self._call(hook["command"], hook.get("args", []),
                                                 run.executor_input, log)
                run.hook_output = _read_json(run.executor_input["outputs"]["outputFile"])
            if run.hook_returncode in (None, 0):
                run.returncode = self._call(container["command"], container.get("args", []),
                                            run.executor_input, log)
        run.seconds = time.time() - started
        run.output = _read_json(run.executor_input["outputs"]["outputFile"]) or {}
        for key, produced in run.output.get("artifacts", {}).items():
            (artifact,) = run.executor_input["outputs"]["artifacts"][key]["artifacts"]
            (written,) = produced["artifacts"]
            artifact["uri"] = written.get("uri", artifact["uri"])
            artifact["metadata"] = written.get("metadata", {})
        run.artifacts = {key: value["artifacts"] for key, value
                         in run.executor_input["outputs"]["artifacts"].items()}
        if run.succeeded:
            for artifacts in run.artifacts.values():
                for artifact in artifacts:
                    self.store.record(artifact)
        return run

    def _resolve(self, task: str, resolver: Dict[str, Any]) -> TaskRun:
        """Answers each of the resolver's queries with the latest matching artifact of
        the store; a placeholder naming an input that has no artifact, or a metadata
        field it lacks, matches nothing."""
        run = TaskRun(task, "resolver")
        inputs = self.input_artifacts(task)

        def fill(placeholder: re.Match) -> str:
            key, field = placeholder.groups()
            (artifact,) = inputs.get(key) or [{"metadata": {}}]
            value = artifact["metadata"].get(field)
            if value is None:
                raise LookupError(placeholder.group(0))
            return value if isinstance(value, str) else json.dumps(value)

        for key, query in resolver["outputArtifactQueries"].items():
            try:
                query_filter = _INPUT_METADATA_PLACEHOLDER.sub(fill, query["filter"])
            except LookupError:
                run.artifacts[key] = []
                continue
            if "{{$" in query_filter:
                raise ValueError(f"{task}: placeholders the emulator does not fill: "
                                 f"{query_filter}")
            found = self.store.latest(query_filter)
            run.artifacts[key] = [found] if found else []
        return run

    def _call(self, command: List[str], args: List[str], executor_input: Dict[str, Any],
              log) -> int:
        serialized = json.dumps(executor_input)
        argv = [sys.executable if part == "python" else part for part in command]
        argv += [arg.replace(EXECUTOR_INPUT_PLACEHOLDER, serialized) for arg in args]
        unresolved = [arg for arg in argv if "{{$" in arg]
        if unresolved:
            raise ValueError(f"placeholders the emulator does not fill: {unresolved}")
        log.write(f"$ {' '.join(command)} ...\n")
        log.flush()
        if self.fork_server is not None and argv[:2] == [sys.executable, "-m"]:
            return self.fork_server.run(argv[1:], self.environment(), self.repo, log.name,
                                        self.timeout)
        return subprocess.run(argv, cwd=self.repo, env=self.environment(), stdout=log,
                              stderr=subprocess.STDOUT, timeout=self.timeout).returncode

    def input_artifacts(self, task: str) -> Dict[str, List[Dict[str, Any]]]:
        """Each artifact input of ``task``: what its producer's output holds (a resolver
        that found nothing: an empty list)."""
        inputs = {}
        for key, value in self.tasks[task].get("inputs", {}).get("artifacts", {}).items():
            source = value["taskOutputArtifact"]
            producer = self.runs[source["producerTask"]]
            inputs[key] = producer.artifacts.get(source["outputArtifactKey"], [])
        return inputs

    def executor_input(self, task: str, task_root: str) -> Dict[str, Any]:
        """The ExecutorInput (pipeline spec 2.0) the backend hands ``task``."""
        spec = self.tasks[task]
        component = self.components[spec["componentRef"]["name"]]
        parameters = {}
        for key, value in spec.get("inputs", {}).get("parameters", {}).items():
            if "constantValue" not in value.get("runtimeValue", {}):
                raise ValueError(f"{task}.{key}: only constant parameters are emulated: "
                                 f"{value}")
            parameters[key] = value["runtimeValue"]["constantValue"]
        artifacts = {key: {"artifacts": found}
                     for key, found in self.input_artifacts(task).items() if found}
        outputs = {}
        for key, definition in component.get("outputDefinitions", {}).get(
                "artifacts", {}).items():
            outputs[key] = {"artifacts": [{
                "name": _ARTIFACT_NAME.format(self.store.next_id()),
                "type": definition["artifactType"],
                "uri": os.path.join(task_root, key),
                "metadata": {},
            }]}
            # On the object stores pipeline roots live on (gs://), a "directory" exists
            # as soon as a file is written under it; locally it must exist first.
            os.makedirs(os.path.join(task_root, key))
        return {"inputs": {"parameters": parameters, "artifacts": artifacts},
                "outputs": {"artifacts": outputs,
                            "outputFile": os.path.join(task_root, "executor_output.json")}}


def _read_json(path: str) -> Optional[Dict[str, Any]]:
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)
