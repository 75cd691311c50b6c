"""Compiling for Kubeflow Pipelines v2 / Vertex AI, and scheduling without credentials."""

import json

import pytest
import yaml
from google.protobuf import json_format
from kfp import components as kfp_components
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline_runner
from pipeline import pipeline as pipeline_module


def test_compiled_spec_loads_with_kfp_and_names_every_component(tmp_path, capsys):
    output = tmp_path / "spec.json"
    code = pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "gcr.io/example/movielens:1",
        "--data-dir", "gs://example-bucket/ml-1m", "--output-root", "gs://example-bucket/root",
        "--output", str(output),
        "--beam-arg=--runner=DataflowRunner", "--beam-arg=--project=example"])
    assert code == 0
    assert str(output) in capsys.readouterr().out
    job = json.loads(output.read_text())

    # kfp's own loaders accept it: the pipeline spec proto and a kfp component.
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    component = kfp_components.load_component_from_text(yaml.safe_dump(job["pipelineSpec"]))
    assert component.name == "movielens-recommender"

    args = pipeline_runner.build_parser().parse_args(
        ["compile", "--target", "vertex", "--image", "x", "--data-dir", "gs://b/d"])
    config = pipeline_runner.config_from_args(args)
    expected = set()
    for node in pipeline_module.create_components(config, local=False):
        if node.id.endswith("BaselineResolver"):  # compiled as two queries
            expected |= {node.id + "-model-blessing-resolver", node.id + "-model-resolver"}
        else:
            expected.add(node.id)
    assert set(spec.root.dag.tasks) == expected
    text = output.read_text()
    assert "gcr.io/example/movielens:1" in text
    assert "DataflowRunner" in text  # Beam arguments reach the Beam components
    assert "gs://example-bucket/ml-1m" in text
    assert job["runtimeConfig"]["gcsOutputDirectory"].startswith("gs://example-bucket/root")


def test_schedule_without_credentials_writes_the_request(tmp_path, monkeypatch, capsys):
    # Never probe the GCE metadata server from a test: this machine has no network.
    monkeypatch.setattr("google.auth.compute_engine._metadata._NO_GCE_CHECK", True)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud default credentials either
    request_path = tmp_path / "request.json"
    code = pipeline_runner.main([
        "schedule", "--cron", "0 3 * * 1", "--pipeline-json", "spec.json",
        "--pipeline-root", "gs://example-bucket/root", "--request-out", str(request_path)])
    assert code == 0
    assert "no Google Cloud credentials" in capsys.readouterr().out
    request = json.loads(request_path.read_text())
    assert request["schedule"]["cron"] == "0 3 * * 1"
    assert request["pipeline_job"]["template_path"] == "spec.json"
    assert request["pipeline_job"]["pipeline_root"] == "gs://example-bucket/root"


def test_each_compiled_baseline_is_the_latest_blessed_model_of_the_same_model(tmp_path):
    """Vertex resolves a baseline with a metadata query: each Evaluator's must select
    only blessings its own model's Evaluator wrote."""
    output = tmp_path / "spec.json"
    assert pipeline_runner.main([
        "compile", "--target", "kubeflow", "--image", "x", "--data-dir", "gs://b/d",
        "--models", "multitask,ranking,sequential,attention", "--output", str(output)]) == 0
    spec = json.loads(output.read_text())["pipelineSpec"]
    executors, tasks = spec["deploymentSpec"]["executors"], spec["root"]["dag"]["tasks"]
    for name in ("multitask", "ranking", "sequential", "attention"):
        prefix = name.capitalize()
        evaluator = tasks[f"{prefix}Evaluator"]["inputs"]
        baseline = evaluator["artifacts"]["baseline_model"]["taskOutputArtifact"]
        assert baseline["producerTask"] == f"{prefix}BaselineResolver-model-resolver"
        assert (evaluator["parameters"]["model_name"]["runtimeValue"]["constantValue"]
                == {"stringValue": name})
        query = executors[f"{prefix}BaselineResolver-model-blessing-resolver_executor"]
        (blessings,) = query["resolver"]["outputArtifactQueries"].values()
        clauses = blessings["filter"].split(" AND ")
        assert 'schema_title="tfx.ModelBlessing"' in clauses
        assert "metadata.blessed.number_value=1" in clauses
        assert [c for c in clauses if c.startswith("metadata.model_name.")] == [
            f'metadata.model_name.string_value="{name}"']


def test_blessing_model_name_reaches_the_metadata_vertex_queries():
    """The Vertex entrypoint turns an executor's output artifacts into metadata with
    TFX's own translation: the blessing's model_name is a string field there."""
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
    from tfx.types import standard_artifacts

    from components.evaluator import component as evaluator_component

    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = "gs://b/r/RankingEvaluator/blessing"
    blessing.set_int_custom_property("blessed", 1)
    blessing.set_string_custom_property(evaluator_component.MODEL_NAME_PROPERTY, "ranking")
    translated = kubeflow_v2_entrypoint_utils.translate_executor_output(
        {"blessing": [blessing]}, {})
    metadata = json_format.MessageToDict(translated["blessing"].artifacts[0].metadata)
    assert metadata["model_name"] == "ranking" and metadata["blessed"] == 1


def test_example_gen_fingerprints_the_data_before_the_cache_check(tmp_path):
    """A compiled pipeline is scheduled for weeks while its data directory grows: the
    backend runs the fingerprinting driver before the example generator's cache check."""
    output = tmp_path / "spec.json"
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "x", "--data-dir", "gs://b/d",
        "--beam-arg=--runner=DataflowRunner", "--output", str(output)]) == 0
    spec = json.loads(output.read_text())["pipelineSpec"]
    container = spec["deploymentSpec"]["executors"]["MovieLensExampleGen_executor"]["container"]
    hook = container["lifecycle"]["preCacheCheck"]
    assert hook["command"] == ["python", "-m", "components.example_gen.vertex_driver"]
    assert hook["args"][:2] == ["--json_serialized_invocation_args", "{{$}}"]
    assert "--runner=DataflowRunner" in hook["args"]


def _executor_input(data_dir: str, output_file: str) -> str:
    """What the backend passes for ``{{$}}`` under pipeline spec 2.0, which TFX 1.16's
    compiler writes: parameters as ``Value``s."""
    return json.dumps({
        "inputs": {"parameters": {"data_dir": {"stringValue": data_dir},
                                  "seed": {"intValue": "42"}}},
        "outputs": {"outputFile": output_file}})


@pytest.mark.e2e
def test_driver_writes_the_datas_fingerprint_as_the_examplegens_parameter(tmp_path):
    """Run as the backend runs it (a fresh process, the spec's command), on a local
    directory; then in this process on a remote:// copy, as on a bucket."""
    import shutil
    import subprocess
    import sys

    import remote_fs
    from tfx.dsl.io import fileio

    from components.example_gen import vertex_driver
    from data import movielens, synthetic

    data = tmp_path / "data"
    synthetic.generate(str(data), users=30, movies=40, ratings=600, fmt="1m", seed=2)
    expected = movielens.fingerprint(movielens.detect_layout(str(data)))
    output_file = tmp_path / "task" / "executor_output.json"
    repo = str(pipeline_runner.__file__).rsplit("/", 1)[0]
    done = subprocess.run(
        [sys.executable, "-m", "components.example_gen.vertex_driver",
         "--json_serialized_invocation_args", _executor_input(str(data), str(output_file)),
         "--runner=DataflowRunner"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": repo})
    assert done.returncode == 0, done.stderr[-2000:]
    written = json.loads(output_file.read_text())
    assert written["parameterValues"] == {"input_fingerprint": expected}
    assert written["parameters"] == {"input_fingerprint": {"stringValue": expected}}

    remote = remote_fs.install(tmp_path / "bucket")
    shutil.copytree(data, remote_fs.local_path(remote + "b/ml-1m"))
    remote_output = remote + "root/task/executor_output.json"
    assert vertex_driver.run_driver(
        _executor_input(remote + "b/ml-1m", remote_output)) == expected
    with fileio.open(remote_output) as handle:
        assert json.load(handle)["parameterValues"] == {"input_fingerprint": expected}


def test_vertex_training_jobs_in_the_compiled_trainers(tmp_path):
    """``--vertex-training``: each Trainer task runs TFX's AI Platform Trainer executor
    around ours, with the Vertex CustomJob of the machine, accelerators and image asked
    for. (Nothing can run on Vertex AI here: the compiled spec is what is checked.)"""
    from tfx.extensions.google_cloud_ai_platform import constants
    from tfx.extensions.google_cloud_ai_platform.trainer import executor as cloud_executor

    from components.trainer import vertex

    assert vertex.TRAINING_ARGS_KEY == cloud_executor.TRAINING_ARGS_KEY
    assert vertex.ENABLE_VERTEX_KEY == constants.ENABLE_VERTEX_KEY
    assert vertex.VERTEX_REGION_KEY == constants.VERTEX_REGION_KEY
    output = tmp_path / "spec.json"
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "gcr.io/p/movielens:gpu",
        "--data-dir", "gs://b/d", "--models", "retrieval,ranking", "--output", str(output),
        "--vertex-training", "true", "--vertex-project", "p", "--vertex-region", "europe-west4",
        "--vertex-machine-type", "n1-standard-16", "--vertex-accelerator-type",
        "NVIDIA_TESLA_T4", "--vertex-accelerator-count", "2"]) == 0
    spec = json.loads(output.read_text())["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"]
    for name in ("Retrieval", "Ranking"):
        container = executors[f"{name}Trainer_executor"]["container"]
        assert "components.trainer.vertex_executor.VertexExecutor" in json.dumps(container)
        parameters = spec["root"]["dag"]["tasks"][f"{name}Trainer"]["inputs"]["parameters"]
        custom = json.loads(parameters["custom_config"]["runtimeValue"]["constantValue"]
                            ["stringValue"])
        assert custom[vertex.ENABLE_VERTEX_KEY] is True
        assert custom[vertex.VERTEX_REGION_KEY] == "europe-west4"
        job = custom[vertex.TRAINING_ARGS_KEY]
        assert job["project"] == "p"
        (pool,) = job["worker_pool_specs"]
        assert pool["machine_spec"] == {"machine_type": "n1-standard-16",
                                        "accelerator_type": "NVIDIA_TESLA_T4",
                                        "accelerator_count": 2}
        assert pool["container_spec"]["image_uri"] == "gcr.io/p/movielens:gpu"
        assert custom["hparams"]["model"] == name.lower()
    # Without the option the Trainers run in their own task; the option needs Vertex.
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "x", "--data-dir", "gs://b/d",
        "--models", "ranking", "--output", str(output)]) == 0
    assert "VertexExecutor" not in output.read_text()
    assert pipeline_runner.main([
        "compile", "--target", "kubeflow", "--image", "x", "--data-dir", "gs://b/d",
        "--vertex-training", "true", "--vertex-project", "p", "--output", str(output)]) == 2


def test_two_stage_and_batch_recommendations_compile(tmp_path, capsys):
    """The TwoStageBuilder follows both Pushers, the BatchRecommender (a Beam component:
    the Dataflow arguments reach it) reads the two-stage model; batch recommendations
    without a ranking model are one error line."""
    from pipeline import pipeline as pipeline_module

    output = tmp_path / "spec.json"
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "x", "--data-dir", "gs://b/d",
        "--models", "retrieval,ranking", "--batch-recommendations", "true",
        "--batch-users", "1,2,3", "--output", str(output),
        "--beam-arg=--runner=DataflowRunner"]) == 0
    spec = json.loads(output.read_text())["pipelineSpec"]
    tasks = spec["root"]["dag"]["tasks"]
    builder = tasks[pipeline_module.TWO_STAGE_PUSHER_ID]
    assert set(builder["dependentTasks"]) == {"RetrievalPusher", "RankingPusher"}
    batch = tasks[pipeline_module.BATCH_RECOMMENDER_ID]
    assert batch["dependentTasks"] == [pipeline_module.TWO_STAGE_PUSHER_ID]
    executor = json.dumps(spec["deploymentSpec"]["executors"][
        pipeline_module.BATCH_RECOMMENDER_ID + "_executor"])
    assert "DataflowRunner" in executor
    capsys.readouterr()
    assert pipeline_runner.main([
        "compile", "--target", "vertex", "--image", "x", "--data-dir", "gs://b/d",
        "--models", "retrieval,sequential", "--batch-recommendations", "true",
        "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --batch-recommendations")
