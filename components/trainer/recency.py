"""Recency: a candidate prior from what was rated lately, learned by the retrieval model.

Under a temporal split the eval period follows training, and what was rated in the last
weeks of training predicts it better than all-time popularity or the ids' embeddings
(benchmarks/quality.py's recent-popularity baseline). With ``recency_windows_days`` the
retrieval model adds to each (query, movie) logit, for each window ``k``,

    weight_k x log(1 + the movie's training ratings in window k before the query's time)

with the weights learned. In training the query's time is its example's timestamp, and a
window holds the training ratings of its buckets (days) strictly before the example's
bucket: no example counts itself. At evaluation and serving the time is the end of
training (each window ends with the last training bucket), which the server knows, so
the served signature still takes ``user_id`` alone; and the weights are the trained
ones times ``recency_serving_scale`` (HParams: trained on a prior of each example's own
day, the prior is served for the weeks after training).

Served as ``K`` more embedding coordinates: :class:`PriorQueryTower` appends the weights
(``[B, D] -> [B, D + K]``) and :class:`PriorCandidateTower` the movie's prior at the end
of training (``[..., D] -> [..., D + K]``), so every dot-product consumer (the Trainer's
top-K, the export's ``eval_ranks``, ``candidates.npz``, the Pusher's indexes) scores with
the prior as served. Training adds the difference between the prior at the example's
time and at the end (:meth:`RecencyPrior.training_bias`).

* :func:`recency_table` -- (movie rows, timestamps) batches -> :class:`RecencyTable`,
  one streamed pass; memory grows with the table, not with the ratings.
* :func:`training_recency` -- the table of a model's training files (None when off).
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Sequence, Tuple

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components import contract
from components.trainer import encoders, inputs
from components.trainer.evaluation import movie_rows
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1

DAY_SECONDS = 86_400
# The table's entries (buckets x movies) at most: past it the buckets widen from one day
# (so a 20-year span of a 59,000-movie catalogue still fits in 64 MB of float32).
MAX_TABLE_ENTRIES = 1 << 24
_MERGE_EVERY = 1 << 20
# The prior's weights are stored divided by this (see RecencyPrior).
WEIGHT_SCALE = 20.0


@dataclasses.dataclass(frozen=True)
class RecencyTable:
    """``log_counts`` float32 ``[T + 1, M, K]``: entry ``[b, m, k]`` is log(1 + movie
    ``m``'s training ratings in buckets ``[b - window_buckets[k], b)``), bucket ``b`` being
    the seconds ``[origin + b x bucket_seconds, origin + (b + 1) x bucket_seconds)``;
    row ``T`` is the end of training (each window's last buckets)."""

    origin: int
    bucket_seconds: int
    window_buckets: Tuple[int, ...]
    log_counts: np.ndarray

    @property
    def end(self) -> np.ndarray:
        """float32 ``[M, K]``: the prior at the end of training (what serving uses)."""
        return self.log_counts[-1]


def recency_table(batches: Iterable[Tuple[np.ndarray, np.ndarray]], num_movies: int,
                  windows_days: Sequence[int],
                  max_entries: int = MAX_TABLE_ENTRIES) -> RecencyTable:
    """The :class:`RecencyTable` of ``batches`` of (vocabulary rows ``[b]``, timestamps
    in seconds ``[b]``); rows -1 (outside the vocabulary) are not counted. Buckets are
    days, widened when ``days x num_movies x windows`` would pass ``max_entries``; each
    window is rounded up to whole buckets. Memory: one count per (day, movie) that has a
    rating, then the table."""
    if not windows_days or min(windows_days) < 1:
        raise ValueError(f"windows must be positive days, not {tuple(windows_days)}")
    keys, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    pending: list = []
    pending_size = 0

    def merge():
        merged, index = np.unique(np.concatenate([keys, *pending]), return_inverse=True)
        weights = np.concatenate([counts, *(np.ones(len(p), np.int64) for p in pending)])
        return merged, np.bincount(index, weights, minlength=len(merged)).astype(np.int64)

    for rows, timestamps in batches:
        rows, days = np.asarray(rows, np.int64), np.asarray(timestamps, np.int64) // DAY_SECONDS
        known = rows >= 0
        pending.append(days[known] * num_movies + rows[known])
        pending_size += len(pending[-1])
        if pending_size >= _MERGE_EVERY:  # (day, movie) keys, a million at once
            (keys, counts), pending, pending_size = merge(), [], 0
    keys, counts = merge()
    if not len(keys):
        raise ValueError("no training rating of a vocabulary movie: no recency to count")
    days, rows = keys // num_movies, keys % num_movies
    first, span = int(days.min()), int(days.max() - days.min()) + 1
    bucket_days = max(1, -(-span * num_movies * len(windows_days) // max_entries))
    buckets = (days - first) // bucket_days
    num_buckets = int(buckets.max()) + 1
    per_bucket = np.zeros((num_buckets, num_movies), np.float64)
    np.add.at(per_bucket, (buckets, rows), counts)
    before = np.zeros((num_buckets + 1, num_movies), np.float64)  # ratings in [0, b)
    np.cumsum(per_bucket, axis=0, out=before[1:])
    windows = tuple(max(1, -(-days_ // bucket_days)) for days_ in windows_days)
    table = np.empty((num_buckets + 1, num_movies, len(windows)), np.float32)
    for k, window in enumerate(windows):
        lagged = np.zeros_like(before)
        lagged[window:] = before[:-window]
        table[:, :, k] = np.log1p(before - lagged)
    return RecencyTable(first * DAY_SECONDS, bucket_days * DAY_SECONDS, windows, table)


def training_recency(hparams: HParams, vocabulary: Vocabulary, file_pattern,
                     max_batches: Optional[int] = None) -> Optional[RecencyTable]:
    """The :class:`RecencyTable` of the training files (one streamed pass over their
    label movies and timestamps) for a model with ``recency_windows_days``, else None."""
    if not hparams.recency_windows_days:
        return None
    spec = inputs.select(inputs.rating_feature_spec(),
                         [contract.MOVIE_ID, contract.TIMESTAMP])
    dataset = inputs.make_dataset(file_pattern, spec, hparams.eval_batch_size, shuffle=False)
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    batches = ((movie_rows(vocabulary, batch[contract.MOVIE_ID].numpy().reshape(-1)),
                batch[contract.TIMESTAMP].numpy().reshape(-1)) for batch in dataset)
    return recency_table(batches, vocabulary.num_movies, hparams.recency_windows_days)


class RecencyPrior(keras.layers.Layer):
    """The learned weights ``[K]`` (one per window) and the table of a
    :class:`RecencyTable` (see the module docstring). ``end_prior(movie ids [...])`` ->
    float32 ``[..., K]``; ``training_bias(timestamps [B], rows [C] or None)`` ->
    ``[B, C]`` (None: the whole catalogue, ``[B, M]``).

    The weights start at 0 (an untrained model knows no popularity) and are few
    scalars that Adam moves by about the learning rate per step, whatever their
    gradient: at the presets' rates they would end near where they started. Each is
    stored divided by ``WEIGHT_SCALE`` (its steps ``WEIGHT_SCALE`` times larger), so that
    training takes them to their fitted values."""

    def __init__(self, table: RecencyTable, movie_ids: np.ndarray, serving_scale: float,
                 name: str = "recency_prior"):
        super().__init__(name=name)
        self._serving_scale = float(serving_scale)
        self._origin = int(table.origin)
        self._bucket_seconds = int(table.bucket_seconds)
        rows, self._num_movies, windows = (int(n) for n in table.log_counts.shape)
        self._last = rows - 1  # the end's row: times past training clip to it
        self._row_lookup = keras.layers.IntegerLookup(
            vocabulary=np.asarray(movie_ids, np.int64), mask_token=None, num_oov_indices=1,
            name="recency_row_lookup")
        # Per window, each row minus the end's row ([T + 1, M]): the training logits'
        # correction (the end's prior reaches them through the towers' extra
        # coordinates). One table per window: K row gathers cost under half a gather of
        # [T + 1, M, K] rows and its contraction. Tensors, not variables: training alone
        # reads them, so the export (and every served model) leaves them out.
        delta = table.log_counts - table.end[None]
        self._deltas = [tf.constant(np.ascontiguousarray(delta[:, :, k]))
                        for k in range(windows)]
        self.end = self.add_weight(name="end", shape=table.end.shape, trainable=False,
                                   initializer=keras.initializers.Constant(table.end))
        self.scaled_weights = self.add_weight(
            name="scaled_weights", shape=(windows,), trainable=True,
            initializer="zeros")

    @property
    def window_weights(self):
        """float32 ``[K]``: the prior's weight per window."""
        return WEIGHT_SCALE * self.scaled_weights

    @property
    def served_weights(self):
        """float32 ``[K]``: the weights of evaluation and serving, ``window_weights x
        serving_scale`` (HParams.recency_serving_scale)."""
        return self._serving_scale * self.window_weights

    def end_prior(self, movie_ids):
        rows = self._row_lookup(movie_ids) - 1
        return tf.where((rows >= 0)[..., None], tf.gather(self.end, tf.maximum(rows, 0)), 0.0)

    def training_bias(self, timestamps, rows=None):
        buckets = tf.clip_by_value(
            (tf.cast(tf.reshape(timestamps, [-1]), tf.int64) - self._origin)
            // self._bucket_seconds, 0, self._last)
        weights = tf.unstack(self.window_weights)
        if rows is None:
            return tf.add_n([weight * tf.gather(delta, buckets)                # [B, M]
                             for weight, delta in zip(weights, self._deltas)])
        index = buckets[:, None] * self._num_movies + tf.maximum(tf.cast(rows, tf.int64),
                                                                 0)[None, :]
        return tf.add_n([weight * tf.gather(tf.reshape(delta, [-1]), index)    # [B, C]
                         for weight, delta in zip(weights, self._deltas)])


class PriorQueryTower(keras.Model):
    """``tower``'s query embeddings ``[B, D]`` with the prior's ``K`` weights appended:
    ``[B, D + K]``: the trained weights in training (``training=True``), else the
    served ones (:attr:`RecencyPrior.served_weights`)."""

    def __init__(self, tower: keras.Model, prior: RecencyPrior, name: str = "prior_query_tower"):
        super().__init__(name=name)
        self.tower, self.prior = tower, prior

    @encoders.graph_safe
    def call(self, inputs, training=None, mask=None):
        queries = self.tower(inputs)
        prior = self.prior.window_weights if training else self.prior.served_weights
        weights = tf.ones_like(queries[:, :1]) * prior[None, :]
        return tf.concat([queries, weights], axis=-1)


class PriorCandidateTower(keras.Model):
    """``tower``'s movie embeddings ``[..., D]`` with each movie's ``K`` priors at the end
    of training appended: ``[..., D + K]`` (0 for ids outside the vocabulary)."""

    def __init__(self, tower: keras.Model, prior: RecencyPrior,
                 name: str = "prior_candidate_tower"):
        super().__init__(name=name)
        self.tower, self.prior = tower, prior

    @encoders.graph_safe
    def call(self, inputs, training=None, mask=None):
        embeddings = self.tower(inputs)
        return tf.concat([embeddings, self.prior.end_prior(inputs)], axis=-1)


def with_prior(query_tower: keras.Model, candidate_tower: keras.Model,
               table: Optional[RecencyTable], vocabulary: Vocabulary,
               serving_scale: float) -> Tuple[keras.Model, keras.Model, RecencyPrior]:
    """The two towers with ``table``'s prior appended (:class:`PriorQueryTower`,
    :class:`PriorCandidateTower`), and the prior (served at ``serving_scale`` times its
    trained weights: HParams.recency_serving_scale)."""
    if table is None:
        raise ValueError("recency_windows_days needs the training files' recency table "
                         "(recency.training_recency)")
    prior = RecencyPrior(table, vocabulary.movie_ids, serving_scale)
    return (PriorQueryTower(query_tower, prior), PriorCandidateTower(candidate_tower, prior),
            prior)
