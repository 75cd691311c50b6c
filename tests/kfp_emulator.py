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
  working directory is the repository (the image's WORKDIR);
* reads each task's executor output file for its output artifacts.

Resolver tasks (metadata queries) are answered as on a pipeline's first run: nothing
resolved, so their consumers get no artifact for that input. The cache is not emulated:
every container task runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Set

EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
_ARTIFACT_NAME = "projects/emulator/locations/local/metadataStores/default/artifacts/{}"


@dataclasses.dataclass
class TaskRun:
    """What the emulated backend did for one task."""

    name: str
    kind: str  # "container" or "resolver"
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
        """The single output artifact ``key`` as the backend records it (uri, metadata)."""
        (artifact,) = self.executor_input["outputs"]["artifacts"][key]["artifacts"]
        return artifact


class PipelineEmulator:
    """One run of the compiled ``job`` (the JSON KubeflowV2DagRunner writes)."""

    def __init__(self, job: Dict[str, Any], pipeline_root: str, repo: str,
                 parallel: int = 2, timeout: float = 600):
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
        self.runs: Dict[str, TaskRun] = {}
        self._ids = itertools.count(1)

    def environment(self) -> Dict[str, str]:
        """The Dockerfile's ENV over this process's environment."""
        return {**os.environ, "PYTHONPATH": self.repo, "TF_USE_LEGACY_KERAS": "1"}

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
            return TaskRun(task, "resolver")  # a first run: no blessed model yet
        if "container" not in executor:
            raise ValueError(f"{task}: executor kind {sorted(executor)} is not emulated")
        task_root = os.path.join(self.pipeline_root, f"{task}_{next(self._ids)}")
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
        return subprocess.run(argv, cwd=self.repo, env=self.environment(), stdout=log,
                              stderr=subprocess.STDOUT, timeout=self.timeout).returncode

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
        artifacts = {}
        for key, value in spec.get("inputs", {}).get("artifacts", {}).items():
            source = value["taskOutputArtifact"]
            producer = self.runs[source["producerTask"]]
            if producer.kind == "resolver":
                continue  # resolved nothing
            artifacts[key] = {"artifacts": [
                producer.output_artifact(source["outputArtifactKey"])]}
        outputs = {}
        for key, definition in component.get("outputDefinitions", {}).get(
                "artifacts", {}).items():
            outputs[key] = {"artifacts": [{
                "name": _ARTIFACT_NAME.format(next(self._ids)),
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
