"""ScaNN against brute force: recall@100 and single-query latency, real and 1M catalogues.

  PYTHONPATH=. .venv/bin/python benchmarks/ann.py                      # ~5 min on 2 cores
  PYTHONPATH=. .venv/bin/python benchmarks/ann.py --model-dir DIR      # a Trainer export

What is measured, in one run (see benchmarks/README.md):

* **Real catalogue**: the candidate embeddings of a trained retrieval model
  (``candidates.npz`` of a RetrievalTrainer export) and the query embeddings of its
  users. Without ``--model-dir`` the pipeline is run once on ``--data-dir`` (default: the
  real MovieLens-100K) with ``--models retrieval`` into ``--work-dir`` and reused after.
* **1M catalogue**: 1,000,000 synthetic movies drawn around the real ones:
  ``x = e_j + 0.5 L z`` with ``e_j`` a random real movie embedding, ``L L^T`` the real
  embeddings' covariance and ``z ~ N(0, I)``; the queries are the real users' queries.
* ScaNN is configured exactly as the Pusher does (``components/pusher/ann.py``:
  ``tune`` from the catalogue size, then ``calibrate`` on 200 sample users' queries to a
  0.97 recall target); recall@100 is then measured on the *other* users' queries
  (held out), against exact top-100 by dot product.
* Latency: one query at a time through a ``tf.function`` (the serving path of the index:
  ScaNN op, or matmul + top_k), after a warm-up; p50 and p99 in milliseconds.
  ``speedup_1m`` = brute-force p50 / ScaNN p50 on the 1M catalogue.
* For the real catalogue also the pushed SavedModels end to end (``serving_default`` with
  one user id and k=100: query tower + index), loaded back from disk.

The last line is one JSON object: ``recall_at_100_real``, ``recall_at_100_1m``,
``speedup_1m`` and the details. Targets: recall >= 0.95 on both, ``speedup_1m`` >= 10.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import components  # noqa: E402,F401  (Keras 2 before TensorFlow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

K = 100
CALIBRATION_USERS = 200


def trained_model_dir(args) -> str:
    """A RetrievalTrainer export (Format-Serving) with candidates.npz and rated.npz."""
    if args.model_dir:
        return args.model_dir
    output_root = os.path.join(args.work_dir, "pipeline")
    pattern = os.path.join(output_root, "pipeline_root", "RetrievalTrainer", "model", "*",
                           "Format-Serving")
    if not glob.glob(pattern):
        import pipeline_runner  # pylint: disable=import-outside-toplevel

        argv = ["run", "--data-dir", args.data_dir, "--output-root", output_root,
                "--models", "retrieval", "--beam-arg=--direct_running_mode=in_memory"]
        if args.epochs:
            argv += ["--epochs", str(args.epochs)]
        print(f"Training the retrieval model: pipeline_runner.py {' '.join(argv)}",
              flush=True)
        config = pipeline_runner.config_from_args(pipeline_runner.build_parser().parse_args(argv))
        pipeline_runner.run(config)
    found = sorted(glob.glob(pattern), key=lambda p: int(p.split(os.sep)[-2]))
    if not found:
        raise SystemExit(f"no RetrievalTrainer export under {output_root}")
    return found[-1]


def user_queries(model_dir: str) -> np.ndarray:
    """Query embeddings [U, D] of every user the model knows (rated.npz users, at their
    latest timestamp for a model that reads one), and the RatedMovies."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    rated = serving.RatedMovies.of_model(model_dir)
    model = tf.saved_model.load(model_dir)
    inputs = serving.query_inputs(serving.query_input_spec(model), users=rated.user_ids,
                                  rated=rated)
    return model.signatures["serving_default"](
        **{name: tf.constant(value) for name, value in inputs.items()}
    )["query_embedding"].numpy(), rated


def synthetic_catalogue(real: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """``size`` embeddings around the real ones (see the module docstring)."""
    rng = np.random.default_rng(seed)
    covariance = np.cov(real.T) + 1e-6 * np.eye(real.shape[1])
    factor = np.linalg.cholesky(covariance).astype(np.float32)
    out = np.empty((size, real.shape[1]), np.float32)
    for start in range(0, size, 100_000):
        stop = min(start + 100_000, size)
        noise = rng.standard_normal((stop - start, real.shape[1])).astype(np.float32)
        out[start:stop] = real[rng.integers(0, len(real), stop - start)] + 0.5 * noise @ factor.T
    return out


def latencies(fn: Callable, queries: np.ndarray, count: int, warmup: int = 10) -> np.ndarray:
    """Milliseconds of ``fn(query [1, D])`` for ``count`` queries, one at a time."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    singles = [tf.constant(queries[i % len(queries)][None, :]) for i in range(count + warmup)]
    for query in singles[:warmup]:
        fn(query)
    times = []
    for query in singles[warmup:]:
        started = time.perf_counter()
        result = fn(query)
        _ = [t.numpy() for t in result]
        times.append((time.perf_counter() - started) * 1e3)
    return np.asarray(times)


def measure(name: str, embeddings: np.ndarray, calibration: np.ndarray,
            held_out: np.ndarray, count: int, brute_count: int) -> Dict:
    """Tune, build and calibrate ScaNN on ``embeddings``; recall on ``held_out``;
    single-query latency of ScaNN and of brute force."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from components.pusher import ann  # pylint: disable=import-outside-toplevel

    params = ann.tune(len(embeddings), K)
    started = time.time()
    searcher = ann.build_searcher(embeddings, params, K)
    build_seconds = time.time() - started
    params, calibrated = ann.calibrate(searcher, embeddings, calibration, params, K)
    exact = ann.exact_top_k(embeddings, held_out, K)
    rows, _ = ann.search(searcher, held_out, K, params)
    recall = ann.recall(rows, exact)

    kwargs = {}
    if params.num_leaves:
        kwargs["leaves_to_search"] = params.num_leaves_to_search
    if params.reorder:
        kwargs["pre_reorder_num_neighbors"] = max(params.reorder, K)

    @tf.function(input_signature=[tf.TensorSpec([1, embeddings.shape[1]], tf.float32)])
    def scann_search(query):
        result = searcher.search_batched(query, final_num_neighbors=K, **kwargs)
        return result.indices, result.distances

    database = tf.constant(embeddings)

    @tf.function(input_signature=[tf.TensorSpec([1, embeddings.shape[1]], tf.float32)])
    def brute_force(query):
        values, rows = tf.math.top_k(tf.matmul(query, database, transpose_b=True), K)
        return rows, values

    scann_ms = latencies(scann_search, held_out, count)
    brute_ms = latencies(brute_force, held_out, brute_count)
    result = {
        "movies": int(len(embeddings)), "dim": int(embeddings.shape[1]),
        "scann": ann.describe(params), "params": params.to_dict(),
        "build_seconds": round(build_seconds, 1),
        "calibration_recall": round(calibrated, 4), "recall_at_100": round(recall, 4),
        "held_out_queries": int(len(held_out)),
        "scann_p50_ms": round(float(np.percentile(scann_ms, 50)), 3),
        "scann_p99_ms": round(float(np.percentile(scann_ms, 99)), 3),
        "brute_force_p50_ms": round(float(np.percentile(brute_ms, 50)), 3),
        "brute_force_p99_ms": round(float(np.percentile(brute_ms, 99)), 3),
    }
    result["speedup"] = round(result["brute_force_p50_ms"] / result["scann_p50_ms"], 1)
    print(f"{name:>5}: {result['movies']:>9,} movies  {result['scann']:<48} "
          f"recall@100 {recall:.4f}  ScaNN p50/p99 {result['scann_p50_ms']:.2f}/"
          f"{result['scann_p99_ms']:.2f} ms  brute force p50/p99 "
          f"{result['brute_force_p50_ms']:.2f}/{result['brute_force_p99_ms']:.2f} ms  "
          f"speedup {result['speedup']}x  (build {build_seconds:.1f} s)", flush=True)
    return result


def end_to_end(model_dir: str, rated, work_dir: str, count: int) -> Dict:
    """Pushes ``model_dir`` (both variants) and times ``serving_default`` from disk."""
    import scann  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from components.pusher import executor, serving  # pylint: disable=import-outside-toplevel

    serving_root = tempfile.mkdtemp(prefix="serving-", dir=work_dir)
    push = executor.push(model_dir, serving_root, "retrieval", "retrieval", True, K)
    result = {}
    for variant, path in sorted(push["destinations"].items()):
        model = tf.saved_model.load(path).signatures["serving_default"]
        names = serving.read_serving_info(path)["inputs"]
        users = rated.user_ids
        calls = [{name: tf.constant(value) for name, value in serving.query_inputs(
            names, users=[users[i % len(users)]], rated=rated).items()}
            for i in range(count + 10)]
        for inputs in calls[:10]:
            model(k=tf.constant(K), **inputs)
        times = []
        for inputs in calls[10:]:
            started = time.perf_counter()
            model(k=tf.constant(K), **inputs)["movie_ids"].numpy()
            times.append((time.perf_counter() - started) * 1e3)
        result[f"{variant}_p50_ms"] = round(float(np.percentile(times, 50)), 3)
        result[f"{variant}_p99_ms"] = round(float(np.percentile(times, 99)), 3)
    print(f"  pushed SavedModels, serving_default(user_id, k=100) end to end: "
          + ", ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="a RetrievalTrainer export (Format-Serving)")
    parser.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "data",
                                                           "ml-100k"),
                        help="data to train on without --model-dir (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of that training (default: the model's)")
    parser.add_argument("--work-dir", default=os.path.join(
        tempfile.gettempdir(), "movielens-ann-benchmark"), help="(default: %(default)s)")
    parser.add_argument("--size", type=int, default=1_000_000,
                        help="synthetic catalogue size (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=500,
                        help="single ScaNN queries timed (default: %(default)s)")
    parser.add_argument("--brute-force-queries", type=int, default=200,
                        help="single brute-force queries timed on the large catalogue "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)

    model_dir = trained_model_dir(args)
    candidates = np.load(os.path.join(model_dir, "assets.extra", "candidates.npz"))
    real = np.asarray(candidates["embeddings"], np.float32)
    queries, rated = user_queries(model_dir)
    order = np.random.default_rng(1).permutation(len(queries))
    calibration = queries[order[:CALIBRATION_USERS]]
    held_out = queries[order[CALIBRATION_USERS:]]
    print(f"model: {model_dir}\n{len(real)} real movies, {len(queries)} users "
          f"({len(calibration)} calibrate ScaNN, {len(held_out)} held out), "
          f"dimension {real.shape[1]}", flush=True)

    results = {"real": measure("real", real, calibration, held_out, args.queries,
                               args.queries)}
    results["real"]["end_to_end"] = end_to_end(model_dir, rated, args.work_dir, 200)
    large = synthetic_catalogue(real, args.size)
    results["1m"] = measure("1m", large, calibration, held_out, args.queries,
                            args.brute_force_queries)
    summary = {
        "recall_at_100_real": results["real"]["recall_at_100"],
        "recall_at_100_1m": results["1m"]["recall_at_100"],
        "speedup_1m": results["1m"]["speedup"],
        "targets_met": bool(results["real"]["recall_at_100"] >= 0.95
                            and results["1m"]["recall_at_100"] >= 0.95
                            and results["1m"]["speedup"] >= 10),
        "model_dir": model_dir, "details": results,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
