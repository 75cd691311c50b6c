"""One line of a MovieLens ratings file: its grammar, its values' limits, and why it is dropped.

This module is the single definition of what a valid rating line is. The example
generator has two ways to parse ratings -- numpy over a whole clean block, and this line
parser for everything else (components/example_gen/parsing.py) -- and the fast one may
only accept what :func:`parse_line` accepts, with the same values. So the grammar is
deliberately narrow and spelled out here rather than left to ``int()`` and ``float()``,
which accept ``1_0``, full-width digits, surrounding white space, ``nan`` and ``1e3``:

* ids and timestamps: ``-?[0-9]+``, ASCII digits only, parsed as exact integers (never
  through a float, so 2^53 + 1 stays 2^53 + 1);
* rating: ``-?[0-9]+(\\.[0-9]+)?``;
* a line may end in ``\\r`` (CRLF files); a ``\\r`` anywhere else is a non-numeric field.

Values the formats forbid are dropped with their own reason, never clamped or wrapped:

* a user or movie id <= 0 or beyond int64 (``invalid_id``; movie id 0 is the examples'
  padding id, so it must never be a real movie);
* a negative timestamp (``negative_timestamp``);
* a timestamp later than ``max_timestamp`` (``future_timestamp``): by default the moment
  the check runs plus :data:`FUTURE_MARGIN_SECONDS`, so a rating can never come from the
  future, and millisecond timestamps (about 1.7e12) are caught too.

Standard library only: Beam workers and the command line import it cheaply.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Optional, Tuple

# Reasons a rating line is dropped; they key the example generator's statistics.
WRONG_FIELD_COUNT = "wrong_field_count"
NON_NUMERIC = "non_numeric"
RATING_OUT_OF_RANGE = "rating_out_of_range"
UNDECODABLE = "undecodable"
BLANK_LINE = "blank_line"
INVALID_ID = "invalid_id"
NEGATIVE_TIMESTAMP = "negative_timestamp"
FUTURE_TIMESTAMP = "future_timestamp"
# Decided outside this module: against the movie file (parsing.py) and across a user's
# ratings (transforms.UserExamplesFn keeps the latest rating of a (user, movie) pair).
UNKNOWN_MOVIE = "unknown_movie"
DUPLICATE_RATING = "duplicate_rating"
DROP_REASONS = (
    WRONG_FIELD_COUNT, NON_NUMERIC, RATING_OUT_OF_RANGE, UNDECODABLE, BLANK_LINE,
    INVALID_ID, NEGATIVE_TIMESTAMP, FUTURE_TIMESTAMP, UNKNOWN_MOVIE, DUPLICATE_RATING,
)

INT64_MAX = (1 << 63) - 1
# A rating cannot be later than the run that reads it; one day absorbs clock skew.
FUTURE_MARGIN_SECONDS = 24 * 3600

_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class MalformedRecord(ValueError):
    """One rating line is unusable; ``reason`` is one of ``DROP_REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Rating:
    user_id: int
    movie_id: int
    rating: float
    timestamp: int


@dataclasses.dataclass(frozen=True)
class LineFormat:
    """How one layout writes a rating line.

    ``columns``: the field index of the user id, movie id, rating and timestamp (the CSV
    layout's header may order them otherwise). ``has_header``: the file's first line is a
    header, not a rating.
    """

    separator: str
    half_stars: bool
    columns: Tuple[int, int, int, int] = (0, 1, 2, 3)
    has_header: bool = False


def future_bound(now: Optional[float] = None) -> int:
    """The latest timestamp accepted when reading at ``now`` (default: this moment)."""
    return int(time.time() if now is None else now) + FUTURE_MARGIN_SECONDS


def parse_integer(text: str) -> Optional[int]:
    """``-?[0-9]+`` (ASCII digits only) as an exact int, else None."""
    return int(text) if _INTEGER.fullmatch(text) else None


def is_on_scale(rating: float, half_stars: bool) -> bool:
    """1-5 whole stars, or 0.5-5 in half stars."""
    if half_stars:
        return 0.5 <= rating <= 5.0 and (rating * 2).is_integer()
    return 1.0 <= rating <= 5.0 and rating.is_integer()


def parse_line(line_format: LineFormat, raw: bytes, max_timestamp: Optional[int] = None) -> Rating:
    """Parses one line of a ratings file (without its ``\\n``).

    Raises MalformedRecord with the first reason that applies, in this order:
    undecodable, blank_line, wrong_field_count, non_numeric, rating_out_of_range,
    invalid_id, negative_timestamp, future_timestamp. ``max_timestamp`` defaults to
    :func:`future_bound` of now.
    """
    try:
        text = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as error:
        raise MalformedRecord(UNDECODABLE, f"undecodable bytes ({error.reason})") from None
    if not text.strip():
        raise MalformedRecord(BLANK_LINE, "blank line")
    fields = text.split(line_format.separator)
    if len(fields) != 4:
        raise MalformedRecord(
            WRONG_FIELD_COUNT, f"expected 4 fields, found {len(fields)}: {text[:80]!r}")
    user_text, movie_text, rating_text, time_text = (fields[i] for i in line_format.columns)
    user_id, movie_id, timestamp = (
        parse_integer(user_text), parse_integer(movie_text), parse_integer(time_text))
    if None in (user_id, movie_id, timestamp) or not _DECIMAL.fullmatch(rating_text):
        raise MalformedRecord(NON_NUMERIC, f"non-numeric field in {text[:80]!r}")
    rating = float(rating_text)
    if not is_on_scale(rating, line_format.half_stars):
        raise MalformedRecord(RATING_OUT_OF_RANGE, f"rating {rating_text[:20]!r} is off the scale")
    for name, value in (("user", user_id), ("movie", movie_id)):
        if not 0 < value <= INT64_MAX:
            raise MalformedRecord(
                INVALID_ID, f"{name} id {_short(value)} is not a positive 64-bit integer")
    if timestamp < 0:
        raise MalformedRecord(NEGATIVE_TIMESTAMP, f"timestamp {_short(timestamp)} is negative")
    bound = future_bound() if max_timestamp is None else max_timestamp
    if timestamp > bound:
        raise MalformedRecord(
            FUTURE_TIMESTAMP, f"timestamp {_short(timestamp)} is later than {bound} "
            f"({time.strftime('%Y-%m-%d', time.gmtime(min(bound, 253402300799)))} UTC)")
    return Rating(user_id, movie_id, rating, timestamp)


def _short(value: int) -> str:
    """An integer for a message: a 400-digit number is shown by its length."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"
