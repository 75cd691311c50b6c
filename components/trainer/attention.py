"""Causal self-attention over a user's last movies: the ``attention`` model's query tower.

Shapes (``B`` histories, ``L'`` their padded width, ``L`` = ``max_length``, the example
generator's context length; ``D`` = ``embedding_dim``)::

    CausalSelfAttentionBlock   (x [B, L', D], mask [B, L'] bool)  -> [B, L', D]
    AttentionQueryTower        {context_movie_id [B, L']}         -> [B, D]
      .sequence(ids [B, L'])   -> (outputs [B, L', D], mask [B, L'] bool, last [B] int)

SASRec (Kang and McAuley, 2018) on the sequence examples' layout: histories are oldest
first and padded with 0 at the *end*. Attention is causal (position ``i`` sees the real
movies at ``j <= i``) and never sees padding, and the learned positions count from the
first movie read (0, 1, ...): so the output at position ``i`` depends only on the movies
up to ``i`` -- it is the query of that prefix, which is what the every-position loss
trains (models.AttentionModel) -- and the query is the output at the last real movie.
Appending padding, or any movie after position ``i``, leaves the output at ``i``
unchanged. A history longer than ``L`` is read from its ``L`` most recent movies (the
window the model was trained on), positions counted from the first of them.
"""

from __future__ import annotations

from typing import Mapping

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import tensorflow as tf

from components import contract
from components.trainer import encoders

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


class CausalSelfAttentionBlock(keras.layers.Layer):
    """One pre-norm transformer block with a causal, padding-aware attention mask.

    ``call(x [B, L', D], mask [B, L'] bool)`` -> ``[B, L', D]``:
    ``x + MHA(LN(x))`` (position ``i`` attends to real positions ``j <= i``), then
    ``x + FFN(LN(x))`` (two ``D``-wide dense layers, ReLU between), each with dropout on
    its output; masked positions are zeroed on the way out.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6,
                                                              name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=heads, key_dim=max(dim // heads, 1), dropout=dropout,
            name="self_attention")
        self.feedforward_norm = keras.layers.LayerNormalization(epsilon=1e-6,
                                                                name="feedforward_norm")
        self.feedforward = keras.Sequential([
            keras.layers.Dense(dim, activation="relu"), keras.layers.Dropout(dropout),
            keras.layers.Dense(dim)], name="feedforward")
        self.dropout = keras.layers.Dropout(dropout)

    @encoders.graph_safe
    def call(self, x, mask=None, training=None):
        width = tf.shape(x)[1]
        causal = tf.linalg.band_part(tf.ones([width, width], tf.bool), -1, 0)  # j <= i
        allowed = tf.logical_and(causal[None], mask[:, None, :])             # [B, L', L']
        normed = self.attention_norm(x)
        attended = self.attention(normed, normed, attention_mask=allowed, training=training)
        x = x + self.dropout(attended, training=training)
        x = x + self.dropout(self.feedforward(self.feedforward_norm(x), training=training),
                             training=training)
        return x * tf.cast(mask, x.dtype)[..., None]


class AttentionQueryTower(keras.Model):
    """Context movies -> causal self-attention -> the output at the last real movie.

    Input: ``{"context_movie_id": int64 [B, L']}`` (or the tensor), oldest first, padded
    with 0 at the end, any width ``L'``. Output: float32 ``[B, D]``. An empty history
    (all padding) gets the final layer norm of zeros.

    Args:
      movie_tower: embeds the context movies (ids ``[B, L']`` -> ``[B, L', D]``): the
        candidate tower itself for shared item representations, or a tower of its own.
      max_length: ``L``, how many of the most recent movies are read (as many learned
        positions).
      embedding_dim: ``D``, the movie tower's width.
      blocks, heads, dropout: the transformer blocks (:class:`CausalSelfAttentionBlock`),
        attention heads per block, dropout rate (inputs, attention, block outputs).
      l2: L2 penalty on the position embeddings.
    """

    def __init__(self, movie_tower: keras.Model, max_length: int, embedding_dim: int,
                 blocks: int = 2, heads: int = 2, dropout: float = 0.2, l2: float = 0.0,
                 name: str = "attention_query_tower"):
        super().__init__(name=name)
        if max_length < 1:
            raise ValueError(f"max_length must be positive, not {max_length}")
        self.movie_tower = movie_tower
        self.max_length = int(max_length)
        self.position_embedding = keras.layers.Embedding(
            self.max_length, embedding_dim, embeddings_regularizer=encoders.regularizer(l2),
            name="position_embedding")
        self.input_dropout = keras.layers.Dropout(dropout)
        self.blocks = [CausalSelfAttentionBlock(embedding_dim, heads, dropout,
                                                name=f"block_{i}") for i in range(blocks)]
        self.output_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="output_norm")

    @encoders.graph_safe
    def sequence(self, ids, training=None):
        """``ids [B, L']`` -> (outputs ``[B, L', D]``, mask ``[B, L']``: the real movies
        read, last ``[B]``: the index of the last real movie, 0 for an empty history).
        For histories of at most ``L`` movies, the output at ``i`` depends only on the
        movies at ``j <= i``."""
        real = tf.not_equal(ids, contract.PAD_MOVIE_ID)
        # Real movies after each position; the L most recent (0 .. L-1) are read.
        recency = tf.cumsum(tf.cast(real, tf.int32), axis=1, reverse=True, exclusive=True)
        mask = tf.logical_and(real, recency < self.max_length)
        # Movies read before each position: 0 for the first one read, 1 after it, ...
        order = tf.cumsum(tf.cast(mask, tf.int32), axis=1, exclusive=True)
        positions = self.position_embedding(tf.minimum(order, self.max_length - 1))
        x = self.input_dropout(self.movie_tower(ids) + positions, training=training)
        x = x * tf.cast(mask, x.dtype)[..., None]
        for block in self.blocks:
            x = block(x, mask=mask, training=training)
        outputs = self.output_norm(x)
        index = tf.range(tf.shape(ids, out_type=tf.int64)[1])[None, :]
        last = tf.reduce_max(tf.where(real, index, tf.zeros_like(index)), axis=1)
        return outputs, mask, last

    @encoders.graph_safe
    def call(self, inputs, training=None, mask=None):
        ids = inputs[contract.CONTEXT_MOVIE_ID] if isinstance(inputs, Mapping) else inputs
        outputs, _, last = self.sequence(ids, training=training)
        return tf.gather(outputs, last, batch_dims=1)
