"""The five TFRS models, and how they are built and compiled.

    RetrievalModel       rating features -> query embedding [B, D]
    RankingModel         rating features -> rating [B], clipped to the star range
    MultitaskModel       rating features -> rating [B]; ``query_tower`` for retrieval
    SequentialModel      sequence features -> query embedding [B, D]   (GRU)
    AttentionModel       sequence features -> query embedding [B, D]   (self-attention)

Every tower is a Keras model (components/trainer/towers.py), and each TFRS model owns
exactly one loss-and-metrics task per objective (components/trainer/tasks.py).
:func:`build_model` and :func:`compile_model` turn :class:`HParams` into a model (with
``inputs.training_timestamp_stats`` when it reads timestamps). Ratings (ranking,
multitask) = the rating head on the concatenated user and movie embeddings, plus
optional user and movie biases.
"""

from __future__ import annotations

from typing import Dict, Optional

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from components import contract
from components.trainer import attention, encoders, inputs, optimizers, recency, tasks, towers
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


# The losses a training epoch reports (its logs, metrics.json's history), each averaged
# over the epoch's steps.
LOSS_MEANS = ("loss", "regularization_loss", "total_loss")


class _Model(tfrs.Model):
    """``tfrs.Model`` whose train and test steps AutoGraph leaves alone (see
    ``encoders.graph_safe``), and whose ``fit`` follows ``hparams.learning_rate_schedule``."""

    @property
    def label_key(self) -> str:
        """The feature holding the movie this model retrieves or rates."""
        return self.hparams.kind.label_key

    def compile(self, *args, **kwargs):
        """``keras.Model.compile``, plus a mean per loss (``LOSS_MEANS``): Keras resets
        every metric at each epoch, so the epoch's logs carry the epoch's mean loss, not
        the last (often partial) batch's."""
        super().compile(*args, **kwargs)
        if not hasattr(self, "loss_means"):  # once: every Metric attribute is tracked
            self.loss_means = {name: keras.metrics.Mean(name=name) for name in LOSS_MEANS}

    @encoders.graph_safe
    def train_step(self, inputs):
        """``tfrs.Model.train_step``, with the regularization losses divided by the
        replicas in sync: the replicas' gradients are summed, so the penalty per global
        step stays the single-device one (components/trainer/distribute.py). With sparse
        updates the id tables' penalties on the looked-up rows are among them
        (``encoders.row_penalties``; training only)."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape, encoders.row_penalties() as row_penalties:
            loss = self.compute_loss(inputs, training=True)
            regularization_loss = tf.reduce_sum(
                [tf.reduce_sum(penalty) for penalty in self.losses + row_penalties]
            ) / replicas
            total_loss = loss + regularization_loss
        gradients = tape.gradient(total_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        for name, value in zip(LOSS_MEANS, (loss, regularization_loss, total_loss)):
            self.loss_means[name].update_state(value)
        # The catalogue top-K metrics only when computed in training: otherwise their
        # untouched zeros would read as measurements in the epoch history.
        return {metric.name: metric.result() for metric in self.metrics
                if self.hparams.train_top_k_metrics or "top_k" not in metric.name}

    @encoders.graph_safe
    def test_step(self, inputs):
        return super().test_step(inputs)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, plus the learning-rate schedule's callback (over the
        ``epochs`` of this call), so that every caller trains on the same schedule."""
        schedule = optimizers.learning_rate_callback(self.hparams, kwargs.get("epochs", 1))
        if schedule is not None:
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [schedule]
        return super().fit(*args, **kwargs)


class _TwoTowerModel(_Model):
    """Retrieval by two towers: ``call(features)`` -> query embeddings ``[B, D]``;
    ``compute_loss`` embeds ``features[label_key]`` with the candidate tower and applies
    ``task``. Subclasses build ``query_tower``, ``candidate_tower`` and ``task``."""


    @encoders.graph_safe
    def call(self, features, training=None, mask=None):
        return self.query_tower(features)

    def compute_loss(self, features, training=False):
        ids = features[self.label_key]
        return self.task(
            self.query_tower(features, training=training), self.candidate_tower(ids), ids,
            compute_metrics=not training or self.hparams.train_top_k_metrics,
            logit_bias=self.training_logit_bias(features) if training else None)

    def training_logit_bias(self, features):
        """None, or the training logits' term beyond the embeddings (see
        ``tasks.RetrievalTask``'s ``logit_bias``)."""
        del features
        return None


class RetrievalModel(_TwoTowerModel):
    """Two-tower retrieval on rating examples (the retrieval/featurization tutorials).

    ``call(features)`` -> query embeddings ``[B, D]``. ``compute_loss`` embeds
    ``features["movie_id"]`` with the candidate tower and applies :class:`RetrievalTask`.
    Top-K metrics are computed in evaluation (and in training with
    ``train_top_k_metrics``).
    """


    def __init__(self, vocabulary: Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[inputs.TimestampStats] = None,
                 movie_counts: Optional[np.ndarray] = None,
                 recency_table: Optional[recency.RecencyTable] = None):
        super().__init__(name="retrieval_model")
        self.hparams = hparams
        self.query_tower = _user_tower(vocabulary, hparams, timestamp_stats)
        self.candidate_tower = _movie_tower(vocabulary, hparams)
        self.recency = None
        if hparams.recency_windows_days:
            self.query_tower, self.candidate_tower, self.recency = recency.with_prior(
                self.query_tower, self.candidate_tower, recency_table, vocabulary,
                hparams.recency_serving_scale)
        self.task = _retrieval_task(self.candidate_tower, vocabulary, hparams, movie_counts)

    def training_logit_bias(self, features):
        """The recency prior at each example's time (evaluation keeps the end's, as
        served: components/trainer/recency.py)."""
        if self.recency is None:
            return None
        return lambda rows: self.recency.training_bias(features[contract.TIMESTAMP], rows)


class RankingModel(_Model):
    """The ranking tutorial's model: user and movie embeddings -> dense 256-64-1.

    ``call(features)`` -> predicted ratings ``[B]`` in stars, clipped to
    ``[rating_min, rating_max]`` (what serving returns). Training minimizes the MSE of the
    unclipped prediction; evaluation reports loss and ``rmse`` of the clipped one.
    """

    def __init__(self, vocabulary: Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[inputs.TimestampStats] = None,
                 movie_counts: Optional[np.ndarray] = None):
        del movie_counts  # no retrieval loss
        super().__init__(name="ranking_model")
        self.hparams = hparams
        self.user_tower = _user_tower(vocabulary, hparams, timestamp_stats)
        self.movie_tower = _movie_tower(vocabulary, hparams)
        self.rating_head, self.rating_biases = _rating_parts(vocabulary, hparams)
        self.task = tasks.ranking_task()

    @encoders.graph_safe
    def raw_ratings(self, features):
        """Unclipped predictions ``[B]``."""
        return tasks.raw_rating(self, features, self.user_tower(features),
                           self.movie_tower(features[contract.MOVIE_ID]))

    @encoders.graph_safe
    def call(self, features, training=None, mask=None):
        return tf.clip_by_value(
            self.raw_ratings(features), self.hparams.rating_min, self.hparams.rating_max)

    @encoders.graph_safe
    def compute_loss(self, features, training=False):
        predictions = self.raw_ratings(features) if training else self(features)
        return self.task(labels=features[contract.USER_RATING], predictions=predictions)


class MultitaskModel(_Model):
    """The multitask tutorial: shared user and movie towers, a rating head on their
    concatenation, and a retrieval task on their dot product.

    Loss = ``rating_weight`` x MSE + ``retrieval_weight`` x retrieval loss.
    ``call(features)`` -> clipped ratings ``[B]``; ``query_tower`` / ``candidate_tower``
    serve retrieval as in :class:`RetrievalModel`.
    """


    def __init__(self, vocabulary: Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[inputs.TimestampStats] = None,
                 movie_counts: Optional[np.ndarray] = None):
        super().__init__(name="multitask_model")
        self.hparams = hparams
        self.query_tower = _user_tower(vocabulary, hparams, timestamp_stats)
        self.candidate_tower = _movie_tower(vocabulary, hparams)
        self.rating_head, self.rating_biases = _rating_parts(vocabulary, hparams)
        self.rating_task = tasks.ranking_task()
        self.retrieval_task = _retrieval_task(self.candidate_tower, vocabulary, hparams,
                                              movie_counts)

    @encoders.graph_safe
    def _forward(self, features):
        query = self.query_tower(features)
        candidate = self.candidate_tower(features[contract.MOVIE_ID])
        return query, candidate, tasks.raw_rating(self, features, query, candidate)

    @encoders.graph_safe
    def call(self, features, training=None, mask=None):
        _, _, raw = self._forward(features)
        return tf.clip_by_value(raw, self.hparams.rating_min, self.hparams.rating_max)

    def compute_loss(self, features, training=False):
        query, candidate, raw = self._forward(features)
        if not training:
            raw = tf.clip_by_value(raw, self.hparams.rating_min, self.hparams.rating_max)
        rating_loss = self.rating_task(labels=features[contract.USER_RATING], predictions=raw)
        retrieval_loss = self.retrieval_task(
            query, candidate, features[contract.MOVIE_ID],
            compute_metrics=not training or self.hparams.train_top_k_metrics)
        return (self.hparams.rating_weight * rating_loss
                + self.hparams.retrieval_weight * retrieval_loss)


class _SequenceModel(_TwoTowerModel):
    """Retrieval of the next movie from the context movies of sequence examples:
    ``call(features)`` -> query embeddings ``[B, D]`` from ``context_movie_id``
    ``[B, L]``; the label ``label_movie_id`` ``[B]`` is embedded by the candidate tower.
    Subclasses give the query tower (:meth:`build_query_tower`) and the model's name."""

    model_name = "sequence_model"

    def __init__(self, vocabulary: Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[inputs.TimestampStats] = None,
                 movie_counts: Optional[np.ndarray] = None):
        del timestamp_stats  # the sequence examples' timestamp is not a query feature here
        super().__init__(name=self.model_name)
        self.hparams = hparams
        # With shared embeddings the movie table is looked up by the label and by each
        # context position (the row penalty's expected lookups per example).
        shared_lookups = vocabulary.sequence_shape()[0] if hparams.share_embeddings else 0
        self.candidate_tower = _movie_tower(vocabulary, hparams, 1 + shared_lookups)
        self.query_tower = self.build_query_tower(vocabulary, hparams)
        self.task = _retrieval_task(self.candidate_tower, vocabulary, hparams, movie_counts)

    def build_query_tower(self, vocabulary: Vocabulary, hparams: HParams) -> keras.Model:
        raise NotImplementedError


class SequentialModel(_SequenceModel):
    """The sequential tutorial: a GRU over the user's last movies retrieves the next one
    (components/trainer/towers.py ``SequenceQueryTower``)."""

    model_name = "sequential_model"

    def build_query_tower(self, vocabulary, hparams):
        return towers.SequenceQueryTower(
            vocabulary, hparams.embedding_dim,
            movie_tower=self.candidate_tower if hparams.share_embeddings else None,
            mask_padding=hparams.mask_padding, l2=hparams.l2_regularization,
            l2_row_weights=_row_weights(vocabulary, hparams, vocabulary.movie_counts,
                                        vocabulary.sequence_shape()[0], reserved_rows=2))


class AttentionModel(_SequenceModel):
    """SASRec-style: causal self-attention over the user's last movies retrieves the next
    (components/trainer/attention.py: the query is the output at the last real movie;
    with ``share_embeddings`` the candidate tower also embeds the context movies).

    Loss: the label's retrieval loss from the last real position (as the GRU's), plus,
    with ``every_position_weight`` > 0 and in training only, that weight times the loss
    of predicting each context movie ``i + 1`` from the output at ``i`` (SASRec's every
    position; the examples' context lists hold those next movies). Evaluation's loss and
    top-K are the label's alone, comparable with the GRU's.
    """

    model_name = "attention_model"

    def build_query_tower(self, vocabulary, hparams):
        return attention.AttentionQueryTower(
            self.candidate_tower if hparams.share_embeddings
            else _movie_tower(vocabulary, hparams, vocabulary.sequence_shape()[0]),
            vocabulary.sequence_shape()[0], hparams.embedding_dim,
            blocks=hparams.attention_blocks, heads=hparams.attention_heads,
            dropout=hparams.attention_dropout, l2=hparams.l2_regularization)

    def compute_loss(self, features, training=False):
        ids = features[contract.CONTEXT_MOVIE_ID]
        labels = features[self.label_key]
        outputs, mask, last = self.query_tower.sequence(ids, training=training)
        loss = self.task(
            tf.gather(outputs, last, batch_dims=1), self.candidate_tower(labels), labels,
            compute_metrics=not training or self.hparams.train_top_k_metrics)
        if not training or self.hparams.every_position_weight == 0:
            return loss
        # Position i (a real movie before the last) predicts the context movie at i + 1.
        following = tf.concat([ids[:, 1:], tf.zeros_like(ids[:, :1])], axis=1)
        index = tf.range(tf.shape(ids, out_type=tf.int64)[1])[None, :]
        earlier = mask & (index < last[:, None]) & tf.not_equal(
            following, contract.PAD_MOVIE_ID)
        targets = tf.boolean_mask(following, earlier)                          # [N]
        context_loss = self.task(
            tf.boolean_mask(outputs, earlier), self.candidate_tower(targets), targets,
            compute_metrics=False)
        return loss + self.hparams.every_position_weight * context_loss


def _rating_parts(vocabulary, hparams):
    """The rating head and, if ``hparams.rating_biases``, the user/movie bias terms."""
    head = tasks.rating_head(hparams.rating_layers, hparams.rating_min, hparams.rating_max)
    biases = (tasks.RatingBiases(vocabulary, hparams.rating_bias_l2)
              if hparams.rating_biases else None)
    return head, biases


def _user_tower(vocabulary, hparams, timestamp_stats):
    if hparams.use_timestamps and timestamp_stats is None:
        raise ValueError("use_timestamps needs timestamp_stats (features.timestamp_stats)")
    return towers.UserTower(vocabulary.user_ids, hparams.embedding_dim,
                     timestamp_stats if hparams.use_timestamps else None, hparams.tower_layers,
                     l2=hparams.l2_regularization,
                     timestamp_features=hparams.timestamp_features,
                     l2_row_weights=_row_weights(vocabulary, hparams, vocabulary.user_counts))


def _movie_tower(vocabulary, hparams, lookups_per_example=1):
    return towers.MovieTower(vocabulary, hparams.embedding_dim, hparams.use_title, hparams.use_genres,
                      hparams.tower_layers, hparams.title_max_tokens,
                      l2=hparams.l2_regularization,
                      l2_row_weights=_row_weights(vocabulary, hparams, vocabulary.movie_counts,
                                                  lookups_per_example))


def _sparse_updates(vocabulary: Vocabulary, hparams: HParams) -> bool:
    return hparams.sparse_updates(vocabulary.num_users, vocabulary.num_movies)


def _row_weights(vocabulary: Vocabulary, hparams: HParams, counts, lookups_per_example=1,
                 reserved_rows=1):
    """With sparse updates, an id table's per-row penalty weights (the penalty on the
    looked-up rows, equal to the whole table's in expectation: encoders.lookup_weights);
    None (the whole-table penalty) otherwise."""
    if not _sparse_updates(vocabulary, hparams):
        return None
    return encoders.lookup_weights(counts, lookups_per_example, reserved_rows)


def _retrieval_task(candidate_tower, vocabulary, hparams, movie_counts=None):
    """Full softmax unless ``hparams.samples_softmax`` on this catalogue (see
    components/trainer/sampling.py)."""
    return tasks.RetrievalTask(
        candidate_tower, vocabulary,
        full_softmax=not hparams.samples_softmax(vocabulary.num_movies),
        logq_correction=hparams.logq_correction,
        remove_accidental_hits=hparams.remove_accidental_hits,
        temperature=hparams.temperature, ks=hparams.top_ks,
        num_sampled_negatives=hparams.num_sampled_negatives, movie_counts=movie_counts)


MODEL_CLASSES = {contract.RETRIEVAL: RetrievalModel, contract.RANKING: RankingModel,
                 contract.MULTITASK: MultitaskModel, contract.SEQUENTIAL: SequentialModel,
                 contract.ATTENTION: AttentionModel}


def build_model(hparams: HParams, vocabulary: Vocabulary,
                timestamp_stats: Optional[inputs.TimestampStats] = None,
                movie_counts: Optional[np.ndarray] = None,
                recency_table: Optional[recency.RecencyTable] = None) -> tfrs.Model:
    """The (uncompiled) model ``hparams.model``, initialized from ``hparams.seed``.

    ``movie_counts`` ``[M]``: the training examples' label counts
    (``sampling.training_movie_counts``), the popularity of sampled softmax's log-Q
    correction and negative pool; default: the vocabulary's counts (both splits).
    ``recency_table``: the training files' (``recency.training_recency``), needed with
    ``recency_windows_days``."""
    keras.utils.set_random_seed(hparams.seed)
    extra = {} if recency_table is None else {"recency_table": recency_table}
    model = MODEL_CLASSES[hparams.model](vocabulary, hparams, timestamp_stats, movie_counts,
                                         **extra)
    # Whether its tables train with sparse updates (HParams.sparse_updates_min_rows): the
    # towers' penalties are built for it; compile_model picks the optimizer by it.
    model.sparse_updates = _sparse_updates(vocabulary, hparams)
    return model


def compile_model(model: tfrs.Model, hparams: HParams) -> tfrs.Model:
    model.compile(optimizer=optimizers.make_optimizer(hparams, model.sparse_updates))
    return model


def create_variables(model: tfrs.Model, batch: Dict[str, tf.Tensor]) -> None:
    """Creates every variable of a compiled ``model`` and of its optimizer from one input
    ``batch`` (a dict of features ``[B, ...]``). Keras layers create theirs at their first
    call, the optimizer its slots at its first step; and tf.function traces a first
    training step that creates variables twice (once creating them, once without). Under
    a ``tf.distribute`` strategy, call it in the strategy's scope."""
    model(batch)
    if model.hparams.kind.retrieves:
        model.candidate_tower(batch[model.label_key])
    model.optimizer.build(model.trainable_variables)
