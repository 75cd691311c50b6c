"""The Trainer's own evaluation: exact top-K over the whole catalogue, and RMSE.

:func:`evaluate_retrieval` gives top-K accuracy over all movies (the tutorials'
protocol) and, with the users' training histories (:func:`user_history`), excluding the
movies each user rated (as serving does); :func:`evaluate_ranking` gives RMSE in stars.
The Evaluator's top-K is the same figure on the same split (components/trainer/export.py).
"""

from __future__ import annotations

import collections
from typing import Dict, Mapping, Optional, Sequence

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components import contract
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


def catalogue_embeddings(candidate_tower: keras.Model, vocabulary: Vocabulary,
                         batch_size: int = 8192) -> np.ndarray:
    """float32 ``[M, D]``: row ``i`` embeds ``vocabulary.movie_ids[i]``."""
    ids = vocabulary.movie_ids
    return np.concatenate([
        candidate_tower(tf.constant(ids[start:start + batch_size])).numpy()
        for start in range(0, len(ids), batch_size)])


def top_k_accuracy(query_embeddings: np.ndarray, catalogue: np.ndarray,
                   label_rows: np.ndarray, ks: Sequence[int] = (1, 5, 10, 50, 100),
                   exclude_rows: Optional[Sequence[Optional[np.ndarray]]] = None,
                   batch_size: int = 1024) -> Dict[str, float]:
    """Exact top-K accuracy of dot-product retrieval over the whole catalogue.

    Args:
      query_embeddings: ``[Q, D]``.
      catalogue: ``[M, D]`` candidate embeddings.
      label_rows: ``[Q]`` the true movie's row in ``catalogue`` (-1: not in it, a miss).
      ks: the ``k`` values.
      exclude_rows: per query, rows whose scores become -inf (the movies the user rated
        in training); the label's own row is never excluded.
      batch_size: queries scored at once.

    Returns:
      ``{"top_{k}": fraction of queries whose label ranks within the first k}`` and
      ``"queries"``. A candidate scoring the same as the label counts as above it.
    """
    label_rows = np.asarray(label_rows, np.int64)
    num_queries = len(label_rows)
    ranks = np.empty(num_queries, np.int64)
    for start in range(0, num_queries, batch_size):
        stop = min(start + batch_size, num_queries)
        scores = np.asarray(query_embeddings[start:stop], np.float32) @ catalogue.T
        rows = label_rows[start:stop]
        valid = rows >= 0
        label_scores = scores[np.arange(stop - start), np.maximum(rows, 0)]
        if exclude_rows is not None:
            for i, excluded in enumerate(exclude_rows[start:stop]):
                if excluded is not None and len(excluded):
                    scores[i, excluded] = -np.inf
        scores[np.arange(stop - start), np.maximum(rows, 0)] = -np.inf  # the label itself
        rank = (scores >= label_scores[:, None]).sum(axis=1)
        ranks[start:stop] = np.where(valid, rank, np.iinfo(np.int64).max)
    result = {f"top_{k}": float(np.mean(ranks < k)) if num_queries else 0.0 for k in ks}
    result["queries"] = num_queries
    return result


def movie_rows(vocabulary: Vocabulary, movie_ids: np.ndarray) -> np.ndarray:
    """Vocabulary rows of ``movie_ids`` (-1 for unknown ids and padding)."""
    order = np.argsort(vocabulary.movie_ids)
    sorted_ids = vocabulary.movie_ids[order]
    ids = np.asarray(movie_ids, np.int64)
    position = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[position] == ids, order[position], -1)


def user_history(dataset: tf.data.Dataset, vocabulary: Vocabulary,
                 movie_keys: Sequence[str] = (contract.MOVIE_ID,),
                 user_key: str = contract.USER_ID) -> Dict[int, np.ndarray]:
    """user id -> sorted vocabulary rows of the movies under ``movie_keys`` in
    ``dataset`` (batches). For rating examples: ``("movie_id",)``; for sequence examples:
    ``("label_movie_id", "context_movie_id")`` (padding ignored)."""
    history: Dict[int, set] = collections.defaultdict(set)
    for batch in dataset:
        users = batch[user_key].numpy().reshape(-1)
        for key in movie_keys:
            ids = batch[key].numpy().reshape(len(users), -1)
            rows = movie_rows(vocabulary, ids)
            for user, user_rows in zip(users, rows):
                history[int(user)].update(int(r) for r in user_rows if r >= 0)
    return {user: np.asarray(sorted(rows), np.int64) for user, rows in history.items()}


def _collect_queries(query_fn, dataset, label_key, max_batches=None):
    queries, labels, users = [], [], []
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        queries.append(np.asarray(query_fn(batch)))
        labels.append(batch[label_key].numpy().reshape(-1))
        users.append(batch[contract.USER_ID].numpy().reshape(-1))
    if not queries:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(queries), np.concatenate(labels), np.concatenate(users)


def evaluate_retrieval(model: keras.Model, dataset: tf.data.Dataset,
                       vocabulary: Vocabulary, ks: Sequence[int] = (1, 5, 10, 50, 100),
                       history: Optional[Mapping[int, np.ndarray]] = None,
                       max_batches: Optional[int] = None) -> Dict[str, float]:
    """Top-K accuracy of a retrieval, multitask or sequential model over all movies.

    ``model`` needs ``query_tower``, ``candidate_tower`` and ``label_key``. With
    ``history`` (from :func:`user_history` over the *training* data), also reports
    ``top_{k}_excluding_rated``: the movies each user rated in training are masked out
    (never the label itself), as a recommender would do.
    """
    catalogue = catalogue_embeddings(model.candidate_tower, vocabulary)
    queries, labels, users = _collect_queries(
        lambda batch: model.query_tower(batch).numpy(), dataset, model.label_key, max_batches)
    return _retrieval_report(queries, catalogue, movie_rows(vocabulary, labels), users, ks,
                             history)


def evaluate_popularity(dataset: tf.data.Dataset, vocabulary: Vocabulary,
                        label_key: str = contract.MOVIE_ID, ks: Sequence[int] = (1, 5, 10, 50, 100),
                        history: Optional[Mapping[int, np.ndarray]] = None,
                        counts: Optional[np.ndarray] = None,
                        max_batches: Optional[int] = None) -> Dict[str, float]:
    """The popularity baseline, scored like :func:`evaluate_retrieval`: every user gets
    the most-rated movies (``counts`` ``[M]``, default the vocabulary's counts)."""
    counts = vocabulary.movie_counts if counts is None else np.asarray(counts)
    catalogue = np.log1p(counts.astype(np.float64)).astype(np.float32)[:, None]
    queries, labels, users = _collect_queries(
        lambda batch: np.ones((len(batch[label_key]), 1), np.float32), dataset, label_key,
        max_batches)
    return _retrieval_report(queries, catalogue, movie_rows(vocabulary, labels), users, ks,
                             history)


def _retrieval_report(queries, catalogue, label_rows, users, ks, history):
    report = top_k_accuracy(queries, catalogue, label_rows, ks)
    if history is not None:
        excluded = [history.get(int(user)) for user in users]
        masked = top_k_accuracy(queries, catalogue, label_rows, ks, exclude_rows=excluded)
        report.update({f"{name}_excluding_rated": value for name, value in masked.items()
                       if name != "queries"})
    return report


def evaluate_ranking(model: keras.Model, dataset: tf.data.Dataset,
                     max_batches: Optional[int] = None) -> Dict[str, float]:
    """RMSE and MAE in stars of the served (clipped) ratings, and the RMSE of always
    predicting the mean label (a sanity baseline)."""
    errors, labels = [], []
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        label = batch[contract.USER_RATING].numpy().reshape(-1)
        errors.append(model(batch).numpy().reshape(-1) - label)
        labels.append(label)
    errors, labels = np.concatenate(errors), np.concatenate(labels)
    return {"rmse": float(np.sqrt(np.mean(errors ** 2))),
            "mae": float(np.mean(np.abs(errors))),
            "mean_rating_rmse": float(np.std(labels)),
            "examples": int(len(labels))}
