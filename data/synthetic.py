"""Synthetic MovieLens-format rating data with learnable structure.

Why
---
The real MovieLens files cannot be shipped with this repository (GroupLens
licence), and the real 100K set is too small to exercise the pipeline at scale.
This module writes files that are byte-for-byte *format* compatible with the
GroupLens distributions (``ml-100k``, ``ml-1m`` and the ``ml-latest`` /
``ml-25m`` CSV layout), so the ingestion code can be tested and benchmarked
without the real data, at any size, deterministically from a seed.

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
* **Demographics** (age, gender, occupation, zip code) follow the marginal
  distributions of ML-100K / ML-1M.

Formats (ids start at 1 and are contiguous)
-------------------------------------------
``100k``  ``u.data`` (tab-separated ``user item rating timestamp``, rows shuffled
          like the real file), ``u.item``, ``u.user``, ``u.genre``,
          ``u.occupation`` (pipe-separated, Latin-1) and ``u.info``.
``1m``    ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``, grouped by
          user then time), ``movies.dat`` (``MovieID::Title::Genres``, Latin-1)
          and ``users.dat`` (``UserID::Gender::Age::Occupation::Zip-code``).
``csv``   ``ratings.csv`` (``userId,movieId,rating,timestamp``; half stars
          written ``4.0``/``3.5``; grouped by user then time) and ``movies.csv``
          (``movieId,title,genres``, UTF-8, csv-module quoting).  As in
          ml-latest the genre is spelled ``Children`` (not ``Children's``),
          ``IMAX`` occurs, and a movie without genres has
          ``(no genres listed)``.  This layout has no users file.

Every user has at least one rating (so ``ratings >= users`` is required); a
movie may have no rating when the popularity tail is long and ``ratings`` is
small, exactly as can happen with a filtered real data set.  All movies are in
the movie file.

Usage::

    python -m data.synthetic --users 943 --movies 1682 --ratings 100000 \\
        --format 100k --seed 0 --out /tmp/synthetic-100k

or from Python, ``generate(out_dir, users, movies, ratings, fmt, seed)``.
The same arguments give byte-identical files (for a given numpy version).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Union
from urllib.parse import quote

import numpy as np

FORMATS = ("100k", "1m", "csv")

# ---------------------------------------------------------------------------
# Vocabularies as GroupLens spells them.
# ---------------------------------------------------------------------------

#: ml-100k genre order (``u.genre`` and the 19 flags of ``u.item``).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: ml-1m genres (``movies.dat``): the 100k list without ``unknown``.
GENRES_1M = GENRES_100K[1:]
#: ml-latest / ml-25m genres (``movies.csv``).
GENRES_CSV = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "IMAX",
)
NO_GENRES_CSV = "(no genres listed)"

#: Relative frequency of the 18 core genres (ML-100K counts, GENRES_1M order).
_GENRE_FREQ = np.array([251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56,
                        61, 247, 101, 251, 71, 27], dtype=np.float64)

#: ``u.occupation`` of ml-100k, with the number of ML-100K users in each.
OCCUPATIONS_100K = (
    "administrator", "artist", "doctor", "educator", "engineer",
    "entertainment", "executive", "healthcare", "homemaker", "lawyer",
    "librarian", "marketing", "none", "other", "programmer", "retired",
    "salesman", "scientist", "student", "technician", "writer",
)
_OCC_FREQ_100K = np.array([79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9,
                           105, 66, 14, 12, 31, 196, 27, 45], dtype=np.float64)

#: ml-1m occupation codes 0-20 (README of ml-1m), with ML-1M user counts.
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_OCC_FREQ_1M = np.array([711, 528, 267, 173, 759, 112, 236, 679, 17, 92, 195,
                         129, 388, 142, 302, 144, 241, 502, 70, 72, 281],
                        dtype=np.float64)

#: ml-1m age codes and the number of ML-1M users in each bucket.
AGE_CODES_1M = (1, 18, 25, 35, 45, 50, 56)
_AGE_FREQ_1M = np.array([222, 1103, 2096, 1193, 550, 496, 380], np.float64)
_AGE_MID_1M = np.array([15, 21, 30, 40, 47, 53, 60], np.float64)

#: Rating histograms of the real data (ML-100K for 1-5 stars, ml-25m for half
#: stars 0.5..5.0).  The synthetic ratings are cut at these quantiles.
_RATING_FREQ_STARS = np.array([6110, 11370, 27145, 34174, 21201], np.float64)
_RATING_FREQ_HALF = np.array([1.57, 3.13, 1.61, 6.56, 5.04, 19.59, 12.56,
                              26.61, 8.48, 14.47], np.float64)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")

_ADJ = (
    "Midnight", "Silent", "Last", "Broken", "Golden", "Lost", "Hidden",
    "Wild", "Dark", "Crimson", "Frozen", "Electric", "Lonely", "Secret",
    "Eternal", "Burning", "Little", "Big", "Final", "Endless", "Savage",
    "Quiet", "Sweet", "Bitter", "Restless", "Strange", "Blue", "Iron",
    "Paper", "Glass", "Velvet", "Distant", "Fallen", "Brave", "Perfect",
    "Dangerous", "Invisible", "Forgotten", "Rising", "Twisted", "Red",
    "Northern", "Sudden", "Hollow", "Bright", "Crooked", "Gentle", "Lucky",
)
_NOUN = (
    "Harbor", "River", "Empire", "Garden", "Highway", "Kingdom", "Summer",
    "Winter", "Stranger", "Mirror", "Promise", "Frontier", "Horizon",
    "Shadow", "Heart", "Game", "Island", "City", "Witness", "Machine",
    "Dream", "Legacy", "Journey", "Storm", "Voyage", "Detective", "Circus",
    "Station", "Letter", "Angel", "Valley", "Desert", "Orchard", "Canyon",
    "Signal", "Planet", "Ballad", "Hotel", "Theory", "Affair", "Bridge",
    "Daughter", "Season", "Engine", "Lighthouse", "Verdict", "Outlaw", "Tide",
)
#: Latin-1 encodable, to exercise the encodings of the 100k/1m/csv files.
_FOREIGN = (
    "Misérables", "Café", "Señor", "Mañana", "Déjà Vu", "Fiancée", "Château",
    "Crème", "Rêve", "Naïve", "Élan", "Pêcheur", "Années", "Garçon",
)
_ARTICLES = ("The", "A", "An")
_FOREIGN_ARTICLES = ("Le", "La", "Les", "Il", "El")

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
#: Latest release year per format.
_MAX_YEAR = {"100k": 1998, "1m": 2000, "csv": 2000}
_MIN_YEAR = 1920

#: Target number of float32 cells in one users x movies block.
_BLOCK_CELLS = 4_000_000
#: Rows per chunk when formatting the ratings file.
_WRITE_CHUNK = 1_000_000


def _rng(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``(seed, key)``.

    Components draw from their own streams so that e.g. the titles do not
    depend on how many random numbers the latent model used.
    """
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(key))))


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


@dataclasses.dataclass
class _Users:
    age: np.ndarray          # 100k: years; 1m: index into AGE_CODES_1M
    age_years: np.ndarray    # numeric age used by the latent model
    gender: np.ndarray       # bool, True = F
    occupation: np.ndarray   # index into the format's occupation list
    zip_code: List[str]


@dataclasses.dataclass
class _Movies:
    title: List[str]
    year: np.ndarray
    release_date: List[str]
    genres: np.ndarray       # (movies, 18) bool, GENRES_1M order
    imax: np.ndarray         # (movies,) bool, csv only


# ---------------------------------------------------------------------------
# Building blocks.
# ---------------------------------------------------------------------------


def _allocate(total: int, weights: np.ndarray, lo: int, hi: int) -> np.ndarray:
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


def _movies(fmt: str, m: int, seed: int, movie_cluster: np.ndarray,
            cluster_genre_prob: np.ndarray) -> _Movies:
    """Titles, release years/dates and genres of the movies."""
    rng = _rng(seed, 2)
    max_year = _MAX_YEAR[fmt]
    # Release years skewed to recent, peaking a couple of years before the
    # data collection (like ML-100K: 1996 peak, few 1998 titles), with a
    # long tail back to _MIN_YEAR (old titles spread over 1920-1960).
    recent = rng.random(m) < 0.6
    back = np.where(recent, rng.gamma(2.0, 1.4, m), rng.exponential(22.0, m))
    year = (max_year - np.floor(back)).astype(np.int64)
    old = year < _MIN_YEAR
    year[old] = rng.integers(_MIN_YEAR, 1960, int(old.sum()))

    # Genres from the cluster's profile; a few movies have none.
    genres = rng.random((m, 18)) < cluster_genre_prob[movie_cluster]
    empty = ~genres.any(axis=1)
    allow_none = fmt != "1m"  # ml-1m movies always have a genre
    keep_empty = empty & (rng.random(m) < 0.02) & allow_none
    fix = empty & ~keep_empty
    primary = np.argmax(cluster_genre_prob[movie_cluster], axis=1)
    genres[np.flatnonzero(fix), primary[fix]] = True
    imax = (rng.random(m) < 0.01) & (year >= 1995) & (fmt == "csv")

    pattern = rng.random(m)
    adj = rng.integers(0, len(_ADJ), (m, 2))
    noun = rng.integers(0, len(_NOUN), (m, 3))
    foreign = rng.integers(0, len(_FOREIGN), m)
    art = rng.integers(0, len(_ARTICLES), m)
    fart = rng.integers(0, len(_FOREIGN_ARTICLES), m)
    sequel = rng.integers(2, 5, m)
    day = rng.integers(1, 29, m)
    month = rng.integers(0, 12, m)
    jan1 = rng.random(m) < 0.7

    titles: List[str] = []
    seen = set()
    for j in range(m):
        p = pattern[j]
        a0, a1 = _ADJ[adj[j, 0]], _ADJ[adj[j, 1]]
        n0, n1, n2 = (_NOUN[noun[j, 0]], _NOUN[noun[j, 1]],
                      _NOUN[noun[j, 2]])
        if p < 0.45:
            base = f"{a0} {n0}"
        elif p < 0.58:
            base = f"{a0} {n0}, {_ARTICLES[art[j]]}"
        elif p < 0.64:
            base = f"{n0}, {_ARTICLES[art[j]]}"
        elif p < 0.70:
            base = f"{n0}, {n1} and {n2}"
        elif p < 0.74:
            base = (f"{_FOREIGN[foreign[j]]}, {_FOREIGN_ARTICLES[fart[j]]} "
                    f"({a1} {n1})")
        elif p < 0.79:
            base = f"{a0} {n0} {sequel[j]}"
        elif p < 0.795:
            base = f'"{a0} {n0}" {n1}'
        elif p < 0.83:
            base = f"{_FOREIGN[foreign[j]]} {n1}"
        else:
            base = f"Synthetic Movie {j + 1}"
        title = f"{base} ({year[j]})"
        if title in seen:  # keep titles unique: pipelines key on them
            title = f"Synthetic Movie {j + 1} ({year[j]})"
        seen.add(title)
        titles.append(title)

    release = [
        f"01-Jan-{year[j]}" if jan1[j] else
        f"{day[j]:02d}-{_MONTHS[month[j]]}-{year[j]}" for j in range(m)]
    return _Movies(title=titles, year=year, release_date=release,
                   genres=genres, imax=imax)


def _users(fmt: str, n_users: int, seed: int) -> _Users:
    """Demographics with the marginals of ML-100K (100k, csv) or ML-1M."""
    rng = _rng(seed, 3)
    female = rng.random(n_users) < (0.28 if fmt == "1m" else 0.29)
    if fmt == "1m":
        age = rng.choice(len(AGE_CODES_1M), n_users,
                         p=_AGE_FREQ_1M / _AGE_FREQ_1M.sum())
        age_years = _AGE_MID_1M[age]
        occ = rng.choice(len(OCCUPATIONS_1M), n_users,
                         p=_OCC_FREQ_1M / _OCC_FREQ_1M.sum())
    else:
        age = np.clip(np.round(rng.gamma(5.5, 4.8, n_users) + 8), 7, 73
                      ).astype(np.int64)
        age_years = age.astype(np.float64)
        occ = rng.choice(len(OCCUPATIONS_100K), n_users,
                         p=_OCC_FREQ_100K / _OCC_FREQ_100K.sum())
    zips = rng.integers(0, 100_000, n_users)
    plus4 = rng.integers(0, 10_000, n_users)
    ext = (rng.random(n_users) < 0.04) & (fmt == "1m")
    zip_code = [f"{z:05d}-{p:04d}" if e else f"{z:05d}"
                for z, p, e in zip(zips.tolist(), plus4.tolist(),
                                   ext.tolist())]
    return _Users(age=age, age_years=age_years, gender=female, occupation=occ,
                  zip_code=zip_code)


def _latent(fmt: str, n_users: int, m: int, seed: int, users: _Users):
    """Clusters, movie/user latent vectors and popularity logits."""
    rng = _rng(seed, 1)
    d = LATENT_DIM
    k = int(np.clip(m // 25, 2, 24))
    centers = rng.standard_normal((k, d))
    cluster_size = rng.dirichlet(np.full(k, 2.0))
    movie_cluster = rng.choice(k, m, p=cluster_size)
    movie_vec = centers[movie_cluster] + 0.6 * rng.standard_normal((m, d))

    # Genre profile of each cluster: a primary and one or two secondary
    # genres, plus a weak background of every genre.
    gp = _GENRE_FREQ / _GENRE_FREQ.sum()
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


def _encode_rows(parts: Sequence[Union[bytes, np.ndarray]]) -> bytes:
    """Format rows of non-negative integer columns and literal separators.

    ``parts`` alternates freely between ``bytes`` (written on every row) and
    integer arrays (written in decimal without leading zeros).  Done with a
    ``(rows, width)`` uint8 matrix in which padding bytes are 0 and dropped,
    which is ~20x faster than ``np.savetxt`` / ``DataFrame.to_csv``.
    """
    n = next(len(p) for p in parts if not isinstance(p, bytes))
    widths = []
    for p in parts:
        if isinstance(p, bytes):
            widths.append(len(p))
        else:
            widths.append(len(str(int(p.max()))) if n else 1)
    mat = np.zeros((n, sum(widths)), dtype=np.uint8)
    col = 0
    for p, w in zip(parts, widths):
        if isinstance(p, bytes):
            mat[:, col:col + w] = np.frombuffer(p, dtype=np.uint8)
        else:
            v = np.asarray(p, dtype=np.int64)
            for i in range(w):
                div = 10 ** (w - 1 - i)
                digit = (48 + (v // div) % 10).astype(np.uint8)
                if i < w - 1:
                    digit[v < div] = 0  # leading zero: padding
                mat[:, col + i] = digit
        col += w
    flat = mat.ravel()
    return flat[flat != 0].tobytes()


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[synthetic] {msg}", file=sys.stderr, flush=True)


def _validate(users: int, movies: int, ratings: int, fmt: str, seed: int,
              tie_prob: float) -> None:
    for name, v in (("users", users), ("movies", movies),
                    ("ratings", ratings)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {v!r}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if ratings > users * movies:
        raise ValueError(
            f"cannot place {ratings} distinct ratings: {users} users x "
            f"{movies} movies allow at most {users * movies}")
    if ratings < users:
        raise ValueError(
            f"ratings ({ratings}) must be >= users ({users}): every user "
            f"gets at least one rating")
    if not 0.0 <= tie_prob < 1.0:
        raise ValueError(f"tie_prob must be in [0, 1), got {tie_prob}")


# ---------------------------------------------------------------------------
# Sampling.
# ---------------------------------------------------------------------------


def _sample(fmt: str, n_users: int, m: int, seed: int, lat: dict,
            n_ratings: np.ndarray, movie_year: np.ndarray, tie_prob: float,
            verbose: bool):
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
    recency = (movie_year - _MAX_YEAR[fmt]) / 10.0
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
        rng = _rng(seed, 10, b)
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
            _log(verbose, f"sampled users {hi}/{n_users} "
                          f"({100 * hi // n_users}%), ratings {e}/{total}")
            next_report = np.floor((b + 1) / n_blocks * 10 + 1) / 10
    return out_user, out_movie, out_ts, out_score, pop


def _quantize(score: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """0-based level of each score so that the level histogram is ``freq``."""
    cum = np.cumsum(freq)[:-1] / freq.sum()
    if score.shape[0] > 2_000_000:  # quantiles of a subsample are plenty
        sub = score[:: score.shape[0] // 1_000_000]
    else:
        sub = score
    cuts = np.quantile(sub.astype(np.float64), cum)
    return np.searchsorted(cuts, score, side="right").astype(np.int64)


# ---------------------------------------------------------------------------
# Writers.
# ---------------------------------------------------------------------------


def _write_bytes_chunks(path: str, n: int, make_parts, header: bytes = b"",
                        verbose: bool = False) -> None:
    with open(path, "wb") as f:
        f.write(header)
        for s in range(0, n, _WRITE_CHUNK):
            e = min(n, s + _WRITE_CHUNK)
            f.write(_encode_rows(make_parts(s, e)))
            if verbose and n > _WRITE_CHUNK:
                _log(verbose, f"wrote {e}/{n} rows of "
                              f"{os.path.basename(path)}")


def _write_100k(out: str, users: _Users, movies: _Movies, u, m, r, ts,
                seed: int, verbose: bool) -> List[str]:
    n = u.shape[0]
    perm = _rng(seed, 4).permutation(n)  # real u.data is shuffled
    u, m, r, ts = u[perm], m[perm], r[perm], ts[perm]
    paths = []
    p = os.path.join(out, "u.data")
    _write_bytes_chunks(
        p, n, lambda s, e: [u[s:e] + 1, b"\t", m[s:e] + 1, b"\t", r[s:e],
                            b"\t", ts[s:e], b"\n"], verbose=verbose)
    paths.append(p)

    lines = []
    for j, title in enumerate(movies.title):
        flags = np.concatenate([[not movies.genres[j].any()],
                                movies.genres[j]]).astype(int)
        url = "http://us.imdb.com/M/title-exact?" + quote(
            title, safe="()',!&:;", encoding="latin-1")
        lines.append(f"{j + 1}|{title}|{movies.release_date[j]}||{url}|"
                     + "|".join(map(str, flags)) + "\n")
    paths.append(_write_text(out, "u.item", "".join(lines), "latin-1"))

    lines = [f"{i + 1}|{users.age[i]}|{'F' if users.gender[i] else 'M'}|"
             f"{OCCUPATIONS_100K[users.occupation[i]]}|{users.zip_code[i]}\n"
             for i in range(len(users.zip_code))]
    paths.append(_write_text(out, "u.user", "".join(lines), "latin-1"))
    # u.genre ends with an empty line in the GroupLens distribution.
    paths.append(_write_text(
        out, "u.genre",
        "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)) + "\n",
        "latin-1"))
    paths.append(_write_text(
        out, "u.occupation", "".join(o + "\n" for o in OCCUPATIONS_100K),
        "latin-1"))
    paths.append(_write_text(
        out, "u.info",
        f"{len(users.zip_code)} users\n{len(movies.title)} items\n"
        f"{n} ratings\n", "latin-1"))
    return paths


def _write_1m(out: str, users: _Users, movies: _Movies, u, m, r, ts,
              verbose: bool) -> List[str]:
    n = u.shape[0]
    paths = []
    p = os.path.join(out, "ratings.dat")
    _write_bytes_chunks(
        p, n, lambda s, e: [u[s:e] + 1, b"::", m[s:e] + 1, b"::", r[s:e],
                            b"::", ts[s:e], b"\n"], verbose=verbose)
    paths.append(p)
    lines = [f"{j + 1}::{title}::"
             + "|".join(GENRES_1M[g] for g in np.flatnonzero(movies.genres[j]))
             + "\n" for j, title in enumerate(movies.title)]
    paths.append(_write_text(out, "movies.dat", "".join(lines), "latin-1"))
    lines = [f"{i + 1}::{'F' if users.gender[i] else 'M'}::"
             f"{AGE_CODES_1M[users.age[i]]}::{users.occupation[i]}::"
             f"{users.zip_code[i]}\n" for i in range(len(users.zip_code))]
    paths.append(_write_text(out, "users.dat", "".join(lines), "latin-1"))
    return paths


def _write_csv(out: str, movies: _Movies, u, m, half, ts,
               verbose: bool) -> List[str]:
    n = u.shape[0]
    paths = []
    p = os.path.join(out, "ratings.csv")
    _write_bytes_chunks(
        p, n, lambda s, e: [u[s:e] + 1, b",", m[s:e] + 1, b",",
                            half[s:e] // 2, b".", (half[s:e] % 2) * 5, b",",
                            ts[s:e], b"\n"],
        header=b"userId,movieId,rating,timestamp\n", verbose=verbose)
    paths.append(p)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["movieId", "title", "genres"])
    for j, title in enumerate(movies.title):
        g = [GENRES_CSV[i] for i in np.flatnonzero(movies.genres[j])]
        if movies.imax[j]:
            g.append("IMAX")
        w.writerow([j + 1, title, "|".join(g) if g else NO_GENRES_CSV])
    paths.append(_write_text(out, "movies.csv", buf.getvalue(), "utf-8"))
    return paths


def _write_text(out: str, name: str, text: str, encoding: str) -> str:
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(text.encode(encoding))
    return path


# ---------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------


def generate(out_dir: Union[str, os.PathLike], users: int = 943,
             movies: int = 1682, ratings: int = 100_000, fmt: str = "100k",
             seed: int = 0, *, tie_prob: float = DEFAULT_TIE_PROB,
             return_truth: bool = False, verbose: Optional[bool] = None
             ) -> Dict[str, object]:
    """Write a synthetic MovieLens data set in ``fmt`` layout to ``out_dir``.

    Args:
      out_dir: directory to write to (created if missing; files overwritten).
      users, movies, ratings: exact counts.  Requires
        ``users <= ratings <= users * movies``.
      fmt: ``"100k"``, ``"1m"`` or ``"csv"`` (see the module docstring).
      seed: non-negative int; the same arguments give byte-identical files.
      tie_prob: probability that a rating has the same timestamp as the
        previous rating of the same user.
      return_truth: also return the :class:`LatentTruth` under ``"truth"``.
      verbose: progress on stderr; default: when ``ratings >= 1_000_000``.

    Returns:
      A summary dict: ``format``, ``out_dir``, ``files``, ``users``,
      ``movies``, ``ratings``, ``users_with_ratings``, ``movies_with_ratings``,
      ``min_user_ratings``, ``max_user_ratings``, ``max_movie_ratings``,
      ``mean_rating``, ``tie_fraction``, ``seed``, ``seconds`` (and
      ``truth``).
    """
    _validate(users, movies, ratings, fmt, seed, tie_prob)
    users, movies, ratings, seed = int(users), int(movies), int(ratings), \
        int(seed)
    if verbose is None:
        verbose = ratings >= 1_000_000
    started = time.time()
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)

    user_info = _users(fmt, users, seed)
    lat = _latent(fmt, users, movies, seed, user_info)
    movie_info = _movies(fmt, movies, seed, lat["movie_cluster"], lat["cluster_genre_prob"])
    lo = min(MIN_RATINGS_PER_USER, movies, ratings // users)
    n_ratings = _allocate(ratings, lat["activity"] + 1e-9, lo, movies)
    _log(verbose, f"{fmt}: {users} users x {movies} movies, {ratings} "
                  f"ratings, seed {seed}")

    u, m, ts, score, pop = _sample(fmt, users, movies, seed, lat, n_ratings,
                                   movie_info.year, tie_prob, verbose)
    if fmt == "csv":
        level = _quantize(score, _RATING_FREQ_HALF)
        rating_value = level + 1                      # half stars, 1..10
        mean_rating = float(rating_value.mean()) / 2.0
    else:
        level = _quantize(score, _RATING_FREQ_STARS)
        rating_value = level + 1                      # stars, 1..5
        mean_rating = float(rating_value.mean())
    del score, level

    same_user = u[1:] == u[:-1]
    tie_fraction = float((ts[1:] == ts[:-1])[same_user].mean()) \
        if same_user.any() else 0.0
    movie_counts = np.bincount(m, minlength=movies)

    _log(verbose, "writing files")
    if fmt == "100k":
        files = _write_100k(out, user_info, movie_info, u, m, rating_value,
                            ts, seed, verbose)
    elif fmt == "1m":
        files = _write_1m(out, user_info, movie_info, u, m, rating_value, ts,
                          verbose)
    else:
        files = _write_csv(out, movie_info, u, m, rating_value, ts, verbose)

    summary: Dict[str, object] = {
        "format": fmt,
        "out_dir": out,
        "files": files,
        "users": users,
        "movies": movies,
        "ratings": int(u.shape[0]),
        "users_with_ratings": int(np.count_nonzero(n_ratings)),
        "movies_with_ratings": int(np.count_nonzero(movie_counts)),
        "min_user_ratings": int(n_ratings.min()),
        "max_user_ratings": int(n_ratings.max()),
        "max_movie_ratings": int(movie_counts.max()),
        "mean_rating": round(mean_rating, 4),
        "tie_fraction": round(tie_fraction, 4),
        "seed": seed,
        "seconds": round(time.time() - started, 2),
    }
    _log(verbose, f"done in {summary['seconds']} s")
    if return_truth:
        summary["truth"] = LatentTruth(
            popularity_logit=pop, user_vec=lat["user_vec"],
            movie_vec=lat["movie_vec"], movie_cluster=lat["movie_cluster"],
            affinity_scale=AFFINITY_SCALE)
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data.synthetic",
        description="Write a synthetic MovieLens data set (ml-100k, ml-1m or "
                    "ml-latest csv layout) with long-tailed popularity and "
                    "activity, latent-factor preferences, genre clusters, "
                    "sessions with timestamp ties and sequential structure. "
                    "Deterministic per seed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--users", type=int, default=943,
                   help="number of users; each gets >= 1 rating (>= 20 when "
                        "ratings allow), ids 1..users")
    p.add_argument("--movies", type=int, default=1682,
                   help="number of movies in the movie file, ids 1..movies")
    p.add_argument("--ratings", type=int, default=100_000,
                   help="exact number of ratings; users <= ratings <= "
                        "users * movies")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="100k",
                   help="100k: u.data/u.item/u.user/...; 1m: ratings.dat/"
                        "movies.dat/users.dat; csv: ratings.csv/movies.csv "
                        "(ml-latest layout, half-star ratings)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (non-negative); same seed and sizes "
                        "give byte-identical files")
    p.add_argument("--out", required=True,
                   help="output directory (created if missing)")
    p.add_argument("--tie-prob", type=float, default=DEFAULT_TIE_PROB,
                   help="probability that a rating shares its timestamp with "
                        "the user's previous rating")
    p.add_argument("--quiet", action="store_true",
                   help="no progress messages on stderr")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = generate(args.out, args.users, args.movies, args.ratings,
                           args.fmt, args.seed, tie_prob=args.tie_prob,
                           verbose=False if args.quiet else None)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
