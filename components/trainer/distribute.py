"""Building and training a model under a ``tf.distribute`` strategy.

* :func:`choose_strategy` -- ``MirroredStrategy`` over the GPUs present (or the given
  devices), the default strategy otherwise.
* :func:`global_hparams` -- the hyperparameters of one replica -> those of the whole
  step: global batch = ``batch_size x R`` (Keras splits each batch across the ``R``
  replicas, so every replica still sees ``batch_size`` examples and as many in-batch
  negatives), learning rate scaled linearly, ``learning_rate x R``.
* :func:`build_and_fit` -- what ``run_fn`` trains: training statistics (timestamps, the
  movies' training popularity for sampled softmax), the model built and compiled in the
  strategy's scope, then ``fit`` over the ``epochs``, or over as many segments of the
  repeated data when the training split is larger than ``train_example_budget``
  (``HParams.steps_per_epoch``).

The replicas' gradients are summed. So the retrieval loss (a sum over the batch, as
TFRS's) becomes the sum over the global batch; the rating loss is averaged over the global
batch (``tasks.GlobalMeanSquaredError``); regularization losses, added once per replica,
are divided by ``R`` in ``models._Model.train_step``, so that the penalty per global
step is the single-device one.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import tensorflow as tf

from components.trainer import inputs, models, recency, sampling
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


def choose_strategy(devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """``MirroredStrategy(devices)`` when ``devices`` are given; otherwise over every
    GPU present, or the default (single-device) strategy when there is none."""
    if devices:
        return tf.distribute.MirroredStrategy(list(devices))
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    return tf.distribute.MirroredStrategy(gpus) if gpus else tf.distribute.get_strategy()


def global_hparams(hparams: HParams, replicas: int) -> HParams:
    """``hparams`` with ``batch_size`` and ``learning_rate`` multiplied by ``replicas``."""
    if replicas == 1:
        return hparams
    return dataclasses.replace(hparams, batch_size=hparams.batch_size * replicas,
                               learning_rate=hparams.learning_rate * replicas)


def build_and_fit(hparams: HParams, vocabulary: Vocabulary, train_files,
                  strategy: Optional[tf.distribute.Strategy] = None,
                  train_steps: Optional[int] = None,
                  callbacks: Sequence[keras.callbacks.Callback] = ()):
    """Builds, compiles and trains ``hparams.model`` on ``train_files`` under
    ``strategy`` (default :func:`choose_strategy`).

    ``train_steps``: train on the first N global batches, once (0: untrained); None: the
    ``epochs`` of ``hparams`` (segments of the budget, ``HParams.steps_per_epoch``).
    Returns the trained model (its ``hparams`` are the global ones,
    :func:`global_hparams`), with ``train_examples`` (the training split's size) and
    ``examples_seen`` (what ``fit`` trained on) as attributes.
    """
    strategy = strategy or choose_strategy()
    step_hparams = global_hparams(hparams, strategy.num_replicas_in_sync)
    timestamp_stats = inputs.training_timestamp_stats(hparams, train_files)
    movie_counts = None
    if hparams.kind.retrieves and hparams.samples_softmax(vocabulary.num_movies):
        movie_counts = sampling.training_movie_counts(hparams, vocabulary, train_files)
    recency_table = recency.training_recency(hparams, vocabulary, train_files)
    train_data = inputs.input_dataset(step_hparams, vocabulary, train_files, training=True)
    with strategy.scope():
        model = models.compile_model(models.build_model(
            step_hparams, vocabulary, timestamp_stats, movie_counts, recency_table),
            step_hparams)
        # Here, so that every variable belongs to the strategy whatever touches the
        # model first.
        models.create_variables(model, next(iter(train_data)))
    model.train_examples = inputs.count_examples(train_files)
    steps_per_epoch = step_hparams.steps_per_epoch(model.train_examples)
    if train_steps is not None:  # a fixed number of batches, once
        model.examples_seen = min(model.train_examples,
                                  int(train_steps) * step_hparams.batch_size)
        if train_steps:
            model.fit(train_data.take(int(train_steps)), epochs=1, verbose=0,
                      callbacks=list(callbacks))
    elif steps_per_epoch:  # the budget's segments of the repeated data
        model.examples_seen = hparams.epochs * steps_per_epoch * step_hparams.batch_size
        model.fit(train_data.repeat(), epochs=hparams.epochs, steps_per_epoch=steps_per_epoch,
                  verbose=0, callbacks=list(callbacks))
    else:
        model.examples_seen = hparams.epochs * model.train_examples
        model.fit(train_data, epochs=hparams.epochs, verbose=0, callbacks=list(callbacks))
    return model
