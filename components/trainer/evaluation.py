"""The Trainer's own evaluation: exact top-K over the whole catalogue, and RMSE.

:func:`evaluate_retrieval` gives top-K accuracy and NDCG@k (one relevant movie per
query) over all movies (the tutorials' protocol) and, with the users' training histories (:func:`user_history`), excluding the
movies each user rated (as serving does); :func:`evaluate_ranking` gives RMSE in stars.
The Evaluator's top-K is the same figure on the same split (components/trainer/export.py).
Memory does not grow with the eval split or with ``[examples x catalogue]``: queries are
scored a batch at a time against candidate chunks, keeping one rank per query
(:func:`label_ranks`); :func:`sample_users` narrows a very large split to a seeded
sample of users (``HParams.eval_sample_users``).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components import contract
from components.trainer import histories
from components.trainer.vocabulary import Vocabulary

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1
# Candidates scored at once against a batch of queries ([batch, CANDIDATE_CHUNK] floats).
CANDIDATE_CHUNK = 4096


def catalogue_embeddings(candidate_tower: keras.Model, vocabulary: Vocabulary,
                         batch_size: int = 8192) -> np.ndarray:
    """float32 ``[M, D]``: row ``i`` embeds ``vocabulary.movie_ids[i]``."""
    ids = vocabulary.movie_ids
    return np.concatenate([
        candidate_tower(tf.constant(ids[start:start + batch_size])).numpy()
        for start in range(0, len(ids), batch_size)])


def label_ranks(query_embeddings: np.ndarray, catalogue: np.ndarray,
                label_rows: np.ndarray,
                excluded: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                chunk_size: int = CANDIDATE_CHUNK) -> np.ndarray:
    """int64 ``[b]``: how many catalogue movies score at least as high as each label.

    Scores are computed ``chunk_size`` candidates at a time (``[b, chunk_size]`` in
    memory, never ``[b, M]``), and only a count per query is kept.

    Args:
      query_embeddings: ``[b, D]``.
      catalogue: ``[M, D]`` candidate embeddings.
      label_rows: ``[b]`` the true movie's row in ``catalogue`` (-1: not in it, a miss:
        rank ``int64 max``).
      excluded: ``(positions [E], rows [E])``: row ``rows[e]`` is left out for query
        ``positions[e]`` (the movies the user rated in training); the label's own row is
        never left out.
      chunk_size: candidates scored at once.
    """
    label_rows = np.asarray(label_rows, np.int64)
    queries = np.asarray(query_embeddings[:len(label_rows)], np.float32)
    label_scores = np.einsum("bd,bd->b", queries, catalogue[np.maximum(label_rows, 0)])
    ranks = np.zeros(len(label_rows), np.int64)
    for start in range(0, catalogue.shape[0], chunk_size):
        stop = min(start + chunk_size, catalogue.shape[0])
        ranks += count_above(queries @ catalogue[start:stop].T, label_scores, label_rows,
                             excluded, start)
    return np.where(label_rows >= 0, ranks, np.iinfo(np.int64).max)


def count_above(scores: np.ndarray, label_scores: np.ndarray, label_rows: np.ndarray,
                excluded: Optional[Tuple[np.ndarray, np.ndarray]] = None,
                start: int = 0) -> np.ndarray:
    """int64 ``[b]``: per query, the candidates of ``scores`` ``[b, C]`` (catalogue rows
    ``start .. start + C``) scoring at least ``label_scores`` ``[b]``, leaving out the
    label's own row and the ``excluded`` ``(positions [E], rows [E])``. Modifies
    ``scores``. With ``start=0`` and the whole catalogue's scores (a baseline's score
    matrix), the label ranks of :func:`label_ranks` (before unknown labels are misses)."""
    stop = start + scores.shape[1]
    if excluded is not None:
        positions, rows = excluded
        inside = (rows >= start) & (rows < stop)
        scores[positions[inside], rows[inside] - start] = -np.inf
    inside = (label_rows >= start) & (label_rows < stop)
    scores[np.arange(len(label_rows))[inside], label_rows[inside] - start] = -np.inf
    return (scores >= np.asarray(label_scores)[:, None]).sum(axis=1)


def top_k_accuracy(query_embeddings: np.ndarray, catalogue: np.ndarray,
                   label_rows: np.ndarray, ks: Sequence[int] = (1, 5, 10, 50, 100),
                   exclude_rows: Optional[Sequence[Optional[np.ndarray]]] = None,
                   ) -> Dict[str, float]:
    """Exact top-K accuracy of dot-product retrieval over the whole catalogue.

    Args:
      query_embeddings: ``[Q, D]``.
      catalogue: ``[M, D]`` candidate embeddings.
      label_rows: ``[Q]`` the true movie's row in ``catalogue`` (-1: not in it, a miss).
      ks: the ``k`` values.
      exclude_rows: per query, rows whose scores become -inf (the movies the user rated
        in training); the label's own row is never excluded.

    Returns:
      ``{"top_{k}": fraction of queries whose label ranks within the first k}`` and
      ``"queries"``. A candidate scoring the same as the label counts as above it.
    """
    excluded = None
    if exclude_rows is not None:
        lists = [np.asarray(rows if rows is not None else (), np.int64)
                 for rows in exclude_rows]
        excluded = (np.repeat(np.arange(len(lists)), [len(rows) for rows in lists]),
                    np.concatenate(lists) if lists else np.zeros(0, np.int64))
    ranks = label_ranks(query_embeddings, catalogue, label_rows, excluded)
    return rank_metrics(ranks, ks)


class _TopKCounts:
    """Hits and NDCG within each ``k``, accumulated batch by batch from label ranks.

    One relevant movie per query (the label): ``top_{k}`` is the share of queries whose
    label ranks within the first ``k`` (HR@k; seen excluded and averaged over held-out
    ratings, Recall@k), ``ndcg_{k}`` the mean of ``1 / log2(2 + rank)`` over those
    queries (0 beyond ``k``; rank 0 is the first place)."""

    def __init__(self, ks: Sequence[int]):
        self.ks, self.hits, self.queries = tuple(ks), np.zeros(len(ks), np.int64), 0
        self.gains = np.zeros(len(ks), np.float64)

    def add(self, ranks: np.ndarray) -> "_TopKCounts":
        ranks = np.asarray(ranks, np.int64)
        gain = 1.0 / np.log2(2.0 + np.minimum(ranks, 1 << 40).astype(np.float64))
        self.hits += np.asarray([(ranks < k).sum() for k in self.ks], np.int64)
        self.gains += np.asarray([gain[ranks < k].sum() for k in self.ks], np.float64)
        self.queries += len(ranks)
        return self

    def result(self) -> Dict[str, float]:
        result = {f"top_{k}": float(hits / self.queries) if self.queries else 0.0
                  for k, hits in zip(self.ks, self.hits)}
        result.update({f"ndcg_{k}": float(gains / self.queries) if self.queries else 0.0
                       for k, gains in zip(self.ks, self.gains)})
        result["queries"] = self.queries
        return result


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10, 50, 100)
                 ) -> Dict[str, float]:
    """``top_{k}`` (hit rate) and ``ndcg_{k}`` of label ranks ``[Q]`` (see
    :class:`_TopKCounts`), and ``queries``."""
    return _TopKCounts(ks).add(ranks).result()


def movie_rows(vocabulary: Vocabulary, movie_ids: np.ndarray) -> np.ndarray:
    """Vocabulary rows of ``movie_ids`` (-1 for unknown ids and padding)."""
    order = np.argsort(vocabulary.movie_ids)
    sorted_ids = vocabulary.movie_ids[order]
    ids = np.asarray(movie_ids, np.int64)
    position = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[position] == ids, order[position], -1)


def user_history(dataset: tf.data.Dataset, vocabulary: Vocabulary,
                 movie_keys: Sequence[str] = (contract.MOVIE_ID,),
                 user_key: str = contract.USER_ID) -> histories.UserHistory:
    """Per user, the sorted vocabulary rows of the movies under ``movie_keys`` in
    ``dataset`` (batches), streamed (components/trainer/histories.py). For rating
    examples: ``("movie_id",)``; for sequence examples: ``("label_movie_id",
    "context_movie_id")`` (padding ignored). ``.get(user)`` -> rows ``[n]`` or None."""
    pairs = histories.PairAccumulator()
    for batch in dataset:
        users = batch[user_key].numpy().reshape(-1)
        for key in movie_keys:
            ids = batch[key].numpy().reshape(len(users), -1)
            pairs.add(np.repeat(users, ids.shape[1]), movie_rows(vocabulary, ids.reshape(-1)))
    return pairs.result()


def sample_users(dataset: tf.data.Dataset, user_ids: np.ndarray, batch_size: int,
                 user_key: str = contract.USER_ID) -> tf.data.Dataset:
    """The batches of ``dataset`` narrowed to the examples of ``user_ids``, re-batched
    to ``batch_size``."""
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(np.asarray(user_ids, np.int64)),
        tf.ones(len(user_ids), tf.int64)), 0)
    examples = dataset.unbatch().filter(lambda features: table.lookup(
        tf.cast(features[user_key], tf.int64)) > 0)
    return examples.batch(batch_size)


def evaluate_retrieval(model: keras.Model, dataset: tf.data.Dataset,
                       vocabulary: Vocabulary, ks: Sequence[int] = (1, 5, 10, 50, 100),
                       history: Optional[histories.UserHistory] = None,
                       max_batches: Optional[int] = None) -> Dict[str, float]:
    """Top-K accuracy of a retrieval, multitask or sequential model over all movies.

    ``model`` needs ``query_tower``, ``candidate_tower`` and ``label_key``. With
    ``history`` (from :func:`user_history` over the *training* data), also reports
    ``top_{k}_excluding_rated``: the movies each user rated in training are masked out
    (never the label itself), as a recommender would do. Streams: one batch of queries
    at a time, scored against the catalogue in chunks (:func:`label_ranks`).
    """
    catalogue = catalogue_embeddings(model.candidate_tower, vocabulary)
    return _streamed_report(lambda batch: model.query_tower(batch).numpy(), dataset,
                            model.label_key, catalogue, vocabulary, ks, history,
                            max_batches)


def evaluate_popularity(dataset: tf.data.Dataset, vocabulary: Vocabulary,
                        label_key: str = contract.MOVIE_ID, ks: Sequence[int] = (1, 5, 10, 50, 100),
                        history: Optional[histories.UserHistory] = None,
                        counts: Optional[np.ndarray] = None,
                        max_batches: Optional[int] = None) -> Dict[str, float]:
    """The popularity baseline, scored like :func:`evaluate_retrieval`: every user gets
    the most-rated movies (``counts`` ``[M]``, default the vocabulary's counts)."""
    counts = vocabulary.movie_counts if counts is None else np.asarray(counts)
    catalogue = np.log1p(counts.astype(np.float64)).astype(np.float32)[:, None]
    return _streamed_report(
        lambda batch: np.ones((len(batch[label_key]), 1), np.float32), dataset, label_key,
        catalogue, vocabulary, ks, history, max_batches)


def _streamed_report(query_fn, dataset, label_key, catalogue, vocabulary, ks, history,
                     max_batches):
    every, masked = _TopKCounts(ks), _TopKCounts(ks)
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        queries = np.asarray(query_fn(batch))
        rows = movie_rows(vocabulary, batch[label_key].numpy().reshape(-1))
        every.add(label_ranks(queries, catalogue, rows))
        if history is not None:
            excluded = history.pairs_of(batch[contract.USER_ID].numpy().reshape(-1))
            masked.add(label_ranks(queries, catalogue, rows, excluded))
    report = every.result()
    if history is not None:
        report.update({f"{name}_excluding_rated": value
                       for name, value in masked.result().items() if name != "queries"})
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
