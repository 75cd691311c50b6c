"""ScaNN for the catalogue: parameters from its size, a recall check, exact top-k.

Parameters (:func:`tune`), by catalogue size ``n`` and served ``k``:

* ``n < 256``: exact scoring (``score_brute_force``); nothing to gain from quantization.
* ``n < 10,000`` (every MovieLens catalogue up to ML-1M): no partitioning -- scanning
  all of a few thousand quantized points costs microseconds, and a tree would only lose
  recall; asymmetric hashing (2 dimensions per block, anisotropic threshold 0.2, the
  ScaNN authors' choice for dot products) then exact re-scoring of the best
  ``reorder`` candidates.
* ``n >= 10,000``: a k-means tree of ``round(sqrt(n))`` leaves (ScaNN's rule of thumb:
  ~sqrt(n) points per leaf), searching 10% of them (at least 8) before :func:`calibrate`
  widens that until a recall target holds on sample queries; AH; ``reorder`` candidates
  re-scored exactly.
* ``reorder = min(n, max(10k, 1000))`` candidates are re-scored exactly in float32.
  On a large catalogue AH's ranking of trained embeddings is too coarse for a shallow
  re-scoring (4k): searching more leaves does not make up for it, while re-scoring 1,000
  reaches the recall target with a fraction of the leaves at little extra latency
  (benchmarks/ann.py; figures in benchmarks/README.md).

``leaves_to_search`` and the re-scoring depth are search-time arguments of the ScaNN op,
so :func:`calibrate` needs no rebuild, and a query that must skip ``E`` excluded movies
asks for ``k + E`` neighbours (see components/pusher/serving.py).

Any process that builds or loads these ops must have ``import scann`` done first; this
module imports it lazily, so importing it costs nothing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

BRUTE_FORCE_BELOW = 256
PARTITION_FROM = 10_000
SEARCH_FRACTION = 0.1
MIN_LEAVES_TO_SEARCH = 8
TRAINING_SAMPLE = 250_000
TARGET_RECALL = 0.97


@dataclasses.dataclass(frozen=True)
class ScannParams:
    """One ScaNN configuration.

    num_leaves: k-means tree leaves (0: no partitioning).
    num_leaves_to_search: leaves searched per query (0 without partitioning).
    reorder: candidates re-scored exactly (0: none).
    brute_force: exact float scoring instead of asymmetric hashing.
    dimensions_per_block, anisotropic_quantization_threshold: AH's parameters.
    training_sample_size: points the tree's k-means trains on.
    """

    num_leaves: int = 0
    num_leaves_to_search: int = 0
    reorder: int = 0
    brute_force: bool = False
    dimensions_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    training_sample_size: int = TRAINING_SAMPLE

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **overrides) -> "ScannParams":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown ScaNN parameters {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)


def tune(num_candidates: int, k: int = 100,
         overrides: Optional[Mapping[str, Any]] = None) -> ScannParams:
    """The parameters for a catalogue of ``num_candidates`` served at up to ``k``."""
    n = int(num_candidates)
    if n < 1:
        raise ValueError("the catalogue is empty")
    reorder = min(n, max(10 * k, 1000))
    if n < BRUTE_FORCE_BELOW:
        params = ScannParams(brute_force=True)
    elif n < PARTITION_FROM:
        params = ScannParams(reorder=reorder)
    else:
        leaves = int(round(math.sqrt(n)))
        params = ScannParams(
            num_leaves=leaves,
            num_leaves_to_search=min(leaves, max(MIN_LEAVES_TO_SEARCH,
                                                 int(math.ceil(SEARCH_FRACTION * leaves)))),
            reorder=reorder, training_sample_size=min(n, TRAINING_SAMPLE))
    return params.replace(**dict(overrides or {}))


def build_searcher(embeddings: np.ndarray, params: ScannParams, k: int = 100):
    """A ScaNN TF searcher (``scann.scann_ops.ScannSearcher``) over the rows of
    ``embeddings`` [n, D] by dot product; ``serialize_to_module()`` makes it saveable."""
    import scann  # pylint: disable=import-outside-toplevel  (registers the ops)

    db = np.ascontiguousarray(embeddings, np.float32)
    builder = scann.scann_ops.builder(db, min(k, len(db)), "dot_product")
    if params.num_leaves:
        builder = builder.tree(
            num_leaves=params.num_leaves, num_leaves_to_search=params.num_leaves_to_search,
            training_sample_size=min(len(db), params.training_sample_size))
    if params.brute_force:
        builder = builder.score_brute_force()
    else:
        builder = builder.score_ah(
            params.dimensions_per_block,
            anisotropic_quantization_threshold=params.anisotropic_quantization_threshold)
        if params.reorder:
            builder = builder.reorder(params.reorder)
    return builder.build()


def search(searcher, queries: np.ndarray, k: int, params: ScannParams):
    """(rows [Q, k], scores [Q, k]) of a batch of queries, eagerly."""
    kwargs = {}
    if params.num_leaves:
        kwargs["leaves_to_search"] = params.num_leaves_to_search
    if params.reorder:
        kwargs["pre_reorder_num_neighbors"] = max(params.reorder, k)
    result = searcher.search_batched(np.asarray(queries, np.float32),
                                     final_num_neighbors=k, **kwargs)
    return result.indices.numpy(), result.distances.numpy()


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int,
                batch_size: int = 256) -> np.ndarray:
    """Rows [Q, k] of the exact top-k by dot product (numpy, in batches)."""
    k = min(k, len(embeddings))
    rows = []
    for start in range(0, len(queries), batch_size):
        scores = np.asarray(queries[start:start + batch_size], np.float32) @ embeddings.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        rows.append(np.take_along_axis(top, order, 1))
    return np.concatenate(rows) if rows else np.zeros((0, k), np.int64)


def recall(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each exact top-k row found in the approximate row."""
    if len(exact) == 0:
        return 1.0
    hits = [len(np.intersect1d(a[a >= 0], e)) / len(e) for a, e in zip(approximate, exact)]
    return float(np.mean(hits))


def calibrate(searcher, embeddings: np.ndarray, queries: np.ndarray, params: ScannParams,
              k: int = 100, target: float = TARGET_RECALL) -> Tuple[ScannParams, float]:
    """Widens the search until recall@k on ``queries`` reaches ``target``:
    ``num_leaves_to_search`` in x1.5 steps up to all leaves, then ``reorder`` doubling up
    to the catalogue (both are search-time arguments). Returns the parameters and the
    recall reached."""
    exact = exact_top_k(embeddings, queries, k)
    k = exact.shape[1]
    n = len(embeddings)
    while True:
        rows, _ = search(searcher, queries, k, params)
        reached = recall(rows, exact)
        if reached >= target:
            return params, reached
        if params.num_leaves and params.num_leaves_to_search < params.num_leaves:
            leaves = params.num_leaves_to_search
            params = params.replace(num_leaves_to_search=min(
                params.num_leaves, max(leaves + 1, int(math.ceil(leaves * 1.5)))))
        elif params.reorder and params.reorder < n:
            params = params.replace(reorder=min(n, 2 * params.reorder))
        else:
            return params, reached


def sample_rows(num_rows: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_rows, size=min(size, num_rows), replace=False))


def describe(params: ScannParams, recall_reached: Optional[float] = None) -> str:
    if params.brute_force:
        text = "exact scoring"
    elif params.num_leaves:
        text = (f"{params.num_leaves} leaves, {params.num_leaves_to_search} searched, "
                f"AH, reorder {params.reorder}")
    else:
        text = f"no partitioning, AH, reorder {params.reorder}"
    if recall_reached is not None:
        text += f" (recall@k {recall_reached:.3f} on sample queries)"
    return text
