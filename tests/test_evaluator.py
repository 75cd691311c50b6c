"""The Evaluators: TFMA's top-100 accuracy equals the Trainer's, slices, gates, baselines."""

import json
import os

import numpy as np
import pytest

from components.evaluator import baseline
from components import contract
from components.evaluator import slices
from pipeline.configs import EvaluationConfig
from conftest import SERVED_EVAL_SAMPLE

TOP_100 = "top_100_accuracy"


def _overall_metrics(evaluation_uri):
    """{slice key (tuple of (feature, value)): {metric name: value}} of the candidate."""
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(evaluation_uri)
    metrics = {}
    for slice_key, values in result.slicing_metrics:
        by_name = values[""][""]
        metrics[tuple(slice_key)] = {
            name: value["doubleValue"] for name, value in by_name.items()
            if isinstance(value, dict) and "doubleValue" in value}
    return metrics


def _trainer_metrics(runs, trainer):
    with open(os.path.join(runs.output(trainer, "model_run"), "metrics.json")) as handle:
        return json.load(handle)


@pytest.mark.parametrize("name", ["Retrieval", "Sequential"])
def test_evaluator_top_100_equals_the_trainers_over_the_whole_vocabulary(served_pipeline, name):
    runs = served_pipeline
    metrics = _overall_metrics(runs.output(f"{name}Evaluator", "evaluation"))
    trainer = _trainer_metrics(runs, f"{name}Trainer")
    assert metrics[()][TOP_100] == pytest.approx(trainer["top_100"], abs=0.002)
    # Reported beside the gate: top-10 and NDCG@10 (components/evaluator/metrics.py).
    assert metrics[()]["top_10_accuracy"] == pytest.approx(trainer["top_10"], abs=0.002)
    assert metrics[()]["ndcg_10"] == pytest.approx(trainer["ndcg_10"], abs=0.002)
    assert metrics[()]["example_count"] == trainer["queries"]
    # Not a vacuous agreement: the catalogue (400 movies) is larger than k.
    assert 0.3 < trainer["top_100"] < 0.99


def test_evaluator_scores_the_trainers_sample_of_users(served_pipeline):
    """The served run's sequential Trainer evaluated a seeded sample of users: its
    Evaluator scored exactly those users' eval examples, and says so."""
    import tensorflow as tf
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    from components.trainer import inputs

    runs = served_pipeline
    name, size = SERVED_EVAL_SAMPLE
    model_dir = os.path.join(runs.output(f"{name.capitalize()}Trainer", "model"),
                             "Format-Serving")
    sampled = np.load(os.path.join(model_dir, contract.EXTRA_ASSETS,
                                   contract.EVAL_USERS_FILE))["user_ids"]
    assert len(set(sampled)) == size
    pattern = os.path.join(runs.output("MovieLensExampleGen", contract.examples_key(
        contract.model_kind(name).examples)), "Split-eval", "*")
    users = np.concatenate([batch[contract.USER_ID].numpy() for batch in inputs.make_dataset(
        pattern, {contract.USER_ID: tf.io.FixedLenFeature([], tf.int64)},
        4096, shuffle=False)])
    in_sample = int(np.isin(users, sampled).sum())
    assert 0 < in_sample < len(users)
    metrics = _overall_metrics(runs.output(f"{name.capitalize()}Evaluator", "evaluation"))
    assert metrics[()]["example_count"] == in_sample
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(runs.config.metadata_path))
    for model, expected in ((name, size), ("retrieval", None)):
        for output in ("blessing", "evaluation"):
            [artifact] = store.get_artifacts_by_uri(
                runs.output(f"{model.capitalize()}Evaluator", output))
            stamped = artifact.custom_properties.get(contract.EVAL_SAMPLED_USERS)
            assert (stamped and stamped.int_value) == expected, (model, output)


def test_narrowed_split_keeps_exactly_the_sampled_users_records(tmp_path):
    import tensorflow as tf

    from components.evaluator import user_sample
    from components.trainer import inputs

    records = [inputs.serialize_example({contract.USER_ID: [user], contract.MOVIE_ID: [i]})
               for i, user in enumerate([3, 1, 2, 3, 5, 1, 9] * 2000)]
    source = str(tmp_path / "part.gz")
    with tf.io.TFRecordWriter(source, options="GZIP") as writer:
        for record in records:
            writer.write(record)
    kept = user_sample.narrow_split([source], np.array([1, 9, 42]), str(tmp_path / "out"),
                                    shards=3)
    shards = [[r.numpy() for r in tf.data.TFRecordDataset(
        str(tmp_path / f"out-{i:05d}-of-00003.gz"), compression_type="GZIP")]
        for i in range(3)]
    expected = [r for r, user in zip(records, [3, 1, 2, 3, 5, 1, 9] * 2000) if user in (1, 9)]
    assert kept == sum(map(len, shards)) == 6000
    for i, shard in enumerate(shards):  # dealt round-robin, in order
        assert shard == expected[i::3]


def test_ranking_evaluator_rmse_equals_the_trainers(served_pipeline):
    metrics = _overall_metrics(served_pipeline.output("RankingEvaluator", "evaluation"))
    trainer = _trainer_metrics(served_pipeline, "RankingTrainer")
    assert metrics[()]["rmse"] == pytest.approx(trainer["rmse"], abs=0.002)


@pytest.mark.parametrize("name,metric", [("Retrieval", TOP_100), ("Sequential", TOP_100),
                                         ("Ranking", "rmse")])
def test_evaluation_is_sliced_by_user_activity_and_movie_popularity(served_pipeline, name,
                                                                     metric):
    metrics = _overall_metrics(served_pipeline.output(f"{name}Evaluator", "evaluation"))
    activity = {dict(key)[contract.USER_ACTIVITY] for key in metrics
                if key and key[0][0] == contract.USER_ACTIVITY}
    popularity = {dict(key)[contract.MOVIE_POPULARITY] for key in metrics
                  if key and key[0][0] == contract.MOVIE_POPULARITY}
    # Synthetic users rate at least 20 movies; 12,000 ratings / 200 users puts most in
    # the middle bucket and some above 100.
    assert {"21-100", ">100"} <= activity <= {"<=20", "21-100", ">100"}
    assert popularity == {"head", "torso", "tail"}
    total = metrics[()]["example_count"]
    for feature in (contract.USER_ACTIVITY, contract.MOVIE_POPULARITY):
        counts = [m["example_count"] for key, m in metrics.items()
                  if key and key[0][0] == feature]
        assert sum(counts) == total
    assert all(metric in m for m in metrics.values())


def test_first_run_blesses_and_pushes_every_model_that_clears_the_gates(served_pipeline):
    for name in ("Retrieval", "Ranking", "Sequential"):
        blessing = served_pipeline.output(f"{name}Evaluator", "blessing")
        assert os.path.exists(os.path.join(blessing, "BLESSED")), name
        with open(os.path.join(served_pipeline.output(f"{name}Pusher", "pushed_model"),
                               "push.json")) as handle:
            assert json.load(handle)["pushed"], name


def test_each_blessing_names_the_model_it_judges(served_pipeline):
    """The custom property the compiled Kubeflow / Vertex baseline queries select on."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    from components.evaluator import component as evaluator_component

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(served_pipeline.config.metadata_path))
    for name in ("Retrieval", "Ranking", "Sequential"):
        [blessing] = store.get_artifacts_by_uri(
            served_pipeline.output(f"{name}Evaluator", "blessing"))
        properties = blessing.custom_properties
        assert properties[evaluator_component.MODEL_NAME_PROPERTY].string_value == name.lower()
        assert properties["blessed"].int_value == 1


def test_degraded_model_fails_both_gates_against_its_own_trainers_baseline(degraded_run):
    import tensorflow_model_analysis as tfma

    runs = degraded_run
    evaluation = runs.output("RetrievalEvaluator", "evaluation", degraded=True)
    blessing = runs.output("RetrievalEvaluator", "blessing", degraded=True)
    assert os.path.exists(os.path.join(blessing, "NOT_BLESSED"))
    result = tfma.load_validation_result(evaluation)
    assert not result.validation_ok
    failures = [f for per_slice in result.metric_validations_per_slice
                for f in per_slice.failures]
    # Gated on the whole eval split only, never on a slice.
    assert all(not per_slice.slice_key.single_slice_keys
               for per_slice in result.metric_validations_per_slice)
    assert {(f.metric_key.name, f.metric_key.is_diff) for f in failures} == {
        (TOP_100, False), (TOP_100, True)}
    # The baseline is the first run's retrieval model (not the ranking or sequential one
    # blessed at the same time).
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(runs.config.metadata_path))
    [artifact] = [a for a in store.get_artifacts_by_uri(blessing)]
    baseline_id = artifact.custom_properties["baseline_model_id"].int_value
    [first_model] = store.get_artifacts_by_uri(runs.output("RetrievalTrainer", "model"))
    assert baseline_id == first_model.id


def test_second_run_of_an_unchanged_model_is_cached_not_compared_with_itself(served_pipeline):
    """The baseline is the latest blessed model *before* the candidate: with the Trainer
    cached, the Evaluator's inputs are unchanged, so it and the Pusher are cached too."""
    import pipeline_runner

    runs = served_pipeline
    config = pipeline_runner.config_from_args(
        pipeline_runner.build_parser().parse_args(runs.argv))
    second = {e["node"]: e for e in pipeline_runner.run(config)}
    for node, execution in second.items():
        expected = "ran" if node.endswith("BaselineResolver") else "cached"
        assert execution["state"] == expected, (node, execution["state"])


# ---------------------------------------------------------------------------------------
# Pure functions.


class _FakeBlessing:
    def __init__(self, model_id, blessed):
        self.values = {"current_model_id": model_id, "blessed": int(blessed)}

    def get_int_custom_property(self, name):
        return self.values[name]


def test_previous_blessed_is_the_latest_blessed_model_older_than_the_candidate():
    blessings = [_FakeBlessing(3, True), _FakeBlessing(7, True), _FakeBlessing(9, False),
                 _FakeBlessing(12, True)]
    assert baseline.previous_blessed_id(10, blessings)[0] == 7
    assert baseline.previous_blessed_id(12, blessings)[0] == 7   # a cached candidate
    assert baseline.previous_blessed_id(13, blessings)[0] == 12
    assert baseline.previous_blessed_id(3, blessings) == (None, None)
    assert baseline.previous_blessed_id(None, blessings)[0] == 12
    assert baseline.previous_blessed_id(5, []) == (None, None)


def test_slice_buckets():
    assert slices.activity_bucket_names((20, 100)) == ("<=20", "21-100", ">100")
    buckets = slices.user_activity_buckets(np.array([1, 20, 21, 100, 101]), (20, 100))
    assert list(buckets) == ["<=20", "<=20", "21-100", "21-100", ">100"]
    assert list(slices.movie_popularity_buckets(10, (0.1, 0.5))) == \
        ["head"] + ["torso"] * 4 + ["tail"] * 5
    with pytest.raises(ValueError):
        slices.SliceSpec.from_dict({"user_activity_boundaries": [100, 20]})


def test_eval_config_gates_the_overall_slice_with_the_configured_thresholds():
    from components.evaluator import config

    evaluation = EvaluationConfig(min_top_k_accuracy=0.3, top_k_tolerance=0.02,
                                  max_rmse=0.95, rmse_tolerance=0.01)
    retrieval = config.eval_config("sequential", evaluation)
    [spec] = retrieval.model_specs
    assert (spec.signature_name, spec.label_key, spec.model_type) == \
        (contract.EVAL_SIGNATURE, contract.LABEL_INDEX, "tf_generic")
    [metric] = [m for m in retrieval.metrics_specs[0].metrics if m.threshold.ByteSize()
                or m.per_slice_thresholds]
    assert json.loads(metric.config) == {"k": 100, "name": TOP_100}
    [per_slice] = metric.per_slice_thresholds
    assert [s.ByteSize() for s in per_slice.slicing_specs] == [0]   # overall only
    assert per_slice.threshold.value_threshold.lower_bound.value == 0.3
    assert per_slice.threshold.change_threshold.absolute.value == -0.02
    ranking = config.eval_config("ranking", evaluation)
    [metric] = [m for m in ranking.metrics_specs[0].metrics if m.per_slice_thresholds]
    threshold = metric.per_slice_thresholds[0].threshold
    assert threshold.value_threshold.upper_bound.value == 0.95
    assert threshold.change_threshold.absolute.value == 0.01


def test_exclude_rated_scores_the_seen_excluded_output_with_ndcg_beside_the_gate():
    from components.evaluator import config

    plain = config.eval_config("retrieval", EvaluationConfig())
    honest = config.eval_config("retrieval", EvaluationConfig(exclude_rated=True, top_k=10))
    assert plain.model_specs[0].prediction_key == contract.LABEL_RANK
    assert honest.model_specs[0].prediction_key == contract.LABEL_RANK_EXCLUDING_RATED
    names = {json.loads(m.config)["name"] for m in honest.metrics_specs[0].metrics if m.config}
    assert names == {"top_10_accuracy", "ndcg_10"}   # HR@10 gated, NDCG@10 beside it
    [ndcg] = [m for m in honest.metrics_specs[0].metrics if m.class_name == config.NDCG_CLASS]
    assert ndcg.module == config.METRICS_MODULE and not ndcg.per_slice_thresholds


def test_metrics_are_tfma_weighted_means_of_each_models_output():
    """The Evaluator's metrics (components/evaluator/metrics.py) as TFMA builds them from
    the EvalConfig: one key per model (candidate, baseline), each reading its model's
    ``prediction_key`` output (ranks) or its predicted rating against the label, weighted
    when asked; merged partial sums give the mean over all examples."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_specs, metric_types

    from components.evaluator import config, metrics

    def inputs(candidate, baseline, label=None, weight=None, key=contract.LABEL_RANK):
        extracts = {tfma.PREDICTIONS_KEY: {
            "candidate": {key: np.array([candidate]), "other": np.array([0.0])},
            "baseline": {key: np.array([baseline]), "other": np.array([0.0])}}}
        if label is not None:
            extracts[tfma.LABELS_KEY] = np.array([label])
        if weight is not None:
            extracts[tfma.EXAMPLE_WEIGHTS_KEY] = np.array([weight])
        return metric_types.StandardMetricInputs(extracts)

    def results(metric, elements, spec, example_weighted=False):
        eval_config = tfma.EvalConfig(model_specs=[
            tfma.ModelSpec(name=name, prediction_key=spec.prediction_key,
                           label_key=spec.label_key) for name in ("candidate", "baseline")])
        out = {}
        for computation in metric.computations(eval_config=eval_config,
                                               model_names=["candidate", "baseline"],
                                               example_weighted=example_weighted):
            combiner = computation.combiner
            halves = [combiner.create_accumulator(), combiner.create_accumulator()]
            for index, element in enumerate(elements):
                halves[index % 2] = combiner.add_input(halves[index % 2], element)
            out.update({key.model_name: value for key, value in combiner.extract_output(
                combiner.merge_accumulators(halves)).items()})
        return out

    evaluation = EvaluationConfig(exclude_rated=False)
    [spec] = config.eval_config("retrieval", evaluation).model_specs
    ranks = [(0, 5), (3, 0), (12, 1), (contract.MISSING_RANK, 20)]
    elements = [inputs(c, b) for c, b in ranks]
    top_10 = results(metrics.RankTopKAccuracy(k=10, name="top_10_accuracy"), elements, spec)
    assert top_10 == pytest.approx({"candidate": 0.5, "baseline": 0.75})
    ndcg = results(metrics.RankNdcgAtK(k=4), elements, spec)
    assert ndcg["candidate"] == pytest.approx((1 + 1 / np.log2(5)) / 4)
    weighted = [inputs(c, b, weight=w) for (c, b), w in zip(ranks, (3.0, 1.0, 0.0, 0.0))]
    top_1 = metrics.RankTopKAccuracy(k=1)  # hits: candidate's first, baseline's second
    assert results(top_1, weighted, spec) == pytest.approx({"candidate": 0.25,
                                                            "baseline": 0.25})
    assert results(top_1, weighted, spec, example_weighted=True) == pytest.approx(
        {"candidate": 0.75, "baseline": 0.25})
    # Built from the config as TFMA does (by class name and module).
    [loaded] = [metric_specs.metric_instance(m) for m in
                config.eval_config("retrieval", evaluation).metrics_specs[0].metrics
                if m.class_name == config.TOP_K_CLASS and "top_100" in m.config]
    assert results(loaded, elements, spec) == pytest.approx({"candidate": 0.75,
                                                             "baseline": 1.0})

    [spec] = config.eval_config("ranking", evaluation).model_specs
    ratings = [inputs(c, b, label=y, key=contract.RATING_OUTPUT)
               for c, b, y in ((4.0, 3.0, 5.0), (2.0, 2.0, 1.0), (3.5, 3.0, 3.5))]
    assert results(metrics.RootMeanSquaredError(), ratings, spec) == pytest.approx(
        {"candidate": np.sqrt(2 / 3), "baseline": np.sqrt((4 + 1 + 0.25) / 3)})
