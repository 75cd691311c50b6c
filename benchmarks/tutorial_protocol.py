"""The quality benchmark on the TFRS tutorials' protocol (for comparison with them).

Splits (``protocols.TUTORIAL``, our example generator): rating examples 80/20 at random
by a seeded hash (the retrieval, ranking and multitask tutorials shuffle all 100k
ratings 80/20); sequence examples with the sequential tutorial's flags
(``min_rating=2``, ``min_timeline_length=3``, 10 context movies, padding at the end),
90/10 at random per example. These leak (a held-out rating sits inside its user's
training time span; a held-out next movie sits in later examples' contexts): the
honest figures are in honest.py.

Each task is trained with our preset and with a faithful re-implementation of the
tutorial's recipe (:data:`TUTORIALS`: embedding 32, Adagrad 0.1, 3 epochs, batch 8192
-- 12,800 for sequential --, in-batch softmax without log-Q, no padding mask), beside
popularity (training counts; the mean training rating for RMSE) and, for sequences, the
last-item Markov chain. Metrics: exact top-K accuracy over the whole catalogue, also
excluding the movies each user rated in training (retrieval); RMSE in stars of the
served, clipped ratings.

The context-features comparison trains the retrieval preset twice more: with ids only
(no timestamps, titles or genres), and with ids and timestamps (which, here, read the
held-out rating's own time).
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from benchmarks import baselines, protocols
from benchmarks.training import log, train
from components import contract
from components.trainer import evaluation as trainer_eval
from components.trainer import hparams as hp
from components.trainer import inputs

KS = protocols.KS
TASKS = ("retrieval", "context", "ranking", "multitask", "sequential")

# The tutorials' recipes (tensorflow.org/recommenders/examples/basic_retrieval,
# basic_ranking, multitask, sequential_retrieval), in our HParams. ``preset=False``: the
# field defaults underneath, then these. The 32-wide towers are plain id embeddings.
TUTORIAL_COMMON = dict(
    embedding_dim=32, epochs=3, optimizer="adagrad", learning_rate=0.1, full_softmax=False,
    logq_correction=False, remove_accidental_hits=False, rating_layers=(256, 64),
    use_timestamps=False, use_title=False, use_genres=False)
TUTORIALS = {
    "retrieval": dict(TUTORIAL_COMMON, model="retrieval", batch_size=8192),
    "ranking": dict(TUTORIAL_COMMON, model="ranking", batch_size=8192),
    "multitask": dict(TUTORIAL_COMMON, model="multitask", batch_size=8192,
                      rating_weight=1.0, retrieval_weight=1.0),
    "sequential": dict(TUTORIAL_COMMON, model="sequential", batch_size=12800,
                       mask_padding=False, share_embeddings=False),
}
# The context-features comparison: the retrieval preset without, then with, timestamps.
ID_ONLY = dict(use_timestamps=False, use_title=False, use_genres=False)
WITH_TIMESTAMPS = dict(use_timestamps=True, use_title=False, use_genres=False)


class Data:
    """The tutorial split's files, vocabulary, and the arrays the baselines read."""

    def __init__(self, paths):
        splits = {kind: protocols.load_split(paths, kind) for kind in contract.EXAMPLE_KINDS}
        self.files = {kind: {contract.TRAIN: split.train_files,
                             contract.EVAL: split.eval_files}
                      for kind, split in splits.items()}
        self.vocabulary = splits[contract.RATING].vocabulary
        ratings, sequences = splits[contract.RATING], splits[contract.SEQUENCE]
        self.ratings = {contract.TRAIN: ratings.train, contract.EVAL: ratings.eval}
        # "Seen": the movies each user rated in training (masked in *_excluding_rated).
        self.rating_history = protocols.history_of(ratings.train)
        self.rating_counts = ratings.counts
        self.mean_rating = float(np.mean(ratings.train.ratings))
        self.sequences = {contract.TRAIN: sequences.train, contract.EVAL: sequences.eval}
        self.label_counts = sequences.counts


def _eval_dataset(hparams, data: Data, kind: str):
    return inputs.input_dataset(hparams, data.vocabulary, data.files[kind][contract.EVAL],
                                training=False)


def run_retrieval(name: str, hparams, data: Data) -> Dict[str, float]:
    model, seconds = train(name, hparams, data.vocabulary,
                           data.files[contract.RATING][contract.TRAIN])
    evaluation = _eval_dataset(hparams, data, contract.RATING)
    result = trainer_eval.evaluate_retrieval(model, evaluation, data.vocabulary, KS,
                                             data.rating_history)
    if hparams.model == hp.MULTITASK:
        result.update(trainer_eval.evaluate_ranking(model, evaluation))
    result["seconds"] = seconds
    log(f"[{name}] done in {seconds:.0f} s: top-100 {result['top_100']:.4f}, excluding seen "
        f"{result['top_100_excluding_rated']:.4f}, top-10 {result['top_10']:.4f}"
        + (f", RMSE {result['rmse']:.4f}" if "rmse" in result else ""))
    return result


def run_ranking(name: str, hparams, data: Data) -> Dict[str, float]:
    model, seconds = train(name, hparams, data.vocabulary,
                           data.files[contract.RATING][contract.TRAIN])
    result = trainer_eval.evaluate_ranking(model, _eval_dataset(hparams, data, contract.RATING))
    result["seconds"] = seconds
    log(f"[{name}] done in {seconds:.0f} s: RMSE {result['rmse']:.4f}, MAE {result['mae']:.4f}")
    return result


def run_sequential(name: str, hparams, data: Data) -> Dict[str, float]:
    model, seconds = train(name, hparams, data.vocabulary,
                           data.files[contract.SEQUENCE][contract.TRAIN])
    result = trainer_eval.evaluate_retrieval(
        model, _eval_dataset(hparams, data, contract.SEQUENCE), data.vocabulary, KS)
    result["seconds"] = seconds
    log(f"[{name}] done in {seconds:.0f} s: top-100 {result['top_100']:.4f}, "
        f"top-10 {result['top_10']:.4f}")
    return result


RUNNERS = {"retrieval": run_retrieval, "ranking": run_ranking, "multitask": run_retrieval,
           "sequential": run_sequential}


def popularity_retrieval(data: Data) -> Dict[str, float]:
    evaluation = data.ratings[contract.EVAL]

    def scores(part):
        return baselines.popularity_scores(data.rating_counts, len(part))

    result = protocols.score_metrics(scores, evaluation, None)
    result.update({f"{name}_excluding_rated": value for name, value in protocols.score_metrics(
        scores, evaluation, data.rating_history).items() if name != "queries"})
    return result


def popularity_ranking(data: Data) -> Dict[str, float]:
    labels = data.ratings[contract.EVAL].ratings
    return {"rmse": baselines.rmse(np.full(len(labels), data.mean_rating), labels),
            "mean_rating": data.mean_rating}


def sequential_baselines(data: Data):
    """Popularity and the last-item Markov chain ("the movie that most often follows
    the last one"), over all movies (the tutorial's protocol excludes nothing)."""
    train_set, eval_set = data.sequences[contract.TRAIN], data.sequences[contract.EVAL]
    popularity = protocols.score_metrics(
        lambda part: baselines.popularity_scores(data.label_counts, len(part)), eval_set, None)
    markov = protocols.last_item_markov(train_set, eval_set, None, data.label_counts)
    return popularity, markov


def run(paths, only, run_tutorials: bool = True) -> Dict[str, Dict]:
    """Every task of ``only`` (of :data:`TASKS`) on the tutorial split; ``{run: figures}``
    (runs: ``<task>``, ``tutorial_<task>``, ``popularity_<task>``, ``transition_sequential``,
    ``retrieval_id_only``, ``retrieval_timestamps``)."""
    data = Data(paths)
    log(f"  vocabulary: {data.vocabulary.num_movies} movies, {data.vocabulary.num_users} users")
    results: Dict[str, Dict] = {}
    if "retrieval" in only or "multitask" in only:
        results["popularity_retrieval"] = popularity_retrieval(data)
    if "ranking" in only or "multitask" in only:
        results["popularity_ranking"] = popularity_ranking(data)
    if "sequential" in only:
        (results["popularity_sequential"],
         results["transition_sequential"]) = sequential_baselines(data)
    for name in TASKS:
        if name not in only:
            continue
        if name == "context":  # the retrieval preset with and without timestamps
            base = hp.preset(hp.RETRIEVAL).to_dict()
            results["retrieval_id_only"] = run_retrieval(
                "retrieval, ids only", hp.HParams.from_dict({**base, **ID_ONLY}), data)
            results["retrieval_timestamps"] = run_retrieval(
                "retrieval, ids + timestamps",
                hp.HParams.from_dict({**base, **WITH_TIMESTAMPS}), data)
            continue
        results[name] = RUNNERS[name](name, hp.preset(name), data)
        if run_tutorials:
            results[f"tutorial_{name}"] = RUNNERS[name](
                f"tutorial {name}", hp.HParams.from_dict(TUTORIALS[name], preset=False), data)
    return results
