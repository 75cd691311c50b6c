"""The example generator's logic: small pure functions, and the Beam pieces built on them.

What flows through the pipeline, and why it is shaped so:

* a **block**: ``(offset of its first line, bytes)``, the lines that start inside one
  fixed-size byte range of the ratings file (:class:`RatingBlocksSource`). Workers read
  blocks in parallel; byte offsets keep timestamp ties in file order and locate bad lines.
* **events**: one user's ratings from one block, as numpy arrays (:class:`Events`).
  :func:`parse_block` parses a whole block with numpy when it is clean, and line by line
  (with a reason for each dropped line) when it is not.
* per user, after one GroupByKey: the user's events from every block, merged and sorted
  by ``(timestamp, offset)``; :func:`sequence_columns` and :func:`rating_columns` build
  every example of the user at once as Arrow columns, which tfx-bsl encodes to
  tf.Examples in C++; :func:`frame_tfrecords` frames them into one TFRecord blob.

So Beam moves a few elements per user and per block, not per rating: that is what makes
the DirectRunner fast, and nothing here gathers the data set on one worker. Splits are a
hash of (seed, user, position), not a global shuffle; the temporal cutoff comes from a
combiner.
"""

from __future__ import annotations

import json
import struct
import warnings
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import filebasedsink, filebasedsource
from apache_beam.io.filesystem import CompressionTypes

from components import contract
from components.example_gen import config as config_lib
from data import movielens

TRAIN, EVAL, SPLITS = contract.TRAIN, contract.EVAL, contract.SPLITS
SPLIT_RANDOM, SPLIT_TEMPORAL = config_lib.SPLIT_RANDOM, config_lib.SPLIT_TEMPORAL
SEQUENCE, RATING, KINDS = contract.SEQUENCE, contract.RATING, contract.EXAMPLE_KINDS
PAD_MOVIE_ID = contract.PAD_MOVIE_ID
PAD_GENRE = contract.PAD_GENRE.encode()

# How many bad lines of each reason the statistics quote.
BAD_LINE_SAMPLES = 5
# Bytes per block of the ratings file: small enough to spread a 1M-rating file over
# workers, large enough that per-block costs vanish.
DEFAULT_BLOCK_SIZE = 4 << 20


class DroppedLine(NamedTuple):
    reason: str
    position: int
    text: str


class Events(NamedTuple):
    """Ratings as parallel arrays: movie (int64), rating (float32), timestamp (int64),
    position (int64 byte offset of the line in the ratings file)."""

    movie: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    position: np.ndarray

    @staticmethod
    def concatenate(parts: Iterable["Events"]) -> "Events":
        parts = list(parts)
        return Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in Events._fields))

    def take(self, index) -> "Events":
        return Events(*(column[index] for column in self))

    def __len__(self) -> int:  # pylint: disable=invalid-length-returned
        return len(self.movie)


# ---------------------------------------------------------------------------------------
# Catalogues as lookup tables indexed by id.


class MovieCatalogue:
    """The movie file as arrays indexed by movie id (id 0 is the padding movie)."""

    def __init__(self, movies: Mapping[int, movielens.Movie]):
        size = max(max(movies), 0) + 1
        self.movies = movies
        self.known = np.zeros(size, dtype=bool)
        self.year = np.zeros(size, dtype=np.int64)
        self.title = np.full(size, b"", dtype=object)
        genre_names = sorted({g for movie in movies.values() for g in movie.genres})
        self.genre_names = np.array(
            [g.encode() for g in genre_names] + [PAD_GENRE], dtype=object)
        self.pad_genre_index = len(genre_names)
        index_of = {g: i for i, g in enumerate(genre_names)}
        widest = max((len(m.genres) for m in movies.values()), default=0)
        # genre_index[movie, k]: the k-th genre of the movie, or -1.
        self.genre_index = np.full((size, max(widest, 1)), -1, dtype=np.int32)
        for movie_id, movie in movies.items():
            if movie_id < 0:
                continue
            self.known[movie_id] = True
            self.year[movie_id] = movie.year
            self.title[movie_id] = movie.title.encode()
            for k, genre in enumerate(movie.genres):
                self.genre_index[movie_id, k] = index_of[genre]
        self.genre_count = (self.genre_index >= 0).sum(axis=1)
        self.known[PAD_MOVIE_ID] = PAD_MOVIE_ID in movies

    def is_known(self, movie_ids: np.ndarray) -> np.ndarray:
        inside = (movie_ids >= 0) & (movie_ids < len(self.known))
        return inside & self.known[np.where(inside, movie_ids, 0)]


# ---------------------------------------------------------------------------------------
# Reading: fixed-size byte blocks of whole lines, split across workers.


class RatingBlocksSource(filebasedsource.FileBasedSource):
    """Yields ``(offset of first line, bytes of whole lines)`` for each block of a file.

    Block k holds the lines that start in bytes [k*size, (k+1)*size). A block is claimed
    by its start offset, so the source splits (initially or dynamically) at block
    boundaries and every line is read exactly once.
    """

    def __init__(self, file_pattern: str, block_size: int = DEFAULT_BLOCK_SIZE):
        super().__init__(
            file_pattern, splittable=True, compression_type=CompressionTypes.UNCOMPRESSED)
        self._block_size = block_size

    def read_records(self, file_name, offset_range_tracker):
        size = self._block_size
        block_start = -(-offset_range_tracker.start_position() // size) * size
        with self.open_file(file_name) as handle:
            while offset_range_tracker.try_claim(block_start):
                block_end = block_start + size
                if block_start == 0:
                    first = 0
                else:
                    # The line running over the block's start belongs to the block before.
                    handle.seek(block_start - 1)
                    first = block_start - 1 + len(handle.readline())
                if first < block_end:
                    handle.seek(first)
                    data = handle.read(block_end - first)
                    if not data:
                        return
                    if not data.endswith(b"\n"):
                        data += handle.readline()  # the last line began inside the block
                    yield first, data
                block_start = block_end


_SEPARATOR = {movielens.LAYOUT_100K: b"\t", movielens.LAYOUT_1M: b"::",
              movielens.LAYOUT_CSV: b","}
_DIGITS = np.zeros(256, dtype=bool)
_DIGITS[list(b"0123456789\n\r.")] = True


class ParsedBlock(NamedTuple):
    user: np.ndarray
    events: Events
    dropped: List[DroppedLine]  # every dropped line (samples are taken downstream)
    lines: int  # rating lines in the block (a CSV header is not one)


def _line_starts(data: bytes) -> np.ndarray:
    if not data:  # e.g. a CSV file holding only its header: no rating line at all
        return np.zeros(0, dtype=np.int64)
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.concatenate(([0], newlines + 1))
    return starts if data[-1:] != b"\n" else starts[:-1]


def _parse_clean_block(layout_name, catalogue, data, starts) -> Optional[Tuple]:
    """Parses a block with numpy, or returns None if any line needs a closer look.

    Only accepts what :func:`movielens.parse_rating_line` would accept with the same
    values: digits and separators only (a '.' only in the rating field), exactly four
    fields per line, whole ids, ratings on the layout's scale, known movies.
    """
    separator = _SEPARATOR[layout_name]
    if separator != b"\t":
        data = data.replace(separator, b"\t")
    raw = np.frombuffer(data, dtype=np.uint8)
    n = len(starts)
    is_tab = raw == 9
    if not (_DIGITS[raw] | is_tab).all():
        return None
    line_of_tab = np.searchsorted(np.flatnonzero(raw == 10), np.flatnonzero(is_tab))
    if not (np.bincount(line_of_tab, minlength=n)[:n] == 3).all() or len(line_of_tab) != 3 * n:
        return None
    dots = np.flatnonzero(raw == 46)
    if len(dots):
        tabs = np.flatnonzero(is_tab)
        line_of_dot = np.searchsorted(np.flatnonzero(raw == 10), dots)
        field_of_dot = np.searchsorted(tabs, dots) - 3 * line_of_dot
        if not (field_of_dot == 2).all() or len(np.unique(line_of_dot)) != len(dots):
            return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(data, dtype=np.float64, sep=" ")  # any whitespace
        except (DeprecationWarning, ValueError):
            return None
    if len(values) != 4 * n:
        return None
    values = values.reshape(n, 4)
    user, movie, rating, timestamp = values.T
    if layout_name == movielens.LAYOUT_CSV:
        on_scale = (rating >= 0.5) & (rating <= 5.0) & (rating * 2 == np.floor(rating * 2))
    else:
        on_scale = (rating >= 1.0) & (rating <= 5.0) & (rating == np.floor(rating))
    movie = movie.astype(np.int64)
    if not on_scale.all() or not catalogue.is_known(movie).all():
        return None
    return user.astype(np.int64), movie, rating.astype(np.float32), timestamp.astype(np.int64)


def parse_block(
    layout_name: str, catalogue: MovieCatalogue, first: int, data: bytes,
) -> ParsedBlock:
    """Parses the rating lines of one block; unusable lines are returned with a reason.

    ``first`` is the byte offset of the block's first line in the file; a CSV header
    (the file's first line) is skipped.
    """
    if first == 0 and movielens.is_header_line(layout_name, data.split(b"\n", 1)[0]):
        header = data.index(b"\n") + 1 if b"\n" in data else len(data)
        first, data = first + header, data[header:]
    starts = _line_starts(data)
    if not len(starts):
        empty = np.zeros(0, dtype=np.int64)
        return ParsedBlock(empty, Events(empty, empty.astype(np.float32), empty, empty), [], 0)
    clean = _parse_clean_block(layout_name, catalogue, data, starts)
    if clean is not None:
        user, movie, rating, timestamp = clean
        return ParsedBlock(user, Events(movie, rating, timestamp, starts + first), [], len(starts))
    # Some line is off: parse each one, keeping a reason for every line dropped.
    rows, dropped = [], []
    ends = np.append(starts[1:], len(data))
    for start, end in zip(starts.tolist(), ends.tolist()):
        raw = data[start:end].rstrip(b"\n")
        position = first + start
        try:
            rating = movielens.parse_rating_line(layout_name, raw)
        except movielens.MalformedRecord as error:
            dropped.append(DroppedLine(error.reason, position, raw.decode("utf-8", "replace")[:200]))
            continue
        if not catalogue.is_known(np.array([rating.movie_id]))[0]:
            dropped.append(DroppedLine(
                movielens.UNKNOWN_MOVIE, position,
                f"movie {rating.movie_id} is not in the movie file"))
            continue
        rows.append((rating.user_id, rating.movie_id, rating.rating, rating.timestamp, position))
    def column(index, dtype):
        return np.array([row[index] for row in rows], dtype=dtype)

    events = Events(column(1, np.int64), column(2, np.float32), column(3, np.int64),
                    column(4, np.int64))
    user = column(0, np.int64)
    return ParsedBlock(user, events, dropped, len(starts))


def events_by_user(user: np.ndarray, events: Events) -> Iterator[Tuple[int, Events]]:
    """Splits a block's events into one Events per user."""
    order = np.argsort(user, kind="stable")
    user_sorted = user[order]
    boundaries = np.flatnonzero(np.diff(user_sorted)) + 1
    for index in np.split(order, boundaries):
        if len(index):
            yield int(user[index[0]]), events.take(index)


def is_kept(params: config_lib.ExampleGenConfig, rating: np.ndarray) -> np.ndarray:
    """Which ratings enter the timelines (min_rating None keeps all)."""
    if params.min_rating is None:
        return np.ones(len(rating), dtype=bool)
    return rating >= params.min_rating


def count_values(values: np.ndarray) -> Dict[int, int]:
    ids, counts = np.unique(values, return_counts=True)
    return dict(zip(ids.tolist(), counts.tolist()))


class ParseBlocksFn(beam.DoFn):
    """Block -> (user id, Events) per user in the block.

    Other outputs: ``dropped`` (DroppedLine), ``stats`` (a dict of counts per block) and
    ``movie_counts`` (a dict movie id -> kept ratings, per block). The movie catalogue is
    small: each worker loads it once in ``setup`` from the data directory rather than
    receiving it inside the pipeline graph.
    """

    DROPPED = "dropped"
    STATS = "stats"
    MOVIE_COUNTS = "movie_counts"

    def __init__(self, layout: movielens.Layout, params: config_lib.ExampleGenConfig):
        self._layout = layout
        self._params = params
        self._catalogue: Optional[MovieCatalogue] = None

    def setup(self):
        self._catalogue = MovieCatalogue(movielens.load_movies(self._layout))

    def process(self, element):
        first, data = element
        parsed = parse_block(self._layout.name, self._catalogue, first, data)
        kept = is_kept(self._params, parsed.events.rating)
        stats = {"lines_read": parsed.lines, "ratings_valid": len(parsed.user),
                 "ratings_kept": int(kept.sum())}
        for line in parsed.dropped:
            stats[f"dropped_{line.reason}"] = stats.get(f"dropped_{line.reason}", 0) + 1
            yield beam.pvalue.TaggedOutput(self.DROPPED, line)
        yield beam.pvalue.TaggedOutput(self.STATS, stats)
        yield beam.pvalue.TaggedOutput(
            self.MOVIE_COUNTS, count_values(parsed.events.movie[kept]))
        yield from events_by_user(parsed.user, parsed.events)


class SumCountsFn(beam.CombineFn):
    """Sums dicts of counts key by key (statistics, movie counts)."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, counts):
        for key, value in counts.items():
            accumulator[key] = accumulator.get(key, 0) + value
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


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
    years = np.where(valid, catalogue.year[context], 0)
    # Genres of the context movies in order: gather each movie's genre row, then move the
    # real entries to the front of each example (a stable sort on "is padding").
    genre_rows = np.where(valid[:, :, None], catalogue.genre_index[context], -1)
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
    counts = catalogue.genre_count[events.movie]
    genre_offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    genre_values = catalogue.genre_index[events.movie]
    genre_values = genre_values[genre_values >= 0]
    columns = {
        "user_id": _single(np.full(n, user_id), pa.int64()),
        "movie_id": _single(events.movie, pa.int64()),
        "movie_title": _single(catalogue.title[events.movie], pa.binary()),
        "movie_genres": pa.ListArray.from_arrays(
            genre_offsets, pa.array(catalogue.genre_names[genre_values], type=pa.binary())),
        "movie_year": _single(catalogue.year[events.movie], pa.int64()),
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


def encode_examples(columns: Mapping[str, pa.Array]) -> List[bytes]:
    """Arrow columns -> serialized tf.Examples (tfx-bsl's C++ encoder)."""
    from tfx_bsl.coders import example_coder  # pylint: disable=import-outside-toplevel

    batch = pa.RecordBatch.from_arrays(list(columns.values()), list(columns.keys()))
    return example_coder.RecordBatchToExamplesEncoder().encode(batch)


_PACK_U32 = struct.Struct("<I").pack
_PACK_U64 = struct.Struct("<Q").pack
# TFRecord length headers (8-byte length + its masked CRC) by record length: lengths
# repeat, so each header is computed once per worker.
_LENGTH_HEADERS: Dict[int, bytes] = {}


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c  # pylint: disable=import-outside-toplevel

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_tfrecords(records: Iterable[bytes]) -> bytes:
    """Records in TFRecord framing (length, its masked CRC32C, data, its masked CRC32C)."""
    from google_crc32c import value as crc32c  # pylint: disable=import-outside-toplevel

    parts = []
    append = parts.append
    for record in records:
        header = _LENGTH_HEADERS.get(len(record))
        if header is None:
            length = _PACK_U64(len(record))
            header = _LENGTH_HEADERS[len(record)] = length + _PACK_U32(_masked_crc32c(length))
        crc = crc32c(record)
        append(header)
        append(record)
        append(_PACK_U32((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF))
    return b"".join(parts)


class UserExamplesFn(beam.DoFn):
    """(user id, the user's Events from every block) -> framed TFRecord blobs.

    Outputs ``sequence_train``, ``sequence_eval``, ``rating_train`` and ``rating_eval``:
    bytes holding whole TFRecords of one user; ``stats``: a dict of counts per user;
    ``user_counts``: (user id, valid ratings), for the user vocabulary. The main output
    is unused.

    One grouping per user serves both kinds of examples, so the data is shuffled once.
    """

    STATS = "stats"
    USER_COUNTS = "user_counts"
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
        events = sort_timeline(Events.concatenate(parts))
        stats: Dict[str, int] = {}
        yield beam.pvalue.TaggedOutput(self.USER_COUNTS, (user_id, len(events)))

        user = self._users.get(user_id)
        with_user_features = self._layout.users_path is not None
        if with_user_features and user is None:
            stats["users_without_profile"] = 1
        split = self._params
        eval_mask = is_eval(split.split_strategy, split.seed, split.rating_train_fraction, RATING,
                            user_id, events.movie, events.timestamp, cutoffs.get(RATING))
        yield from self._emit(
            RATING, rating_columns(user_id, events, self._catalogue, user, with_user_features),
            eval_mask, stats)

        timeline = events.take(is_kept(self._params, events.rating))
        if len(timeline):
            stats["users_with_kept_ratings"] = 1
            if len(timeline) < self._params.min_timeline_length:
                stats["users_skipped_short"] = 1
            else:
                labels = np.arange(1, len(timeline))
                eval_mask = is_eval(
                    split.split_strategy, split.seed, split.train_fraction, SEQUENCE,
                    user_id, labels, timeline.timestamp[1:], cutoffs.get(SEQUENCE))
                yield from self._emit(
                    SEQUENCE,
                    sequence_columns(user_id, timeline, self._catalogue, self._params),
                    eval_mask, stats)
        yield beam.pvalue.TaggedOutput(self.STATS, stats)


# ---------------------------------------------------------------------------------------
# Writing framed records.


class _FramedTFRecordSink(filebasedsink.FileBasedSink):
    """Writes elements that already hold TFRecord-framed bytes, one write per element."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str):
        super().__init__(
            file_path_prefix, coder=beam.coders.BytesCoder(), file_name_suffix=file_name_suffix,
            num_shards=0, shard_name_template=None, mime_type="application/octet-stream",
            compression_type=CompressionTypes.AUTO)

    def write_encoded_record(self, file_handle, value):
        file_handle.write(value)


class WriteFramedTFRecords(beam.PTransform):
    """Writes blobs of framed TFRecords as gzipped TFRecord files (``.gz`` suffix)."""

    def __init__(self, file_path_prefix: str):
        super().__init__()
        self._sink = _FramedTFRecordSink(file_path_prefix, ".gz")

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)


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
    unknown = PAD_GENRE.decode()
    genres = [unknown] + sorted(
        (g for g in genre_counts if g != unknown), key=lambda g: (-genre_counts[g], g))
    years = [0] + sorted((y for y in year_counts if y != 0), key=lambda y: (-year_counts[y], y))
    return genres, years


def movie_vocabulary_text(kept_counts: Mapping[int, int], layout: movielens.Layout) -> str:
    """movies.tsv's content; the worker reads the (small) movie file itself."""
    return "\n".join(movie_vocabulary_lines(movielens.load_movies(layout), kept_counts))


def user_vocabulary_text(user_counts: Iterable[Tuple[int, int]]) -> str:
    return "\n".join(user_vocabulary_lines(user_counts))


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


def user_vocabulary_lines(user_counts: Iterable[Tuple[int, int]]) -> List[str]:
    """``user_id \\t ratings`` lines, most active first."""
    return [f"{user}\t{count}"
            for user, count in sorted(user_counts, key=lambda uc: (-uc[1], uc[0]))]


def merge_statistics(counts: Mapping[str, int], samples: Iterable[DroppedLine]) -> str:
    """The statistics JSON written by the pipeline (before line numbers are resolved)."""
    return json.dumps({
        "counts": dict(sorted(counts.items())),
        "bad_line_samples": [sample._asdict() for sample in sorted(
            samples, key=lambda s: (s.reason, s.position))],
    })
