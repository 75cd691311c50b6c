"""Batch recommendations (components/batch_recommend): the served pipeline's
BatchRecommender wrote every user's top-k from the pushed two-stage model."""

import glob
import json
import os

import pytest

from components import contract
from components.batch_recommend import job
from components.pusher import serving
from pipeline import console
from pipeline import pipeline as pipeline_module
from pipeline import recommend

from conftest import examples_to_dicts, read_tfrecords


def _output(runs):
    return runs.output(pipeline_module.BATCH_RECOMMENDER_ID, "recommendations")


def _by_user(rows):
    users = {}
    for row in sorted(rows, key=lambda r: (r[contract.USER_ID], r[contract.RANK])):
        users.setdefault(row[contract.USER_ID], []).append(row)
    return users


@pytest.mark.e2e
def test_every_known_user_gets_k_ranked_rows_in_both_formats(served_pipeline):
    runs = served_pipeline
    output = _output(runs)
    rows = job.read_rows(output)
    model_dir = recommend.model_dir(runs.config.serving_root, contract.TWO_STAGE,
                                    contract.BRUTE_FORCE)
    rated = serving.RatedMovies.of_model(model_dir)
    users = _by_user(rows)
    assert sorted(users) == sorted(int(u) for u in rated.user_ids)
    k = runs.config.batch.batch_k
    for user, user_rows in users.items():
        assert [r[contract.RANK] for r in user_rows] == list(range(1, k + 1))
        scores = [r[contract.RANKING_SCORE] for r in user_rows]
        assert scores == sorted(scores, reverse=True)
        assert not {r[contract.MOVIE_ID] for r in user_rows} & set(rated.movies(user).tolist())
    examples = examples_to_dicts(read_tfrecords(
        os.path.join(output, contract.BATCH_TFRECORD_DIR, "*.gz")))
    as_rows = sorted((e[contract.USER_ID][0], e[contract.RANK][0], e[contract.MOVIE_ID][0],
                      e[contract.MOVIE_TITLE][0].decode("utf-8")) for e in examples)
    assert as_rows == sorted((r[contract.USER_ID], r[contract.RANK], r[contract.MOVIE_ID],
                              r[contract.MOVIE_TITLE]) for r in rows)


@pytest.mark.e2e
def test_batch_output_equals_recommend_for_a_few_users(served_pipeline):
    runs = served_pipeline
    users = _by_user(job.read_rows(_output(runs)))
    loaded = {}
    for user in sorted(users)[:3] + [42]:
        _, items, _ = recommend.recommend(
            runs.config.serving_root, runs.config.batch.batch_k, user=user,
            variant=contract.BRUTE_FORCE, two_stage=True, loaded=loaded)
        assert [(r[contract.MOVIE_ID], r[contract.MOVIE_TITLE]) for r in users[user]] == [
            (item.movie_id, item.title) for item in items]
        assert [r[contract.RANKING_SCORE] for r in users[user]] == pytest.approx(
            [item.score for item in items], rel=1e-5)
        assert [r[contract.RETRIEVAL_SCORE] for r in users[user]] == pytest.approx(
            [item.retrieval_score for item in items], rel=1e-5)


@pytest.mark.e2e
def test_throughput_is_recorded(served_pipeline):
    runs = served_pipeline
    output = _output(runs)
    with open(os.path.join(output, contract.BATCH_STATS_FILE)) as handle:
        stats = json.load(handle)
    rows = job.read_rows(output)
    assert stats[job.USERS_COUNTER] == len({r[contract.USER_ID] for r in rows})
    assert stats[job.ROWS_COUNTER] == len(rows)
    assert stats[contract.USERS_PER_SECOND] == pytest.approx(
        stats[job.USERS_COUNTER] / stats["seconds"], rel=0.01)
    logs = glob.glob(os.path.join(runs.output_root, console.LOG_DIR, "*.log"))
    assert any(job.summary_line(stats) in open(log).read() for log in logs)


@pytest.mark.e2e
def test_a_given_list_skips_unknown_users(served_pipeline, tmp_path):
    runs = served_pipeline
    model_dir = recommend.model_dir(runs.config.serving_root, contract.TWO_STAGE,
                                    contract.BRUTE_FORCE)
    stats = job.run(model_dir, str(tmp_path), k=3, users=[1, 2, 999_999], batch_size=2)
    rows = job.read_rows(str(tmp_path))
    assert sorted({r[contract.USER_ID] for r in rows}) == [1, 2]
    assert stats[job.UNKNOWN_COUNTER] == 1 and stats[job.USERS_COUNTER] == 2
    assert len(rows) == 6
