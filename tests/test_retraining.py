"""Periodic retraining, locally: ``run`` on grown data retrains, compares the new model
with the last blessed one of the same Trainer and pushes it only if it is blessed."""

import json
import os

from conftest import GROWN_RATINGS
from ml_metadata.metadata_store import metadata_store
from tfx.orchestration import metadata

from components.pusher import publishing

def _lines_read(example_gen_execution) -> int:
    from components.contract import STATISTICS_FILE

    (uri,) = example_gen_execution["outputs"]["statistics"]
    with open(os.path.join(uri, STATISTICS_FILE)) as handle:
        return json.load(handle)["lines_read"]


def test_grown_data_is_read_again_and_the_model_retrained(retrained):
    runs, _, executions, _ = retrained
    for node in ("MovieLensExampleGen", "RatingStatisticsGen", "RatingAnomaliesGate",
                 "RetrievalTrainer", "RetrievalEvaluator", "RetrievalPusher"):
        assert executions[node]["state"] == "ran", (node, executions[node]["state"])
    assert (_lines_read(executions["MovieLensExampleGen"])
            == _lines_read(runs.node("MovieLensExampleGen")) + GROWN_RATINGS)


def test_the_new_model_is_compared_with_the_last_blessed_retrieval_model(retrained):
    runs, config, executions, _ = retrained
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))
    [blessing] = store.get_artifacts_by_uri(executions["RetrievalEvaluator"]["outputs"]
                                            ["blessing"][0])
    [first_model] = store.get_artifacts_by_uri(runs.output("RetrievalTrainer", "model"))
    [new_model] = store.get_artifacts_by_uri(executions["RetrievalTrainer"]["outputs"]
                                             ["model"][0])
    assert blessing.custom_properties["current_model_id"].int_value == new_model.id
    assert blessing.custom_properties["baseline_model_id"].int_value == first_model.id


def test_pushed_only_if_blessed_as_a_newer_version(retrained):
    runs, config, executions, serving_before = retrained
    blessed = os.path.exists(os.path.join(
        executions["RetrievalEvaluator"]["outputs"]["blessing"][0], "BLESSED"))
    with open(os.path.join(executions["RetrievalPusher"]["outputs"]["pushed_model"][0],
                           "push.json")) as handle:
        push = json.load(handle)
    after = publishing.versions(os.path.join(config.serving_root, "retrieval"))
    assert serving_before and push["pushed"] is blessed
    if blessed:
        assert after == serving_before + [push["version"]]
        assert push["version"] > serving_before[-1]
        assert push["source"] == executions["RetrievalTrainer"]["outputs"]["model"][0]
    else:
        assert after == serving_before
