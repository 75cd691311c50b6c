"""Settings have one owner each: the command line and config files are built from the
components' own settings classes, and the sequence examples' padded length reaches the
Trainer, the Pusher and ``recommend`` from the example generator's output alone."""

import dataclasses
import glob
import json
import os

import pytest

import pipeline_runner
from components import contract
from conftest import SERVED_CONTEXT_LENGTH, SERVED_HPARAM_OPTION, SERVED_HPARAMS_FILE
from components.evaluator.gates import EvaluationConfig
from components.example_gen.config import ExampleGenConfig
from components.trainer.hparams import HParams, preset
from pipeline import options


def _settings(argv):
    args = pipeline_runner.build_parser().parse_args(["run", *argv])
    return pipeline_runner.settings_from_args(args)


def test_every_documented_setting_is_an_option():
    text = pipeline_runner.build_parser()._subparsers._group_actions[0].choices[
        "run"].format_help()
    for cls in (ExampleGenConfig, EvaluationConfig):
        for field in dataclasses.fields(cls):
            if field.metadata.get("help"):
                assert "--" + field.name.replace("_", "-") in text, field.name


def test_options_defaults_file_and_command_line_in_that_order(tmp_path):
    example_gen, training, evaluation, serving = _settings([])
    assert example_gen == ExampleGenConfig() and evaluation == EvaluationConfig()
    config = tmp_path / "settings.yaml"
    config.write_text(
        "example_gen: {max_context_length: 7, min_rating: none}\n"
        "evaluation: {max_rmse: 1.2, slices: {user_activity_boundaries: [10, 50]}}\n"
        "training: {models: [retrieval, sequential], epochs: 2,\n"
        "           hparams: {retrieval: {embedding_dim: 24, use_title: false}}}\n"
        "serving: {max_k: 50}\n")
    example_gen, training, evaluation, serving = _settings(
        ["--config", str(config), "--max-context-length", "5",
         "--hparam", "retrieval.embedding_dim=16", "--hparam", "sequential.epochs=4"])
    assert example_gen.max_context_length == 5 and example_gen.min_rating is None
    assert evaluation.max_rmse == 1.2
    assert evaluation.slices.user_activity_boundaries == (10, 50)
    assert training.models == ("retrieval", "sequential") and serving.max_k == 50
    retrieval = HParams.from_dict(training.model_hparams("retrieval"))
    assert retrieval.embedding_dim == 16 and retrieval.use_title is False
    assert retrieval.epochs == 2  # the file's epochs override every model's
    assert HParams.from_dict(training.model_hparams("sequential")).epochs == 2


@pytest.mark.parametrize("argv, message", [
    (["--hparam", "retrieval.embeding_dim=64"], "unknown hyperparameters ['embeding_dim']"),
    (["--hparam", "retrieval.embedding_dim=big"], "embedding_dim='big'"),
    (["--hparam", "embedding_dim=64"], "expected MODEL.NAME=VALUE"),
    (["--hparam", "foo.embedding_dim=64"], "unknown model kind 'foo'"),
    (["--models", "retrieval,foo"], "unknown model kind 'foo'"),
])
def test_bad_settings_are_one_clear_line_before_anything_runs(tmp_path, capsys, argv,
                                                              message):
    code = pipeline_runner.main(["run", "--data-dir", str(tmp_path / "absent"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "expected a mapping of sections"),
    ("{\"trainer\": {}}", "unknown sections ['trainer']"),
    ("{\"example_gen\": {\"max_context_length\": 0}}", "max_context_length"),
    ("{\"example_gen\": {\"max_contxt_length\": 3}}", "unknown example_gen settings"),
    ("{not json", "not valid JSON"),
])
def test_bad_config_files_are_refused(tmp_path, capsys, content, message):
    path = tmp_path / "settings.json"
    path.write_text(content)
    code = pipeline_runner.main(["run", "--data-dir", str(tmp_path), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_hparams_assignments_parse_and_merge():
    parsed = options.parse_hparams(["retrieval.embedding_dim=64", "ranking.epochs = 3"])
    assert parsed == {"retrieval": {"embedding_dim": "64"}, "ranking": {"epochs": "3"}}
    assert options.merge_hparams({"retrieval": {"epochs": 1, "embedding_dim": 8}}, parsed)[
        "retrieval"] == {"epochs": 1, "embedding_dim": "64"}


# ---------------------------------------------------------------------------------------
# End to end: a padded length other than 10, and hyperparameters from the command line.


@pytest.fixture(scope="module")
def short_context_run(served_pipeline):
    """The command-line run of conftest.py: ``--max-context-length 5``, the retrieval
    model's embedding_dim from a config file and the sequential model's from --hparam."""
    return served_pipeline.config, {e["node"]: e for e in served_pipeline.first}


def _metrics(executions, trainer):
    (uri,) = executions[trainer]["outputs"]["model_run"]
    with open(os.path.join(uri, contract.METRICS_FILE)) as handle:
        return json.load(handle)


@pytest.mark.e2e
def test_sequence_examples_padded_to_the_configured_length(short_context_run):
    import tensorflow as tf

    _, executions = short_context_run
    (uri,) = executions["MovieLensExampleGen"]["outputs"][contract.SEQUENCE_EXAMPLES]
    files = glob.glob(os.path.join(uri, "Split-train", "*.gz"))
    record = next(iter(tf.data.TFRecordDataset(files, compression_type="GZIP")))
    example = tf.train.Example.FromString(record.numpy())
    padded = example.features.feature[contract.CONTEXT_MOVIE_ID].int64_list.value
    assert len(padded) == SERVED_CONTEXT_LENGTH != 10  # not the default
    (vocabulary,) = executions["MovieLensExampleGen"]["outputs"][contract.VOCABULARY]
    with open(os.path.join(vocabulary, contract.SEQUENCE_SHAPE_FILE)) as handle:
        assert json.load(handle)[contract.MAX_CONTEXT_LENGTH] == SERVED_CONTEXT_LENGTH


@pytest.mark.e2e
def test_hyperparameters_from_command_line_and_file_reach_the_trained_models(
        short_context_run):
    _, executions = short_context_run
    model, name, value = SERVED_HPARAM_OPTION  # from --hparam
    option = _metrics(executions, f"{model.capitalize()}Trainer")
    assert option["hparams"][name] == value != getattr(preset(model), name)
    assert option["top_100"] >= 0
    from_file = SERVED_HPARAMS_FILE["training"]["hparams"]
    assert len(from_file) == 2  # retrieval's embedding_dim, sequential's eval_sample_users
    for model, values in from_file.items():
        trained = _metrics(executions, f"{model.capitalize()}Trainer")["hparams"]
        for name, value in values.items():
            assert trained[name] == value != getattr(preset(model), name)  # not the default


@pytest.mark.e2e
def test_served_sequential_model_reads_histories_of_the_configured_length(
        short_context_run, capsys):
    from components.pusher import serving
    from pipeline import recommend

    config, executions = short_context_run
    assert all(e["state"] in ("ran", "cached") for e in executions.values()), executions
    path = recommend.model_dir(config.serving_root, contract.SEQUENTIAL, recommend.BRUTE_FORCE)
    assert serving.read_serving_info(path)[contract.MAX_CONTEXT_LENGTH] == SERVED_CONTEXT_LENGTH
    catalogue = recommend.Catalogue.load(path)
    history = [int(m) for m in catalogue.movie_ids[:SERVED_CONTEXT_LENGTH + 3]]
    code = pipeline_runner.main(["recommend", "--output-root", config.output_root,
                                 "--history", ",".join(map(str, history)), "-k", "3"])
    printed = capsys.readouterr().out
    assert code == 0 and f"leaving out the {len(history)} movies of the history" in printed
    # The model reads the last SERVED_CONTEXT_LENGTH movies: the first three change nothing.
    _, with_all, _ = recommend.recommend(config.serving_root, 3, history=history,
                                         include_rated=True, variant=recommend.BRUTE_FORCE)
    _, last_five, _ = recommend.recommend(config.serving_root, 3, history=history[3:],
                                          include_rated=True, variant=recommend.BRUTE_FORCE)
    assert with_all == last_five
