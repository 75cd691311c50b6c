"""Reading the ratings file: byte blocks, two parsers that must agree, and the movie lookup.

A **block** is ``(offset of its first line, bytes)``: the lines that start inside one
fixed-size byte range of the ratings file (:class:`RatingBlocksSource`). Workers read
blocks in parallel; byte offsets keep timestamp ties in file order and locate bad lines.

:func:`parse_block` turns a block into **events** (numpy arrays, :class:`Events`) and
dropped lines. Two parsers do it:

* :func:`_parse_clean_block`, numpy over the whole block, for speed. It accepts a block
  only if every line is plainly valid -- ASCII digits and separators, a rating written
  ``d`` or ``d.d``, ids and timestamps of at most 18 digits (so exact in int64, computed
  digit by digit, never through a float), values within data/rating_lines.py's limits,
  movies in the movie file -- and otherwise declines the whole block;
* :func:`data.rating_lines.parse_line`, line by line, the definition of a valid line,
  which gives each dropped line its reason.

So every line gets the line parser's answer whichever path reads it;
tests/test_parsing_property.py checks that on random well-formed and malformed lines.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io import filebasedsource
from apache_beam.io.filesystem import CompressionTypes

from components import contract
from components.example_gen import summary
from data import movielens, rating_lines

PAD_MOVIE_ID = contract.PAD_MOVIE_ID
PAD_GENRE = contract.PAD_GENRE.encode()  # genre lists are bytes here
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


class MovieCatalogue:
    """The movie file as arrays with one row per movie, plus a last row for padding.

    Movie ids are looked up (:meth:`rows`, a binary search over the sorted ids), never
    used as array indices: a movie id of 10^13 costs one row like any other. The padding
    row (id 0, which no movie may have) has year 0, no genre and an empty title.
    """

    def __init__(self, movies: Mapping[int, movielens.Movie]):
        self.movies = movies
        self.ids = np.array(sorted(movies), dtype=np.int64)
        self.pad_row = len(self.ids)
        size = len(self.ids) + 1
        self.year = np.zeros(size, dtype=np.int64)
        self.title = np.full(size, b"", dtype=object)
        genre_names = sorted({g for movie in movies.values() for g in movie.genres})
        self.genre_names = np.array(
            [g.encode() for g in genre_names] + [PAD_GENRE], dtype=object)
        self.pad_genre_index = len(genre_names)
        index_of = {g: i for i, g in enumerate(genre_names)}
        widest = max((len(m.genres) for m in movies.values()), default=0)
        # genre_index[row, k]: the k-th genre of the row's movie, or -1.
        self.genre_index = np.full((size, max(widest, 1)), -1, dtype=np.int32)
        for row, movie_id in enumerate(self.ids.tolist()):
            movie = movies[movie_id]
            self.year[row] = movie.year
            self.title[row] = movie.title.encode()
            for k, genre in enumerate(movie.genres):
                self.genre_index[row, k] = index_of[genre]
        self.genre_count = (self.genre_index >= 0).sum(axis=1)

    def rows(self, movie_ids) -> np.ndarray:
        """The row of each movie id, -1 for ids not in the movie file."""
        movie_ids = np.asarray(movie_ids, dtype=np.int64)
        index = np.searchsorted(self.ids, movie_ids)
        found = self.ids[np.minimum(index, len(self.ids) - 1)] == movie_ids
        return np.where(found & (index < len(self.ids)), index, -1)

    def is_known(self, movie_ids) -> np.ndarray:
        return self.rows(movie_ids) >= 0


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


class ParsedBlock(NamedTuple):
    user: np.ndarray
    events: Events
    dropped: List[DroppedLine]  # every dropped line (samples are taken downstream)
    lines: int  # rating lines in the block (a CSV header is not one)


_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[list(b"0123456789\t\n\r.")] = True
_IS_DIGIT = np.zeros(256, dtype=bool)
_IS_DIGIT[list(b"0123456789")] = True
# Any number of up to 18 digits fits in int64; longer ones go to the line parser.
_MAX_DIGITS = 18


def _line_starts(data: bytes) -> np.ndarray:
    if not data:  # e.g. a CSV file holding only its header: no rating line at all
        return np.zeros(0, dtype=np.int64)
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.concatenate(([0], newlines + 1))
    return starts if data[-1:] != b"\n" else starts[:-1]


def _digits_value(raw: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """The exact int64 value of each all-digit field ``raw[start:end]`` (<= 18 digits)."""
    width = int((end - start).max())
    value = np.zeros(len(start), dtype=np.int64)
    for j in range(width):
        position = end - width + j
        digit = raw[np.maximum(position, 0)].astype(np.int64) - 48
        value = np.where(position >= start, value * 10 + digit, value)
    return value


def _parse_clean_block(
    line_format: rating_lines.LineFormat, catalogue: MovieCatalogue, data: bytes,
    max_timestamp: int,
) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(user, movie, rating, timestamp) of every line, or None to leave the block to the
    line parser. Accepts only lines the line parser accepts, with the same values."""
    separator = line_format.separator.encode()
    if separator != b"\t":
        if b"\t" in data:  # a tab would pass for a separator below
            return None
        data = data.replace(separator, b"\t")
    raw = np.frombuffer(data, dtype=np.uint8)
    if not len(raw) or not _ALLOWED[raw].all():
        return None
    # "\r" only as the last byte of a line (CRLF files).
    carriage = np.flatnonzero(raw == 13)
    after = carriage + 1
    if not ((after == len(raw)) | (raw[np.minimum(after, len(raw) - 1)] == 10)).all():
        return None
    starts = _line_starts(data)
    n = len(starts)
    newlines = np.flatnonzero(raw == 10)
    ends = np.append(newlines, len(raw))[:n]
    content_ends = ends - (raw[np.maximum(ends - 1, 0)] == 13)
    tabs = np.flatnonzero(raw == 9)
    if len(tabs) != 3 * n or not (
            np.bincount(np.searchsorted(newlines, tabs), minlength=n)[:n] == 3).all():
        return None
    tabs = tabs.reshape(n, 3)
    field_start = np.column_stack((starts, tabs + 1))
    field_end = np.column_stack((tabs, content_ends))
    length = field_end - field_start
    user_col, movie_col, rating_col, time_col = line_format.columns
    if (length < 1).any() or (length[:, [user_col, movie_col, time_col]] > _MAX_DIGITS).any():
        return None
    # Ratings "d" or "d.d": a dot only in the rating field, at offset 1 of a 3-byte field.
    dots = np.flatnonzero(raw == 46)
    dot_line = np.searchsorted(newlines, dots)
    if (np.searchsorted(tabs.ravel(), dots) - 3 * dot_line != rating_col).any():
        return None
    rating_start, rating_length = field_start[:, rating_col], length[:, rating_col]
    three = rating_length == 3
    if not ((rating_length == 1) | three).all() or len(dots) != three.sum():
        return None
    if not (raw[rating_start[three] + 1] == 46).all() or not _IS_DIGIT[raw[rating_start]].all():
        return None
    whole = raw[rating_start].astype(np.int64) - 48
    tenths = np.where(three, raw[np.minimum(rating_start + 2, len(raw) - 1)].astype(np.int64)
                      - 48, 0)
    rating = whole + tenths / 10.0
    if line_format.half_stars:
        on_scale = (rating >= 0.5) & (rating <= 5.0) & ((tenths == 0) | (tenths == 5))
    else:
        on_scale = (rating >= 1.0) & (rating <= 5.0) & (tenths == 0)
    user, movie, timestamp = (_digits_value(raw, field_start[:, c], field_end[:, c])
                              for c in (user_col, movie_col, time_col))
    if not (on_scale.all() and (user > 0).all() and (movie > 0).all()
            and (timestamp <= max_timestamp).all() and catalogue.is_known(movie).all()):
        return None
    return user, movie, rating.astype(np.float32), timestamp


def parse_block(
    line_format: rating_lines.LineFormat, catalogue: MovieCatalogue, first: int, data: bytes,
    max_timestamp: int,
) -> ParsedBlock:
    """Parses the rating lines of one block; unusable lines are returned with a reason.

    ``first`` is the byte offset of the block's first line in the file; a header (the
    file's first line, CSV layout) is skipped.
    """
    if first == 0 and line_format.has_header:
        header = data.index(b"\n") + 1 if b"\n" in data else len(data)
        first, data = first + header, data[header:]
    starts = _line_starts(data)
    if not len(starts):
        empty = np.zeros(0, dtype=np.int64)
        return ParsedBlock(empty, Events(empty, empty.astype(np.float32), empty, empty), [], 0)
    clean = _parse_clean_block(line_format, catalogue, data, max_timestamp)
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
            rating = rating_lines.parse_line(line_format, raw, max_timestamp)
        except rating_lines.MalformedRecord as error:
            dropped.append(DroppedLine(error.reason, position, raw.decode("utf-8", "replace")[:200]))
            continue
        if not catalogue.is_known([rating.movie_id])[0]:
            dropped.append(DroppedLine(
                rating_lines.UNKNOWN_MOVIE, position,
                f"movie {rating.movie_id} is not in the movie file"))
            continue
        rows.append((rating.user_id, rating.movie_id, rating.rating, rating.timestamp, position))

    def column(index, dtype):
        return np.array([row[index] for row in rows], dtype=dtype)

    events = Events(column(1, np.int64), column(2, np.float32), column(3, np.int64),
                    column(4, np.int64))
    return ParsedBlock(column(0, np.int64), events, dropped, len(starts))


def events_by_user(user: np.ndarray, events: Events) -> Iterator[Tuple[int, Events]]:
    """Splits a block's events into one Events per user."""
    order = np.argsort(user, kind="stable")
    user_sorted = user[order]
    boundaries = np.flatnonzero(np.diff(user_sorted)) + 1
    for index in np.split(order, boundaries):
        if len(index):
            yield int(user[index[0]]), events.take(index)


class ParseBlocksFn(beam.DoFn):
    """Block -> (user id, Events) per user in the block.

    Other output: ``summary``, :mod:`summary`'s ``(tag, value)`` pairs: a ``DROPPED``
    DroppedLine per unusable line and the block's ``COUNTS`` (``lines_read`` and
    ``dropped_<reason>``). The movie catalogue is small: each worker
    loads it once in ``setup`` from the data directory rather than receiving it inside
    the pipeline graph. ``max_timestamp`` is fixed when the pipeline is built, so every
    worker applies the same bound.
    """

    SUMMARY = "summary"

    def __init__(self, layout: movielens.Layout, max_timestamp: int):
        self._layout = layout
        self._max_timestamp = max_timestamp
        self._catalogue: Optional[MovieCatalogue] = None

    def setup(self):
        self._catalogue = MovieCatalogue(movielens.load_movies(self._layout))

    def process(self, element):
        first, data = element
        parsed = parse_block(
            self._layout.line_format, self._catalogue, first, data, self._max_timestamp)
        stats = {"lines_read": parsed.lines}
        for line in parsed.dropped:
            stats[f"dropped_{line.reason}"] = stats.get(f"dropped_{line.reason}", 0) + 1
            yield beam.pvalue.TaggedOutput(self.SUMMARY, (summary.DROPPED, line))
        yield beam.pvalue.TaggedOutput(self.SUMMARY, (summary.COUNTS, stats))
        yield from events_by_user(parsed.user, parsed.events)
