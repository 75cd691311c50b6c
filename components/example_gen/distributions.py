"""How the kept ratings spread over days, users and movies: distributions.json.

Computed inside the example generator's Beam pipeline, streamed: each user's element
(after the duplicate policy, :class:`~components.example_gen.transforms.UserExamplesFn`)
gives a small dict of counts (:func:`user_counts`: its ratings per day, per movie, and
one for the user's activity bucket); Beam sums the dicts (``summary.SummaryFn``, combined
per bundle before the global merge), so only day-, catalogue- and bucket-sized dicts ever
meet, never the ratings themselves. :func:`distributions_json` turns the sum into the file
written beside statistics.json (``contract.DISTRIBUTIONS_FILE``):

  {"ratings": N, "users": U, "movies": M,      (kept ratings; users and movies with any)
   "ratings_per_day": [[day start, Unix seconds, ratings], ...],        (days with any)
   "users_by_ratings": [[low, high, users], ...],       (power-of-two bins: 1, 2, 3-4,
   "movies_by_ratings": [[low, high, movies], ...]}      5-8, ...: the long tails)

TensorFlow-free; module-level functions only (Beam workers import this module).
"""

from __future__ import annotations

import json
from typing import Dict, List, Mapping, Tuple

import numpy as np

DAY_SECONDS = 86_400
_DAY, _MOVIE, _USER_BIN = "day", "movie", "user_bin"


def log2_bin(count: int) -> int:
    """The power-of-two bin of a positive count: 0 for 1, 1 for 2, 2 for 3-4, 3 for 5-8."""
    return int(count - 1).bit_length()


def bin_range(index: int) -> Tuple[int, int]:
    """The counts (low, high) that bin ``index`` of :func:`log2_bin` holds."""
    return (1, 1) if index == 0 else ((1 << (index - 1)) + 1, 1 << index)


def user_counts(movie: np.ndarray, timestamp: np.ndarray) -> Dict[Tuple, int]:
    """One user's kept ratings as summable counts: per day, per movie and the user's bin."""
    counts: Dict[Tuple, int] = {}
    for kind, values in ((_DAY, timestamp // DAY_SECONDS), (_MOVIE, movie)):
        keys, numbers = np.unique(values, return_counts=True)
        counts.update(((kind, int(k)), int(n)) for k, n in zip(keys, numbers))
    if len(movie):
        counts[(_USER_BIN, log2_bin(len(movie)))] = 1
    return counts


def _bins(counts_by_bin: Mapping[int, int]) -> List[List[int]]:
    """[[low, high, how many], ...] for every bin up to the largest (empty ones too)."""
    top = max(counts_by_bin, default=-1)
    return [[*bin_range(index), counts_by_bin.get(index, 0)] for index in range(top + 1)]


def distributions(summed: Mapping[Tuple, int]) -> Dict:
    """distributions.json's content from the sum of every user's :func:`user_counts`."""
    days: Dict[int, int] = {}
    movie_bins: Dict[int, int] = {}
    user_bins: Dict[int, int] = {}
    movies = 0
    for (kind, key), count in summed.items():
        if kind == _DAY:
            days[key] = count
        elif kind == _MOVIE:
            movies += 1
            movie_bins[log2_bin(count)] = movie_bins.get(log2_bin(count), 0) + 1
        elif kind == _USER_BIN:
            user_bins[key] = count
    return {
        "ratings": sum(days.values()),
        "users": sum(user_bins.values()),
        "movies": movies,
        "ratings_per_day": [[day * DAY_SECONDS, days[day]] for day in sorted(days)],
        "users_by_ratings": _bins(user_bins),
        "movies_by_ratings": _bins(movie_bins),
    }


def distributions_json(summed: Mapping[Tuple, int]) -> str:
    return json.dumps(distributions(summed))
