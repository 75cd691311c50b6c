"""The Evaluator's metrics, as TFMA's own (``tfma.metrics.Metric``) weighted means.

The Trainer's ``eval_ranks`` signature (components/trainer/export.py) gives, per example,
the label's 0-based rank over the whole catalogue ``y_pred`` ``[B]`` (or ``[B, 1]``): how
many movies score strictly above it (ties in the label's favour, as ``in_top_k``
counts them; ``contract.MISSING_RANK`` when the label is not in the vocabulary, a miss).
From it, averaged over examples (weighted when TFMA gives example weights):

* :class:`RankTopKAccuracy` -- top-K accuracy (HR@k), ``rank < k``;
* :class:`RankNdcgAtK` -- NDCG@k of one relevant item, ``1 / log2(2 + rank)`` when
  ``rank < k``, else 0.

The label (the label's row) is not read: the rank already placed it. For the ranking
model, :class:`RootMeanSquaredError` of the predicted rating against ``user_rating``.

Why not Keras metrics: TFMA feeds a Keras metric through its wrapper, which converts
every example of every slice to tensors first, at a cost per example above the model's
inference. These combiners add each example's value to two floats.
TFMA loads them by ``class_name`` and ``module`` (components/evaluator/config.py).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import metric_types, metric_util


def top_k_gain(ranks: np.ndarray, k: int) -> np.ndarray:
    """float64 ``[N]``: 1 where the 0-based rank is below ``k``, else 0."""
    return (np.asarray(ranks, np.float64) < k).astype(np.float64)


def ndcg_gain(ranks: np.ndarray, k: int) -> np.ndarray:
    """float64 ``[N]``: ``1 / log2(2 + rank)`` where the rank is below ``k``, else 0."""
    ranks = np.asarray(ranks, np.float64)
    return np.where(ranks < k, 1.0 / np.log2(2.0 + np.maximum(ranks, 0.0)), 0.0)


def _of_model(value, *keys: str) -> Optional[np.ndarray]:
    """An extract's values for one model, output and key (each looked up when the value
    is a dict that has it, as TFMA's own metrics do), flat float64; None when absent.
    (Plain dict checks: this runs for every example of every slice.)"""
    for key in keys:
        if key and isinstance(value, dict) and key in value:
            value = value[key]
    if value is None:
        return None
    if isinstance(value, dict):
        raise ValueError(f"a metric of one output got several: {sorted(value)} (model, "
                         f"output and key {keys})")
    return np.asarray(value, np.float64).reshape(-1)


def _raw(element: metric_types.StandardMetricInputs, key: str):
    """The extract's value under ``key`` as TFMA holds it (StandardMetricInputs'
    properties convert each value first, which costs more than the metric)."""
    return getattr(element, "extracts", element).get(key)


def _spec_keys(eval_config, model_name: str) -> Tuple[str, str]:
    """``(prediction_key, label_key)`` of ``model_name``'s ModelSpec (TFMA's rule: with
    one spec, its keys whatever the name)."""
    specs = list(eval_config.model_specs) if eval_config is not None else []
    for spec in specs:
        if (spec.name if len(specs) > 1 else "") == model_name:
            return spec.prediction_key, spec.label_key
    return "", ""


# Each metric's value per example: (labels or None, predictions, k) -> float64 [N].
_VALUES = {
    "top_k": lambda labels, ranks, k: top_k_gain(ranks, k),
    "ndcg": lambda labels, ranks, k: ndcg_gain(ranks, k),
    "squared_error": lambda labels, predictions, k: np.square(predictions - labels),
}
_READS_LABELS = {"squared_error"}


class _WeightedMean(beam.CombineFn):
    """``{key: sum(weight x value) / sum(weight)}`` over the examples (its root with
    ``root``), ``value = _VALUES[kind](labels, predictions, k)`` (flat float64 arrays).
    Accumulator: ``[total, weight]``."""

    def __init__(self, key: metric_types.MetricKey, kind: str, k: Optional[int] = None,
                 root: bool = False, prediction_key: str = "", label_key: str = ""):
        self._key, self._kind, self._k, self._root = key, kind, k, root
        self._prediction_key, self._label_key = prediction_key, label_key

    def create_accumulator(self) -> List[float]:
        return [0.0, 0.0]

    def add_input(self, accumulator: List[float],
                  element: metric_types.StandardMetricInputs) -> List[float]:
        name, output = self._key.model_name, self._key.output_name
        labels = (_of_model(_raw(element, constants.LABELS_KEY), self._label_key, name,
                            output) if self._kind in _READS_LABELS else None)
        values = _VALUES[self._kind](
            labels, _of_model(_raw(element, constants.PREDICTIONS_KEY), name, output,
                              self._prediction_key), self._k)
        weights = (_of_model(_raw(element, constants.EXAMPLE_WEIGHTS_KEY), name, output)
                   if self._key.example_weighted else None)
        if weights is None:
            accumulator[0] += float(values.sum())
            accumulator[1] += values.size
        else:
            weights = np.broadcast_to(weights, values.shape)
            accumulator[0] += float((values * weights).sum())
            accumulator[1] += float(weights.sum())
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[List[float]]) -> List[float]:
        total = [0.0, 0.0]
        for part in accumulators:
            total[0] += part[0]
            total[1] += part[1]
        return total

    def extract_output(self, accumulator: List[float]) -> Dict[metric_types.MetricKey, float]:
        mean = accumulator[0] / accumulator[1] if accumulator[1] > 0 else float("nan")
        return {self._key: float(np.sqrt(mean)) if self._root else mean}


def _mean(kind: str, root: bool = False):
    """A TFMA create-computations function: one :class:`_WeightedMean` per key."""

    def computations(name: str, k: Optional[int] = None, eval_config=None,
                     model_name: str = "", output_name: str = "",
                     sub_key: Optional[metric_types.SubKey] = None,
                     example_weighted: bool = False) -> metric_types.MetricComputations:
        key = metric_types.MetricKey(name=name, model_name=model_name,
                                     output_name=output_name, sub_key=sub_key,
                                     example_weighted=example_weighted)
        combiner = _WeightedMean(key, kind, k, root, *_spec_keys(eval_config, model_name))
        return [metric_types.MetricComputation(keys=[key], preprocessors=None,
                                               combiner=combiner)]

    return metric_util.merge_per_key_computations(computations)


class RankTopKAccuracy(tfma.metrics.Metric):
    """Top-K accuracy: the share of examples whose label ranks below ``k``."""

    def __init__(self, k: int = 100, name: str = "top_100_accuracy"):
        super().__init__(_mean("top_k"), name=name, k=int(k))


class RankNdcgAtK(tfma.metrics.Metric):
    """Mean NDCG@k of one relevant item per example."""

    def __init__(self, k: int = 10, name: str = "ndcg_10"):
        super().__init__(_mean("ndcg"), name=name, k=int(k))


class RootMeanSquaredError(tfma.metrics.Metric):
    """The root of the mean squared difference between prediction and label."""

    def __init__(self, name: str = "rmse"):
        super().__init__(_mean("squared_error", root=True), name=name)
