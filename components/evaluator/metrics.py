"""The Evaluator's top-K metrics of retrieval-like models, from the label's rank.

The Trainer's ``eval_ranks`` signature (components/trainer/export.py) gives, per example,
the label's 0-based rank over the whole catalogue ``y_pred`` ``[B]`` (or ``[B, 1]``): how
many movies score strictly above it (ties in the label's favour, as ``in_top_k``
counts them; ``contract.MISSING_RANK`` when the label is not in the vocabulary, a miss).
From it, averaged over examples (weighted by ``sample_weight`` when TFMA gives one):

* :class:`RankTopKAccuracy` -- top-K accuracy (HR@k), ``rank < k``;
* :class:`RankNdcgAtK` -- NDCG@k of one relevant item, ``1 / log2(2 + rank)`` when
  ``rank < k``, else 0.

``y_true`` (the label's row, TFMA's label) is not read: the rank already placed it. So
TFMA holds one number per example, whatever the catalogue's size. TFMA loads these by
``class_name`` and ``module`` (components/evaluator/config.py).
"""

from __future__ import annotations

import tensorflow as tf  # the package `components`, imported first, chose Keras 2

keras = tf.keras  # tf_keras under TF_USE_LEGACY_KERAS=1


class _RankMetric(keras.metrics.Metric):
    """The weighted mean over examples of :meth:`gain` of the label's rank."""

    def __init__(self, k: int = 10, name: str = "rank_metric", **kwargs):
        super().__init__(name=name, **kwargs)
        self.k = int(k)
        self.total = self.add_weight(name="total", initializer="zeros", dtype=tf.float64)
        self.count = self.add_weight(name="count", initializer="zeros", dtype=tf.float64)

    def gain(self, rank: tf.Tensor) -> tf.Tensor:
        """float64 ``[B]`` of float64 ranks ``[B]`` (below ``k``: a hit)."""
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        del y_true  # the rank already compares the label with the catalogue
        rank = tf.reshape(tf.cast(y_pred, tf.float64), [-1])
        gain = tf.where(rank < self.k, self.gain(rank), tf.zeros_like(rank))
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


class RankTopKAccuracy(_RankMetric):
    """Top-K accuracy: the share of examples whose label ranks below ``k``."""

    def __init__(self, k: int = 100, name: str = "top_100_accuracy", **kwargs):
        super().__init__(k=k, name=name, **kwargs)

    def gain(self, rank):
        return tf.ones_like(rank)


class RankNdcgAtK(_RankMetric):
    """Mean NDCG@k of one relevant item per example."""

    def __init__(self, k: int = 10, name: str = "ndcg_10", **kwargs):
        super().__init__(k=k, name=name, **kwargs)

    def gain(self, rank):
        return 1.0 / (tf.math.log(2.0 + rank) / tf.math.log(tf.constant(2.0, tf.float64)))
