"""The losses and metrics: retrieval over the catalogue, and rating regression.

* :class:`RetrievalTask` -- ``(queries [B, D], candidates [B, D], candidate ids [B])`` ->
  scalar loss: full softmax over the catalogue, or sampled softmax (in-batch negatives
  plus a shared pool, components/trainer/sampling.py) with log-Q correction; top-K
  metrics over the whole catalogue (:class:`CatalogueTopK`).
* :func:`ranking_task` -- MSE on ratings ``[B]`` (over the global batch under a
  ``tf.distribute`` strategy: :class:`GlobalMeanSquaredError`), RMSE metric.
* the rating head (:func:`rating_head`, :class:`RatingBiases`, :func:`raw_rating`) that
  the ranking and multitask models share.
"""

from __future__ import annotations

from typing import Optional, Sequence

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from components import contract
from components.trainer import encoders, sampling
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


class CatalogueTopK(tfrs.layers.factorized_top_k.TopK):
    """Exact top-K over the whole catalogue, re-embedded by the candidate tower at every
    call (so it is never stale during training). Returns (scores, movie ids)."""

    def __init__(self, candidate_tower: keras.Model, movie_ids: np.ndarray, k: int = 100,
                 name: str = "catalogue_top_k"):
        super().__init__(k=k, name=name)
        self.candidate_tower = candidate_tower
        self._ids = tf.constant(np.asarray(movie_ids, np.int64))

    def index(self, candidates, identifiers=None):
        raise NotImplementedError("CatalogueTopK embeds its catalogue itself")

    @encoders.graph_safe
    def call(self, queries, k=None, training=None, mask=None):  # pylint: disable=unused-argument
        k = min(k or self._k, int(self._ids.shape[0]))
        with encoders.not_example_lookups():
            catalogue = self.candidate_tower(self._ids)
        scores = tf.matmul(queries, catalogue, transpose_b=True)
        values, rows = tf.math.top_k(scores, k=k)
        return values, tf.gather(self._ids, rows)

    def is_exact(self) -> bool:
        return True


class RetrievalTask(keras.layers.Layer, tfrs.tasks.base.Task):
    """Retrieval loss and top-K metrics over the catalogue, in one task.

    ``call(query_embeddings [B, D], candidate_embeddings [B, D], candidate_ids [B])``
    returns the scalar loss (summed over the batch, as ``tfrs.tasks.Retrieval`` does):

    * sampled softmax (``full_softmax`` off): ``tfrs.tasks.Retrieval`` over the ``B``
      in-batch candidates plus, with ``num_sampled_negatives = N > 0``, a pool of ``N``
      negatives shared by the batch (components/trainer/sampling.py), embedded by the
      candidate tower: logits ``[B, B + N]``, with ``candidate_sampling_probability``
      (log-Q correction, from ``movie_counts``) and ``remove_accidental_hits``
      (``candidate_ids`` = movie ids; pool draws of the positive movie are masked too);
    * ``full_softmax``: cross-entropy of logits = query x all ``M`` catalogue embeddings
      ``[B, M]`` against the label's catalogue row -- unbiased, and what top-K measures,
      but its cost grows with ``M``.

    ``movie_counts`` ``[M]``: the popularity behind log-Q and the pool (default: the
    vocabulary's counts). With ``compute_metrics``, ``FactorizedTopK`` (named
    ``factorized_top_k``) updates top-``ks`` accuracy over the whole catalogue, id-based.
    ``logit_bias``: ``rows [C] or None -> [B, C]``, added to the logits of the candidates
    at those catalogue rows (None: the whole catalogue's ``[B, M]``): a term of the
    score that depends on the query and the movie beyond the two embeddings (the recency
    prior in training, components/trainer/recency.py).

    The sampled loss is ``tfrs.tasks.Retrieval``'s (its log-Q and accidental-hit layers,
    its summed cross-entropy), written out so that ``logit_bias`` can enter the logits.
    """

    def __init__(self, candidate_tower: keras.Model, vocabulary: Vocabulary, *,
                 full_softmax: bool = False, logq_correction: bool = False,
                 remove_accidental_hits: bool = True, temperature: float = 1.0,
                 ks: Sequence[int] = (1, 5, 10, 50, 100), num_sampled_negatives: int = 0,
                 movie_counts: Optional[np.ndarray] = None, name: str = "retrieval_task"):
        super().__init__(name=name)
        self.candidate_tower = candidate_tower
        self._full_softmax = full_softmax
        self._temperature = float(temperature)
        self._catalogue_ids = tf.constant(vocabulary.movie_ids)
        self._row_lookup = keras.layers.IntegerLookup(
            vocabulary=vocabulary.movie_ids, mask_token=None, num_oov_indices=1,
            name="catalogue_row_lookup")
        probabilities = vocabulary.candidate_probabilities(counts=movie_counts)
        self._sampling_probability = None
        if logq_correction and not full_softmax:
            # Row 0: movies outside the vocabulary (never seen): the rarest probability.
            self._sampling_probability = tf.constant(
                np.concatenate([[probabilities.min()], probabilities]).astype(np.float32))
        self.negative_sampler = None
        if num_sampled_negatives and not full_softmax:
            self.negative_sampler = sampling.NegativeSampler(
                vocabulary.movie_ids, probabilities, num_sampled_negatives)
        self.top_k = tfrs.metrics.FactorizedTopK(
            CatalogueTopK(candidate_tower, vocabulary.movie_ids, k=max(ks)), ks=tuple(ks))
        self._logq = tfrs.layers.loss.SamplingProbablityCorrection()
        self._remove_hits = (tfrs.layers.loss.RemoveAccidentalHits()
                             if remove_accidental_hits else None)
        self._cross_entropy = keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=keras.losses.Reduction.SUM)

    def catalogue_rows(self, movie_ids):
        """Movie ids -> rows of the vocabulary (-1 for ids outside it)."""
        return self._row_lookup(movie_ids) - 1

    def call(self, query_embeddings, candidate_embeddings, candidate_ids,
             sample_weight=None, compute_metrics: bool = True, logit_bias=None):
        loss = (self._full_loss if self._full_softmax else self._sampled_loss)(
            query_embeddings, candidate_ids, candidate_embeddings, sample_weight,
            logit_bias)
        if compute_metrics:
            update = self.top_k.update_state(
                query_embeddings, candidate_embeddings, true_candidate_ids=candidate_ids,
                sample_weight=sample_weight)
            with tf.control_dependencies([update]):
                loss = tf.identity(loss)
        return loss

    def _sampled_loss(self, query_embeddings, candidate_ids, candidate_embeddings,
                      sample_weight, logit_bias):
        """In-batch ``[B]`` plus pooled ``[N]`` candidates -> logits ``[B, B + N]``."""
        if self.negative_sampler is not None:
            pool = self.negative_sampler()                                      # [N]
            with encoders.not_example_lookups():  # their penalty: the examples' lookups'
                negatives = self.candidate_tower(pool)                          # [N, D]
            candidate_embeddings = tf.concat([candidate_embeddings, negatives], axis=0)
            candidate_ids = tf.concat([candidate_ids, pool], axis=0)            # [B+N]
        lookup = self._row_lookup(candidate_ids)                  # rows + 1 (0: unknown)
        logits = tf.matmul(query_embeddings, candidate_embeddings, transpose_b=True)
        if logit_bias is not None:
            logits += logit_bias(lookup - 1)
        logits /= self._temperature
        labels = tf.eye(tf.shape(logits)[0], tf.shape(logits)[1])
        if self._sampling_probability is not None:
            logits = self._logq(logits, tf.gather(self._sampling_probability, lookup))
        if self._remove_hits is not None:
            logits = self._remove_hits(labels, logits, candidate_ids)
        return self._cross_entropy(labels, logits, sample_weight=sample_weight)

    def _full_loss(self, query_embeddings, candidate_ids, candidate_embeddings,
                   sample_weight, logit_bias):
        """Logits against the whole catalogue ``[B, M]``."""
        del candidate_embeddings  # the catalogue is re-embedded whole
        with encoders.not_example_lookups():
            catalogue = self.candidate_tower(self._catalogue_ids)              # [M, D]
        logits = tf.matmul(query_embeddings, catalogue, transpose_b=True)
        if logit_bias is not None:
            logits += logit_bias(None)
        logits /= self._temperature
        rows = self.catalogue_rows(candidate_ids)
        known = tf.cast(rows >= 0, tf.float32)
        weight = known if sample_weight is None else known * sample_weight
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(rows, 0), logits=logits)
        return tf.reduce_sum(losses * weight)


class GlobalMeanSquaredError(keras.losses.Loss):
    """``(ratings [B], predictions [B])`` -> scalar: the squared error averaged over the
    *global* batch -- each replica's sum over its ``B`` examples divided by ``B x R`` --
    so that the ``R`` replicas' summed gradients are the gradient of the global mean
    (Keras refuses its own mean-reducing losses outside ``compile`` under a
    ``tf.distribute`` strategy). On one device (``R = 1``): the plain mean."""

    def __init__(self, name: str = "mean_squared_error"):
        super().__init__(reduction=keras.losses.Reduction.SUM, name=name)

    def call(self, y_true, y_pred):
        errors = tf.square(y_pred - tf.cast(y_true, y_pred.dtype))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return errors / tf.cast(tf.size(errors) * replicas, errors.dtype)


def ranking_task() -> tfrs.tasks.Ranking:
    return tfrs.tasks.Ranking(
        loss=GlobalMeanSquaredError(),
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])


def rating_head(layers: Sequence[int], rating_min: float, rating_max: float):
    """Dense ReLU layers then one linear unit, its bias starting mid-scale."""
    head = [keras.layers.Dense(units, activation="relu") for units in layers]
    # MovieLens ratings average ~3.5 stars (0.5 above mid-scale): start there.
    head.append(keras.layers.Dense(
        1, bias_initializer=keras.initializers.Constant((rating_min + rating_max) / 2 + 0.5)))
    return keras.Sequential(head, name="rating_head")


class RatingBiases(keras.layers.Layer):
    """``{"user_id": [B], "movie_id": [B]}`` -> float32 ``[B]``: a learned bias per user
    plus one per movie (the classic baseline predictor; the global mean is the rating
    head's output bias). Unknown ids share a row with bias 0 at the start."""

    def __init__(self, vocabulary: Vocabulary, l2: float = 0.0, name: str = "rating_biases"):
        super().__init__(name=name)
        self.user_lookup = keras.layers.IntegerLookup(
            vocabulary=np.asarray(vocabulary.user_ids, np.int64), mask_token=None,
            num_oov_indices=1, name="bias_user_lookup")
        self.movie_lookup = keras.layers.IntegerLookup(
            vocabulary=vocabulary.movie_ids, mask_token=None, num_oov_indices=1,
            name="bias_movie_lookup")
        self.user_bias = keras.layers.Embedding(
            vocabulary.num_users + 1, 1, embeddings_initializer="zeros",
            embeddings_regularizer=encoders.regularizer(l2), name="user_bias")
        self.movie_bias = keras.layers.Embedding(
            vocabulary.num_movies + 1, 1, embeddings_initializer="zeros",
            embeddings_regularizer=encoders.regularizer(l2), name="movie_bias")

    @encoders.graph_safe
    def call(self, features, training=None, mask=None):
        users = self.user_bias(self.user_lookup(features[contract.USER_ID]))
        movies = self.movie_bias(self.movie_lookup(features[contract.MOVIE_ID]))
        return tf.reshape(users + movies, [-1])


def raw_rating(model, features, user, movie):
    """The unclipped rating ``[B]`` of ranking and multitask models: the rating head on
    the concatenated user and movie embeddings, plus (``rating_dot``) their dot product
    and (``rating_biases``) the user and movie biases."""
    raw = tf.squeeze(model.rating_head(tf.concat([user, movie], axis=-1)), axis=-1)
    if model.hparams.rating_dot:
        raw += tf.reduce_sum(user * movie, axis=-1)
    if model.rating_biases is not None:
        raw += model.rating_biases(features)
    return raw
