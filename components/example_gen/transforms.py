"""The example generator's logic after parsing: timelines, examples, splits, vocabularies.

What flows through the pipeline, and why it is shaped so:

* **blocks** of the ratings file become per-user **events** in parsing.py (numpy arrays,
  :class:`Events`, with every dropped line counted by reason);
* per user, after one GroupByKey: the user's events from every block, merged and sorted
  by ``(timestamp, offset)``, with repeated ratings of a movie reduced to the latest
  (:func:`latest_rating_per_movie`); :func:`sequence_columns` and :func:`rating_columns`
  build every example of the user at once as Arrow columns, which tfx-bsl encodes to
  tf.Examples in C++; :func:`frame_tfrecords` frames them into one TFRecord blob.

So Beam moves a few elements per user and per block, not per rating: that is what makes
the DirectRunner fast, and nothing here gathers the data set on one worker. Splits are a
hash of (seed, user, position), not a global shuffle; the temporal cutoff comes from a
combiner.

The statistics add up by construction: every rating line is read by exactly one block
(``lines_read``) and either dropped there with a reason, or reaches its user, where it is
either dropped as ``duplicate_rating`` or counted in ``kept``, which is exactly the
number of rating examples written.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from components import contract
from components.example_gen import config as config_lib
from components.example_gen import distributions, summary
from components.example_gen.parsing import PAD_MOVIE_ID, DroppedLine, Events, MovieCatalogue
from components.example_gen.records import encode_examples, frame_tfrecords
from data import movielens

TRAIN, EVAL, SPLITS = contract.TRAIN, contract.EVAL, contract.SPLITS
SPLIT_RANDOM, SPLIT_TEMPORAL = config_lib.SPLIT_RANDOM, config_lib.SPLIT_TEMPORAL
SEQUENCE, RATING, KINDS = contract.SEQUENCE, contract.RATING, contract.EXAMPLE_KINDS


def is_kept(params: config_lib.ExampleGenConfig, rating: np.ndarray) -> np.ndarray:
    """Which ratings enter the timelines (min_rating None keeps all)."""
    if params.min_rating is None:
        return np.ones(len(rating), dtype=bool)
    return rating >= params.min_rating


def count_values(values: np.ndarray) -> Dict[int, int]:
    ids, counts = np.unique(values, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


# ---------------------------------------------------------------------------------------
# Splits: a deterministic function of (seed, key), never a global shuffle.

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective, well-mixed hash of uint64 arrays."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * _MIX1
        x = x ^ (x >> np.uint64(27))
        x = x * _MIX2
        return x ^ (x >> np.uint64(31))


def unit_hash(seed: int, stream: int, first_key, second_key) -> np.ndarray:
    """Uniform numbers in [0, 1), one per (first_key, second_key), fixed by seed and stream."""
    first = np.asarray(first_key, dtype=np.int64).astype(np.uint64)
    second = np.asarray(second_key, dtype=np.int64).astype(np.uint64)
    base = _mix64(np.array([seed * 4 + stream], dtype=np.int64).astype(np.uint64))
    hashed = _mix64(_mix64(base ^ first) ^ second)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def temporal_cutoff(quantiles: Sequence[int], train_fraction: float) -> int:
    """The timestamp at ``train_fraction`` of ApproximateQuantiles' boundaries."""
    return quantiles[round(train_fraction * (len(quantiles) - 1))]


def is_eval(
    strategy: str, seed: int, train_fraction: float, kind: str, user_id: int,
    keys: np.ndarray, timestamps: np.ndarray, cutoff: Optional[int],
) -> np.ndarray:
    """Which examples of one user go to eval.

    random: a hash of (seed, kind, user, key) against the train fraction, where key is
    the label's position in the timeline (sequence) or the movie id (rating), so a split
    stays put when the data grows. temporal: timestamp after the cutoff.
    leave_last_out: the last example of the user's timeline.
    """
    if strategy == SPLIT_RANDOM:
        stream = KINDS.index(kind)
        return unit_hash(seed, stream, np.full(len(keys), user_id), keys) >= train_fraction
    if strategy == SPLIT_TEMPORAL:
        return timestamps > cutoff
    last = np.zeros(len(keys), dtype=bool)
    last[-1:] = True
    return last


# ---------------------------------------------------------------------------------------
# Timelines and examples, built per user as Arrow columns.


def sort_timeline(events: Events) -> Events:
    """Oldest first; equal timestamps keep their order in the file."""
    return events.take(np.lexsort((events.position, events.timestamp)))


def latest_rating_per_movie(timeline: Events) -> Tuple[Events, Events]:
    """(kept, duplicates) of one user's sorted timeline: the latest rating of each movie
    (by timestamp, then by place in the file) is kept, the earlier ones are duplicates.

    A movie rated twice would otherwise give two labels for one pair, and a sequence
    example whose label movie is also in its own context. The latest rating is the
    user's current opinion, as a re-rating on MovieLens replaces the old one.
    """
    reversed_first = np.unique(timeline.movie[::-1], return_index=True)[1]
    keep = np.zeros(len(timeline), dtype=bool)
    keep[len(timeline) - 1 - reversed_first] = True
    return timeline.take(keep), timeline.take(~keep)


def _fixed_lists(values: np.ndarray, arrow_type) -> pa.Array:
    """(rows, width) numpy -> an Arrow list array of ``width`` values per row."""
    rows, width = values.shape
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=arrow_type))


def _single(values: np.ndarray, arrow_type) -> pa.Array:
    return _fixed_lists(np.asarray(values).reshape(-1, 1), arrow_type)


def sequence_columns(
    user_id: int, timeline: Events, catalogue: MovieCatalogue, params: config_lib.ExampleGenConfig,
) -> Dict[str, pa.Array]:
    """One row per label ``timeline[i]``, i >= 1 (the reference algorithm).

    Context: up to ``max_context_length`` previous movies, oldest first, padded at the end
    with movie id 0 (rating 0.0, year 0). Genres: the context movies' genres in order,
    padded with "UNK" or truncated to ``max_context_movie_genre_length``.
    """
    n, length = len(timeline), params.max_context_length
    labels = np.arange(1, n)
    start = np.maximum(labels - length, 0)
    offset = np.arange(length)[None, :]
    valid = offset < (labels - start)[:, None]
    source = np.minimum(start[:, None] + offset, n - 1)
    context = np.where(valid, timeline.movie[source], PAD_MOVIE_ID)
    ratings = np.where(valid, timeline.rating[source], np.float32(0.0)).astype(np.float32)
    rows = np.where(valid, catalogue.rows(timeline.movie)[source], catalogue.pad_row)
    years = catalogue.year[rows]
    # Genres of the context movies in order: gather each movie's genre row, then move the
    # real entries to the front of each example (a stable sort on "is padding").
    genre_rows = catalogue.genre_index[rows]
    genre_rows = genre_rows.reshape(len(labels), -1)
    order = np.argsort(genre_rows < 0, axis=1, kind="stable")
    genre_rows = np.take_along_axis(genre_rows, order, axis=1)
    width = params.max_context_movie_genre_length
    if genre_rows.shape[1] < width:
        genre_rows = np.pad(genre_rows, ((0, 0), (0, width - genre_rows.shape[1])),
                            constant_values=-1)
    genre_rows = genre_rows[:, :width]
    genre_rows = np.where(genre_rows < 0, catalogue.pad_genre_index, genre_rows)
    return {
        "user_id": _single(np.full(len(labels), user_id), pa.int64()),
        "timestamp": _single(timeline.timestamp[1:], pa.int64()),
        "context_movie_id": _fixed_lists(context, pa.int64()),
        "context_movie_rating": _fixed_lists(ratings, pa.float32()),
        "context_movie_year": _fixed_lists(years, pa.int64()),
        "context_movie_genre": _fixed_lists(catalogue.genre_names[genre_rows], pa.binary()),
        "label_movie_id": _single(timeline.movie[1:], pa.int64()),
    }


def rating_columns(
    user_id: int, events: Events, catalogue: MovieCatalogue,
    user: Optional[movielens.User], with_user_features: bool,
) -> Dict[str, pa.Array]:
    """One row per rating, with its movie's features and, where the layout has them,
    the user's (users missing from the user file get empty features)."""
    n = len(events)
    rows = catalogue.rows(events.movie)
    counts = catalogue.genre_count[rows]
    genre_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    genre_values = catalogue.genre_index[rows]
    genre_values = genre_values[genre_values >= 0]
    columns = {
        "user_id": _single(np.full(n, user_id), pa.int64()),
        "movie_id": _single(events.movie, pa.int64()),
        "movie_title": _single(catalogue.title[rows], pa.binary()),
        "movie_genres": pa.ListArray.from_arrays(
            genre_offsets, pa.array(catalogue.genre_names[genre_values], type=pa.binary())),
        "movie_year": _single(catalogue.year[rows], pa.int64()),
        "user_rating": _single(events.rating, pa.float32()),
        "timestamp": _single(events.timestamp, pa.int64()),
    }
    if with_user_features:
        columns.update({
            "user_age": _single(np.full(n, user.age if user else 0), pa.int64()),
            "user_gender": _single(np.full(n, (user.gender if user else "").encode(),
                                           dtype=object), pa.binary()),
            "user_occupation": _single(np.full(n, (user.occupation if user else "").encode(),
                                               dtype=object), pa.binary()),
            "user_zip_code": _single(np.full(n, (user.zip_code if user else "").encode(),
                                             dtype=object), pa.binary()),
        })
    return columns


class UserExamplesFn(beam.DoFn):
    """(user id, the user's Events from every block) -> framed TFRecord blobs.

    Outputs ``sequence_train``, ``sequence_eval``, ``rating_train`` and ``rating_eval``:
    bytes holding whole TFRecords of one user; ``summary``: :mod:`summary`'s
    ``(tag, value)`` pairs: ``COUNTS``, a dict of counts per user (``kept``: ratings after
    the duplicate policy, one rating example each; ``ratings_below_min_rating``;
    ``dropped_duplicate_rating``; examples per kind and split); ``DROPPED``, a
    DroppedLine per duplicate; ``MOVIE_COUNTS``, movie id -> the user's ratings in the
    timelines, for the movie vocabulary; ``USER_COUNTS``, (user id, kept ratings), for
    the user vocabulary; ``DISTRIBUTION``, the user's kept ratings per day and movie, and
    activity bin (components/example_gen/distributions.py). The main output is unused.

    One grouping per user serves both kinds of examples, so the data is shuffled once.
    """

    SUMMARY = "summary"
    OUTPUTS = tuple(f"{kind}_{split}" for kind in KINDS for split in SPLITS)

    def __init__(self, layout: movielens.Layout, params: config_lib.ExampleGenConfig):
        self._layout = layout
        self._params = params
        self._catalogue: Optional[MovieCatalogue] = None
        self._users: Dict[int, movielens.User] = {}

    def setup(self):
        self._catalogue = MovieCatalogue(movielens.load_movies(self._layout))
        self._users = movielens.load_users(self._layout)

    def _emit(self, kind, columns, eval_mask, stats):
        records = encode_examples(columns)
        for split, mask in ((TRAIN, ~eval_mask), (EVAL, eval_mask)):
            chosen = [record for record, take in zip(records, mask.tolist()) if take]
            stats[f"{kind}_examples_{split}"] = len(chosen)
            if chosen:
                yield beam.pvalue.TaggedOutput(f"{kind}_{split}", frame_tfrecords(chosen))

    def process(self, element, cutoffs=None):
        user_id, parts = element
        cutoffs = cutoffs or {}
        events, duplicates = latest_rating_per_movie(sort_timeline(Events.concatenate(parts)))
        for movie, position in zip(duplicates.movie.tolist(), duplicates.position.tolist()):
            yield beam.pvalue.TaggedOutput(self.SUMMARY, (summary.DROPPED, DroppedLine(
                movielens.DUPLICATE_RATING, position,
                f"user {user_id} rated movie {movie} again later (the latest rating is kept)")))
        in_timeline = is_kept(self._params, events.rating)
        stats: Dict[str, int] = {
            "kept": len(events), "ratings_below_min_rating": int((~in_timeline).sum()),
            f"dropped_{movielens.DUPLICATE_RATING}": len(duplicates)}
        yield beam.pvalue.TaggedOutput(self.SUMMARY, (summary.USER_COUNTS, (user_id, len(events))))
        yield beam.pvalue.TaggedOutput(
            self.SUMMARY, (summary.MOVIE_COUNTS, count_values(events.movie[in_timeline])))
        yield beam.pvalue.TaggedOutput(self.SUMMARY, (
            summary.DISTRIBUTION, distributions.user_counts(events.movie, events.timestamp)))

        user = self._users.get(user_id)
        with_user_features = self._layout.users_path is not None
        if with_user_features and user is None:
            stats["users_without_profile"] = 1
        split = self._params
        eval_mask = is_eval(split.split_strategy_of(RATING), split.seed, split.rating_train_fraction, RATING,
                            user_id, events.movie, events.timestamp, cutoffs.get(RATING))
        yield from self._emit(
            RATING, rating_columns(user_id, events, self._catalogue, user, with_user_features),
            eval_mask, stats)

        timeline = events.take(in_timeline)
        if len(timeline):
            stats["users_with_kept_ratings"] = 1
            if len(timeline) < self._params.min_timeline_length:
                stats["users_skipped_short"] = 1
            else:
                labels = np.arange(1, len(timeline))
                eval_mask = is_eval(
                    split.split_strategy_of(SEQUENCE), split.seed, split.train_fraction, SEQUENCE,
                    user_id, labels, timeline.timestamp[1:], cutoffs.get(SEQUENCE))
                yield from self._emit(
                    SEQUENCE,
                    sequence_columns(user_id, timeline, self._catalogue, self._params),
                    eval_mask, stats)
        yield beam.pvalue.TaggedOutput(self.SUMMARY, (summary.COUNTS, stats))


# ---------------------------------------------------------------------------------------
# Temporal cutoffs and statistics.


def event_timestamps(
    user_events: Tuple[int, Events], params: config_lib.ExampleGenConfig, kept_only: bool,
) -> np.ndarray:
    """The timestamps of one (user, Events) element, of kept ratings only if asked."""
    events = user_events[1]
    if kept_only:
        return events.timestamp[is_kept(params, events.rating)]
    return events.timestamp


def cutoff_entry(quantiles: Sequence[int], kind: str, train_fraction: float) -> Tuple[str, int]:
    return kind, temporal_cutoff(quantiles, train_fraction)

