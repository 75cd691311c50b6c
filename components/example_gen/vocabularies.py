"""The vocabulary files' content: movies.tsv, users.tsv, genres.txt and years.txt.

Catalogue-sized lists only. movies.tsv's fields go through components/vocabulary_files.py,
which the Trainer and the Pusher read them back with.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Tuple

from components import contract, vocabulary_files
from data import movielens


def movie_vocabulary_lines(
    movies: Mapping[int, movielens.Movie], kept_counts: Mapping[int, int],
) -> List[str]:
    """``movie_id \\t count \\t title \\t year \\t genres`` lines, most kept ratings first.

    Movies never rated (after filtering) follow with count 0, so the vocabulary covers the
    whole catalogue the retrieval index serves. Fields are escaped by
    components/vocabulary_files.py, so a title holding a tab or a line break stays one
    field of one line.
    """
    order = sorted(movies, key=lambda movie_id: (-kept_counts.get(movie_id, 0), movie_id))
    return [
        vocabulary_files.encode_fields((
            movie_id, kept_counts.get(movie_id, 0), movies[movie_id].title,
            movies[movie_id].year, "|".join(movies[movie_id].genres)))
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
    unknown = contract.PAD_GENRE
    genres = [unknown] + sorted(
        (g for g in genre_counts if g != unknown), key=lambda g: (-genre_counts[g], g))
    years = [0] + sorted((y for y in year_counts if y != 0), key=lambda y: (-year_counts[y], y))
    return genres, years


def movie_vocabulary_text(kept_counts: Mapping[int, int], layout: movielens.Layout) -> str:
    """movies.tsv's content; the worker reads the (small) movie file itself."""
    return "\n".join(movie_vocabulary_lines(movielens.load_movies(layout), kept_counts))


def user_vocabulary_text(user_counts: Iterable[Tuple[int, int]]) -> str:
    return "\n".join(user_vocabulary_lines(user_counts))


def user_vocabulary_lines(user_counts: Iterable[Tuple[int, int]]) -> List[str]:
    """``user_id \\t ratings`` lines, most active first."""
    return [f"{user}\t{count}"
            for user, count in sorted(user_counts, key=lambda uc: (-uc[1], uc[0]))]
