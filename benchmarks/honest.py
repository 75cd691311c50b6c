"""The quality benchmark's honest protocols: our models beside strong baselines.

* :func:`run_temporal` (rating models, ``protocols.TEMPORAL``): our retrieval preset,
  its variants by time features, and the ranking preset, beside popularity, recent
  popularity (the last W days of training, W tuned on validation), EASE (L2 tuned on
  validation) for retrieval and the mean and biased MF (L2 tuned on validation) for
  RMSE.
* :func:`run_leave_last_out` (sequence models, ``protocols.LEAVE_LAST_OUT``): every
  sequence model kind of ``contract.MODEL_KINDS`` (its preset), beside popularity,
  last-item Markov and EASE over the user's earlier movies (L2 tuned on validation).

Each returns ``{run name: figures}``; figures are ``top_{k}`` / ``ndcg_{k}`` with the
user's earlier movies excluded (see protocols.py), plus ``top_{k}_all`` (the
tutorials' top-K accuracy over all movies) for our models, and ``rmse``.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

from benchmarks import baselines, protocols  # components first: TF_USE_LEGACY_KERAS=1

import numpy as np
import tensorflow as tf

from benchmarks.protocols import Interactions
from benchmarks.training import log, train
from components import contract
from components.trainer import evaluation as trainer_eval
from components.trainer import hparams as hp
from components.trainer import inputs

KS = protocols.KS
EASE_GRID = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
MF_GRID = (5.0, 10.0, 20.0, 40.0)
# The retrieval preset and its variants by features, compared on the temporal protocol
# (a variant equal to the preset is not trained twice):
#   preset      the preset as it stands (what the pipeline trains and serves);
#   no_recency  the preset without its recency prior (components/trainer/recency.py);
#   no_time     the preset's towers without the timestamp features;
#   ids_only    user and movie ids only (no title, genres, time or recency prior), the
#               preset's training;
#   with_time   the preset's towers with the global and user-relative time features;
#   served_x5   the preset with the windows and serving scale that ranked best on
#               ML-100K's validation period (benchmarks/recency_windows.py): 7 and 30
#               days, the prior served at 5 x its trained weights.
RETRIEVAL_VARIANTS = {
    "preset": {},
    "no_recency": dict(recency_windows_days=()),
    "no_time": dict(use_timestamps=False),
    "ids_only": dict(use_timestamps=False, use_title=False, use_genres=False,
                     recency_windows_days=()),
    "with_time": dict(use_timestamps=True),
    "served_x5": dict(recency_windows_days=(7, 30), recency_serving_scale=5.0),
}


def sequence_kinds() -> List[str]:
    """Every model kind that retrieves from sequence examples (the GRU's, and any other
    registered in ``contract.MODEL_KINDS``)."""
    return [name for name, kind in contract.MODEL_KINDS.items()
            if kind.examples == contract.SEQUENCE and kind.retrieves]


def _ours(model, hparams, vocabulary, pattern: str, seen, users=None,
          query_time=None) -> Dict[str, float]:
    """The Trainer's streamed figures of a retrieval-like model on ``pattern``, renamed:
    ``top_{k}`` / ``ndcg_{k}`` with ``seen`` excluded, ``top_{k}_all`` over all movies.
    ``users``: evaluate only their examples. ``query_time``: (user ids, timestamps) that
    replace each example's timestamp (the time a client knows)."""
    dataset = inputs.input_dataset(hparams, vocabulary, pattern, training=False)
    if users is not None:
        dataset = trainer_eval.sample_users(dataset, users, hparams.eval_batch_size)
    if query_time is not None:
        table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(query_time[0], tf.int64), tf.constant(query_time[1], tf.int64)), 0)
        dataset = dataset.map(lambda features: {
            **features, contract.TIMESTAMP: table.lookup(features[contract.USER_ID])})
    figures = trainer_eval.evaluate_retrieval(model, dataset, vocabulary, KS, seen)
    out = {f"{name}_all": value for name, value in figures.items()
           if name.startswith("top_") and not name.endswith("_excluding_rated")}
    out.update({name[:-len("_excluding_rated")]: value for name, value in figures.items()
                if name.endswith("_excluding_rated")})
    out["queries"] = figures["queries"]
    return out


def _report(name: str, figures: Dict[str, float], seconds: float = None) -> None:
    parts = [f"HR@10 {figures['top_10']:.4f}", f"NDCG@10 {figures['ndcg_10']:.4f}",
             f"Recall@100 {figures['top_100']:.4f}"]
    if seconds is not None:
        figures["seconds"] = seconds
    log(f"[{name}] " + ", ".join(parts) + (f" ({seconds:.0f} s)" if seconds else ""))


def _last_timestamps(examples: Interactions):
    """(user ids ascending, each one's latest timestamp)."""
    order = np.lexsort((examples.timestamps, examples.users))
    users, times = examples.users[order], examples.timestamps[order]
    last = np.ones(len(users), bool)
    last[:-1] = users[1:] != users[:-1]
    return users[last], times[last]


def _ease(train_hist, fit_hist, validation, num_movies, counts, label):
    """EASE with L2 tuned on ``validation`` (fit on ``fit_hist``), refit on
    ``train_hist``: returns (score_fn, figures of the tuning)."""
    fit_matrix = protocols.UserMatrix(fit_hist, num_movies)

    def ndcg(l2):
        def scores(part):
            return baselines.ease_scores(fit_matrix.matrix, fit_matrix.histories_of(part.users),
                                         l2, counts)
        return protocols.score_metrics(scores, validation, fit_hist)["ndcg_10"]

    tuning = {l2: ndcg(l2) for l2 in EASE_GRID}
    best = max(tuning, key=lambda l2: (tuning[l2], -l2))
    log(f"[{label}] EASE validation NDCG@10 by L2: "
        + ", ".join(f"{l2:g}: {value:.4f}" for l2, value in tuning.items())
        + f" -> L2 {best:g}")
    matrix = protocols.UserMatrix(train_hist, num_movies)
    return (lambda part: baselines.ease_scores(matrix.matrix, matrix.histories_of(part.users),
                                                best, counts)), {"l2": best, "validation": tuning}


# Windows of the recent-popularity baseline, in days before the end of training.
RECENT_WINDOW_DAYS = (7, 14, 30, 60, 120, 365)


def _recent_popularity(train, fit, validation, fit_hist, num_movies):
    """Popularity over the training ratings of the last W days, W tuned on
    ``validation`` by NDCG@10 (counts from ``fit``), then counted on ``train``: returns
    (score_fn, figures of the tuning). Under a temporal split the eval period follows
    the training period, so what was rated lately is the strong non-personal baseline."""
    def scores_of(data, days):
        counts = baselines.recent_counts(data.movies, data.timestamps, num_movies,
                                         days * 86_400)
        return lambda part: baselines.popularity_scores(counts, len(part))

    tuning = {days: protocols.score_metrics(scores_of(fit, days), validation,
                                            fit_hist)["ndcg_10"]
              for days in RECENT_WINDOW_DAYS}
    best = max(tuning, key=lambda days: (tuning[days], days))
    log("[temporal] recent popularity validation NDCG@10 by window (days): "
        + ", ".join(f"{days}: {value:.4f}" for days, value in tuning.items())
        + f" -> {best} days")
    return scores_of(train, best), {"window_days": best, "validation": tuning}


def run_temporal(paths, with_models: bool = True) -> Dict[str, Dict]:
    """Rating models under the global temporal split (see the module docstring)."""
    split = protocols.load_split(paths, contract.RATING)
    vocabulary, train_files, eval_files = split.vocabulary, split.train_files, split.eval_files
    train_set, eval_all, counts = split.train, split.eval, split.counts
    seen = protocols.history_of(train_set)
    eval_set = eval_all.take(protocols.warm(eval_all, seen))
    warm_users = np.unique(eval_set.users)
    num_movies = vocabulary.num_movies
    log(f"[temporal] {len(train_set)} training ratings, {len(eval_all)} held out, of "
        f"which {len(eval_set)} are of the {len(warm_users)} (of "
        f"{len(np.unique(eval_all.users))}) eval users with training ratings (the rest "
        f"are cold starts, left out of the top-K figures)")
    results: Dict[str, Dict] = {"temporal_data": {
        "train_ratings": len(train_set), "eval_ratings": len(eval_all),
        "eval_ratings_warm": len(eval_set), "eval_users_warm": int(len(warm_users)),
        "eval_users": int(len(np.unique(eval_all.users)))}}

    start = time.time()
    results["temporal_popularity"] = protocols.score_metrics(
        lambda part: baselines.popularity_scores(counts, len(part)), eval_set, seen)
    _report("temporal popularity", results["temporal_popularity"])
    fit, validation = protocols.temporal_validation(train_set)
    fit_hist = protocols.history_of(fit)
    validation = validation.take(protocols.warm(validation, fit_hist))
    start = time.time()
    recent_fn, tuning = _recent_popularity(train_set, fit, validation, fit_hist, num_movies)
    results["temporal_recent_popularity"] = {
        **protocols.score_metrics(recent_fn, eval_set, seen), **tuning}
    _report("temporal recent popularity", results["temporal_recent_popularity"],
            time.time() - start)
    start = time.time()
    ease_fn, tuning = _ease(seen, fit_hist, validation, num_movies, counts, "temporal")
    results["temporal_ease"] = {**protocols.score_metrics(ease_fn, eval_set, seen), **tuning}
    _report("temporal EASE", results["temporal_ease"], time.time() - start)

    # Ratings: the mean, biased MF (L2 tuned on validation), our ranking preset.
    labels = eval_all.ratings
    results["temporal_mean"] = {"rmse": baselines.rmse(np.full(len(labels),
                                                               train_set.ratings.mean()), labels)}
    user_index = {user: row for row, user in enumerate(np.unique(train_set.users))}

    def rows(users):
        return np.asarray([user_index.get(int(u), -1) for u in users])

    def fit_mf(data, l2):
        return baselines.BiasedMF(len(user_index), num_movies, l2=l2).fit(
            rows(data.users), data.movies, data.ratings)

    tuning = {l2: baselines.rmse(fit_mf(fit, l2).predict(rows(validation.users),
                                                         validation.movies), validation.ratings)
              for l2 in MF_GRID}
    best = min(tuning, key=tuning.get)
    results["temporal_biased_mf"] = {
        "rmse": baselines.rmse(fit_mf(train_set, best).predict(rows(eval_all.users),
                                                               eval_all.movies), labels),
        "l2": best, "validation_rmse": tuning}
    log(f"[temporal] RMSE: mean {results['temporal_mean']['rmse']:.4f}, biased MF "
        f"{results['temporal_biased_mf']['rmse']:.4f} (L2 {best:g} of {MF_GRID})")
    if not with_models:
        return results

    preset = hp.preset(hp.RETRIEVAL).to_dict()
    known_time = _last_timestamps(train_set)
    for variant, change in RETRIEVAL_VARIANTS.items():
        hparams = hp.HParams.from_dict({**preset, **change})
        if variant != "preset" and hparams.to_dict() == preset:
            results[f"temporal_retrieval_{variant}"] = results["temporal_retrieval_preset"]
            if "temporal_retrieval_preset_own_time" in results:
                results[f"temporal_retrieval_{variant}_own_time"] = \
                    results["temporal_retrieval_preset_own_time"]
            log(f"[temporal retrieval {variant}] the preset itself")
            continue
        model, seconds = train(f"temporal retrieval {variant}", hparams, vocabulary,
                               train_files)
        figures = _ours(model, hparams, vocabulary, eval_files, seen, warm_users)
        if hparams.use_timestamps:
            # The held-out rating's own time (what the old served signature asked for),
            # then the time a client knows: the user's latest training rating.
            results[f"temporal_retrieval_{variant}_own_time"] = figures
            _report(f"temporal retrieval {variant}, the held-out rating's own time",
                    figures)
            figures = _ours(model, hparams, vocabulary, eval_files, seen, warm_users,
                            query_time=known_time)
        results[f"temporal_retrieval_{variant}"] = figures
        _report(f"temporal retrieval {variant}", figures, seconds)

    hparams = hp.preset(hp.RANKING)
    model, seconds = train("temporal ranking", hparams, vocabulary, train_files)
    results["temporal_ranking"] = trainer_eval.evaluate_ranking(
        model, inputs.input_dataset(hparams, vocabulary, eval_files, training=False))
    results["temporal_ranking"]["seconds"] = seconds
    log(f"[temporal ranking] RMSE {results['temporal_ranking']['rmse']:.4f}")
    return results


def run_leave_last_out(paths, with_models: bool = True,
                       kinds: Optional[Sequence[str]] = None) -> Dict[str, Dict]:
    """Sequence models under leave-last-out (see the module docstring): ``kinds`` (default
    :func:`sequence_kinds`, every one) beside the baselines."""
    split = protocols.load_split(paths, contract.SEQUENCE)
    vocabulary, train_files, eval_files = split.vocabulary, split.train_files, split.eval_files
    train_set, eval_set, counts = split.train, split.eval, split.counts
    seen = protocols.history_of(train_set)  # every earlier movie of each user
    num_movies = vocabulary.num_movies
    log(f"[leave-last-out] {len(train_set)} training examples, {len(eval_set)} users' "
        f"last movies held out")
    results: Dict[str, Dict] = {"leave_last_out_data": {
        "train_examples": len(train_set), "eval_users": len(eval_set)}}

    start = time.time()
    results["leave_last_out_popularity"] = protocols.score_metrics(
        lambda part: baselines.popularity_scores(counts, len(part)), eval_set, seen)
    _report("leave-last-out popularity", results["leave_last_out_popularity"])
    results["leave_last_out_markov"] = protocols.last_item_markov(train_set, eval_set, seen,
                                                                  counts)
    _report("leave-last-out last-item Markov", results["leave_last_out_markov"])
    last = protocols.last_per_user(train_set)
    fit, validation = train_set.take(~last), train_set.take(last)
    fit_hist = protocols.history_of(fit)
    validation = validation.take(protocols.warm(validation, fit_hist))
    ease_fn, tuning = _ease(seen, fit_hist, validation, num_movies, counts, "leave-last-out")
    results["leave_last_out_ease"] = {**protocols.score_metrics(ease_fn, eval_set, seen),
                                      **tuning}
    _report("leave-last-out EASE", results["leave_last_out_ease"], time.time() - start)
    if not with_models:
        return results

    for kind in (sequence_kinds() if kinds is None else kinds):
        hparams = hp.preset(kind)
        model, seconds = train(f"leave-last-out {kind}", hparams, vocabulary, train_files)
        results[f"leave_last_out_{kind}"] = _ours(model, hparams, vocabulary, eval_files, seen)
        _report(f"leave-last-out {kind}", results[f"leave_last_out_{kind}"], seconds)
    return results
