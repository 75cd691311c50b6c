"""The trainer's input pipeline: parse specs, datasets and the vocabulary directory.

What the example generator writes (see ``components/example_gen/transforms.py``), and
the tensors :func:`make_dataset` yields for a batch of ``B`` examples:

Rating examples (retrieval, ranking, multitask)::

    user_id          int64   [B]
    movie_id         int64   [B]
    movie_title      string  [B]
    movie_genres     string  [B, (genres)]  (ragged; a movie may have none)
    movie_year       int64   [B]
    user_rating      float32 [B]
    timestamp        int64   [B]
    # 100k / 1m layouts only (``with_user_features=True``):
    user_age         int64   [B]
    user_gender, user_occupation, user_zip_code   string [B]

Sequence examples (sequential retrieval)::

    context_movie_id      int64   [B, L]   oldest first, padded with 0 at the end
    context_movie_rating  float32 [B, L]   padded with 0.0
    context_movie_year    int64   [B, L]   padded with 0
    context_movie_genre   string  [B, G]   padded with "UNK"
    label_movie_id        int64   [B]
    user_id               int64   [B]
    timestamp             int64   [B]

with ``L = max_context_length`` and ``G = max_context_movie_genre_length`` (10 and 10 by
default). Single-valued features are parsed to scalars per example (shape ``[B]``, not
``[B, 1]``), which is what the towers in :mod:`components.trainer.models` expect.

The vocabulary directory (``movies.tsv``, ``users.tsv``, ``genres.txt``, ``years.txt``)
is loaded whole by :func:`load_vocabulary`: it is catalogue-sized.

Everything reads through ``tf.io.gfile``, so artifact URIs on GCS work as local paths do.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from components import vocabulary_files

import numpy as np
import tensorflow as tf

# Feature names (the example generator's spelling).
USER_ID = "user_id"
MOVIE_ID = "movie_id"
MOVIE_TITLE = "movie_title"
MOVIE_GENRES = "movie_genres"
MOVIE_YEAR = "movie_year"
USER_RATING = "user_rating"
TIMESTAMP = "timestamp"
USER_AGE = "user_age"
USER_GENDER = "user_gender"
USER_OCCUPATION = "user_occupation"
USER_ZIP_CODE = "user_zip_code"

CONTEXT_MOVIE_ID = "context_movie_id"
CONTEXT_MOVIE_RATING = "context_movie_rating"
CONTEXT_MOVIE_YEAR = "context_movie_year"
CONTEXT_MOVIE_GENRE = "context_movie_genre"
LABEL_MOVIE_ID = "label_movie_id"

PAD_MOVIE_ID = 0
PAD_GENRE = "UNK"

MOVIES_FILE = "movies.tsv"
USERS_FILE = "users.tsv"
GENRES_FILE = "genres.txt"
YEARS_FILE = "years.txt"

FeatureSpec = Dict[str, Union[tf.io.FixedLenFeature, tf.io.RaggedFeature]]


# ---------------------------------------------------------------------------------------
# Parse specs.


def rating_feature_spec(with_user_features: bool = False) -> FeatureSpec:
    """The parse spec of rating examples (see the module docstring for the shapes).

    Args:
      with_user_features: also parse the demographic features that only the 100k and 1m
        layouts have.
    """
    spec: FeatureSpec = {
        USER_ID: tf.io.FixedLenFeature([], tf.int64),
        MOVIE_ID: tf.io.FixedLenFeature([], tf.int64),
        MOVIE_TITLE: tf.io.FixedLenFeature([], tf.string),
        MOVIE_GENRES: tf.io.RaggedFeature(tf.string),
        MOVIE_YEAR: tf.io.FixedLenFeature([], tf.int64),
        USER_RATING: tf.io.FixedLenFeature([], tf.float32),
        TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    }
    if with_user_features:
        spec.update({
            USER_AGE: tf.io.FixedLenFeature([], tf.int64),
            USER_GENDER: tf.io.FixedLenFeature([], tf.string),
            USER_OCCUPATION: tf.io.FixedLenFeature([], tf.string),
            USER_ZIP_CODE: tf.io.FixedLenFeature([], tf.string),
        })
    return spec


def sequence_feature_spec(
    max_context_length: int = 10, max_context_movie_genre_length: int = 10,
) -> FeatureSpec:
    """The parse spec of sequence examples (the example generator's padded lengths)."""
    length, genres = max_context_length, max_context_movie_genre_length
    return {
        CONTEXT_MOVIE_ID: tf.io.FixedLenFeature([length], tf.int64),
        CONTEXT_MOVIE_RATING: tf.io.FixedLenFeature([length], tf.float32),
        CONTEXT_MOVIE_YEAR: tf.io.FixedLenFeature([length], tf.int64),
        CONTEXT_MOVIE_GENRE: tf.io.FixedLenFeature([genres], tf.string),
        LABEL_MOVIE_ID: tf.io.FixedLenFeature([], tf.int64),
        USER_ID: tf.io.FixedLenFeature([], tf.int64),
        TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    }


def select(spec: FeatureSpec, names: Sequence[str]) -> FeatureSpec:
    """The part of ``spec`` a model reads (parsing fewer features is faster)."""
    missing = [name for name in names if name not in spec]
    if missing:
        raise KeyError(f"features {missing} are not in the spec ({sorted(spec)})")
    return {name: spec[name] for name in names}


# ---------------------------------------------------------------------------------------
# Datasets.


def list_files(file_pattern: Union[str, Sequence[str]]) -> List[str]:
    """The files matching one pattern or any of several (TFX passes a list), sorted.

    A directory stands for all its files (``Split-train/`` -> ``Split-train/*``).
    Raises FileNotFoundError when nothing matches.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files: List[str] = []
    for pattern in patterns:
        if tf.io.gfile.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        files.extend(tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no files match {patterns}")
    return sorted(set(files))


def make_dataset(
    file_pattern: Union[str, Sequence[str]],
    feature_spec: FeatureSpec,
    batch_size: int,
    shuffle: bool = True,
    seed: Optional[int] = None,
    *,
    num_epochs: Optional[int] = 1,
    shuffle_buffer: int = 100_000,
    drop_remainder: bool = False,
    cache: bool = False,
) -> tf.data.Dataset:
    """Batches of parsed features from gzipped TFRecord tf.Examples.

    Args:
      file_pattern: a glob, a directory, or a list of them (``fn_args.train_files``).
      feature_spec: from :func:`rating_feature_spec` / :func:`sequence_feature_spec`,
        possibly narrowed with :func:`select`.
      batch_size: examples per batch.
      shuffle: shuffle file order and examples (within ``shuffle_buffer``); the order
        is deterministic for a given ``seed``.
      seed: shuffle seed (None: nondeterministic).
      num_epochs: how many passes; None repeats forever (then pass ``steps_per_epoch``
        to ``fit``).
      shuffle_buffer: examples in the shuffle buffer (the MovieLens sets up to 1M fit).
      drop_remainder: drop the last, smaller batch (fixed shapes, e.g. for TPUs).
      cache: keep the parsed examples in memory after the first pass.

    Returns:
      A dataset of ``{name: tensor}`` dicts, tensors shaped as the module docstring says
      (``B`` = ``batch_size``).
    """
    files = list_files(file_pattern)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=seed is not None or not shuffle)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if num_epochs != 1:
        dataset = dataset.repeat(num_epochs)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(
        lambda serialized: tf.io.parse_example(serialized, feature_spec),
        num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def serialize_example(features: Mapping[str, Sequence]) -> bytes:
    """A serialized tf.Example of ``{name: [values]}`` (bytes/str, float or int lists,
    as the example generator writes them). For tests, notebooks and serving requests."""
    feature_map = {}
    for name, values in features.items():
        values = list(values)
        if values and isinstance(values[0], (bytes, str)):
            feature = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v.encode() if isinstance(v, str) else v for v in values]))
        elif values and isinstance(values[0], (float, np.floating)):
            feature = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif values:
            feature = tf.train.Feature(int64_list=tf.train.Int64List(
                value=[int(v) for v in values]))
        else:
            feature = tf.train.Feature(bytes_list=tf.train.BytesList())
        feature_map[name] = feature
    return tf.train.Example(
        features=tf.train.Features(feature=feature_map)).SerializeToString()


def dataset_from_examples(
    examples: Sequence[Mapping[str, Sequence]], feature_spec: FeatureSpec, batch_size: int,
) -> tf.data.Dataset:
    """Batches parsed exactly as :func:`make_dataset` would, from in-memory
    ``{name: [values]}`` dicts (serialized with :func:`serialize_example`)."""
    serialized = [serialize_example(example) for example in examples]
    return (tf.data.Dataset.from_tensor_slices(tf.constant(serialized, tf.string))
            .batch(batch_size)
            .map(lambda batch: tf.io.parse_example(batch, feature_spec)))


# ---------------------------------------------------------------------------------------
# The vocabulary directory.


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The catalogue the models embed and retrieve from, as the example generator wrote it.

    Movies are in ``movies.tsv`` order (most kept ratings first); row ``i`` of every
    movie array describes the same movie, and candidate embedding matrices are aligned
    with it (see ``models.catalogue_embeddings``).

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

    @property
    def num_movies(self) -> int:
        return int(self.movie_ids.shape[0])

    @property
    def num_users(self) -> int:
        return int(self.user_ids.shape[0])

    def movie_index(self) -> Dict[int, int]:
        """movie id -> row in the movie arrays."""
        return {int(movie_id): row for row, movie_id in enumerate(self.movie_ids)}

    def candidate_probabilities(self, smoothing: float = 1.0) -> np.ndarray:
        """float32 ``[M]``: how likely each movie is to be a random example's movie.

        This is the in-batch sampling probability that the log-Q correction of sampled
        softmax subtracts (``logit - log(p)``). ``smoothing`` is added to every count so
        that a never-rated movie has a finite log-probability. The counts are of *kept*
        ratings over both splits: close to, not exactly, the training distribution.
        """
        counts = self.movie_counts.astype(np.float64) + smoothing
        return (counts / counts.sum()).astype(np.float32)

    def popularity_scores(self) -> np.ndarray:
        """float32 ``[M]`` scores of the popularity baseline (log of the counts)."""
        return np.log1p(self.movie_counts.astype(np.float64)).astype(np.float32)


def _read_lines(path: str) -> List[str]:
    with tf.io.gfile.GFile(path, "r") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def load_vocabulary(vocabulary_dir: str) -> Vocabulary:
    """Reads the example generator's vocabulary directory.

    ``genres.txt`` and ``years.txt`` are optional (derived from the movies when absent).
    Raises ValueError naming the file and line of a malformed movie or user line.
    """
    movie_ids, counts, titles, years, genres = [], [], [], [], []
    path = os.path.join(vocabulary_dir, MOVIES_FILE)
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
    path = os.path.join(vocabulary_dir, USERS_FILE)
    if tf.io.gfile.exists(path):
        for number, line in enumerate(_read_lines(path), start=1):
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected 2 tab-separated fields")
            user_ids.append(int(fields[0]))
            user_counts.append(int(fields[1]))

    path = os.path.join(vocabulary_dir, GENRES_FILE)
    if tf.io.gfile.exists(path):
        genre_vocab = tuple(_read_lines(path))
    else:
        genre_vocab = (PAD_GENRE,) + tuple(sorted({g for gs in genres for g in gs} - {PAD_GENRE}))
    path = os.path.join(vocabulary_dir, YEARS_FILE)
    if tf.io.gfile.exists(path):
        year_vocab = tuple(int(line) for line in _read_lines(path))
    else:
        year_vocab = (0,) + tuple(sorted(set(years) - {0}))

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
    )


# ---------------------------------------------------------------------------------------
# Statistics the models need from the training data.


@dataclasses.dataclass(frozen=True)
class TimestampStats:
    """Normalization and bucket boundaries of the timestamp feature (plain numbers, so a
    model built from them can be rebuilt from its config).

    ``user_ids`` / ``user_first``: each user's first timestamp in the training data (empty
    when the statistics were computed without user ids). They give the user-relative time
    ("how long since this user's first rating"), which on MovieLens says more than the
    calendar time: users rate the popular movies first.
    """

    mean: float
    std: float
    boundaries: Tuple[float, ...]
    user_ids: Tuple[int, ...] = ()
    user_first: Tuple[float, ...] = ()

    def first_timestamps(self) -> Dict[int, float]:
        """user id -> first timestamp."""
        return dict(zip(self.user_ids, self.user_first))


def timestamp_stats(
    dataset: tf.data.Dataset, num_buckets: int = 1000, max_batches: Optional[int] = None,
    key: str = TIMESTAMP, user_key: str = USER_ID,
) -> TimestampStats:
    """Mean, standard deviation and ``num_buckets`` equal-width buckets of the timestamps,
    and each user's first timestamp when the batches also hold ``user_key``.

    Reads ``dataset`` (batches of feature dicts) once, or its first ``max_batches``.
    Equal-width buckets between the minimum and maximum, as in the featurization
    tutorial.
    """
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    count, total, total_sq = 0, 0.0, 0.0
    low, high = np.inf, -np.inf
    first: Dict[int, float] = {}
    with_users = user_key in dataset.element_spec
    keys = [key, user_key] if with_users else [key]
    for batch in dataset.map(lambda features: {name: features[name] for name in keys}):
        values = batch[key].numpy().astype(np.float64).ravel()
        if values.size == 0:
            continue
        if with_users:
            users = batch[user_key].numpy().ravel()
            order = np.lexsort((values, users))
            users, firsts = users[order], values[order]
            starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
            for user, value in zip(users[starts].tolist(), firsts[starts].tolist()):
                if value < first.get(user, np.inf):
                    first[user] = value
        count += values.size
        total += values.sum()
        total_sq += np.square(values).sum()
        low, high = min(low, values.min()), max(high, values.max())
    if count == 0:
        raise ValueError("no timestamps in the dataset")
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0))) or 1.0
    boundaries = np.linspace(low, high, num_buckets + 1)[1:-1] if high > low else []
    users = sorted(first)
    return TimestampStats(float(mean), std, tuple(float(b) for b in boundaries),
                          tuple(int(u) for u in users), tuple(first[u] for u in users))
