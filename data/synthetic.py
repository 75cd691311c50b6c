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
models exploit (long-tailed popularity and activity, latent tastes correlated
with genres and demographics, sessions with timestamp ties, predictable
timelines); data/synthetic_sampling.py explains how.  The code is split by
concern:

* this module: the public entry point, :func:`generate` and the CLI;
* data/synthetic_catalogue.py: vocabularies, movie and user catalogues;
* data/synthetic_sampling.py: the latent model (:class:`LatentTruth`) and the
  sampling of ratings, timestamps and rating values;
* data/synthetic_writers.py: the files of each layout.

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
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence, Union

import numpy as np

from data.synthetic_catalogue import (AGE_CODES_1M, GENRES_1M, GENRES_100K,
                                      GENRES_CSV, NO_GENRES_CSV,
                                      OCCUPATIONS_1M, OCCUPATIONS_100K,
                                      build_movies, build_users, log_progress)
from data.synthetic_sampling import (ACTIVITY_SHAPE, AFFINITY_SCALE,
                                     DEFAULT_TIE_PROB, LATENT_DIM,
                                     MIN_RATINGS_PER_USER, POPULARITY_SIGMA,
                                     RATING_FREQ_HALF, RATING_FREQ_STARS,
                                     LatentTruth, allocate, draw_latent,
                                     quantize, sample_ratings)
from data.synthetic_writers import write_1m, write_100k, write_csv

# The public names, as before the split: the vocabularies and model constants
# of the generator's modules are importable from here too.
__all__ = [
    "FORMATS", "generate", "main", "LatentTruth",
    "AGE_CODES_1M", "GENRES_1M", "GENRES_100K", "GENRES_CSV", "NO_GENRES_CSV",
    "OCCUPATIONS_1M", "OCCUPATIONS_100K",
    "ACTIVITY_SHAPE", "AFFINITY_SCALE", "DEFAULT_TIE_PROB", "LATENT_DIM",
    "MIN_RATINGS_PER_USER", "POPULARITY_SIGMA",
]

FORMATS = ("100k", "1m", "csv")


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

    user_info = build_users(fmt, users, seed)
    lat = draw_latent(fmt, users, movies, seed, user_info)
    movie_info = build_movies(fmt, movies, seed, lat["movie_cluster"],
                              lat["cluster_genre_prob"])
    lo = min(MIN_RATINGS_PER_USER, movies, ratings // users)
    n_ratings = allocate(ratings, lat["activity"] + 1e-9, lo, movies)
    log_progress(verbose, f"{fmt}: {users} users x {movies} movies, "
                          f"{ratings} ratings, seed {seed}")

    u, m, ts, score, pop = sample_ratings(fmt, users, movies, seed, lat,
                                          n_ratings, movie_info.year,
                                          tie_prob, verbose)
    if fmt == "csv":
        level = quantize(score, RATING_FREQ_HALF)
        rating_value = level + 1                      # half stars, 1..10
        mean_rating = float(rating_value.mean()) / 2.0
    else:
        level = quantize(score, RATING_FREQ_STARS)
        rating_value = level + 1                      # stars, 1..5
        mean_rating = float(rating_value.mean())
    del score, level

    same_user = u[1:] == u[:-1]
    tie_fraction = float((ts[1:] == ts[:-1])[same_user].mean()) \
        if same_user.any() else 0.0
    movie_counts = np.bincount(m, minlength=movies)

    log_progress(verbose, "writing files")
    if fmt == "100k":
        files = write_100k(out, user_info, movie_info, u, m, rating_value,
                           ts, seed, verbose)
    elif fmt == "1m":
        files = write_1m(out, user_info, movie_info, u, m, rating_value, ts,
                         verbose)
    else:
        files = write_csv(out, movie_info, u, m, rating_value, ts, verbose)

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
    log_progress(verbose, f"done in {summary['seconds']} s")
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
