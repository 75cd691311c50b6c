"""Periodic retraining, locally: ``run`` on grown data retrains, compares the new model
with the last blessed one of the same Trainer and pushes it only if it is blessed."""

import json
import os
import random
import shutil

import pytest
from ml_metadata.metadata_store import metadata_store
from tfx.orchestration import metadata

from components.pusher import publishing, serving

GROWN_RATINGS = 3000


def _grow(data_dir: str, grown_dir: str, seed: int = 11) -> int:
    """Copies the 100K-layout ``data_dir`` and appends GROWN_RATINGS new ratings of known
    users and movies, later than every existing one. Returns how many lines were added."""
    shutil.copytree(data_dir, grown_dir)
    with open(os.path.join(grown_dir, "u.data")) as handle:
        rows = [line.split("\t") for line in handle.read().splitlines() if line]
    users = sorted({int(r[0]) for r in rows})
    movies = sorted({int(r[1]) for r in rows})
    seen = {(int(r[0]), int(r[1])) for r in rows}
    latest = max(int(r[3]) for r in rows)
    rng = random.Random(seed)
    added = []
    while len(added) < GROWN_RATINGS:
        pair = (rng.choice(users), rng.choice(movies))
        if pair not in seen:
            seen.add(pair)
            latest += rng.randint(1, 600)
            added.append(f"{pair[0]}\t{pair[1]}\t{rng.choice([3, 4, 4, 5, 5])}\t{latest}\n")
    with open(os.path.join(grown_dir, "u.data"), "a") as handle:
        handle.writelines(added)
    return len(added)


@pytest.fixture(scope="module")
def retrained(served_pipeline, tmp_path_factory):
    """A copy of the served pipeline's outputs (metadata, serving root), then ``run`` of
    the retrieval model on the grown data into that copy: the served pipeline's own
    outputs, which other tests check, stay as they were."""
    import pipeline_runner

    runs = served_pipeline
    workdir = tmp_path_factory.mktemp("retrain")
    output_root = str(workdir / "outputs")
    shutil.copytree(runs.config.output_root, output_root)
    data_dir = runs.argv[runs.argv.index("--data-dir") + 1]
    _grow(data_dir, str(workdir / "grown"))
    argv = list(runs.argv)
    argv[argv.index("--data-dir") + 1] = str(workdir / "grown")
    argv[argv.index("--output-root") + 1] = output_root
    argv += ["--models", "retrieval"]
    config = pipeline_runner.config_from_args(pipeline_runner.build_parser().parse_args(argv))
    serving_before = publishing.versions(os.path.join(config.serving_root, "retrieval"))
    executions = {e["node"]: e for e in pipeline_runner.run(config)}
    return runs, config, executions, serving_before


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
