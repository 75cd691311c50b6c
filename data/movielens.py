"""MovieLens layouts on disk and the parsing of their records.

Three layouts exist, as GroupLens distributes them:

* ``100k``: ``u.data`` (tab-separated ``user item rating timestamp``), ``u.item`` (pipe
  separated, Latin-1, 19 genre flags), ``u.user`` (``id|age|gender|occupation|zip``).
* ``1m``: ``ratings.dat``, ``movies.dat`` and ``users.dat``, ``::``-separated, Latin-1.
* ``csv`` (``ml-latest``, ``ml-latest-small``, ``ml-25m``): ``ratings.csv`` and
  ``movies.csv`` with headers, UTF-8, half-star ratings; no user file.

Ratings are the large part of a data set: :func:`parse_rating_line` parses one raw line
(bytes; the grammar and the limits on values are data/rating_lines.py's) and raises
:class:`MalformedRecord` with a machine-readable ``reason``, so that a Beam pipeline can
count what it drops by reason. Movies and users are small catalogues, loaded whole by
:func:`load_movies` and :func:`load_users`, which fail on the first bad line with an
error naming the file and the line: a catalogue is structure, and a wrong structure must
stop the run rather than lose or mix up data silently. For the same reason a directory
holding the files of two layouts is refused, and the CSV layout's columns are found by
their header names.

Every file is reached through Apache Beam's ``FileSystems`` (data/files.py), as the Beam
workers read the ratings: a data directory may be local or a URL (``gs://...``). This
module imports Beam, never TensorFlow or TFX.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from typing import Dict, Iterator, List, Optional, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from data import files

# The rating line's grammar and drop reasons, re-exported: callers know them as movielens.*.
from data.rating_lines import (  # noqa: F401  pylint: disable=unused-import
    BLANK_LINE, DROP_REASONS, DUPLICATE_RATING, FUTURE_TIMESTAMP, INT64_MAX, INVALID_ID,
    NEGATIVE_TIMESTAMP, NON_NUMERIC, RATING_OUT_OF_RANGE, UNDECODABLE, UNKNOWN_MOVIE,
    WRONG_FIELD_COUNT, LineFormat, MalformedRecord, Rating, parse_integer, parse_line)

LAYOUT_100K = "100k"
LAYOUT_1M = "1m"
LAYOUT_CSV = "csv"

# Genre names of the 100K layout, in the order of u.item's flag columns (u.genre).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

# Occupation codes of the 1M layout (its README).
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)

# ASCII digits only: in a str pattern, \d would also match full-width digits.
_YEAR_PATTERN = re.compile(r"\(([0-9]{4})\)")


class DataFormatError(ValueError):
    """A MovieLens file cannot be used; the message names the file and, if any, the line."""


DataPath = files.DataPath
# Re-exported: callers know them as movielens.*.
is_url, is_directory = files.is_url, files.is_directory
line_numbers_at, line_number_at = files.line_numbers_at, files.line_number_at


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one MovieLens data set's files are, and which layout they follow."""

    name: str
    root: DataPath
    ratings_path: DataPath
    movies_path: DataPath
    users_path: Optional[DataPath]
    # Field index of the user id, movie id, rating and timestamp in a rating line (from
    # the CSV layout's header; the other layouts have a fixed order).
    rating_columns: Tuple[int, int, int, int] = (0, 1, 2, 3)

    @property
    def has_header(self) -> bool:
        return self.name == LAYOUT_CSV

    @property
    def line_format(self) -> LineFormat:
        return line_format(self.name, self.rating_columns)

    @property
    def files(self) -> Tuple[DataPath, ...]:
        return tuple(p for p in (self.ratings_path, self.movies_path, self.users_path) if p)


@dataclasses.dataclass(frozen=True)
class Movie:
    movie_id: int
    title: str
    year: int
    genres: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class User:
    user_id: int
    age: int
    gender: str
    occupation: str
    zip_code: str


_LAYOUT_FILES = (
    # (layout, ratings file, movies file, users file or None)
    (LAYOUT_100K, "u.data", "u.item", "u.user"),
    (LAYOUT_1M, "ratings.dat", "movies.dat", "users.dat"),
    (LAYOUT_CSV, "ratings.csv", "movies.csv", None),
)


def detect_layout(data_dir) -> Layout:
    """Finds which MovieLens layout ``data_dir`` (a local path or a URL) holds.

    A layout is recognised by its ratings file; its movie file must then exist too (and
    for 1M its user file). A directory holding the ratings files of two layouts is
    refused: using one would silently ignore the other. The CSV layout's rating columns
    are read from its header. Raises DataFormatError naming what is wrong.
    """
    root = files.data_path(data_dir)
    if not is_directory(root):
        raise DataFormatError(f"MovieLens directory not found: {root}")
    if not is_url(root):  # a directory named like a data file: say so, not "not found"
        for entry in _LAYOUT_FILES:
            for name in filter(None, entry[1:]):
                if files.join(root, name).is_dir():
                    raise DataFormatError(
                        f"{files.join(root, name)} is a directory, not a MovieLens file")
    found = [entry for entry in _LAYOUT_FILES if files.is_file(files.join(root, entry[1]))]
    if len(found) > 1:
        names = " and ".join(f"{ratings} ({name} layout)" for name, ratings, _, _ in found)
        raise DataFormatError(
            f"{root} holds the ratings files of more than one MovieLens layout: {names}; "
            "keep one data set per directory")
    if not found:
        expected = "; ".join(f"{name}: {r} + {m}" for name, r, m, _ in _LAYOUT_FILES)
        raise DataFormatError(f"{root} holds no MovieLens ratings file (expected {expected})")
    [(name, ratings, movies, users)] = found
    required = [movies] + ([users] if name == LAYOUT_1M else [])
    missing = [f for f in required if not files.is_file(files.join(root, f))]
    if missing:
        raise DataFormatError(
            f"{root}: found {ratings} (MovieLens {name} layout) but not "
            f"{', '.join(missing)}, which that layout needs")
    users_path = files.join(root, users) if users else None
    users_path = users_path if users_path and files.is_file(users_path) else None
    ratings_path = files.join(root, ratings)
    columns = (0, 1, 2, 3)
    if name == LAYOUT_CSV:
        with files.open_file(ratings_path) as handle:
            first = handle.readline(1 << 16).decode("utf-8", "replace")
        header = next(csv.reader([first.rstrip("\r\n")]), [])
        columns = tuple(_csv_columns(ratings_path, header, RATING_CSV_COLUMNS))
    return Layout(name, root, ratings_path, files.join(root, movies), users_path, columns)


RATING_CSV_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIE_CSV_COLUMNS = ("movieId", "title", "genres")


def _csv_columns(path, header: List[str], expected: Tuple[str, ...]) -> List[int]:
    """The index of each of ``expected``'s columns in a CSV header's fields.

    Names match case-insensitively, in any order; a missing, repeated or extra column
    is a DataFormatError (reading by position would silently swap columns).
    """
    names = [name.lstrip("\ufeff").strip().lower() for name in header]
    wanted = [name.lower() for name in expected]
    if sorted(names) != sorted(wanted):
        raise DataFormatError(
            f"{path}:1: expected a header naming the columns {','.join(expected)} "
            f"(in any order), found {','.join(header)[:120]!r}")
    return [names.index(name) for name in wanted]


def extract_year(title: str) -> int:
    """The last "(YYYY)" of a title, or 0.

    MovieLens puts the release year last: in "Title (1980) (2004)" the first is part of
    the title. ASCII digits only.
    """
    matches = _YEAR_PATTERN.findall(title)
    return int(matches[-1]) if matches else 0


# Characters no genre name may hold: they would break genres.txt's one name per line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_SEPARATORS = {LAYOUT_100K: "\t", LAYOUT_1M: "::", LAYOUT_CSV: ","}


def line_format(layout_name: str, columns=(0, 1, 2, 3)) -> LineFormat:
    """A layout's rating-line format (CSV: half stars, a header)."""
    return LineFormat(_SEPARATORS[layout_name], half_stars=layout_name == LAYOUT_CSV,
                      columns=tuple(columns), has_header=layout_name == LAYOUT_CSV)


def parse_rating_line(
    layout: Union[str, Layout], raw: bytes, max_timestamp: Optional[int] = None,
) -> Rating:
    """Parses one line of a ratings file (without its line break); see
    :func:`data.rating_lines.parse_line` for the grammar and the reasons it raises.

    ``layout``: a Layout, or a layout's name (then the columns are in the usual order).
    """
    fmt = layout.line_format if isinstance(layout, Layout) else line_format(layout)
    return parse_line(fmt, raw, max_timestamp)


def _decoded_lines(path: DataPath, encoding: str) -> Iterator[Tuple[int, str]]:
    """(line number, text with its line break) of a small catalogue file; a decoding
    error names the line."""
    with files.open_file(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    f"{path}:{number}: undecodable bytes ({error.reason}); "
                    f"the file should be {encoding}") from None


def _numbered_lines(path: DataPath, encoding: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of the non-blank lines of a small catalogue file."""
    for number, text in _decoded_lines(path, encoding):
        text = text.rstrip("\r\n")
        if text.strip():
            yield number, text


def _csv_records(path: DataPath) -> Iterator[Tuple[int, List[str]]]:
    """(number of its first line, fields) of each non-blank record of a UTF-8 CSV file.

    Read as one stream, so a quoted field may hold commas, tabs and line breaks.
    """
    reader = csv.reader(text for _, text in _decoded_lines(path, "utf-8"))
    start = 1
    try:
        for row in reader:
            first, start = start, reader.line_num + 1
            if any(field.strip() for field in row):
                yield first, row
    except csv.Error as error:
        raise DataFormatError(f"{path}:{reader.line_num}: {error}") from None


def _catalogue_error(path, number, message) -> DataFormatError:
    return DataFormatError(f"{path}:{number}: {message}")


def _catalogue_id(path, number, text: str, what: str, positive: bool) -> int:
    """An id field of a catalogue line: ASCII digits, within int64 (and > 0 if asked)."""
    value = parse_integer(text)
    if value is None:
        raise _catalogue_error(path, number, f"non-numeric {what} {text[:40]!r}")
    if value > INT64_MAX or value < -INT64_MAX - 1 or (positive and value <= 0):
        kind = "a positive 64-bit integer" if positive else "a 64-bit integer"
        raise _catalogue_error(path, number, f"{what} {text[:40]} is not {kind}")
    return value


def _movie_rows(layout: Layout, genre_names) -> Iterator[Tuple[int, List[str]]]:
    """(line number, [id, title, genre field or 100K flags...]) of the movie file."""
    path = layout.movies_path
    if layout.name == LAYOUT_CSV:
        records = _csv_records(path)
        _, header = next(records, (1, []))
        columns = _csv_columns(path, header, MOVIE_CSV_COLUMNS)
        for number, fields in records:
            if len(fields) != len(header):
                raise _catalogue_error(
                    path, number, f"expected {len(header)} fields, found {len(fields)}")
            yield number, [fields[i] for i in columns]
        return
    separator = "|" if layout.name == LAYOUT_100K else "::"
    expected = 5 + len(genre_names) if layout.name == LAYOUT_100K else 3
    for number, text in _numbered_lines(path, "latin-1"):
        fields = text.split(separator)
        if len(fields) != expected:
            raise _catalogue_error(path, number, f"expected {expected} fields, found {len(fields)}")
        yield number, fields


def load_movies(layout: Layout) -> Dict[int, Movie]:
    """All movies of the layout's movie file, keyed by id. Raises DataFormatError.

    Movie ids must be positive (0 is the examples' padding id) and within int64, and
    appear once.
    """
    path = layout.movies_path
    if not files.is_file(path):
        raise DataFormatError(f"movie file not found: {path}")
    genre_names = GENRES_100K
    if layout.name == LAYOUT_100K:
        genre_file = files.join(layout.root, "u.genre")
        if files.is_file(genre_file):
            genre_names = tuple(
                text.split("|")[0] for _, text in _numbered_lines(genre_file, "latin-1"))
    movies: Dict[int, Movie] = {}
    first_line: Dict[int, int] = {}
    for number, fields in _movie_rows(layout, genre_names):
        movie_id = _catalogue_id(path, number, fields[0], "movie id", positive=True)
        if movie_id in movies:
            raise _catalogue_error(path, number, f"movie id {movie_id} appears twice "
                                                 f"(first on line {first_line[movie_id]})")
        title = fields[1]
        if layout.name == LAYOUT_100K:
            genres = tuple(name for name, flag in zip(genre_names, fields[5:])
                           if flag.strip() == "1")
        else:
            genres = tuple(g for g in fields[2].split("|") if g and g != "(no genres listed)")
        bad = [g for g in genres if _CONTROL.search(g)]
        if bad:  # genres.txt holds one name per line, unescaped
            raise _catalogue_error(path, number, f"genre {bad[0]!r} holds a control character")
        movies[movie_id] = Movie(movie_id, title, extract_year(title), genres)
        first_line[movie_id] = number
    if not movies:
        raise DataFormatError(f"{path}: no movies")
    return movies


def load_users(layout: Layout) -> Dict[int, User]:
    """All users of the layout's user file (empty for the CSV layout, which has none).

    A user id appearing twice is a DataFormatError: which profile is right cannot be
    known. Ids <= 0 are allowed here (the shared ml-100k copy has a default user 0),
    but no rating line can use them.
    """
    path = layout.users_path
    if path is None:
        return {}
    users: Dict[int, User] = {}
    first_line: Dict[int, int] = {}
    separator = "|" if layout.name == LAYOUT_100K else "::"
    for number, text in _numbered_lines(path, "latin-1"):
        fields = text.split(separator)
        if len(fields) != 5:
            raise _catalogue_error(path, number, f"expected 5 fields, found {len(fields)}")
        user_id = _catalogue_id(path, number, fields[0], "user id", positive=False)
        if layout.name == LAYOUT_100K:
            age, gender, occupation, zip_code = fields[1], fields[2], fields[3], fields[4]
        else:
            gender, age, occupation, zip_code = fields[1], fields[2], fields[3], fields[4]
            code = _catalogue_id(path, number, occupation, "occupation code", positive=False)
            occupation = OCCUPATIONS_1M[code] if 0 <= code < len(OCCUPATIONS_1M) else str(code)
        age = _catalogue_id(path, number, age, "age", positive=False)
        if user_id in users:
            raise _catalogue_error(path, number, f"user id {user_id} appears twice "
                                                 f"(first on line {first_line[user_id]})")
        users[user_id] = User(user_id, age, gender, occupation, zip_code)
        first_line[user_id] = number
    return users


def fingerprint(layout: Layout) -> str:
    """SHA-256 over the layout's files: changes whenever the data changes.

    The pipeline passes it to the example generator so that TFX's cache reruns example
    generation (and everything after it) on new or grown data, and only then. It hashes
    file names and contents only, so a copy of the data elsewhere (a bucket) has the
    same fingerprint.
    """
    digest = hashlib.sha256()
    for path in layout.files:
        digest.update(FileSystems.split(str(path))[1].encode())
        with files.open_file(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
