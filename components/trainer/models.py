"""TFRS models of the MovieLens tutorials, improved: retrieval, ranking, multitask, sequential.

Shapes (``B`` examples in a batch, ``D`` = ``embedding_dim``, ``M`` movies in the
vocabulary, ``L`` context length)::

    UserTower            {user_id [B], timestamp [B]?}      -> [B, D]   (+ global and
                                                                     user-relative time)
    MovieTower           movie ids [...] (any shape)        -> [..., D]
    SequenceQueryTower   {context_movie_id [B, L]}          -> [B, D]   (padding 0 masked)
    RetrievalModel       rating features -> query embedding [B, D]
    RankingModel         rating features -> rating [B], clipped to the star range
    MultitaskModel       rating features -> rating [B]; ``query_tower`` for retrieval
    SequentialModel      sequence features -> query embedding [B, D]

Design:

* Every tower is a Keras model, and the TFRS model owns exactly one loss-and-metrics
  task per objective (:class:`RetrievalTask`, ``tfrs.tasks.Ranking``).
* Movie side features (title tokens, genres) are looked up *by movie id* in tables built
  from the vocabulary directory, not read from the examples. So the candidate tower takes
  only ids: the same tower serves rating examples, sequence examples (which carry no
  label title/genres), the whole-catalogue embedding matrix and the GRU's context movies.
* Retrieval trains with a full softmax over the catalogue (logits = query x all movie
  embeddings; the presets' choice: a few thousand movies make it cheap, and it is
  unbiased) or, for large catalogues, with in-batch sampled softmax (log-Q correction
  and removal of accidental hits, via ``tfrs.tasks.Retrieval``). Top-K metrics
  (``tfrs.metrics.FactorizedTopK``) always range over the whole catalogue, re-embedded
  at every evaluation step by :class:`CatalogueTopK`, so no index goes stale.
* :class:`HParams` holds every knob; :meth:`HParams.from_dict` reads TFX
  ``custom_config`` on top of the model's tuned preset (:data:`PRESETS`, measured by
  ``benchmarks/quality.py``); :func:`build_model` and :func:`compile_model` turn it into
  a model (with :func:`training_timestamp_stats` when it reads timestamps).
* Ratings (ranking, multitask) = the rating head on the concatenated user and movie
  embeddings, plus optional user and movie biases (:class:`RatingBiases`).
* :func:`evaluate_retrieval` gives exact top-K accuracy over all movies, and excluding
  the movies each user rated in training; :func:`evaluate_ranking` gives RMSE in stars.
* :func:`export_query_model` and :func:`catalogue_embeddings` are what serving needs.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from components.trainer import features as F

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1

RETRIEVAL = "retrieval"
RANKING = "ranking"
MULTITASK = "multitask"
SEQUENTIAL = "sequential"
MODELS = (RETRIEVAL, RANKING, MULTITASK, SEQUENTIAL)

OPTIMIZERS = ("adagrad", "adam", "sgd", "rmsprop")
TIMESTAMP_FEATURES = ("global", "user_relative")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")

# AutoGraph: the models have no data-dependent Python control flow, and converting them --
# and, through them, the Keras internals they call -- made the first training step trace
# for ~20 s on a small CPU. So the models' train/test steps are not converted
# (_graph_safe), except tfrs.tasks.Retrieval.call, which needs AutoGraph (it takes
# ``len(tf.shape(x))``) and is converted alone (not the functions it calls).
_graph_safe = tf.autograph.experimental.do_not_convert
_retrieval_call = tf.autograph.to_graph(tfrs.tasks.Retrieval.call, recursive=False)


# ---------------------------------------------------------------------------------------
# Hyperparameters.


@dataclasses.dataclass(frozen=True)
class HParams:
    """Every hyperparameter of the trainer; built from TFX ``custom_config`` by
    :meth:`from_dict`, which starts from the model's tuned preset (:data:`PRESETS`).

    The field defaults below are generic starting points (and what ``HParams()`` gives);
    the presets are what ``benchmarks/quality.py`` measured on MovieLens-100K.

    Attributes:
      model: one of ``MODELS``.
      embedding_dim: ``D``, the width of every tower's output.
      epochs, batch_size, eval_batch_size: the training loop. In-batch softmax costs
        ``batch_size**2`` per step: 1024 trains several times faster per example than
        the tutorials' 8192, and (measured on synthetic ML-100K) no worse.
      learning_rate, optimizer: one of ``OPTIMIZERS`` (the tutorials use Adagrad 0.1).
      rating_weight, retrieval_weight: the multitask loss weights.
      use_timestamps: the user tower adds the ``timestamp_features``.
      use_title, use_genres: the movie tower adds pooled title-token and genre embeddings.
      full_softmax: retrieval loss over the whole catalogue instead of in-batch negatives
        (the presets' choice; on MovieLens-100K it beat in-batch softmax with log-Q).
      logq_correction: subtract log(sampling probability) from in-batch logits. On by
        default: without it in-batch negatives over-penalize popular movies, and on
        synthetic ML-100K top-10 (excluding rated movies) fell from 0.18 to 0.04, below
        the popularity baseline's 0.10. (No effect with ``full_softmax``.)
      remove_accidental_hits: ignore in-batch negatives that are the positive movie.
      temperature: divides the retrieval logits.
      tower_layers: hidden ReLU layers between a tower's concatenated features and its
        final linear ``D`` projection (only used when a tower has more than its id).
      rating_layers: hidden layers of the rating head (the tutorial's 256-64).
      share_embeddings: the sequential query tower embeds context movies with the
        candidate tower instead of a separate embedding.
      top_ks: the ``k`` of the top-K metrics.
      train_top_k_metrics: also compute the (slow) catalogue top-K metrics while
        training; otherwise only in evaluation.
      timestamp_buckets: equal-width buckets of the timestamp.
      title_max_tokens: title token vocabulary size (most frequent first).
      rating_min, rating_max: the served rating is clipped to this range.
      max_context_length, max_context_movie_genre_length: the sequence examples' padding.
      seed: initialization and shuffling seed.
      l2_regularization: L2 penalty (times the sum of squares) on every embedding table
        of the towers. Relative to the loss: the retrieval loss is summed over the batch,
        the rating loss averaged.
      mask_padding: the sequential GRU skips the padding (0) at the end of short
        histories. The tutorial does not (``False`` reproduces it): its GRU reads up to
        nine padding steps after the last movie.
      timestamp_features: with ``use_timestamps``, which encodings the user tower adds:
        ``"global"`` (normalized timestamp and its equal-width bucket, as in the
        featurization tutorial) and ``"user_relative"`` (time since the user's first
        training rating, log-scaled and bucketized; needs ``timestamp_stats`` computed
        with user ids).
      rating_biases: the rating adds a learned bias per user and per movie.
      rating_bias_l2: L2 penalty on those biases (the rating loss is a batch mean).
      rating_dot: the rating adds the dot product of the user and movie embeddings.
      learning_rate_schedule: ``"constant"`` or ``"cosine"`` (per epoch, over the
        ``epochs`` of the ``fit`` call; see :func:`learning_rate_callback`).
    """

    model: str = RETRIEVAL
    embedding_dim: int = 64
    epochs: int = 5
    batch_size: int = 1024
    eval_batch_size: int = 4096
    learning_rate: float = 0.1
    optimizer: str = "adagrad"
    rating_weight: float = 1.0
    retrieval_weight: float = 1.0
    use_timestamps: bool = False
    use_title: bool = False
    use_genres: bool = False
    full_softmax: bool = False
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    temperature: float = 1.0
    tower_layers: Tuple[int, ...] = ()
    rating_layers: Tuple[int, ...] = (256, 64)
    share_embeddings: bool = False
    top_ks: Tuple[int, ...] = (1, 5, 10, 50, 100)
    train_top_k_metrics: bool = False
    timestamp_buckets: int = 1000
    title_max_tokens: int = 10_000
    rating_min: float = 1.0
    rating_max: float = 5.0
    max_context_length: int = 10
    max_context_movie_genre_length: int = 10
    seed: int = 0
    l2_regularization: float = 0.0
    mask_padding: bool = True
    timestamp_features: Tuple[str, ...] = TIMESTAMP_FEATURES
    rating_biases: bool = False
    rating_bias_l2: float = 0.0
    rating_dot: bool = False
    learning_rate_schedule: str = "constant"

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {self.model!r}")
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ValueError(f"learning_rate_schedule must be one of "
                             f"{LEARNING_RATE_SCHEDULES}, not {self.learning_rate_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        for name in ("embedding_dim", "epochs", "batch_size", "eval_batch_size",
                     "timestamp_buckets", "title_max_tokens", "max_context_length",
                     "max_context_movie_genre_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.l2_regularization < 0 or self.rating_bias_l2 < 0:
            raise ValueError("L2 penalties must be non-negative")
        unknown = sorted(set(self.timestamp_features) - set(TIMESTAMP_FEATURES))
        if unknown:
            raise ValueError(f"unknown timestamp_features {unknown}; known: "
                             f"{TIMESTAMP_FEATURES}")
        if self.rating_weight < 0 or self.retrieval_weight < 0:
            raise ValueError("loss weights must be non-negative")
        if self.model == MULTITASK and self.rating_weight + self.retrieval_weight == 0:
            raise ValueError("at least one multitask loss weight must be positive")
        if not self.top_ks or min(self.top_ks) < 1:
            raise ValueError(f"top_ks must be positive integers, not {self.top_ks}")
        if not self.rating_min < self.rating_max:
            raise ValueError("rating_min must be below rating_max")

    @classmethod
    def from_dict(cls, config: Optional[Mapping[str, Any]],
                  preset: bool = True) -> "HParams":
        """Builds the hyperparameters from a plain dict (TFX ``custom_config``).

        With ``preset`` (the default), missing keys take the tuned values of
        ``PRESETS[config["model"]]`` (``"retrieval"`` when no model is given), then the
        field defaults; without it, the field defaults only. Values are coerced to the
        field's type (JSON lists become tuples, "true"/"false" strings become
        booleans). Unknown keys raise ValueError, so that a misspelt knob does not
        silently train the default.
        """
        config = dict(config or {})
        if preset:
            model = str(config.get("model", RETRIEVAL))
            if model not in PRESETS:
                raise ValueError(f"model must be one of {MODELS}, not {model!r}")
            config = {**PRESETS[model], **config}
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - set(fields))
        if unknown:
            raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in config.items():
            try:
                values[name] = _coerce(hints[name], value)
            except (TypeError, ValueError) as error:
                raise ValueError(f"hyperparameter {name}={value!r}: {error}") from None
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict that :meth:`from_dict` turns back into these values."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in dataclasses.asdict(self).items()}


# The tuned hyperparameters of each model (on top of the field defaults), as measured by
# benchmarks/quality.py on MovieLens-100K (random 80/20 ratings; the sequential
# tutorial's 90/10 sequence examples). What they buy, against the tutorials' recipes:
#
# * retrieval: a full softmax over the catalogue (what top-K measures; in-batch negatives
#   without log-Q push popular movies down), 128 dimensions, Adam, L2 on the embeddings
#   (top-K over *all* movies falls as the model memorizes each user's training movies),
#   and context: title and genres on the movie side, the global and user-relative time
#   on the user side (users rate the popular movies first).
# * ranking: user and movie biases beside the 256-64 head, Adam for 10 epochs instead
#   of 3 of Adagrad (the tutorial's RMSE is mostly under-training), light L2.
# * multitask: the retrieval preset's towers, Adam, and the ranking preset's rating
#   biases; the loss weights (1, 1) over the tutorial's losses: the retrieval loss is
#   summed over the batch and the rating loss averaged, so the shared towers follow
#   retrieval and the rating head and biases fit the ratings on top of them.
# * sequential: full softmax, padding masked, context movies embedded by the candidate
#   tower (shared), Adagrad 0.1 for 6 epochs.
# All decay the learning rate per epoch along a cosine: with a constant Adam rate the
# figures swing by about 1% from one epoch to the next.
PRESETS: Dict[str, Dict[str, Any]] = {
    RETRIEVAL: dict(
        model=RETRIEVAL, embedding_dim=128, epochs=6, batch_size=1024, optimizer="adam",
        learning_rate=0.003, learning_rate_schedule="cosine", full_softmax=True,
        l2_regularization=0.05, use_timestamps=True, use_title=True, use_genres=True),
    RANKING: dict(
        model=RANKING, embedding_dim=64, epochs=10, batch_size=1024, optimizer="adam",
        learning_rate=0.001, learning_rate_schedule="cosine", l2_regularization=0.003,
        rating_biases=True, use_title=True, use_genres=True),
    MULTITASK: dict(
        model=MULTITASK, embedding_dim=128, epochs=6, batch_size=1024, optimizer="adam",
        learning_rate=0.003, learning_rate_schedule="cosine", full_softmax=True,
        l2_regularization=0.05, use_timestamps=True, use_title=True, use_genres=True,
        rating_biases=True, rating_bias_l2=1e-4, rating_weight=1.0, retrieval_weight=1.0),
    SEQUENTIAL: dict(
        model=SEQUENTIAL, embedding_dim=64, epochs=6, batch_size=1024,
        optimizer="adagrad", learning_rate=0.1, learning_rate_schedule="cosine",
        full_softmax=True, share_embeddings=True, mask_padding=True),
}


def _coerce(hint, value):
    if hint is bool:
        if isinstance(value, str):
            if value.strip().lower() in ("true", "1", "yes"):
                return True
            if value.strip().lower() in ("false", "0", "no"):
                return False
            raise ValueError("expected a boolean")
        if isinstance(value, (bool, int, np.integer)):
            return bool(value)
        raise ValueError("expected a boolean")
    if hint is int:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError("expected an integer")
        return int(float(value))
    if hint is float:
        return float(value)
    if hint is str:
        return str(value)
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            value = [part for part in re.split(r"[,\s]+", value) if part]
        (item_type, _) = typing.get_args(hint)
        return tuple(_coerce(item_type, item) for item in value)
    raise TypeError(f"unsupported type {hint}")


def make_optimizer(hparams: HParams) -> keras.optimizers.Optimizer:
    """The optimizer ``hparams.optimizer`` at ``hparams.learning_rate``."""
    lr = hparams.learning_rate
    return {
        "adagrad": lambda: keras.optimizers.Adagrad(lr),
        "adam": lambda: keras.optimizers.Adam(lr),
        "sgd": lambda: keras.optimizers.SGD(lr),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr),
    }[hparams.optimizer]()


# ---------------------------------------------------------------------------------------
# Feature encoders.


_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}\)\s*$")


def title_tokens(title: str) -> List[str]:
    """Lower-case word tokens of a title, without its trailing "(YYYY)"."""
    return re.findall(r"\w+", _YEAR_SUFFIX.sub("", title).lower())


def _title_token_table(titles: Sequence[str], max_tokens: int, max_length: int = 20):
    """``[M + 1, T]`` int32 token ids (0 = padding; row 0 = unknown movie) and the vocab
    size (padding included), tokens by frequency."""
    tokenized = [title_tokens(title)[:max_length] for title in titles]
    counts = collections.Counter(token for tokens in tokenized for token in tokens)
    vocab = [token for token, _ in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0]))]
    index = {token: i + 2 for i, token in enumerate(vocab[:max_tokens])}  # 1 = OOV token
    length = max([len(tokens) for tokens in tokenized] + [1])
    table = np.zeros((len(titles) + 1, length), np.int32)
    for row, tokens in enumerate(tokenized, start=1):
        table[row, :len(tokens)] = [index.get(token, 1) for token in tokens]
    return table, len(index) + 2


def _genre_weight_table(movie_genres: Sequence[Sequence[str]], genres: Sequence[str]):
    """``[M + 1, G]`` float32: each movie's genres, weights summing to 1 (row 0 and
    movies without a known genre: the "UNK" genre, column 0)."""
    index = {genre: i for i, genre in enumerate(genres)}
    table = np.zeros((len(movie_genres) + 1, len(genres)), np.float32)
    table[0, 0] = 1.0
    for row, names in enumerate(movie_genres, start=1):
        columns = sorted({index[name] for name in names if name in index})
        if columns:
            table[row, columns] = 1.0 / len(columns)
        else:
            table[row, 0] = 1.0
    return table


class TimestampEncoder(keras.layers.Layer):
    """int64 timestamps ``[B]`` -> float32 ``[B, 1 + D]``: the normalized value and an
    embedding of its equal-width bucket (the featurization tutorial's two encodings).

    Arithmetic is in float64: float32 cannot resolve seconds at 1e9.
    """

    def __init__(self, stats: F.TimestampStats, embedding_dim: int, l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self._mean = float(stats.mean)
        self._std = float(stats.std)
        self._boundaries = tf.constant(list(stats.boundaries) or [self._mean], tf.float64)
        self.bucket_embedding = keras.layers.Embedding(
            len(stats.boundaries) + 2, embedding_dim, embeddings_regularizer=_regularizer(l2),
            name="bucket_embedding")

    @_graph_safe
    def call(self, timestamps, training=None, mask=None):
        values = tf.cast(tf.reshape(timestamps, [-1]), tf.float64)
        normalized = tf.cast((values - self._mean) / self._std, tf.float32)
        buckets = tf.searchsorted(self._boundaries, values, side="right")
        return tf.concat([normalized[:, None], self.bucket_embedding(buckets)], axis=-1)


# Bucket boundaries of the user-relative time, in seconds since the user's first rating.
RELATIVE_TIME_BOUNDARIES = (
    1, 30, 60, 120, 300, 600, 1200, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400,
    2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400, 120 * 86400, 240 * 86400,
    365 * 86400)
_YEAR_SECONDS = 365.25 * 86400


class RelativeTimeEncoder(keras.layers.Layer):
    """(user rows ``[B]``, int64 timestamps ``[B]``) -> float32 ``[B, 1 + D]``: how long
    after the user's first training rating this one is -- log-scaled, and an embedding of
    its bucket (:data:`RELATIVE_TIME_BOUNDARIES`, from one second to a year).

    ``first_timestamps`` is aligned with the user lookup's rows (row 0: unknown users);
    NaN (a user without training ratings) counts as time 0, a new user.
    """

    def __init__(self, first_timestamps: np.ndarray, embedding_dim: int, l2: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self._first = tf.constant(np.asarray(first_timestamps, np.float64))
        self._boundaries = tf.constant(RELATIVE_TIME_BOUNDARIES, tf.float64)
        self.bucket_embedding = keras.layers.Embedding(
            len(RELATIVE_TIME_BOUNDARIES) + 1, embedding_dim,
            embeddings_regularizer=_regularizer(l2), name="relative_bucket_embedding")

    @_graph_safe
    def call(self, inputs, training=None, mask=None):
        rows, timestamps = inputs
        values = tf.cast(tf.reshape(timestamps, [-1]), tf.float64)
        first = tf.gather(self._first, tf.reshape(rows, [-1]))
        elapsed = tf.maximum(tf.where(tf.math.is_nan(first), tf.zeros_like(values),
                                      values - first), 0.0)
        scaled = tf.cast(tf.math.log1p(elapsed) / np.log1p(_YEAR_SECONDS), tf.float32)
        buckets = tf.searchsorted(self._boundaries, elapsed, side="right")
        return tf.concat([scaled[:, None], self.bucket_embedding(buckets)], axis=-1)


def _regularizer(l2: float):
    return keras.regularizers.l2(l2) if l2 > 0 else None


def _projection(hidden: Sequence[int], dim: int, name: str) -> keras.Sequential:
    layers = [keras.layers.Dense(units, activation="relu") for units in hidden]
    layers.append(keras.layers.Dense(dim))
    return keras.Sequential(layers, name=name)


# ---------------------------------------------------------------------------------------
# Towers.


class UserTower(keras.Model):
    """The query tower of rating-based retrieval (and the user half of ranking).

    Input: ``{"user_id": int64 [B], "timestamp": int64 [B]}`` (the timestamp only with
    ``timestamp_stats``; other keys are ignored). Output: float32 ``[B, D]``.

    Without timestamps it is the tutorial's user-id embedding. With them, the id
    embedding and the ``timestamp_features`` -- ``"global"``: the normalized timestamp and
    its bucket embedding (:class:`TimestampEncoder`); ``"user_relative"``: the time since
    the user's first training rating (:class:`RelativeTimeEncoder`, needs the per-user
    first timestamps of ``timestamp_stats``) -- are concatenated and projected to ``D``
    through ``tower_layers``.
    """

    def __init__(self, user_ids: np.ndarray, embedding_dim: int,
                 timestamp_stats: Optional[F.TimestampStats] = None,
                 tower_layers: Sequence[int] = (), name: str = "user_tower",
                 l2: float = 0.0,
                 timestamp_features: Sequence[str] = ("global", "user_relative")):
        super().__init__(name=name)
        if len(user_ids) == 0:
            raise ValueError("the user vocabulary is empty")
        self.lookup = keras.layers.IntegerLookup(
            vocabulary=np.asarray(user_ids, np.int64), mask_token=None, num_oov_indices=1,
            name="user_lookup")
        self.embedding = keras.layers.Embedding(
            len(user_ids) + 1, embedding_dim, embeddings_regularizer=_regularizer(l2),
            name="user_embedding")
        unknown = sorted(set(timestamp_features) - set(TIMESTAMP_FEATURES))
        if unknown:
            raise ValueError(f"unknown timestamp features {unknown}; known: {TIMESTAMP_FEATURES}")
        self.timestamp = self.relative_time = None
        if timestamp_stats is not None and "global" in timestamp_features:
            self.timestamp = TimestampEncoder(timestamp_stats, embedding_dim, l2,
                                              name="timestamp")
        if timestamp_stats is not None and "user_relative" in timestamp_features:
            if not timestamp_stats.user_ids:
                raise ValueError("user_relative time needs timestamp_stats with user ids "
                                 "(features.timestamp_stats over batches holding user_id)")
            first = timestamp_stats.first_timestamps()
            self.relative_time = RelativeTimeEncoder(
                [np.nan] + [first.get(int(user), np.nan) for user in user_ids],
                embedding_dim, l2, name="relative_time")
        uses_time = self.timestamp is not None or self.relative_time is not None
        self.projection = (_projection(tower_layers, embedding_dim, "user_projection")
                           if uses_time or tower_layers else None)

    @_graph_safe
    def call(self, inputs, training=None, mask=None):
        rows = self.lookup(inputs[F.USER_ID])
        embedding = self.embedding(rows)
        if self.projection is None:
            return embedding
        parts = [embedding]
        if self.timestamp is not None:
            parts.append(self.timestamp(inputs[F.TIMESTAMP]))
        if self.relative_time is not None:
            parts.append(self.relative_time((rows, inputs[F.TIMESTAMP])))
        return self.projection(tf.concat(parts, axis=-1))


class MovieTower(keras.Model):
    """The candidate tower: movie ids of any shape ``[...]`` -> float32 ``[..., D]``.

    Accepts the ids tensor, or a dict holding it under ``"movie_id"``. The id embedding
    is, with ``use_title`` / ``use_genres``, concatenated with the mean embedding of the
    title's tokens and the mean embedding of the movie's genres -- both looked up by id
    in tables built from the vocabulary -- and projected to ``D``. Unknown ids (and the
    padding id 0) get the shared out-of-vocabulary row.
    """

    def __init__(self, vocabulary: F.Vocabulary, embedding_dim: int,
                 use_title: bool = False, use_genres: bool = False,
                 tower_layers: Sequence[int] = (), title_max_tokens: int = 10_000,
                 name: str = "movie_tower", l2: float = 0.0):
        super().__init__(name=name)
        self.lookup = keras.layers.IntegerLookup(
            vocabulary=vocabulary.movie_ids, mask_token=None, num_oov_indices=1,
            name="movie_lookup")
        self.embedding = keras.layers.Embedding(
            vocabulary.num_movies + 1, embedding_dim, embeddings_regularizer=_regularizer(l2),
            name="movie_embedding")
        self.title_embedding = self.genre_embedding = None
        if use_title:
            table, tokens = _title_token_table(vocabulary.movie_titles, title_max_tokens)
            self._title_table = tf.constant(table)
            self.title_embedding = keras.layers.Embedding(
                tokens, embedding_dim, name="title_token_embedding")
        if use_genres:
            self._genre_table = tf.constant(
                _genre_weight_table(vocabulary.movie_genres, vocabulary.genres))
            # Weighted sum of genre vectors = a bias-free Dense on the genre weights.
            self.genre_embedding = keras.layers.Dense(
                embedding_dim, use_bias=False, name="genre_embedding")
        extras = use_title or use_genres
        self.projection = (_projection(tower_layers, embedding_dim, "movie_projection")
                           if extras or tower_layers else None)

    @_graph_safe
    def call(self, inputs, training=None, mask=None):
        ids = inputs[F.MOVIE_ID] if isinstance(inputs, Mapping) else inputs
        index = self.lookup(ids)
        embedding = self.embedding(index)
        if self.projection is None:
            return embedding
        parts = [embedding]
        if self.title_embedding is not None:
            tokens = tf.gather(self._title_table, index)                  # [..., T]
            weights = tf.cast(tokens > 0, tf.float32)
            token_embeddings = self.title_embedding(tokens)              # [..., T, D]
            total = tf.reduce_sum(token_embeddings * weights[..., None], axis=-2)
            parts.append(total / tf.maximum(tf.reduce_sum(weights, -1, keepdims=True), 1.0))
        if self.genre_embedding is not None:
            parts.append(self.genre_embedding(tf.gather(self._genre_table, index)))
        return self.projection(tf.concat(parts, axis=-1))


class SequenceQueryTower(keras.Model):
    """The sequential tutorial's query tower: context movies -> GRU -> ``[B, D]``.

    Input: ``{"context_movie_id": int64 [B, L]}`` (or the tensor), oldest first, padded
    with 0 at the end. Padding is masked: the GRU's output is its state after the last
    real movie, whatever the padding length (a ``[B, 3]`` history and the same history
    padded to ``[B, 10]`` embed identically).

    The context movies are embedded by their own embedding, or with
    ``movie_tower`` by the candidate tower itself (shared item representations).
    """

    def __init__(self, vocabulary: F.Vocabulary, embedding_dim: int,
                 movie_tower: Optional[MovieTower] = None, name: str = "sequence_query_tower",
                 mask_padding: bool = True, l2: float = 0.0):
        super().__init__(name=name)
        self.movie_tower = movie_tower
        if movie_tower is None:
            # mask_token=0 maps the padding id to index 0, which mask_zero then masks.
            self.lookup = keras.layers.IntegerLookup(
                vocabulary=vocabulary.movie_ids, mask_token=F.PAD_MOVIE_ID,
                num_oov_indices=1, name="context_movie_lookup")
            self.embedding = keras.layers.Embedding(
                vocabulary.num_movies + 2, embedding_dim, mask_zero=mask_padding,
                embeddings_regularizer=_regularizer(l2), name="context_movie_embedding")
        self.mask_padding = mask_padding
        self.gru = keras.layers.GRU(embedding_dim, name="gru")

    @_graph_safe
    def call(self, inputs, training=None, mask=None):
        ids = inputs[F.CONTEXT_MOVIE_ID] if isinstance(inputs, Mapping) else inputs
        mask = tf.not_equal(ids, F.PAD_MOVIE_ID) if self.mask_padding else None
        if self.movie_tower is not None:
            sequence = self.movie_tower(ids)
        else:
            sequence = self.embedding(self.lookup(ids))
        return self.gru(sequence, mask=mask)


# ---------------------------------------------------------------------------------------
# Retrieval task and catalogue metrics.


class CatalogueTopK(tfrs.layers.factorized_top_k.TopK):
    """Exact top-K over the whole catalogue, re-embedded by the candidate tower at every
    call (so it is never stale during training). Returns (scores, movie ids)."""

    def __init__(self, candidate_tower: keras.Model, movie_ids: np.ndarray, k: int = 100,
                 name: str = "catalogue_top_k"):
        super().__init__(k=k, name=name)
        self.candidate_tower = candidate_tower
        self._ids = tf.constant(np.asarray(movie_ids, np.int64))

    def index(self, candidates, identifiers=None):
        raise NotImplementedError("CatalogueTopK embeds its catalogue itself")

    @_graph_safe
    def call(self, queries, k=None, training=None, mask=None):  # pylint: disable=unused-argument
        k = min(k or self._k, int(self._ids.shape[0]))
        scores = tf.matmul(queries, self.candidate_tower(self._ids), transpose_b=True)
        values, rows = tf.math.top_k(scores, k=k)
        return values, tf.gather(self._ids, rows)

    def is_exact(self) -> bool:
        return True


class RetrievalTask(keras.layers.Layer, tfrs.tasks.base.Task):
    """Retrieval loss and top-K metrics over the catalogue, in one task.

    ``call(query_embeddings [B, D], candidate_embeddings [B, D], candidate_ids [B])``
    returns the scalar loss (summed over the batch, as ``tfrs.tasks.Retrieval`` does):

    * sampled softmax (default): in-batch negatives via ``tfrs.tasks.Retrieval`` with
      ``candidate_sampling_probability`` (log-Q correction, from the vocabulary's movie
      counts) and ``remove_accidental_hits`` (``candidate_ids`` = movie ids);
    * ``full_softmax``: cross-entropy of logits = query x all ``M`` catalogue embeddings
      ``[B, M]`` against the label's catalogue row -- unbiased, and what top-K measures.

    With ``compute_metrics``, ``FactorizedTopK`` (named ``factorized_top_k``) updates
    top-``ks`` accuracy over the whole catalogue, id-based.
    """

    def __init__(self, candidate_tower: keras.Model, vocabulary: F.Vocabulary, *,
                 full_softmax: bool = False, logq_correction: bool = False,
                 remove_accidental_hits: bool = True, temperature: float = 1.0,
                 ks: Sequence[int] = (1, 5, 10, 50, 100), name: str = "retrieval_task"):
        super().__init__(name=name)
        self.candidate_tower = candidate_tower
        self._full_softmax = full_softmax
        self._temperature = float(temperature)
        self._catalogue_ids = tf.constant(vocabulary.movie_ids)
        self._row_lookup = keras.layers.IntegerLookup(
            vocabulary=vocabulary.movie_ids, mask_token=None, num_oov_indices=1,
            name="catalogue_row_lookup")
        self._sampling_probability = None
        if logq_correction and not full_softmax:
            probabilities = vocabulary.candidate_probabilities()
            # Row 0: movies outside the vocabulary (never seen): the rarest probability.
            self._sampling_probability = tf.constant(
                np.concatenate([[probabilities.min()], probabilities]).astype(np.float32))
        self.top_k = tfrs.metrics.FactorizedTopK(
            CatalogueTopK(candidate_tower, vocabulary.movie_ids, k=max(ks)), ks=tuple(ks))
        self.sampled = tfrs.tasks.Retrieval(
            metrics=self.top_k, remove_accidental_hits=remove_accidental_hits,
            temperature=None if self._temperature == 1.0 else self._temperature)

    def catalogue_rows(self, movie_ids):
        """Movie ids -> rows of the vocabulary (-1 for ids outside it)."""
        return self._row_lookup(movie_ids) - 1

    def call(self, query_embeddings, candidate_embeddings, candidate_ids,
             sample_weight=None, compute_metrics: bool = True):
        if not self._full_softmax:
            probability = None
            if self._sampling_probability is not None:
                probability = tf.gather(self._sampling_probability,
                                        self._row_lookup(candidate_ids))
            return _retrieval_call(
                self.sampled, query_embeddings, candidate_embeddings,
                sample_weight=sample_weight,
                candidate_sampling_probability=probability, candidate_ids=candidate_ids,
                compute_metrics=compute_metrics)

        catalogue = self.candidate_tower(self._catalogue_ids)                  # [M, D]
        logits = tf.matmul(query_embeddings, catalogue, transpose_b=True) / self._temperature
        rows = self.catalogue_rows(candidate_ids)
        known = tf.cast(rows >= 0, tf.float32)
        weight = known if sample_weight is None else known * sample_weight
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(rows, 0), logits=logits)
        loss = tf.reduce_sum(losses * weight)
        if compute_metrics:
            update = self.top_k.update_state(
                query_embeddings, candidate_embeddings, true_candidate_ids=candidate_ids,
                sample_weight=sample_weight)
            with tf.control_dependencies([update]):
                loss = tf.identity(loss)
        return loss


def _ranking_task() -> tfrs.tasks.Ranking:
    return tfrs.tasks.Ranking(
        loss=keras.losses.MeanSquaredError(),
        metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])


def _rating_head(layers: Sequence[int], rating_min: float, rating_max: float):
    """Dense ReLU layers then one linear unit, its bias starting mid-scale."""
    head = [keras.layers.Dense(units, activation="relu") for units in layers]
    # MovieLens ratings average ~3.5 stars (0.5 above mid-scale): start there.
    head.append(keras.layers.Dense(
        1, bias_initializer=keras.initializers.Constant((rating_min + rating_max) / 2 + 0.5)))
    return keras.Sequential(head, name="rating_head")


class RatingBiases(keras.layers.Layer):
    """``{"user_id": [B], "movie_id": [B]}`` -> float32 ``[B]``: a learned bias per user
    plus one per movie (the classic baseline predictor; the global mean is the rating
    head's output bias). Unknown ids share a row with bias 0 at the start."""

    def __init__(self, vocabulary: F.Vocabulary, l2: float = 0.0, name: str = "rating_biases"):
        super().__init__(name=name)
        self.user_lookup = keras.layers.IntegerLookup(
            vocabulary=np.asarray(vocabulary.user_ids, np.int64), mask_token=None,
            num_oov_indices=1, name="bias_user_lookup")
        self.movie_lookup = keras.layers.IntegerLookup(
            vocabulary=vocabulary.movie_ids, mask_token=None, num_oov_indices=1,
            name="bias_movie_lookup")
        self.user_bias = keras.layers.Embedding(
            vocabulary.num_users + 1, 1, embeddings_initializer="zeros",
            embeddings_regularizer=_regularizer(l2), name="user_bias")
        self.movie_bias = keras.layers.Embedding(
            vocabulary.num_movies + 1, 1, embeddings_initializer="zeros",
            embeddings_regularizer=_regularizer(l2), name="movie_bias")

    @_graph_safe
    def call(self, features, training=None, mask=None):
        users = self.user_bias(self.user_lookup(features[F.USER_ID]))
        movies = self.movie_bias(self.movie_lookup(features[F.MOVIE_ID]))
        return tf.reshape(users + movies, [-1])


def _raw_rating(model, features, user, movie):
    """The unclipped rating ``[B]`` of ranking and multitask models: the rating head on
    the concatenated user and movie embeddings, plus (``rating_dot``) their dot product
    and (``rating_biases``) the user and movie biases."""
    raw = tf.squeeze(model.rating_head(tf.concat([user, movie], axis=-1)), axis=-1)
    if model.hparams.rating_dot:
        raw += tf.reduce_sum(user * movie, axis=-1)
    if model.rating_biases is not None:
        raw += model.rating_biases(features)
    return raw


# ---------------------------------------------------------------------------------------
# Models.


class _Model(tfrs.Model):
    """``tfrs.Model`` whose train and test steps AutoGraph leaves alone (see
    ``_graph_safe``), and whose ``fit`` follows ``hparams.learning_rate_schedule``."""

    @_graph_safe
    def train_step(self, inputs):
        return super().train_step(inputs)

    @_graph_safe
    def test_step(self, inputs):
        return super().test_step(inputs)

    def fit(self, *args, **kwargs):
        """``keras.Model.fit``, plus the learning-rate schedule's callback (over the
        ``epochs`` of this call), so that every caller trains on the same schedule."""
        schedule = learning_rate_callback(self.hparams, kwargs.get("epochs", 1))
        if schedule is not None:
            kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [schedule]
        return super().fit(*args, **kwargs)


def learning_rate_callback(hparams: HParams, epochs: int
                           ) -> Optional[keras.callbacks.Callback]:
    """The callback that sets each epoch's learning rate (None for a constant one).

    ``"cosine"``: epoch ``e`` of ``epochs`` trains at
    ``learning_rate * (1 + cos(pi * e / epochs)) / 2`` -- the full rate first, then
    smaller steps, which settle the evaluation figures that a constant Adam rate leaves
    fluctuating from epoch to epoch.
    """
    if hparams.learning_rate_schedule == "constant":
        return None
    epochs = max(int(epochs), 1)

    def rate(epoch, _current=None):
        return float(hparams.learning_rate * 0.5 * (1.0 + np.cos(np.pi * epoch / epochs)))

    return keras.callbacks.LearningRateScheduler(rate)


class _TwoTowerModel(_Model):
    """Retrieval by two towers: ``call(features)`` -> query embeddings ``[B, D]``;
    ``compute_loss`` embeds ``features[label_key]`` with the candidate tower and applies
    ``task``. Subclasses build ``query_tower``, ``candidate_tower`` and ``task``."""

    label_key: str

    @_graph_safe
    def call(self, features, training=None, mask=None):
        return self.query_tower(features)

    def compute_loss(self, features, training=False):
        ids = features[self.label_key]
        return self.task(
            self.query_tower(features), self.candidate_tower(ids), ids,
            compute_metrics=not training or self.hparams.train_top_k_metrics)


class RetrievalModel(_TwoTowerModel):
    """Two-tower retrieval on rating examples (the retrieval/featurization tutorials).

    ``call(features)`` -> query embeddings ``[B, D]``. ``compute_loss`` embeds
    ``features["movie_id"]`` with the candidate tower and applies :class:`RetrievalTask`.
    Top-K metrics are computed in evaluation (and in training with
    ``train_top_k_metrics``).
    """

    label_key = F.MOVIE_ID

    def __init__(self, vocabulary: F.Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[F.TimestampStats] = None):
        super().__init__(name="retrieval_model")
        self.hparams = hparams
        self.query_tower = _user_tower(vocabulary, hparams, timestamp_stats)
        self.candidate_tower = _movie_tower(vocabulary, hparams)
        self.task = _retrieval_task(self.candidate_tower, vocabulary, hparams)


class RankingModel(_Model):
    """The ranking tutorial's model: user and movie embeddings -> dense 256-64-1.

    ``call(features)`` -> predicted ratings ``[B]`` in stars, clipped to
    ``[rating_min, rating_max]`` (what serving returns). Training minimizes the MSE of the
    unclipped prediction; evaluation reports loss and ``rmse`` of the clipped one.
    """

    def __init__(self, vocabulary: F.Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[F.TimestampStats] = None):
        super().__init__(name="ranking_model")
        self.hparams = hparams
        self.user_tower = _user_tower(vocabulary, hparams, timestamp_stats)
        self.movie_tower = _movie_tower(vocabulary, hparams)
        self.rating_head, self.rating_biases = _rating_parts(vocabulary, hparams)
        self.task = _ranking_task()

    @_graph_safe
    def raw_ratings(self, features):
        """Unclipped predictions ``[B]``."""
        return _raw_rating(self, features, self.user_tower(features),
                           self.movie_tower(features[F.MOVIE_ID]))

    @_graph_safe
    def call(self, features, training=None, mask=None):
        return tf.clip_by_value(
            self.raw_ratings(features), self.hparams.rating_min, self.hparams.rating_max)

    @_graph_safe
    def compute_loss(self, features, training=False):
        predictions = self.raw_ratings(features) if training else self(features)
        return self.task(labels=features[F.USER_RATING], predictions=predictions)


class MultitaskModel(_Model):
    """The multitask tutorial: shared user and movie towers, a rating head on their
    concatenation, and a retrieval task on their dot product.

    Loss = ``rating_weight`` x MSE + ``retrieval_weight`` x retrieval loss.
    ``call(features)`` -> clipped ratings ``[B]``; ``query_tower`` / ``candidate_tower``
    serve retrieval as in :class:`RetrievalModel`.
    """

    label_key = F.MOVIE_ID

    def __init__(self, vocabulary: F.Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[F.TimestampStats] = None):
        super().__init__(name="multitask_model")
        self.hparams = hparams
        self.query_tower = _user_tower(vocabulary, hparams, timestamp_stats)
        self.candidate_tower = _movie_tower(vocabulary, hparams)
        self.rating_head, self.rating_biases = _rating_parts(vocabulary, hparams)
        self.rating_task = _ranking_task()
        self.retrieval_task = _retrieval_task(self.candidate_tower, vocabulary, hparams)

    @_graph_safe
    def _forward(self, features):
        query = self.query_tower(features)
        candidate = self.candidate_tower(features[F.MOVIE_ID])
        return query, candidate, _raw_rating(self, features, query, candidate)

    @_graph_safe
    def call(self, features, training=None, mask=None):
        _, _, raw = self._forward(features)
        return tf.clip_by_value(raw, self.hparams.rating_min, self.hparams.rating_max)

    def compute_loss(self, features, training=False):
        query, candidate, raw = self._forward(features)
        if not training:
            raw = tf.clip_by_value(raw, self.hparams.rating_min, self.hparams.rating_max)
        rating_loss = self.rating_task(labels=features[F.USER_RATING], predictions=raw)
        retrieval_loss = self.retrieval_task(
            query, candidate, features[F.MOVIE_ID],
            compute_metrics=not training or self.hparams.train_top_k_metrics)
        return (self.hparams.rating_weight * rating_loss
                + self.hparams.retrieval_weight * retrieval_loss)


class SequentialModel(_TwoTowerModel):
    """The sequential tutorial: a GRU over the user's last movies retrieves the next one.

    ``call(features)`` -> query embeddings ``[B, D]`` from ``context_movie_id``
    ``[B, L]``; the label is ``label_movie_id`` ``[B]``, embedded by the candidate tower.
    """

    label_key = F.LABEL_MOVIE_ID

    def __init__(self, vocabulary: F.Vocabulary, hparams: HParams,
                 timestamp_stats: Optional[F.TimestampStats] = None):
        del timestamp_stats  # the sequence examples' timestamp is not a query feature here
        super().__init__(name="sequential_model")
        self.hparams = hparams
        self.candidate_tower = _movie_tower(vocabulary, hparams)
        self.query_tower = SequenceQueryTower(
            vocabulary, hparams.embedding_dim,
            movie_tower=self.candidate_tower if hparams.share_embeddings else None,
            mask_padding=hparams.mask_padding, l2=hparams.l2_regularization)
        self.task = _retrieval_task(self.candidate_tower, vocabulary, hparams)



def _rating_parts(vocabulary, hparams):
    """The rating head and, if ``hparams.rating_biases``, the user/movie bias terms."""
    head = _rating_head(hparams.rating_layers, hparams.rating_min, hparams.rating_max)
    biases = (RatingBiases(vocabulary, hparams.rating_bias_l2)
              if hparams.rating_biases else None)
    return head, biases


def _user_tower(vocabulary, hparams, timestamp_stats):
    if hparams.use_timestamps and timestamp_stats is None:
        raise ValueError("use_timestamps needs timestamp_stats (features.timestamp_stats)")
    return UserTower(vocabulary.user_ids, hparams.embedding_dim,
                     timestamp_stats if hparams.use_timestamps else None, hparams.tower_layers,
                     l2=hparams.l2_regularization,
                     timestamp_features=hparams.timestamp_features)


def _movie_tower(vocabulary, hparams):
    return MovieTower(vocabulary, hparams.embedding_dim, hparams.use_title, hparams.use_genres,
                      hparams.tower_layers, hparams.title_max_tokens,
                      l2=hparams.l2_regularization)


def _retrieval_task(candidate_tower, vocabulary, hparams):
    return RetrievalTask(
        candidate_tower, vocabulary, full_softmax=hparams.full_softmax,
        logq_correction=hparams.logq_correction,
        remove_accidental_hits=hparams.remove_accidental_hits,
        temperature=hparams.temperature, ks=hparams.top_ks)


_MODEL_CLASSES = {RETRIEVAL: RetrievalModel, RANKING: RankingModel,
                  MULTITASK: MultitaskModel, SEQUENTIAL: SequentialModel}


def build_model(hparams: HParams, vocabulary: F.Vocabulary,
                timestamp_stats: Optional[F.TimestampStats] = None) -> tfrs.Model:
    """The (uncompiled) model ``hparams.model``, initialized from ``hparams.seed``."""
    keras.utils.set_random_seed(hparams.seed)
    return _MODEL_CLASSES[hparams.model](vocabulary, hparams, timestamp_stats)


def training_timestamp_stats(hparams: HParams, file_pattern,
                             max_batches: Optional[int] = None
                             ) -> Optional[F.TimestampStats]:
    """What :func:`build_model` needs as ``timestamp_stats``: None unless the model's
    user tower reads timestamps; otherwise the statistics of the *training* files'
    timestamps, with each user's first one (for ``"user_relative"``)."""
    if not hparams.use_timestamps or hparams.model == SEQUENTIAL:
        return None
    spec = F.select(F.rating_feature_spec(), [F.USER_ID, F.TIMESTAMP])
    dataset = F.make_dataset(file_pattern, spec, hparams.eval_batch_size, shuffle=False)
    return F.timestamp_stats(dataset, hparams.timestamp_buckets, max_batches)


def compile_model(model: tfrs.Model, hparams: HParams) -> tfrs.Model:
    model.compile(optimizer=make_optimizer(hparams))
    return model


def feature_spec(hparams: HParams, with_user_features: bool = False) -> F.FeatureSpec:
    """The parse spec of exactly the features ``hparams.model`` reads."""
    if hparams.model == SEQUENTIAL:
        spec = F.sequence_feature_spec(hparams.max_context_length,
                                       hparams.max_context_movie_genre_length)
        return F.select(spec, [F.CONTEXT_MOVIE_ID, F.LABEL_MOVIE_ID, F.USER_ID])
    names = [F.USER_ID, F.MOVIE_ID]
    if hparams.model in (RANKING, MULTITASK):
        names.append(F.USER_RATING)
    if hparams.use_timestamps:
        names.append(F.TIMESTAMP)
    return F.select(F.rating_feature_spec(with_user_features), names)


def input_dataset(hparams: HParams, file_pattern, training: bool,
                  with_user_features: bool = False) -> tf.data.Dataset:
    """The batches ``hparams.model`` trains (``training``: shuffled, ``batch_size``) or
    evaluates on (in file order, ``eval_batch_size``) from gzipped TFRecord files."""
    return F.make_dataset(
        file_pattern, feature_spec(hparams, with_user_features),
        hparams.batch_size if training else hparams.eval_batch_size,
        shuffle=training, seed=hparams.seed)


# ---------------------------------------------------------------------------------------
# Evaluation.


def catalogue_embeddings(candidate_tower: keras.Model, vocabulary: F.Vocabulary,
                         batch_size: int = 8192) -> np.ndarray:
    """float32 ``[M, D]``: row ``i`` embeds ``vocabulary.movie_ids[i]``."""
    ids = vocabulary.movie_ids
    return np.concatenate([
        candidate_tower(tf.constant(ids[start:start + batch_size])).numpy()
        for start in range(0, len(ids), batch_size)])


def top_k_accuracy(query_embeddings: np.ndarray, catalogue: np.ndarray,
                   label_rows: np.ndarray, ks: Sequence[int] = (1, 5, 10, 50, 100),
                   exclude_rows: Optional[Sequence[Optional[np.ndarray]]] = None,
                   batch_size: int = 1024) -> Dict[str, float]:
    """Exact top-K accuracy of dot-product retrieval over the whole catalogue.

    Args:
      query_embeddings: ``[Q, D]``.
      catalogue: ``[M, D]`` candidate embeddings.
      label_rows: ``[Q]`` the true movie's row in ``catalogue`` (-1: not in it, a miss).
      ks: the ``k`` values.
      exclude_rows: per query, rows whose scores become -inf (the movies the user rated
        in training); the label's own row is never excluded.
      batch_size: queries scored at once.

    Returns:
      ``{"top_{k}": fraction of queries whose label ranks within the first k}`` and
      ``"queries"``. A candidate scoring the same as the label counts as above it.
    """
    label_rows = np.asarray(label_rows, np.int64)
    num_queries = len(label_rows)
    ranks = np.empty(num_queries, np.int64)
    for start in range(0, num_queries, batch_size):
        stop = min(start + batch_size, num_queries)
        scores = np.asarray(query_embeddings[start:stop], np.float32) @ catalogue.T
        rows = label_rows[start:stop]
        valid = rows >= 0
        label_scores = scores[np.arange(stop - start), np.maximum(rows, 0)]
        if exclude_rows is not None:
            for i, excluded in enumerate(exclude_rows[start:stop]):
                if excluded is not None and len(excluded):
                    scores[i, excluded] = -np.inf
        scores[np.arange(stop - start), np.maximum(rows, 0)] = -np.inf  # the label itself
        rank = (scores >= label_scores[:, None]).sum(axis=1)
        ranks[start:stop] = np.where(valid, rank, np.iinfo(np.int64).max)
    result = {f"top_{k}": float(np.mean(ranks < k)) if num_queries else 0.0 for k in ks}
    result["queries"] = num_queries
    return result


def movie_rows(vocabulary: F.Vocabulary, movie_ids: np.ndarray) -> np.ndarray:
    """Vocabulary rows of ``movie_ids`` (-1 for unknown ids and padding)."""
    order = np.argsort(vocabulary.movie_ids)
    sorted_ids = vocabulary.movie_ids[order]
    ids = np.asarray(movie_ids, np.int64)
    position = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[position] == ids, order[position], -1)


def user_history(dataset: tf.data.Dataset, vocabulary: F.Vocabulary,
                 movie_keys: Sequence[str] = (F.MOVIE_ID,),
                 user_key: str = F.USER_ID) -> Dict[int, np.ndarray]:
    """user id -> sorted vocabulary rows of the movies under ``movie_keys`` in
    ``dataset`` (batches). For rating examples: ``("movie_id",)``; for sequence examples:
    ``("label_movie_id", "context_movie_id")`` (padding ignored)."""
    history: Dict[int, set] = collections.defaultdict(set)
    for batch in dataset:
        users = batch[user_key].numpy().reshape(-1)
        for key in movie_keys:
            ids = batch[key].numpy().reshape(len(users), -1)
            rows = movie_rows(vocabulary, ids)
            for user, user_rows in zip(users, rows):
                history[int(user)].update(int(r) for r in user_rows if r >= 0)
    return {user: np.asarray(sorted(rows), np.int64) for user, rows in history.items()}


def _collect_queries(query_fn, dataset, label_key, max_batches=None):
    queries, labels, users = [], [], []
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        queries.append(np.asarray(query_fn(batch)))
        labels.append(batch[label_key].numpy().reshape(-1))
        users.append(batch[F.USER_ID].numpy().reshape(-1))
    if not queries:
        return np.zeros((0, 1), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(queries), np.concatenate(labels), np.concatenate(users)


def evaluate_retrieval(model: keras.Model, dataset: tf.data.Dataset,
                       vocabulary: F.Vocabulary, ks: Sequence[int] = (1, 5, 10, 50, 100),
                       history: Optional[Mapping[int, np.ndarray]] = None,
                       max_batches: Optional[int] = None) -> Dict[str, float]:
    """Top-K accuracy of a retrieval, multitask or sequential model over all movies.

    ``model`` needs ``query_tower``, ``candidate_tower`` and ``label_key``. With
    ``history`` (from :func:`user_history` over the *training* data), also reports
    ``top_{k}_excluding_rated``: the movies each user rated in training are masked out
    (never the label itself), as a recommender would do.
    """
    catalogue = catalogue_embeddings(model.candidate_tower, vocabulary)
    queries, labels, users = _collect_queries(
        lambda batch: model.query_tower(batch).numpy(), dataset, model.label_key, max_batches)
    return _retrieval_report(queries, catalogue, movie_rows(vocabulary, labels), users, ks,
                             history)


def evaluate_popularity(dataset: tf.data.Dataset, vocabulary: F.Vocabulary,
                        label_key: str = F.MOVIE_ID, ks: Sequence[int] = (1, 5, 10, 50, 100),
                        history: Optional[Mapping[int, np.ndarray]] = None,
                        counts: Optional[np.ndarray] = None,
                        max_batches: Optional[int] = None) -> Dict[str, float]:
    """The popularity baseline, scored like :func:`evaluate_retrieval`: every user gets
    the most-rated movies (``counts`` ``[M]``, default the vocabulary's counts)."""
    counts = vocabulary.movie_counts if counts is None else np.asarray(counts)
    catalogue = np.log1p(counts.astype(np.float64)).astype(np.float32)[:, None]
    queries, labels, users = _collect_queries(
        lambda batch: np.ones((len(batch[label_key]), 1), np.float32), dataset, label_key,
        max_batches)
    return _retrieval_report(queries, catalogue, movie_rows(vocabulary, labels), users, ks,
                             history)


def _retrieval_report(queries, catalogue, label_rows, users, ks, history):
    report = top_k_accuracy(queries, catalogue, label_rows, ks)
    if history is not None:
        excluded = [history.get(int(user)) for user in users]
        masked = top_k_accuracy(queries, catalogue, label_rows, ks, exclude_rows=excluded)
        report.update({f"{name}_excluding_rated": value for name, value in masked.items()
                       if name != "queries"})
    return report


def evaluate_ranking(model: keras.Model, dataset: tf.data.Dataset,
                     max_batches: Optional[int] = None) -> Dict[str, float]:
    """RMSE and MAE in stars of the served (clipped) ratings, and the RMSE of always
    predicting the mean label (a sanity baseline)."""
    errors, labels = [], []
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        label = batch[F.USER_RATING].numpy().reshape(-1)
        errors.append(model(batch).numpy().reshape(-1) - label)
        labels.append(label)
    errors, labels = np.concatenate(errors), np.concatenate(labels)
    return {"rmse": float(np.sqrt(np.mean(errors ** 2))),
            "mae": float(np.mean(np.abs(errors))),
            "mean_rating_rmse": float(np.std(labels)),
            "examples": int(len(labels))}


# ---------------------------------------------------------------------------------------
# Export.


def query_input_signature(hparams: HParams) -> Dict[str, tf.TensorSpec]:
    """The raw tensors the query tower of ``hparams.model`` reads at serving."""
    if hparams.model == SEQUENTIAL:
        return {F.CONTEXT_MOVIE_ID: tf.TensorSpec([None, None], tf.int64, F.CONTEXT_MOVIE_ID)}
    signature = {F.USER_ID: tf.TensorSpec([None], tf.int64, F.USER_ID)}
    if hparams.use_timestamps:
        signature[F.TIMESTAMP] = tf.TensorSpec([None], tf.int64, F.TIMESTAMP)
    if hparams.model == RANKING:
        signature[F.MOVIE_ID] = tf.TensorSpec([None], tf.int64, F.MOVIE_ID)
    return signature


class QueryModule(tf.Module):
    """A SavedModel-friendly wrapper of a query tower (or of a ranking model).

    Signatures: ``serving_default`` takes the raw tensors of
    :func:`query_input_signature` and returns ``{"query_embedding": [B, D]}`` (ranking:
    ``{"rating": [B]}``); ``serve_tf_examples`` takes serialized tf.Examples ``[B]``.
    """

    def __init__(self, model: keras.Model, hparams: HParams):
        super().__init__()
        self.model = model
        self._ranking = hparams.model == RANKING
        self._tower = model if self._ranking else model.query_tower
        signature = query_input_signature(hparams)
        spec = feature_spec(hparams)
        parse_spec = {name: spec[name] for name in signature}

        @tf.function(input_signature=[signature])
        def serve(inputs):
            output = self._tower(inputs)
            return {"rating": output} if self._ranking else {"query_embedding": output}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, "examples")])
        def serve_tf_examples(serialized):
            return serve(tf.io.parse_example(serialized, parse_spec))

        self.serve = serve
        self.serve_tf_examples = serve_tf_examples


def export_query_model(model: keras.Model, hparams: HParams, export_dir: str) -> str:
    """Saves :class:`QueryModule` of ``model`` as a SavedModel under ``export_dir``."""
    module = QueryModule(model, hparams)
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.serve.get_concrete_function(),
        "serve_tf_examples": module.serve_tf_examples.get_concrete_function(),
    })
    return export_dir


def brute_force_index(model: keras.Model, vocabulary: F.Vocabulary,
                      k: int = 100) -> tfrs.layers.factorized_top_k.BruteForce:
    """A ``BruteForce`` top-``k`` index over the catalogue (ids = movie ids) that takes
    raw query features; call it once before ``tf.saved_model.save``."""
    index = tfrs.layers.factorized_top_k.BruteForce(
        model.query_tower, k=min(k, vocabulary.num_movies))
    index.index(tf.constant(catalogue_embeddings(model.candidate_tower, vocabulary)),
                tf.constant(vocabulary.movie_ids))
    return index

