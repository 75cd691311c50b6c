"""Data validation before training: the curated schemas, the anomalies gate, and the
bad-data test (the pipeline on good data, then on bad data, which must stop before any
Trainer with an error naming the anomaly)."""

from __future__ import annotations

import glob
import os
import shutil

import pytest

import pipeline_runner
from components.example_gen import executor as example_gen_executor
from components.example_gen.component import MovieLensExampleGen
from data import synthetic

# The bad runs ask for every model: none may start. (The good run is the served
# pipeline's: test_pipeline.py checks that its gates pass before every Trainer.)
ALL_TRAINERS = ("RetrievalTrainer", "RankingTrainer", "SequentialTrainer")
GATES = ("SequenceAnomaliesGate", "RatingAnomaliesGate")


# ---------------------------------------------------------------------------------------
# Helpers: examples -> in-memory statistics -> anomalies against the curated schema.


def _statistics(records):
    """TFDV statistics of serialized tf.Examples, computed in memory (no Beam)."""
    from tensorflow_data_validation import StatsOptions
    from tensorflow_data_validation.statistics import stats_impl
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(records))
    return stats_impl.generate_statistics_in_memory(batch, StatsOptions())


def _validate(kind, records):
    import tensorflow_data_validation as tfdv

    from pipeline import schemas

    schema = tfdv.load_schema_text(schemas.schema_file(kind))
    return tfdv.validate_statistics(_statistics(records), schema)


def _edit(records, edit):
    """Each serialized tf.Example passed through ``edit(example)`` (in place)."""
    from tensorflow.core.example import example_pb2

    edited = []
    for record in records:
        example = example_pb2.Example.FromString(record)
        edit(example.features.feature)
        edited.append(example.SerializeToString())
    return edited


def _zero_ratings(feature):
    feature["user_rating"].float_list.value[:] = [0.0] * len(
        feature["user_rating"].float_list.value)


def _movie_id_as_string(feature):
    values = list(feature["movie_id"].int64_list.value)
    feature["movie_id"].ClearField("int64_list")
    feature["movie_id"].bytes_list.value.extend(str(v).encode() for v in values)


def _rating_as_int(feature):
    values = list(feature["user_rating"].float_list.value)
    feature["user_rating"].ClearField("float_list")
    feature["user_rating"].int64_list.value.extend(int(v) for v in values)


def _drop_timestamp(feature):
    del feature["timestamp"]


def _anomalies_artifact(tmp_path, by_split):
    """An ExampleAnomalies artifact laid out as ExampleValidator writes it."""
    from tfx.types import artifact_utils, standard_artifacts

    artifact = standard_artifacts.ExampleAnomalies()
    artifact.uri = str(tmp_path / "anomalies")
    artifact.split_names = artifact_utils.encode_split_names(list(by_split))
    for split, anomalies in by_split.items():
        directory = tmp_path / "anomalies" / f"Split-{split}"
        directory.mkdir(parents=True)
        (directory / "SchemaDiff.pb").write_bytes(anomalies.SerializeToString())
    return artifact


# ---------------------------------------------------------------------------------------
# The curated schemas: clean data of every layout passes, each kind of bad data does not.


def _serialized_by_split(run) -> dict:
    """A run's serialized examples by (kind, split)."""
    return {(kind, split): run.serialized(kind, split)
            for kind in ("sequence", "rating") for split in ("train", "eval")}


def _assert_curated_schemas_accept(examples: dict, source: str) -> None:
    for (kind, split), records in examples.items():
        assert records, (source, kind, split)
        anomalies = _validate(kind, records)
        assert not anomalies.anomaly_info and not anomalies.data_missing, \
            (source, kind, split, anomalies.anomaly_info)


@pytest.fixture(scope="module")
def clean_examples(tricky_run):
    """Serialized examples by (layout, kind, split): the doctored synthetic data of the
    three layouts (tests/tricky_data.py: ties, short users, a user without a profile)
    through the example generator, the runs test_example_gen checks against the
    reference."""
    return {(fmt, kind, split): records
            for fmt in ("100k", "1m", "csv")
            for (kind, split), records in _serialized_by_split(tricky_run(fmt)).items()}


def test_curated_schemas_accept_clean_data_of_every_layout(clean_examples):
    for fmt in ("100k", "1m", "csv"):
        _assert_curated_schemas_accept(
            {(kind, split): records for (source, kind, split), records
             in clean_examples.items() if source == fmt}, fmt)
    # The CSV layout has no user features: optional in the schema, absent here.
    assert b"user_age" not in clean_examples["csv", "rating", "train"][0]


def test_curated_schemas_accept_the_real_movielens_100k(ml100k_run):
    """The session's run on the real MovieLens-100K (conftest.ml100k_run)."""
    _assert_curated_schemas_accept(_serialized_by_split(ml100k_run), "ml-100k")


@pytest.mark.parametrize("edit, feature, reason, words", [
    (_zero_ratings, "user_rating", "FLOAT_TYPE_SMALL_FLOAT", "Unexpectedly low values: 0<0.5"),
    (_movie_id_as_string, "movie_id", "UNEXPECTED_DATA_TYPE", "Expected data of type: INT"),
    (_rating_as_int, "user_rating", "UNEXPECTED_DATA_TYPE", "FLOAT but got INT"),
    (_drop_timestamp, "timestamp", "SCHEMA_MISSING_COLUMN", "Column is completely missing"),
])
def test_curated_schema_flags_bad_rating_examples(clean_examples, edit, feature, reason,
                                                  words):
    from components.validation import executor

    records = clean_examples["100k", "rating", "train"]
    anomalies = _validate("rating", _edit(records, edit))
    assert list(anomalies.anomaly_info) == [feature]
    (line,) = executor.describe_anomalies(anomalies)
    assert line.startswith(f"feature {feature!r}: ") and f"[{reason}]" in line and words in line


def test_empty_split_is_an_anomaly_although_tfdv_reports_none():
    """TFDV reports zero examples only as data_missing (ExampleValidator would bless the
    split); the gate counts it."""
    from components.validation import executor

    anomalies = _validate("rating", [])
    assert anomalies.data_missing and not anomalies.anomaly_info
    assert executor.describe_anomalies(anomalies) == [executor.EMPTY_SPLIT]


def test_gate_reads_the_anomalies_of_each_split(clean_examples, tmp_path):
    from components.validation import DataValidationError, executor

    good = _validate("rating", clean_examples["100k", "rating", "eval"])
    bad = _validate("rating", _edit(clean_examples["100k", "rating", "train"],
                                    _zero_ratings))
    artifact = _anomalies_artifact(tmp_path, {"train": bad, "eval": good})
    assert set(executor.read_anomalies(artifact)) == {"train", "eval"}
    found = executor.find_anomalies(artifact)
    assert list(found) == ["train"]
    assert found["train"][0].startswith("feature 'user_rating': Out-of-range values")

    gate = executor.AnomaliesGateExecutor()
    with pytest.raises(DataValidationError) as failure:
        gate.Do({"anomalies": [artifact]}, {}, {"examples_name": "rating examples"})
    message = str(failure.value)
    assert "1 anomaly in the rating examples" in message
    assert "split 'train': feature 'user_rating': Out-of-range values" in message
    assert "split 'eval'" not in message and artifact.uri in message

    clean = _anomalies_artifact(tmp_path / "clean", {"train": good, "eval": good})
    gate.Do({"anomalies": [clean]}, {}, {"examples_name": "rating examples"})  # passes


def test_gate_fails_when_a_split_has_no_anomalies_file(tmp_path):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from components.validation import executor

    artifact = _anomalies_artifact(tmp_path, {"train": anomalies_pb2.Anomalies()})
    artifact.split_names = '["train", "eval"]'
    with pytest.raises(FileNotFoundError, match="'eval'"):
        executor.find_anomalies(artifact)


def test_describe_names_dataset_anomalies_and_every_reason():
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from components.validation import executor

    anomalies = anomalies_pb2.Anomalies()
    info = anomalies.anomaly_info["user_rating"]
    info.short_description = "Multiple errors"
    info.reason.add(type=anomalies_pb2.AnomalyInfo.FLOAT_TYPE_SMALL_FLOAT,
                    short_description="Out-of-range values", description="0<0.5")
    info.reason.add(type=anomalies_pb2.AnomalyInfo.FLOAT_TYPE_HAS_NAN,
                    short_description="Invalid values", description="NaN")
    anomalies.dataset_anomaly_info.reason.add(
        type=anomalies_pb2.AnomalyInfo.DATASET_LOW_NUM_EXAMPLES,
        short_description="Low num examples in dataset.", description="0 < 1")
    assert executor.describe_anomalies(anomalies) == [
        "feature 'user_rating': Out-of-range values [FLOAT_TYPE_SMALL_FLOAT] (0<0.5)",
        "feature 'user_rating': Invalid values [FLOAT_TYPE_HAS_NAN] (NaN)",
        "dataset: Low num examples in dataset. [DATASET_LOW_NUM_EXAMPLES] (0 < 1)",
    ]
    assert executor.describe_anomalies(anomalies_pb2.Anomalies()) == []


def test_curated_schema_gen_keys_its_cache_on_the_schema_text(tmp_path):
    from components.validation.component import CuratedSchemaGen
    from pipeline import schemas

    source = schemas.schema_file("rating")
    copy = tmp_path / "schema.pbtxt"
    shutil.copyfile(source, copy)
    before = CuratedSchemaGen(str(copy)).exec_properties
    copy.write_text(copy.read_text().replace("min: 0.5", "min: 1.0"))
    after = CuratedSchemaGen(str(copy)).exec_properties
    assert before["schema_file"] == after["schema_file"]
    assert before["schema_text"] != after["schema_text"]
    copy.write_text("feature { name: ")
    with pytest.raises(ValueError, match="not a valid schema"):
        CuratedSchemaGen(str(copy))


# ---------------------------------------------------------------------------------------
# The bad-data test: the whole pipeline, with LocalDagRunner, on good then bad data.


class _CorruptRatingExamples(example_gen_executor.Executor):
    """The example generator, then ``corrupt`` applied to every rating example it wrote:
    a stand-in for a faulty producer (the real one refuses such ratings and writes fixed
    types), so that the bad examples reach StatisticsGen and ExampleValidator."""

    corrupt = staticmethod(lambda feature: None)

    def Do(self, input_dict, output_dict, exec_properties):
        import tensorflow as tf

        super().Do(input_dict, output_dict, exec_properties)
        uri = output_dict["rating_examples"][0].uri
        for path in glob.glob(os.path.join(uri, "Split-*", "*.gz")):
            records = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]
            with tf.io.TFRecordWriter(path, options="GZIP") as writer:
                for record in _edit(records, self.corrupt):
                    writer.write(record)


class ZeroRatingsExecutor(_CorruptRatingExamples):
    corrupt = staticmethod(_zero_ratings)


class MovieIdAsStringExecutor(_CorruptRatingExamples):
    corrupt = staticmethod(_movie_id_as_string)


def _argv(data_dir, output_root, *extra):
    return ["run", "--data-dir", str(data_dir), "--output-root", str(output_root),
            "--models", ",".join(t[:-len("Trainer")].lower() for t in ALL_TRAINERS),
            "--epochs", "1", "--beam-arg=--direct_running_mode=in_memory", *extra]


def trainer_executions(config):
    """Every Trainer execution in the metadata store, of any run."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))
    return [e for e in store.get_executions() if e.type.endswith("RecommenderTrainer")]


@pytest.fixture(scope="module")
def good_data(tmp_path_factory):
    """Small good data, which the bad data sets are made from."""
    data = tmp_path_factory.mktemp("good-data")
    synthetic.generate(data, users=60, movies=80, ratings=2000, fmt="100k", seed=3)
    return data


def _bad_run(data_dir, output_root, capsys, *extra):
    """The pipeline on bad data, asking for every model, in a fresh ``output_root``:
    (exit code, stderr, the run's executions by node, the run's config)."""
    from pipeline import report

    capsys.readouterr()
    argv = _argv(data_dir, output_root, *extra)
    code = pipeline_runner.main(argv)
    error = capsys.readouterr().err
    config = pipeline_runner.config_from_args(pipeline_runner.build_parser().parse_args(argv))
    return code, error, {e["node"]: e for e in report.latest_run(config)}, config


def _assert_stopped_before_training(code, error, nodes, config, gate):
    assert code == 1, error
    assert "error: data validation failed" in error
    assert nodes[gate]["state"] == "FAILED", nodes
    assert all(nodes[node]["state"] == "ran" for node in nodes if node != gate), nodes
    assert not any(node.endswith("Trainer") for node in nodes), nodes
    # No Trainer execution was even created.
    assert trainer_executions(config) == []


@pytest.mark.e2e
def test_bad_data_empty_split_stops_the_run_before_any_trainer(good_data, tmp_path, capsys):
    """Real data, no stand-in: every timestamp equal (a broken export) and a temporal
    split leave the eval splits empty."""
    bad = tmp_path / "same-timestamps"
    shutil.copytree(good_data, bad)
    lines = (good_data / "u.data").read_text().splitlines()
    (bad / "u.data").write_text("".join(
        "\t".join(line.split("\t")[:3] + ["881250949"]) + "\n" for line in lines))
    code, error, nodes, config = _bad_run(bad, tmp_path / "outputs", capsys,
                                          "--split-strategy", "temporal")
    # Topological order: the rating gate comes first and stops the run.
    _assert_stopped_before_training(code, error, nodes, config, "RatingAnomaliesGate")
    assert "in the rating examples" in error
    assert "split 'eval': empty split: no examples" in error
    assert "split 'train'" not in error


@pytest.mark.e2e
@pytest.mark.parametrize("executor_class, named", [
    (ZeroRatingsExecutor, ["split 'train': feature 'user_rating': Out-of-range values "
                           "[FLOAT_TYPE_SMALL_FLOAT] (Unexpectedly low values: 0<0.5",
                           "split 'eval': feature 'user_rating': Out-of-range values"]),
    (MovieIdAsStringExecutor, ["split 'train': feature 'movie_id': Unexpected data type "
                               "[UNEXPECTED_DATA_TYPE] (Expected data of type: INT but got "
                               "STRING)", "split 'eval': feature 'movie_id'"]),
], ids=["ratings-all-zero", "column-of-another-type"])
def test_bad_rating_examples_stop_the_run_before_any_trainer(
        good_data, tmp_path, capsys, monkeypatch, executor_class, named):
    from tfx.dsl.components.base import executor_spec

    monkeypatch.setattr(MovieLensExampleGen, "EXECUTOR_SPEC",
                        executor_spec.BeamExecutorSpec(executor_class))
    code, error, nodes, config = _bad_run(good_data, tmp_path / "outputs", capsys)
    _assert_stopped_before_training(code, error, nodes, config, "RatingAnomaliesGate")
    assert "2 anomalies in the rating examples" in error
    for text in named:
        assert text in error
