"""The compiled Vertex AI pipeline, each task run as the backend runs it.

test_kubeflow.py checks the compiled spec's shape; this runs it. Every container task's
command (TFX's ``kubeflow_v2_run_executor``, and the example generator's
``preCacheCheck`` driver) runs in its own process (a fork of an interpreter that has
imported TensorFlow and TFX once, tests/task_fork_server.py) with the ExecutorInput the backend
would build from the spec, and the artifacts each task's executor output file describes
feed the next (tests/kfp_emulator.py): parameters arrive as KFP ``Value`` protos,
artifacts are rebuilt from their type schema, the driver's fingerprint must reach the
example generator, the blessing must carry what the next run's baseline query selects,
and the Pusher must read a blessing that came that way.

The data changes between compiling and running, as the data of a scheduled pipeline
does: the fingerprint compiled in is stale, the driver's is current.

Then the same spec runs a second time in the same pipeline root, after the data grew
again, with the metadata store of the first run: the resolver tasks now evaluate their
compiled queries against it, and each Evaluator's baseline must be its own Trainer's
blessed model of the first run (the spec trains two models, so a query that selects by
type alone hands one of them the other's model). Grown data is what a scheduled run that
retrains sees (on Vertex an unchanged data set leaves the Trainers cached); the emulator
reruns every task either way. The ranking gate is loosened so that the first run blesses
both models, whatever one epoch on small data gives; whether the second run's models are
blessed again is up to their metrics, and the Pushers are checked in either case.
"""

import glob
import json
import os

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

import kfp_emulator
import pipeline_runner
import task_fork_server
from components.example_gen import vertex_driver
from data import movielens, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("retrieval", "ranking")
USERS, MOVIES, COMPILED_RATINGS, RUN_RATINGS, SECOND_RUN_RATINGS = (
    60, 80, 2_400, 2_500, 2_600)
MAX_RMSE = 100.0  # one epoch on small data: any RMSE must pass the first run's gate


def _fingerprint(data_dir: str) -> str:
    return movielens.fingerprint(movielens.detect_layout(data_dir))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The retrieval + ranking pipeline compiled on one data set, whose data is then
    replaced by a larger one: ``(job, data_dir, output_root, compiled fingerprint)``."""
    root = tmp_path_factory.mktemp("vertex")
    data_dir, output_root = str(root / "data"), str(root / "outputs")
    synthetic.generate(data_dir, USERS, MOVIES, COMPILED_RATINGS, "100k", seed=11)
    compiled_fingerprint = _fingerprint(data_dir)
    spec_path = str(root / "spec.json")
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "x", "--data-dir", data_dir,
        "--output-root", output_root, "--models", ",".join(MODELS), "--epochs", "1",
        "--max-rmse", str(MAX_RMSE), "--output", spec_path, "--beam-arg=--direct_running_mode=in_memory"]) == 0
    synthetic.generate(data_dir, USERS, MOVIES, RUN_RATINGS, "100k", seed=11)
    with open(spec_path) as handle:
        return json.load(handle), data_dir, output_root, compiled_fingerprint


def _served_versions(serving_root: str, served_as: str):
    """The loadable versions under ``<serving_root>/<served_as>/``, ascending."""
    return sorted(int(os.path.basename(os.path.dirname(path))) for path in
                  glob.glob(os.path.join(serving_root, served_as, "*", "saved_model.pb")))


@pytest.fixture(scope="module")
def fork_server():
    """The tasks' interpreter, TensorFlow and TFX imported once (tests/task_fork_server.py)."""
    server = task_fork_server.ForkServer(kfp_emulator.task_environment(REPO), REPO)
    yield server
    server.stop()


def _run(compiled, fork_server, store=None):
    """Every task of the compiled spec run as Vertex would, on the pipeline's metadata
    ``store`` (None: a first run); what was served right after it is kept."""
    job, data_dir, output_root, compiled_fingerprint = compiled
    emulator = kfp_emulator.PipelineEmulator(
        job, job["runtimeConfig"]["gcsOutputDirectory"], REPO, store=store,
        fork_server=fork_server)
    emulator.run()
    emulator.compiled_fingerprint = compiled_fingerprint
    emulator.current_fingerprint = _fingerprint(data_dir)
    emulator.serving_root = os.path.join(output_root, "serving")
    emulator.served = {served_as: _served_versions(emulator.serving_root, served_as)
                       for model in MODELS for served_as in (model, f"{model}_scann")}
    return emulator


@pytest.fixture(scope="module")
def vertex_run(compiled, fork_server):
    """The pipeline's first run: no baseline yet."""
    return _run(compiled, fork_server)


@pytest.fixture(scope="module")
def second_run(compiled, vertex_run, fork_server):
    """The same spec run again, in the same pipeline root and on the first run's
    metadata store, after the data grew."""
    data_dir = compiled[1]
    synthetic.generate(data_dir, USERS, MOVIES, SECOND_RUN_RATINGS, "100k", seed=11)
    return _run(compiled, fork_server, store=vertex_run.store)


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


def _assert_every_task_succeeded(emulator) -> None:
    assert set(emulator.runs) == set(emulator.tasks), _failures(emulator)
    assert all(run.succeeded for run in emulator.runs.values()), _failures(emulator)


def test_every_container_task_exits_0_under_the_entry_point(vertex_run):
    _assert_every_task_succeeded(vertex_run)
    kinds = {name: run.kind for name, run in vertex_run.runs.items()}
    assert sorted(name for name, kind in kinds.items() if kind == "resolver") == sorted(
        f"{model.capitalize()}BaselineResolver-{suffix}" for model in MODELS
        for suffix in ("model-blessing-resolver", "model-resolver"))
    commands = {vertex_run.executor_spec(name)["container"]["command"][-1]
                for name, kind in kinds.items() if kind == "container"}
    assert commands == {"tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"}
    # A first run: every query resolved nothing.
    assert all(found == [] for run in vertex_run.runs.values() if run.kind == "resolver"
               for found in run.artifacts.values())


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


@pytest.mark.parametrize("model_name", MODELS)
def test_trainer_writes_a_serving_model(vertex_run, model_name):
    model = vertex_run.runs[f"{model_name.capitalize()}Trainer"].output_artifact("model")
    assert os.path.isfile(os.path.join(model["uri"], "Format-Serving", "saved_model.pb"))


def _other(model_name: str) -> str:
    (other,) = set(MODELS) - {model_name}
    return other


def _blessing_query(emulator, model_name: str) -> str:
    resolver = emulator.executor_spec(
        f"{model_name.capitalize()}BaselineResolver-model-blessing-resolver")
    (query,) = resolver["resolver"]["outputArtifactQueries"].values()
    return query["filter"]


@pytest.mark.parametrize("model_name", MODELS)
def test_blessing_carries_what_the_next_runs_baseline_query_selects(vertex_run,
                                                                     model_name):
    evaluator = vertex_run.runs[f"{model_name.capitalize()}Evaluator"]
    assert "baseline_model" not in evaluator.executor_input["inputs"]["artifacts"]
    blessing = evaluator.output_artifact("blessing")
    assert blessing["metadata"]["blessed"] == 1
    assert blessing["metadata"]["model_name"] == model_name
    query_filter = _blessing_query(vertex_run, model_name)
    assert kfp_emulator.matches(query_filter, blessing), (query_filter, blessing)
    assert not kfp_emulator.matches(query_filter, {**blessing, "metadata": {
        **blessing["metadata"], "model_name": _other(model_name)}})


def _push(pusher_run):
    """(push.json, the pushed_model artifact) of a Pusher task."""
    pushed_model = pusher_run.output_artifact("pushed_model")
    with open(os.path.join(pushed_model["uri"], "push.json")) as handle:
        return json.load(handle), pushed_model


def _assert_pushed(push, pushed_model, serving_root, model_name) -> None:
    """``push`` wrote a new version of ``model_name`` in TF Serving layout."""
    assert push["pushed"] is True and not push.get("already_pushed"), push
    assert pushed_model["metadata"]["pushed"] == 1
    assert os.path.isfile(os.path.join(serving_root, model_name, str(push["version"]),
                                       "saved_model.pb"))
    if model_name == "retrieval":
        assert os.path.isfile(os.path.join(serving_root, f"{model_name}_scann",
                                           str(push["version"]), "saved_model.pb"))


@pytest.mark.parametrize("model_name", MODELS)
def test_pusher_publishes_the_blessed_model_in_tf_serving_layout(vertex_run, model_name):
    push, pushed_model = _push(vertex_run.runs[f"{model_name.capitalize()}Pusher"])
    _assert_pushed(push, pushed_model, vertex_run.serving_root, model_name)
    assert vertex_run.served[model_name] == [push["version"]]
    assert vertex_run.served[f"{model_name}_scann"] == (
        [push["version"]] if model_name == "retrieval" else [])


def test_second_run_every_task_exits_0(second_run):
    _assert_every_task_succeeded(second_run)
    assert second_run.current_fingerprint != second_run.compiled_fingerprint
    statistics = second_run.runs["MovieLensExampleGen"].output_artifact("statistics")
    with open(os.path.join(statistics["uri"], "statistics.json")) as handle:
        assert json.load(handle)["lines_read"] == SECOND_RUN_RATINGS


@pytest.mark.parametrize("model_name", MODELS)
def test_second_run_baseline_is_the_first_runs_model_of_the_same_trainer(
        vertex_run, second_run, model_name):
    """Both resolver queries, evaluated on the first run's artifacts, give this model's
    blessing and model of the first run, never the other Trainer's."""
    _assert_every_task_succeeded(second_run)
    prefix = model_name.capitalize()
    first_model = vertex_run.runs[f"{prefix}Trainer"].output_artifact("model")
    other_model = vertex_run.runs[f"{_other(model_name).capitalize()}Trainer"
                                  ].output_artifact("model")
    first_blessing = vertex_run.runs[f"{prefix}Evaluator"].output_artifact("blessing")
    resolved_blessing = second_run.runs[f"{prefix}BaselineResolver-model-blessing-resolver"
                                        ].output_artifact("model_blessing")
    assert resolved_blessing["name"] == first_blessing["name"]
    assert resolved_blessing["metadata"]["current_model_id"] == first_model["name"]
    baseline = second_run.runs[f"{prefix}BaselineResolver-model-resolver"
                               ].output_artifact("model")
    assert (baseline["name"], baseline["uri"]) == (first_model["name"], first_model["uri"])
    assert baseline["name"] != other_model["name"]

    evaluator = second_run.runs[f"{prefix}Evaluator"]
    given_baseline = evaluator.executor_input["inputs"]["artifacts"]["baseline_model"]
    (given,) = given_baseline["artifacts"]
    assert (given["name"], given["uri"]) == (first_model["name"], first_model["uri"])
    # The entry point turned the blessing's model ids into resource names.
    candidate = second_run.runs[f"{prefix}Trainer"].output_artifact("model")
    blessing = evaluator.output_artifact("blessing")
    assert blessing["metadata"]["model_name"] == model_name
    assert blessing["metadata"]["baseline_model_id"] == first_model["name"]
    assert blessing["metadata"]["current_model_id"] == candidate["name"]
    assert candidate["name"] != first_model["name"]


@pytest.mark.parametrize("model_name", MODELS)
def test_second_run_pushes_a_new_version_iff_blessed(vertex_run, second_run, model_name):
    _assert_every_task_succeeded(second_run)
    prefix = model_name.capitalize()
    blessed = second_run.runs[f"{prefix}Evaluator"].output_artifact(
        "blessing")["metadata"]["blessed"]
    assert blessed in (0, 1)
    push, pushed_model = _push(second_run.runs[f"{prefix}Pusher"])
    before = vertex_run.served[model_name]
    if blessed:
        _assert_pushed(push, pushed_model, second_run.serving_root, model_name)
        assert push["source"] == second_run.runs[f"{prefix}Trainer"].output_artifact(
            "model")["uri"]
        assert second_run.served[model_name] == before + [push["version"]]
        assert push["version"] > before[-1]
    else:
        assert push["pushed"] is False, push
        assert pushed_model["metadata"]["pushed"] == 0
        assert second_run.served[model_name] == before
    assert second_run.served[f"{model_name}_scann"] == (
        second_run.served[model_name] if model_name == "retrieval" else [])
