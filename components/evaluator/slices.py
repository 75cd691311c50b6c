"""The evaluation slices: which users and movies each figure is broken down by.

TensorFlow-free. The Trainer's export computes the slice features from a
:class:`SliceSpec` (``transform_features``: ``user_activity``, ``movie_popularity``), and
the Evaluator slices on them; both read the one :class:`SliceSpec` of the pipeline's
``EvaluationConfig``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from components import typed_values


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """Bucket boundaries of the slice features.

    user_activity_boundaries: ascending rating counts; bucket i holds users with at most
      boundaries[i] ratings (and more than boundaries[i-1]); the last, more than all.
      (20, 100) gives <=20, 21-100, >100.
    movie_popularity_quantiles: ascending fractions of the catalogue by rank (most rated
      first). (0.1, 0.5) gives head = the 10% most-rated movies, torso = the next 40%,
      tail = the rest.
    """

    user_activity_boundaries: Tuple[int, ...] = (20, 100)
    movie_popularity_quantiles: Tuple[float, ...] = (0.1, 0.5)

    def __post_init__(self):
        boundaries = list(self.user_activity_boundaries)
        if boundaries != sorted(set(boundaries)):
            raise ValueError("user_activity_boundaries must be strictly ascending")
        quantiles = list(self.movie_popularity_quantiles)
        if quantiles != sorted(set(quantiles)) or not all(0 < q < 1 for q in quantiles):
            raise ValueError("movie_popularity_quantiles must ascend strictly within (0, 1)")

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]]) -> "SliceSpec":
        return typed_values.build(cls, values, "slice setting")

    def to_dict(self):
        return typed_values.to_plain(self)


def activity_bucket_names(boundaries: Sequence[int]) -> Tuple[str, ...]:
    """(20, 100) -> ("<=20", "21-100", ">100")."""
    if not boundaries:
        return ("all",)
    names = [f"<={boundaries[0]}"]
    names += [f"{low + 1}-{high}" for low, high in zip(boundaries, boundaries[1:])]
    return tuple(names + [f">{boundaries[-1]}"])


def popularity_bucket_names(quantiles: Sequence[float]) -> Tuple[str, ...]:
    """(0.1, 0.5) -> ("head", "torso", "tail"); otherwise "top 0-10%"-style names."""
    if len(quantiles) == 2:
        return ("head", "torso", "tail")
    edges = [0.0, *quantiles, 1.0]
    return tuple(f"top {100 * low:g}-{100 * high:g}%" for low, high in zip(edges, edges[1:]))


def user_activity_buckets(counts: np.ndarray, boundaries: Sequence[int]) -> np.ndarray:
    """The bucket name of each user's rating count."""
    names = np.asarray(activity_bucket_names(boundaries), object)
    return names[np.searchsorted(np.asarray(boundaries, np.int64), counts, side="left")]


def movie_popularity_buckets(num_movies: int, quantiles: Sequence[float]) -> np.ndarray:
    """The bucket name of each vocabulary row (rank 0 = most rated)."""
    names = np.asarray(popularity_bucket_names(quantiles), object)
    fractions = np.arange(num_movies) / max(num_movies, 1)
    return names[np.searchsorted(np.asarray(quantiles), fractions, side="right")]
