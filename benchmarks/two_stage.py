"""Benchmark: what the second stage (re-ranking by the ranking model) buys, and costs.

Reads a pipeline run that pushed a retrieval and a ranking model (and, with this
branch's pipeline, the two-stage model; it is built here if absent, as the
TwoStageBuilder would):

    .venv/bin/python pipeline_runner.py run --data-dir ../shared/data/ml-100k \\
        --output-root /tmp/serve-bench --models retrieval,ranking
    .venv/bin/python benchmarks/two_stage.py --output-root /tmp/serve-bench

Quality, on the run's eval split of rating examples (the same split the Evaluators
use): for every user with eval ratings, the top 10 of

* retrieval alone: the pushed retrieval model's exact variant, ``recommend_excluding``;
* retrieval + re-rank: the pushed two-stage model's exact variant (the retrieval top N
  re-ordered by the ranking model's predicted rating), ``recommend_excluding``; also at
  other N (the same two pushed models combined in memory, not saved);

both leaving out the user's *training* movies only (the served models' own
``rated.npz`` holds both splits). Relevant: the user's eval movies (``all``), or those
rated 4 or 5 (``liked``). NDCG@10 (binary gains, ideal = min(relevant, 10) hits) and
HR@10 (at least one hit), averaged over users.

Latency: single-user requests (``serving_default``, k = 10, one user per call) to the
four served variants -- retrieval exact / ScaNN, two-stage exact / ScaNN -- loaded in
this process (with ``import scann``), after warm-up; p50 and p99 in ms.

Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
import os
import pathlib
import sys
import time
from typing import Dict, List

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from components import contract  # noqa: E402  (first: selects Keras 2)

import numpy as np  # noqa: E402
importlib.import_module("scann")  # the ScaNN variants' ops
import tensorflow as tf  # noqa: E402

from components.pusher import publishing, serving  # noqa: E402
from components.two_stage import build, model as two_stage_model  # noqa: E402

K = 10
LIKED = 4.0


def _split(output_root: str, split: str) -> Dict[str, np.ndarray]:
    """user_id, movie_id, user_rating of the latest example generation's split."""
    runs = glob.glob(os.path.join(output_root, "pipeline_root", "MovieLensExampleGen",
                                  contract.RATING_EXAMPLES, "*"))
    latest = max(runs, key=lambda path: int(os.path.basename(path)))
    files = glob.glob(os.path.join(latest, f"Split-{split}", "*.gz"))
    spec = {contract.USER_ID: tf.io.FixedLenFeature([], tf.int64),
            contract.MOVIE_ID: tf.io.FixedLenFeature([], tf.int64),
            contract.USER_RATING: tf.io.FixedLenFeature([], tf.float32)}
    columns: Dict[str, List[np.ndarray]] = {name: [] for name in spec}
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
    for batch in dataset.map(lambda s: tf.io.parse_example(s, spec)):
        for name, value in batch.items():
            columns[name].append(value.numpy())
    return {name: np.concatenate(values) for name, values in columns.items()}


def _per_user(data: Dict[str, np.ndarray], keep=None) -> Dict[int, set]:
    users: Dict[int, set] = {}
    for i, (user, movie) in enumerate(zip(data[contract.USER_ID], data[contract.MOVIE_ID])):
        if keep is None or keep[i]:
            users.setdefault(int(user), set()).add(int(movie))
    return users


def ndcg_hr(ranked: List[int], relevant: set, k: int = K):
    gains = [1.0 if movie in relevant else 0.0 for movie in ranked[:k]]
    dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal, float(any(gains))


def _padded(rows: List[List[int]]) -> np.ndarray:
    out = np.zeros((len(rows), max([len(r) for r in rows] + [1])), np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def top_k_lists(call, users: List[int], train: Dict[int, set], batch: int = 64):
    """users -> top-K movie ids, by ``call(users [B], exclude [B, E]) -> ids [B, K]``."""
    out = {}
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        exclude = _padded([sorted(train.get(u, ())) for u in chunk])
        ids, scores = call(np.asarray(chunk, np.int64), exclude)
        for user, row, score in zip(chunk, ids, scores):
            out[user] = [int(m) for m, s in zip(row, score) if np.isfinite(s)]
    return out


def quality(lists: Dict[int, List[int]], relevant: Dict[int, set]) -> Dict[str, float]:
    pairs = [ndcg_hr(lists[u], relevant[u]) for u in relevant if u in lists]
    return {"ndcg@10": float(np.mean([p[0] for p in pairs])),
            "hr@10": float(np.mean([p[1] for p in pairs])), "users": len(pairs)}


def latency(signature, feeds_of, users: List[int], requests: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    chosen = rng.choice(users, requests + 20)
    times = []
    for i, user in enumerate(chosen):
        feeds = feeds_of(int(user))
        started = time.perf_counter()
        signature(**feeds)
        if i >= 20:  # warm-up
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True,
                        help="a pipeline run's output root (retrieval and ranking pushed)")
    parser.add_argument("--num-candidates", type=int, default=build.DEFAULT_NUM_CANDIDATES)
    parser.add_argument("--sweep", default="50,500",
                        help="other N to measure quality at (in memory)")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    started = time.time()
    serving_root = os.path.join(args.output_root, "serving")
    built = build.build(serving_root, num_candidates=args.num_candidates)
    if not built["pushed"]:
        print(f"error: {built['reason']}", file=sys.stderr)
        return 2
    dirs = {("retrieval", v): publishing.latest_version_dir(
        serving.variant_base(serving_root, contract.RETRIEVAL, v)) for v in build.VARIANTS}
    dirs.update({("two_stage", v): built["destinations"][v] for v in build.VARIANTS})
    models = {key: tf.saved_model.load(path) for key, path in dirs.items()}
    retrieval_dir = dirs[("retrieval", contract.BRUTE_FORCE)]
    rated = serving.RatedMovies.of_model(retrieval_dir)
    names = serving.read_serving_info(retrieval_dir)["inputs"]

    train = _per_user(_split(args.output_root, contract.TRAIN))
    evaluation = _split(args.output_root, contract.EVAL)
    relevant = {"all": _per_user(evaluation),
                "liked": _per_user(evaluation, evaluation[contract.USER_RATING] >= LIKED)}
    users = sorted(u for u in relevant["all"] if u in rated)

    def retrieval_call(batch, exclude):
        feeds = {n: tf.constant(v) for n, v in
                 serving.query_inputs(names, users=batch.tolist(), rated=rated).items()}
        out = models[("retrieval", contract.BRUTE_FORCE)].signatures[
            contract.EXCLUDING_SIGNATURE](**feeds, k=tf.constant(K, tf.int32),
                                          exclude_movie_ids=tf.constant(exclude))
        return out[contract.MOVIE_IDS_OUTPUT].numpy(), out[contract.SCORES].numpy()

    def two_stage_call(function):
        def call(batch, exclude):
            out = function(user_id=tf.constant(batch), k=tf.constant(K, tf.int32),
                           exclude_movie_ids=tf.constant(exclude))
            return (out[contract.MOVIE_IDS_OUTPUT].numpy(),
                    out[contract.RANKING_SCORES_OUTPUT].numpy())
        return call

    arms = {"retrieval": top_k_lists(retrieval_call, users, train),
            f"two_stage_n{args.num_candidates}": top_k_lists(two_stage_call(
                models[("two_stage", contract.BRUTE_FORCE)].signatures[
                    contract.EXCLUDING_SIGNATURE]), users, train)}
    ranking_dir = publishing.latest_version_dir(os.path.join(serving_root, contract.RANKING))
    for n in [int(x) for x in args.sweep.split(",") if x]:
        server = two_stage_model.from_pushed(retrieval_dir, ranking_dir, n, K)
        arms[f"two_stage_n{n}"] = top_k_lists(two_stage_call(server.recommend_excluding),
                                              users, train)
    figures = {arm: {which: quality(lists, rel) for which, rel in relevant.items()}
               for arm, lists in arms.items()}

    k = tf.constant(K, tf.int32)
    latencies = {}
    for (kind, variant), loaded in models.items():
        signature = loaded.signatures[contract.RECOMMEND_SIGNATURE]
        if kind == "retrieval":
            def feeds_of(user):
                inputs = serving.query_inputs(names, users=[user], rated=rated)
                return {**{n: tf.constant(v) for n, v in inputs.items()}, "k": k}
        else:
            def feeds_of(user):
                return {contract.USER_ID: tf.constant([user], tf.int64), "k": k}
        latencies[f"{kind}_{variant}"] = latency(signature, feeds_of, users, args.requests)

    print(f"Quality on the eval split ({len(users)} users; top {K}; training movies left "
          f"out; relevant = eval movies, or those rated >= {LIKED:g}):")
    print(f"  {'':<18} {'NDCG@10 all':>12} {'HR@10 all':>10} {'NDCG@10 liked':>14} "
          f"{'HR@10 liked':>12}")
    for arm, figure in figures.items():
        print(f"  {arm:<18} {figure['all']['ndcg@10']:>12.4f} {figure['all']['hr@10']:>10.4f}"
              f" {figure['liked']['ndcg@10']:>14.4f} {figure['liked']['hr@10']:>12.4f}")
    print(f"Latency of one request (one user, k = {K}, {args.requests} requests, in "
          f"process):")
    for name, figure in latencies.items():
        print(f"  {name:<22} p50 {figure['p50_ms']:7.2f} ms   p99 {figure['p99_ms']:7.2f} ms")
    result = {"quality": figures, "latency_ms": latencies, "users": len(users),
              "num_candidates": args.num_candidates, "k": K,
              "two_stage_version": built["version"],
              "stages": {name: stage["version"] for name, stage in built["stages"].items()},
              "wall_seconds": round(time.time() - started, 1)}
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
