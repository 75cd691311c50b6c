"""The served SavedModels, and how a version is published.

Layout (TensorFlow Serving's: a base path per model, one integer directory per version)::

  <serving_root>/<model>/<version>/         brute force: the query tower + exact top-k
                                            (stock TF ops only: loads in stock TF Serving
                                            and in any process without ``import scann``)
  <serving_root>/<model>_scann/<version>/   the query tower + a ScaNN index (needs the
                                            ScaNN ops: ``import scann`` / the ScaNN
                                            TF Serving build)
  <serving_root>/ranking/<version>/         the ranking model as the Trainer exported it

Signatures of the retrieval-like variants (``B`` queries)::

  serving_default      the query tower's raw inputs -- ``user_id`` int64 [B] (retrieval)
                       or ``context_movie_id`` int64 [B, L] (sequential, oldest first,
                       0-padded) -- and ``k`` int32 scalar: nothing a client cannot know
  recommend_excluding  the same plus ``exclude_movie_ids`` int64 [B, E] (0-padded)
  recommend_at_time    only for a model whose query tower reads a time: the same as
                       recommend_excluding plus ``timestamp`` int64 [B], the query time
  all return           scores float32 [B, k], movie_ids int64 [B, k], titles string [B, k]
                       best first; k is clipped to [1, min(max_k, movies)]. When fewer
                       than k movies are left after exclusion the tail has score -inf.

A model that reads a time (``HParams.use_timestamps``; no preset does) is asked, by
``serving_default`` and ``recommend_excluding``, at each user's latest rating in the
data it was trained on (``rated.npz``; an unknown user: the latest of anyone), the one
query time the server knows; ``recommend_at_time`` takes another.

``assets.extra/`` (ignored by TF Serving) carries ``serving.json`` (what this is: model,
variant, version, inputs, index parameters, source model), ``movies.tsv``, ``users.tsv``,
``rated.npz`` and ``metrics.json`` from the Trainer.

Files go through TFX's ``fileio`` (the serving root may be on ``gs://``); how a
version is published: components/pusher/publishing.py.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import components  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np
import tensorflow as tf
from tfx.dsl.io import fileio

from components import contract, vocabulary_files
from components.pusher import ann
from components.trainer import histories
from components.pusher.publishing import load_npz, read_text

BRUTE_FORCE, SCANN = contract.BRUTE_FORCE, contract.SCANN
VARIANTS = (BRUTE_FORCE, SCANN)
SCANN_SUFFIX = "_scann"
# The Trainer export's files a served model carries in its assets.extra.
COPIED_ASSETS = (contract.MOVIES_FILE, contract.USERS_FILE, contract.SEQUENCE_SHAPE_FILE,
                 contract.RATED_FILE, contract.METRICS_FILE)


def variant_base(serving_root: str, model_name: str, variant: str) -> str:
    """The TF Serving base path of one variant of a model."""
    return os.path.join(serving_root, model_name + (SCANN_SUFFIX if variant == SCANN else ""))


def query_input_spec(query_model) -> Dict[str, tf.TensorSpec]:
    """The raw inputs of the Trainer export's ``serving_default`` signature."""
    _, specs = query_model.signatures[contract.SERVING_SIGNATURE].structured_input_signature
    return {name: tf.TensorSpec(spec.shape, spec.dtype, name) for name, spec in specs.items()}


def served_input_spec(query_model) -> Dict[str, tf.TensorSpec]:
    """The query inputs of the served ``serving_default``: the Trainer export's, without
    a query time (the server fills it in: see the module docstring)."""
    return {name: spec for name, spec in query_input_spec(query_model).items()
            if name != contract.TIMESTAMP}


class RetrievalServer(tf.Module):
    """Query tower + top-k over the catalogue (exact, or ScaNN with ``searcher``).

    Args:
      query_model: the Trainer's export, loaded with ``tf.saved_model.load``.
      movie_ids: int64 [M]; embeddings: float32 [M, D] (``candidates.npz``), same rows.
      titles: M strings, same rows.
      max_k: the largest k served.
      searcher: ``ann.build_searcher(embeddings, params)``'s result, or None for the
        exact (stock-ops) variant.
      params: the searcher's ``ann.ScannParams``.
    """

    def __init__(self, query_model, movie_ids: np.ndarray, embeddings: np.ndarray,
                 titles: Sequence[str], max_k: int = 100, searcher=None,
                 params: Optional[ann.ScannParams] = None,
                 rated: Optional["RatedMovies"] = None):
        super().__init__()
        self.query_model = query_model
        self._query_fn = query_model.signatures[contract.SERVING_SIGNATURE]
        self.movie_ids = tf.Variable(np.asarray(movie_ids, np.int64), trainable=False,
                                     name="movie_ids")
        self.titles = tf.Variable(tf.constant([str(t).encode("utf-8") for t in titles],
                                              tf.string), trainable=False, name="titles")
        self.rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(np.asarray(movie_ids, np.int64)),
            tf.range(len(movie_ids), dtype=tf.int64)), -1)
        self._max_k = int(min(max_k, len(movie_ids)))
        self._params = params or ann.ScannParams()
        if searcher is None:
            self.embeddings = tf.Variable(np.asarray(embeddings, np.float32),
                                          trainable=False, name="embeddings")
            self.scann = None
        else:
            self.scann = searcher.serialize_to_module()
        full_spec = query_input_spec(query_model)
        spec = served_input_spec(query_model)
        k_spec = tf.TensorSpec([], tf.int32, contract.K_INPUT)
        exclude_spec = tf.TensorSpec([None, None], tf.int64, contract.EXCLUDE_INPUT)
        self.query_times = None
        if contract.TIMESTAMP in full_spec:
            users = rated.user_ids if rated is not None else np.zeros(0, np.int64)
            times = rated.last_timestamps if rated is not None else np.zeros(0, np.int64)
            self.query_times = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(np.asarray(users, np.int64)), tf.constant(np.asarray(times, np.int64))),
                int(times.max()) if len(times) else 0)

        # Traced without AutoGraph: no data-dependent Python control flow here, and
        # converting the code costs seconds per signature (components/trainer/export.py).
        @tf.function(autograph=False, input_signature=[{**spec, contract.K_INPUT: k_spec}])
        def recommend(inputs):
            inputs = dict(inputs)
            k = inputs.pop(contract.K_INPUT)
            return self._recommend(self._with_query_time(inputs), k, None)

        @tf.function(autograph=False, input_signature=[
            {**spec, contract.K_INPUT: k_spec, contract.EXCLUDE_INPUT: exclude_spec}])
        def recommend_excluding(inputs):
            inputs = dict(inputs)
            k, exclude = inputs.pop(contract.K_INPUT), inputs.pop(contract.EXCLUDE_INPUT)
            return self._recommend(self._with_query_time(inputs), k, exclude)

        self.recommend = recommend
        self.recommend_excluding = recommend_excluding
        self.recommend_at_time = None
        if self.query_times is not None:
            @tf.function(autograph=False, input_signature=[{**full_spec, contract.K_INPUT: k_spec,
                                           contract.EXCLUDE_INPUT: exclude_spec}])
            def recommend_at_time(inputs):
                inputs = dict(inputs)
                k, exclude = inputs.pop(contract.K_INPUT), inputs.pop(contract.EXCLUDE_INPUT)
                return self._recommend(inputs, k, exclude)

            self.recommend_at_time = recommend_at_time

    def _with_query_time(self, inputs):
        """The query tower's inputs: a model that reads a time gets each user's latest
        known one (see the module docstring)."""
        if self.query_times is None:
            return inputs
        return {**inputs, contract.TIMESTAMP: self.query_times.lookup(inputs[contract.USER_ID])}

    def retrieve(self, inputs, k, exclude=None):
        """What both signatures return, for query tensors ``inputs`` (the query tower's
        raw inputs) and ``exclude`` [B, E] or None: for servers that compose this one
        (components/two_stage/model.py)."""
        return self._recommend(inputs, k, exclude)

    def _recommend(self, inputs, k, exclude):
        query = self._query_fn(**inputs)[contract.QUERY_EMBEDDING]
        k = tf.clip_by_value(k, 1, self._max_k)
        if self.scann is None:
            values, rows = self._exact(query, k, exclude)
        else:
            values, rows = self._approximate(query, k, exclude)
        return {contract.SCORES: values,
                contract.MOVIE_IDS_OUTPUT: tf.gather(self.movie_ids, rows),
                contract.TITLES_OUTPUT: tf.gather(self.titles, rows)}

    def _exact(self, query, k, exclude):
        scores = tf.matmul(query, self.embeddings, transpose_b=True)        # [B, M]
        if exclude is not None:
            rows = self.rows.lookup(exclude)                                # [B, E]
            batch = tf.broadcast_to(tf.range(tf.shape(rows, tf.int64)[0])[:, None],
                                    tf.shape(rows, tf.int64))
            known = rows >= 0
            index = tf.stack([tf.boolean_mask(batch, known),
                              tf.boolean_mask(rows, known)], axis=1)
            scores = tf.tensor_scatter_nd_update(
                scores, index, tf.fill([tf.shape(index)[0]], float("-inf")))
        return tf.math.top_k(scores, k)

    def _approximate(self, query, k, exclude):
        import scann  # pylint: disable=import-outside-toplevel

        searcher = scann.scann_ops.searcher_from_module(self.scann)
        extra = tf.shape(exclude)[1] if exclude is not None else 0
        fetch = tf.minimum(k + extra, tf.shape(self.movie_ids)[0])
        kwargs = {}
        if self._params.num_leaves:
            kwargs["leaves_to_search"] = self._params.num_leaves_to_search
        if self._params.reorder:
            kwargs["pre_reorder_num_neighbors"] = tf.maximum(fetch, self._params.reorder)
        result = searcher.search_batched(query, final_num_neighbors=fetch, **kwargs)
        rows = tf.cast(result.indices, tf.int64)
        values = result.distances
        drop = rows < 0
        if exclude is not None:
            ids = tf.gather(self.movie_ids, tf.maximum(rows, 0))
            drop |= tf.reduce_any(
                tf.equal(ids[:, :, None], exclude[:, None, :]) & (exclude[:, None, :] != 0),
                axis=-1)
        values = tf.where(drop, float("-inf"), values)
        values, best = tf.math.top_k(values, tf.minimum(k, tf.shape(values)[1]))
        return values, tf.maximum(tf.gather(rows, best, batch_dims=1), 0)

    def signatures(self):
        signatures = {
            contract.RECOMMEND_SIGNATURE: self.recommend.get_concrete_function(),
            contract.EXCLUDING_SIGNATURE: self.recommend_excluding.get_concrete_function()}
        if self.recommend_at_time is not None:
            signatures[contract.QUERY_TIME_SIGNATURE] = \
                self.recommend_at_time.get_concrete_function()
        return signatures


def save_server(server: RetrievalServer, export_dir: str) -> None:
    options = (tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
               if server.scann is not None else None)
    tf.saved_model.save(server, export_dir, signatures=server.signatures(), options=options)


def copy_assets(source_model_dir: str, export_dir: str, info: Dict) -> None:
    """The Trainer's assets.extra files serving needs, plus ``serving.json``."""
    source = os.path.join(source_model_dir, contract.EXTRA_ASSETS)
    target = os.path.join(export_dir, contract.EXTRA_ASSETS)
    fileio.makedirs(target)
    for name in COPIED_ASSETS:
        if fileio.exists(os.path.join(source, name)):
            fileio.copy(os.path.join(source, name), os.path.join(target, name),
                        overwrite=True)
    with fileio.open(os.path.join(target, contract.SERVING_INFO_FILE), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)


def read_serving_info(model_dir: str) -> Dict:
    with fileio.open(os.path.join(model_dir, contract.EXTRA_ASSETS, contract.SERVING_INFO_FILE)) as handle:
        return json.load(handle)


def context_length(model_dir: str) -> int:
    """How many movies of a history the model's examples held (the example generator's
    padded context length, carried in assets.extra)."""
    path = os.path.join(model_dir, contract.EXTRA_ASSETS, contract.SEQUENCE_SHAPE_FILE)
    return int(json.loads(read_text(path))[contract.MAX_CONTEXT_LENGTH])


def read_movies(movies_tsv: str) -> List[Tuple[int, int, str]]:
    """``movies.tsv`` (the Trainer's vocabulary, most rated first): (movie id, rating
    count, title) rows."""
    rows = []
    for line in read_text(movies_tsv).split("\n"):
        fields = vocabulary_files.decode_fields(line.rstrip("\r"))
        if len(fields) >= 3:
            rows.append((int(fields[0]), int(fields[1]), fields[2]))
    return rows


def load_titles(movies_tsv: str) -> Dict[int, str]:
    return {movie_id: title for movie_id, _, title in read_movies(movies_tsv)}


class RatedMovies:
    """``rated.npz`` of a Trainer export (components/trainer/export.py): each user's
    movies and latest timestamp, looked up by binary search over the sorted user ids
    (no per-user Python objects)."""

    def __init__(self, path: str):
        data = load_npz(path)
        self.user_ids = data["user_ids"]
        self.row_splits = data["row_splits"]
        self.movie_ids = data["movie_ids"]
        self.last_timestamps = (data["last_timestamps"] if "last_timestamps" in data
                                else np.zeros(len(self.user_ids), np.int64))
        self._history = histories.UserHistory(self.user_ids, self.row_splits, self.movie_ids)
        self._recent = None  # models of sequences: each user's latest movies, in order
        if "recent_row_splits" in data:
            self._recent = histories.UserHistory(self.user_ids, data["recent_row_splits"],
                                                 data["recent_movie_ids"])

    @classmethod
    def of_model(cls, model_dir: str) -> Optional["RatedMovies"]:
        path = os.path.join(model_dir, contract.EXTRA_ASSETS, contract.RATED_FILE)
        return cls(path) if fileio.exists(path) else None

    def __contains__(self, user) -> bool:
        return self._history.position(int(user)) is not None

    def movies(self, user) -> np.ndarray:
        return self._history.get(int(user), np.zeros(0, np.int64))

    def recent(self, user) -> np.ndarray:
        """The user's most recent movies, oldest first (the context and label of their
        latest sequence example); without them in the file (models of ratings), the
        user's movies in id order."""
        if self._recent is None:
            return self.movies(user)
        return self._recent.get(int(user), np.zeros(0, np.int64))

    def last_timestamp(self, user) -> int:
        """The user's latest timestamp, or the latest of anyone for an unknown user."""
        i = self._history.position(int(user))
        if i is not None:
            return int(self.last_timestamps[i])
        return int(self.last_timestamps.max()) if len(self.last_timestamps) else 0


def query_inputs(names: Iterable[str], users: Optional[Sequence[int]] = None,
                 histories: Optional[Sequence[Sequence[int]]] = None,
                 rated: Optional[RatedMovies] = None,
                 timestamps: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
    """The raw query inputs ``names`` (a served model's ``serving.json["inputs"]`` or
    the Trainer export's) for users or watch histories. ``timestamp`` defaults to each
    user's latest timestamp in ``rated`` (the query time of the data), else now."""
    inputs: Dict[str, np.ndarray] = {}
    count = len(users) if users is not None else len(histories or [])
    for name in names:
        if name == contract.USER_ID:
            inputs[name] = np.asarray(users, np.int64)
        elif name == contract.CONTEXT_MOVIE_ID:
            width = max([len(h) for h in histories] + [1])
            padded = np.full((len(histories), width), contract.PAD_MOVIE_ID, np.int64)
            for row, history in enumerate(histories):
                padded[row, :len(history)] = history
            inputs[name] = padded
        elif name == contract.TIMESTAMP:
            if timestamps is None:
                timestamps = ([rated.last_timestamp(u) for u in users]
                              if rated is not None and users is not None
                              else [int(time.time())] * count)
            inputs[name] = np.asarray(timestamps, np.int64)
        else:
            raise ValueError(f"no value for the query input {name!r}")
    return inputs


def calibration_queries(query_model, source_model_dir: str, size: int = 256,
                        seed: int = 0) -> Optional[np.ndarray]:
    """Query embeddings [Q, D] of sample users (retrieval: user ids at their latest
    timestamp; sequential: their most recent movies, up to the padded context length,
    as histories) from ``rated.npz``; None without it."""
    rated = RatedMovies.of_model(source_model_dir)
    if rated is None or len(rated.user_ids) == 0:
        return None
    users = rated.user_ids[ann.sample_rows(len(rated.user_ids), size, seed)]
    names = list(query_input_spec(query_model))
    if contract.CONTEXT_MOVIE_ID in names:
        length = context_length(source_model_dir)
        inputs = query_inputs(names, histories=[rated.recent(u)[-length:] for u in users],
                              rated=rated,
                              users=None if contract.USER_ID not in names else users)
    else:
        inputs = query_inputs(names, users=users, rated=rated)
    output = query_model.signatures[contract.SERVING_SIGNATURE](
        **{name: tf.constant(value) for name, value in inputs.items()})[contract.QUERY_EMBEDDING]
    return output.numpy()
