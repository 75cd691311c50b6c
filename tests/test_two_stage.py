"""The two-stage served model (components/two_stage) and ``recommend --two-stage``, on
the served pipeline's pushed models: its TwoStageBuilder combined the pushed retrieval
and ranking models."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pipeline_runner
from components import contract
from components.pusher import publishing, serving
from components.two_stage import build
from pipeline import pipeline as pipeline_module
from pipeline import recommend

USERS = (1, 7, 42)
K = 10

# Runs in a fresh interpreter: loads the exact two-stage model with stock TensorFlow,
# then checks that nothing imported ScaNN.
_FRESH_PROCESS = """
import json, sys
import components
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
out = {}
for user in json.loads(sys.argv[2]):
    result = model.signatures["serving_default"](
        user_id=tf.constant([user], tf.int64), k=tf.constant(int(sys.argv[3]), tf.int32))
    out[user] = {name: value.numpy()[0].tolist() if value.dtype != tf.string
                 else [t.decode() for t in value.numpy()[0]] for name, value in result.items()}
out["scann_imported"] = any(name == "scann" or name.startswith("scann.")
                            for name in sys.modules)
print(json.dumps(out))
"""


def _latest(runs, name, variant=contract.BRUTE_FORCE):
    return recommend.model_dir(runs.config.serving_root, name, variant)


def _expected(runs, user, k, num_candidates):
    """The ranking model's order over the retrieval model's top N once the user's rated
    movies are left out, computed here from the two pushed models."""
    import tensorflow as tf

    retrieval_dir = _latest(runs, contract.RETRIEVAL)
    retrieval = tf.saved_model.load(retrieval_dir)
    ranking = tf.saved_model.load(_latest(runs, contract.RANKING))
    rated = serving.RatedMovies.of_model(retrieval_dir)
    info = serving.read_serving_info(retrieval_dir)
    inputs = serving.query_inputs(info["inputs"], users=[user], rated=rated)
    query = retrieval.query_model.signatures[contract.SERVING_SIGNATURE](
        **{name: tf.constant(value) for name, value in inputs.items()})
    scores = tf.matmul(query[contract.QUERY_EMBEDDING], retrieval.embeddings,
                       transpose_b=True).numpy()
    movie_ids = retrieval.movie_ids.numpy()
    scores[0, np.isin(movie_ids, rated.movies(user))] = -np.inf
    top_scores, rows = (t.numpy()[0] for t in tf.math.top_k(scores, num_candidates))
    candidates = movie_ids[rows][np.isfinite(top_scores)]
    scores = top_scores[np.isfinite(top_scores)]
    rank_inputs = serving.query_input_spec(ranking)
    feeds = {contract.USER_ID: np.full(len(candidates), user, np.int64),
             contract.MOVIE_ID: candidates.astype(np.int64)}
    if contract.TIMESTAMP in rank_inputs:
        feeds[contract.TIMESTAMP] = np.full(len(candidates), rated.last_timestamp(user))
    ratings = ranking.signatures[contract.SERVING_SIGNATURE](
        **{name: tf.constant(feeds[name]) for name in rank_inputs})[contract.RATING_OUTPUT]
    ratings = ratings.numpy().reshape(-1)
    order = np.argsort(-ratings, kind="stable")[:k]
    return candidates[order].tolist(), ratings[order], scores[order], set(candidates)


@pytest.mark.e2e
def test_built_after_both_pushers_with_their_versions(served_pipeline):
    runs = served_pipeline
    node = runs.node(pipeline_module.TWO_STAGE_PUSHER_ID)
    assert node["state"] == "ran"
    (uri,) = node["outputs"]["pushed_model"]
    with open(os.path.join(uri, "push.json")) as handle:
        push = json.load(handle)
    assert push["pushed"]
    info = serving.read_serving_info(push["destinations"][contract.BRUTE_FORCE])
    stages = info[contract.STAGES]
    for name in (contract.RETRIEVAL, contract.RANKING):
        latest = _latest(runs, name)
        assert stages[name]["version"] == int(os.path.basename(latest))
        assert stages[name]["dir"] == latest
    assert info[contract.NUM_CANDIDATES] == runs.config.serving.two_stage_candidates
    for variant in build.VARIANTS:
        assert os.path.isfile(os.path.join(push["destinations"][variant],
                                           contract.SAVED_MODEL_FILE))


@pytest.mark.e2e
def test_loads_without_scann_and_reranks_the_retrieval_top_n(served_pipeline):
    runs = served_pipeline
    path = _latest(runs, contract.TWO_STAGE)
    num_candidates = serving.read_serving_info(path)[contract.NUM_CANDIDATES]
    done = subprocess.run([sys.executable, "-c", _FRESH_PROCESS, path, json.dumps(USERS),
                           str(K)], capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads(done.stdout.strip().splitlines()[-1])
    assert served.pop("scann_imported") is False
    for user in USERS:
        ids, ratings, retrieval_scores, candidates = _expected(runs, user, K, num_candidates)
        got = served[str(user)]
        assert got[contract.MOVIE_IDS_OUTPUT] == ids
        np.testing.assert_allclose(got[contract.RANKING_SCORES_OUTPUT], ratings, rtol=1e-5)
        np.testing.assert_allclose(got[contract.RETRIEVAL_SCORES_OUTPUT], retrieval_scores,
                                   rtol=1e-5)
        rated = set(recommend.Catalogue.load(path).rated_by(user))
        assert not set(ids) & rated and set(ids) <= candidates
        titles = recommend.Catalogue.load(path).titles
        assert got[contract.TITLES_OUTPUT] == [titles[m] for m in ids]


@pytest.mark.e2e
def test_scann_variant_agrees_with_the_exact_one(served_pipeline):
    import importlib

    import tensorflow as tf

    importlib.import_module("scann")  # the ScaNN variant's ops

    runs = served_pipeline
    outputs = []
    for variant in build.VARIANTS:
        model = tf.saved_model.load(_latest(runs, contract.TWO_STAGE, variant))
        outputs.append(model.signatures[contract.RECOMMEND_SIGNATURE](
            user_id=tf.constant(USERS, tf.int64), k=tf.constant(K, tf.int32)))
    exact, approximate = (o[contract.MOVIE_IDS_OUTPUT].numpy() for o in outputs)
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(exact, approximate)])
    assert overlap >= 0.9  # 400 movies: the index re-scores every candidate exactly


@pytest.mark.e2e
def test_rebuilt_only_when_a_stage_changes(served_pipeline, tmp_path):
    runs = served_pipeline
    root = str(tmp_path / "serving")
    shutil.copytree(runs.config.serving_root, root)
    before = publishing.versions(os.path.join(root, contract.TWO_STAGE))
    config = runs.config.serving
    again = build.build(root, num_candidates=config.two_stage_candidates,
                        max_k=config.max_k, variants=(contract.BRUTE_FORCE,))
    assert again["already_pushed"] and again["version"] == before[-1]
    assert publishing.versions(os.path.join(root, contract.TWO_STAGE)) == before
    ranking = publishing.latest_version_dir(os.path.join(root, contract.RANKING))
    newer = int(os.path.basename(ranking)) + 1
    shutil.copytree(ranking, os.path.join(root, contract.RANKING, str(newer)))
    rebuilt = build.build(root, num_candidates=config.two_stage_candidates,
                          max_k=config.max_k, variants=(contract.BRUTE_FORCE,))
    assert not rebuilt.get("already_pushed") and rebuilt["version"] > before[-1]
    info = serving.read_serving_info(rebuilt["destinations"][contract.BRUTE_FORCE])
    assert info[contract.STAGES][contract.RANKING]["version"] == newer


def test_nothing_to_build_without_a_pushed_ranking_model(tmp_path):
    result = build.build(str(tmp_path))
    assert not result["pushed"] and "ranking" in result["reason"]


def _cli(runs, capsys, *args):
    code = pipeline_runner.main(["recommend", "--output-root", runs.config.output_root,
                                 *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.e2e
@pytest.mark.parametrize("variant", build.VARIANTS)
def test_recommend_two_stage_prints_both_scores(served_pipeline, capsys, variant):
    code, out, _ = _cli(served_pipeline, capsys, "--user", "42", "-k", "5", "--two-stage",
                        "--variant", variant)
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if "title" in line)
    assert "ranking" in header and "retrieval" in header
    rows = [line.split() for line in lines if line.split() and line.split()[0].isdigit()]
    assert len(rows) == 5
    ranking = [float(row[1]) for row in rows]
    assert ranking == sorted(ranking, reverse=True)  # the ranking score orders
    path, items, _ = recommend.recommend(served_pipeline.config.serving_root, 5, user=42,
                                         variant=variant, two_stage=True)
    assert [int(row[-1]) for row in rows] == [item.movie_id for item in items]
    assert [float(row[2]) for row in rows] == pytest.approx(
        [item.retrieval_score for item in items], abs=1e-4)
    assert os.path.basename(os.path.dirname(path)) == contract.TWO_STAGE + (
        "_scann" if variant == contract.SCANN else "")


@pytest.mark.e2e
def test_recommend_two_stage_refuses_a_history(served_pipeline, capsys):
    code, out, err = _cli(served_pipeline, capsys, "--history", "1,2", "--two-stage")
    assert code == 2 and out == ""
    assert err.startswith("error: --two-stage") and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_recommend_two_stage_include_rated_keeps_rated_candidates(served_pipeline):
    """--include-rated: recommend_excluding with nothing to leave out, so the user's
    rated movies may come back; without it they never do."""
    root = served_pipeline.config.serving_root
    rated = set(recommend.Catalogue.load(_latest(served_pipeline, contract.TWO_STAGE))
                .rated_by(42))
    loaded = {}
    _, kept, _ = recommend.recommend(root, 100, user=42, variant=contract.BRUTE_FORCE,
                                     two_stage=True, include_rated=True, loaded=loaded)
    _, left_out, _ = recommend.recommend(root, 100, user=42, variant=contract.BRUTE_FORCE,
                                         two_stage=True, loaded=loaded)
    assert {item.movie_id for item in kept} & rated
    assert not {item.movie_id for item in left_out} & rated
