"""Benchmark: sampled softmax against the full softmax -- cost per step and quality.

Two parts, in one run:

* **Step cost** (``--step-catalogues``, default ``1682,3706,10000,30000``): the retrieval
  preset's towers (title and genre features, D = 128, batch 1024; no timestamps) on a
  synthetic catalogue of M movies, one training step timed (median of ``--steps``
  after warm-up) with the full softmax and with sampled softmax (in-batch +
  ``num_sampled_negatives`` shared negatives, log-Q). This is what
  ``HParams.sampled_softmax_min_catalogue`` trades against quality.
* **Quality** (``--datasets``): the pipeline's own example generation
  (``generate.generate``, in-process) on the real MovieLens-100K (``--ml100k``, default
  ``../shared/data/ml-100k``) and/or ML-1M-shaped synthetic data (``data.synthetic``,
  ``--format 1m``: 6,040 users x 3,706 movies x 1,000,000 ratings), then each model of
  ``--models`` trained with its preset twice -- full softmax, and sampled softmax
  (``sampled_softmax_min_catalogue=0``) -- through ``distribute.build_and_fit`` (what
  ``run_fn`` trains) and evaluated by ``run.evaluate`` (what ``metrics.json`` holds):
  top-10/top-100 over all movies and excluding rated ones, beside popularity.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/sampled_softmax.py               # ML-100K + 1M
    PYTHONPATH=. .venv/bin/python benchmarks/sampled_softmax.py --datasets ml100k \\
        --step-catalogues ''

The last line is one JSON object: per catalogue size the step milliseconds of each
softmax, and per dataset and model each softmax's figures, train seconds and the
difference sampled - full.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Dict

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import components  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow)

import numpy as np  # noqa: E402

SHAPE_1M = (6040, 3706, 1_000_000)
NEVER = 1 << 40  # a catalogue threshold no data set reaches: always the full softmax


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def step_milliseconds(num_movies: int, steps: int, negatives: int) -> Dict[str, float]:
    """Median ms of one training step, full and sampled softmax, on ``num_movies``."""
    import tensorflow as tf

    from components.trainer import hparams as hp, models, vocabulary as vocab_lib

    rng = np.random.default_rng(0)
    genres = ("UNK", "Drama", "Comedy", "Action", "Thriller", "Romance")
    counts = np.sort(rng.zipf(1.3, num_movies).clip(1, 10_000))[::-1].astype(np.int64)
    vocab = vocab_lib.Vocabulary(
        movie_ids=np.arange(1, num_movies + 1, dtype=np.int64), movie_counts=counts,
        movie_titles=tuple(f"Movie {i} word{i % 997} (1990)" for i in range(num_movies)),
        movie_years=np.full(num_movies, 1990, np.int64),
        movie_genres=tuple((genres[1 + i % 5],) for i in range(num_movies)),
        user_ids=np.arange(1, 1001, dtype=np.int64), user_counts=np.ones(1000, np.int64),
        genres=genres, years=(0, 1990))
    result = {}
    for mode, threshold in (("full", NEVER), ("sampled", 0)):
        # Without the recency prior: the batches here have no time (the prior's cost is
        # a gather of batch x candidates per window, in either mode).
        params = hp.HParams.from_dict({"use_timestamps": False, "num_sampled_negatives": negatives,
                                       "sampled_softmax_min_catalogue": threshold,
                                       "recency_windows_days": ()})
        model = models.compile_model(models.build_model(params, vocab), params)
        probability = counts / counts.sum()
        batch = {"user_id": tf.constant(rng.integers(1, 1001, params.batch_size)),
                 "movie_id": tf.constant(rng.choice(vocab.movie_ids, params.batch_size,
                                                    p=probability))}
        step = tf.function(model.train_step)
        times = []
        for i in range(steps + 3):
            started = time.perf_counter()
            step(batch)["loss"].numpy()
            if i >= 3:
                times.append(1000 * (time.perf_counter() - started))
        result[mode] = round(float(np.median(times)), 1)
    return result


def prepare(name: str, data_dir: pathlib.Path, work_dir: pathlib.Path) -> pathlib.Path:
    """The example generator's outputs for ``data_dir`` under ``work_dir/name``."""
    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig

    out = work_dir / name / "examples"
    if not (out / "done").exists():
        _log(f"{name}: example generation from {data_dir}")
        generate.generate(str(data_dir), ExampleGenConfig(seed=0),
                          generate.OutputPaths.under(str(out)))
        (out / "done").write_text("")
    return out


def quality(examples: pathlib.Path, model: str, epochs: int, negatives: int) -> Dict:
    """Full and sampled softmax figures of ``model``'s preset on ``examples``."""
    from components import contract
    from components.example_gen import generate
    from components.trainer import distribute, evaluation, hparams as hp, inputs, run, sampling
    from components.trainer.vocabulary import load_vocabulary

    paths = generate.OutputPaths.under(str(examples))
    vocabulary = load_vocabulary(paths.vocabulary)
    kind = contract.model_kind(model)
    root = paths.sequence_examples if kind.examples == contract.SEQUENCE else paths.rating_examples
    files = {split: f"{root}/Split-{split}" for split in contract.SPLITS}
    figures: Dict[str, Dict] = {}
    for mode, threshold in (("full", NEVER), ("sampled", 0)):
        overrides = {"model": model, "sampled_softmax_min_catalogue": threshold,
                     "num_sampled_negatives": negatives}
        if epochs:
            overrides["epochs"] = epochs
        params = hp.HParams.from_dict(overrides)
        started = time.perf_counter()
        trained = distribute.build_and_fit(params, vocabulary, files[contract.TRAIN])
        seconds = time.perf_counter() - started
        metrics = run.evaluate(trained, params, vocabulary, files[contract.TRAIN],
                               files[contract.EVAL])
        figures[mode] = {**{k: round(v, 4) for k, v in metrics.items() if k.startswith("top_")},
                         "train_seconds": round(seconds, 1)}
        _log(f"{model} {mode}: {figures[mode]}")
    params = hp.HParams.from_dict({"model": model})
    counts = sampling.training_movie_counts(params, vocabulary, files[contract.TRAIN])
    eval_data = inputs.input_dataset(params, vocabulary, files[contract.EVAL], training=False)
    history = evaluation.user_history(
        inputs.input_dataset(params, vocabulary, files[contract.TRAIN], training=False),
        vocabulary, kind.history_keys)
    popular = evaluation.evaluate_popularity(eval_data, vocabulary, kind.label_key,
                                             params.top_ks, history, counts=counts)
    figures["popularity"] = {k: round(v, 4) for k, v in popular.items() if k.startswith("top_")}
    figures["sampled_minus_full"] = {
        k: round(figures["sampled"][k] - figures["full"][k], 4)
        for k in ("top_10", "top_100", "top_10_excluding_rated", "top_100_excluding_rated")}
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="ml100k,synthetic1m",
                        help="comma-separated: ml100k, synthetic1m")
    parser.add_argument("--models", default="retrieval,sequential")
    parser.add_argument("--ml100k", default=str(REPO.parent / "shared" / "data" / "ml-100k"))
    parser.add_argument("--work-dir", default=os.path.join(
        tempfile.gettempdir(), "movielens-sampled-softmax-benchmark"))
    parser.add_argument("--epochs", type=int, default=0,
                        help="override every preset's epochs (0: the presets')")
    parser.add_argument("--epochs-1m", type=int, default=2,
                        help="epochs on the 1M data (0: the presets'); a full run is long")
    parser.add_argument("--negatives", type=int, default=1024,
                        help="num_sampled_negatives of the sampled runs")
    parser.add_argument("--step-catalogues", default="1682,3706,10000,30000")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    work_dir = pathlib.Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary: Dict[str, object] = {"negatives": args.negatives, "step_ms": {}, "quality": {}}

    for size in [int(s) for s in args.step_catalogues.split(",") if s]:
        summary["step_ms"][size] = step_milliseconds(size, args.steps, args.negatives)
        _log(f"step ms, {size} movies: {summary['step_ms'][size]}")

    for dataset in [d for d in args.datasets.split(",") if d]:
        if dataset == "ml100k":
            data_dir, epochs = pathlib.Path(args.ml100k), args.epochs
        elif dataset == "synthetic1m":
            from data import synthetic

            data_dir, epochs = work_dir / "synthetic1m" / "raw", args.epochs_1m or args.epochs
            if not (data_dir / "ratings.dat").exists():
                _log("synthetic 1M: generating")
                synthetic.generate(data_dir, *SHAPE_1M, "1m", 0)
        else:
            parser.error(f"unknown dataset {dataset!r}")
        examples = prepare(dataset, data_dir, work_dir)
        summary["quality"][dataset] = {
            "epochs": epochs or "preset",
            **{model: quality(examples, model, epochs, args.negatives)
               for model in args.models.split(",") if model}}

    summary["wall_seconds"] = round(time.time() - started, 1)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
