"""The compiled Vertex AI pipeline, each task run as the backend runs it.

test_kubeflow.py checks the compiled spec's shape; this runs it. Every container task's
command (TFX's ``kubeflow_v2_run_executor``, and the example generator's
``preCacheCheck`` driver) runs in its own process with the ExecutorInput the backend
would build from the spec, and the artifacts each task's executor output file describes
feed the next (tests/kfp_emulator.py): parameters arrive as KFP ``Value`` protos,
artifacts are rebuilt from their type schema, the driver's fingerprint must reach the
example generator, the blessing must carry what the next run's baseline query selects,
and the Pusher must read a blessing that came that way.

The data changes between compiling and running, as the data of a scheduled pipeline
does: the fingerprint compiled in is stale, the driver's is current.
"""

import glob
import json
import os
import re

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import kfp_emulator
import pipeline_runner
from components.example_gen import vertex_driver
from data import movielens, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "retrieval"
USERS, MOVIES, COMPILED_RATINGS, RUN_RATINGS = 60, 80, 2_400, 2_500


def _fingerprint(data_dir: str) -> str:
    return movielens.fingerprint(movielens.detect_layout(data_dir))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The retrieval pipeline compiled on one data set, whose data is then replaced by a
    larger one: ``(job, data_dir, output_root, compiled fingerprint)``."""
    root = tmp_path_factory.mktemp("vertex")
    data_dir, output_root = str(root / "data"), str(root / "outputs")
    synthetic.generate(data_dir, USERS, MOVIES, COMPILED_RATINGS, "100k", seed=11)
    compiled_fingerprint = _fingerprint(data_dir)
    spec_path = str(root / "spec.json")
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "x", "--data-dir", data_dir,
        "--output-root", output_root, "--models", MODEL, "--epochs", "1",
        "--output", spec_path, "--beam-arg=--direct_running_mode=in_memory"]) == 0
    synthetic.generate(data_dir, USERS, MOVIES, RUN_RATINGS, "100k", seed=11)
    with open(spec_path) as handle:
        return json.load(handle), data_dir, output_root, compiled_fingerprint


@pytest.fixture(scope="module")
def vertex_run(compiled):
    """Every task run as Vertex would (a first run: no baseline yet)."""
    job, data_dir, output_root, compiled_fingerprint = compiled
    emulator = kfp_emulator.PipelineEmulator(
        job, job["runtimeConfig"]["gcsOutputDirectory"], REPO)
    emulator.run()
    emulator.compiled_fingerprint = compiled_fingerprint
    emulator.current_fingerprint = _fingerprint(data_dir)
    emulator.serving_root = os.path.join(output_root, "serving")
    return emulator


def test_every_artifact_type_of_the_spec_imports_in_the_entry_point(compiled):
    """The entry point rebuilds each artifact from its type's schema title alone: a
    custom type's title must be the import path of its class."""
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
    from tfx.types import artifact
    from tfx.utils import import_utils

    job = compiled[0]
    types = {json.dumps(definition["artifactType"], sort_keys=True)
             for component in job["pipelineSpec"]["components"].values()
             for side in ("inputDefinitions", "outputDefinitions")
             for definition in component.get(side, {}).get("artifacts", {}).values()}
    titles = set()
    for serialized in types:
        schema = json_format.ParseDict(json.loads(serialized),
                                       pipeline_spec_pb2.ArtifactTypeSchema())
        path = kubeflow_v2_entrypoint_utils._retrieve_class_path(schema)  # pylint: disable=protected-access
        cls = import_utils.import_class_by_path(path)
        assert issubclass(cls, artifact.Artifact), path
        titles.add(cls.TYPE_NAME)
    assert {"components.MovieLensVocabulary", "components.ExampleGenStatistics"} <= titles


def _failures(emulator) -> str:
    return "\n\n".join(f"{run.name}: exit {run.hook_returncode}/{run.returncode}\n"
                       f"{run.log()[-3000:]}"
                       for run in emulator.runs.values() if not run.succeeded)


def test_every_container_task_exits_0_under_the_entry_point(vertex_run):
    assert set(vertex_run.runs) == set(vertex_run.tasks), _failures(vertex_run)
    assert all(run.succeeded for run in vertex_run.runs.values()), _failures(vertex_run)
    kinds = {name: run.kind for name, run in vertex_run.runs.items()}
    assert sorted(name for name, kind in kinds.items() if kind == "resolver") == [
        f"{MODEL.capitalize()}BaselineResolver-model-blessing-resolver",
        f"{MODEL.capitalize()}BaselineResolver-model-resolver"]
    commands = {vertex_run.executor_spec(name)["container"]["command"][-1]
                for name, kind in kinds.items() if kind == "container"}
    assert commands == {"tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"}


def test_example_generator_runs_on_the_fingerprint_its_driver_computed(vertex_run):
    assert vertex_run.compiled_fingerprint != vertex_run.current_fingerprint
    run = vertex_run.runs["MovieLensExampleGen"]
    compiled = run.executor_input["inputs"]["parameters"][vertex_driver.INPUT_FINGERPRINT]
    assert compiled == {"stringValue": vertex_run.compiled_fingerprint}
    assert run.hook_output["parameters"][vertex_driver.INPUT_FINGERPRINT] == {
        "stringValue": vertex_run.current_fingerprint}
    # The entry point merged the driver's output file into the executor's parameters.
    logged = f"'{vertex_driver.INPUT_FINGERPRINT}': '{{}}'"  # exec_properties' repr
    assert logged.format(vertex_run.current_fingerprint) in run.log(), run.log()[-3000:]
    assert logged.format(vertex_run.compiled_fingerprint) not in run.log()
    statistics_dir = run.output_artifact("statistics")["uri"]
    with open(os.path.join(statistics_dir, "statistics.json")) as handle:
        assert json.load(handle)["lines_read"] == RUN_RATINGS


def test_trainer_writes_a_serving_model(vertex_run):
    model = vertex_run.runs[f"{MODEL.capitalize()}Trainer"].output_artifact("model")
    assert os.path.isfile(os.path.join(model["uri"], "Format-Serving", "saved_model.pb"))


def _schema_title(artifact_type: dict) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    return yaml.safe_load(artifact_type["instanceSchema"])["title"]


def _matches(query_filter: str, artifact: dict) -> bool:
    """Whether ``artifact`` (uri, type, metadata) meets the ``schema_title`` and
    ``metadata.<key>.<kind>_value=<value>`` clauses of a compiled Vertex ML Metadata
    query; other clauses (pipeline context, state) are not ours to check."""
    for clause in query_filter.split(" AND "):
        title = re.fullmatch(r'schema_title="(.+)"', clause)
        if title and _schema_title(artifact["type"]) != title.group(1):
            return False
        field = re.fullmatch(r"metadata\.(\w+)\.(number|string)_value=(.+)", clause)
        if field:
            key, kind, expected = field.groups()
            value = artifact["metadata"].get(key)
            if (value != float(expected) if kind == "number"
                    else value != json.loads(expected)):
                return False
    return True


def test_blessing_carries_what_the_next_runs_baseline_query_selects(vertex_run):
    prefix = MODEL.capitalize()
    evaluator = vertex_run.runs[f"{prefix}Evaluator"]
    assert "baseline_model" not in evaluator.executor_input["inputs"]["artifacts"]
    blessing = evaluator.output_artifact("blessing")
    assert blessing["metadata"]["blessed"] == 1
    assert blessing["metadata"]["model_name"] == MODEL
    resolver = vertex_run.executor_spec(f"{prefix}BaselineResolver-model-blessing-resolver")
    (query,) = resolver["resolver"]["outputArtifactQueries"].values()
    assert _matches(query["filter"], blessing), (query["filter"], blessing)
    assert not _matches(query["filter"], {**blessing, "metadata": {
        **blessing["metadata"], "model_name": "ranking"}})


def test_pusher_publishes_the_blessed_model_in_tf_serving_layout(vertex_run):
    pusher = vertex_run.runs[f"{MODEL.capitalize()}Pusher"]
    pushed_model = pusher.output_artifact("pushed_model")
    with open(os.path.join(pushed_model["uri"], "push.json")) as handle:
        push = json.load(handle)
    assert push["pushed"] is True, push
    assert pushed_model["metadata"]["pushed"] == 1
    versions = glob.glob(os.path.join(vertex_run.serving_root, MODEL, "*", "saved_model.pb"))
    assert [os.path.basename(os.path.dirname(path)) for path in versions] == [
        str(push["version"])]
    assert os.path.isfile(os.path.join(vertex_run.serving_root, f"{MODEL}_scann",
                                       str(push["version"]), "saved_model.pb"))
