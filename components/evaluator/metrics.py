"""A custom Keras metric the Evaluator (TFMA) computes beside top-K accuracy.

:class:`SparseNdcgAtK`: NDCG@k of one relevant item per example -- the label's
vocabulary row ``y_true`` ``[B]`` (or ``[B, 1]``; -1: not in the vocabulary, a miss) in
the scores ``y_pred`` ``[B, M]`` -- ``1 / log2(2 + rank)`` when the label's 0-based rank
is below ``k``, else 0, averaged over examples. The rank counts the movies scoring
strictly above the label (ties in the label's favour, as ``in_top_k`` and TFMA's
``SparseTopKCategoricalAccuracy`` count them; the Trainer counts them against it: with
continuous scores ties do not occur). TFMA loads it by ``class_name`` and ``module``
(components/evaluator/config.py).
"""

from __future__ import annotations

import tensorflow as tf  # the package `components`, imported first, chose Keras 2

keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1


class SparseNdcgAtK(keras.metrics.Metric):
    """Mean NDCG@k of one relevant item per example (see the module docstring)."""

    def __init__(self, k: int = 10, name: str = "ndcg_10", **kwargs):
        super().__init__(name=name, **kwargs)
        self.k = int(k)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.reshape(tf.cast(y_true, tf.int64), [-1])
        scores = tf.cast(y_pred, tf.float32)
        known = labels >= 0
        label_scores = tf.gather(scores, tf.maximum(labels, 0), batch_dims=1)
        rank = tf.reduce_sum(tf.cast(scores > label_scores[:, None], tf.float64), axis=1)
        gain = tf.where(known & (rank < self.k),
                        1.0 / (tf.math.log(2.0 + rank) / tf.math.log(tf.constant(2.0, tf.float64))),
                        tf.zeros_like(rank))
        weight = (tf.ones_like(gain) if sample_weight is None
                  else tf.reshape(tf.cast(sample_weight, tf.float64), [-1]))
        self.total.assign_add(tf.reduce_sum(gain * weight))
        self.count.assign_add(tf.reduce_sum(weight))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "k": self.k}
