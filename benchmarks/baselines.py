"""Strong non-neural baselines, in numpy: popularity, EASE, last-item Markov, mean and
biased matrix factorization.

Every retrieval baseline returns a score matrix ``[Q, M]`` over the whole catalogue
(``M`` vocabulary rows), ranked by ``protocols.score_ranks`` exactly as our models'
embeddings are (the same exclusions, ties counted against the label). Ties between
equal scores (a user without history under EASE, a last movie never followed in
training under Markov) are broken by training popularity, added at a weight far below
one score step, so an empty history falls back to popularity.

Shapes: ``U`` users of the training interactions, ``M`` movies, ``Q`` queries.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

# Popularity's share of a tie-breaking score: below any real score difference.
TIE_BREAK = 1e-6


def interaction_matrix(user_rows: np.ndarray, movie_rows: np.ndarray, num_users: int,
                       num_movies: int) -> np.ndarray:
    """float32 ``[num_users, num_movies]`` with 1 where a user rated a movie (implicit
    feedback; repeated pairs count once; rows -1 are skipped)."""
    matrix = np.zeros((num_users, num_movies), np.float32)
    keep = (np.asarray(user_rows) >= 0) & (np.asarray(movie_rows) >= 0)
    matrix[np.asarray(user_rows)[keep], np.asarray(movie_rows)[keep]] = 1.0
    return matrix


def popularity_share(counts: np.ndarray) -> np.ndarray:
    """float64 ``[M]``: training counts scaled to [0, 1] (the tie-breaker)."""
    counts = np.asarray(counts, np.float64)
    return counts / max(counts.max(), 1.0)


def popularity_scores(counts: np.ndarray, queries: int) -> np.ndarray:
    """``[Q, M]``: every query gets the movies by training count."""
    return np.broadcast_to(popularity_share(counts)[None, :], (queries, len(counts)))


def recent_counts(movie_rows: np.ndarray, timestamps: np.ndarray, num_movies: int,
                  window_seconds: float) -> np.ndarray:
    """float64 ``[M]``: each movie's ratings in the last ``window_seconds`` before the
    latest timestamp given (rows -1 skipped), plus the whole period's counts at the
    tie-break weight (so movies unrated in the window keep popularity's order)."""
    movie_rows, timestamps = np.asarray(movie_rows), np.asarray(timestamps)
    keep = movie_rows >= 0
    recent = keep & (timestamps > timestamps.max() - window_seconds)
    counts = np.bincount(movie_rows[recent], minlength=num_movies).astype(np.float64)
    return counts + TIE_BREAK * popularity_share(
        np.bincount(movie_rows[keep], minlength=num_movies))


# ---------------------------------------------------------------------------------------
# EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).


def ease_scores(train: np.ndarray, histories: np.ndarray, l2: float,
                counts: Optional[np.ndarray] = None) -> np.ndarray:
    """EASE's scores ``histories @ B`` ``[Q, M]``, B the closed-form item-item weights.

    ``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + l2 I)^-1`` (so ``diag(B) = 0``),
    ``X = train`` ``[U, M]``. Computed in the dual when ``U < M`` (Woodbury:
    ``P = (I - X^T (X X^T + l2 I)^-1 X) / l2``, never an ``[M, M]`` inverse), so its cost
    is ``O(U^2 M + U^3)`` there. ``histories`` ``[Q, M]``: each query's movies (0/1).
    With ``counts`` ``[M]``, popularity breaks ties (an empty history gets popularity).
    """
    x = np.asarray(train, np.float64)
    h = np.asarray(histories, np.float64)
    users, movies = x.shape
    if users < movies:
        inner = np.linalg.inv(x @ x.T + l2 * np.eye(users))                  # [U, U]
        kx = inner @ x                                                        # [U, M]
        diag_p = (1.0 - np.einsum("um,um->m", x, kx)) / l2                    # [M]
        hp = (h - (h @ x.T) @ kx) / l2                                        # [Q, M]
    else:
        p = np.linalg.inv(x.T @ x + l2 * np.eye(movies))                      # [M, M]
        diag_p = np.diag(p).copy()
        hp = h @ p
    scores = h - hp / diag_p[None, :]          # h @ (I - P diag(1/diag(P)))
    if counts is not None:
        scores = scores + TIE_BREAK * popularity_share(counts)[None, :]
    return scores


def tune_ease(train: np.ndarray, histories: np.ndarray, label_rows: np.ndarray,
              evaluate, grid: Iterable[float] = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0),
              counts: Optional[np.ndarray] = None) -> Tuple[float, Dict[float, float]]:
    """The ``l2`` of ``grid`` whose EASE scores do best on validation queries.

    ``evaluate(scores [Q, M], label_rows [Q]) -> float`` (higher is better, e.g. NDCG@10
    with the histories excluded). Returns ``(best l2, {l2: figure})``."""
    figures = {float(l2): float(evaluate(ease_scores(train, histories, l2, counts),
                                         label_rows)) for l2 in grid}
    return max(figures, key=lambda l2: (figures[l2], -l2)), figures


# ---------------------------------------------------------------------------------------
# Last-item Markov chain (sequences).


def transition_counts(last_rows: np.ndarray, next_rows: np.ndarray,
                      num_movies: int) -> np.ndarray:
    """float64 ``[M + 1, M]``: ``[a + 1, b]`` counts how often movie row ``b`` followed
    movie row ``a`` in training (row 0: a previous movie outside the vocabulary)."""
    counts = np.zeros((num_movies + 1, num_movies), np.float64)
    last_rows, next_rows = np.asarray(last_rows), np.asarray(next_rows)
    keep = next_rows >= 0
    np.add.at(counts, (np.maximum(last_rows[keep], -1) + 1, next_rows[keep]), 1.0)
    return counts


def markov_scores(transitions: np.ndarray, last_rows: np.ndarray,
                  counts: np.ndarray) -> np.ndarray:
    """``[Q, M]``: the movies that most often followed each query's last movie (row
    ``last_rows[q]``, -1 unknown), ties (and unseen last movies) by popularity."""
    rows = transitions[np.maximum(np.asarray(last_rows), -1) + 1]
    return rows + TIE_BREAK * popularity_share(counts)[None, :]


# ---------------------------------------------------------------------------------------
# Ratings: the mean and biased matrix factorization (ALS).


class BiasedMF:
    """``r(u, i) = mu + b_u + b_i + p_u . q_i``, fit by alternating least squares with an
    L2 penalty ``l2`` on every parameter but ``mu``. Unknown users and movies (row -1)
    get zero biases and factors. Predictions are clipped to ``[low, high]``.

    Each half-step solves, per user (per movie), a ridge regression of ``dim + 1``
    unknowns (the factors and the bias) on the ratings it has.
    """

    def __init__(self, num_users: int, num_movies: int, dim: int = 16, l2: float = 10.0,
                 iterations: int = 12, seed: int = 0, low: float = 1.0, high: float = 5.0):
        rng = np.random.default_rng(seed)
        self.dim, self.l2, self.iterations = dim, l2, iterations
        self.low, self.high, self.mu = low, high, 0.0
        self.p = rng.normal(0.0, 0.1, (num_users + 1, dim))   # row 0: unknown users
        self.q = rng.normal(0.0, 0.1, (num_movies + 1, dim))
        self.bu = np.zeros(num_users + 1)
        self.bi = np.zeros(num_movies + 1)
        self.p[0] = self.q[0] = 0.0

    def fit(self, user_rows: np.ndarray, movie_rows: np.ndarray,
            ratings: np.ndarray) -> "BiasedMF":
        users, movies = np.asarray(user_rows) + 1, np.asarray(movie_rows) + 1
        ratings = np.asarray(ratings, np.float64)
        self.mu = float(ratings.mean())
        by_user, by_movie = _groups(users), _groups(movies)
        for _ in range(self.iterations):
            # Users: factors and bias against the movies' [q_i, 1], target r - mu - b_i.
            self.p, self.bu = self._solve(by_user, movies, ratings - self.mu - self.bi[movies],
                                          self.q, self.p, self.bu)
            self.q, self.bi = self._solve(by_movie, users, ratings - self.mu - self.bu[users],
                                          self.p, self.q, self.bi)
        return self

    def _solve(self, groups, other_rows, targets, other_factors, factors, biases):
        factors, biases = factors.copy(), biases.copy()
        design_all = np.hstack([other_factors[other_rows], np.ones((len(other_rows), 1))])
        penalty = self.l2 * np.eye(self.dim + 1)
        for row, members in groups:
            if row == 0:
                continue
            design = design_all[members]                            # [n, dim + 1]
            solution = np.linalg.solve(design.T @ design + penalty, design.T @ targets[members])
            factors[row], biases[row] = solution[:-1], solution[-1]
        return factors, biases

    def predict(self, user_rows: np.ndarray, movie_rows: np.ndarray) -> np.ndarray:
        users, movies = np.asarray(user_rows) + 1, np.asarray(movie_rows) + 1
        raw = (self.mu + self.bu[users] + self.bi[movies]
               + np.einsum("nd,nd->n", self.p[users], self.q[movies]))
        return np.clip(raw, self.low, self.high)


def _groups(rows: np.ndarray) -> Sequence[Tuple[int, np.ndarray]]:
    """``[(row, indices of rows equal to it)]`` for each distinct row."""
    order = np.argsort(rows, kind="stable")
    distinct, starts = np.unique(rows[order], return_index=True)
    bounds = list(starts[1:]) + [len(rows)]
    return [(int(row), order[start:stop])
            for row, start, stop in zip(distinct, starts, bounds)]


def rmse(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predictions) - np.asarray(labels)) ** 2)))
