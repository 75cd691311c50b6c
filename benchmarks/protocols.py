"""The evaluation protocols of the quality benchmark: the examples each one splits, and
the arrays the baselines read.

* ``tutorial``: the TFRS tutorials' splits (rating examples 80/20 at random by a seeded
  hash; sequence examples 90/10 at random per example). A user's held-out rating or
  next movie also sits inside their training data's time span (and, for sequences, in
  later examples' contexts): kept only to compare with the tutorials.
* ``temporal`` (rating models): one global time cutoff, the last 20% of ratings in time
  go to eval (``ExampleGenConfig(split_strategy="honest")``: its rating examples). Validation, for tuning
  the baselines, is the last 10% in time of the training ratings (the same cut, inside
  train).
* ``leave_last_out`` (sequence models): each user's last kept rating is the eval label
  (its context: up to ``max_context_length`` earlier movies); validation is each user's
  last *training* example (the rating before it), derived here from the train split,
  not a third split of the pipeline.

Metrics on the honest protocols (:func:`score_metrics`, the Trainer's own streamed
figures for our models): for every held-out example, the label's rank among every movie
of the catalogue except the user's earlier movies (their training ratings; under
leave-last-out all their earlier kept movies) -- HR@10 (``top_10``), NDCG@10
(``ndcg_10``), Recall@100 (``top_100``) -- averaged over held-out examples. Under
leave-last-out each user has one, so these are the usual per-user figures; under the
temporal split they are averaged over held-out ratings (a user with more of them weighs
more). Temporal eval is restricted to users with a training rating (the others are cold
starts no method here can rank for; their number is reported).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from benchmarks import baselines
from components import contract
from components.trainer import evaluation as trainer_eval
from components.trainer import histories, inputs
from components.trainer import vocabulary as vocab_lib

TUTORIAL, TEMPORAL, LEAVE_LAST_OUT = "tutorial", "temporal", "leave_last_out"
PROTOCOLS = (TUTORIAL, TEMPORAL, LEAVE_LAST_OUT)
# Which example generation each protocol reads (its ExampleGenConfig.split_strategy):
# "honest" splits ratings temporally and sequences leave-last-out in one run.
SPLIT_STRATEGY = {TUTORIAL: "random", TEMPORAL: "honest", LEAVE_LAST_OUT: "honest"}
# Validation inside the temporal protocol's training split: its last share in time.
VALIDATION_FRACTION = 0.1
# The real MovieLens-100K, never copied into the repository: this variable, else here.
ML100K_ENV = "MOVIELENS_100K_DIR"
DEFAULT_DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
KS = (1, 5, 10, 50, 100)


def generate_examples(data_dir: str, out: str, split_strategy: str, seed: int = 42,
                      **settings):
    """Runs the example generator (in-process, DirectRunner) with ``split_strategy`` (of
    :data:`SPLIT_STRATEGY`) and any other ``ExampleGenConfig`` ``settings``; returns
    ``(OutputPaths, one-line summary)``."""
    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig

    paths = generate.OutputPaths.under(out)
    config = ExampleGenConfig(seed=seed, split_strategy=split_strategy, **settings)
    statistics = generate.generate(data_dir, config, paths)
    return paths, generate.summary_line(statistics)


def split_files(paths, kind: str, split: str) -> str:
    uri = paths.rating_examples if kind == contract.RATING else paths.sequence_examples
    return os.path.join(uri, f"Split-{split}", "*")


def read_arrays(pattern: str, spec, batch_size: int = 8192) -> Dict[str, np.ndarray]:
    """Every example of ``pattern`` as numpy arrays (``[N]``, or ``[N, L]`` lists), in
    file order."""
    parts: Dict[str, list] = {}
    for batch in inputs.make_dataset(pattern, spec, batch_size, shuffle=False):
        for name, values in batch.items():
            parts.setdefault(name, []).append(values.numpy())
    return {name: np.concatenate(values) for name, values in parts.items()}


@dataclasses.dataclass
class Interactions:
    """One split's examples as vocabulary rows (``[N]``; -1: not in the vocabulary)."""

    users: np.ndarray          # user ids [N]
    movies: np.ndarray         # label movie rows [N]
    timestamps: np.ndarray     # [N]
    ratings: Optional[np.ndarray] = None     # rating examples: stars [N]
    context: Optional[np.ndarray] = None     # sequence examples: movie rows [N, L]

    def take(self, mask: np.ndarray) -> "Interactions":
        return Interactions(**{field.name: None if getattr(self, field.name) is None
                               else getattr(self, field.name)[mask]
                               for field in dataclasses.fields(self)})

    def __len__(self) -> int:
        return len(self.users)


def rating_interactions(pattern: str, vocabulary: vocab_lib.Vocabulary) -> Interactions:
    names = [contract.USER_ID, contract.MOVIE_ID, contract.TIMESTAMP, contract.USER_RATING]
    arrays = read_arrays(pattern, inputs.select(inputs.rating_feature_spec(), names))
    return Interactions(arrays[contract.USER_ID].reshape(-1),
                        trainer_eval.movie_rows(vocabulary, arrays[contract.MOVIE_ID]),
                        arrays[contract.TIMESTAMP].reshape(-1),
                        ratings=arrays[contract.USER_RATING].reshape(-1))


def sequence_interactions(pattern: str, vocabulary: vocab_lib.Vocabulary) -> Interactions:
    names = [contract.USER_ID, contract.LABEL_MOVIE_ID, contract.TIMESTAMP,
             contract.CONTEXT_MOVIE_ID]
    spec = inputs.select(inputs.sequence_feature_spec(*vocabulary.sequence_shape()), names)
    arrays = read_arrays(pattern, spec)
    context = arrays[contract.CONTEXT_MOVIE_ID]
    return Interactions(arrays[contract.USER_ID].reshape(-1),
                        trainer_eval.movie_rows(vocabulary, arrays[contract.LABEL_MOVIE_ID]),
                        arrays[contract.TIMESTAMP].reshape(-1),
                        context=trainer_eval.movie_rows(vocabulary, context.reshape(-1))
                        .reshape(context.shape))


@dataclasses.dataclass
class Split:
    """One kind of examples of one example generation: files, vocabulary, both splits."""

    vocabulary: vocab_lib.Vocabulary
    train_files: str
    eval_files: str
    train: Interactions
    eval: Interactions

    @property
    def counts(self) -> np.ndarray:
        """int64 ``[M]``: each movie's training labels (popularity)."""
        rows = self.train.movies
        return np.bincount(rows[rows >= 0], minlength=self.vocabulary.num_movies)


def load_split(paths, kind: str) -> Split:
    """The ``kind`` (``contract.RATING`` / ``SEQUENCE``) examples under ``paths``."""
    vocabulary = vocab_lib.load_vocabulary(paths.vocabulary)
    read = rating_interactions if kind == contract.RATING else sequence_interactions
    files = [split_files(paths, kind, split) for split in (contract.TRAIN, contract.EVAL)]
    return Split(vocabulary, *files, *(read(pattern, vocabulary) for pattern in files))


def last_context_rows(context: np.ndarray) -> np.ndarray:
    """``[N]``: each example's last real context movie row (-1 when none). The context
    is oldest first, padded at the end (padding rows are -1)."""
    lengths = (context >= 0).sum(axis=1)
    return np.where(lengths > 0, context[np.arange(len(context)), np.maximum(lengths - 1, 0)],
                    -1)


def last_item_markov(train: Interactions, examples: Interactions,
                     seen: Optional[histories.UserHistory], counts: np.ndarray,
                     ks: Sequence[int] = KS) -> Dict[str, float]:
    """Last-item Markov's :func:`score_metrics` on ``examples`` (sequence examples): the
    movies that most often followed the context's last movie in ``train`` (last context
    movie -> label), ties by popularity (``counts``, the training counts of each movie).
    Scored in float64: the popularity tie-break is far below float32's resolution of the
    counts."""
    transitions = baselines.transition_counts(last_context_rows(train.context), train.movies,
                                              len(counts))
    return score_metrics(lambda part: baselines.markov_scores(
        transitions, last_context_rows(part.context), counts), examples, seen, ks)


def history_of(examples: Interactions) -> histories.UserHistory:
    """Per user, the movie rows of their examples (labels, and context movies)."""
    pairs = histories.PairAccumulator()
    pairs.add(examples.users, examples.movies)
    if examples.context is not None:
        pairs.add(np.repeat(examples.users, examples.context.shape[1]),
                  examples.context.reshape(-1))
    return pairs.result()


def temporal_validation(train: Interactions) -> Tuple[Interactions, Interactions]:
    """``(fit, validation)``: the training ratings before and after the time cutoff of
    their last :data:`VALIDATION_FRACTION`."""
    cutoff = np.quantile(train.timestamps, 1.0 - VALIDATION_FRACTION)
    later = train.timestamps > cutoff
    return train.take(~later), train.take(later)


@dataclasses.dataclass(frozen=True)
class TemporalFit:
    """A temporal split's training part for tuning a model on validation: ``fit`` (the
    training ratings up to the validation cutoff, also as one gzipped TFRecord file,
    ``fit_files``, to train on), their ``fit_seen`` movies per user, and the
    ``validation`` ratings of users with fit ratings."""

    split: Split
    fit: Interactions
    fit_seen: histories.UserHistory
    validation: Interactions
    fit_files: str


def default_ml100k_dir() -> str:
    """``$MOVIELENS_100K_DIR``, else the shared ML-100K beside the repository."""
    return os.environ.get(ML100K_ENV) or str(DEFAULT_DATA_DIR)


def temporal_fit_args(description: str, argv=None):
    """The command line of a benchmark on :func:`temporal_fit`: ``--data-dir`` (default
    :func:`default_ml100k_dir`) and ``--work-dir``."""
    import argparse  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default=default_ml100k_dir())
    parser.add_argument("--work-dir", required=True)
    return parser.parse_args(argv)


def temporal_fit(data_dir: str, work_dir: str) -> TemporalFit:
    """``data_dir``'s rating examples split temporally (``generate_examples`` with
    ``"honest"`` under ``work_dir/examples``) and their :class:`TemporalFit`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    os.makedirs(work_dir, exist_ok=True)
    paths, _ = generate_examples(data_dir, os.path.join(work_dir, "examples"), "honest")
    split = load_split(paths, contract.RATING)
    fit, validation = temporal_validation(split.train)
    fit_seen = history_of(fit)
    cutoff, path = int(fit.timestamps.max()), os.path.join(work_dir, "fit.tfrecord.gz")
    spec = {contract.TIMESTAMP: tf.io.FixedLenFeature([1], tf.int64)}
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in tf.data.TFRecordDataset(tf.io.gfile.glob(split.train_files),
                                              compression_type="GZIP"):
            if int(tf.io.parse_single_example(record, spec)[contract.TIMESTAMP][0]) <= cutoff:
                writer.write(record.numpy())
    return TemporalFit(split, fit, fit_seen, validation.take(warm(validation, fit_seen)),
                       path)


def last_per_user(examples: Interactions) -> np.ndarray:
    """bool ``[N]``: each user's last example (latest timestamp, then file order)."""
    order = np.lexsort((np.arange(len(examples)), examples.timestamps, examples.users))
    last = np.zeros(len(examples), bool)
    users = examples.users[order]
    is_last = np.ones(len(order), bool)
    is_last[:-1] = users[1:] != users[:-1]
    last[order[is_last]] = True
    return last


def warm(examples: Interactions, known: histories.UserHistory) -> np.ndarray:
    """bool ``[N]``: examples whose user has a training history."""
    return np.isin(examples.users, known.user_ids)


class UserMatrix:
    """Users' histories as a 0/1 matrix ``[U, M]`` over ascending user ids (EASE's X)."""

    def __init__(self, history: histories.UserHistory, num_movies: int):
        self.user_ids = history.user_ids
        lengths = np.diff(history.row_splits)
        self.matrix = np.zeros((len(self.user_ids), num_movies), np.float32)
        self.matrix[np.repeat(np.arange(len(self.user_ids)), lengths), history.values] = 1.0

    def rows_of(self, users: np.ndarray) -> np.ndarray:
        """Row of each user id (-1: no history)."""
        position = np.clip(np.searchsorted(self.user_ids, users), 0,
                           max(len(self.user_ids) - 1, 0))
        return np.where(self.user_ids[position] == users, position, -1)

    def histories_of(self, users: np.ndarray) -> np.ndarray:
        """``[Q, M]``: each user's history row (zeros for a user without one)."""
        rows = self.rows_of(users)
        out = self.matrix[np.maximum(rows, 0)].copy()
        out[rows < 0] = 0.0
        return out


def score_metrics(score_fn: Callable[[Interactions], np.ndarray], examples: Interactions,
                  seen: Optional[histories.UserHistory], ks: Sequence[int] = KS,
                  chunk: int = 2048) -> Dict[str, float]:
    """HR@k (``top_{k}``) and NDCG@k of a baseline for ``examples``: ``score_fn(some
    examples) -> [n, M]`` scores them, ``chunk`` at a time; each user's ``seen`` movies
    are left out (never the label), ties count against the label -- as the Trainer
    ranks our models (``evaluation.count_above``)."""
    ranks = []
    for start in range(0, len(examples), chunk):
        part = examples.take(np.arange(start, min(start + chunk, len(examples))))
        scores = np.array(score_fn(part), np.float64, copy=True)
        labels = part.movies
        label_scores = scores[np.arange(len(labels)), np.maximum(labels, 0)]
        excluded = seen.pairs_of(part.users) if seen is not None else None
        found = trainer_eval.count_above(scores, label_scores, labels, excluded)
        ranks.append(np.where(labels >= 0, found, np.iinfo(np.int64).max))
    return trainer_eval.rank_metrics(np.concatenate(ranks) if ranks else np.zeros(0, np.int64),
                                     ks)
