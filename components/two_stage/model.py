"""The two-stage served model: retrieval of N candidates, then re-ranking by the ranking
model, in one SavedModel.

Signatures (``B`` users)::

  serving_default      user_id int64 [B], k int32 scalar. Leaves out each user's rated
                       movies (the retrieval model's ``rated.npz``, held in the graph).
  recommend_excluding  the same plus exclude_movie_ids int64 [B, E] (0-padded): leaves
                       out exactly these movies instead (e.g. only a user's training
                       movies, as benchmarks/two_stage.py does).
  both return          ranking_scores float32 [B, k] (the ranking model's predicted
                       rating: the order), retrieval_scores float32 [B, k] (the
                       retrieval model's score of the same movies), movie_ids int64
                       [B, k], titles string [B, k], best first. k is clipped to
                       [1, min(max_k, N)]; rows past the candidates left have -inf scores.

Stage 1 is the retrieval model's own served top-k (``RetrievalServer.retrieve``: exact
scoring with stock TF ops, or its ScaNN index) at k = N, leaving out the excluded movies:
the candidates are what the retrieval model's ``recommend_excluding`` returns for
k = N. The retrieval query tower is fed from its own input signature: ``user_id``, and,
if it has one, ``timestamp`` = the user's latest rated timestamp (the latest of anyone for
an unknown user), looked up in the graph as ``recommend`` does outside it
(``RatedMovies.last_timestamp``). Stage 2 calls the ranking model's ``serving_default``
on every (user, candidate) pair (its inputs from its own signature too) and keeps the k
best by predicted rating, ties in retrieval order.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from components import contract  # (first: components/__init__ selects Keras 2)

import tensorflow as tf  # noqa: E402
from components.pusher import serving

NEG_INF = float("-inf")


class TwoStageServer(tf.Module):
    """Args:
      retrieval: the retrieval stage, a ``serving.RetrievalServer`` with ``max_k`` = N
        (built over the pushed retrieval model's query tower and catalogue).
      ranking: the pushed ranking model, loaded with ``tf.saved_model.load``.
      rated: the users' rated movies and latest timestamps (``serving.RatedMovies``).
      max_k: the largest k served (at most N).
    """

    def __init__(self, retrieval: serving.RetrievalServer, ranking,
                 rated: serving.RatedMovies, num_candidates: int, max_k: int):
        super().__init__()
        self.retrieval = retrieval
        self.ranking = ranking
        self._rank_fn = ranking.signatures[contract.SERVING_SIGNATURE]
        self._num_candidates = int(num_candidates)
        self._max_k = int(min(max_k, num_candidates))
        self._query_names = sorted(serving.query_input_spec(retrieval.query_model))
        self._rank_names = sorted(serving.query_input_spec(ranking))
        users = np.asarray(rated.user_ids, np.int64)
        self.user_rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(users), tf.range(len(users), dtype=tf.int64)), -1)
        self.rated_movies = tf.Variable(np.asarray(rated.movie_ids, np.int64),
                                        trainable=False, name="rated_movies")
        self.rated_splits = tf.Variable(np.asarray(rated.row_splits, np.int64),
                                        trainable=False, name="rated_splits")
        last = np.asarray(rated.last_timestamps, np.int64)
        self.last_timestamps = tf.Variable(last, trainable=False, name="last_timestamps")
        self._latest = int(last.max()) if len(last) else 0
        user_spec = tf.TensorSpec([None], tf.int64, contract.USER_ID)
        k_spec = tf.TensorSpec([], tf.int32, contract.K_INPUT)
        exclude_spec = tf.TensorSpec([None, None], tf.int64, contract.EXCLUDE_INPUT)

        # Without AutoGraph, as the served models' signatures (components/pusher/serving.py).
        @tf.function(autograph=False, input_signature=[user_spec, k_spec])
        def recommend(user_id, k):
            return self._recommend(user_id, k, self._rated_of(user_id))

        @tf.function(autograph=False, input_signature=[user_spec, k_spec, exclude_spec])
        def recommend_excluding(user_id, k, exclude_movie_ids):
            return self._recommend(user_id, k, exclude_movie_ids)

        self.recommend = recommend
        self.recommend_excluding = recommend_excluding

    def _rated_of(self, user_id):
        """The users' rated movies, int64 [B, E] 0-padded (none for an unknown user)."""
        rows = self.user_rows.lookup(user_id)
        rated = tf.RaggedTensor.from_row_splits(self.rated_movies, self.rated_splits,
                                                validate=False)
        found = tf.gather(rated, tf.maximum(rows, 0))
        return tf.where((rows >= 0)[:, None], found.to_tensor(contract.PAD_MOVIE_ID),
                        tf.zeros_like(found.to_tensor(contract.PAD_MOVIE_ID)))

    def _timestamps(self, user_id):
        rows = self.user_rows.lookup(user_id)
        known = tf.gather(self.last_timestamps, tf.maximum(rows, 0))
        return tf.where(rows >= 0, known, tf.constant(self._latest, tf.int64))

    def _features(self, names, user_id) -> Dict[str, tf.Tensor]:
        """The query inputs ``names`` of one stage for users [B'] (``movie_id`` apart)."""
        features = {}
        for name in names:
            if name == contract.USER_ID:
                features[name] = user_id
            elif name == contract.TIMESTAMP:
                features[name] = self._timestamps(user_id)
            elif name != contract.MOVIE_ID:
                raise ValueError(f"the two-stage model cannot feed the input {name!r}")
        return features

    def _recommend(self, user_id, k, exclude):
        candidates = self.retrieval.retrieve(
            self._features(self._query_names, user_id),
            tf.constant(self._num_candidates, tf.int32), exclude)
        movie_ids = candidates[contract.MOVIE_IDS_OUTPUT]               # [B, N']
        retrieval_scores = candidates[contract.SCORES]
        shape = tf.shape(movie_ids)
        pairs_user = tf.reshape(tf.broadcast_to(user_id[:, None], shape), [-1])
        features = self._features(self._rank_names, pairs_user)
        features[contract.MOVIE_ID] = tf.reshape(movie_ids, [-1])
        rating = tf.reshape(self._rank_fn(**features)[contract.RATING_OUTPUT], shape)
        rating = tf.where(tf.math.is_finite(retrieval_scores), tf.cast(rating, tf.float32),
                          NEG_INF)
        k = tf.minimum(tf.clip_by_value(k, 1, self._max_k), shape[1])
        ranking_scores, best = tf.math.top_k(rating, k)
        return {contract.RANKING_SCORES_OUTPUT: ranking_scores,
                contract.RETRIEVAL_SCORES_OUTPUT: tf.gather(retrieval_scores, best,
                                                            batch_dims=1),
                contract.MOVIE_IDS_OUTPUT: tf.gather(movie_ids, best, batch_dims=1),
                contract.TITLES_OUTPUT: tf.gather(candidates[contract.TITLES_OUTPUT], best,
                                                  batch_dims=1)}

    def signatures(self):
        return {contract.RECOMMEND_SIGNATURE: self.recommend.get_concrete_function(),
                contract.EXCLUDING_SIGNATURE: self.recommend_excluding.get_concrete_function()}


def from_pushed(retrieval_dir: str, ranking_dir: str, num_candidates: int, max_k: int,
                searcher=None, params=None,
                loaded: Optional[Dict[str, object]] = None) -> TwoStageServer:
    """A :class:`TwoStageServer` from two pushed versions: the retrieval model's exact
    variant (its query tower, catalogue embeddings, titles and ``rated.npz``) and the
    ranking model. ``searcher`` (an ``ann.build_searcher`` over the same embeddings, k >=
    N) with its ``params`` makes the ScaNN variant. ``loaded``: SavedModels already
    loaded, by directory."""
    loaded = {} if loaded is None else loaded
    pushed = _load(retrieval_dir, loaded)
    titles = [t.decode("utf-8") for t in pushed.titles.numpy()]
    stage = serving.RetrievalServer(pushed.query_model, pushed.movie_ids.numpy(),
                                    pushed_embeddings(retrieval_dir, loaded), titles,
                                    max_k=num_candidates, searcher=searcher, params=params)
    rated = serving.RatedMovies.of_model(retrieval_dir)
    if rated is None:
        raise ValueError(f"{retrieval_dir} has no {contract.RATED_FILE}: the two-stage "
                         f"model needs the users' rated movies")
    return TwoStageServer(stage, _load(ranking_dir, loaded), rated, num_candidates, max_k)


def _load(path: str, loaded: Dict[str, object]):
    if path not in loaded:
        loaded[path] = tf.saved_model.load(path)
    return loaded[path]


def pushed_embeddings(retrieval_dir: str, loaded: Dict[str, object]) -> np.ndarray:
    """The catalogue embeddings [M, D] of a pushed retrieval model's exact variant."""
    return _load(retrieval_dir, loaded).embeddings.numpy()


def save(server: TwoStageServer, export_dir: str) -> None:
    options = (tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
               if server.retrieval.scann is not None else None)
    tf.saved_model.save(server, export_dir, signatures=server.signatures(), options=options)
