"""The quality benchmark's baselines and honest-protocol helpers, on tiny data."""

import numpy as np
import pytest

from benchmarks import attention as attention_benchmark
from benchmarks import baselines, protocols
from components.trainer import evaluation as trainer_eval
from components.trainer import histories


def _random_interactions(users=30, movies=12, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((users, movies)) < density).astype(np.float32)


@pytest.mark.parametrize("users, movies", [(30, 12), (8, 20)])  # primal, then the dual
def test_ease_matches_the_closed_form(users, movies):
    x = _random_interactions(users, movies)
    l2 = 3.0
    p = np.linalg.inv(x.T.astype(np.float64) @ x + l2 * np.eye(movies))
    b = np.eye(movies) - p / np.diag(p)[None, :]
    assert np.allclose(np.diag(b), 0.0)       # an item never recommends itself
    queries = x[:5]
    np.testing.assert_allclose(baselines.ease_scores(x, queries, l2), queries @ b, atol=1e-8)


def test_ease_falls_back_to_popularity_for_an_empty_history():
    x = _random_interactions()
    counts = x.sum(axis=0)
    scores = baselines.ease_scores(x, np.zeros((1, x.shape[1])), 10.0, counts)
    assert list(np.argsort(-scores[0], kind="stable")) == \
        list(np.argsort(-counts, kind="stable"))


def test_tune_ease_picks_the_best_figure_of_the_grid():
    x = _random_interactions()
    best, figures = baselines.tune_ease(x, x[:4], np.array([0, 1, 2, 3]),
                                        lambda scores, labels: -abs(scores.sum() - 10.0),
                                        grid=(1.0, 10.0, 100.0))
    assert best == max(figures, key=figures.get) and set(figures) == {1.0, 10.0, 100.0}


def test_recent_counts_count_the_window_then_break_ties_by_all_time_counts():
    day = 86_400
    # movie 0: many old ratings; movie 1: two recent; movie 2: one recent; movie 3: one
    # old; a row -1 (not in the vocabulary) in the window counts nowhere.
    movies = np.array([0, 0, 0, 0, 3, 1, 1, 2, -1])
    times = np.array([0, 1, 2, 3, 4, 98, 99, 100, 100]) * day
    counts = baselines.recent_counts(movies, times, 5, window_seconds=10 * day)
    assert list(np.floor(counts)) == [0, 2, 1, 0, 0]
    assert list(np.argsort(-counts, kind="stable")) == [1, 2, 0, 3, 4]  # old: by all time
    everything = baselines.recent_counts(movies, times, 5, window_seconds=1000 * day)
    assert list(np.floor(everything)) == [4, 2, 1, 1, 0]


def test_markov_scores_follow_the_last_movie_then_popularity():
    transitions = baselines.transition_counts(np.array([0, 0, 0, 1, -1]),
                                              np.array([2, 2, 1, 0, 3]), 4)
    assert transitions[1, 2] == 2 and transitions[0, 3] == 1   # row 0: unknown last movie
    counts = np.array([5, 1, 1, 9])
    scores = baselines.markov_scores(transitions, np.array([0, 2]), counts)
    assert np.argmax(scores[0]) == 2 and np.argmax(scores[1]) == 3   # 2: never followed


def test_biased_mf_fits_a_low_rank_rating_matrix_better_than_the_mean():
    rng = np.random.default_rng(1)
    users, movies = np.meshgrid(np.arange(40), np.arange(30), indexing="ij")
    truth = 3.0 + 0.5 * rng.normal(size=(40, 1)) + rng.normal(size=(40, 2)) @ \
        rng.normal(size=(2, 30)) * 0.5
    keep = rng.random(truth.shape) < 0.6
    train_u, train_m, train_r = users[keep], movies[keep], truth[keep]
    test_u, test_m, test_r = users[~keep], movies[~keep], truth[~keep]
    model = baselines.BiasedMF(40, 30, dim=4, l2=1.0, low=-10, high=10).fit(
        train_u, train_m, train_r)
    mean = baselines.rmse(np.full(len(test_r), train_r.mean()), test_r)
    assert baselines.rmse(model.predict(test_u, test_m), test_r) < 0.5 * mean
    # Unknown users and movies (row -1) get the mean plus the known side's bias.
    assert np.isfinite(model.predict(np.array([-1]), np.array([-1]))).all()


def test_score_metrics_rank_as_the_trainer_does():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(6, 9))
    examples = protocols.Interactions(users=np.array([1, 1, 2, 3, 3, 4]),
                                      movies=np.array([0, 4, 8, 2, -1, 5]),
                                      timestamps=np.zeros(6, np.int64))
    pairs = histories.PairAccumulator()
    pairs.add(np.array([1, 1, 3]), np.array([0, 7, 1]))   # user 1's label 0 is kept
    seen = pairs.result()
    figures = protocols.score_metrics(lambda part: scores[:len(part)], examples, seen,
                                      ks=(1, 3), chunk=len(scores))
    ranks = trainer_eval.label_ranks(scores.astype(np.float32), np.eye(9, dtype=np.float32),
                                     examples.movies, seen.pairs_of(examples.users))
    expected = trainer_eval.rank_metrics(ranks, (1, 3))
    assert figures == pytest.approx(expected)


def test_validation_splits_of_the_honest_protocols():
    examples = protocols.Interactions(users=np.array([2, 1, 1, 2, 1]),
                                      movies=np.arange(5),
                                      timestamps=np.array([5, 1, 9, 5, 3]))
    last = protocols.last_per_user(examples)
    assert list(last) == [False, False, True, True, False]   # ties: the later in file order
    fit, validation = protocols.temporal_validation(examples)
    assert validation.timestamps.min() > fit.timestamps.max()
    assert protocols.last_context_rows(np.array([[3, 4, -1], [-1, -1, -1]])).tolist() == [4, -1]


def test_seed_summary_gives_each_seed_and_the_mean_and_spread():
    figures = {0: {"hr@10": 0.20, "ndcg@10": 0.10, "train_seconds": 10},
               3: {"hr@10": 0.24, "ndcg@10": 0.12, "train_seconds": 14}}
    summary = attention_benchmark.over_seeds(figures)
    assert summary["seeds"] == {"0": figures[0], "3": figures[3]}
    assert summary["hr@10"] == pytest.approx(0.22)
    assert summary["hr@10_sd"] == pytest.approx(np.std([0.20, 0.24], ddof=1))
    assert summary["ndcg@10"] == pytest.approx(0.11)
    assert summary["train_seconds"] == pytest.approx(12)
    one = attention_benchmark.over_seeds({5: figures[0]})
    assert one["hr@10"] == pytest.approx(0.20) and one["hr@10_sd"] == 0.0


def test_last_item_markov_breaks_ties_by_popularity_even_after_many_transitions():
    # 300 training examples: movie 0 -> 1 and 0 -> 2 equally often (150 each), so their
    # transition counts tie; movie 2 is the more popular label overall (one more, 3 -> 2).
    context = np.full((301, 2), -1)
    context[:300, 0] = 0
    context[300, 0] = 3
    train = protocols.Interactions(users=np.arange(301), movies=np.r_[[1, 2] * 150, 2],
                                   timestamps=np.zeros(301), context=context)
    counts = np.bincount(train.movies, minlength=4)
    # Two queries whose last movie is 0: the label 2 wins the tie (rank 0), 1 loses it.
    queries = protocols.Interactions(users=np.array([7, 8]), movies=np.array([2, 1]),
                                     timestamps=np.zeros(2), context=np.array([[0, -1]] * 2))
    figures = protocols.last_item_markov(train, queries, None, counts, ks=(1,))
    assert figures["top_1"] == pytest.approx(0.5)
    # The user's seen movies are left out: with movie 2 seen, 1 ranks first.
    seen = protocols.history_of(protocols.Interactions(
        users=np.array([8]), movies=np.array([2]), timestamps=np.zeros(1),
        context=np.array([[-1, -1]])))
    assert protocols.last_item_markov(train, queries, seen, counts, ks=(1,))["top_1"] == 1.0
