"""The Trainer's SavedModel: the query tower's serving signatures plus the Evaluator's.

Signatures of ``<model>/Format-Serving/`` (all take or return batches ``[B]``):

  serving_default      raw query tensors -> {"query_embedding": [B, D]} (ranking:
                       {"rating": [B]})                       (QueryModule)
  serve_tf_examples    serialized tf.Examples -> the same     (QueryModule)
  transform_features   serialized tf.Examples ->
                         label_index       int64  [B]  the label movie's vocabulary row
                                                       (-1: not in the vocabulary)
                         user_activity     string [B]  "<=20", "21-100", ">100", "unknown"
                         movie_popularity  string [B]  "head", "torso", "tail", "unknown"
                       TFMA's preprocessing function: the label and the slice features.
  eval_ranks           serialized tf.Examples -> {"label_rank": [B]}: how many movies of
                       the whole catalogue (vocabulary rows) the query scores strictly
                       above the label (ties in the label's favour; a label not in the
                       vocabulary: ``MISSING_RANK``) (retrieval, multitask, sequential
                       only); and, when the export knows the users' training movies,
                       {"label_rank_excluding_rated": [B]}: the same with each user's
                       training movies (never the label) left out (HR@k / Recall@k /
                       NDCG@k as served).

So the Evaluator's top-K accuracy (``rank < k``, components/evaluator/metrics.py) ranges
over exactly the Trainer's candidate set -- the whole vocabulary, rows in ``movies.tsv``
order, the embeddings of ``candidates.npz`` -- and agrees with
``evaluation.evaluate_retrieval`` on the same split. The scores are computed
``EVAL_CHUNK`` movies at a time and only a count per example leaves the signature: what
TFMA holds per example does not grow with the catalogue.

``D`` is the towers' width: with the retrieval model's recency prior, the embedding
width plus one coordinate per window (components/trainer/recency.py), so every consumer
of ``query_embedding`` and ``candidates.npz`` scores with the prior unchanged.

The export holds no ScaNN op: the Evaluator (and stock TensorFlow Serving) load it as is.
The Pusher builds the served models (with the index) from it and ``candidates.npz``.
"""

from __future__ import annotations

import io
import os
from typing import Dict, Optional, Sequence

import components  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np
import tensorflow as tf
# tf_keras' switch behind ``Model.save(save_traces=False)``, for a module that holds a
# Keras model: pinned in requirements.lock (see ``save``).
from tf_keras.src.saving.legacy.saved_model import utils as keras_saving

from components import contract
from components.evaluator import slices as slices_lib
from components.trainer import histories, inputs
from components.trainer.evaluation import movie_rows
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary


# Movies scored at once by eval_ranks: [B, EVAL_CHUNK] scores in memory, never [B, M].
EVAL_CHUNK = 4096

# The signatures are traced without AutoGraph (``autograph=False``): they have no
# data-dependent Python control flow, and converting them converts, through the towers,
# Keras' own layer code, which was most of a first export's time in a process.


def _string_table(keys: np.ndarray, values: np.ndarray) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(np.asarray(keys, np.int64)),
        tf.constant([str(v) for v in values], tf.string)), contract.UNKNOWN_BUCKET)


def query_input_signature(hparams: HParams) -> Dict[str, tf.TensorSpec]:
    """The raw tensors the query side of ``hparams.model`` reads at serving: its kind's
    query keys (a context list is ``[B, None]``: any history length), plus the timestamp
    when the model reads one."""
    kind = hparams.kind
    names = list(kind.query_keys)
    if hparams.use_timestamps and kind.examples == contract.RATING:
        names.insert(1, contract.TIMESTAMP)
    return {name: tf.TensorSpec([None, None] if name == contract.CONTEXT_MOVIE_ID
                                else [None], tf.int64, name) for name in names}


class QueryModule(tf.Module):
    """A SavedModel-friendly wrapper of a query tower (or of a ranking model).

    Signatures: ``serving_default`` takes the raw tensors of
    :func:`query_input_signature` and returns ``{"query_embedding": [B, D]}`` (a model
    that only rates: ``{"rating": [B]}``); ``serve_tf_examples`` takes serialized
    tf.Examples ``[B]``.
    """

    def __init__(self, model, hparams: HParams, vocabulary: Vocabulary):
        super().__init__()
        self.model = model
        retrieves = hparams.kind.retrieves
        self._tower = model.query_tower if retrieves else model
        output = contract.QUERY_EMBEDDING if retrieves else contract.RATING_OUTPUT
        signature = query_input_signature(hparams)
        spec = inputs.feature_spec(hparams, vocabulary)
        parse_spec = {name: spec[name] for name in signature}

        @tf.function(autograph=False, input_signature=[signature])
        def serve(features):
            return {output: self._tower(features)}

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None], tf.string, contract.EXAMPLES_INPUT)])
        def serve_tf_examples(serialized):
            return serve(tf.io.parse_example(serialized, parse_spec))

        self.serve = serve
        self.serve_tf_examples = serve_tf_examples


def export_module(model, hparams: HParams, vocabulary: Vocabulary,
                  slices: slices_lib.SliceSpec,
                  catalogue: Optional[np.ndarray] = None,
                  seen: Optional[histories.UserHistory] = None) -> tf.Module:
    """:class:`QueryModule` plus ``transform_features`` and (``catalogue`` [M, D]
    given) ``eval_ranks``, with ``label_rank_excluding_rated`` when ``seen`` (each user's
    training movies as vocabulary rows, ``evaluation.user_history``) is given; see the
    module docstring."""
    module = QueryModule(model, hparams, vocabulary)
    module.user_activity = _string_table(
        vocabulary.user_ids, slices_lib.user_activity_buckets(
            vocabulary.user_counts, slices.user_activity_boundaries))
    module.movie_rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(vocabulary.movie_ids, tf.int64),
        tf.range(vocabulary.num_movies, dtype=tf.int64)), -1)
    popularity = tf.constant(list(slices_lib.movie_popularity_buckets(
        vocabulary.num_movies, slices.movie_popularity_quantiles)), tf.string)
    key = hparams.kind.label_key
    transform_spec = {contract.USER_ID: tf.io.FixedLenFeature([], tf.int64),
                      key: tf.io.FixedLenFeature([], tf.int64)}

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([None], tf.string, contract.EXAMPLES_INPUT)])
    def transform_features(serialized):
        features = tf.io.parse_example(serialized, transform_spec)
        rows = module.movie_rows.lookup(features[key])
        return {
            contract.LABEL_INDEX: rows,
            contract.USER_ACTIVITY: module.user_activity.lookup(features[contract.USER_ID]),
            contract.MOVIE_POPULARITY: tf.where(
                rows >= 0, tf.gather(popularity, tf.maximum(rows, 0)),
                contract.UNKNOWN_BUCKET),
        }

    module.transform_features = transform_features
    if catalogue is not None:
        module.catalogue = tf.Variable(np.asarray(catalogue, np.float32), trainable=False,
                                       name="catalogue")
        spec = inputs.feature_spec(hparams, vocabulary)
        signature = query_input_signature(hparams)
        query_spec = {name: spec[name] for name in signature}

        # The label is ranked; the user's training movies, when given, are left out.
        query_spec = {**query_spec, key: transform_spec[key]}
        if seen is not None:
            _add_seen(module, seen)
            query_spec = {**query_spec, **transform_spec}

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None], tf.string, contract.EXAMPLES_INPUT)])
        def eval_ranks(serialized):
            features = tf.io.parse_example(serialized, query_spec)
            # Through ``serve``'s one concrete function: the tower is traced once.
            query = module.serve({name: features[name] for name in signature})
            return _label_ranks(module, query[contract.QUERY_EMBEDDING],
                                module.movie_rows.lookup(features[key]),
                                features[contract.USER_ID] if seen is not None else None)

        module.eval_ranks = eval_ranks
    return module


def _add_seen(module: tf.Module, seen: histories.UserHistory) -> None:
    """The users' training movies, kept in the module: user id -> position, and rows
    ``seen_values[seen_splits[p]:seen_splits[p + 1]]``."""
    module.seen_users = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(np.asarray(seen.user_ids, np.int64)),
        tf.range(len(seen.user_ids), dtype=tf.int64)), -1)
    module.seen_splits = tf.Variable(np.asarray(seen.row_splits, np.int64), trainable=False,
                                     name="seen_splits")
    module.seen_values = tf.Variable(np.asarray(seen.values, np.int64), trainable=False,
                                     name="seen_values")


def _seen_pairs(module: tf.Module, users, label_rows):
    """``(example [E], row [E])``: the training movies of each example's user, but the
    label."""
    position = module.seen_users.lookup(tf.reshape(users, [-1]))
    starts = tf.gather(module.seen_splits, tf.maximum(position, 0))
    ends = tf.gather(module.seen_splits, tf.maximum(position, 0) + 1)
    lengths = tf.where(position >= 0, ends - starts, tf.zeros_like(starts))
    index = tf.ragged.range(starts, starts + lengths)                       # [B, None]
    rows = tf.gather(module.seen_values, index.flat_values)                 # [E]
    example = index.value_rowids()                                           # [E]
    keep = tf.not_equal(rows, tf.gather(label_rows, example))
    return tf.boolean_mask(example, keep), tf.boolean_mask(rows, keep)


def _label_ranks(module: tf.Module, query, label_rows, users=None):
    """``eval_ranks``' outputs for queries ``[B, D]`` and label rows ``[B]`` (-1: not in
    the vocabulary); with ``users`` ``[B]``, also with their training movies left out.
    Scores ``[B, EVAL_CHUNK]`` at a time; the label's own column never counts."""
    catalogue = module.catalogue
    size = int(catalogue.shape[0])
    label_scores = tf.reduce_sum(query * tf.gather(catalogue, tf.maximum(label_rows, 0)), -1)
    if users is not None:
        seen_example, seen_row = _seen_pairs(module, users, label_rows)
    above = tf.zeros_like(label_rows)
    above_seen = tf.zeros_like(label_rows)
    batch = tf.shape(query, out_type=tf.int64)[0]
    for start in range(0, size, EVAL_CHUNK):
        width = min(EVAL_CHUNK, size - start)
        scores = tf.matmul(query, catalogue[start:start + width], transpose_b=True)
        columns = tf.range(start, start + width, dtype=tf.int64)
        counted = (scores > label_scores[:, None]) & (columns[None, :] != label_rows[:, None])
        above += tf.reduce_sum(tf.cast(counted, tf.int64), axis=1)
        if users is not None:
            inside = (seen_row >= start) & (seen_row < start + width)
            where = tf.stack([tf.boolean_mask(seen_example, inside),
                              tf.boolean_mask(seen_row, inside) - start], axis=1)
            seen = tf.scatter_nd(where, tf.ones([tf.shape(where)[0]], tf.int32),
                                 tf.stack([batch, tf.constant(width, tf.int64)])) > 0
            above_seen += tf.reduce_sum(tf.cast(counted & seen, tf.int64), axis=1)
    missing = label_rows < 0

    def rank(count):
        return tf.where(missing, tf.constant(contract.MISSING_RANK, tf.float32),
                        tf.cast(count, tf.float32))

    ranks = {contract.LABEL_RANK: rank(above)}
    if users is not None:
        ranks[contract.LABEL_RANK_EXCLUDING_RATED] = rank(above - above_seen)
    return ranks


def save(module: tf.Module, export_dir: str) -> str:
    """Saves ``export_module``'s result with every signature it has.

    Without Keras' per-layer traces: every reader (TFMA's ``tf_generic`` model, the
    Pusher, ``recommend``) loads the SavedModel with ``tf.saved_model.load`` and calls
    its signatures, never a layer; tracing each layer's call functions for Keras'
    own loader took most of an export's time. The variables and lookup tables are
    saved either way."""
    signatures = {
        contract.SERVING_SIGNATURE: module.serve.get_concrete_function(),
        contract.TF_EXAMPLES_SIGNATURE: module.serve_tf_examples.get_concrete_function(),
        contract.TRANSFORM_SIGNATURE: module.transform_features.get_concrete_function(),
    }
    if hasattr(module, contract.EVAL_SIGNATURE):
        signatures[contract.EVAL_SIGNATURE] = module.eval_ranks.get_concrete_function()
    with keras_saving.keras_option_scope(save_traces=False):
        tf.saved_model.save(module, export_dir, signatures=signatures)
    return export_dir


def rated_movies(hparams: HParams, vocabulary: Vocabulary,
                 file_patterns: Sequence) -> Dict[str, np.ndarray]:
    """Per user, the movies of their examples in ``file_patterns`` (both splits) -- what
    ``recommend`` leaves out -- and their latest timestamp (the query time ``recommend``
    and the Pusher's ScaNN calibration use for models that read one)::

      {"user_ids" [U], "row_splits" [U + 1], "movie_ids" [N], "last_timestamps" [U]}

    users ascending, each user's movie ids ascending, padding and unknown ids dropped.
    Models that read sequence examples also get each user's most recent movies in time
    order -- the context and label of the user's latest example, oldest first -- as
    ``"recent_row_splits"`` [U + 1] and ``"recent_movie_ids"``: the history a sequence
    query of that user is built from (the report's samples, the ScaNN calibration).
    Streamed a batch at a time: memory holds the distinct (user, movie) pairs, and one
    timestamp (and one latest example) per user, as numpy arrays
    (components/trainer/histories.py)."""
    patterns = [p for pattern in file_patterns
                for p in ([pattern] if isinstance(pattern, str) else pattern)]
    keys = hparams.kind.history_keys
    spec = inputs.select(inputs.examples_spec(hparams.kind, vocabulary),
                         [contract.USER_ID, contract.TIMESTAMP, *keys])
    dataset = inputs.make_dataset(patterns, spec, hparams.eval_batch_size, shuffle=False)
    pairs = histories.PairAccumulator()
    sequences = hparams.kind.examples == contract.SEQUENCE
    # [U] so far: users, their latest timestamp and (sequences) that example's movies.
    last_users, last_times = np.zeros(0, np.int64), np.zeros(0, np.int64)
    last_movies = None
    for batch in dataset:
        user = batch[contract.USER_ID].numpy().reshape(-1)
        movies = None
        if sequences:  # context (oldest first, 0-padded at the end) then the label
            movies = np.concatenate([
                batch[contract.CONTEXT_MOVIE_ID].numpy().reshape(len(user), -1),
                batch[contract.LABEL_MOVIE_ID].numpy().reshape(len(user), 1)], axis=1)
            if last_movies is not None:
                movies = np.concatenate([last_movies, movies])
        last_users, last_times, last_movies = _latest_per_user(
            np.concatenate([last_users, user]),
            np.concatenate([last_times, batch[contract.TIMESTAMP].numpy().reshape(-1)]),
            movies)
        for key in keys:
            ids = batch[key].numpy().reshape(-1)
            known = movie_rows(vocabulary, ids) >= 0
            pairs.add(np.repeat(user, len(ids) // max(len(user), 1))[known], ids[known])
    rated = pairs.result()
    latest = np.searchsorted(last_users, rated.user_ids)  # every rated user has one
    result = {
        "user_ids": rated.user_ids,
        "row_splits": rated.row_splits,
        "movie_ids": rated.values,
        "last_timestamps": last_times[latest].astype(np.int64),
    }
    if sequences:
        recent = last_movies[latest] if last_movies is not None else np.zeros((0, 1), np.int64)
        keep = movie_rows(vocabulary, recent.reshape(-1)).reshape(recent.shape) >= 0
        result["recent_row_splits"] = np.concatenate(
            [[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
        result["recent_movie_ids"] = recent[keep].astype(np.int64)  # row-major: in order
    return result


def _latest_per_user(users: np.ndarray, timestamps: np.ndarray,
                     movies: Optional[np.ndarray] = None):
    """``(users [u], latest timestamp [u], that example's movies [u, ...] or None)``:
    each distinct user once, ascending (of equal timestamps, the last one given)."""
    order = np.lexsort((np.arange(len(users)), timestamps, users))
    users, timestamps = users[order], timestamps[order]
    last = np.ones(len(users), bool)
    last[:-1] = users[1:] != users[:-1]
    return (users[last], timestamps[last],
            None if movies is None else movies[order][last])


def save_rated_movies(rated: Dict[str, np.ndarray], directory: str) -> str:
    return save_npz(os.path.join(directory, contract.RATED_FILE), **rated)


def save_npz(path: str, **arrays: np.ndarray) -> str:
    """``np.savez`` onto any file system TensorFlow knows (the export may be on gs://)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path
