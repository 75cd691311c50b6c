"""The batch recommendation job: the top-k of every user (or of a list) from a pushed
two-stage model, as a Beam pipeline (:func:`run`: what the executor, tests call).

  user ids (users.tsv of the model, read by Beam, or a given list)
    -> batches of ``batch_size`` users (BatchElements)
    -> RecommendFn: the model loaded once per worker (DoFn.setup) from the pushed
       version's path, ``serving_default(user_id [B], k)`` per batch
    -> rows {user_id, rank, movie_id, movie_title, ranking_score, retrieval_score}
    -> <output>/tfrecords/part-*.tfrecord.gz (one tf.Example per row)
       <output>/parquet/part-*.parquet

Nothing runs in the launching process but the pipeline's construction: the model path is
all the workers get, so the same job runs on Dataflow (with the model on gs://) as on
the DirectRunner. Users the model has no ratings of are skipped and counted
(``unknown_users``), as ``recommend`` refuses them. Throughput = users recommended / wall
seconds of the whole job (start-up and model loading included), written to
``<output>/batch.json``.
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from components import contract, vocabulary_files

_NAMESPACE = "batch_recommend"
USERS_COUNTER, UNKNOWN_COUNTER, ROWS_COUNTER = "users", "unknown_users", "rows"


def parquet_schema():
    import pyarrow as pa  # pylint: disable=import-outside-toplevel

    return pa.schema([(contract.USER_ID, pa.int64()), (contract.RANK, pa.int64()),
                      (contract.MOVIE_ID, pa.int64()), (contract.MOVIE_TITLE, pa.string()),
                      (contract.RANKING_SCORE, pa.float32()),
                      (contract.RETRIEVAL_SCORE, pa.float32())])


def parse_user_line(line: str) -> Optional[int]:
    """The user id of a ``users.tsv`` line (None for a blank line)."""
    fields = vocabulary_files.decode_fields(line.rstrip("\r"))
    return int(fields[0]) if fields and fields[0].strip() else None


class RecommendFn(beam.DoFn):
    """Batches of user ids -> one row per (user, rank); the model loaded in ``setup``."""

    def __init__(self, model_dir: str, k: int):
        super().__init__()
        self._model_dir, self._k = model_dir, int(k)
        self._users = beam.metrics.Metrics.counter(_NAMESPACE, USERS_COUNTER)
        self._unknown = beam.metrics.Metrics.counter(_NAMESPACE, UNKNOWN_COUNTER)
        self._rows = beam.metrics.Metrics.counter(_NAMESPACE, ROWS_COUNTER)

    def setup(self):
        # (the module's own ``from components import ...`` has selected Keras 2)
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        from components.pusher import serving  # pylint: disable=import-outside-toplevel

        self._tf = tf
        model = tf.saved_model.load(self._model_dir)
        self._model = model  # keeps the resources the signature uses alive
        self._signature = model.signatures[contract.RECOMMEND_SIGNATURE]
        self._rated = serving.RatedMovies.of_model(self._model_dir)

    def teardown(self):
        self._model = self._signature = None  # before the interpreter's own shutdown

    def process(self, users: Sequence[int]) -> Iterable[Dict[str, Any]]:
        known = [int(u) for u in users if self._rated is None or int(u) in self._rated]
        self._unknown.inc(len(users) - len(known))
        if not known:
            return
        tf = self._tf
        output = self._signature(user_id=tf.constant(known, tf.int64),
                                 k=tf.constant(self._k, tf.int32))
        ranking = output[contract.RANKING_SCORES_OUTPUT].numpy()
        retrieval = output[contract.RETRIEVAL_SCORES_OUTPUT].numpy()
        movies = output[contract.MOVIE_IDS_OUTPUT].numpy()
        titles = output[contract.TITLES_OUTPUT].numpy()
        self._users.inc(len(known))
        for row, user in enumerate(known):
            rank = 0
            for column in range(movies.shape[1]):
                if not (ranking[row, column] > float("-inf")):
                    continue  # fewer candidates than k were left
                rank += 1
                self._rows.inc()
                yield {contract.USER_ID: user, contract.RANK: rank,
                       contract.MOVIE_ID: int(movies[row, column]),
                       contract.MOVIE_TITLE: titles[row, column].decode("utf-8"),
                       contract.RANKING_SCORE: float(ranking[row, column]),
                       contract.RETRIEVAL_SCORE: float(retrieval[row, column])}


def to_example(row: Dict[str, Any]) -> bytes:
    """One row as a serialized tf.Example (ints int64, scores float, the title bytes)."""
    from tensorflow.core.example import example_pb2, feature_pb2  # pylint: disable=import-outside-toplevel

    features = {}
    for name in contract.BATCH_COLUMNS:
        value = row[name]
        if isinstance(value, str):
            features[name] = feature_pb2.Feature(
                bytes_list=feature_pb2.BytesList(value=[value.encode("utf-8")]))
        elif isinstance(value, float):
            features[name] = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[value]))
        else:
            features[name] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))
    return example_pb2.Example(
        features=feature_pb2.Features(feature=features)).SerializeToString()


def build_pipeline(pipeline: beam.Pipeline, model_dir: str, output_dir: str, k: int,
                   users: Optional[Sequence[int]] = None, batch_size: int = 256) -> None:
    """Adds the job's steps to ``pipeline`` (see the module docstring)."""
    if users:
        ids = pipeline | "Users" >> beam.Create([int(u) for u in users])
    else:
        users_file = os.path.join(model_dir, contract.EXTRA_ASSETS, contract.USERS_FILE)
        ids = (pipeline | "ReadUsers" >> beam.io.ReadFromText(users_file)
               | "ParseUsers" >> beam.Map(parse_user_line)
               | "DropBlank" >> beam.Filter(lambda user: user is not None))
    rows = (ids
            | "Batch" >> beam.BatchElements(min_batch_size=batch_size,
                                            max_batch_size=batch_size)
            | "Recommend" >> beam.ParDo(RecommendFn(model_dir, k)))
    _ = (rows | "ToExample" >> beam.Map(to_example)
         | "WriteTFRecord" >> beam.io.WriteToTFRecord(
             os.path.join(output_dir, contract.BATCH_TFRECORD_DIR, "part"),
             file_name_suffix=".tfrecord.gz"))
    _ = rows | "WriteParquet" >> beam.io.WriteToParquet(
        os.path.join(output_dir, contract.BATCH_PARQUET_DIR, "part"), parquet_schema(),
        file_name_suffix=".parquet")


def _counter(result, name: str) -> Optional[int]:
    try:
        found = result.metrics().query(
            MetricsFilter().with_namespace(_NAMESPACE).with_name(name))["counters"]
    except Exception:  # pylint: disable=broad-except  (a runner without metrics)
        return None
    return sum(int(c.committed if c.committed is not None else c.attempted)
               for c in found) if found else 0


def run(model_dir: str, output_dir: str, k: int = 10,
        users: Optional[Sequence[int]] = None, batch_size: int = 256,
        make_pipeline: Callable[[], beam.Pipeline] = beam.Pipeline) -> Dict[str, Any]:
    """Runs the job on ``make_pipeline()`` (TFX's configured runner in the executor) and
    writes ``<output_dir>/batch.json``; returns its content: ``users``, ``rows``,
    ``unknown_users``, ``seconds``, ``users_per_second``, ``model_dir``, ``k``."""
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel

    started = time.time()
    pipeline = make_pipeline()
    build_pipeline(pipeline, model_dir, output_dir, k, users, batch_size)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.time() - started
    counts = {name: _counter(result, name)
              for name in (USERS_COUNTER, ROWS_COUNTER, UNKNOWN_COUNTER)}
    done = counts[USERS_COUNTER]
    stats = {**counts, "seconds": round(seconds, 3), "model_dir": model_dir, "k": int(k),
             contract.USERS_PER_SECOND: (round(done / seconds, 2)
                                         if done is not None and seconds > 0 else None)}
    fileio.makedirs(output_dir)
    with fileio.open(os.path.join(output_dir, contract.BATCH_STATS_FILE), "w") as handle:
        json.dump(stats, handle, indent=2, sort_keys=True)
    return stats


def summary_line(stats: Dict[str, Any]) -> str:
    return (f"BatchRecommender: {stats[USERS_COUNTER]} users, {stats[ROWS_COUNTER]} rows "
            f"in {stats['seconds']:.1f} s ({stats[contract.USERS_PER_SECOND]} users/s)")


def read_rows(output_dir: str) -> List[Dict[str, Any]]:
    """Every row of the Parquet output, as dicts (tests and readers)."""
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel

    rows: List[Dict[str, Any]] = []
    directory = os.path.join(output_dir, contract.BATCH_PARQUET_DIR)
    for name in sorted(fileio.listdir(directory)):
        with fileio.open(os.path.join(directory, name), "rb") as handle:
            rows.extend(pq.read_table(io.BytesIO(handle.read())).to_pylist())
    return rows
