"""Tests for components/trainer: the input pipeline and the TFRS models.

The examples are the example generator's own: synthetic MovieLens files
(data/synthetic.py) run through ``generate.generate`` on an in-memory
``beam.Pipeline()``. The synthetic data has planted structure (latent tastes, popularity,
taste drift), so a trained model must beat random and popularity retrieval.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow plain `pytest` from any directory
    sys.path.insert(0, str(ROOT))

import components  # noqa: E402,F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from components import contract  # noqa: E402
from components.trainer import encoders, export, inputs, optimizers, tasks, towers  # noqa: E402
from components.trainer import evaluation as trainer_eval  # noqa: E402
from components.trainer import hparams as hp  # noqa: E402
from components.trainer import models as M  # noqa: E402
from components.trainer import vocabulary as vocab_lib  # noqa: E402

N_USERS, N_MOVIES, N_RATINGS = 300, 400, 24_000
KS = (1, 5, 10, 50, 100)


# ---------------------------------------------------------------------------------------
# Fixtures: the example generator's outputs.


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Example generation of a synthetic 1m-layout data set (about 6 s)."""
    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig
    from data import synthetic

    root = tmp_path_factory.mktemp("trainer")
    synthetic.generate(root / "raw", N_USERS, N_MOVIES, N_RATINGS, "1m", seed=5)
    paths = generate.OutputPaths.under(str(root))
    generate.generate(str(root / "raw"), ExampleGenConfig(seed=0), paths)
    return {"root": root, "vocab": vocab_lib.load_vocabulary(paths.vocabulary),
            "rating": {s: f"{paths.rating_examples}/Split-{s}" for s in ("train", "eval")},
            "sequence": {s: f"{paths.sequence_examples}/Split-{s}" for s in ("train", "eval")}}


@pytest.fixture(scope="module")
def rating_history(data):
    """The movies each user rated in training (to exclude from their recommendations)."""
    train = inputs.make_dataset(data["rating"]["train"], inputs.rating_feature_spec(), 4096,
                           shuffle=False)
    return trainer_eval.user_history(train, data["vocab"])


def _datasets(data, hparams, kind="rating"):
    train = inputs.make_dataset(data[kind]["train"], inputs.feature_spec(hparams, data["vocab"]), hparams.batch_size,
                           shuffle=True, seed=0, cache=True)
    evaluation = inputs.make_dataset(data[kind]["eval"], inputs.feature_spec(hparams, data["vocab"]),
                                hparams.eval_batch_size, shuffle=False, cache=True)
    return train, evaluation


def _train_counts(data, dataset, key):
    """Popularity from the training split only (the vocabulary counts include eval)."""
    counts = np.zeros(data["vocab"].num_movies)
    for batch in dataset:
        np.add.at(counts, trainer_eval.movie_rows(data["vocab"], batch[key].numpy()), 1)
    return counts


def _loss(model, batch):
    return float(model.compute_loss(batch, training=True))


def _train(model, hparams, train, probe):
    """Fits ``model``; returns its loss on ``probe`` before and after."""
    M.create_variables(model, probe)
    before = _loss(model, probe)
    model.fit(train, epochs=hparams.epochs, verbose=0)
    return before, _loss(model, probe)


# ---------------------------------------------------------------------------------------
# Hyperparameters.


def test_hparams_from_custom_config():
    hparams = hp.HParams.from_dict({
        "model": "sequential", "embedding_dim": "32", "epochs": 3.0, "use_title": "true",
        "full_softmax": 1, "top_ks": [1, 10], "rating_layers": "128, 32",
        "learning_rate": "0.05", "optimizer": "adam"})
    assert hparams.model == "sequential" and hparams.embedding_dim == 32
    assert hparams.epochs == 3 and hparams.use_title is True and hparams.full_softmax is True
    assert hparams.top_ks == (1, 10) and hparams.rating_layers == (128, 32)
    assert hparams.learning_rate == 0.05
    assert hp.HParams.from_dict(hparams.to_dict()) == hparams
    assert hp.HParams.from_dict(None, preset=False) == hp.HParams()
    with pytest.raises(ValueError, match="timestamp_features"):
        hp.HParams.from_dict({"timestamp_features": "global,hourly"})
    with pytest.raises(ValueError, match="unknown hyperparameters.*embeding_dim"):
        hp.HParams.from_dict({"embeding_dim": 8})
    with pytest.raises(ValueError, match="unknown model kind"):
        hp.HParams.from_dict({"model": "deep"})
    with pytest.raises(ValueError, match="epochs"):
        hp.HParams.from_dict({"epochs": 1.5})
    with pytest.raises(ValueError, match="use_genres"):
        hp.HParams.from_dict({"use_genres": "maybe"})
    assert isinstance(optimizers.make_optimizer(hparams), tf.keras.optimizers.Adam)


def test_presets_are_the_defaults_of_custom_config():
    # custom_config overrides the model's preset; the preset overrides the field defaults.
    assert hp.HParams.from_dict(None) == hp.HParams(**hp.PRESETS["retrieval"])
    for model, preset in hp.PRESETS.items():
        assert preset["model"] == model
        hparams = hp.HParams.from_dict({"model": model})
        assert hparams == hp.HParams(**preset)
        assert hp.HParams.from_dict(hparams.to_dict(), preset=False) == hparams
    ranking = hp.HParams.from_dict({"model": "ranking", "epochs": 2, "rating_biases": False})
    assert ranking.epochs == 2 and ranking.rating_biases is False
    assert ranking.optimizer == hp.PRESETS["ranking"]["optimizer"]
    plain = hp.HParams.from_dict({"model": "ranking"}, preset=False)
    assert plain == hp.HParams(model="ranking")
    with pytest.raises(ValueError, match="unknown model kind"):
        hp.HParams.from_dict({"model": "deep"}, preset=False)


# ---------------------------------------------------------------------------------------
# Input pipeline.


def test_vocabulary(data):
    vocab = data["vocab"]
    assert vocab.num_movies == N_MOVIES  # the whole catalogue, rated or not
    assert sorted(vocab.movie_ids.tolist()) == list(range(1, N_MOVIES + 1))
    assert np.all(np.diff(vocab.movie_counts) <= 0)  # most rated first
    assert vocab.num_users == N_USERS and vocab.genres[0] == "UNK" and vocab.years[0] == 0
    assert all(isinstance(g, tuple) for g in vocab.movie_genres)
    assert vocab.movie_titles[0].endswith(f"({vocab.movie_years[0]})")
    probabilities = vocab.candidate_probabilities()
    assert probabilities.shape == (N_MOVIES,) and abs(probabilities.sum() - 1) < 1e-5
    assert np.all(probabilities > 0)
    rows = trainer_eval.movie_rows(vocab, np.array([vocab.movie_ids[7], 0, 10**9]))
    assert rows.tolist() == [7, -1, -1]


def test_datasets_have_the_documented_shapes(data):
    batch = next(iter(inputs.make_dataset(data["rating"]["train"], inputs.rating_feature_spec(True), 32,
                                     shuffle=True, seed=1)))
    for name in (contract.USER_ID, contract.MOVIE_ID, contract.MOVIE_YEAR, contract.TIMESTAMP, contract.USER_AGE):
        assert batch[name].shape == (32,) and batch[name].dtype == tf.int64, name
    assert batch[contract.USER_RATING].dtype == tf.float32 and batch[contract.MOVIE_TITLE].shape == (32,)
    assert isinstance(batch[contract.MOVIE_GENRES], tf.RaggedTensor)
    assert batch[contract.USER_GENDER].dtype == tf.string

    sequences = inputs.make_dataset(data["sequence"]["train"], inputs.sequence_feature_spec(10, 10), 4096,
                               shuffle=False)
    total = 0
    for batch in sequences:
        ids = batch[contract.CONTEXT_MOVIE_ID].numpy()
        assert ids.shape[1] == 10 and batch[contract.CONTEXT_MOVIE_GENRE].shape[1] == 10
        assert batch[contract.LABEL_MOVIE_ID].shape == (ids.shape[0],)
        # Padding only at the end: once a 0 appears, zeros to the end of the row.
        padded = ids == 0
        assert np.all(padded[:, 1:] >= padded[:, :-1]) and not padded[:, 0].any()
        total += ids.shape[0]
    assert total > 10_000

    with pytest.raises(FileNotFoundError):
        inputs.make_dataset(str(data["root"] / "missing" / "*.gz"), inputs.sequence_feature_spec(10, 10), 8)


def test_timestamp_stats(data):
    dataset = inputs.make_dataset(data["rating"]["train"],
                             inputs.select(inputs.rating_feature_spec(), [contract.TIMESTAMP]), 1024,
                             shuffle=False)
    stats = inputs.timestamp_stats(dataset, num_buckets=50)
    values = np.concatenate([b[contract.TIMESTAMP].numpy() for b in dataset]).astype(np.float64)
    assert abs(stats.mean - values.mean()) < 1 and abs(stats.std / values.std() - 1) < 1e-6
    assert len(stats.boundaries) == 49 and stats.boundaries[0] > values.min()
    encoder = encoders.TimestampEncoder(stats, 8)
    encoded = encoder(tf.constant([int(values.min()), int(values.max())], tf.int64)).numpy()
    assert encoded.shape == (2, 9)
    assert encoded[0, 0] < -1 and encoded[1, 0] > 1  # normalized, in float64 arithmetic
    assert stats.user_ids == () and stats.user_first == ()  # no user ids in the batches

    # With user ids: each user's first training timestamp.
    with_users = inputs.make_dataset(data["rating"]["train"],
                                inputs.select(inputs.rating_feature_spec(), [contract.USER_ID, contract.TIMESTAMP]),
                                1000, shuffle=True, seed=3)
    stats = inputs.timestamp_stats(with_users, num_buckets=50)
    first = {}
    for batch in with_users:
        for user, value in zip(batch[contract.USER_ID].numpy(), batch[contract.TIMESTAMP].numpy()):
            first[int(user)] = min(first.get(int(user), np.inf), float(value))
    assert stats.first_timestamps() == first and list(stats.user_ids) == sorted(first)
    hparams = hp.HParams.from_dict({"use_timestamps": True, "timestamp_buckets": 50})
    from_files = inputs.training_timestamp_stats(hparams, data["rating"]["train"])
    assert from_files.user_first == stats.user_first and from_files.user_ids == stats.user_ids
    assert from_files.std == pytest.approx(stats.std, rel=1e-9)  # summed in another order
    assert from_files.boundaries == pytest.approx(stats.boundaries)
    assert inputs.training_timestamp_stats(
        hp.HParams.from_dict({"use_timestamps": False}), data["rating"]["train"]) is None


def test_relative_time_encoder():
    # Rows 1-2: users whose first ratings were at 1000 and 5000; row 0 (unknown) and a
    # user without training ratings (NaN) are at their start.
    encoder = encoders.RelativeTimeEncoder(np.array([np.nan, 1000.0, 5000.0, np.nan]), 4)
    rows = tf.constant([1, 1, 2, 0, 3], tf.int64)
    times = tf.constant([1000, 1000 + 86400, 4000, 7000, 9000], tf.int64)
    out = encoder((rows, times)).numpy()
    assert out.shape == (5, 5)
    np.testing.assert_allclose(
        out[:, 0], np.log1p([0, 86400, 0, 0, 0]) / np.log1p(encoders._YEAR_SECONDS), rtol=1e-6)
    bucket = encoder.bucket_embedding.embeddings.numpy()
    np.testing.assert_allclose(out[0, 1:], bucket[0])  # elapsed 0: below the first boundary
    np.testing.assert_allclose(out[2, 1:], bucket[0])  # before the first rating: clipped to 0
    day = encoders.RELATIVE_TIME_BOUNDARIES.index(86400) + 1
    np.testing.assert_allclose(out[1, 1:], bucket[day])
    stats = inputs.TimestampStats(9e8, 1e7, (9e8,))
    with pytest.raises(ValueError, match="user ids"):
        towers.UserTower(np.array([1, 2]), 4, stats)
    tower = towers.UserTower(np.array([1, 2]), 4, stats, timestamp_features=("global",))
    assert tower.relative_time is None and tower.timestamp is not None


def test_learning_rate_schedule():
    hparams = hp.HParams.from_dict({"learning_rate": 0.01, "learning_rate_schedule": "cosine"})
    callback = optimizers.learning_rate_callback(hparams, 4)
    rates = [callback.schedule(epoch, 0.0) for epoch in range(4)]
    np.testing.assert_allclose(rates, [0.01, 0.01 * (1 + 0.5 ** 0.5) / 2, 0.005,
                                       0.01 * (1 - 0.5 ** 0.5) / 2], rtol=1e-6)
    constant = hp.HParams.from_dict({"learning_rate_schedule": "constant"})
    assert optimizers.learning_rate_callback(constant, 4) is None
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        hp.HParams.from_dict({"learning_rate_schedule": "step"})


def test_rating_biases():
    vocab = _small_vocab()
    biases = tasks.RatingBiases(vocab)
    features = {contract.USER_ID: tf.constant([1, 3, 99], tf.int64),
                contract.MOVIE_ID: tf.constant([10, 15, 10], tf.int64)}
    np.testing.assert_allclose(biases(features).numpy(), 0.0)  # zero at the start
    biases.user_bias.embeddings.assign(np.arange(4, dtype=np.float32)[:, None])
    biases.movie_bias.embeddings.assign(np.arange(7, dtype=np.float32)[:, None] * 10)
    # users 1, 3 -> rows 1, 3; 99 -> 0 (unknown); movies 10, 15 -> rows 1, 6.
    np.testing.assert_allclose(biases(features).numpy(), [1 + 10, 3 + 60, 0 + 10])


# ---------------------------------------------------------------------------------------
# Evaluation helpers (pure numpy; exact expectations).


def test_top_k_accuracy_and_exclusions():
    catalogue = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], np.float32)
    queries = np.ones((3, 1), np.float32)
    labels = np.array([2, 0, -1])  # ranks 3, 1, and an unknown movie (always a miss)
    result = trainer_eval.top_k_accuracy(queries, catalogue, labels, ks=(1, 2, 3))
    assert result == {"top_1": 1 / 3, "top_2": 1 / 3, "top_3": 2 / 3, "queries": 3,
                      # NDCG of one relevant movie: 1 / log2(2 + 0-based rank) within k.
                      "ndcg_1": 1 / 3, "ndcg_2": 1 / 3, "ndcg_3": (1 + 1 / np.log2(4)) / 3}
    # Excluding rows 0 and 1 lifts the first label to rank 1, even though its own row (2)
    # is listed too; the second query's label (row 0) is listed but never excluded.
    excluded = [np.array([0, 1, 2]), np.array([0, 1]), None]
    result = trainer_eval.top_k_accuracy(queries, catalogue, labels, ks=(1, 2), exclude_rows=excluded)
    assert result["top_1"] == 2 / 3 and result["top_2"] == 2 / 3
    # Ties count against the label.
    tied = trainer_eval.top_k_accuracy(queries, np.ones((4, 1), np.float32), np.array([3]), ks=(1, 4))
    assert tied["top_1"] == 0.0 and tied["top_4"] == 1.0


# ---------------------------------------------------------------------------------------
# The retrieval task's losses, against hand computations.


def _small_vocab(n_movies=6, n_users=3):
    return vocab_lib.Vocabulary(
        movie_ids=np.arange(10, 10 + n_movies, dtype=np.int64),
        movie_counts=np.arange(n_movies, 0, -1, dtype=np.int64) * 10,
        movie_titles=tuple(f"Movie Number {i} (1990)" for i in range(n_movies)),
        movie_years=np.full(n_movies, 1990, np.int64),
        movie_genres=tuple(("Drama",) if i % 2 else ("Comedy", "Drama") for i in range(n_movies)),
        user_ids=np.arange(1, n_users + 1, dtype=np.int64),
        user_counts=np.ones(n_users, np.int64), genres=("UNK", "Drama", "Comedy"), years=(0, 1990))


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_retrieval_task_sampled_softmax_logq_and_accidental_hits():
    vocab = _small_vocab()
    tower = towers.MovieTower(vocab, 4)
    task = tasks.RetrievalTask(tower, vocab, logq_correction=True, remove_accidental_hits=True,
                           ks=(1, 5))
    rng = np.random.default_rng(0)
    query = rng.normal(size=(4, 4)).astype(np.float32)
    ids = np.array([10, 12, 10, 15], np.int64)  # movie 10 twice: an accidental hit
    candidates = tower(tf.constant(ids)).numpy()
    loss = float(task(tf.constant(query), tf.constant(candidates), tf.constant(ids),
                      compute_metrics=False))

    probability = vocab.candidate_probabilities()[ids - 10]
    logits = query @ candidates.T - np.log(probability)[None, :]
    for i in range(4):
        for j in range(4):
            if i != j and ids[i] == ids[j]:
                logits[i, j] = np.finfo(np.float32).min / 100
    expected = -np.trace(_log_softmax(logits))
    assert loss == pytest.approx(expected, rel=1e-4)


def test_retrieval_task_full_softmax():
    vocab = _small_vocab()
    tower = towers.MovieTower(vocab, 4)
    task = tasks.RetrievalTask(tower, vocab, full_softmax=True, ks=(1, 5))
    query = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    ids = np.array([11, 15, 11], np.int64)
    loss = float(task(tf.constant(query), tower(tf.constant(ids)), tf.constant(ids)))
    catalogue = tower(tf.constant(vocab.movie_ids)).numpy()
    expected = -_log_softmax(query @ catalogue.T)[np.arange(3), ids - 10].sum()
    assert loss == pytest.approx(expected, rel=1e-5)
    # The metrics range over the catalogue (6 movies): top-5 misses only the last-ranked.
    scores = query @ catalogue.T
    ranks = (scores > scores[np.arange(3), ids - 10][:, None]).sum(axis=1)
    top1, top5 = [float(m.result()) for m in task.top_k._top_k_metrics]
    assert top1 == pytest.approx(np.mean(ranks < 1)) and top5 == pytest.approx(np.mean(ranks < 5))


def test_movie_tower_side_features_and_any_shape():
    vocab = _small_vocab()
    tower = towers.MovieTower(vocab, 8, use_title=True, use_genres=True, tower_layers=(16,))
    ids = tf.constant([[10, 11, 0], [15, 99, 12]], tf.int64)  # 0 and 99: unknown
    out = tower(ids)
    assert out.shape == (2, 3, 8)
    np.testing.assert_allclose(out[0, 2], out[1, 1], atol=1e-6)  # both out-of-vocabulary
    assert tower({contract.MOVIE_ID: tf.constant([10, 11])}).shape == (2, 8)
    assert encoders.title_tokens("Circus, The (1993)") == ["circus", "the"]


# ---------------------------------------------------------------------------------------
# Training: every model learns.


def test_retrieval_learns_and_beats_random_and_popularity(data, rating_history):
    # In-batch sampled softmax with log-Q (the option for large catalogues).
    hparams = hp.HParams.from_dict({"epochs": 3, "batch_size": 512, "logq_correction": True,
                                   "embedding_dim": 32}, preset=False)
    train, evaluation = _datasets(data, hparams)
    model = M.compile_model(M.build_model(hparams, data["vocab"]), hparams)
    probe = next(iter(train))
    assert model(probe).shape == (probe[contract.USER_ID].shape[0], 32)
    before, after = _train(model, hparams, train, probe)
    assert after < 0.95 * before

    result = trainer_eval.evaluate_retrieval(model, evaluation, data["vocab"], KS, rating_history)
    popularity = trainer_eval.evaluate_popularity(
        evaluation, data["vocab"], contract.MOVIE_ID, KS, rating_history,
        counts=_train_counts(data, train, contract.MOVIE_ID))
    print("retrieval", result, "\npopularity", popularity)
    # With a random split, a user's eval movies are not among their training movies: the
    # all-catalogue figures are held down by the (correctly) high-scored training movies,
    # and the figures excluding them are the ones a recommender would see.
    unrated = np.array([N_MOVIES - len(rating_history.get(int(user), ()))
                        for batch in evaluation for user in batch[contract.USER_ID].numpy()])
    for k in (10, 100):
        assert result[f"top_{k}"] > k / N_MOVIES  # random ranking
        random_excluding = np.mean(np.minimum(1.0, k / unrated))
        assert result[f"top_{k}_excluding_rated"] > 1.5 * random_excluding
        assert result[f"top_{k}_excluding_rated"] > popularity[f"top_{k}_excluding_rated"]

    # Keras evaluation (FactorizedTopK over the catalogue) agrees with the exact helper.
    logs = model.evaluate(evaluation, return_dict=True, verbose=0)
    for k in KS:
        assert logs[f"factorized_top_k/top_{k}_categorical_accuracy"] == pytest.approx(
            result[f"top_{k}"], abs=2e-3)


def test_full_softmax_retrieval_with_features(data, rating_history):
    # The retrieval preset (full softmax, title and genres) plus the time features
    # (global and user-relative), which no preset uses any more.
    hparams = hp.HParams.from_dict({
        "epochs": 3, "batch_size": 512, "embedding_dim": 32, "timestamp_buckets": 100,
        "train_top_k_metrics": True, "top_ks": [10, 100], "use_timestamps": True,
        "recency_windows_days": []})  # the recency prior: tests/test_recency.py
    assert hparams.full_softmax and hparams.use_timestamps and hparams.use_genres
    train, evaluation = _datasets(data, hparams)
    stats = inputs.training_timestamp_stats(hparams, data["rating"]["train"])
    assert len(stats.user_ids) == N_USERS
    model = M.compile_model(M.build_model(hparams, data["vocab"], stats), hparams)
    probe = next(iter(train))
    before, after = _train(model, hparams, train, probe)
    assert after < 0.95 * before
    result = trainer_eval.evaluate_retrieval(model, evaluation, data["vocab"], (10, 100), rating_history)
    print("full softmax + features", result)
    assert result["top_10_excluding_rated"] > 2 * 10 / N_MOVIES
    assert result["top_100_excluding_rated"] > 2 * 100 / N_MOVIES
    with pytest.raises(ValueError, match="timestamp_stats"):
        M.build_model(hparams, data["vocab"])


def test_ranking_learns_and_clips(data):
    hparams = hp.HParams.from_dict({"model": "ranking", "epochs": 4, "batch_size": 256,
                                   "embedding_dim": 32})
    train, evaluation = _datasets(data, hparams)
    model = M.compile_model(M.build_model(hparams, data["vocab"]), hparams)
    probe = next(iter(train))
    before, after = _train(model, hparams, train, probe)
    assert after < before
    # The preset's cosine schedule ran inside fit: the last epoch's rate is the smallest.
    rates = [0.5 * hparams.learning_rate * (1 + np.cos(np.pi * e / 4)) for e in range(4)]
    assert float(model.optimizer.learning_rate) == pytest.approx(rates[-1], rel=1e-5)
    result = trainer_eval.evaluate_ranking(model, evaluation)
    print("ranking", result)
    assert result["rmse"] < result["mean_rating_rmse"]
    logs = model.evaluate(evaluation, return_dict=True, verbose=0)
    assert logs["rmse"] == pytest.approx(result["rmse"], rel=1e-3)
    # Served ratings are clipped to the star range, even for absurd inputs.
    far = {contract.USER_ID: tf.constant([1, 2], tf.int64), contract.MOVIE_ID: tf.constant([1, 2], tf.int64)}
    model.rating_head.layers[-1].bias.assign([100.0])
    assert np.all(model(far).numpy() == 5.0)


def test_lazy_adam_moves_only_the_looked_up_rows_by_adams_rule():
    """Step 1 looks up rows 0, 2, 2 (row 2 twice: its gradients add up), step 2 row 1
    only. Keras' Adam then moves rows 0 and 2 again (their momentum decays); LazyAdam
    leaves them, and moves each looked-up row as Adam's rule says."""
    table = np.arange(18, dtype=np.float32).reshape(6, 3) / 10
    grads = np.array([[1.0, -2.0, 0.5], [0.3, 0.3, -1.0], [2.0, 1.0, 1.0]], np.float32)
    steps = [([0, 2, 2], grads), ([1], grads[:1])]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7

    def run(optimizer):
        variable = tf.Variable(table)
        after = []
        for indices, values in steps:
            optimizer.apply_gradients([(tf.IndexedSlices(
                tf.constant(values), tf.constant(indices, tf.int64), tf.constant([6, 3],
                                                                          tf.int64)),
                variable)])
            after.append(variable.numpy().copy())
        return after

    lazy = run(optimizers.LazyAdam(lr, epsilon=eps))
    adam = run(tf.keras.optimizers.Adam(lr, epsilon=eps))
    expected, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
    for t, (indices, values) in enumerate(steps, start=1):
        g = np.zeros_like(table)
        np.add.at(g, indices, values)
        rows = sorted(set(indices))
        m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
        v[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        expected[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + eps)
        np.testing.assert_allclose(lazy[t - 1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lazy[0], adam[0], rtol=1e-5, atol=1e-6)  # one step: equal
    np.testing.assert_array_equal(lazy[1][[0, 2]], lazy[0][[0, 2]])  # not looked up
    assert (np.abs(adam[1][[0, 2]] - adam[0][[0, 2]]).max(axis=1) > 1e-4).all()  # Adam: moved
    np.testing.assert_array_equal(lazy[1][3:], table[3:])
    hparams = hp.HParams.from_dict({"optimizer": "lazy_adam"}, preset=False)
    assert isinstance(optimizers.make_optimizer(hparams), optimizers.LazyAdam)


def test_lazy_adam_catches_a_row_up_on_the_steps_it_missed():
    """A row that misses steps is moved, when next looked up, as Adam's momentum would
    have moved it meanwhile: after random sparse steps (rows missing up to dozens of
    steps) and one last step that looks every row up with a zero gradient, LazyAdam's
    table equals Keras' Adam's."""
    rng = np.random.default_rng(0)
    rows, dim = 50, 4
    table = rng.normal(size=(rows, dim)).astype(np.float32)
    steps = [(rng.choice(rows, size=6, replace=False),  # no duplicates: Keras' sparse
              rng.normal(size=(6, dim)).astype(np.float32))  # Adam squares each one
             for _ in range(300)]
    steps.append((np.arange(rows), np.zeros((rows, dim), np.float32)))

    def run(optimizer):
        variable = tf.Variable(table)
        for indices, values in steps:
            optimizer.apply_gradients([(tf.IndexedSlices(
                tf.constant(values), tf.constant(indices, tf.int64),
                tf.constant([rows, dim], tf.int64)), variable)])
        return variable.numpy()

    adam = run(tf.keras.optimizers.Adam(0.01))
    lazy = run(optimizers.LazyAdam(0.01))
    assert np.abs(lazy - adam).max() < 1e-4 * np.abs(adam - table).max()


@pytest.mark.parametrize("sparse", [True, False])
def test_sparse_updates_from_the_threshold_move_only_the_looked_up_rows(data, sparse):
    """From ``sparse_updates_min_rows`` rows up, Adam is LazyAdam and the id embeddings'
    L2 penalty is on the looked-up rows: a step moves only the rows its batch looked up,
    penalty included. Below it, the whole-table penalty and Adam move every row."""
    vocab = data["vocab"]
    largest = max(vocab.num_users, vocab.num_movies)
    assert hp.HParams(sparse_updates_min_rows=largest).sparse_updates(
        vocab.num_users, vocab.num_movies)
    assert not hp.HParams(sparse_updates_min_rows=largest + 1).sparse_updates(
        vocab.num_users, vocab.num_movies)
    assert not hp.HParams(sparse_updates_min_rows=0).sparse_updates(10 ** 9, 10 ** 9)
    hparams = hp.HParams.from_dict({
        "model": "ranking", "embedding_dim": 8, "batch_size": 32, "epochs": 1,
        "l2_regularization": 0.01, "rating_biases": False,
        "sparse_updates_min_rows": largest if sparse else largest + 1})
    assert hparams.optimizer == "adam"
    batch = next(iter(inputs.input_dataset(hparams, vocab, data["rating"]["train"],
                                           training=True)))
    model = M.compile_model(M.build_model(hparams, vocab), hparams)
    model(batch)
    assert model.sparse_updates is sparse
    assert isinstance(model.optimizer, optimizers.LazyAdam) is sparse
    table = model.user_tower.embedding.embeddings
    before = table.numpy().copy()
    logs = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0).history
    assert logs["regularization_loss"][0] > 0  # the penalty is there either way
    moved = np.abs(table.numpy() - before).max(axis=1) > 0
    looked_up = np.zeros(len(before), bool)
    looked_up[model.user_tower.lookup(batch[contract.USER_ID]).numpy()] = True
    assert moved[looked_up].all()
    if sparse:
        np.testing.assert_array_equal(moved, looked_up)
    else:
        assert moved.all()


def test_row_penalty_equals_the_whole_tables_on_a_batch_in_proportion_to_the_counts():
    """The penalty on looked-up rows (sparse updates) weights each row by one over its
    expected lookups per example: on a batch that looks every row up as often as its
    count says, it is the whole-table penalty exactly; rows not looked up add nothing
    and get no gradient."""
    counts = np.array([5, 1, 2, 0, 8])
    rows_per_id = encoders.lookup_weights(counts, reserved_rows=1)
    np.testing.assert_allclose(rows_per_id, [0, 16 / 5, 16, 8, 0, 2])
    np.testing.assert_allclose(encoders.lookup_weights([4, 12], 4, reserved_rows=2),
                               [0, 0, 1, 1 / 3])
    l2 = 0.01
    layer = encoders.RowPenalizedEmbedding(6, 3, l2, rows_per_id)
    whole = encoders.penalized_embedding(6, 3, l2)
    batch = tf.constant(np.repeat(np.arange(1, 6), counts).reshape(-1, 1))  # [16, 1]
    with tf.GradientTape() as tape, encoders.row_penalties() as collected:
        layer(batch)
        penalty = tf.add_n(collected)
    assert len(collected) == 1 and not layer.losses
    whole.build((None,))
    whole.set_weights(layer.get_weights())
    table = layer.get_weights()[0]
    seen = table[[1, 2, 3, 5]]
    assert float(penalty) == pytest.approx(l2 * float((seen ** 2).sum()), rel=1e-5)
    assert float(whole.losses[0]) == pytest.approx(l2 * float((table ** 2).sum()), rel=1e-5)
    gradient = tf.convert_to_tensor(tape.gradient(penalty, layer.embeddings)).numpy()
    assert not gradient[[0, 4]].any() and gradient[[1, 2, 3, 5]].all()
    with encoders.row_penalties() as collected:
        with encoders.not_example_lookups():  # the catalogue, sampled negatives: none
            layer(batch)
        assert not collected
        layer(batch)
        layer(batch)  # each call's penalty is kept (Keras' add_loss keeps the last only)
    assert [float(p) for p in collected] == pytest.approx([float(penalty)] * 2)
    layer(batch)  # outside a training step's block: no penalty anywhere
    with pytest.raises(ValueError, match="5 row weights for 6 rows"):
        encoders.RowPenalizedEmbedding(6, 3, l2, rows_per_id[1:])


def test_retrieval_preset_trains_large_tables_with_sparse_updates_and_exports(data, tmp_path):
    """The retrieval preset switches to sparse updates on tables of 50,000 rows (not at
    ML-1M's size; never for ranking); such a model trains, with the penalty on its
    looked-up rows, and its export answers as the model does."""
    assert hp.preset("retrieval").sparse_updates(70_000, 10_677)
    assert not hp.preset("retrieval").sparse_updates(6_040, 3_706)
    assert not hp.preset("ranking").sparse_updates(10 ** 6, 10 ** 6)
    vocab = data["vocab"]
    hparams = hp.HParams.from_dict({"embedding_dim": 8, "batch_size": 64,
                                    "sparse_updates_min_rows": vocab.num_users,
                                    "sampled_softmax_min_catalogue": 1,
                                    "num_sampled_negatives": 32,
                                    "recency_windows_days": []})  # test_recency.py
    model = M.compile_model(M.build_model(
        hparams, vocab, movie_counts=vocab.movie_counts), hparams)
    assert isinstance(model.optimizer, optimizers.LazyAdam)
    for tower in (model.query_tower, model.candidate_tower):
        assert isinstance(tower.embedding, encoders.RowPenalizedEmbedding)
    train = inputs.input_dataset(hparams, vocab, data["rating"]["train"], training=True)
    # The penalty is the batch's own lookups' (users, labels), not the sampled negatives'.
    batch = next(iter(train))
    with encoders.row_penalties() as collected:
        model.compute_loss(batch, training=True)
    expected = 0.0
    for tower, key, counts in ((model.query_tower, contract.USER_ID, vocab.user_counts),
                               (model.candidate_tower, contract.MOVIE_ID, vocab.movie_counts)):
        rows = tower.lookup(batch[key]).numpy()
        table = tower.embedding.embeddings.numpy()
        weights = encoders.lookup_weights(counts)
        expected += hparams.l2_regularization * float(
            (weights[rows] * (table[rows] ** 2).sum(-1)).sum()) / len(rows)
    assert float(tf.add_n(collected)) == pytest.approx(expected, rel=1e-4)
    logs = model.fit(train.take(3), epochs=1, verbose=0).history
    assert logs["regularization_loss"][0] > 0
    users = {contract.USER_ID: tf.constant(vocab.user_ids[:4])}
    loaded = tf.saved_model.load(_export(model, hparams, data, tmp_path / "sparse"))
    served = loaded.signatures["serving_default"](**users)["query_embedding"].numpy()
    np.testing.assert_allclose(served, model.query_tower(users).numpy(), atol=1e-6)


def test_an_epochs_losses_are_its_steps_means_not_its_last_steps(data):
    """The epoch's logs (the progress lines, metrics.json's history) carry each loss
    averaged over the epoch's steps: with a last, partial batch the last step's loss is
    another number."""
    hparams = hp.HParams.from_dict({"model": "retrieval", "embedding_dim": 8, "epochs": 2,
                                    "batch_size": 1000, "optimizer": "sgd", "full_softmax": True,
                                    "learning_rate": 1e-12, "learning_rate_schedule": "constant",
                                    "l2_regularization": 0.01}, preset=False)
    batches = inputs.make_dataset(data["rating"]["train"],
                                  inputs.feature_spec(hparams, data["vocab"]),
                                  hparams.batch_size, shuffle=False, cache=True)
    model = M.compile_model(M.build_model(hparams, data["vocab"]), hparams)
    steps = [(_loss(model, batch), float(sum(tf.reduce_sum(p) for p in model.losses)))
             for batch in batches]
    size = inputs.count_examples(data["rating"]["train"])
    assert len(steps) == -(-size // 1000) > 2 and size % 1000  # the last batch: partial
    model.fit(batches, epochs=2, verbose=0)  # barely learning: about the same steps twice
    history = model.history.history
    losses, penalties = np.array(steps).T
    for epoch in range(2):
        assert history["loss"][epoch] == pytest.approx(losses.mean(), rel=1e-3)
        assert history["regularization_loss"][epoch] == pytest.approx(penalties.mean(),
                                                                      rel=1e-3)
        assert history["total_loss"][epoch] == pytest.approx((losses + penalties).mean(),
                                                             rel=1e-3)
    assert abs(losses[-1] - losses.mean()) > 0.1 * losses.mean()


def test_multitask_trains_both_tasks(data):
    hparams = hp.HParams.from_dict({"model": "multitask", "epochs": 2, "batch_size": 512,
                                   "embedding_dim": 16, "rating_weight": 1.0,
                                   "retrieval_weight": 0.1, "top_ks": [10]})
    train, evaluation = _datasets(data, hparams)
    stats = inputs.training_timestamp_stats(hparams, data["rating"]["train"])
    model = M.compile_model(M.build_model(hparams, data["vocab"], stats), hparams)
    probe = next(iter(train))
    before, after = _train(model, hparams, train, probe)
    assert after < before
    logs = model.evaluate(evaluation.take(2), return_dict=True, verbose=0)
    assert {"rmse", "factorized_top_k/top_10_categorical_accuracy"} <= set(logs)
    assert model(probe).shape == probe[contract.USER_ID].shape
    assert model.query_tower(probe).shape == (probe[contract.USER_ID].shape[0], 16)


@pytest.mark.parametrize("share", [False, True])
def test_sequential_masks_padding(data, share):
    hparams = hp.HParams.from_dict({"model": "sequential", "embedding_dim": 8,
                                   "share_embeddings": share})
    model = M.build_model(hparams, data["vocab"])
    ids = data["vocab"].movie_ids
    history = [int(ids[3]), int(ids[1]), int(ids[7])]
    # Padded to the examples' length 10 (next to an unpadded history), to 5, and unpadded.
    padded = tf.constant([history + [0] * 7, [int(i) for i in ids[:10]]], tf.int64)
    out_padded = model({contract.CONTEXT_MOVIE_ID: padded}).numpy()
    out_five = model({contract.CONTEXT_MOVIE_ID: tf.constant([history + [0, 0]], tf.int64)}).numpy()
    out_short = model({contract.CONTEXT_MOVIE_ID: tf.constant([history], tf.int64)}).numpy()
    assert out_padded.shape == (2, 8)
    np.testing.assert_allclose(out_padded[0], out_short[0], atol=1e-6)
    np.testing.assert_allclose(out_five[0], out_short[0], atol=1e-6)
    other = model({contract.CONTEXT_MOVIE_ID: tf.constant([history[:2] + [int(ids[9])]])}).numpy()
    assert np.abs(other[0] - out_short[0]).max() > 1e-4


def test_sequential_tutorial_reads_the_padding(data):
    # mask_padding=False reproduces the tutorial: the GRU also reads the padding.
    hparams = hp.HParams.from_dict({"model": "sequential", "embedding_dim": 8,
                                   "mask_padding": False}, preset=False)
    model = M.build_model(hparams, data["vocab"])
    history = [int(i) for i in data["vocab"].movie_ids[:3]]
    padded = model({contract.CONTEXT_MOVIE_ID: tf.constant([history + [0] * 7])}).numpy()
    short = model({contract.CONTEXT_MOVIE_ID: tf.constant([history])}).numpy()
    assert np.abs(padded - short).max() > 1e-4


def test_sequential_learns_and_beats_popularity(data):
    hparams = hp.HParams.from_dict({"model": "sequential", "epochs": 2, "batch_size": 512,
                                   "embedding_dim": 32, "logq_correction": True})
    train, evaluation = _datasets(data, hparams, "sequence")
    model = M.compile_model(M.build_model(hparams, data["vocab"]), hparams)
    probe = next(iter(train))
    before, after = _train(model, hparams, train, probe)
    assert after < 0.95 * before
    history = trainer_eval.user_history(train, data["vocab"], (contract.LABEL_MOVIE_ID, contract.CONTEXT_MOVIE_ID))
    result = trainer_eval.evaluate_retrieval(model, evaluation, data["vocab"], KS, history)
    popularity = trainer_eval.evaluate_popularity(
        evaluation, data["vocab"], contract.LABEL_MOVIE_ID, KS, history,
        counts=_train_counts(data, train, contract.LABEL_MOVIE_ID))
    print("sequential", result, "\npopularity", popularity)
    for k in (10, 100):
        assert result[f"top_{k}"] > popularity[f"top_{k}"]
        assert result[f"top_{k}_excluding_rated"] > popularity[f"top_{k}_excluding_rated"]


# ---------------------------------------------------------------------------------------
# Export.


def _export(model, hparams, data, path):
    """The Trainer's SavedModel of ``model`` (every signature), saved under ``path``."""
    from components.evaluator.slices import SliceSpec

    return export.save(export.export_module(model, hparams, data["vocab"], SliceSpec()),
                       str(path))


def test_export_query_model(data, tmp_path):
    hparams = hp.HParams.from_dict({"embedding_dim": 8, "use_timestamps": True,
                                   "timestamp_buckets": 10, "recency_windows_days": []})
    assert hparams.timestamp_features == ("global", "user_relative")
    stats = inputs.TimestampStats(9e8, 1e7, tuple(np.linspace(8.8e8, 9.2e8, 9)),
                             (1, 2, 3), (8.9e8, 8.95e8, 9.2e8))
    model = M.build_model(hparams, data["vocab"], stats)
    features = {contract.USER_ID: tf.constant([1, 2, 3], tf.int64),
                contract.TIMESTAMP: tf.constant([890_000_000, 900_000_000, 910_000_000], tf.int64)}
    expected = model.query_tower(features).numpy()

    loaded = tf.saved_model.load(_export(model, hparams, data, tmp_path / "query"))
    out = loaded.signatures["serving_default"](**features)["query_embedding"].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    examples = tf.constant([inputs.serialize_example(
        {contract.USER_ID: [u], contract.TIMESTAMP: [t], contract.MOVIE_ID: [1]})
        for u, t in zip([1, 2, 3], [890_000_000, 900_000_000, 910_000_000])])
    out = loaded.signatures["serve_tf_examples"](examples=examples)["query_embedding"]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)

    catalogue = trainer_eval.catalogue_embeddings(model.candidate_tower, data["vocab"], batch_size=64)
    assert catalogue.shape == (N_MOVIES, 8)
    np.testing.assert_allclose(
        catalogue[5], model.candidate_tower(data["vocab"].movie_ids[5:6])[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["sequential", "ranking"])
def test_export_sequential_and_ranking(data, tmp_path, kind):
    hparams = hp.HParams.from_dict({"model": kind, "embedding_dim": 8, "use_genres": True})
    model = M.build_model(hparams, data["vocab"])
    ids = [int(i) for i in data["vocab"].movie_ids[:4]]
    if kind == "sequential":
        rows = [ids[:3] + [0] * 7, ids + [0] * 6]
        features = {contract.CONTEXT_MOVIE_ID: tf.constant(rows, tf.int64)}
        examples = [{contract.CONTEXT_MOVIE_ID: row} for row in rows]
        expected, name = model.query_tower(features).numpy(), "query_embedding"
    else:
        features = {contract.USER_ID: tf.constant([1, 2], tf.int64),
                    contract.MOVIE_ID: tf.constant(ids[:2], tf.int64)}
        examples = [{contract.USER_ID: [1], contract.MOVIE_ID: [ids[0]]},
                    {contract.USER_ID: [2], contract.MOVIE_ID: [ids[1]]}]
        expected, name = model(features).numpy(), "rating"
    loaded = tf.saved_model.load(_export(model, hparams, data, tmp_path / kind))
    out = loaded.signatures["serving_default"](**features)[name].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    serialized = tf.constant([inputs.serialize_example(e) for e in examples])
    out = loaded.signatures["serve_tf_examples"](examples=serialized)[name].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("chunk", [export.EVAL_CHUNK, 4])
def test_eval_ranks_leave_out_each_users_training_movies_but_the_label(tmp_path, monkeypatch,
                                                                      chunk):
    """The Evaluator's label ranks, over the whole catalogue in chunks of movies, are the
    Trainer's streamed ones, with and without each user's training movies (never the
    label); the rank metrics give the Trainer's top-K and NDCG."""
    from components.evaluator import metrics
    from components.evaluator.slices import SliceSpec
    from components.trainer import histories

    monkeypatch.setattr(export, "EVAL_CHUNK", chunk)   # 6 movies: 2 chunks at 4
    vocab = _small_vocab()
    hparams = hp.HParams(model=hp.RETRIEVAL, embedding_dim=4)
    model = M.build_model(hparams, vocab)
    catalogue = trainer_eval.catalogue_embeddings(model.candidate_tower, vocab)
    pairs = histories.PairAccumulator()   # user 1 rated rows 0, 2, 3, 4; user 2 row 5
    pairs.add(np.array([1, 1, 1, 1, 2]), np.array([0, 2, 3, 4, 5]))
    seen = pairs.result()
    loaded = tf.saved_model.load(export.save(export.export_module(
        model, hparams, vocab, SliceSpec(), catalogue, seen), str(tmp_path / "m")))
    # user 1's label 2 is one of their training movies; 99999 is not in the vocabulary.
    users = np.array([1, 1, 2, 3, 1])
    movie_ids = [int(vocab.movie_ids[r]) for r in (2, 1, 1, 0)] + [99999]
    labels = trainer_eval.movie_rows(vocab, np.array(movie_ids))
    serialized = tf.constant([inputs.serialize_example(
        {contract.USER_ID: [int(u)], contract.MOVIE_ID: [m]}) for u, m in zip(users, movie_ids)])
    out = loaded.signatures[contract.EVAL_SIGNATURE](examples=serialized)
    assert set(out) == {contract.LABEL_RANK, contract.LABEL_RANK_EXCLUDING_RATED}
    queries = model.query_tower({contract.USER_ID: tf.constant(users)}).numpy()
    scores = queries @ catalogue.T
    for key, excluded in ((contract.LABEL_RANK, None),
                          (contract.LABEL_RANK_EXCLUDING_RATED, seen.pairs_of(users))):
        ranks = out[key].numpy()
        expected = trainer_eval.label_ranks(queries, catalogue, labels, excluded)
        known = labels >= 0
        np.testing.assert_array_equal(ranks[known], expected[known])
        assert ranks[~known] == contract.MISSING_RANK
        for k in (1, 3):
            trainer = trainer_eval.rank_metrics(expected, (k,))
            for gain, name in ((metrics.top_k_gain, f"top_{k}"),
                               (metrics.ndcg_gain, f"ndcg_{k}")):
                assert gain(ranks, k).mean() == pytest.approx(trainer[name], abs=1e-6)
    # Left out for user 1: rows 0, 3, 4 (never the label 2) -- a hand count.
    label = labels[0]
    others = [r for r in range(vocab.num_movies) if r not in (0, 3, 4, label)]
    assert out[contract.LABEL_RANK_EXCLUDING_RATED].numpy()[0] == sum(
        scores[0, r] > scores[0, label] for r in others)


# ---------------------------------------------------------------------------------------
# Scale: sampled softmax, streamed evaluation, tf.distribute.


def test_retrieval_task_with_a_pool_of_sampled_negatives(monkeypatch):
    vocab = _small_vocab()
    tower = towers.MovieTower(vocab, 4)
    counts = np.array([5, 1, 0, 3, 2, 9])  # the training counts, not the vocabulary's
    task = tasks.RetrievalTask(tower, vocab, logq_correction=True, remove_accidental_hits=True,
                               ks=(1, 5), num_sampled_negatives=3, movie_counts=counts)
    pool = np.array([12, 10, 14], np.int64)  # 10: an accidental hit of the first query
    monkeypatch.setattr(type(task.negative_sampler), "__call__",
                        lambda self: tf.constant(pool))
    rng = np.random.default_rng(0)
    query = rng.normal(size=(2, 4)).astype(np.float32)
    ids = np.array([10, 15], np.int64)
    candidates = tower(tf.constant(ids)).numpy()
    loss = float(task(tf.constant(query), tf.constant(candidates), tf.constant(ids),
                      compute_metrics=False))

    every = np.concatenate([ids, pool])
    probability = (counts + 1.0) / (counts + 1.0).sum()
    logits = query @ tower(tf.constant(every)).numpy().T - np.log(probability[every - 10])
    logits[0, 3] = np.finfo(np.float32).min / 100  # the pool's copy of the positive 10
    assert loss == pytest.approx(-(_log_softmax(logits)[[0, 1], [0, 1]]).sum(), rel=1e-4)


def test_negative_sampler_draws_by_popularity():
    from components.trainer import sampling

    sampler = sampling.NegativeSampler(np.array([7, 8, 9]), np.array([0.7, 0.2, 0.1]), 20_000)
    tf.random.set_seed(0)
    drawn = sampler().numpy()
    assert drawn.shape == (20_000,) and set(drawn) <= {7, 8, 9}
    np.testing.assert_allclose([np.mean(drawn == i) for i in (7, 8, 9)], [0.7, 0.2, 0.1],
                               atol=0.02)


def test_sampled_softmax_above_the_catalogue_threshold(data, monkeypatch):
    from components.trainer import distribute, sampling

    vocab = data["vocab"]
    full = hp.HParams.from_dict({"embedding_dim": 16, "use_timestamps": False})
    assert full.full_softmax and not full.samples_softmax(vocab.num_movies)  # the default
    hparams = hp.HParams.from_dict({
        "embedding_dim": 16, "epochs": 2, "batch_size": 256, "full_softmax": True,
        "sampled_softmax_min_catalogue": N_MOVIES - 1, "num_sampled_negatives": 64},
        preset=False)
    assert hparams.full_softmax and hparams.samples_softmax(vocab.num_movies)
    counts = sampling.training_movie_counts(hparams, vocab, data["rating"]["train"])
    train = inputs.make_dataset(data["rating"]["train"], inputs.rating_feature_spec(), 4096,
                                shuffle=False)
    assert counts.sum() == sum(len(b[contract.MOVIE_ID]) for b in train)
    assert (counts != vocab.movie_counts).any()  # the training split only

    seen = []  # what the log-Q correction and the accidental-hit removal are given
    correction, removal = tfrs.layers.loss.SamplingProbablityCorrection, \
        tfrs.layers.loss.RemoveAccidentalHits
    original_correction, original_removal = correction.__call__, removal.call
    monkeypatch.setattr(correction, "__call__", lambda self, logits, probability: (
        seen.append({"candidate_sampling_probability": probability}),
        original_correction(self, logits, probability))[1])
    monkeypatch.setattr(removal, "call", lambda self, labels, logits, ids: (
        seen[-1].update(candidate_ids=ids), original_removal(self, labels, logits, ids))[1])
    model = distribute.build_and_fit(hparams, vocab, data["rating"]["train"], train_steps=0)
    assert model.task.negative_sampler.num_samples == 64
    probe = next(iter(inputs.input_dataset(hparams, vocab, data["rating"]["train"], True)))
    tf.random.set_seed(1)  # the same pool of negatives for both losses
    before = _loss(model, probe)
    probability, ids = seen[-1]["candidate_sampling_probability"], seen[-1]["candidate_ids"]
    assert probability.shape == (256 + 64,) and ids.shape == (256 + 64,)
    expected = vocab.candidate_probabilities(counts=counts)[
        trainer_eval.movie_rows(vocab, ids.numpy())]
    np.testing.assert_allclose(probability.numpy(), expected, rtol=1e-6)
    model.fit(inputs.input_dataset(hparams, vocab, data["rating"]["train"], True),
              epochs=hparams.epochs, verbose=0)
    tf.random.set_seed(1)
    assert _loss(model, probe) < 0.95 * before


def test_training_budget_keeps_the_schedule_and_caps_the_examples(data):
    """Below ``train_example_budget`` the epochs are whole passes; above it, training
    sees the budget (one pass at least) in as many segments as ``epochs``, and the
    cosine rate steps down once per segment as it would once per epoch."""
    from components.trainer import distribute

    train = data["rating"]["train"]
    size = inputs.count_examples(train)
    assert size == sum(len(b[contract.MOVIE_ID]) for b in inputs.make_dataset(
        train, inputs.rating_feature_spec(), 4096, shuffle=False))
    batch = 1024  # few steps per epoch: what is counted is steps, not what they learn
    # (and the full softmax over the 400 movies: a third of an in-batch step's time here)
    base = {"embedding_dim": 8, "epochs": 3, "batch_size": batch, "top_ks": [10],
            "learning_rate_schedule": "cosine", "optimizer": "adam", "full_softmax": True}
    whole = hp.HParams.from_dict({**base, "train_example_budget": 3 * size}, preset=False)
    assert whole.steps_per_epoch(size) is None
    assert hp.HParams.from_dict({**base, "train_example_budget": 0},
                                preset=False).steps_per_epoch(10 ** 12) is None
    capped = hp.HParams.from_dict({**base, "train_example_budget": size // 2}, preset=False)
    steps = capped.steps_per_epoch(size)  # one pass at least, in 3 segments
    assert steps == -(-size // (3 * batch)) and 3 * steps * batch >= size

    class Batches(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.per_epoch, self.rates = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.per_epoch.append(0)

        def on_train_batch_end(self, batch, logs=None):
            if not self.per_epoch[-1]:  # the rate the schedule set for this epoch
                self.rates.append(float(tf.keras.backend.get_value(
                    self.model.optimizer.learning_rate)))
            self.per_epoch[-1] += 1

    for hparams, expected in ((whole, [-(-size // batch)] * 3), (capped, [steps] * 3)):
        counter = Batches()
        model = distribute.build_and_fit(hparams, data["vocab"], train, callbacks=[counter])
        assert counter.per_epoch == expected
        # No catalogue top-K in the epoch history: not computed while training.
        assert "loss" in model.history.history
        assert not [name for name in model.history.history if "top_k" in name]
        assert model.train_examples == size
        assert model.examples_seen == (3 * size if hparams is whole else 3 * steps * batch)
        np.testing.assert_allclose(counter.rates, [
            0.1 * 0.5 * (1 + np.cos(np.pi * e / 3)) for e in range(3)], rtol=1e-5)


def test_streamed_ranks_and_sampled_eval_users(data, rating_history):
    from components.trainer import run

    rng = np.random.default_rng(3)
    queries, catalogue = rng.normal(size=(50, 4)), rng.normal(size=(37, 4)).astype(np.float32)
    labels = rng.integers(-1, 37, 50)
    excluded = (rng.integers(0, 50, 200), rng.integers(0, 37, 200))
    whole = trainer_eval.label_ranks(queries, catalogue, labels, excluded, chunk_size=1000)
    chunked = trainer_eval.label_ranks(queries, catalogue, labels, excluded, chunk_size=5)
    np.testing.assert_array_equal(whole, chunked)
    positions, rows = rating_history.pairs_of(np.array([1, 99999, 1]))
    assert list(rows) == list(rating_history.get(1)) * 2 and set(positions) == {0, 2}

    hparams = hp.HParams.from_dict({"embedding_dim": 8, "use_timestamps": False,
                                    "eval_sample_users": 25, "top_ks": [10],
                                    "recency_windows_days": []})
    model = M.build_model(hparams, data["vocab"])
    metrics = run.evaluate(model, hparams, data["vocab"], data["rating"]["train"],
                           data["rating"]["eval"])
    users = np.random.default_rng(hparams.seed).choice(data["vocab"].user_ids, 25, replace=False)
    evaluation = inputs.make_dataset(data["rating"]["eval"], inputs.rating_feature_spec(), 4096,
                                     shuffle=False)
    expected = sum(np.isin(b[contract.USER_ID].numpy(), users).sum() for b in evaluation)
    assert metrics["eval_sampled_users"] == 25 and metrics["queries"] == expected > 0


_DISTRIBUTED = r"""
import json, os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from components import contract
from components.evaluator.slices import SliceSpec
from components.trainer import distribute, evaluation, export, hparams as hp, inputs
from components.trainer.vocabulary import load_vocabulary

vocab_dir, train, export_dir = sys.argv[1:4]
vocab = load_vocabulary(vocab_dir)
hparams = hp.HParams.from_dict({"embedding_dim": 16, "full_softmax": True,
                                "optimizer": "adam", "learning_rate": 0.05,
                                "batch_size": 128, "top_ks": [10]}, preset=False)
mirrored = distribute.choose_strategy(["/cpu:0", "/cpu:1"])
users = {contract.USER_ID: tf.constant(vocab.user_ids[:5])}
initial = []
for strategy in (tf.distribute.get_strategy(), mirrored):
    model = distribute.build_and_fit(hparams, vocab, train, strategy, train_steps=0)
    initial.append(model.query_tower(users).numpy())
probe = next(iter(inputs.input_dataset(model.hparams, vocab, train, training=True)))
before = float(model.compute_loss(probe, training=True))
model.fit(inputs.input_dataset(model.hparams, vocab, train, training=True).take(40),
          epochs=1, verbose=0)
after = float(model.compute_loss(probe, training=True))
export.save(export.export_module(model, hparams, vocab, SliceSpec(),
                                 evaluation.catalogue_embeddings(model.candidate_tower, vocab)),
            export_dir)
ranking = distribute.build_and_fit(  # Keras' own mean losses refuse a strategy
    hp.HParams.from_dict({"model": "ranking", "embedding_dim": 8}), vocab, train, mirrored,
    train_steps=3)
# Sampled softmax (in-batch plus a shared pool, log-Q) with title tokens, whose
# gradients are IndexedSlices of as many rows as the batch and pool have tokens.
titled = hp.HParams.from_dict({"embedding_dim": 16, "batch_size": 64, "use_title": True,
                               "num_sampled_negatives": 32, "sampled_softmax_min_catalogue": 1,
                               "recency_windows_days": []})
sampled = distribute.build_and_fit(titled, vocab, train, mirrored, train_steps=0)
tokens = sampled.candidate_tower.title_embedding.embeddings
tokens_before = tokens.numpy()
sampled.fit(inputs.input_dataset(sampled.hparams, vocab, train, training=True).take(3),
            epochs=1, verbose=0)
loaded = tf.saved_model.load(export_dir)
served = loaded.signatures[contract.SERVING_SIGNATURE](**users)[contract.QUERY_EMBEDDING]
print(json.dumps({
    "replicas": mirrored.num_replicas_in_sync, "batch_size": model.hparams.batch_size,
    "learning_rate": model.hparams.learning_rate, "before": before, "after": after,
    "same_init": float(np.abs(initial[0] - initial[1]).max()),
    "export_error": float(np.abs(served.numpy() - model.query_tower(users).numpy()).max()),
    "ranking_batch": ranking.hparams.batch_size,
    "sampled": bool(sampled.hparams.samples_softmax(vocab.num_movies)),
    "title_moved": float(np.abs(tokens.numpy() - tokens_before).max()),
    "title_replicas_agree": float(max(np.abs(part.numpy() - tokens.values[0].numpy()).max()
                                      for part in tokens.values)),
}))
"""


@pytest.mark.e2e  # the Trainer's work end to end, in a process of its own
def test_mirrored_strategy_on_two_logical_cpus(data, tmp_path):
    """MirroredStrategy over two logical CPUs (configured before TensorFlow initialises,
    hence a subprocess): global batch and learning rate scaled by 2, the same
    initialization as the default strategy, the loss falls, the export serves the
    trained model's answers; a ranking model (mean-squared-error loss) trains too, and
    so does sampled softmax with title tokens (sparse gradients of a different size at
    each step), its replicas' copies updated alike."""
    import json
    import os
    import subprocess

    from components.example_gen import generate

    vocab_dir = generate.OutputPaths.under(str(data["root"])).vocabulary
    out = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED, vocab_dir, data["rating"]["train"],
         str(tmp_path / "export")], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["batch_size"] == 256
    assert result["learning_rate"] == pytest.approx(0.1)
    assert result["same_init"] < 1e-6
    assert result["after"] < 0.98 * result["before"]
    assert result["export_error"] < 1e-5
    assert result["ranking_batch"] == 2 * hp.preset("ranking").batch_size
    assert result["sampled"] and result["title_moved"] > 0
    assert result["title_replicas_agree"] < 1e-6


def test_rated_npz_holds_each_users_latest_movies_in_time_order(tmp_path):
    """Sequence models' rated.npz: beside each user's movies (by id), the context and
    label of their latest example, oldest first -- found across batches and files in
    any order, padding and unknown movies dropped."""
    import dataclasses

    vocab = dataclasses.replace(_small_vocab(), max_context_length=3,
                                max_context_movie_genre_length=2)
    hparams = hp.HParams(model=hp.SEQUENTIAL, embedding_dim=4, eval_batch_size=2)
    # (user, timestamp, context, label): user 1's latest is the second example written.
    rows = [(1, 100, [10, 11, 0], 12), (1, 300, [12, 13, 99], 14), (2, 50, [15, 0, 0], 10),
            (1, 200, [11, 12, 0], 13), (2, 40, [0, 0, 0], 15)]
    files = []
    for part, chunk in enumerate((rows[:3], rows[3:])):
        path = str(tmp_path / f"part-{part}.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for user, time, context, label in chunk:
                writer.write(inputs.serialize_example({
                    contract.USER_ID: [user], contract.TIMESTAMP: [time],
                    contract.CONTEXT_MOVIE_ID: context, contract.LABEL_MOVIE_ID: [label],
                    contract.CONTEXT_MOVIE_RATING: [4.0] * 3,
                    contract.CONTEXT_MOVIE_YEAR: [1990] * 3,
                    contract.CONTEXT_MOVIE_GENRE: ["Drama", "UNK"]}))
        files.append(path)
    rated = export.rated_movies(hparams, vocab, [files[1], files[0]])
    export.save_rated_movies(rated, str(tmp_path))
    from components.pusher import serving

    loaded = serving.RatedMovies(str(tmp_path / contract.RATED_FILE))
    assert loaded.recent(1).tolist() == [12, 13, 14]      # 99: not in the vocabulary
    assert loaded.recent(2).tolist() == [15, 10]
    assert loaded.movies(1).tolist() == [10, 11, 12, 13, 14]
    assert loaded.last_timestamp(1) == 300 and loaded.last_timestamp(2) == 50
    assert loaded.recent(7).tolist() == []
