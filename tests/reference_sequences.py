"""An independent, plain-Python implementation of the example generator's specification.

The tests compare what the Beam pipeline writes with what this module computes. It
deliberately shares no code with ``components.example_gen`` or ``data.movielens``: it
reads the MovieLens files itself (bytes, ``str.split``, the ``csv`` module) and follows
the sequential tutorial's reference algorithm (docs: stack-notes.md, "The sequential
tutorial's example generation"), written the most direct way, one user at a time:

* keep ratings >= ``min_rating`` (``None`` keeps all);
* group per user, stable-sort by timestamp (equal timestamps keep file order);
* skip users with fewer than ``min_timeline_length`` kept ratings;
* for each label position i >= 1: the up to ``max_context_length`` previous movies,
  oldest first, padded at the END with movie 0 / rating 0.0 / year 0; genres = the
  context movies' genres in order, padded with ``b"UNK"`` or truncated; label = movie i;
  plus ``user_id`` and the label's ``timestamp``.

Project conventions the reference follows as well (they are what the loader documents):
a movie's year is the last ``(YYYY)`` of its title (MovieLens puts the release year
last), else 0; ml-100k genres come from the flag columns named by ``u.genre``; the CSV
layout's ``(no genres listed)`` means no genre, and its columns are found by the header's
names; a rating line is unusable for the reasons named below (ids and timestamps are
ASCII digits with an optional minus sign; ids must be positive 64-bit integers,
timestamps neither negative nor later than the run plus a day), a rating of a movie
absent from the movie file is dropped as ``unknown_movie``, and when a user rated the
same movie more than once only the latest rating (by timestamp, then line) is valid, the
others are dropped as ``duplicate_rating``.
"""

from __future__ import annotations

import array
import collections
import csv
import dataclasses
import os
import re
import time
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

# ml-100k's README order of the 19 genre flags (used when u.genre is absent).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# ml-1m's README: occupation codes 0..20.
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer",
    "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
REASONS = ("wrong_field_count", "non_numeric", "rating_out_of_range", "undecodable",
           "blank_line", "invalid_id", "negative_timestamp", "future_timestamp",
           "unknown_movie", "duplicate_rating")

_FILES = {
    "100k": ("u.data", "u.item", "u.user", "\t"),
    "1m": ("ratings.dat", "movies.dat", "users.dat", "::"),
    "csv": ("ratings.csv", "movies.csv", None, ","),
}


@dataclasses.dataclass
class Movie:
    title: str
    year: int
    genres: Tuple[str, ...]


@dataclasses.dataclass
class User:
    age: int
    gender: str
    occupation: str
    zip_code: str


@dataclasses.dataclass
class Rating:
    line: int  # 1-based line number in the ratings file: the order of timestamp ties
    user_id: int
    movie_id: int
    rating: float
    timestamp: int


@dataclasses.dataclass
class Data:
    layout: str
    ratings_path: str
    movies: Dict[int, Movie]
    users: Dict[int, User]
    has_user_file: bool
    ratings: List[Rating]            # the valid ratings, in file order
    bad_lines: List[Tuple[int, str]]  # (line number, reason) of every unusable line
    lines_read: int                  # rating lines (the CSV header excluded)


@dataclasses.dataclass
class SequenceExample:
    user_id: int
    label_index: int
    timeline_length: int
    features: Dict[str, list]

    @property
    def is_last(self) -> bool:
        return self.label_index == self.timeline_length - 1


def layout_of(data_dir) -> str:
    for name, (ratings, _, _, _) in _FILES.items():
        if os.path.isfile(os.path.join(data_dir, ratings)):
            return name
    raise FileNotFoundError(f"no MovieLens ratings file in {data_dir}")


def year_of(title: str) -> int:
    years = re.findall(r"\(([0-9][0-9][0-9][0-9])\)", title)
    return int(years[-1]) if years else 0


def _read_movies(data_dir: str, layout: str) -> Dict[int, Movie]:
    path = os.path.join(data_dir, _FILES[layout][1])
    movies = {}
    if layout == "csv":
        with open(path, encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.reader(handle))
        names = [name.strip().lower() for name in rows[0]]
        at = {name: names.index(name) for name in ("movieid", "title", "genres")}
        for row in rows[1:]:
            if not row:
                continue
            movie_id, title, genre_field = (row[at[n]] for n in ("movieid", "title", "genres"))
            genres = () if genre_field == "(no genres listed)" else tuple(
                g for g in genre_field.split("|") if g)
            movies[int(movie_id)] = Movie(title, year_of(title), genres)
        return movies
    with open(path, "rb") as handle:
        lines = handle.read().decode("latin-1").splitlines()
    if layout == "100k":
        names = GENRES_100K
        genre_path = os.path.join(data_dir, "u.genre")
        if os.path.isfile(genre_path):
            with open(genre_path, "rb") as handle:
                names = tuple(line.split("|")[0] for line in
                              handle.read().decode("latin-1").splitlines() if line.strip())
        for line in lines:
            if not line.strip():
                continue
            fields = line.split("|")
            genres = tuple(name for name, flag in zip(names, fields[5:]) if flag == "1")
            movies[int(fields[0])] = Movie(fields[1], year_of(fields[1]), genres)
    else:
        for line in lines:
            if not line.strip():
                continue
            movie_id, title, genres = line.split("::")
            movies[int(movie_id)] = Movie(
                title, year_of(title), tuple(g for g in genres.split("|") if g))
    return movies


def _read_users(data_dir: str, layout: str) -> Tuple[Dict[int, User], bool]:
    name = _FILES[layout][2]
    if name is None or not os.path.isfile(os.path.join(data_dir, name)):
        return {}, False
    with open(os.path.join(data_dir, name), "rb") as handle:
        lines = handle.read().decode("latin-1").splitlines()
    users = {}
    for line in lines:
        if not line.strip():
            continue
        if layout == "100k":
            user_id, age, gender, occupation, zip_code = line.split("|")
            users[int(user_id)] = User(int(age), gender, occupation, zip_code)
        else:
            user_id, gender, age, occupation, zip_code = line.split("::")
            users[int(user_id)] = User(int(age), gender, OCCUPATIONS_1M[int(occupation)],
                                       zip_code)
    return users, True


def _classify(layout: str, raw: bytes, movies: Mapping[int, Movie],
              columns=(0, 1, 2, 3), max_timestamp: Optional[int] = None):
    """A (user, movie, rating, timestamp) tuple, or the reason the line is unusable.

    ``columns``: where the user, movie, rating and timestamp fields are."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "undecodable"
    while text.endswith("\r"):
        text = text[:-1]
    if text.strip() == "":
        return "blank_line"
    fields = text.split(_FILES[layout][3])
    if len(fields) != 4:
        return "wrong_field_count"
    user, movie, rating, stamp = (fields[i] for i in columns)
    integer = re.compile(r"-?[0-9]+")
    if not all(integer.fullmatch(f) for f in (user, movie, stamp)) or not re.fullmatch(
            r"-?[0-9]+(\.[0-9]+)?", rating):
        return "non_numeric"
    user_id, movie_id, timestamp, rating = int(user), int(movie), int(stamp), float(rating)
    if layout == "csv":
        allowed = {0.5 * k for k in range(1, 11)}
    else:
        allowed = {1.0, 2.0, 3.0, 4.0, 5.0}
    if rating not in allowed:
        return "rating_out_of_range"
    if not (0 < user_id < 2 ** 63 and 0 < movie_id < 2 ** 63):
        return "invalid_id"
    if timestamp < 0:
        return "negative_timestamp"
    if timestamp > (time.time() + 86400 if max_timestamp is None else max_timestamp):
        return "future_timestamp"
    if movie_id not in movies:
        return "unknown_movie"
    return user_id, movie_id, rating, timestamp


def _rating_columns(layout: str, header: bytes):
    if layout != "csv":
        return (0, 1, 2, 3)
    names = [n.strip().lower() for n in header.decode("utf-8-sig").rstrip("\r").split(",")]
    return tuple(names.index(n) for n in ("userid", "movieid", "rating", "timestamp"))


def load(data_dir, max_timestamp: Optional[int] = None) -> Data:
    data_dir = os.fspath(data_dir)
    layout = layout_of(data_dir)
    movies = _read_movies(data_dir, layout)
    users, has_user_file = _read_users(data_dir, layout)
    ratings_path = os.path.join(data_dir, _FILES[layout][0])
    with open(ratings_path, "rb") as handle:
        content = handle.read()
    raw_lines = content.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()  # the final line break ends the last line
    columns = _rating_columns(layout, raw_lines[0] if raw_lines else b"")
    ratings, bad, lines_read = [], [], 0
    for number, raw in enumerate(raw_lines, start=1):
        if number == 1 and layout == "csv":
            continue  # the header
        lines_read += 1
        parsed = _classify(layout, raw, movies, columns, max_timestamp)
        if isinstance(parsed, str):
            bad.append((number, parsed))
        else:
            ratings.append(Rating(number, *parsed))
    # Several ratings of one movie by one user: the latest (then the last line) is valid.
    latest = {}
    for rating in ratings:
        key = (rating.user_id, rating.movie_id)
        if key not in latest or (rating.timestamp, rating.line) > (
                latest[key].timestamp, latest[key].line):
            latest[key] = rating
    valid = [r for r in ratings if latest[(r.user_id, r.movie_id)] is r]
    bad.extend((r.line, "duplicate_rating") for r in ratings
               if latest[(r.user_id, r.movie_id)] is not r)
    bad.sort()
    return Data(layout, ratings_path, movies, users, has_user_file, valid, bad, lines_read)


def kept_ratings(data: Data, min_rating: Optional[float]) -> List[Rating]:
    return [r for r in data.ratings if min_rating is None or r.rating >= min_rating]


def timelines(ratings: Iterable[Rating]) -> Dict[int, List[Rating]]:
    """Per user, ratings sorted by timestamp; Python's sort is stable (file order kept)."""
    per_user: Dict[int, List[Rating]] = collections.defaultdict(list)
    for rating in ratings:  # file order
        per_user[rating.user_id].append(rating)
    return {user: sorted(events, key=lambda r: r.timestamp)
            for user, events in per_user.items()}


def sequence_examples(
    data: Data,
    min_rating: Optional[float] = 2,
    min_timeline_length: int = 3,
    max_context_length: int = 10,
    max_context_movie_genre_length: int = 10,
) -> List[SequenceExample]:
    encoded_genres = {movie_id: [g.encode() for g in movie.genres]
                      for movie_id, movie in data.movies.items()}
    examples = []
    for user_id, timeline in sorted(timelines(kept_ratings(data, min_rating)).items()):
        if len(timeline) < min_timeline_length:
            continue
        for i in range(1, len(timeline)):
            context = timeline[max(0, i - max_context_length):i]
            movie_ids = [r.movie_id for r in context]
            ratings = [r.rating for r in context]
            years = [data.movies[r.movie_id].year for r in context]
            genres = []
            for r in context:
                genres.extend(encoded_genres[r.movie_id])
            while len(movie_ids) < max_context_length:
                movie_ids.append(0)
                ratings.append(0.0)
                years.append(0)
            genres = genres[:max_context_movie_genre_length]
            while len(genres) < max_context_movie_genre_length:
                genres.append(b"UNK")
            features = {
                "user_id": [user_id],
                "timestamp": [timeline[i].timestamp],
                "context_movie_id": movie_ids,
                "context_movie_rating": ratings,
                "context_movie_year": years,
                "context_movie_genre": genres,
                "label_movie_id": [timeline[i].movie_id],
            }
            examples.append(SequenceExample(user_id, i, len(timeline), features))
    return examples


def rating_examples(data: Data) -> List[Dict[str, list]]:
    """One example per valid rating (min_rating does not apply here)."""
    examples = []
    for r in data.ratings:
        movie = data.movies[r.movie_id]
        features = {
            "user_id": [r.user_id],
            "movie_id": [r.movie_id],
            "movie_title": [movie.title.encode()],
            "movie_genres": [g.encode() for g in movie.genres],
            "movie_year": [movie.year],
            "user_rating": [r.rating],
            "timestamp": [r.timestamp],
        }
        if data.has_user_file:
            user = data.users.get(r.user_id)
            features["user_age"] = [user.age if user else 0]
            features["user_gender"] = [(user.gender if user else "").encode()]
            features["user_occupation"] = [(user.occupation if user else "").encode()]
            features["user_zip_code"] = [(user.zip_code if user else "").encode()]
        examples.append(features)
    return examples


def movie_counts(ratings: Iterable[Rating]) -> Dict[int, int]:
    return dict(collections.Counter(r.movie_id for r in ratings))


def canonical(features: Mapping[str, list]):
    """A hashable form of a feature dict; floats rounded to float32 as tf.Example stores."""
    items = []
    for name in sorted(features):
        values = features[name]
        if values and isinstance(values[0], float):
            values = array.array("f", values).tolist()
        items.append((name, tuple(values)))
    return tuple(items)


def multiset(examples: Iterable[Mapping[str, list]]) -> collections.Counter:
    return collections.Counter(canonical(features) for features in examples)
