"""MovieLens layouts on disk and the parsing of their records.

Three layouts exist, as GroupLens distributes them:

* ``100k``: ``u.data`` (tab-separated ``user item rating timestamp``), ``u.item`` (pipe
  separated, Latin-1, 19 genre flags), ``u.user`` (``id|age|gender|occupation|zip``).
* ``1m``: ``ratings.dat``, ``movies.dat`` and ``users.dat``, ``::``-separated, Latin-1.
* ``csv`` (``ml-latest``, ``ml-latest-small``, ``ml-25m``): ``ratings.csv`` and
  ``movies.csv`` with headers, UTF-8, half-star ratings; no user file.

Ratings are the large part of a data set: :func:`parse_rating_line` parses one raw line
(bytes) and raises :class:`MalformedRecord` with a machine-readable ``reason``, so that a
Beam pipeline can count what it drops by reason. Movies and users are small catalogues,
loaded whole by :func:`load_movies` and :func:`load_users`, which fail on the first bad
line with an error naming the file and the line.

Every file is reached through Apache Beam's ``FileSystems``, as the Beam workers that
import this module read the ratings: a data directory may be local or a URL of any scheme
Beam has a file system for (``gs://...`` on Vertex AI). A :class:`Layout` of a local
directory holds ``pathlib.Path`` objects; one of a URL holds strings, which pathlib would
mangle (``gs://b`` becomes ``gs:/b``). This module imports Beam, never TensorFlow or TFX.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import pathlib
import re
from typing import BinaryIO, Dict, Iterable, Iterator, Optional, Tuple, Union

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

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

# Reasons a rating line is dropped; they key the example generator's statistics.
WRONG_FIELD_COUNT = "wrong_field_count"
NON_NUMERIC = "non_numeric"
RATING_OUT_OF_RANGE = "rating_out_of_range"
UNDECODABLE = "undecodable"
BLANK_LINE = "blank_line"
UNKNOWN_MOVIE = "unknown_movie"
DROP_REASONS = (
    WRONG_FIELD_COUNT, NON_NUMERIC, RATING_OUT_OF_RANGE, UNDECODABLE, BLANK_LINE,
    UNKNOWN_MOVIE,
)

_YEAR_PATTERN = re.compile(r"\((\d{4})\)")


class DataFormatError(ValueError):
    """A MovieLens file cannot be used; the message names the file and, if any, the line."""


class MalformedRecord(ValueError):
    """One rating line is unusable; ``reason`` is one of ``DROP_REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# A file or directory: a pathlib.Path when local, the URL string otherwise.
DataPath = Union[pathlib.Path, str]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one MovieLens data set's files are, and which layout they follow."""

    name: str
    root: DataPath
    ratings_path: DataPath
    movies_path: DataPath
    users_path: Optional[DataPath]

    @property
    def has_header(self) -> bool:
        return self.name == LAYOUT_CSV

    @property
    def files(self) -> Tuple[DataPath, ...]:
        return tuple(p for p in (self.ratings_path, self.movies_path, self.users_path) if p)


@dataclasses.dataclass(frozen=True)
class Rating:
    user_id: int
    movie_id: int
    rating: float
    timestamp: int


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


def is_url(path) -> bool:
    """True for ``scheme://...`` paths (``gs://``, ``s3://``), False for local ones."""
    return FileSystems.get_scheme(str(path)) is not None


def is_directory(path) -> bool:
    """Whether ``path`` is a directory.

    Object stores have no directories, only names sharing a prefix: a directory there
    exists while some object lies under it, so an empty one reads as absent. Beam's file
    systems cannot tell a local directory from a file, so local paths ask the OS.
    """
    if not is_url(path):
        return os.path.isdir(path)
    anything_below = FileSystems.join(str(path), "**")
    return bool(FileSystems.match([anything_below], limits=[1])[0].metadata_list)


def _open_file(path) -> BinaryIO:
    """Opens a data file for binary reading through Beam's file systems.

    Never decompressed, whatever the name: byte offsets must be those of the file, as
    the ratings source reads it.
    """
    return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)


def _data_path(path) -> DataPath:
    return str(path) if is_url(path) else pathlib.Path(path)


def _join(root: DataPath, name: str) -> DataPath:
    return root / name if isinstance(root, pathlib.Path) else FileSystems.join(root, name)


def _is_file(path: DataPath) -> bool:
    return FileSystems.exists(str(path))


def detect_layout(data_dir) -> Layout:
    """Finds which MovieLens layout ``data_dir`` (a local path or a URL) holds.

    A layout is recognised by its ratings file; its movie file must then exist too (and
    for 1M its user file). Raises DataFormatError naming what is missing.
    """
    root = _data_path(data_dir)
    if not is_directory(root):
        raise DataFormatError(f"MovieLens directory not found: {root}")
    for name, ratings, movies, users in _LAYOUT_FILES:
        if not _is_file(_join(root, ratings)):
            continue
        required = [movies] + ([users] if name == LAYOUT_1M else [])
        missing = [f for f in required if not _is_file(_join(root, f))]
        if missing:
            raise DataFormatError(
                f"{root}: found {ratings} (MovieLens {name} layout) but not "
                f"{', '.join(missing)}, which that layout needs")
        users_path = _join(root, users) if users and _is_file(_join(root, users)) else None
        return Layout(name, root, _join(root, ratings), _join(root, movies), users_path)
    expected = "; ".join(
        f"{name}: {r} + {m}" for name, r, m, _ in _LAYOUT_FILES)
    raise DataFormatError(f"{root} holds no MovieLens ratings file (expected {expected})")


def extract_year(title: str) -> int:
    """The first "(YYYY)" of a title, or 0 (the sequential tutorial's rule)."""
    match = _YEAR_PATTERN.search(title)
    return int(match.group(1)) if match else 0


def _split_rating_fields(layout_name: str, text: str):
    if layout_name == LAYOUT_100K:
        return text.split("\t")
    if layout_name == LAYOUT_1M:
        return text.split("::")
    return text.split(",")


def is_header_line(layout_name: str, raw: bytes) -> bool:
    """True for the CSV layout's header line (``userId,movieId,...``)."""
    return layout_name == LAYOUT_CSV and raw.lstrip(b"\xef\xbb\xbf").startswith(b"userId,")


def parse_rating_line(layout_name: str, raw: bytes) -> Rating:
    """Parses one line of a ratings file (without its line break).

    Raises MalformedRecord for a blank line, undecodable bytes, a wrong number of fields,
    non-numeric ids or ratings, or a rating off the layout's scale (1-5 whole stars;
    0.5-5 half stars for CSV).
    """
    try:
        text = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as error:
        raise MalformedRecord(UNDECODABLE, f"undecodable bytes ({error.reason})") from None
    if not text.strip():
        raise MalformedRecord(BLANK_LINE, "blank line")
    fields = _split_rating_fields(layout_name, text)
    if len(fields) != 4:
        raise MalformedRecord(
            WRONG_FIELD_COUNT, f"expected 4 fields, found {len(fields)}: {text[:80]!r}")
    try:
        user_id, movie_id, timestamp = int(fields[0]), int(fields[1]), int(fields[3])
        rating = float(fields[2])
    except ValueError:
        raise MalformedRecord(NON_NUMERIC, f"non-numeric field in {text[:80]!r}") from None
    if layout_name == LAYOUT_CSV:
        valid = 0.5 <= rating <= 5.0 and (rating * 2).is_integer()
    else:
        valid = 1.0 <= rating <= 5.0 and rating.is_integer()
    if not valid:
        raise MalformedRecord(RATING_OUT_OF_RANGE, f"rating {fields[2]!r} is off the scale")
    return Rating(user_id, movie_id, rating, timestamp)


def _numbered_lines(path: DataPath, encoding: str) -> Iterator[Tuple[int, str]]:
    """(line number, text) of a small catalogue file, decoding errors naming the line."""
    with _open_file(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode(encoding).rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    f"{path}:{number}: undecodable bytes ({error.reason}); "
                    f"the file should be {encoding}") from None
            if text.strip():
                yield number, text


def _catalogue_error(path, number, message) -> DataFormatError:
    return DataFormatError(f"{path}:{number}: {message}")


def _parse_movie(layout_name: str, fields, genre_names) -> Movie:
    movie_id = int(fields[0])
    title = fields[1]
    if layout_name == LAYOUT_100K:
        flags = fields[5:]
        genres = tuple(name for name, flag in zip(genre_names, flags) if flag.strip() == "1")
    else:
        genres = tuple(g for g in fields[2].split("|") if g and g != "(no genres listed)")
    return Movie(movie_id, title, extract_year(title), genres)


def load_movies(layout: Layout) -> Dict[int, Movie]:
    """All movies of the layout's movie file, keyed by id. Raises DataFormatError."""
    path = layout.movies_path
    if not _is_file(path):
        raise DataFormatError(f"movie file not found: {path}")
    genre_names = GENRES_100K
    if layout.name == LAYOUT_100K:
        genre_file = _join(layout.root, "u.genre")
        if _is_file(genre_file):
            genre_names = tuple(
                text.split("|")[0] for _, text in _numbered_lines(genre_file, "latin-1"))
    movies: Dict[int, Movie] = {}
    if layout.name == LAYOUT_CSV:
        lines = _numbered_lines(path, "utf-8")
        header = next(lines, None)
        rows = ((number, next(csv.reader([text]))) for number, text in lines)
        expected = 3
        if header is None or not header[1].lstrip("\ufeff").startswith("movieId"):
            raise DataFormatError(f"{path}:1: expected the header 'movieId,title,genres'")
    else:
        separator = "|" if layout.name == LAYOUT_100K else "::"
        rows = ((number, text.split(separator))
                for number, text in _numbered_lines(path, "latin-1"))
        expected = 5 + len(genre_names) if layout.name == LAYOUT_100K else 3
    for number, fields in rows:
        if len(fields) != expected:
            raise _catalogue_error(path, number, f"expected {expected} fields, found {len(fields)}")
        try:
            movie = _parse_movie(layout.name, fields, genre_names)
        except ValueError:
            raise _catalogue_error(path, number, f"non-numeric movie id {fields[0]!r}") from None
        if movie.movie_id in movies:
            raise _catalogue_error(path, number, f"movie id {movie.movie_id} appears twice")
        movies[movie.movie_id] = movie
    if not movies:
        raise DataFormatError(f"{path}: no movies")
    return movies


def load_users(layout: Layout) -> Dict[int, User]:
    """All users of the layout's user file (empty for the CSV layout, which has none)."""
    path = layout.users_path
    if path is None:
        return {}
    users: Dict[int, User] = {}
    separator = "|" if layout.name == LAYOUT_100K else "::"
    for number, text in _numbered_lines(path, "latin-1"):
        fields = text.split(separator)
        if len(fields) != 5:
            raise _catalogue_error(path, number, f"expected 5 fields, found {len(fields)}")
        try:
            if layout.name == LAYOUT_100K:
                user = User(int(fields[0]), int(fields[1]), fields[2], fields[3], fields[4])
            else:
                occupation = int(fields[3])
                name = OCCUPATIONS_1M[occupation] if 0 <= occupation < len(
                    OCCUPATIONS_1M) else str(occupation)
                user = User(int(fields[0]), int(fields[2]), fields[1], name, fields[4])
        except ValueError:
            raise _catalogue_error(path, number, f"non-numeric field in {text[:80]!r}") from None
        users[user.user_id] = user
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
        with _open_file(path) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def line_numbers_at(path, byte_offsets: Iterable[int]) -> Dict[int, int]:
    """The 1-based number of the line that starts at each of ``byte_offsets`` of ``path``.

    Beam reads files in byte ranges, so bad records are located by offset; error messages
    turn the few offsets they quote into line numbers with this, in one pass over the
    file up to the last offset (on an object store each pass is a download).
    """
    offsets = sorted(set(byte_offsets))
    if not offsets:
        return {}
    numbers: Dict[int, int] = {}
    newlines = position = 0
    with _open_file(path) as handle:
        for offset in offsets:
            while position < offset:
                block = handle.read(min(offset - position, 1 << 20))
                if not block:
                    break
                newlines += block.count(b"\n")
                position += len(block)
            numbers[offset] = newlines + 1
    return numbers


def line_number_at(path, byte_offset: int) -> int:
    """The 1-based number of the line that starts at ``byte_offset`` of ``path``."""
    return line_numbers_at(path, [byte_offset])[byte_offset]
