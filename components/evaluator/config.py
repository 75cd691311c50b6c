"""The TFMA EvalConfig of each Trainer's Evaluator, built from ``EvaluationConfig``.

Retrieval-like models (retrieval, multitask, sequential): the Trainer's ``eval_ranks``
signature ranks each example's label among every movie of the vocabulary (one number
per example, whatever the catalogue's size); ``transform_features`` (TFMA's
preprocessing function) gives the label's vocabulary row ``label_index`` and the slice
features; ``RankTopKAccuracy(k=top_k)`` (components/evaluator/metrics.py) is top-K
accuracy over the whole catalogue, the same figure as the Trainer's ``top_{k}`` on the
same split.

Ranking: ``serve_tf_examples`` predicts the rating; RMSE against ``user_rating``. Every
metric but ``ExampleCount`` is one of metrics.py's TFMA-native weighted means.

``model_type="tf_generic"``: TFMA loads the SavedModel with ``tf.saved_model.load`` and
calls the signature, without treating it as Keras (no compiled metrics are added).
Without a baseline (the first run) TFX drops the change thresholds.
"""

from __future__ import annotations

from typing import List

import tensorflow_model_analysis as tfma

from components import contract
from components.evaluator.gates import EvaluationConfig

RMSE_CLASS = "RootMeanSquaredError"  # components/evaluator/metrics.py
TOP_K_CLASS = "RankTopKAccuracy"
NDCG_CLASS = "RankNdcgAtK"
METRICS_MODULE = "components.evaluator.metrics"
NDCG_K = 10
EVAL_SPLIT = contract.EVAL


def ndcg_metric_name(k: int = NDCG_K) -> str:
    return f"ndcg_{k}"


def top_k_metric_name(k: int) -> str:
    """The metric's name in the evaluation artifact (``top_100_accuracy``)."""
    return f"top_{k}_accuracy"


def gated_metric(model_kind: str, evaluation: EvaluationConfig) -> str:
    """The name of the metric whose thresholds decide the blessing."""
    if contract.model_kind(model_kind).gated_on_rmse:
        return "rmse"
    return top_k_metric_name(evaluation.top_k)


def slicing_specs() -> List[tfma.SlicingSpec]:
    """Overall, by user activity and by movie popularity (features from the Trainer's
    ``transform_features`` signature)."""
    return [tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=[contract.USER_ACTIVITY]),
            tfma.SlicingSpec(feature_keys=[contract.MOVIE_POPULARITY])]


def _overall(threshold: tfma.MetricThreshold) -> List[tfma.PerSliceMetricThreshold]:
    """The gate applies to the whole eval split only (``MetricConfig.threshold`` would
    apply it to every slice: a weak tail slice would then block every model)."""
    return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()],
                                         threshold=threshold)]


def eval_config(model_kind: str, evaluation: EvaluationConfig) -> tfma.EvalConfig:
    """The EvalConfig of the Evaluator of a ``model_kind`` ("retrieval", "multitask",
    "sequential", "ranking") Trainer."""
    if contract.model_kind(model_kind).gated_on_rmse:
        model_spec = tfma.ModelSpec(
            signature_name=contract.TF_EXAMPLES_SIGNATURE,
            prediction_key=contract.RATING_OUTPUT, label_key=contract.USER_RATING,
            model_type=tfma.TF_GENERIC,
            preprocessing_function_names=[contract.TRANSFORM_SIGNATURE])
        metrics = [tfma.MetricConfig(
            class_name=RMSE_CLASS, module=METRICS_MODULE, config='{"name": "rmse"}',
            per_slice_thresholds=_overall(tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    upper_bound={"value": evaluation.max_rmse}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.LOWER_IS_BETTER,
                    absolute={"value": evaluation.rmse_tolerance}))))]
    else:
        model_spec = tfma.ModelSpec(
            signature_name=contract.EVAL_SIGNATURE,
            prediction_key=(contract.LABEL_RANK_EXCLUDING_RATED if evaluation.exclude_rated
                            else contract.LABEL_RANK),
            label_key=contract.LABEL_INDEX, model_type=tfma.TF_GENERIC,
            preprocessing_function_names=[contract.TRANSFORM_SIGNATURE])
        name = top_k_metric_name(evaluation.top_k)
        metrics = [tfma.MetricConfig(
            class_name=TOP_K_CLASS, module=METRICS_MODULE,
            config=f'{{"k": {evaluation.top_k}, "name": "{name}"}}',
            per_slice_thresholds=_overall(tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": evaluation.min_top_k_accuracy}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                    absolute={"value": -evaluation.top_k_tolerance}))))]
        # Reported beside the gate: NDCG@10 and (when the gate's k is another) top-10.
        metrics.append(tfma.MetricConfig(
            class_name=NDCG_CLASS, module=METRICS_MODULE,
            config=f'{{"k": {NDCG_K}, "name": "{ndcg_metric_name()}"}}'))
        if evaluation.top_k != NDCG_K:
            metrics.append(tfma.MetricConfig(
                class_name=TOP_K_CLASS, module=METRICS_MODULE,
                config=f'{{"k": {NDCG_K}, "name": "{top_k_metric_name(NDCG_K)}"}}'))
    return tfma.EvalConfig(
        model_specs=[model_spec],
        slicing_specs=slicing_specs(),
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"), *metrics])])
