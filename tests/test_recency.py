"""The recency prior of the retrieval model (components/trainer/recency.py).

Its table counts each window strictly before each day (never the example's own); the
retrieval loss adds ``weights x table[the example's day]`` to the logits in training and
the end of training's prior otherwise, which the towers' extra coordinates carry, so the
export's signatures need no time. Hand-made tables and the tests' synthetic data.
"""

import numpy as np
import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)

import tensorflow as tf

from components import contract
from components.trainer import inputs, recency, tasks, towers
from components.trainer import hparams as hp
from components.trainer import models as M
from components.trainer import run
from components.trainer import vocabulary as vocab_lib
from components.trainer.evaluation import movie_rows
from test_models import _log_softmax, _small_vocab

DAY = recency.DAY_SECONDS


def test_the_table_counts_each_window_strictly_before_each_day():
    # Movie rows by day (days 100..104); row -1 (outside the vocabulary) is not counted.
    ratings = [(0, 100), (0, 100), (1, 101), (0, 102), (2, 102), (-1, 102), (1, 104)]
    rows = np.array([r for r, _ in ratings])
    times = np.array([d for _, d in ratings]) * DAY + 3_600  # within the day
    half = len(rows) // 2  # two batches: the counts merge across them
    table = recency.recency_table([(rows[:half], times[:half]), (rows[half:], times[half:])],
                                  num_movies=3, windows_days=(1, 2))
    assert table.origin == 100 * DAY and table.bucket_seconds == DAY
    assert table.window_buckets == (1, 2)
    assert table.log_counts.shape == (5 + 1, 3, 2)  # days 100..104, then the end
    counts = np.expm1(table.log_counts).round().astype(int)
    # Day 100 sees nothing before it; day 101 sees day 100's two ratings of movie 0.
    np.testing.assert_array_equal(counts[0], 0)
    np.testing.assert_array_equal(counts[1, :, 0], [2, 0, 0])
    np.testing.assert_array_equal(counts[3, :, 0], [1, 0, 1])      # day 102 only
    np.testing.assert_array_equal(counts[3, :, 1], [1, 1, 1])      # days 101-102
    np.testing.assert_array_equal(counts[2, :, 1], [2, 1, 0])      # days 100-101
    # The end (after day 104): the last day, and the last two days (103 has none).
    np.testing.assert_array_equal(counts[5, :, 0], [0, 1, 0])
    np.testing.assert_array_equal(table.end, table.log_counts[-1])

    # A bound on the entries widens the buckets (here to 3 days): the windows round up.
    wide = recency.recency_table([(rows, times)], 3, (1, 2), max_entries=2 * 3 * 2)
    assert wide.bucket_seconds == 3 * DAY and wide.window_buckets == (1, 1)
    np.testing.assert_array_equal(np.expm1(wide.log_counts[1, :, 0]).round(), [3, 1, 1])
    with pytest.raises(ValueError, match="no training rating"):
        recency.recency_table([(np.array([-1]), np.array([DAY]))], 3, (1,))


def test_the_prior_gives_the_rows_a_sampled_loss_asks_for_and_the_end_to_serving():
    rng = np.random.default_rng(0)
    vocab = _small_vocab()  # movie ids 10..15
    table = recency.recency_table(
        [(rng.integers(-1, 6, 300), rng.integers(50, 80, 300) * DAY)], 6, (3, 10))
    prior = recency.RecencyPrior(table, vocab.movie_ids, serving_scale=1.0)
    prior.scaled_weights.assign(np.array([0.5, -0.25]) / recency.WEIGHT_SCALE)
    times = tf.constant(np.array([40, 55, 79, 200]) * DAY)  # before, within, after the data
    whole = prior.training_bias(times).numpy()                           # [4, 6]
    days = np.clip(np.array([40, 55, 79, 200]) - 50, 0, len(table.log_counts) - 1)
    expected = (table.log_counts[days] - table.end[None]) @ np.array([0.5, -0.25])
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole[3], 0.0)                            # past the end
    rows = tf.constant([5, 0, 0, 3], tf.int64)  # a sampled loss's candidates, repeated
    np.testing.assert_allclose(prior.training_bias(times, rows).numpy(),
                               whole[:, [5, 0, 0, 3]], rtol=1e-6)
    np.testing.assert_allclose(prior.end_prior(tf.constant([15, 10, 99])).numpy(),
                               [table.end[5], table.end[0], [0.0, 0.0]], rtol=1e-6)


def test_hparams_check_the_windows():
    assert hp.HParams.from_dict({"recency_windows_days": "7, 30"}).recency_windows_days \
        == (7, 30)
    for bad in ([0], [7, 7]):
        with pytest.raises(ValueError, match="distinct positive days"):
            hp.HParams.from_dict({"recency_windows_days": bad})
    with pytest.raises(ValueError, match="retrieval model only"):
        hp.HParams.from_dict({"model": "ranking", "recency_windows_days": [30]})


@pytest.mark.parametrize("full_softmax", [True, False])
def test_the_retrieval_task_adds_the_logit_bias(full_softmax):
    vocab = _small_vocab()
    tower = towers.MovieTower(vocab, 4)
    task = tasks.RetrievalTask(tower, vocab, full_softmax=full_softmax,
                               logq_correction=False, remove_accidental_hits=False,
                               ks=(1,))
    rng = np.random.default_rng(3)
    query = rng.normal(size=(3, 4)).astype(np.float32)
    ids = np.array([11, 15, 12], np.int64)
    bias = rng.normal(size=(3, vocab.num_movies)).astype(np.float32)  # per query, movie
    given = []

    def logit_bias(rows):
        given.append(rows)
        every = np.arange(vocab.num_movies) if rows is None else rows.numpy()
        return tf.constant(bias[:, every])

    loss = float(task(tf.constant(query), tower(tf.constant(ids)), tf.constant(ids),
                      compute_metrics=False, logit_bias=logit_bias))
    if full_softmax:
        assert given == [None]
        logits = query @ tower(tf.constant(vocab.movie_ids)).numpy().T + bias
        expected = -_log_softmax(logits)[np.arange(3), ids - 10].sum()
    else:  # the in-batch candidates' rows
        np.testing.assert_array_equal(given[0].numpy(), ids - 10)
        logits = query @ tower(tf.constant(ids)).numpy().T + bias[:, ids - 10]
        expected = -np.trace(_log_softmax(logits))
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small retrieval model with two recency windows, trained an epoch on synthetic
    data and exported as the Trainer does."""
    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig
    from data import synthetic

    root = tmp_path_factory.mktemp("recency")
    synthetic.generate(root / "raw", 200, 150, 8_000, "1m", seed=2)
    paths = generate.OutputPaths.under(str(root))
    generate.generate(str(root / "raw"), ExampleGenConfig(seed=0), paths)
    vocab = vocab_lib.load_vocabulary(paths.vocabulary)
    files = {s: f"{paths.rating_examples}/Split-{s}" for s in ("train", "eval")}
    hparams = hp.HParams.from_dict({"embedding_dim": 8, "epochs": 1, "batch_size": 256,
                                    "recency_windows_days": [7, 60]})
    from components.trainer import distribute

    model = distribute.build_and_fit(hparams, vocab, files["train"])
    metrics = run.evaluate(model, hparams, vocab, files["train"], files["eval"])
    directory = str(root / "export" / "Format-Serving")
    run.export(model, hparams, vocab, paths.vocabulary, directory, metrics,
               seen=run.training_movies(hparams, vocab, files["train"]))
    return {"model": model, "hparams": hparams, "vocab": vocab, "files": files,
            "dir": directory, "metrics": metrics,
            "table": recency.training_recency(hparams, vocab, files["train"])}


def test_training_adds_the_prior_at_the_examples_time_and_the_rest_uses_the_end(trained):
    model, vocab, table = trained["model"], trained["vocab"], trained["table"]
    weights = model.recency.window_weights.numpy()
    assert weights.shape == (2,) and not np.allclose(weights, 0.0)  # trained from 0
    batch = next(iter(inputs.input_dataset(trained["hparams"], vocab,
                                           trained["files"]["train"], training=False)))
    batch = {name: value[:64] for name, value in batch.items()}
    queries = model.query_tower(batch).numpy()
    catalogue = model.candidate_tower(tf.constant(vocab.movie_ids)).numpy()
    assert queries.shape == (64, 8 + 2) and catalogue.shape == (vocab.num_movies, 8 + 2)
    # Served (no training flag): the preset's serving scale times the trained weights.
    scale = trained["hparams"].recency_serving_scale
    assert scale == hp.preset(hp.RETRIEVAL).recency_serving_scale
    np.testing.assert_allclose(queries[:, -2:], np.broadcast_to(scale * weights, (64, 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(catalogue[:, -2:], table.end, rtol=1e-6)

    rows = movie_rows(vocab, batch[contract.MOVIE_ID].numpy())
    assert (rows >= 0).all()
    days = (batch[contract.TIMESTAMP].numpy() - table.origin) // table.bucket_seconds
    at_time = queries[:, :-2] @ catalogue[:, :-2].T + table.log_counts[days] @ weights
    served = queries @ catalogue.T
    for training, logits in ((True, at_time), (False, served)):
        expected = -_log_softmax(logits.astype(np.float64))[np.arange(64), rows].sum()
        assert float(model.compute_loss(batch, training=training)) == pytest.approx(
            expected, rel=1e-4)
    assert not np.allclose(at_time, served)  # the examples' time is not the end


def test_a_serving_scale_changes_what_is_served_and_not_what_is_trained(trained):
    model, vocab, table = trained["model"], trained["vocab"], trained["table"]
    scaled = M.build_model(
        hp.HParams.from_dict({**trained["hparams"].to_dict(), "recency_serving_scale": 3.0}),
        vocab, recency_table=table)
    batch = next(iter(inputs.input_dataset(trained["hparams"], vocab,
                                           trained["files"]["train"], training=False)))
    batch = {name: value[:64] for name, value in batch.items()}
    M.create_variables(M.compile_model(scaled, trained["hparams"]), batch)
    scaled.set_weights(model.get_weights())
    weights = model.recency.window_weights.numpy()

    queries = scaled.query_tower(batch).numpy()  # served: 3 x the trained weights
    np.testing.assert_allclose(queries[:, -2:], np.broadcast_to(3 * weights, (64, 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(queries[:, :-2], model.query_tower(batch).numpy()[:, :-2],
                               rtol=1e-6)
    np.testing.assert_allclose(scaled.query_tower(batch, training=True).numpy(),
                               model.query_tower(batch, training=True).numpy(), rtol=1e-6)
    # Training's loss is the unscaled model's; evaluation's scores with the served prior.
    assert float(scaled.compute_loss(batch, training=True)) == pytest.approx(
        float(model.compute_loss(batch, training=True)), rel=1e-6)
    catalogue = scaled.candidate_tower(tf.constant(vocab.movie_ids)).numpy()
    rows = movie_rows(vocab, batch[contract.MOVIE_ID].numpy())
    expected = -_log_softmax((queries @ catalogue.T).astype(np.float64))[np.arange(64), rows]
    assert float(scaled.compute_loss(batch, training=False)) == pytest.approx(
        expected.sum(), rel=1e-4)
    assert float(scaled.compute_loss(batch, training=False)) != pytest.approx(
        float(model.compute_loss(batch, training=False)), rel=1e-3)
    with pytest.raises(ValueError, match="recency_serving_scale must be non-negative"):
        hp.HParams.from_dict({"recency_serving_scale": -1})


def test_the_export_serves_user_ids_alone_with_the_prior(trained):
    model, vocab = trained["model"], trained["vocab"]
    loaded = tf.saved_model.load(trained["dir"])
    serving = loaded.signatures["serving_default"]
    assert set(serving.structured_input_signature[1]) == {contract.USER_ID}
    users = tf.constant(vocab.user_ids[:5])
    np.testing.assert_allclose(serving(user_id=users)[contract.QUERY_EMBEDDING].numpy(),
                               model.query_tower({contract.USER_ID: users}).numpy(),
                               atol=1e-5)
    candidates = np.load(f"{trained['dir']}/{contract.EXTRA_ASSETS}/{contract.CANDIDATES_FILE}")
    np.testing.assert_allclose(candidates["embeddings"][:, -2:], trained["table"].end,
                               rtol=1e-6)
    # eval_ranks (what the Evaluator gates on) ranks as the Trainer's figure did.
    dataset = inputs.input_dataset(trained["hparams"], vocab, trained["files"]["eval"],
                                   training=False)
    ranks = []
    for batch in dataset:
        examples = tf.constant([inputs.serialize_example(
            {contract.USER_ID: [int(u)], contract.MOVIE_ID: [int(m)]})
            for u, m in zip(batch[contract.USER_ID].numpy(), batch[contract.MOVIE_ID].numpy())])
        out = loaded.signatures[contract.EVAL_SIGNATURE](examples=examples)
        ranks.append(out[contract.LABEL_RANK].numpy())
    ranks = np.concatenate(ranks)
    assert np.mean(ranks < 100) == pytest.approx(trained["metrics"]["top_100"], abs=1e-6)
