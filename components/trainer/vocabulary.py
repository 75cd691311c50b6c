"""The example generator's vocabulary directory, as the models read it.

``movies.tsv`` (most kept ratings first), ``users.tsv``, ``genres.txt``, ``years.txt``
and ``sequence_shape.json`` (names in components/contract.py) are catalogue-sized, so
:func:`load_vocabulary` reads them whole. Every movie array of a :class:`Vocabulary` is
aligned with ``movies.tsv``, and so are the candidate embedding matrices.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import List, Optional, Tuple

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components import contract, vocabulary_files

@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The catalogue the models embed and retrieve from, as the example generator wrote it.

    Movies are in ``movies.tsv`` order (most kept ratings first); row ``i`` of every
    movie array describes the same movie, and candidate embedding matrices are aligned
    with it (see ``evaluation.catalogue_embeddings``).

    Attributes:
      movie_ids: int64 ``[M]``.
      movie_counts: int64 ``[M]`` kept ratings per movie (0 for never-rated movies).
      movie_titles: ``M`` titles (str).
      movie_years: int64 ``[M]`` (0 when the title has no year).
      movie_genres: ``M`` tuples of genre names (possibly empty).
      user_ids: int64 ``[U]``, most active first.
      user_counts: int64 ``[U]`` valid ratings per user.
      genres: genre vocabulary, ``"UNK"`` first.
      years: year vocabulary, 0 first.
      max_context_length, max_context_movie_genre_length: the lengths the sequence
        examples are padded to (``contract.SEQUENCE_SHAPE_FILE``); None when the
        directory has no such file (then no sequence examples can be parsed).
    """

    movie_ids: np.ndarray
    movie_counts: np.ndarray
    movie_titles: Tuple[str, ...]
    movie_years: np.ndarray
    movie_genres: Tuple[Tuple[str, ...], ...]
    user_ids: np.ndarray
    user_counts: np.ndarray
    genres: Tuple[str, ...]
    years: Tuple[int, ...]
    max_context_length: Optional[int] = None
    max_context_movie_genre_length: Optional[int] = None

    @property
    def num_movies(self) -> int:
        return int(self.movie_ids.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.user_ids.shape[0])

    def sequence_shape(self) -> Tuple[int, int]:
        """(L, G): the sequence examples' padded context and genre lengths."""
        if self.max_context_length is None or self.max_context_movie_genre_length is None:
            raise ValueError(f"the vocabulary has no {contract.SEQUENCE_SHAPE_FILE}: the "
                             "sequence examples' padded lengths are unknown (rerun the "
                             "example generator)")
        return self.max_context_length, self.max_context_movie_genre_length

    def candidate_probabilities(self, smoothing: float = 1.0,
                                counts: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 ``[M]``: how likely each movie is to be a random example's movie.

        This is the in-batch sampling probability that the log-Q correction of sampled
        softmax subtracts (``logit - log(p)``). ``smoothing`` is added to every count so
        that a never-rated movie has a finite log-probability. ``counts`` ``[M]``
        defaults to the vocabulary's, of *kept* ratings over both splits: close to, not
        exactly, the training distribution (``sampling.training_movie_counts`` gives
        the training examples' own).
        """
        counts = (self.movie_counts if counts is None else np.asarray(counts))
        counts = counts.astype(np.float64) + smoothing
        return (counts / counts.sum()).astype(np.float32)


def _read_lines(path: str) -> List[str]:
    with tf.io.gfile.GFile(path, "r") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def load_vocabulary(vocabulary_dir: str) -> Vocabulary:
    """Reads the example generator's vocabulary directory.

    ``genres.txt`` and ``years.txt`` are optional (derived from the movies when absent).
    Raises ValueError naming the file and line of a malformed movie or user line.
    """
    movie_ids, counts, titles, years, genres = [], [], [], [], []
    path = os.path.join(vocabulary_dir, contract.MOVIES_FILE)
    for number, line in enumerate(_read_lines(path), start=1):
        fields = vocabulary_files.decode_fields(line)
        if len(fields) != 5:
            raise ValueError(f"{path}:{number}: expected 5 tab-separated fields, "
                             f"found {len(fields)}")
        movie_ids.append(int(fields[0]))
        counts.append(int(fields[1]))
        titles.append(fields[2])
        years.append(int(fields[3]))
        genres.append(tuple(g for g in fields[4].split("|") if g))
    if not movie_ids:
        raise ValueError(f"{path}: no movies")

    user_ids, user_counts = [], []
    path = os.path.join(vocabulary_dir, contract.USERS_FILE)
    if tf.io.gfile.exists(path):
        for number, line in enumerate(_read_lines(path), start=1):
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected 2 tab-separated fields")
            user_ids.append(int(fields[0]))
            user_counts.append(int(fields[1]))

    path = os.path.join(vocabulary_dir, contract.GENRES_FILE)
    if tf.io.gfile.exists(path):
        genre_vocab = tuple(_read_lines(path))
    else:
        genre_vocab = (contract.PAD_GENRE,) + tuple(sorted({g for gs in genres for g in gs} - {contract.PAD_GENRE}))
    path = os.path.join(vocabulary_dir, contract.YEARS_FILE)
    if tf.io.gfile.exists(path):
        year_vocab = tuple(int(line) for line in _read_lines(path))
    else:
        year_vocab = (0,) + tuple(sorted(set(years) - {0}))

    shape = {}
    path = os.path.join(vocabulary_dir, contract.SEQUENCE_SHAPE_FILE)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path, "r") as handle:
            shape = json.load(handle)

    return Vocabulary(
        movie_ids=np.asarray(movie_ids, np.int64),
        movie_counts=np.asarray(counts, np.int64),
        movie_titles=tuple(titles),
        movie_years=np.asarray(years, np.int64),
        movie_genres=tuple(genres),
        user_ids=np.asarray(user_ids, np.int64),
        user_counts=np.asarray(user_counts, np.int64),
        genres=genre_vocab,
        years=year_vocab,
        max_context_length=shape.get(contract.MAX_CONTEXT_LENGTH),
        max_context_movie_genre_length=shape.get(contract.MAX_CONTEXT_MOVIE_GENRE_LENGTH),
    )
