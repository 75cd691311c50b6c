"""The Trainer's input pipeline: parse specs, datasets, and statistics of the training data.

What the example generator writes (components/example_gen/transforms.py; the names are
components/contract.py's), and the tensors :func:`make_dataset` yields for a batch of
``B`` examples:

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

with ``L`` and ``G`` the lengths the example generator padded to, read from its
vocabulary output (:class:`~components.trainer.vocabulary.Vocabulary`). Single-valued
features are parsed to scalars per example (shape ``[B]``, not ``[B, 1]``), which is what
the towers expect.

Everything reads through ``tf.io.gfile``, so artifact URIs on GCS work as local paths do.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components import contract
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary

FeatureSpec = Dict[str, Union[tf.io.FixedLenFeature, tf.io.RaggedFeature]]
# Examples in the training shuffle buffer (the MovieLens sets up to 1M fit whole).
SHUFFLE_BUFFER = 100_000


def rating_feature_spec(with_user_features: bool = False) -> FeatureSpec:
    """The parse spec of rating examples (see the module docstring for the shapes).

    Args:
      with_user_features: also parse the demographic features that only the 100k and 1m
        layouts have.
    """
    spec: FeatureSpec = {
        contract.USER_ID: tf.io.FixedLenFeature([], tf.int64),
        contract.MOVIE_ID: tf.io.FixedLenFeature([], tf.int64),
        contract.MOVIE_TITLE: tf.io.FixedLenFeature([], tf.string),
        contract.MOVIE_GENRES: tf.io.RaggedFeature(tf.string),
        contract.MOVIE_YEAR: tf.io.FixedLenFeature([], tf.int64),
        contract.USER_RATING: tf.io.FixedLenFeature([], tf.float32),
        contract.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    }
    if with_user_features:
        spec.update({
            contract.USER_AGE: tf.io.FixedLenFeature([], tf.int64),
            contract.USER_GENDER: tf.io.FixedLenFeature([], tf.string),
            contract.USER_OCCUPATION: tf.io.FixedLenFeature([], tf.string),
            contract.USER_ZIP_CODE: tf.io.FixedLenFeature([], tf.string),
        })
    return spec


def sequence_feature_spec(max_context_length: int,
                          max_context_movie_genre_length: int) -> FeatureSpec:
    """The parse spec of sequence examples, padded to the lengths the example generator
    wrote (``Vocabulary.max_context_length`` / ``max_context_movie_genre_length``)."""
    length, genres = max_context_length, max_context_movie_genre_length
    return {
        contract.CONTEXT_MOVIE_ID: tf.io.FixedLenFeature([length], tf.int64),
        contract.CONTEXT_MOVIE_RATING: tf.io.FixedLenFeature([length], tf.float32),
        contract.CONTEXT_MOVIE_YEAR: tf.io.FixedLenFeature([length], tf.int64),
        contract.CONTEXT_MOVIE_GENRE: tf.io.FixedLenFeature([genres], tf.string),
        contract.LABEL_MOVIE_ID: tf.io.FixedLenFeature([], tf.int64),
        contract.USER_ID: tf.io.FixedLenFeature([], tf.int64),
        contract.TIMESTAMP: tf.io.FixedLenFeature([], tf.int64),
    }


def select(spec: FeatureSpec, names: Sequence[str]) -> FeatureSpec:
    """The part of ``spec`` a model reads (parsing fewer features is faster)."""
    missing = [name for name in names if name not in spec]
    if missing:
        raise KeyError(f"features {missing} are not in the spec ({sorted(spec)})")
    return {name: spec[name] for name in names}


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
    cache: bool = False,
) -> tf.data.Dataset:
    """Batches of parsed features from gzipped TFRecord tf.Examples.

    Args:
      file_pattern: a glob, a directory, or a list of them (``fn_args.train_files``).
      feature_spec: from :func:`rating_feature_spec` / :func:`sequence_feature_spec`,
        possibly narrowed with :func:`select`.
      batch_size: examples per batch.
      shuffle: shuffle file order and examples (within ``SHUFFLE_BUFFER``); the order
        is deterministic for a given ``seed``.
      seed: shuffle seed (None: nondeterministic).
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
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda serialized: tf.io.parse_example(serialized, feature_spec),
        num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_examples(file_pattern) -> int:
    """The number of records in gzipped TFRecord files (streamed, nothing parsed)."""
    # Sequential reads, counted per batch: parallel reads and a per-record reduce
    # were each several times slower.
    records = tf.data.TFRecordDataset(list_files(file_pattern), compression_type="GZIP")
    return int(records.batch(8192).reduce(
        np.int64(0), lambda count, batch: count + tf.size(batch, out_type=tf.int64)))


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


def examples_spec(kind: contract.ModelKind, vocabulary: Vocabulary,
                  with_user_features: bool = False) -> FeatureSpec:
    """The parse spec of every feature of the examples ``kind`` trains on."""
    if kind.examples == contract.SEQUENCE:
        return sequence_feature_spec(*vocabulary.sequence_shape())
    return rating_feature_spec(with_user_features)


def feature_spec(hparams: HParams, vocabulary: Vocabulary,
                 with_user_features: bool = False) -> FeatureSpec:
    """The parse spec of exactly the features ``hparams.model`` reads: its query and
    label features, the user, the rating if it rates, the timestamp if it reads one
    (its towers, or the recency prior in training)."""
    kind = hparams.kind
    names = [contract.USER_ID, kind.label_key, *kind.query_keys]
    if kind.rates:
        names.append(contract.USER_RATING)
    if (hparams.use_timestamps or hparams.recency_windows_days) \
            and kind.examples == contract.RATING:
        names.append(contract.TIMESTAMP)
    return select(examples_spec(kind, vocabulary, with_user_features),
                  list(dict.fromkeys(names)))


def input_dataset(hparams: HParams, vocabulary: Vocabulary, file_pattern, training: bool,
                  with_user_features: bool = False) -> tf.data.Dataset:
    """The batches ``hparams.model`` trains (``training``: shuffled, ``batch_size``) or
    evaluates on (in file order, ``eval_batch_size``) from gzipped TFRecord files."""
    return make_dataset(
        file_pattern, feature_spec(hparams, vocabulary, with_user_features),
        hparams.batch_size if training else hparams.eval_batch_size,
        shuffle=training, seed=hparams.seed)


def training_timestamp_stats(hparams: HParams, file_pattern,
                             max_batches: Optional[int] = None
                             ) -> Optional[TimestampStats]:
    """What :func:`models.build_model` needs as ``timestamp_stats``: None unless the model's
    user tower reads timestamps; otherwise the statistics of the *training* files'
    timestamps, with each user's first one (for ``"user_relative"``)."""
    if not hparams.use_timestamps or hparams.kind.examples != contract.RATING:
        return None
    spec = select(rating_feature_spec(), [contract.USER_ID, contract.TIMESTAMP])
    dataset = make_dataset(file_pattern, spec, hparams.eval_batch_size, shuffle=False)
    return timestamp_stats(dataset, hparams.timestamp_buckets, max_batches)


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
    key: str = contract.TIMESTAMP, user_key: str = contract.USER_ID,
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
