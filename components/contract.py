"""The names that cross a boundary between components, in one TensorFlow-free module.

Everything one component writes and another reads is named here once: the example
generator's features and padding, its outputs and vocabulary files, the Trainer's export
files and signatures, the served signatures, and the model kinds with what each reads.
Both sides of every boundary import these names; neither spells the string itself.

Importing this module imports neither TensorFlow nor TFX (the CLI's parser, Beam workers
and ``recommend`` use it).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

# --- Features of the examples (the example generator writes, the Trainer parses) --------

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
USER_FEATURES = (USER_AGE, USER_GENDER, USER_OCCUPATION, USER_ZIP_CODE)

CONTEXT_MOVIE_ID = "context_movie_id"
CONTEXT_MOVIE_RATING = "context_movie_rating"
CONTEXT_MOVIE_YEAR = "context_movie_year"
CONTEXT_MOVIE_GENRE = "context_movie_genre"
LABEL_MOVIE_ID = "label_movie_id"

# Padding of the sequence examples' context lists (and of served histories).
PAD_MOVIE_ID = 0
PAD_RATING = 0.0
PAD_YEAR = 0
PAD_GENRE = "UNK"

# --- The example generator's outputs ------------------------------------------------------

SEQUENCE = "sequence"  # the two kinds of examples
RATING = "rating"
EXAMPLE_KINDS = (SEQUENCE, RATING)
TRAIN, EVAL = "train", "eval"
SPLITS = (TRAIN, EVAL)

SEQUENCE_EXAMPLES = "sequence_examples"  # output keys of MovieLensExampleGen
RATING_EXAMPLES = "rating_examples"
VOCABULARY = "vocabulary"
STATISTICS = "statistics"


def examples_key(example_kind: str) -> str:
    """The example generator's output key of one kind of examples."""
    return {SEQUENCE: SEQUENCE_EXAMPLES, RATING: RATING_EXAMPLES}[example_kind]


# Files of the vocabulary output (copied into the Trainer's export and the served models).
MOVIES_FILE = "movies.tsv"
USERS_FILE = "users.tsv"
GENRES_FILE = "genres.txt"
YEARS_FILE = "years.txt"
# The padded lengths of the sequence examples, as the example generator wrote them:
# {"max_context_length": L, "max_context_movie_genre_length": G}. The Trainer, the Pusher
# and ``recommend`` read them from here, never from a default of their own.
SEQUENCE_SHAPE_FILE = "sequence_shape.json"
MAX_CONTEXT_LENGTH = "max_context_length"
MAX_CONTEXT_MOVIE_GENRE_LENGTH = "max_context_movie_genre_length"
STATISTICS_FILE = "statistics.json"
# Beside statistics.json: small histograms of the kept ratings (per day, per user, per
# movie), combined in the example generator's Beam pipeline (components/example_gen/
# distributions.py); the run report draws them.
DISTRIBUTIONS_FILE = "distributions.json"

# --- The Trainer's export -----------------------------------------------------------------

EXTRA_ASSETS = "assets.extra"  # beside the SavedModel; TF Serving ignores it
CANDIDATES_FILE = "candidates.npz"  # movie_ids [M], embeddings [M, D]
RATED_FILE = "rated.npz"  # each user's movies in the examples (what serving leaves out)
METRICS_FILE = "metrics.json"
# The Trainer's seeded sample of eval users (user_ids [U]), when it evaluated on one:
# the Evaluator then evaluates on the same users.
EVAL_USERS_FILE = "eval_users.npz"
# How many users such a sample holds: a metrics.json key, and a custom property of the
# Evaluator's blessing and evaluation (absent: every user).
EVAL_SAMPLED_USERS = "eval_sampled_users"
# metrics.json's per-epoch training figures: a list of {"epoch": 1, "loss": ..., ...}, one
# per epoch, as Keras reported them: each loss and metric over the epoch's steps, not its
# last step's (the run report's training curves).
METRICS_HISTORY = "history"

SERVING_SIGNATURE = "serving_default"
TF_EXAMPLES_SIGNATURE = "serve_tf_examples"
TRANSFORM_SIGNATURE = "transform_features"
EVAL_SIGNATURE = "eval_ranks"
EXAMPLES_INPUT = "examples"
QUERY_EMBEDDING = "query_embedding"  # serving_default's output (retrieval-like models)
RATING_OUTPUT = "rating"  # serving_default's output (ranking)
SCORES = "scores"  # the served models' scores of their top k [B, k]
# eval_ranks' outputs [B]: how many movies of the whole catalogue score above the label
# (MISSING_RANK: the label is not in the catalogue); the same with the user's training
# movies (never the label) left out.
LABEL_RANK = "label_rank"
LABEL_RANK_EXCLUDING_RATED = "label_rank_excluding_rated"
MISSING_RANK = 2.0 ** 31  # a miss at every k
LABEL_INDEX = "label_index"  # transform_features' outputs
USER_ACTIVITY = "user_activity"
MOVIE_POPULARITY = "movie_popularity"
UNKNOWN_BUCKET = "unknown"

# --- The served models (the Pusher writes, ``recommend`` reads) ----------------------------

BRUTE_FORCE = "brute_force"  # served variants: exact scoring with stock TF ops,
SCANN = "scann"  # and a ScaNN index (served under <model>_scann/)
SERVING_INFO_FILE = "serving.json"
RECOMMEND_SIGNATURE = "serving_default"
EXCLUDING_SIGNATURE = "recommend_excluding"
# Only for a model that reads a query time: serving_default's inputs plus "timestamp".
QUERY_TIME_SIGNATURE = "recommend_at_time"
K_INPUT = "k"
EXCLUDE_INPUT = "exclude_movie_ids"
MOVIE_IDS_OUTPUT = "movie_ids"
TITLES_OUTPUT = "titles"
SAVED_MODEL_FILE = "saved_model.pb"  # TF Serving loads a version once this is there

# --- The two-stage served model (components/two_stage; ``recommend --two-stage``) --------
# <serving_root>/two_stage[_scann]/<version>/: the pushed retrieval model's top N
# candidates (the user's rated movies left out), re-scored by the pushed ranking model.
TWO_STAGE = "two_stage"
RANKING_SCORES_OUTPUT = "ranking_scores"  # the predicted rating: the final order
RETRIEVAL_SCORES_OUTPUT = "retrieval_scores"  # the retrieval model's dot product
# serving.json of a two-stage version: the pushed versions it combines, by stage.
STAGES = "stages"
NUM_CANDIDATES = "num_candidates"

# --- Batch recommendations (components/batch_recommend) ----------------------------------
# Under the BatchRecommender's output: tfrecords/part-*.tfrecord.gz (one tf.Example per
# row) and parquet/part-*.parquet, with these columns, and batch.json (users, seconds,
# users per second, the model read).
BATCH_TFRECORD_DIR = "tfrecords"
BATCH_PARQUET_DIR = "parquet"
BATCH_STATS_FILE = "batch.json"
RANK = "rank"  # 1 = best
RANKING_SCORE = "ranking_score"
RETRIEVAL_SCORE = "retrieval_score"
BATCH_COLUMNS = (USER_ID, RANK, MOVIE_ID, MOVIE_TITLE, RANKING_SCORE, RETRIEVAL_SCORE)
USERS_PER_SECOND = "users_per_second"

# --- The run report (pipeline_runner.py report; pipeline/run_report.py) -------------------

REPORT_DIR = "reports"  # under the output root: one self-contained HTML page per run

# --- Model kinds ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """What one kind of model reads and does; every branch on the kind reads this table.

    name: the kind (``HParams.model``).
    examples: which examples it trains on (``SEQUENCE`` or ``RATING``).
    label_key: the feature it predicts (the retrieved movie, or the rated movie).
    history_keys: the features holding a user's movies in its examples (what the
      evaluation and serving leave out as already seen).
    query_keys: the raw features its query side reads at serving (besides an optional
      timestamp, which depends on the hyperparameters).
    retrieves: it embeds queries and movies, is evaluated by top-K accuracy over the
      catalogue and served with an index (brute force and ScaNN variants).
    rates: it predicts ratings, evaluated by RMSE.
    """

    name: str
    examples: str
    label_key: str
    history_keys: Tuple[str, ...]
    query_keys: Tuple[str, ...]
    retrieves: bool
    rates: bool

    @property
    def examples_key(self) -> str:
        return examples_key(self.examples)

    @property
    def gated_on_rmse(self) -> bool:
        """Its Evaluator gates on RMSE (a pure rating model); otherwise on top-K."""
        return self.rates and not self.retrieves


RETRIEVAL = "retrieval"
RANKING = "ranking"
MULTITASK = "multitask"
SEQUENTIAL = "sequential"  # a GRU over the last movies
ATTENTION = "attention"  # causal self-attention over the last movies (SASRec-style)

MODEL_KINDS: Dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind(RETRIEVAL, RATING, MOVIE_ID, (MOVIE_ID,), (USER_ID,),
              retrieves=True, rates=False),
    ModelKind(RANKING, RATING, MOVIE_ID, (MOVIE_ID,), (USER_ID, MOVIE_ID),
              retrieves=False, rates=True),
    ModelKind(MULTITASK, RATING, MOVIE_ID, (MOVIE_ID,), (USER_ID,),
              retrieves=True, rates=True),
    ModelKind(SEQUENTIAL, SEQUENCE, LABEL_MOVIE_ID, (LABEL_MOVIE_ID, CONTEXT_MOVIE_ID),
              (CONTEXT_MOVIE_ID,), retrieves=True, rates=False),
    ModelKind(ATTENTION, SEQUENCE, LABEL_MOVIE_ID, (LABEL_MOVIE_ID, CONTEXT_MOVIE_ID),
              (CONTEXT_MOVIE_ID,), retrieves=True, rates=False),
)}


def model_kind(name: str) -> ModelKind:
    """The table row of a model kind; ValueError naming the known kinds otherwise."""
    try:
        return MODEL_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {sorted(MODEL_KINDS)}") from None
