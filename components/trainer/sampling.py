"""Sampled softmax for large catalogues: popularity from the training data, and a shared
pool of negatives drawn by it.

A full softmax costs ``B x M`` logits per step and runs the candidate tower over the whole
catalogue of ``M`` movies; above ``HParams.sampled_softmax_min_catalogue`` the models that
retrieve train instead on ``B + N`` candidates per step (``tasks.RetrievalTask``): the
batch's own ``B`` movies (in-batch negatives, drawn by the data in proportion to their
popularity) plus ``N = num_sampled_negatives`` movies drawn here, with replacement, from
the same popularity. Both kinds of negatives thus come from one distribution ``Q``, and the
log-Q correction (``logit - log Q(movie)``) makes the sampled loss an estimate of the full
one.

* :func:`training_movie_counts` -- the training files -> int64 ``[M]`` label counts per
  vocabulary row, read in one streaming pass (the vocabulary's ``movie_counts`` span both
  splits; these are the training examples' own).
* :class:`NegativeSampler` -- ``sampler()`` -> int64 ``[N]`` movie ids drawn by popularity.
"""

from __future__ import annotations

from typing import Optional

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components.trainer import inputs
from components.trainer.evaluation import movie_rows
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary


def training_movie_counts(hparams: HParams, vocabulary: Vocabulary, file_pattern,
                          max_batches: Optional[int] = None) -> np.ndarray:
    """int64 ``[M]``: how many training examples of ``file_pattern`` have each vocabulary
    movie as their label (``hparams.kind.label_key``); one pass, one batch in memory at
    a time (labels outside the vocabulary are not counted)."""
    key = hparams.kind.label_key
    spec = inputs.select(inputs.examples_spec(hparams.kind, vocabulary), [key])
    dataset = inputs.make_dataset(file_pattern, spec, hparams.eval_batch_size,
                                  shuffle=False)
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    counts = np.zeros(vocabulary.num_movies, np.int64)
    for batch in dataset:
        rows = movie_rows(vocabulary, batch[key].numpy().reshape(-1))
        counts += np.bincount(rows[rows >= 0], minlength=vocabulary.num_movies)
    return counts


class NegativeSampler(tf.Module):
    """``sampler()`` -> int64 ``[N]``: ``N`` movie ids drawn with replacement, movie ``i``
    with probability ``probabilities[i]`` (float ``[M]``, aligned with ``movie_ids``)."""

    def __init__(self, movie_ids: np.ndarray, probabilities: np.ndarray, num_samples: int,
                 name: str = "negative_sampler"):
        super().__init__(name=name)
        self._ids = tf.constant(np.asarray(movie_ids, np.int64))
        self._logits = tf.constant(np.log(np.asarray(probabilities, np.float64))
                                   .astype(np.float32)[None, :])
        self.num_samples = int(num_samples)

    def __call__(self):
        rows = tf.random.categorical(self._logits, self.num_samples, dtype=tf.int64)[0]
        return tf.gather(self._ids, rows)
