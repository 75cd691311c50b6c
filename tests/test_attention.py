"""The ``attention`` model kind: SASRec-style causal self-attention over the context movies.

A row of the kind table like ``sequential`` (sequence examples, context histories, served
with both variants); its query ignores padding and the movies after the last real one;
its every-position loss is the next movie's at each position; it trains, exports and is
pushed like the GRU. Small synthetic data (data/synthetic.py through the example
generator), a few training steps: seconds per test.
"""

import dataclasses
import os

import numpy as np
import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)

import tensorflow as tf

import pipeline_runner
from components import contract
from components.evaluator.slices import SliceSpec
from components.pusher import executor, serving
from components.trainer import hparams as hp
from components.trainer import inputs
from components.trainer import models as M
from components.trainer import run
from components.trainer import vocabulary as vocab_lib
from pipeline import configs, recommend
from test_pusher import _expected_top_k, _load_in_fresh_process

ATTENTION = contract.ATTENTION
# Small towers and no dropout unless a test says otherwise (dropout is inactive at
# inference anyway, but the training-mode losses below must be deterministic).
TINY = {"model": ATTENTION, "embedding_dim": 16, "attention_dropout": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The example generator's outputs for 100 synthetic users (a few seconds)."""
    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig
    from data import synthetic

    root = tmp_path_factory.mktemp("attention")
    synthetic.generate(root / "raw", 100, 150, 4000, "1m", seed=5)
    paths = generate.OutputPaths.under(str(root))
    generate.generate(str(root / "raw"), ExampleGenConfig(seed=0), paths)
    return {"vocabulary_dir": paths.vocabulary,
            "vocab": vocab_lib.load_vocabulary(paths.vocabulary),
            "files": {split: f"{paths.sequence_examples}/Split-{split}"
                      for split in contract.SPLITS}}


def _ids(data, rows):
    """Vocabulary movie ids at ``rows``."""
    return [int(data["vocab"].movie_ids[row]) for row in rows]


def _queries(model, rows):
    return model({contract.CONTEXT_MOVIE_ID: tf.constant(rows, tf.int64)}).numpy()


# ---------------------------------------------------------------------------------------
# A kind of the table, chosen like the others.


def test_attention_is_a_row_of_the_kind_table_the_pipeline_accepts():
    kind, gru = contract.model_kind(ATTENTION), contract.model_kind(contract.SEQUENTIAL)
    assert dataclasses.replace(kind, name=contract.SEQUENTIAL) == gru  # reads what it reads
    assert kind.examples_key == contract.SEQUENCE_EXAMPLES and not kind.gated_on_rmse
    preset = hp.preset(ATTENTION)
    assert preset == hp.HParams(**hp.PRESETS[ATTENTION]) and preset.kind is kind
    for bad in ({"attention_heads": 0}, {"attention_dropout": 1.0},
                {"every_position_weight": -1}, {"attention_blocks": -1}):
        with pytest.raises(ValueError):
            hp.HParams.from_dict({"model": ATTENTION, **bad})

    args = pipeline_runner.build_parser().parse_args(
        ["run", "--models", f"sequential,{ATTENTION}",
         "--hparam", f"{ATTENTION}.attention_blocks=1"])
    _, training, _, _ = pipeline_runner.settings_from_args(args)
    assert training.models == (contract.SEQUENTIAL, ATTENTION)
    assert hp.HParams.from_dict(training.model_hparams(ATTENTION)).attention_blocks == 1
    with pytest.raises(ValueError, match="unknown model kind"):
        configs.TrainingConfig(models=("attentions",))


# ---------------------------------------------------------------------------------------
# Causality and padding.


@pytest.mark.parametrize("share", [True, False])
def test_query_ignores_padding_and_reads_the_last_real_movie(data, share):
    model = M.build_model(hp.HParams.from_dict({**TINY, "share_embeddings": share}),
                          data["vocab"])
    length = data["vocab"].max_context_length
    history = _ids(data, [3, 1, 7])
    padded = _queries(model, [history + [0] * (length - 3), _ids(data, range(length))])
    short = _queries(model, [history])
    five = _queries(model, [history + [0, 0]])
    assert padded.shape == (2, 16)
    np.testing.assert_allclose(padded[0], short[0], atol=1e-5)
    np.testing.assert_allclose(five[0], short[0], atol=1e-5)
    # Any earlier movie changes the query; so does the order (learned positions).
    changed = _queries(model, [_ids(data, [9, 1, 7]), _ids(data, [1, 3, 7])])
    assert np.abs(changed - short).max(axis=1).min() > 1e-4
    # A history longer than the examples' window: only its last `length` movies count.
    longer = _ids(data, range(20, 20 + length + 4))
    np.testing.assert_allclose(_queries(model, [longer]),
                               _queries(model, [longer[-length:]]), atol=1e-5)


def test_the_output_at_a_position_does_not_depend_on_later_movies(data):
    model = M.build_model(hp.HParams.from_dict(TINY), data["vocab"])
    tower = model.query_tower
    first = tf.constant([_ids(data, [4, 8, 15, 16, 23, 42]) + [0] * 4], tf.int64)
    second = tf.constant([_ids(data, [4, 8, 15, 50, 60, 70, 80, 90, 99, 101])], tf.int64)
    (a, mask_a, last_a), (b, mask_b, last_b) = tower.sequence(first), tower.sequence(second)
    assert int(last_a[0]) == 5 and int(last_b[0]) == 9
    assert mask_a.numpy().sum() == 6 and mask_b.numpy().all()
    np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-5)   # same first three movies
    assert np.abs(a[0, 3].numpy() - b[0, 3].numpy()).max() > 1e-4


# ---------------------------------------------------------------------------------------
# The loss: the label's, plus the next movie's at every earlier position.


def _log_softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def test_every_position_loss_predicts_each_next_context_movie(data):
    vocab = data["vocab"]
    weight = 0.5
    model = M.build_model(hp.HParams.from_dict({**TINY, "every_position_weight": weight,
                                                "full_softmax": True}), vocab)
    length = vocab.max_context_length
    contexts = [_ids(data, [2, 5, 9]) + [0] * (length - 3), _ids(data, range(10, 10 + length)),
                _ids(data, [30]) + [0] * (length - 1)]
    labels = _ids(data, [11, 40, 31])
    features = {contract.CONTEXT_MOVIE_ID: tf.constant(contexts, tf.int64),
                contract.LABEL_MOVIE_ID: tf.constant(labels, tf.int64)}
    outputs, _, _ = model.query_tower.sequence(features[contract.CONTEXT_MOVIE_ID])
    outputs = outputs.numpy()
    catalogue = model.candidate_tower(tf.constant(vocab.movie_ids)).numpy()
    row = {int(movie): i for i, movie in enumerate(vocab.movie_ids)}

    def cross_entropy(query, movie):
        return -_log_softmax(query @ catalogue.T)[row[movie]]

    label_loss = sum(cross_entropy(outputs[b, len([m for m in c if m]) - 1], labels[b])
                     for b, c in enumerate(contexts))
    context_loss = sum(cross_entropy(outputs[b, i], c[i + 1])
                       for b, c in enumerate(contexts) for i in range(length - 1) if c[i + 1])
    assert float(model.compute_loss(features, training=False)) == pytest.approx(
        label_loss, rel=1e-4)
    assert float(model.compute_loss(features, training=True)) == pytest.approx(
        label_loss + weight * context_loss, rel=1e-4)


# ---------------------------------------------------------------------------------------
# Trained, exported and pushed like the GRU.


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """An epoch of the preset (small towers, one block), exported as the Trainer does."""
    hparams = hp.HParams.from_dict({"model": ATTENTION, "embedding_dim": 16,
                                    "attention_blocks": 1, "batch_size": 128, "epochs": 1})
    vocab = data["vocab"]
    train = inputs.input_dataset(hparams, vocab, data["files"][contract.TRAIN], training=True)
    model = M.compile_model(M.build_model(hparams, vocab), hparams)
    probe = next(iter(inputs.input_dataset(hparams, vocab, data["files"][contract.EVAL],
                                           training=False)))
    M.create_variables(model, probe)
    before = float(model.compute_loss(probe))
    model.fit(train, epochs=hparams.epochs, verbose=0)
    after = float(model.compute_loss(probe))
    metrics = run.evaluate(model, hparams, vocab, data["files"][contract.TRAIN],
                           data["files"][contract.EVAL])
    directory = str(tmp_path_factory.mktemp("attention_export") / "Format-Serving")
    run.export(model, hparams, vocab, data["vocabulary_dir"], directory, metrics,
               slices=SliceSpec(), history_files=list(data["files"].values()))
    return {"model": model, "dir": directory, "metrics": metrics, "probe": probe,
            "losses": (before, after)}


def test_attention_trains_and_its_export_answers_queries(data, exported):
    before, after = exported["losses"]
    assert after < before                                   # on held-out examples
    assert 0 < exported["metrics"]["top_100"] <= 1
    model, probe = exported["model"], exported["probe"]
    loaded = tf.saved_model.load(exported["dir"])
    histories = tf.constant([_ids(data, [1, 2, 3]), _ids(data, [7, 8, 0])], tf.int64)
    served = loaded.signatures["serving_default"](context_movie_id=histories)
    np.testing.assert_allclose(served["query_embedding"].numpy(), _queries(model, histories),
                               atol=1e-5)
    examples = tf.constant([inputs.serialize_example(
        {contract.CONTEXT_MOVIE_ID: row.tolist(), contract.LABEL_MOVIE_ID: [label]})
        for row, label in zip(probe[contract.CONTEXT_MOVIE_ID].numpy()[:4],
                              probe[contract.LABEL_MOVIE_ID].numpy()[:4])])
    ranks = loaded.signatures[contract.EVAL_SIGNATURE](examples=examples)[contract.LABEL_RANK]
    assert ranks.shape == (4,)
    assert (0 <= ranks.numpy()).all() and (ranks.numpy() < data["vocab"].num_movies).all()
    from_examples = loaded.signatures["serve_tf_examples"](examples=examples)
    np.testing.assert_allclose(from_examples["query_embedding"].numpy(),
                               model(probe).numpy()[:4], atol=1e-5)


@pytest.mark.e2e  # the Pusher end to end; served models loaded by a fresh process
def test_the_pusher_serves_it_with_both_variants(exported, tmp_path):
    root = str(tmp_path / "serving")
    push = executor.push(exported["dir"], root, ATTENTION, ATTENTION, blessed=True,
                         max_k=20)
    assert push["pushed"] and set(push["destinations"]) == {"brute_force", "scann"}
    assert push["destinations"]["scann"].startswith(os.path.join(root, ATTENTION + "_scann"))
    info = serving.read_serving_info(push["destinations"]["brute_force"])
    assert info["inputs"] == [contract.CONTEXT_MOVIE_ID]
    assert info[contract.MAX_CONTEXT_LENGTH] == exported["model"].query_tower.max_length
    k = 10
    inputs_ = serving.query_inputs(info["inputs"], histories=[[5, 17, 130], [44, 8], [1]])
    _, _, exact = _expected_top_k(exported["dir"], inputs_, k)
    scann, brute = _load_in_fresh_process(
        [(variant, push["destinations"][variant]) for variant in ("scann", "brute_force")],
        k, inputs_)
    assert brute["movie_ids"] == exact.tolist() and not brute["scann_imported"]
    assert np.asarray(scann["movie_ids"]).shape == (3, k)
    for variant in (scann, brute):
        for row, excluding in zip(variant["movie_ids"], variant["excluding"]):
            assert not set(row[:3]) & set(excluding)
    # `recommend --model attention --history ...` (exact scoring, in this process).
    history = [5, 17, 130]
    _, items, _ = recommend.recommend(root, k=5, history=history, model_name=ATTENTION,
                                      variant=recommend.BRUTE_FORCE)
    assert len(items) == 5 and not {item.movie_id for item in items} & set(history)
