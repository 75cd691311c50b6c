"""The whole local pipeline, run end to end on small synthetic data, and its CLI."""

import json
import os

import pytest

import pipeline_runner
from data import synthetic


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic-100k")
    synthetic.generate(out, users=120, movies=150, ratings=6000, fmt="100k", seed=3)
    return str(out)


@pytest.fixture(scope="module")
def two_runs(served_pipeline):
    """The pipeline run from the command line (conftest.py), then again in this process
    with the same settings on the same data: the second run must come from the cache."""
    config = served_pipeline.config
    second = pipeline_runner.run(config)
    return config, served_pipeline.first, second


def _by_node(executions):
    return {execution["node"]: execution for execution in executions}


def test_every_component_ran_and_trained_models_have_metrics(two_runs):
    config, first, _ = two_runs
    nodes = _by_node(first)
    expected = {"MovieLensExampleGen", "SequenceStatisticsGen", "SequenceSchemaGen",
                "RatingStatisticsGen", "RatingSchemaGen", "RetrievalTrainer",
                "RankingTrainer", "SequentialTrainer"}
    expected |= {f"{model}{node}" for model in ("Retrieval", "Ranking", "Sequential")
                 for node in ("BaselineResolver", "Evaluator", "Pusher")}
    expected |= {f"{kind}{node}" for kind in ("Sequence", "Rating")
                 for node in ("CuratedSchemaGen", "ExampleValidator", "AnomaliesGate")}
    expected |= {"TwoStageBuilder",  # retrieval and ranking: the two-stage model
                 "BatchRecommender"}  # the served run's --batch-recommendations true
    assert set(nodes) == expected
    assert all(execution["state"] == "ran" for execution in first), first
    for trainer in ("RetrievalTrainer", "SequentialTrainer"):
        (model_uri,) = nodes[trainer]["outputs"]["model"]
        serving = os.path.join(model_uri, "Format-Serving")
        assert os.path.exists(os.path.join(serving, "saved_model.pb"))
        assert os.path.exists(os.path.join(serving, "assets.extra", "candidates.npz"))
        (run_uri,) = nodes[trainer]["outputs"]["model_run"]
        with open(os.path.join(run_uri, "metrics.json")) as handle:
            metrics = json.load(handle)
        assert 0.0 <= metrics["top_100"] <= 1.0
        assert metrics["top_100_excluding_rated"] >= metrics["top_10_excluding_rated"]
    (run_uri,) = nodes["RankingTrainer"]["outputs"]["model_run"]
    with open(os.path.join(run_uri, "metrics.json")) as handle:
        assert 0.0 < json.load(handle)["rmse"] < 4.0
    assert config.metadata_path.startswith(config.output_root)
    assert os.path.exists(config.metadata_path)


def test_good_data_passes_the_gates_and_every_trainer_runs(served_pipeline):
    """Data validation (test_validation.py) on good data: both gates pass, before every
    Trainer, and each Trainer runs once."""
    from test_validation import ALL_TRAINERS, GATES, trainer_executions

    config, executions = served_pipeline.config, served_pipeline.first
    nodes = {e["node"]: e["state"] for e in executions}
    assert all(nodes[node] == "ran" for node in GATES + ALL_TRAINERS), nodes
    order = [e["node"] for e in executions]
    assert max(order.index(g) for g in GATES) < min(order.index(t) for t in ALL_TRAINERS)
    ids = {execution["id"] for execution in executions}
    assert len([e for e in trainer_executions(config) if e.id in ids]) == len(ALL_TRAINERS)


def test_second_run_on_unchanged_data_is_served_from_the_cache(two_runs):
    _, first, second = two_runs
    assert {e["node"] for e in second} == {e["node"] for e in first}
    # Resolvers are never cached: each run resolves the baseline anew (the same one).
    assert all(execution["state"] == "cached" for execution in second
               if not execution["node"].endswith("BaselineResolver")), second
    assert _by_node(second)["RetrievalTrainer"]["outputs"] == \
        _by_node(first)["RetrievalTrainer"]["outputs"]


def test_run_prints_where_outputs_are(two_runs, capsys):
    config, _, second = two_runs
    from pipeline import report

    report.print_summary(config, second, 1.0)
    printed = capsys.readouterr().out
    assert config.pipeline_root in printed and config.metadata_path in printed
    assert "cached" in printed and "sequence examples train=" in printed
    assert "top_100=" in printed and "rmse=" in printed


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        pipeline_runner.main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--data-dir", "--dataset", "--cache-dir", "--output-root", "--no-cache",
                   "--beam-arg", "--min-rating", "--split-strategy", "--seed",
                   "--max-bad-fraction", "--models", "--epochs"):
        assert option in text


def test_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code = pipeline_runner.main(["run", "--data-dir", str(tmp_path / "absent")])
    assert code == 2
    assert "--data-dir" in capsys.readouterr().err


def test_unknown_model_is_refused_before_running(small_data, capsys):
    code = pipeline_runner.main(["run", "--data-dir", small_data, "--models", "retrieval,foo"])
    assert code == 2
    assert "unknown model kind 'foo'" in capsys.readouterr().err


def test_beam_components_skip_tfxs_sdist_only_on_the_direct_runner(monkeypatch):
    """On the DirectRunner TFX builds no sdist of itself for the Beam components (their
    workers share this environment); any other runner, or named dependencies, keep
    TFX's own handling."""
    from tfx.utils import dependency_utils

    from pipeline.pipeline import beam_pipeline_args

    local = beam_pipeline_args(["--direct_running_mode=in_memory"])
    assert local[0] == "--direct_running_mode=in_memory"
    assert local[1].startswith("--sdk_container_image=apache/beam_python3.")
    built = []
    monkeypatch.setattr(dependency_utils, "build_ephemeral_package",
                        lambda: built.append(1) or "tfx.tar.gz")
    assert dependency_utils.make_beam_dependency_flags(local) == local and not built
    for args in (["--runner=DataflowRunner", "--project=p"], ["--extra_package=x.tar.gz"],
                 ["--runner=DirectRunner", "--sdk_container_image=mine"]):
        assert beam_pipeline_args(args) == args
    remote = dependency_utils.make_beam_dependency_flags(["--runner=DataflowRunner"])
    assert remote[-1] == "--extra_package=tfx.tar.gz" and built
