"""The towers: query and candidate embeddings of every model.

Shapes (``B`` examples, ``D`` = ``embedding_dim``, ``L`` context length)::

    UserTower            {user_id [B], timestamp [B]?}      -> [B, D]
    MovieTower           movie ids [...] (any shape)        -> [..., D]
    SequenceQueryTower   {context_movie_id [B, L]}          -> [B, D]   (padding masked)

Movie side features (title tokens, genres) are looked up *by movie id* in tables built
from the vocabulary, not read from the examples: so the candidate tower takes only ids,
and the same tower serves rating examples, sequence examples, the whole-catalogue
embedding matrix and the GRU's context movies.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components import contract
from components.trainer import encoders, inputs
from components.trainer.hparams import TIMESTAMP_FEATURES
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


class UserTower(keras.Model):
    """The query tower of rating-based retrieval (and the user half of ranking).

    Input: ``{"user_id": int64 [B], "timestamp": int64 [B]}`` (the timestamp only with
    ``timestamp_stats``; other keys are ignored). Output: float32 ``[B, D]``.

    Without timestamps it is the tutorial's user-id embedding. With them, the id
    embedding and the ``timestamp_features`` -- ``"global"``: the normalized timestamp and
    its bucket embedding (:class:`TimestampEncoder`); ``"user_relative"``: the time since
    the user's first training rating (:class:`RelativeTimeEncoder`, needs the per-user
    first timestamps of ``timestamp_stats``) -- are concatenated and projected to ``D``
    through ``tower_layers``.
    """

    def __init__(self, user_ids: np.ndarray, embedding_dim: int,
                 timestamp_stats: Optional[inputs.TimestampStats] = None,
                 tower_layers: Sequence[int] = (), name: str = "user_tower",
                 l2: float = 0.0,
                 timestamp_features: Sequence[str] = ("global", "user_relative"),
                 l2_row_weights: Optional[np.ndarray] = None):
        super().__init__(name=name)
        if len(user_ids) == 0:
            raise ValueError("the user vocabulary is empty")
        self.lookup = keras.layers.IntegerLookup(
            vocabulary=np.asarray(user_ids, np.int64), mask_token=None, num_oov_indices=1,
            name="user_lookup")
        self.embedding = encoders.penalized_embedding(
            len(user_ids) + 1, embedding_dim, l2, l2_row_weights, name="user_embedding")
        unknown = sorted(set(timestamp_features) - set(TIMESTAMP_FEATURES))
        if unknown:
            raise ValueError(f"unknown timestamp features {unknown}; known: {TIMESTAMP_FEATURES}")
        self.timestamp = self.relative_time = None
        if timestamp_stats is not None and "global" in timestamp_features:
            self.timestamp = encoders.TimestampEncoder(timestamp_stats, embedding_dim, l2,
                                              name="timestamp")
        if timestamp_stats is not None and "user_relative" in timestamp_features:
            if not timestamp_stats.user_ids:
                raise ValueError("user_relative time needs timestamp_stats with user ids "
                                 "(features.timestamp_stats over batches holding user_id)")
            first = timestamp_stats.first_timestamps()
            self.relative_time = encoders.RelativeTimeEncoder(
                [np.nan] + [first.get(int(user), np.nan) for user in user_ids],
                embedding_dim, l2, name="relative_time")
        uses_time = self.timestamp is not None or self.relative_time is not None
        self.projection = (encoders.projection(tower_layers, embedding_dim, "user_projection")
                           if uses_time or tower_layers else None)

    @encoders.graph_safe
    def call(self, inputs, training=None, mask=None):
        rows = self.lookup(inputs[contract.USER_ID])
        embedding = self.embedding(rows)
        if self.projection is None:
            return embedding
        parts = [embedding]
        if self.timestamp is not None:
            parts.append(self.timestamp(inputs[contract.TIMESTAMP]))
        if self.relative_time is not None:
            parts.append(self.relative_time((rows, inputs[contract.TIMESTAMP])))
        return self.projection(tf.concat(parts, axis=-1))


class MovieTower(keras.Model):
    """The candidate tower: movie ids of any shape ``[...]`` -> float32 ``[..., D]``.

    Accepts the ids tensor, or a dict holding it under ``"movie_id"``. The id embedding
    is, with ``use_title`` / ``use_genres``, concatenated with the mean embedding of the
    title's tokens and the mean embedding of the movie's genres -- both looked up by id
    in tables built from the vocabulary -- and projected to ``D``. Unknown ids (and the
    padding id 0) get the shared out-of-vocabulary row.
    """

    def __init__(self, vocabulary: Vocabulary, embedding_dim: int,
                 use_title: bool = False, use_genres: bool = False,
                 tower_layers: Sequence[int] = (), title_max_tokens: int = 10_000,
                 name: str = "movie_tower", l2: float = 0.0,
                 l2_row_weights: Optional[np.ndarray] = None):
        super().__init__(name=name)
        self.lookup = keras.layers.IntegerLookup(
            vocabulary=vocabulary.movie_ids, mask_token=None, num_oov_indices=1,
            name="movie_lookup")
        self.embedding = encoders.penalized_embedding(
            vocabulary.num_movies + 1, embedding_dim, l2, l2_row_weights,
            name="movie_embedding")
        self.title_embedding = self.genre_embedding = None
        if use_title:
            table, tokens = encoders.title_token_table(vocabulary.movie_titles, title_max_tokens)
            self._title_table = tf.constant(table)
            self.title_embedding = keras.layers.Embedding(
                tokens, embedding_dim, name="title_token_embedding")
        if use_genres:
            self._genre_table = tf.constant(
                encoders.genre_weight_table(vocabulary.movie_genres, vocabulary.genres))
            # Weighted sum of genre vectors = a bias-free Dense on the genre weights.
            self.genre_embedding = keras.layers.Dense(
                embedding_dim, use_bias=False, name="genre_embedding")
        extras = use_title or use_genres
        self.projection = (encoders.projection(tower_layers, embedding_dim, "movie_projection")
                           if extras or tower_layers else None)

    @encoders.graph_safe
    def call(self, inputs, training=None, mask=None):
        ids = inputs[contract.MOVIE_ID] if isinstance(inputs, Mapping) else inputs
        index = self.lookup(ids)
        embedding = self.embedding(index)
        if self.projection is None:
            return embedding
        parts = [embedding]
        if self.title_embedding is not None:
            tokens = tf.gather(self._title_table, index)                  # [..., T]
            weights = tf.cast(tokens > 0, tf.float32)
            token_embeddings = self.title_embedding(tokens)              # [..., T, D]
            total = tf.reduce_sum(token_embeddings * weights[..., None], axis=-2)
            parts.append(total / tf.maximum(tf.reduce_sum(weights, -1, keepdims=True), 1.0))
        if self.genre_embedding is not None:
            parts.append(self.genre_embedding(tf.gather(self._genre_table, index)))
        return self.projection(tf.concat(parts, axis=-1))


class SequenceQueryTower(keras.Model):
    """The sequential tutorial's query tower: context movies -> GRU -> ``[B, D]``.

    Input: ``{"context_movie_id": int64 [B, L]}`` (or the tensor), oldest first, padded
    with 0 at the end. Padding is masked: the GRU's output is its state after the last
    real movie, whatever the padding length (a ``[B, 3]`` history and the same history
    padded to ``[B, 10]`` embed identically).

    The context movies are embedded by their own embedding, or with
    ``movie_tower`` by the candidate tower itself (shared item representations).
    """

    def __init__(self, vocabulary: Vocabulary, embedding_dim: int,
                 movie_tower: Optional[MovieTower] = None, name: str = "sequence_query_tower",
                 mask_padding: bool = True, l2: float = 0.0,
                 l2_row_weights: Optional[np.ndarray] = None):
        super().__init__(name=name)
        self.movie_tower = movie_tower
        if movie_tower is None:
            # mask_token=0 maps the padding id to index 0, which mask_zero then masks.
            self.lookup = keras.layers.IntegerLookup(
                vocabulary=vocabulary.movie_ids, mask_token=contract.PAD_MOVIE_ID,
                num_oov_indices=1, name="context_movie_lookup")
            self.embedding = encoders.penalized_embedding(
                vocabulary.num_movies + 2, embedding_dim, l2, l2_row_weights,
                mask_zero=mask_padding, name="context_movie_embedding")
        self.mask_padding = mask_padding
        self.gru = keras.layers.GRU(embedding_dim, name="gru")

    @encoders.graph_safe
    def call(self, inputs, training=None, mask=None):
        ids = inputs[contract.CONTEXT_MOVIE_ID] if isinstance(inputs, Mapping) else inputs
        mask = tf.not_equal(ids, contract.PAD_MOVIE_ID) if self.mask_padding else None
        if self.movie_tower is not None:
            sequence = self.movie_tower(ids)
        else:
            sequence = self.embedding(self.lookup(ids))
        return self.gru(sequence, mask=mask)
