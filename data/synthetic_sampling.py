"""The latent model of the synthetic MovieLens data; the sampling of ratings.

Random ratings would be useless for checking that the retrieval, ranking and
sequential models *learn* anything, so the generator plants the structure such
models exploit, in the same places real data has it:

* **Popularity.**  Every movie has a popularity logit drawn from a normal
  distribution (log-normal popularity), giving a long-tailed number of ratings
  per movie: a few blockbusters, many movies with a handful of ratings.
  Recent movies are slightly more popular.
* **Activity.**  Users rate at least 20 movies (as in ML-100K / ML-1M, when the
  requested total allows) plus a gamma-distributed heavy tail; the per-user counts are
  water-filled so that the total is *exactly* the requested number of ratings.
* **Taste.**  Movies have latent vectors (``LATENT_DIM`` = 12) scattered around
  cluster centres; every cluster has a genre profile, so genres are correlated
  with the latent space (and are therefore useful features).  Users have latent
  vectors that are a sparse mixture of a few cluster centres plus noise plus a
  small shift from their demographics (age, gender, occupation), so user
  features carry some signal too.
* **Which movies a user rates** is sampled without replacement with
  probability proportional to ``exp(popularity_logit + affinity)`` where
  ``affinity = AFFINITY_SCALE * <user_vec, movie_vec> / sqrt(dim)``.  This is a
  Plackett-Luce model, drawn exactly and fully vectorised with the Gumbel-top-k
  trick over blocks of users.  A ranker that knows the true logits therefore
  clearly beats a popularity ranker on held-out movies (see
  ``tests/test_synthetic.py``), and a learned two-tower model has something to
  recover.  :class:`LatentTruth` exposes the true logits.
* **Rating values** are ``user bias + movie bias + standardised affinity +
  noise``, cut at quantiles so that the rating histogram matches the real data
  set of the same layout (mean ~3.5; every value occurs).
* **Timelines.**  Each user starts at a random time in a ~3-year window and
  rates in sessions: consecutive ratings are seconds apart inside a session
  (with ``tie_prob`` of them sharing the same second, as MovieLens' bulk rating
  pages produce) and hours to months apart between sessions.  The order of a
  user's movies follows a noisy 1-D projection of the movie latent vectors on a
  user-specific direction: the user "drifts" through taste space, so
  consecutive movies tend to be similar and the next movie is predictable from
  the recent ones (the signal a sequential model needs).

The movie and user catalogues (titles, genres, demographics) are
data/synthetic_catalogue.py's; data/synthetic.py puts the pieces together.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union

import numpy as np

from data.synthetic_catalogue import (GENRE_FREQ, MAX_YEAR, OCCUPATIONS_1M,
                                      OCCUPATIONS_100K, Users, log_progress,
                                      random_stream)

# ---------------------------------------------------------------------------
# Model constants.
# ---------------------------------------------------------------------------

LATENT_DIM = 12
#: Scale of the user-movie affinity in the selection logit.
AFFINITY_SCALE = 2.2
#: Standard deviation of the movie popularity logits (log-normal popularity).
POPULARITY_SIGMA = 1.8
#: Minimum ratings per user (ML-100K and ML-1M guarantee 20).
MIN_RATINGS_PER_USER = 20
#: Gamma shape of the per-user activity above the minimum (ML-100K's counts
#: above 20 fit a gamma with shape ~0.65: many light users, a heavy tail).
ACTIVITY_SHAPE = 0.65
#: Default probability that a rating shares its timestamp with the previous
#: rating of the same user.
DEFAULT_TIE_PROB = 0.15
#: Probability that, when not tied, the next rating is in the same session.
_SESSION_CONTINUE = 0.85

#: Timestamp window start (unix seconds) per format; the window is ~3 years.
_T0 = {"100k": 874_724_710, "1m": 874_724_710, "csv": 1_104_537_600}
_WINDOW = 3 * 365 * 24 * 3600

#: Rating histograms of the real data (ML-100K for 1-5 stars, ml-25m for half
#: stars 0.5..5.0).  The synthetic ratings are cut at these quantiles.
RATING_FREQ_STARS = np.array([6110, 11370, 27145, 34174, 21201], np.float64)
RATING_FREQ_HALF = np.array([1.57, 3.13, 1.61, 6.56, 5.04, 19.59, 12.56,
                             26.61, 8.48, 14.47], np.float64)

#: Target number of float32 cells in one users x movies block.
_BLOCK_CELLS = 4_000_000


# ---------------------------------------------------------------------------
# Ground truth.
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class LatentTruth:
    """The latent model the ratings were drawn from (0-based indices).

    User id ``u`` in the files is row ``u - 1``; movie id ``m`` is ``m - 1``.

    Attributes:
      popularity_logit: ``(movies,)`` movie popularity logits.
      user_vec: ``(users, dim)`` user latent vectors.
      movie_vec: ``(movies, dim)`` movie latent vectors.
      movie_cluster: ``(movies,)`` taste cluster of each movie.
      affinity_scale: multiplier of ``<user_vec, movie_vec> / sqrt(dim)``.
    """

    popularity_logit: np.ndarray
    user_vec: np.ndarray
    movie_vec: np.ndarray
    movie_cluster: np.ndarray
    affinity_scale: float

    def affinity(self, user_index: Union[int, Sequence[int], np.ndarray]
                 ) -> np.ndarray:
        """Affinity of the given users (0-based) to every movie."""
        u = self.user_vec[np.asarray(user_index)]
        dim = self.user_vec.shape[1]
        return (u @ self.movie_vec.T) * np.float32(
            self.affinity_scale / np.sqrt(dim))

    def selection_logits(self, user_index: Union[int, Sequence[int],
                                                 np.ndarray]) -> np.ndarray:
        """``popularity_logit + affinity``: a user rates movie j with
        probability proportional to ``exp`` of this (without replacement)."""
        return self.popularity_logit + self.affinity(user_index)


# ---------------------------------------------------------------------------
# Latent model.
# ---------------------------------------------------------------------------


def allocate(total: int, weights: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Integer counts in ``[lo, hi]`` summing to ``total``, roughly
    proportional to ``weights`` above ``lo`` (water-filling)."""
    n = np.full(weights.shape[0], lo, dtype=np.int64)
    rem = total - int(n.sum())
    while rem > 0:
        free = np.flatnonzero(n < hi)
        w = weights[free]
        share = rem * w / w.sum()
        add = np.minimum(np.floor(share).astype(np.int64), hi - n[free])
        if add.sum() == 0:
            # Hand out the last units by largest fractional share.
            order = free[np.argsort(-(share - np.floor(share)), kind="stable")]
            add_idx = order[:rem]
            n[add_idx] += 1
            rem -= add_idx.shape[0]
            continue
        n[free] += add
        rem -= int(add.sum())
    return n


def draw_latent(fmt: str, n_users: int, m: int, seed: int, users: Users):
    """Clusters, movie/user latent vectors and popularity logits."""
    rng = random_stream(seed, 1)
    d = LATENT_DIM
    k = int(np.clip(m // 25, 2, 24))
    centers = rng.standard_normal((k, d))
    cluster_size = rng.dirichlet(np.full(k, 2.0))
    movie_cluster = rng.choice(k, m, p=cluster_size)
    movie_vec = centers[movie_cluster] + 0.6 * rng.standard_normal((m, d))

    # Genre profile of each cluster: a primary and one or two secondary
    # genres, plus a weak background of every genre.
    gp = GENRE_FREQ / GENRE_FREQ.sum()
    cluster_genre_prob = np.tile(0.25 * gp, (k, 1))
    for c in range(k):
        primary = rng.choice(18, p=gp)
        cluster_genre_prob[c, primary] = 0.9
        for s in rng.choice(18, rng.integers(1, 3), p=gp):
            if s != primary:
                cluster_genre_prob[c, s] = 0.45

    # Users: sparse mixture of cluster centres, noise, demographic shift.
    mix = rng.dirichlet(np.full(k, 0.25), n_users)
    user_vec = mix @ centers + 0.5 * rng.standard_normal((n_users, d))
    age_dir = rng.standard_normal(d) / np.sqrt(d)
    gender_dir = rng.standard_normal(d) / np.sqrt(d)
    n_occ = len(OCCUPATIONS_1M) if fmt == "1m" else len(OCCUPATIONS_100K)
    occ_vec = 0.3 * rng.standard_normal((n_occ, d))
    age_z = (users.age_years - 34.0) / 12.0
    user_vec += 0.5 * (age_z[:, None] * age_dir
                       + np.where(users.gender, 1.0, -1.0)[:, None]
                       * gender_dir + occ_vec[users.occupation])

    popularity = POPULARITY_SIGMA * rng.standard_normal(m)
    bias_noise = rng.standard_normal(m)
    user_bias = 0.45 * rng.standard_normal(n_users)
    activity = rng.gamma(ACTIVITY_SHAPE, 1.0, n_users)
    direction = rng.standard_normal((n_users, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return dict(centers=centers, movie_cluster=movie_cluster,
                movie_vec=movie_vec.astype(np.float32),
                cluster_genre_prob=cluster_genre_prob,
                user_vec=user_vec.astype(np.float32), popularity=popularity,
                bias_noise=bias_noise, user_bias=user_bias,
                activity=activity, direction=direction.astype(np.float32))


# ---------------------------------------------------------------------------
# Sampling.
# ---------------------------------------------------------------------------


def sample_ratings(fmt: str, n_users: int, m: int, seed: int, lat: dict,
                   n_ratings: np.ndarray, movie_year: np.ndarray,
                   tie_prob: float, verbose: bool):
    """Draw (user, movie, timestamp, score) for every rating, grouped by user
    (ascending) and in timeline order inside a user."""
    total = int(n_ratings.sum())
    offsets = np.concatenate([[0], np.cumsum(n_ratings)])
    out_user = np.empty(total, np.int32)
    out_movie = np.empty(total, np.int32)
    out_ts = np.empty(total, np.int64)
    out_score = np.empty(total, np.float32)

    d = LATENT_DIM
    movie_vec = lat["movie_vec"]
    centers = lat["centers"].astype(np.float32)
    cluster_part = centers[lat["movie_cluster"]]
    # Ordering embedding: the cluster centre plus a damped individual part,
    # so that a user's timeline walks through neighbouring clusters.
    order_vec = (cluster_part + 0.5 * (movie_vec - cluster_part)).astype(
        np.float32)
    # Popularity: recent movies a bit more popular.
    recency = (movie_year - MAX_YEAR[fmt]) / 10.0
    pop = (lat["popularity"] + 0.3 * np.clip(recency, -3, 0)).astype(
        np.float32)
    movie_bias = (0.35 * lat["bias_noise"]
                  + 0.25 * (pop - pop.mean()) / (pop.std() + 1e-9)
                  ).astype(np.float32)
    scale = np.float32(AFFINITY_SCALE / np.sqrt(d))
    t0, t_end = _T0[fmt], _T0[fmt] + _WINDOW

    block = max(1, min(n_users, _BLOCK_CELLS // m))
    n_blocks = (n_users + block - 1) // block
    next_report = 0.1
    for b in range(n_blocks):
        rng = random_stream(seed, 10, b)
        lo, hi = b * block, min(n_users, (b + 1) * block)
        nb = hi - lo
        k_u = n_ratings[lo:hi]
        kmax = int(k_u.max())
        aff = (lat["user_vec"][lo:hi] @ movie_vec.T) * scale      # (nb, m)
        u = rng.random((nb, m), dtype=np.float32)
        np.maximum(u, np.float32(1e-30), out=u)
        logits = pop + aff
        logits -= np.log(-np.log(u))                              # + Gumbel
        del u
        # Gumbel-top-k: the top k_u perturbed logits are an exact sample of k_u
        # movies without replacement with probabilities ~ exp(logit).
        if kmax < m:
            top = np.argpartition(-logits, kmax - 1, axis=1)[:, :kmax]
        else:
            top = np.broadcast_to(np.arange(m), (nb, m))
        top_val = np.take_along_axis(logits, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_val, axis=1), axis=1)
        take = np.arange(kmax)[None, :] < k_u[:, None]
        local = np.broadcast_to(np.arange(nb)[:, None], top.shape)[take]
        movie = top[take]
        # Standardised affinity for the rating value.
        aff_mu = aff.mean(axis=1)
        aff_sd = aff.std(axis=1) + np.float32(1e-6)
        a_sel = aff[local, movie]
        del aff, logits
        z_aff = (a_sel - aff_mu[local]) / aff_sd[local]

        # Timeline order: noisy projection on a user-specific direction.
        dirs = lat["direction"][lo:hi]
        key = np.einsum("ij,ij->i", order_vec[movie], dirs[local])
        key += np.float32(0.35) * rng.standard_normal(
            key.shape[0], dtype=np.float32)
        order = np.lexsort((key, local))
        local, movie, z_aff = local[order], movie[order], z_aff[order]

        # Timestamps: sessions of near-simultaneous ratings with ties.
        n_sel = local.shape[0]
        r1 = rng.random(n_sel)
        r2 = rng.random(n_sel)
        within = 1.0 + rng.exponential(40.0, n_sel)
        between = rng.lognormal(np.log(2 * 86400.0), 1.6, n_sel)
        gap = np.where(r1 < tie_prob, 0.0,
                       np.where(r2 < _SESSION_CONTINUE, within, between))
        starts = offsets[lo:hi] - offsets[lo]
        gap[starts] = 0.0
        cum = np.cumsum(gap)
        cum -= np.repeat(cum[starts], k_u)
        span = cum[starts + k_u - 1]
        squeeze = np.minimum(1.0, (_WINDOW - 1) / np.maximum(span, 1.0))
        cum = np.floor(cum * np.repeat(squeeze, k_u))
        span = np.floor(span * squeeze)
        start = t0 + np.floor((_WINDOW - 1 - span) * rng.beta(1.0, 1.5, nb))
        ts = (np.repeat(start, k_u) + cum).astype(np.int64)
        assert ts.min() >= t0 and ts.max() < t_end

        score = (lat["user_bias"][lo:hi][local] + movie_bias[movie]
                 + np.float32(0.8) * z_aff
                 + np.float32(0.75) * rng.standard_normal(
                     n_sel, dtype=np.float32))
        s, e = offsets[lo], offsets[hi]
        out_user[s:e] = local + lo
        out_movie[s:e] = movie
        out_ts[s:e] = ts
        out_score[s:e] = score
        if verbose and (b + 1) / n_blocks >= next_report:
            log_progress(verbose, f"sampled users {hi}/{n_users} "
                                  f"({100 * hi // n_users}%), "
                                  f"ratings {e}/{total}")
            next_report = np.floor((b + 1) / n_blocks * 10 + 1) / 10
    return out_user, out_movie, out_ts, out_score, pop


def quantize(score: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """0-based level of each score so that the level histogram is ``freq``."""
    cum = np.cumsum(freq)[:-1] / freq.sum()
    if score.shape[0] > 2_000_000:  # quantiles of a subsample are plenty
        sub = score[:: score.shape[0] // 1_000_000]
    else:
        sub = score
    cuts = np.quantile(sub.astype(np.float64), cum)
    return np.searchsorted(cuts, score, side="right").astype(np.int64)
