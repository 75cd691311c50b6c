"""The Trainer's SavedModel: the query tower's serving signatures plus the Evaluator's.

Signatures of ``<model>/Format-Serving/`` (all take or return batches ``[B]``):

  serving_default      raw query tensors -> {"query_embedding": [B, D]} (ranking:
                       {"rating": [B]})                       (models.QueryModule)
  serve_tf_examples    serialized tf.Examples -> the same     (models.QueryModule)
  transform_features   serialized tf.Examples ->
                         label_index       int64  [B]  the label movie's vocabulary row
                                                       (-1: not in the vocabulary)
                         user_activity     string [B]  "<=20", "21-100", ">100", "unknown"
                         movie_popularity  string [B]  "head", "torso", "tail", "unknown"
                       TFMA's preprocessing function: the label and the slice features.
  eval_scores          serialized tf.Examples -> {"scores": [B, M]}: the query's score
                       for every movie, column i = vocabulary row i (retrieval,
                       multitask, sequential only).

So the Evaluator's top-K accuracy (``SparseTopKCategoricalAccuracy`` of ``scores``
against ``label_index``) ranges over exactly the Trainer's candidate set -- the whole
vocabulary, rows in ``movies.tsv`` order, the embeddings of ``candidates.npz`` -- and
agrees with ``models.evaluate_retrieval`` on the same split. Padding (movie id 0) and
out-of-vocabulary ids are no column; an out-of-vocabulary label (-1) is a miss for both.

The export holds no ScaNN op: the Evaluator (and stock TensorFlow Serving) load it as is.
The Pusher builds the served models (with the index) from it and ``candidates.npz``.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import components  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np
import tensorflow as tf

from components.trainer import features as F
from components.trainer import models

TRANSFORM_SIGNATURE = "transform_features"
EVAL_SIGNATURE = "eval_scores"
SERVING_SIGNATURE = "serving_default"
TF_EXAMPLES_SIGNATURE = "serve_tf_examples"
SCORES = "scores"
LABEL_INDEX = "label_index"
USER_ACTIVITY = "user_activity"
MOVIE_POPULARITY = "movie_popularity"
UNKNOWN_BUCKET = "unknown"
RATED_FILE = "rated.npz"


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """Bucket boundaries of the slice features (``EvaluationConfig.slices()``).

    user_activity_boundaries: ascending rating counts; bucket i holds users with at most
      boundaries[i] ratings (and more than boundaries[i-1]); the last, more than all.
    movie_popularity_quantiles: ascending fractions of the catalogue by rank (most rated
      first). Two quantiles name the buckets head/torso/tail.
    """

    user_activity_boundaries: Tuple[int, ...] = (20, 100)
    movie_popularity_quantiles: Tuple[float, ...] = (0.1, 0.5)

    @classmethod
    def from_dict(cls, config: Optional[Mapping[str, Any]]) -> "SliceSpec":
        config = dict(config or {})
        spec = cls(**{key: tuple(value) for key, value in config.items()})
        if list(spec.user_activity_boundaries) != sorted(set(spec.user_activity_boundaries)):
            raise ValueError("user_activity_boundaries must be strictly ascending")
        quantiles = spec.movie_popularity_quantiles
        if list(quantiles) != sorted(set(quantiles)) or not all(0 < q < 1 for q in quantiles):
            raise ValueError("movie_popularity_quantiles must ascend strictly within (0, 1)")
        return spec


def activity_bucket_names(boundaries: Sequence[int]) -> Tuple[str, ...]:
    """(20, 100) -> ("<=20", "21-100", ">100")."""
    if not boundaries:
        return ("all",)
    names = [f"<={boundaries[0]}"]
    names += [f"{low + 1}-{high}" for low, high in zip(boundaries, boundaries[1:])]
    return tuple(names + [f">{boundaries[-1]}"])


def popularity_bucket_names(quantiles: Sequence[float]) -> Tuple[str, ...]:
    """(0.1, 0.5) -> ("head", "torso", "tail"); otherwise "top 0-10%"-style names."""
    if len(quantiles) == 2:
        return ("head", "torso", "tail")
    edges = [0.0, *quantiles, 1.0]
    return tuple(f"top {100 * low:g}-{100 * high:g}%" for low, high in zip(edges, edges[1:]))


def user_activity_buckets(counts: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """The bucket name of each user's rating count."""
    names = np.asarray(activity_bucket_names(boundaries), object)
    return names[np.searchsorted(np.asarray(boundaries, np.int64), counts, side="left")]


def movie_popularity_buckets(num_movies: int, quantiles: Sequence[float]) -> np.ndarray:
    """The bucket name of each vocabulary row (rank 0 = most rated)."""
    names = np.asarray(popularity_bucket_names(quantiles), object)
    fractions = np.arange(num_movies) / max(num_movies, 1)
    return names[np.searchsorted(np.asarray(quantiles), fractions, side="right")]


def label_key(hparams: models.HParams) -> str:
    return F.LABEL_MOVIE_ID if hparams.model == models.SEQUENTIAL else F.MOVIE_ID


def _string_table(keys: np.ndarray, values: np.ndarray) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(np.asarray(keys, np.int64)),
        tf.constant([str(v) for v in values], tf.string)), UNKNOWN_BUCKET)


def export_module(model, hparams: models.HParams, vocabulary: F.Vocabulary,
                  slices: SliceSpec, catalogue: Optional[np.ndarray] = None) -> tf.Module:
    """``models.QueryModule`` plus ``transform_features`` and (``catalogue`` [M, D]
    given) ``eval_scores``; see the module docstring."""
    module = models.QueryModule(model, hparams)
    module.user_activity = _string_table(
        vocabulary.user_ids,
        user_activity_buckets(vocabulary.user_counts, slices.user_activity_boundaries))
    module.movie_rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(vocabulary.movie_ids, tf.int64),
        tf.range(vocabulary.num_movies, dtype=tf.int64)), -1)
    popularity = tf.constant(list(movie_popularity_buckets(
        vocabulary.num_movies, slices.movie_popularity_quantiles)), tf.string)
    key = label_key(hparams)
    transform_spec = {F.USER_ID: tf.io.FixedLenFeature([], tf.int64),
                      key: tf.io.FixedLenFeature([], tf.int64)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
    def transform_features(serialized):
        features = tf.io.parse_example(serialized, transform_spec)
        rows = module.movie_rows.lookup(features[key])
        return {
            LABEL_INDEX: rows,
            USER_ACTIVITY: module.user_activity.lookup(features[F.USER_ID]),
            MOVIE_POPULARITY: tf.where(rows >= 0, tf.gather(popularity, tf.maximum(rows, 0)),
                                       UNKNOWN_BUCKET),
        }

    module.transform_features = transform_features
    if catalogue is not None:
        module.catalogue = tf.Variable(np.asarray(catalogue, np.float32), trainable=False,
                                       name="catalogue")
        spec = models.feature_spec(hparams)
        query_spec = {name: spec[name] for name in models.query_input_signature(hparams)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
        def eval_scores(serialized):
            query = module.model.query_tower(tf.io.parse_example(serialized, query_spec))
            return {SCORES: tf.matmul(query, module.catalogue, transpose_b=True)}

        module.eval_scores = eval_scores
    return module


def save(module: tf.Module, export_dir: str) -> str:
    """Saves ``export_module``'s result with every signature it has."""
    signatures = {
        SERVING_SIGNATURE: module.serve.get_concrete_function(),
        TF_EXAMPLES_SIGNATURE: module.serve_tf_examples.get_concrete_function(),
        TRANSFORM_SIGNATURE: module.transform_features.get_concrete_function(),
    }
    if hasattr(module, EVAL_SIGNATURE):
        signatures[EVAL_SIGNATURE] = module.eval_scores.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


def rated_movies(hparams: models.HParams, vocabulary: F.Vocabulary,
                 file_patterns: Sequence) -> Dict[str, np.ndarray]:
    """Per user, the movies of their examples in ``file_patterns`` (both splits) -- what
    ``recommend`` leaves out -- and their latest timestamp (the query time ``recommend``
    and the Pusher's ScaNN calibration use for models that read one)::

      {"user_ids" [U], "row_splits" [U + 1], "movie_ids" [N], "last_timestamps" [U]}

    users ascending, each user's movie ids ascending, padding and unknown ids dropped."""
    patterns = [p for pattern in file_patterns
                for p in ([pattern] if isinstance(pattern, str) else pattern)]
    if hparams.model == models.SEQUENTIAL:
        keys = (F.LABEL_MOVIE_ID, F.CONTEXT_MOVIE_ID)
        spec = F.sequence_feature_spec(hparams.max_context_length,
                                       hparams.max_context_movie_genre_length)
    else:
        keys = (F.MOVIE_ID,)
        spec = F.rating_feature_spec()
    dataset = F.make_dataset(patterns, F.select(spec, [F.USER_ID, F.TIMESTAMP, *keys]),
                             hparams.eval_batch_size, shuffle=False)
    users, movies, times = [], [], []
    for batch in dataset:
        user = batch[F.USER_ID].numpy().reshape(-1)
        times.append(np.stack([user, batch[F.TIMESTAMP].numpy().reshape(-1)], axis=1))
        for key in keys:
            ids = batch[key].numpy().reshape(len(user), -1)
            users.append(np.repeat(user, ids.shape[1]))
            movies.append(ids.reshape(-1))
    users = np.concatenate(users) if users else np.zeros(0, np.int64)
    movies = np.concatenate(movies) if movies else np.zeros(0, np.int64)
    known = models.movie_rows(vocabulary, movies) >= 0
    pairs = np.unique(np.stack([users[known], movies[known]], axis=1), axis=0)
    user_ids, starts = np.unique(pairs[:, 0], return_index=True)
    times = np.concatenate(times) if times else np.zeros((0, 2), np.int64)
    last = {int(u): int(t) for u, t in times[np.lexsort((times[:, 1], times[:, 0]))]}
    return {
        "user_ids": user_ids.astype(np.int64),
        "row_splits": np.append(starts, len(pairs)).astype(np.int64),
        "movie_ids": pairs[:, 1].astype(np.int64),
        "last_timestamps": np.asarray([last.get(int(u), 0) for u in user_ids], np.int64),
    }


def save_rated_movies(rated: Dict[str, np.ndarray], directory: str) -> str:
    return save_npz(os.path.join(directory, RATED_FILE), **rated)


def save_npz(path: str, **arrays: np.ndarray) -> str:
    """``np.savez`` onto any file system TensorFlow knows (the export may be on gs://)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path
