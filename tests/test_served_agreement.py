"""The served models answer what the Trainer measured: HR@10 and NDCG@10 recomputed from
the pushed (brute-force) models' answers on the served run's eval examples equal the
Trainer's ``top_10_excluding_rated`` / ``ndcg_10_excluding_rated``, and
``serving_default`` needs nothing a client cannot know (no query time)."""

import json
import os

import numpy as np
import pytest

from components import contract
from components.pusher import publishing, serving
from conftest import SERVED_EVAL_SAMPLE

K = 10


def _examples(runs, kind: str, split: str, names):
    """Every example of the served run's ``kind`` examples in ``split``, as arrays."""
    from components.trainer import inputs

    key = contract.examples_key(kind)
    pattern = os.path.join(runs.output("MovieLensExampleGen", key), f"Split-{split}", "*")
    if kind == contract.SEQUENCE:
        with open(os.path.join(runs.output("MovieLensExampleGen", contract.VOCABULARY),
                               contract.SEQUENCE_SHAPE_FILE)) as handle:
            shape = json.load(handle)
        spec = inputs.sequence_feature_spec(shape[contract.MAX_CONTEXT_LENGTH],
                                            shape[contract.MAX_CONTEXT_MOVIE_GENRE_LENGTH])
    else:
        spec = inputs.rating_feature_spec()
    parts = {}
    for batch in inputs.make_dataset(pattern, inputs.select(spec, names), 4096,
                                     shuffle=False):
        for name, value in batch.items():
            parts.setdefault(name, []).append(value.numpy())
    return {name: np.concatenate(value) for name, value in parts.items()}


def _training_movies(train, users, history_keys):
    """Per user, the set of movie ids in their training examples (padding left out)."""
    movies = {}
    for key in history_keys:
        values = train[key].reshape(len(train[contract.USER_ID]), -1)
        for user, row in zip(train[contract.USER_ID].reshape(-1), values):
            movies.setdefault(int(user), set()).update(int(m) for m in row if m)
    return movies


@pytest.mark.parametrize("name", ["retrieval", "sequential"])
def test_served_answers_give_the_trainers_hr_and_ndcg(served_pipeline, name):
    import tensorflow as tf

    runs = served_pipeline
    kind = contract.model_kind(name)
    with open(os.path.join(runs.output(f"{name.capitalize()}Trainer", "model_run"),
                           contract.METRICS_FILE)) as handle:
        trainer = json.load(handle)
    base = os.path.join(runs.config.serving_root, name)
    [version] = publishing.versions(base)
    model_dir = os.path.join(base, str(version))
    info = serving.read_serving_info(model_dir)
    # What a client sends: the query's ids (and k): no time.
    assert info["inputs"] == sorted(kind.query_keys)
    model = tf.saved_model.load(model_dir)
    _, spec = model.signatures[contract.RECOMMEND_SIGNATURE].structured_input_signature
    assert set(spec) == {*kind.query_keys, contract.K_INPUT}

    names = sorted({contract.USER_ID, kind.label_key, *kind.query_keys, *kind.history_keys})
    train = _examples(runs, kind.examples, contract.TRAIN, names)
    evaluation = _examples(runs, kind.examples, contract.EVAL, names)
    # A Trainer with eval_sample_users scored its seeded sample of users, listed beside
    # its model (the served run samples the sequential model's).
    sample = os.path.join(runs.output(f"{name.capitalize()}Trainer", "model"),
                          "Format-Serving", contract.EXTRA_ASSETS, contract.EVAL_USERS_FILE)
    assert os.path.exists(sample) == (name == SERVED_EVAL_SAMPLE[0])
    if os.path.exists(sample):
        keep = np.isin(evaluation[contract.USER_ID].reshape(-1), np.load(sample)["user_ids"])
        assert 0 < keep.sum() < len(keep)
        evaluation = {key: value[keep] for key, value in evaluation.items()}
    users = evaluation[contract.USER_ID].reshape(-1)
    labels = evaluation[kind.label_key].reshape(-1)
    seen = _training_movies(train, users, kind.history_keys)
    # Exclude each user's training movies, never the label itself (as the Trainer does).
    excluded = [sorted(seen.get(int(u), set()) - {int(m)}) for u, m in zip(users, labels)]
    width = max(len(e) for e in excluded) or 1
    exclude = np.zeros((len(users), width), np.int64)
    for row, movies in enumerate(excluded):
        exclude[row, :len(movies)] = movies
    feeds = {key: tf.constant(evaluation[key].reshape(len(users), -1) if
                              key == contract.CONTEXT_MOVIE_ID else users, tf.int64)
             for key in kind.query_keys}
    answers = model.signatures[contract.EXCLUDING_SIGNATURE](
        k=tf.constant(K, tf.int32), exclude_movie_ids=tf.constant(exclude), **feeds)
    ids = answers[contract.MOVIE_IDS_OUTPUT].numpy()
    hit = ids == labels[:, None]
    rank = np.where(hit.any(axis=1), hit.argmax(axis=1), K)
    hr = float(np.mean(rank < K))
    ndcg = float(np.mean(np.where(rank < K, 1.0 / np.log2(2.0 + rank), 0.0)))
    assert trainer["queries"] == len(users)
    assert hr == pytest.approx(trainer[f"top_{K}_excluding_rated"], abs=0.01)
    assert ndcg == pytest.approx(trainer[f"ndcg_{K}_excluding_rated"], abs=0.01)
    assert hr > 0.0  # not a vacuous agreement
