"""The example generator's logic: small pure functions, and the Beam transforms built on them.

Shapes of what flows through the pipeline:

* a rating line: ``(byte_offset, raw_line)`` from :class:`RatingLinesSource`;
* a rating event: :class:`RatingEvent`, a parsed, valid rating with its file position,
  which orders ties in a user's timeline as they stand in the file;
* a timeline: one user's kept events sorted by ``(timestamp, file position)``;
* an example: a ``dict`` of feature name to list of ``int``/``float``/``bytes`` values,
  serialized to a ``tf.train.Example`` by :func:`to_tf_example`.

Nothing here gathers the data set on one worker: ratings are grouped per user, splits are
a hash of (seed, user, position), and the temporal cutoff comes from a combiner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io import filebasedsource
from apache_beam.io.filesystem import CompressionTypes

from data import movielens

TRAIN = "train"
EVAL = "eval"
SPLITS = (TRAIN, EVAL)

SPLIT_RANDOM = "random"
SPLIT_TEMPORAL = "temporal"
SPLIT_LEAVE_LAST_OUT = "leave_last_out"
SPLIT_STRATEGIES = (SPLIT_RANDOM, SPLIT_TEMPORAL, SPLIT_LEAVE_LAST_OUT)

PAD_MOVIE_ID = 0
PAD_GENRE = b"UNK"

# How many bad lines of each reason the statistics quote.
BAD_LINE_SAMPLES = 5


@dataclasses.dataclass(frozen=True)
class SequenceParams:
    """The sequential tutorial's flags (its defaults)."""

    min_rating: Optional[float] = 2
    min_timeline_length: int = 3
    max_context_length: int = 10
    max_context_movie_genre_length: int = 10


class RatingEvent(NamedTuple):
    user_id: int
    movie_id: int
    rating: float
    timestamp: int
    position: int  # byte offset in the ratings file: file order for timestamp ties


class DroppedLine(NamedTuple):
    reason: str
    position: int
    text: str


# ---------------------------------------------------------------------------------------
# Reading: lines with their byte offsets, split across workers by byte range.


class RatingLinesSource(filebasedsource.FileBasedSource):
    """Yields ``(byte_offset, line_bytes)`` of one text file, splittable by byte ranges.

    Beam's ReadFromText drops positions; the offset is what keeps timestamp ties in file
    order once lines are spread over workers, and what locates a bad line.
    """

    def __init__(self, file_pattern: str):
        super().__init__(
            file_pattern, splittable=True, compression_type=CompressionTypes.UNCOMPRESSED)

    def read_records(self, file_name, offset_range_tracker):
        start = offset_range_tracker.start_position()
        with self.open_file(file_name) as handle:
            if start > 0:
                # A line belongs to the range it starts in: skip the tail of the line
                # that began before this range.
                handle.seek(start - 1)
                position = start - 1 + len(handle.readline())
            else:
                position = 0
            while offset_range_tracker.try_claim(position):
                line = handle.readline()
                if not line:
                    return
                yield position, line.rstrip(b"\n")
                position += len(line)


def parse_rating(
    layout_name: str, movies: Mapping[int, movielens.Movie], position: int, raw: bytes,
):
    """A RatingEvent, a DroppedLine (with its reason), or None for the CSV header."""
    if position == 0 and movielens.is_header_line(layout_name, raw):
        return None
    try:
        rating = movielens.parse_rating_line(layout_name, raw)
    except movielens.MalformedRecord as error:
        return DroppedLine(error.reason, position, raw.decode("utf-8", "replace")[:200])
    if rating.movie_id not in movies:
        return DroppedLine(
            movielens.UNKNOWN_MOVIE, position,
            f"movie {rating.movie_id} is not in the movie file")
    return RatingEvent(
        rating.user_id, rating.movie_id, rating.rating, rating.timestamp, position)


class ParseRatingsFn(beam.DoFn):
    """Parses rating lines; bad ones go to the ``dropped`` output with their reason.

    The movie catalogue is small: each worker loads it once in ``setup`` from the data
    directory rather than receiving it inside the pipeline graph.
    """

    DROPPED = "dropped"

    def __init__(self, layout: movielens.Layout):
        self._layout = layout
        self._movies: Dict[int, movielens.Movie] = {}

    def setup(self):
        self._movies = movielens.load_movies(self._layout)

    def process(self, element):
        position, raw = element
        parsed = parse_rating(self._layout.name, self._movies, position, raw)
        if isinstance(parsed, DroppedLine):
            yield beam.pvalue.TaggedOutput(self.DROPPED, parsed)
        elif parsed is not None:
            yield parsed


# ---------------------------------------------------------------------------------------
# Splits: a deterministic function of (seed, key), never a global shuffle.


def unit_hash(seed: int, *key) -> float:
    """A uniform number in [0, 1) determined by ``seed`` and ``key``."""
    text = ":".join(str(part) for part in (seed,) + key).encode()
    return struct.unpack("<Q", hashlib.blake2b(text, digest_size=8).digest())[0] / 2.0**64


def random_split(seed: int, train_fraction: float, *key) -> str:
    return TRAIN if unit_hash(seed, *key) < train_fraction else EVAL


def temporal_cutoff(quantiles: Sequence[int], train_fraction: float) -> int:
    """The timestamp at ``train_fraction`` of ApproximateQuantiles' boundaries."""
    return quantiles[round(train_fraction * (len(quantiles) - 1))]


# ---------------------------------------------------------------------------------------
# Timelines and sequence examples (the sequential tutorial's reference algorithm).


def sort_timeline(events: Iterable[RatingEvent]) -> List[RatingEvent]:
    """A user's events oldest first; equal timestamps keep their order in the file."""
    return sorted(events, key=lambda event: (event.timestamp, event.position))


def _pad(values: list, length: int, pad) -> list:
    return values[:length] + [pad] * (length - len(values))


def sequence_example(
    timeline: Sequence[RatingEvent],
    label_index: int,
    movies: Mapping[int, movielens.Movie],
    params: SequenceParams,
) -> dict:
    """The example whose label is ``timeline[label_index]`` (label_index >= 1).

    Context: up to ``max_context_length`` previous movies, oldest first, padded at the end
    with movie id 0 (rating 0.0, year 0). Genres: the context movies' genres in order,
    padded with "UNK" or truncated to ``max_context_movie_genre_length``.
    """
    length = params.max_context_length
    context = timeline[max(0, label_index - length):label_index]
    genres = [genre.encode() for event in context for genre in movies[event.movie_id].genres]
    label = timeline[label_index]
    return {
        "user_id": [label.user_id],
        "timestamp": [label.timestamp],
        "context_movie_id": _pad([e.movie_id for e in context], length, PAD_MOVIE_ID),
        "context_movie_rating": _pad([e.rating for e in context], length, 0.0),
        "context_movie_year": _pad([movies[e.movie_id].year for e in context], length, 0),
        "context_movie_genre": _pad(genres, params.max_context_movie_genre_length, PAD_GENRE),
        "label_movie_id": [label.movie_id],
    }


def sequence_split(
    strategy: str, seed: int, train_fraction: float, timeline: Sequence[RatingEvent],
    label_index: int, cutoff: Optional[int],
) -> str:
    """Random: a hash of (user, label position); temporal: the cutoff; else last to eval."""
    label = timeline[label_index]
    if strategy == SPLIT_RANDOM:
        return random_split(seed, train_fraction, "sequence", label.user_id, label_index)
    if strategy == SPLIT_TEMPORAL:
        return TRAIN if label.timestamp <= cutoff else EVAL
    return EVAL if label_index == len(timeline) - 1 else TRAIN


# ---------------------------------------------------------------------------------------
# Rating examples (retrieval, ranking and multitask tutorials).


def rating_example(
    event: RatingEvent, movie: movielens.Movie, user: Optional[movielens.User],
    with_user_features: bool,
) -> dict:
    """One rating with its movie's features and, where the layout has them, the user's."""
    features = {
        "user_id": [event.user_id],
        "movie_id": [event.movie_id],
        "movie_title": [movie.title.encode()],
        "movie_genres": [genre.encode() for genre in movie.genres],
        "movie_year": [movie.year],
        "user_rating": [event.rating],
        "timestamp": [event.timestamp],
    }
    if with_user_features:
        # Users missing from the user file get empty features (counted in the statistics).
        features.update({
            "user_age": [user.age if user else 0],
            "user_gender": [(user.gender if user else "").encode()],
            "user_occupation": [(user.occupation if user else "").encode()],
            "user_zip_code": [(user.zip_code if user else "").encode()],
        })
    return features


def rating_split(strategy, seed, train_fraction, event: RatingEvent, cutoff, last_event) -> str:
    """Random: a hash of (user, file position); temporal: the cutoff; else the last to eval."""
    if strategy == SPLIT_RANDOM:
        return random_split(seed, train_fraction, "rating", event.user_id, event.position)
    if strategy == SPLIT_TEMPORAL:
        return TRAIN if event.timestamp <= cutoff else EVAL
    return EVAL if event == last_event else TRAIN


def is_kept(params: SequenceParams, event: RatingEvent) -> bool:
    """Whether a rating enters the timelines (min_rating None keeps all)."""
    return params.min_rating is None or event.rating >= params.min_rating


@dataclasses.dataclass(frozen=True)
class SplitParams:
    strategy: str = SPLIT_RANDOM
    seed: int = 0
    sequence_train_fraction: float = 0.9
    rating_train_fraction: float = 0.8


class UserExamplesFn(beam.DoFn):
    """(user id, all the user's valid rating events) -> examples of both kinds.

    Main output: ``(split, serialized sequence example)``, one per label of the user's
    kept timeline. ``rating`` output: ``(split, serialized rating example)``, one per valid
    rating. ``stats`` output: ``(name, count)`` pairs, summed into the statistics file.
    ``user_counts`` output: ``(user id, valid ratings)``, for the user vocabulary.

    One grouping per user serves both kinds, so the data set is shuffled once.
    """

    RATING = "rating"
    STATS = "stats"
    USER_COUNTS = "user_counts"

    def __init__(self, layout: movielens.Layout, params: SequenceParams, split: SplitParams):
        self._layout = layout
        self._params = params
        self._split = split
        self._movies: Dict[int, movielens.Movie] = {}
        self._users: Dict[int, movielens.User] = {}

    def setup(self):
        self._movies = movielens.load_movies(self._layout)
        self._users = movielens.load_users(self._layout)

    def process(self, element, cutoffs=None):
        user_id, events = element
        all_events = sort_timeline(events)
        cutoffs = cutoffs or {}
        yield beam.pvalue.TaggedOutput(self.USER_COUNTS, (user_id, len(all_events)))
        yield from self._rating_examples(user_id, all_events, cutoffs.get("rating"))
        timeline = [event for event in all_events if is_kept(self._params, event)]
        if not timeline:
            return
        yield beam.pvalue.TaggedOutput(self.STATS, ("users_with_kept_ratings", 1))
        if len(timeline) < self._params.min_timeline_length:
            yield beam.pvalue.TaggedOutput(self.STATS, ("users_skipped_short", 1))
            return
        counts = {TRAIN: 0, EVAL: 0}
        for label_index in range(1, len(timeline)):
            split = sequence_split(
                self._split.strategy, self._split.seed, self._split.sequence_train_fraction,
                timeline, label_index, cutoffs.get("sequence"))
            counts[split] += 1
            yield split, to_tf_example(
                sequence_example(timeline, label_index, self._movies, self._params))
        for split, count in counts.items():
            yield beam.pvalue.TaggedOutput(self.STATS, (f"sequence_examples_{split}", count))

    def _rating_examples(self, user_id, timeline, cutoff):
        user = self._users.get(user_id)
        with_user_features = self._layout.users_path is not None
        if with_user_features and user is None:
            yield beam.pvalue.TaggedOutput(self.STATS, ("users_without_profile", 1))
        counts = {TRAIN: 0, EVAL: 0}
        for event in timeline:
            split = rating_split(
                self._split.strategy, self._split.seed, self._split.rating_train_fraction,
                event, cutoff, timeline[-1])
            counts[split] += 1
            example = rating_example(event, self._movies[event.movie_id], user, with_user_features)
            yield beam.pvalue.TaggedOutput(self.RATING, (split, to_tf_example(example)))
        for split, count in counts.items():
            yield beam.pvalue.TaggedOutput(self.STATS, (f"rating_examples_{split}", count))


# ---------------------------------------------------------------------------------------
# Serialization.


def to_tf_example(features: Mapping[str, list]) -> bytes:
    """Serializes a feature dict; the value type of each list picks the tf.train list."""
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel

    example = example_pb2.Example()
    feature_map = example.features.feature
    for name, values in features.items():
        feature = feature_map[name]
        if values and isinstance(values[0], bytes):
            feature.bytes_list.value.extend(values)
        elif values and isinstance(values[0], float):
            feature.float_list.value.extend(values)
        elif values:
            feature.int64_list.value.extend(values)
        else:
            # An empty list (a movie with no genres) still needs a type for the schema.
            feature.bytes_list.value.extend([])
    return example.SerializeToString()


# ---------------------------------------------------------------------------------------
# Vocabularies and statistics.


def movie_vocabulary_lines(
    movies: Mapping[int, movielens.Movie], kept_counts: Mapping[int, int],
) -> List[str]:
    """``movie_id \\t count \\t title \\t year \\t genres`` lines, most kept ratings first.

    Movies never rated (after filtering) follow with count 0, so the vocabulary covers the
    whole catalogue the retrieval index serves.
    """
    order = sorted(movies, key=lambda movie_id: (-kept_counts.get(movie_id, 0), movie_id))
    return [
        "\t".join((str(movie_id), str(kept_counts.get(movie_id, 0)), movies[movie_id].title,
                   str(movies[movie_id].year), "|".join(movies[movie_id].genres)))
        for movie_id in order
    ]


def feature_vocabularies(movies: Mapping[int, movielens.Movie]) -> Tuple[List[str], List[int]]:
    """Genres and years, each by number of movies (then by value), "UNK" and 0 first."""
    genre_counts: Dict[str, int] = {}
    year_counts: Dict[int, int] = {}
    for movie in movies.values():
        year_counts[movie.year] = year_counts.get(movie.year, 0) + 1
        for genre in movie.genres:
            genre_counts[genre] = genre_counts.get(genre, 0) + 1
    genres = [PAD_GENRE.decode()] + sorted(
        (g for g in genre_counts if g != PAD_GENRE.decode()), key=lambda g: (-genre_counts[g], g))
    years = [0] + sorted((y for y in year_counts if y != 0), key=lambda y: (-year_counts[y], y))
    return genres, years


def user_vocabulary_lines(user_counts: Iterable[Tuple[int, int]]) -> List[str]:
    """``user_id \\t ratings`` lines, most active first."""
    return [f"{user}\t{count}" for user, count in sorted(user_counts, key=lambda uc: (-uc[1], uc[0]))]


def merge_statistics(counts: Iterable[Tuple[str, int]], samples: Iterable[DroppedLine]) -> str:
    """The statistics JSON written by the pipeline (before line numbers are resolved)."""
    totals: Dict[str, int] = dict(counts)
    return json.dumps({
        "counts": dict(sorted(totals.items())),
        "bad_line_samples": [sample._asdict() for sample in sorted(
            samples, key=lambda s: (s.reason, s.position))],
    })
