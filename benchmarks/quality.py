"""Benchmark: the quality of our models against the TFRS tutorials' recipes and baselines.

One run on MovieLens-100K, with the tutorials' splits, made by our own example generator
(``generate.generate`` in-process, DirectRunner):

* rating examples: every valid rating, split 80/20 at random by a seeded hash (seed 42),
  the protocol of the retrieval, ranking and multitask tutorials (all 100k ratings
  shuffled, 80/20);
* sequence examples: the sequential tutorial's flags (``min_rating=2``,
  ``min_timeline_length=3``, 10 context movies, padding at the end), 90/10 at random per
  example.

Each task is trained with our tuned preset (``models.PRESETS``, what the TFX pipeline
trains) and with a faithful re-implementation of the tutorial's recipe (embedding 32,
Adagrad 0.1, 3 epochs, batch 8192 -- 12,800 for sequential --, in-batch softmax without
log-Q, no padding mask), next to baselines:

* popularity: movies ranked by their training count (retrieval, sequential); the global
  mean training rating (ranking RMSE);
* transition (sequential): the movies that most often follow the context's last movie in
  the training examples (last context movie -> label counts), ties and unseen movies by
  popularity.

Metrics (exact, over the whole catalogue of 1,682 movies): retrieval top-K accuracy of
each evaluation rating taken as a (user, movie) query, over all movies and excluding
the movies the user rated in training (never the label itself); ranking RMSE in stars
of the served, clipped ratings; sequential top-K accuracy of the next movie.

The context-features comparison trains the retrieval preset twice more: with ids only
(no timestamps, titles or genres), and with ids and timestamps.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/quality.py    # 5-10 min on 2 cores (load-dependent)
    PYTHONPATH=. .venv/bin/python benchmarks/quality.py --only ranking,sequential

Prints progress per model (and per epoch), a table, and, as the last line, one JSON
object: ``retrieval_top100``, ``retrieval_top100_excl_seen``, ``ranking_rmse``,
``multitask_top100``, ``multitask_rmse``, ``sequential_top100``, ``sequential_top10``,
``retrieval_id_only_top100``, ``retrieval_timestamps_top100``, the same figures of the
tutorial recipes (``tutorial_*``), popularity (``popularity_*``) and the transition
baseline (``transition_*``), a few more figures, ``targets`` (each target: met or not),
the presets, ``wall_seconds`` and ``code`` (a hash of ``components/trainer/*.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import components  # noqa: E402,F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from components import contract  # noqa: E402
from components.trainer import evaluation as trainer_eval  # noqa: E402
from components.trainer import hparams as hp  # noqa: E402
from components.trainer import inputs  # noqa: E402
from components.trainer import models as M  # noqa: E402
from components.trainer import vocabulary as vocab_lib  # noqa: E402

ML100K_ENV = "MOVIELENS_100K_DIR"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data" / "ml-100k"
SPLIT_SEED = 42
KS = (1, 5, 10, 50, 100)
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


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------
# Data.


def generate_examples(data_dir: pathlib.Path, out: pathlib.Path):
    """Runs the example generator on ``data_dir`` into ``out``; returns its paths."""
    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig

    paths = generate.OutputPaths.under(str(out))
    # The sequential tutorial's flags (ExampleGenConfig's defaults), random splits.
    statistics = generate.generate(str(data_dir), ExampleGenConfig(seed=SPLIT_SEED), paths)
    return paths, statistics, generate.summary_line(statistics)


class Data:
    """The example generator's outputs: file patterns, vocabulary, training statistics."""

    def __init__(self, paths):

        self.files = {kind: {split: os.path.join(uri, f"Split-{split}", "*")
                             for split in ("train", "eval")}
                      for kind, uri in (("rating", paths.rating_examples),
                                        ("sequence", paths.sequence_examples))}
        self.vocabulary = vocab_lib.load_vocabulary(paths.vocabulary)
        spec = inputs.select(inputs.rating_feature_spec(), [contract.USER_ID, contract.MOVIE_ID, contract.USER_RATING])
        train = inputs.make_dataset(self.files["rating"]["train"], spec, 8192, shuffle=False)
        # "Seen": the movies each user rated in training (masked in *_excl_seen).
        self.rating_history = trainer_eval.user_history(train, self.vocabulary)
        self.rating_counts, ratings = self._counts(train, contract.MOVIE_ID, contract.USER_RATING)
        self.mean_rating = float(np.mean(ratings))
        spec = inputs.select(inputs.sequence_feature_spec(*self.vocabulary.sequence_shape()), [contract.CONTEXT_MOVIE_ID, contract.LABEL_MOVIE_ID])
        self.sequence_train = inputs.make_dataset(self.files["sequence"]["train"], spec, 8192,
                                             shuffle=False)
        self.sequence_eval = inputs.make_dataset(self.files["sequence"]["eval"], spec, 8192,
                                            shuffle=False)
        self.label_counts, _ = self._counts(self.sequence_train, contract.LABEL_MOVIE_ID)

    def _counts(self, dataset, key, value_key=None):

        counts = np.zeros(self.vocabulary.num_movies, np.int64)
        values = []
        for batch in dataset:
            rows = trainer_eval.movie_rows(self.vocabulary, batch[key].numpy())
            np.add.at(counts, rows[rows >= 0], 1)
            if value_key:
                values.append(batch[value_key].numpy())
        return counts, (np.concatenate(values) if values else None)


# ---------------------------------------------------------------------------------------
# Training and evaluation.


class Progress(tf.keras.callbacks.Callback):
    """Prints one line per epoch."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.epoch_start, self.losses = time.time(), []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.losses = time.time(), []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", np.nan)))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        # tfrs logs the last batch's loss: average the batches' instead.
        parts = [f"mean batch loss {np.mean(self.losses):.4g}"]
        if "regularization_loss" in logs:
            parts.append(f"L2 penalty {logs['regularization_loss']:.4g}")
        if "rmse" in logs:
            parts.append(f"train RMSE {logs['rmse']:.4f}")
        log(f"  [{self.name}] epoch {epoch + 1}: {', '.join(parts)} "
            f"({time.time() - self.epoch_start:.0f} s)")


def train(name: str, hparams, data: Data, kind: str):
    """Builds, compiles and fits ``hparams.model`` on the ``kind`` training files."""

    log(f"[{name}] training: {describe(hparams)}")
    start = time.time()
    stats = inputs.training_timestamp_stats(hparams, data.files[kind]["train"])
    model = M.compile_model(M.build_model(hparams, data.vocabulary, stats), hparams)
    model.fit(inputs.input_dataset(hparams, data.vocabulary, data.files[kind]["train"], training=True),
              epochs=hparams.epochs, verbose=0, callbacks=[Progress(name)])
    return model, time.time() - start


def describe(hparams) -> str:

    base = hp.HParams(model=hparams.model)
    changed = {key: value for key, value in hparams.to_dict().items()
               if key != "model" and value != base.to_dict()[key]}
    return f"{hparams.model} " + ", ".join(f"{key}={value}" for key, value in changed.items())


def run_retrieval(name: str, hparams, data: Data) -> Dict[str, float]:

    model, seconds = train(name, hparams, data, "rating")
    evaluation = inputs.input_dataset(hparams, data.vocabulary, data.files["rating"]["eval"], training=False)
    result = trainer_eval.evaluate_retrieval(model, evaluation, data.vocabulary, KS, data.rating_history)
    if hparams.model == hp.MULTITASK:
        result.update(trainer_eval.evaluate_ranking(model, evaluation))
    result["seconds"] = seconds
    log(f"[{name}] done in {seconds:.0f} s: top-100 {result['top_100']:.4f}, excluding seen "
        f"{result['top_100_excluding_rated']:.4f}, top-10 {result['top_10']:.4f}"
        + (f", RMSE {result['rmse']:.4f}" if "rmse" in result else ""))
    return result


def run_ranking(name: str, hparams, data: Data) -> Dict[str, float]:

    model, seconds = train(name, hparams, data, "rating")
    evaluation = inputs.input_dataset(hparams, data.vocabulary, data.files["rating"]["eval"], training=False)
    result = trainer_eval.evaluate_ranking(model, evaluation)
    result["seconds"] = seconds
    log(f"[{name}] done in {seconds:.0f} s: RMSE {result['rmse']:.4f}, MAE {result['mae']:.4f}")
    return result


def run_sequential(name: str, hparams, data: Data) -> Dict[str, float]:

    model, seconds = train(name, hparams, data, "sequence")
    evaluation = inputs.input_dataset(hparams, data.vocabulary, data.files["sequence"]["eval"], training=False)
    result = trainer_eval.evaluate_retrieval(model, evaluation, data.vocabulary, KS)
    result["seconds"] = seconds
    log(f"[{name}] done in {seconds:.0f} s: top-100 {result['top_100']:.4f}, "
        f"top-10 {result['top_10']:.4f}")
    return result


def popularity_retrieval(data: Data) -> Dict[str, float]:

    spec = inputs.select(inputs.rating_feature_spec(), [contract.USER_ID, contract.MOVIE_ID])
    evaluation = inputs.make_dataset(data.files["rating"]["eval"], spec, 8192, shuffle=False)
    return trainer_eval.evaluate_popularity(evaluation, data.vocabulary, contract.MOVIE_ID, KS,
                                 data.rating_history, counts=data.rating_counts)


def popularity_ranking(data: Data) -> Dict[str, float]:
    spec = inputs.select(inputs.rating_feature_spec(), [contract.USER_RATING])
    evaluation = inputs.make_dataset(data.files["rating"]["eval"], spec, 8192, shuffle=False)
    labels = np.concatenate([batch[contract.USER_RATING].numpy() for batch in evaluation])
    return {"rmse": float(np.sqrt(np.mean((labels - data.mean_rating) ** 2))),
            "mean_rating": data.mean_rating}


def _last_context_rows(data: Data, context: np.ndarray) -> np.ndarray:
    """Vocabulary row of each example's last (non-padding) context movie."""

    lengths = np.maximum((context != 0).sum(axis=1), 1)
    return trainer_eval.movie_rows(data.vocabulary, context[np.arange(len(context)), lengths - 1])


def sequential_baselines(data: Data) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Popularity and "the movie that most often follows the last one"."""

    num_movies = data.vocabulary.num_movies
    # transitions[a + 1, b]: training examples whose last context movie is row a and
    # whose label is row b (row 0: a last movie outside the vocabulary).
    transitions = np.zeros((num_movies + 1, num_movies), np.float64)
    for batch in data.sequence_train:
        last = _last_context_rows(data, batch[contract.CONTEXT_MOVIE_ID].numpy())
        labels = trainer_eval.movie_rows(data.vocabulary, batch[contract.LABEL_MOVIE_ID].numpy())
        keep = labels >= 0
        np.add.at(transitions, (last[keep] + 1, labels[keep]), 1)
    # Popularity breaks ties (it sums to 1, less than one transition).
    share = data.label_counts / max(data.label_counts.sum(), 1)
    last_rows, labels = [], []
    for batch in data.sequence_eval:
        last_rows.append(_last_context_rows(data, batch[contract.CONTEXT_MOVIE_ID].numpy()))
        labels.append(trainer_eval.movie_rows(data.vocabulary, batch[contract.LABEL_MOVIE_ID].numpy()))
    last_rows, labels = np.concatenate(last_rows), np.concatenate(labels)
    identity = np.eye(num_movies, dtype=np.float32)
    scores = (transitions[last_rows + 1] + share[None, :]).astype(np.float32)
    transition = trainer_eval.top_k_accuracy(scores, identity, labels, KS)
    popularity = trainer_eval.top_k_accuracy(np.ones((len(labels), 1), np.float32),
                                  share.astype(np.float32)[:, None], labels, KS)
    return popularity, transition


# ---------------------------------------------------------------------------------------
# Report.


def fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(rows: List[Tuple[str, Optional[float], Optional[float], Optional[float],
                           Optional[float], str]]) -> str:
    header = ("figure", "ours", "tutorial", "popularity", "transition", "target")
    lines = [header] + [(name, fmt(a), fmt(b), fmt(c), fmt(d), target)
                        for name, a, b, c, d, target in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        out.append("  ".join(str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
                             for i, (cell, width) in enumerate(zip(line, widths))).rstrip())
        if number == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "components" / "trainer").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get(ML100K_ENV) or str(DEFAULT_DATA_DIR),
                        help=f"unpacked ml-100k (default: ${ML100K_ENV} or {DEFAULT_DATA_DIR})")
    parser.add_argument("--work-dir", default=None,
                        help="where the examples go (default: a temporary directory, removed)")
    parser.add_argument("--only", default=",".join(TASKS),
                        help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--no-tutorials", action="store_true",
                        help="skip the tutorials' recipes")
    args = parser.parse_args(argv)
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; known: {TASKS}")
    data_dir = pathlib.Path(args.data_dir)
    if not (data_dir / "u.data").is_file():
        parser.error(f"MovieLens-100K not found at {data_dir} (no u.data); set {ML100K_ENV}")


    tf.get_logger().setLevel("ERROR")
    start = time.time()
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="quality-benchmark-"))
    results: Dict[str, Any] = {}
    try:
        log(f"example generation: {data_dir} -> {work}")
        examples_dir = work / "examples"
        if examples_dir.exists():
            shutil.rmtree(examples_dir)
        paths, _, summary = generate_examples(data_dir, examples_dir)
        log(f"  {summary} ({time.time() - start:.0f} s)")
        data = Data(paths)
        log(f"  vocabulary: {data.vocabulary.num_movies} movies, "
            f"{data.vocabulary.num_users} users")

        presets = {name: hp.HParams.from_dict({"model": name}) for name in hp.MODELS}
        tutorials = {name: hp.HParams.from_dict(config, preset=False)
                     for name, config in TUTORIALS.items()}
        run_tutorials = not args.no_tutorials

        if "retrieval" in only or "multitask" in only:
            results["popularity_retrieval"] = popularity_retrieval(data)
            log(f"[popularity] retrieval top-100 "
                f"{results['popularity_retrieval']['top_100']:.4f}, excluding seen "
                f"{results['popularity_retrieval']['top_100_excluding_rated']:.4f}")
        if "ranking" in only or "multitask" in only:
            results["popularity_ranking"] = popularity_ranking(data)
            log(f"[popularity] ranking RMSE (global mean "
                f"{data.mean_rating:.3f}): {results['popularity_ranking']['rmse']:.4f}")
        if "sequential" in only:
            (results["popularity_sequential"],
             results["transition_sequential"]) = sequential_baselines(data)
            for name in ("popularity", "transition"):
                figures = results[f"{name}_sequential"]
                log(f"[{name}] sequential top-100 {figures['top_100']:.4f}, "
                    f"top-10 {figures['top_10']:.4f}")

        runners = {"retrieval": run_retrieval, "ranking": run_ranking,
                   "multitask": run_retrieval, "sequential": run_sequential}
        for name in ("retrieval", "context", "ranking", "multitask", "sequential"):
            if name not in only:
                continue
            if name == "context":  # the retrieval preset with and without timestamps
                base = presets["retrieval"].to_dict()
                results["retrieval_id_only"] = run_retrieval(
                    "retrieval, ids only", hp.HParams.from_dict({**base, **ID_ONLY}), data)
                results["retrieval_timestamps"] = run_retrieval(
                    "retrieval, ids + timestamps",
                    hp.HParams.from_dict({**base, **WITH_TIMESTAMPS}), data)
                continue
            results[name] = runners[name](name, presets[name], data)
            if run_tutorials:
                results[f"tutorial_{name}"] = runners[name](
                    f"tutorial {name}", tutorials[name], data)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.time() - start

    def get(run: str, metric: str) -> Optional[float]:
        value = results.get(run, {}).get(metric)
        return None if value is None else float(value)

    figures = {
        "retrieval_top100": get("retrieval", "top_100"),
        "retrieval_top100_excl_seen": get("retrieval", "top_100_excluding_rated"),
        "ranking_rmse": get("ranking", "rmse"),
        "multitask_top100": get("multitask", "top_100"),
        "multitask_rmse": get("multitask", "rmse"),
        "sequential_top100": get("sequential", "top_100"),
        "sequential_top10": get("sequential", "top_10"),
        "retrieval_id_only_top100": get("retrieval_id_only", "top_100"),
        "retrieval_timestamps_top100": get("retrieval_timestamps", "top_100"),
    }
    extra = {
        "retrieval_top10": get("retrieval", "top_10"),
        "retrieval_top10_excl_seen": get("retrieval", "top_10_excluding_rated"),
        "multitask_top100_excl_seen": get("multitask", "top_100_excluding_rated"),
        "retrieval_id_only_top100_excl_seen": get("retrieval_id_only",
                                                  "top_100_excluding_rated"),
        "retrieval_timestamps_top100_excl_seen": get("retrieval_timestamps",
                                                     "top_100_excluding_rated"),
        "tutorial_retrieval_top100": get("tutorial_retrieval", "top_100"),
        "tutorial_retrieval_top100_excl_seen": get("tutorial_retrieval",
                                                   "top_100_excluding_rated"),
        "tutorial_ranking_rmse": get("tutorial_ranking", "rmse"),
        "tutorial_multitask_top100": get("tutorial_multitask", "top_100"),
        "tutorial_multitask_rmse": get("tutorial_multitask", "rmse"),
        "tutorial_sequential_top100": get("tutorial_sequential", "top_100"),
        "tutorial_sequential_top10": get("tutorial_sequential", "top_10"),
        "popularity_retrieval_top100": get("popularity_retrieval", "top_100"),
        "popularity_retrieval_top100_excl_seen": get("popularity_retrieval",
                                                     "top_100_excluding_rated"),
        "popularity_ranking_rmse": get("popularity_ranking", "rmse"),
        "popularity_sequential_top100": get("popularity_sequential", "top_100"),
        "popularity_sequential_top10": get("popularity_sequential", "top_10"),
        "transition_sequential_top100": get("transition_sequential", "top_100"),
        "transition_sequential_top10": get("transition_sequential", "top_10"),
    }
    f = {**figures, **extra}

    def check(ok: Callable[[], bool], *needed: Optional[float]) -> Optional[bool]:
        return None if any(value is None for value in needed) else bool(ok())

    targets = {
        "retrieval_top100 >= 0.35": check(lambda: f["retrieval_top100"] >= 0.35,
                                          f["retrieval_top100"]),
        "retrieval_top100_excl_seen >= 0.62": check(
            lambda: f["retrieval_top100_excl_seen"] >= 0.62, f["retrieval_top100_excl_seen"]),
        "ranking_rmse <= 0.92": check(lambda: f["ranking_rmse"] <= 0.92, f["ranking_rmse"]),
        "multitask_top100 >= 0.97 x retrieval_top100": check(
            lambda: f["multitask_top100"] >= 0.97 * f["retrieval_top100"],
            f["multitask_top100"], f["retrieval_top100"]),
        "multitask_rmse <= 1.03 x ranking_rmse": check(
            lambda: f["multitask_rmse"] <= 1.03 * f["ranking_rmse"],
            f["multitask_rmse"], f["ranking_rmse"]),
        "sequential_top100 >= 0.55": check(lambda: f["sequential_top100"] >= 0.55,
                                           f["sequential_top100"]),
        "sequential_top10 >= 0.13": check(lambda: f["sequential_top10"] >= 0.13,
                                          f["sequential_top10"]),
        "retrieval_timestamps_top100 > retrieval_id_only_top100": check(
            lambda: f["retrieval_timestamps_top100"] > f["retrieval_id_only_top100"],
            f["retrieval_timestamps_top100"], f["retrieval_id_only_top100"]),
    }

    def ratio(a, b):
        return None if a is None or b is None else a / b

    rows = [
        ("retrieval top-100 (all movies)", f["retrieval_top100"],
         f["tutorial_retrieval_top100"], f["popularity_retrieval_top100"], None, ">= 0.35"),
        ("retrieval top-100 excl. seen", f["retrieval_top100_excl_seen"],
         f["tutorial_retrieval_top100_excl_seen"], f["popularity_retrieval_top100_excl_seen"],
         None, ">= 0.62"),
        ("retrieval top-10 excl. seen", f["retrieval_top10_excl_seen"],
         get("tutorial_retrieval", "top_10_excluding_rated"),
         get("popularity_retrieval", "top_10_excluding_rated"), None, ""),
        ("ranking RMSE (stars)", f["ranking_rmse"], f["tutorial_ranking_rmse"],
         f["popularity_ranking_rmse"], None, "<= 0.92"),
        ("multitask (1, 1) top-100", f["multitask_top100"], f["tutorial_multitask_top100"],
         f["popularity_retrieval_top100"], None, ">= 0.97 x retrieval"),
        ("multitask (1, 1) RMSE", f["multitask_rmse"], f["tutorial_multitask_rmse"],
         f["popularity_ranking_rmse"], None, "<= 1.03 x ranking"),
        ("  multitask/retrieval top-100", ratio(f["multitask_top100"], f["retrieval_top100"]),
         ratio(f["tutorial_multitask_top100"], f["tutorial_retrieval_top100"]), None, None,
         ">= 0.97"),
        ("  multitask/ranking RMSE", ratio(f["multitask_rmse"], f["ranking_rmse"]),
         ratio(f["tutorial_multitask_rmse"], f["tutorial_ranking_rmse"]), None, None,
         "<= 1.03"),
        ("sequential top-100", f["sequential_top100"], f["tutorial_sequential_top100"],
         f["popularity_sequential_top100"], f["transition_sequential_top100"], ">= 0.55"),
        ("sequential top-10", f["sequential_top10"], f["tutorial_sequential_top10"],
         f["popularity_sequential_top10"], f["transition_sequential_top10"], ">= 0.13"),
        ("retrieval top-100, ids only", f["retrieval_id_only_top100"], None, None, None, ""),
        ("retrieval top-100, ids + timestamps", f["retrieval_timestamps_top100"], None, None,
         None, "> ids only"),
    ]
    log("")
    log(table(rows))
    log("")
    for name, met in targets.items():
        log(f"  {'met    ' if met else 'MISSED ' if met is False else 'not run'}  {name}")
    log(f"wall time {wall:.0f} s")
    summary = {
        **{key: None if value is None else round(value, 4) for key, value in f.items()},
        "targets": targets,
        "seconds": {name: round(result["seconds"], 1) for name, result in results.items()
                    if "seconds" in result},
        "presets": {name: config for name, config in hp.PRESETS.items()},
        "tutorial_recipes": {name: {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in config.items()}
                             for name, config in TUTORIALS.items()},
        "wall_seconds": round(wall, 1),
        "code": code_hash(),
    }
    print(json.dumps(summary), flush=True)
    return 0 if all(met is not False for met in targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
