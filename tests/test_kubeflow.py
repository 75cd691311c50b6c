"""Compiling for Kubeflow Pipelines v2 / Vertex AI, and scheduling without credentials."""

import json

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
    expected = {node.id for node in pipeline_module.create_components(
        config, baseline_resolvers=False)}  # no custom resolver compiles for Kubeflow v2
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
