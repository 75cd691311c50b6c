"""Feature encoders of the towers: movie side tables and time encodings.

* :func:`title_token_table` / :func:`genre_weight_table`: per-movie tables looked up by
  vocabulary row (row 0: unknown movies), so the candidate tower needs only movie ids.
* :class:`TimestampEncoder`: the featurization tutorial's normalized timestamp and its
  bucket embedding.
* :class:`RelativeTimeEncoder`: time since the user's first training rating.

Also the small Keras helpers every tower shares (:func:`regularizer`,
:func:`penalized_embedding`, :func:`projection`) and :data:`graph_safe`.
"""

from __future__ import annotations

import collections
import contextlib
import re
import threading
from typing import List, Sequence

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components.trainer import inputs

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1

# AutoGraph: the models have no data-dependent Python control flow, and converting them --
# and, through them, the Keras internals they call -- made the first training step trace
# for a long time (benchmarks/README.md). So the models' train/test steps are not converted
# (graph_safe), except tfrs.tasks.Retrieval.call, which needs AutoGraph (it takes
# ``len(tf.shape(x))``) and is converted alone (not the functions it calls).
graph_safe = tf.autograph.experimental.do_not_convert


_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


def title_tokens(title: str) -> List[str]:
    """Lower-case word tokens of a title, without its trailing "(YYYY)"."""
    return re.findall(r"\w+", _YEAR_SUFFIX.sub("", title).lower())


def title_token_table(titles: Sequence[str], max_tokens: int, max_length: int = 20):
    """``[M + 1, T]`` int32 token ids (0 = padding; row 0 = unknown movie) and the vocab
    size (padding included), tokens by frequency."""
    tokenized = [title_tokens(title)[:max_length] for title in titles]
    counts = collections.Counter(token for tokens in tokenized for token in tokens)
    vocab = [token for token, _ in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))]
    index = {token: i + 2 for i, token in enumerate(vocab[:max_tokens])}  # 1 = OOV token
    length = max([len(tokens) for tokens in tokenized] + [1])
    table = np.zeros((len(titles) + 1, length), np.int32)
    for row, tokens in enumerate(tokenized, start=1):
        table[row, :len(tokens)] = [index.get(token, 1) for token in tokens]
    return table, len(index) + 2


def genre_weight_table(movie_genres: Sequence[Sequence[str]], genres: Sequence[str]):
    """``[M + 1, G]`` float32: each movie's genres, weights summing to 1 (row 0 and
    movies without a known genre: the "UNK" genre, column 0)."""
    index = {genre: i for i, genre in enumerate(genres)}
    table = np.zeros((len(movie_genres) + 1, len(genres)), np.float32)
    table[0, 0] = 1.0
    for row, names in enumerate(movie_genres, start=1):
        columns = sorted({index[name] for name in names if name in index})
        if columns:
            table[row, columns] = 1.0 / len(columns)
        else:
            table[row, 0] = 1.0
    return table


class TimestampEncoder(keras.layers.Layer):
    """int64 timestamps ``[B]`` -> float32 ``[B, 1 + D]``: the normalized value and an
    embedding of its equal-width bucket (the featurization tutorial's two encodings).

    Arithmetic is in float64: float32 cannot resolve seconds at 1e9.
    """

    def __init__(self, stats: "inputs.TimestampStats", embedding_dim: int, l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self._mean = float(stats.mean)
        self._std = float(stats.std)
        self._boundaries = tf.constant(list(stats.boundaries) or [self._mean], tf.float64)
        self.bucket_embedding = keras.layers.Embedding(
            len(stats.boundaries) + 2, embedding_dim, embeddings_regularizer=regularizer(l2),
            name="bucket_embedding")

    @graph_safe
    def call(self, timestamps, training=None, mask=None):
        values = tf.cast(tf.reshape(timestamps, [-1]), tf.float64)
        normalized = tf.cast((values - self._mean) / self._std, tf.float32)
        buckets = tf.searchsorted(self._boundaries, values, side="right")
        return tf.concat([normalized[:, None], self.bucket_embedding(buckets)], axis=-1)


# Bucket boundaries of the user-relative time, in seconds since the user's first rating.
RELATIVE_TIME_BOUNDARIES = (
    1, 30, 60, 120, 300, 600, 1200, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400,
    2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400, 120 * 86400, 240 * 86400,
    365 * 86400)
_YEAR_SECONDS = 365.25 * 86400


class RelativeTimeEncoder(keras.layers.Layer):
    """(user rows ``[B]``, int64 timestamps ``[B]``) -> float32 ``[B, 1 + D]``: how long
    after the user's first training rating this one is -- log-scaled, and an embedding of
    its bucket (:data:`RELATIVE_TIME_BOUNDARIES`, from one second to a year).

    ``first_timestamps`` is aligned with the user lookup's rows (row 0: unknown users);
    NaN (a user without training ratings) counts as time 0, a new user.
    """

    def __init__(self, first_timestamps: np.ndarray, embedding_dim: int, l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self._first = tf.constant(np.asarray(first_timestamps, np.float64))
        self._boundaries = tf.constant(RELATIVE_TIME_BOUNDARIES, tf.float64)
        self.bucket_embedding = keras.layers.Embedding(
            len(RELATIVE_TIME_BOUNDARIES) + 1, embedding_dim,
            embeddings_regularizer=regularizer(l2), name="relative_bucket_embedding")

    @graph_safe
    def call(self, inputs, training=None, mask=None):
        rows, timestamps = inputs
        values = tf.cast(tf.reshape(timestamps, [-1]), tf.float64)
        first = tf.gather(self._first, tf.reshape(rows, [-1]))
        elapsed = tf.maximum(tf.where(tf.math.is_nan(first), tf.zeros_like(values),
                                      values - first), 0.0)
        scaled = tf.cast(tf.math.log1p(elapsed) / np.log1p(_YEAR_SECONDS), tf.float32)
        buckets = tf.searchsorted(self._boundaries, elapsed, side="right")
        return tf.concat([scaled[:, None], self.bucket_embedding(buckets)], axis=-1)


def regularizer(l2: float):
    return keras.regularizers.l2(l2) if l2 > 0 else None


def lookup_weights(counts: Sequence[int], lookups_per_example: float = 1.0,
                   reserved_rows: int = 1) -> np.ndarray:
    """float32 ``[reserved_rows + len(counts)]``: per table row, one over the expected
    number of times an example looks it up (``lookups_per_example x count / total``);
    0 for the reserved rows (out-of-vocabulary, padding) and rows never counted.

    Summing ``weight x |row|^2`` over a batch's lookups and dividing by the batch size
    gives, in expectation, ``sum |row|^2`` over the whole table: see
    :class:`RowPenalizedEmbedding`."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    weights = np.zeros(len(counts))
    seen = counts > 0
    weights[seen] = total / (lookups_per_example * counts[seen])
    return np.concatenate([np.zeros(reserved_rows), weights]).astype(np.float32)


# Where RowPenalizedEmbedding puts its penalties: a list while row_penalties() is
# active, None otherwise. Not Keras' add_loss: Keras clears a layer's call-time losses at
# each top-level call, and a step calls a tower several times (the labels, then the
# catalogue or the sampled negatives), so all but the last call's would be lost.
_ROW_PENALTIES = threading.local()


@contextlib.contextmanager
def _collecting(collected):
    previous = getattr(_ROW_PENALTIES, "collected", None)
    _ROW_PENALTIES.collected = collected
    try:
        yield collected
    finally:
        _ROW_PENALTIES.collected = previous


def row_penalties():
    """``with row_penalties() as penalties:`` -- the row penalties (scalar tensors) of the
    :class:`RowPenalizedEmbedding` calls made (traced) inside the block, as a list; a
    training step adds their sum to the loss (``models._Model.train_step``)."""
    return _collecting([])


def not_example_lookups():
    """Calls inside this block add no row penalty: lookups that are not the examples'
    own -- the catalogue or the sampled negatives embedded for the retrieval loss --
    which :func:`lookup_weights` does not count."""
    return _collecting(None)


class RowPenalizedEmbedding(keras.layers.Embedding):
    """An ``Embedding`` whose L2 penalty is on the rows each call looks up, weighted by
    :func:`lookup_weights`: ``l2 x sum over lookups of weight(row) x |row|^2 / B`` (B: the
    batch, the first dimension of the ids). In expectation over batches that is the
    whole-table penalty ``l2 x sum |row|^2`` (what ``embeddings_regularizer`` adds every
    step), but its gradient is as sparse as the lookup (``HParams.sparse_updates``):
    each row is penalized when looked up, in proportion to how rarely that happens.
    The penalty goes to the list of the enclosing :func:`row_penalties` block (a
    training step's); outside one, and for lookups that are not an example's
    (:func:`not_example_lookups`), there is none.

    ids ``[B, ...]`` int -> float32 ``[B, ..., D]``, as ``keras.layers.Embedding``."""

    def __init__(self, input_dim: int, output_dim: int, l2: float,
                 row_weights: np.ndarray, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        if len(row_weights) != input_dim:
            raise ValueError(f"{len(row_weights)} row weights for {input_dim} rows")
        self.l2 = float(l2)
        self.row_weights = tf.constant(row_weights, tf.float32)

    def call(self, inputs):
        outputs = super().call(inputs)
        collected = getattr(_ROW_PENALTIES, "collected", None)
        if self.l2 > 0 and collected is not None:
            weights = tf.gather(self.row_weights, tf.cast(inputs, tf.int32))
            penalty = tf.reduce_sum(weights * tf.reduce_sum(tf.square(outputs), axis=-1))
            collected.append(self.l2 * penalty / tf.cast(tf.shape(outputs)[0], outputs.dtype))
        return outputs


def penalized_embedding(input_dim: int, output_dim: int, l2: float,
                        row_weights=None, **kwargs) -> keras.layers.Embedding:
    """An ``Embedding`` with an L2 penalty of ``l2``: on the whole table, or, given
    ``row_weights`` (:func:`lookup_weights`), on the rows each call looks up
    (:class:`RowPenalizedEmbedding`; see ``HParams.sparse_updates_min_rows``)."""
    if row_weights is None:
        return keras.layers.Embedding(input_dim, output_dim,
                                      embeddings_regularizer=regularizer(l2), **kwargs)
    return RowPenalizedEmbedding(input_dim, output_dim, l2, row_weights, **kwargs)


def projection(hidden: Sequence[int], dim: int, name: str) -> keras.Sequential:
    layers = [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers.append(keras.layers.Dense(dim))
    return keras.Sequential(layers, name=name)
