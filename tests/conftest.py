"""Shared fixtures: the real MovieLens-100K, small synthetic data sets, and a runner of the
example generator's Beam pipeline that reads what it wrote back into Python dicts."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
import shutil
from typing import Dict, List, Optional

# TFRS refuses Keras 3; every process that may import TensorFlow needs this first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import sys  # noqa: E402

import pytest  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent
# The test modules import the reference implementation as a top-level module. ("tests" is
# no package here: another installed distribution ships a top-level "tests" package.)
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
ML100K_ENV = "MOVIELENS_100K_DIR"
DEFAULT_ML100K = REPO.parent / "shared" / "data" / "ml-100k"

# Small synthetic data sets: big enough for every code path, a few seconds per Beam run.
SYNTHETIC_USERS, SYNTHETIC_MOVIES, SYNTHETIC_RATINGS = 60, 80, 2000
FORMATS = ("100k", "1m", "csv")


@pytest.fixture(scope="session")
def ml100k_dir() -> pathlib.Path:
    """The real MovieLens-100K (never copied into the repository). Fails when absent."""
    path = pathlib.Path(os.environ.get(ML100K_ENV) or DEFAULT_ML100K)
    if not (path / "u.data").is_file() or not (path / "u.item").is_file():
        pytest.fail(
            f"MovieLens-100K not found at {path} (no u.data / u.item). Set {ML100K_ENV} to "
            f"the directory of the unpacked ml-100k archive (default: {DEFAULT_ML100K}).",
            pytrace=False)
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """``synthetic_data(fmt, **kwargs) -> directory``: a synthetic data set, made once per
    session for each distinct set of arguments (60 users x 80 movies x 2,000 ratings by
    default). Tests that modify files must copy the directory first."""
    from data import synthetic

    cache: Dict[tuple, pathlib.Path] = {}

    def make(fmt: str, users: int = SYNTHETIC_USERS, movies: int = SYNTHETIC_MOVIES,
             ratings: int = SYNTHETIC_RATINGS, seed: int = 7, **kwargs) -> pathlib.Path:
        key = (fmt, users, movies, ratings, seed, tuple(sorted(kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"synthetic_{fmt}")
            synthetic.generate(out, users, movies, ratings, fmt, seed, **kwargs)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture
def synthetic_100k(synthetic_data):
    return synthetic_data("100k")


@pytest.fixture
def synthetic_1m(synthetic_data):
    return synthetic_data("1m")


@pytest.fixture
def synthetic_csv(synthetic_data):
    return synthetic_data("csv")


@pytest.fixture(params=FORMATS)
def synthetic_dir(request, synthetic_data):
    """A small synthetic data set, once per layout."""
    return synthetic_data(request.param)


def example_to_dict(serialized: bytes) -> Dict[str, list]:
    """A serialized tf.train.Example as ``{feature: [values]}`` (bytes, float or int)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    features = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        features[name] = list(getattr(feature, kind).value) if kind else []
    return features


def examples_to_dicts(records: List[bytes]) -> List[Dict[str, list]]:
    """Many serialized tf.train.Examples as dicts, parsed in batches by tf.io.parse_example.

    The feature names and types come from a sample of the records parsed as protos (each
    sampled record must have the same features); a feature absent from a record reads as
    an empty list. Parsing a type other than the sampled one fails.
    """
    import tensorflow as tf

    if not records:
        return []
    types = {"bytes_list": tf.string, "float_list": tf.float32, "int64_list": tf.int64}
    kinds: Dict[str, str] = {}
    for record in records[:: max(1, len(records) // 100)] + records[-1:]:
        sample = _feature_kinds(record)
        assert not kinds or set(sample) == set(kinds), (sorted(sample), sorted(kinds))
        for name, kind in sample.items():
            if kind is not None:
                assert kinds.get(name) in (None, kind), (name, kind, kinds[name])
                kinds[name] = kind
            else:
                kinds.setdefault(name, None)
    spec = {name: tf.io.RaggedFeature(types[kind] if kind else tf.string)
            for name, kind in kinds.items()}
    columns: Dict[str, list] = {name: [] for name in spec}
    batch = 1 << 15
    for start in range(0, len(records), batch):
        parsed = tf.io.parse_example(tf.constant(records[start:start + batch]), spec)
        for name, values in parsed.items():
            columns[name].extend(_rows(values))
    return [dict(zip(columns, row)) for row in zip(*columns.values())]


def _rows(ragged) -> List[list]:
    """A 2-D RaggedTensor's rows as Python lists (what ``to_list()`` gives, without its
    per-element recursion: seconds on 100,000 examples)."""
    flat = ragged.flat_values.numpy().tolist()
    splits = ragged.row_splits.numpy().tolist()
    return [flat[begin:end] for begin, end in zip(splits, splits[1:])]


def _feature_kinds(serialized: bytes) -> Dict[str, Optional[str]]:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    return {name: feature.WhichOneof("kind")
            for name, feature in example.features.feature.items()}


def read_tfrecords(pattern: str) -> List[bytes]:
    """Every record of the gzipped TFRecord files matching ``pattern``."""
    import tensorflow as tf

    files = sorted(glob.glob(pattern))
    if not files:
        return []
    # tf.data checks each record's framing (lengths and masked CRC32Cs); batches keep the
    # per-record eager overhead out of the way.
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1 << 16)
    records: List[bytes] = []
    for batch in dataset:
        records.extend(batch.numpy().tolist())
    return records


@dataclasses.dataclass
class ExampleGenRun:
    """What one run of ``generate.generate`` wrote, read back on demand."""

    layout: object  # data.movielens.Layout
    out_dir: pathlib.Path
    paths: object  # generate.OutputPaths
    statistics: Optional[dict] = None
    _raw_backup: Optional[pathlib.Path] = None
    _cache: dict = dataclasses.field(default_factory=dict)

    def finish(self, max_bad_fraction: float = 0.0) -> dict:
        """Runs ``generate.finish_statistics`` (again: the raw counts are restored first)."""
        from components.example_gen import generate, summary

        raw = pathlib.Path(self.paths.statistics) / summary.RAW_STATISTICS
        shutil.copyfile(self._raw_backup, raw)
        self.statistics = generate.finish_statistics(
            self.layout, self.paths.statistics, max_bad_fraction)
        return self.statistics

    def statistics_file(self) -> dict:
        with open(os.path.join(self.paths.statistics, "statistics.json")) as handle:
            return json.load(handle)

    def _uri(self, kind: str) -> str:
        return {"sequence": self.paths.sequence_examples,
                "rating": self.paths.rating_examples}[kind]

    def split_files(self, kind: str, split: str) -> List[str]:
        return sorted(glob.glob(os.path.join(self._uri(kind), f"Split-{split}", "*")))

    def serialized(self, kind: str, split: str) -> List[bytes]:
        """The serialized examples of ``kind`` ("sequence"/"rating") in ``split``."""
        key = ("serialized", kind, split)
        if key not in self._cache:
            self._cache[key] = read_tfrecords(
                os.path.join(self._uri(kind), f"Split-{split}", "*.gz"))
        return self._cache[key]

    def examples(self, kind: str, split: str) -> List[Dict[str, list]]:
        key = ("examples", kind, split)
        if key not in self._cache:
            self._cache[key] = examples_to_dicts(self.serialized(kind, split))
        return self._cache[key]

    def drop_parsed(self) -> None:
        """Frees the parsed examples (the serialized records stay cached)."""
        for key in [key for key in self._cache if key[0] == "examples"]:
            del self._cache[key]

    def all_examples(self, kind: str) -> List[Dict[str, list]]:
        return self.examples(kind, "train") + self.examples(kind, "eval")

    def vocabulary(self, name: str) -> List[str]:
        with open(os.path.join(self.paths.vocabulary, name), encoding="utf-8") as handle:
            return handle.read().splitlines()


@pytest.fixture(scope="session")
def run_example_gen(tmp_path_factory):
    """``run_example_gen(data_dir, **parameters) -> ExampleGenRun``.

    Runs ``generate.generate`` on an in-memory ``beam.Pipeline()`` (DirectRunner) into
    fresh temporary directories, then (unless ``finish=False``) ``finish_statistics`` with
    ``max_bad_fraction``. Parameters are ``ExampleGenConfig`` fields, plus ``block_size``
    (bytes of the ratings file per block; default: the pipeline's).
    """
    from components.example_gen import generate, parsing, summary
    from components.example_gen.config import ExampleGenConfig
    from data import movielens

    def run(data_dir, *, block_size: Optional[int] = None, finish: bool = True,
            max_bad_fraction: float = 0.0, **settings) -> ExampleGenRun:
        layout = movielens.detect_layout(data_dir)
        out = tmp_path_factory.mktemp("example_gen")
        paths = generate.OutputPaths.under(str(out))
        # A small block_size spreads a small file over many blocks (and bundles).
        generate.generate(str(data_dir), ExampleGenConfig(**settings), paths,
                          block_size=block_size or parsing.DEFAULT_BLOCK_SIZE,
                          finish=False)
        backup = out / "raw_statistics.backup.json"
        shutil.copyfile(os.path.join(paths.statistics, summary.RAW_STATISTICS), backup)
        result = ExampleGenRun(layout=layout, out_dir=out, paths=paths, _raw_backup=backup)
        if finish:
            result.finish(max_bad_fraction)
        return result

    return run


@pytest.fixture(scope="session")
def ml100k_run(ml100k_dir, run_example_gen):
    """The example generator on the real MovieLens-100K with the sequential tutorial's
    flags (the defaults), once per session: test_example_gen checks it against the
    reference, test_validation's curated schemas must accept it. Read only. The two
    modules are one scheduling unit (see _group), so that it runs once under xdist too."""
    return run_example_gen(ml100k_dir, min_rating=2, min_timeline_length=3,
                           max_context_length=10, max_context_movie_genre_length=10)


@pytest.fixture(scope="session")
def tricky_dir(synthetic_data, tmp_path_factory):
    """``tricky_dir(fmt) -> directory``: the doctored synthetic data set of a layout
    (tests/tricky_data.py), made once per session. Read only."""
    from tricky_data import make_tricky

    cache: Dict[str, pathlib.Path] = {}

    def get(fmt: str) -> pathlib.Path:
        if fmt not in cache:
            source = synthetic_data(fmt, tie_prob=0.5)
            cache[fmt] = make_tricky(
                source, tmp_path_factory.mktemp(f"tricky_{fmt}") / "data", fmt)
        return cache[fmt]

    return get


@pytest.fixture(scope="session")
def tricky_run(tricky_dir, run_example_gen):
    """``tricky_run(fmt) -> ExampleGenRun``: the example generator with its defaults
    (min_rating 2, random split, seed 42) on ``tricky_dir(fmt)``, once per session (the
    ML100K_MODULES share it). Read only."""
    from tricky_data import BLOCK_SIZE

    cache: Dict[str, ExampleGenRun] = {}

    def get(fmt: str) -> ExampleGenRun:
        if fmt not in cache:
            cache[fmt] = run_example_gen(tricky_dir(fmt), block_size=BLOCK_SIZE[fmt])
        return cache[fmt]

    return get


@dataclasses.dataclass
class ServedRuns:
    """Pipeline runs with Evaluators and Pushers (see :func:`served_pipeline`)."""

    argv: List[str]  # the first run's command line (after ``pipeline_runner.py``)
    config: object  # pipeline.configs.PipelineConfig of the first run
    first: List[dict]  # report.latest_run() of the first run
    returncode: int = 0  # the first run's exit code, stdout and stderr
    stdout: str = ""
    stderr: str = ""
    degraded_config: object = None
    degraded: Optional[List[dict]] = None
    serving_before_degraded: Optional[Dict[str, list]] = None

    @property
    def printed(self) -> List[str]:
        """What the first run printed, stdout then stderr, line by line."""
        return (self.stdout + self.stderr).splitlines()

    @property
    def output_root(self) -> str:
        return self.config.output_root

    def node(self, name: str, degraded: bool = False) -> dict:
        executions = self.degraded if degraded else self.first
        return {e["node"]: e for e in executions}[name]

    def output(self, node: str, key: str, degraded: bool = False) -> str:
        (uri,) = self.node(node, degraded)["outputs"][key]
        return uri


def serving_tree(root: str) -> Dict[str, list]:
    """Every file under ``root`` with its size and modification time."""
    tree = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            stat = os.stat(path)
            tree[os.path.relpath(path, root)] = [stat.st_size, stat.st_mtime_ns]
    return tree


# The served pipeline's settings that are not the defaults: what the tests reading it
# check (sequences padded to 5, hyperparameters from a file and from --hparam).
SERVED_EPOCHS = 3
# The served run's top-100 gate: every trained model clears it, an untrained one (about
# 100 / 400) does not. (0.4 until the retrieval preset lost its time features, which on
# the random split read the held-out rating's own time: trained, it scores ~0.39.)
SERVED_MIN_TOP_K = 0.35
SERVED_CONTEXT_LENGTH = 5
# The sequential model evaluates on a seeded sample of its 200 users: its Trainer, its
# Evaluator and its served answers must all be on the same users (test_evaluator,
# test_served_agreement).
SERVED_EVAL_SAMPLE = ("sequential", 150)
SERVED_HPARAMS_FILE = {"training": {"hparams": {
    "retrieval": {"embedding_dim": 24},
    SERVED_EVAL_SAMPLE[0]: {"eval_sample_users": SERVED_EVAL_SAMPLE[1]}}}}
SERVED_HPARAM_OPTION = ("sequential", "embedding_dim", 16)
# The served run also builds the two-stage model and writes batch recommendations
# (test_two_stage, test_batch_recommend); a later run of the retrieval model alone has
# no two-stage model to write them from.
NO_TWO_STAGE = ("--batch-recommendations", "false")


@pytest.fixture(scope="session")
def served_pipeline(synthetic_data, tmp_path_factory):
    """The pipeline run once through the command line, in its own process, as a user runs
    it (console output captured), on synthetic data (200 users x 400 movies x 12,000
    ratings): all three models for SERVED_EPOCHS epochs, sequence examples padded to
    SERVED_CONTEXT_LENGTH (not the default 10), settings from a config file and from
    ``--hparam``, and gates every trained model clears: top-100 >= SERVED_MIN_TOP_K (an
    untrained model scores ~0.25 on 400 movies), RMSE <= 1.5; the two-stage model and
    batch recommendations for every user.

    One run for every test of a first run (components, Evaluators, Pushers, serving,
    settings, console output): each pipeline run costs minutes."""
    import subprocess

    import pipeline_runner
    from pipeline import report

    data = synthetic_data("100k", users=200, movies=400, ratings=12_000, seed=3)
    workdir = tmp_path_factory.mktemp("served")
    config_file = workdir / "settings.json"
    config_file.write_text(json.dumps(SERVED_HPARAMS_FILE))
    model, name, value = SERVED_HPARAM_OPTION
    argv = ["run", "--data-dir", str(data), "--output-root", str(workdir / "outputs"),
            "--config", str(config_file), "--max-context-length", str(SERVED_CONTEXT_LENGTH),
            "--hparam", f"{model}.{name}={value}", "--epochs", str(SERVED_EPOCHS),
            "--min-top-k-accuracy", str(SERVED_MIN_TOP_K), "--max-rmse", "1.5",
            "--batch-recommendations", "true",
            "--beam-arg=--direct_running_mode=in_memory"]
    done = subprocess.run([sys.executable, "pipeline_runner.py", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    config = pipeline_runner.config_from_args(pipeline_runner.build_parser().parse_args(argv))
    if done.returncode != 0:
        pytest.fail("the served pipeline's run failed:\n"
                    + "\n".join((done.stdout + done.stderr).splitlines()[-40:]),
                    pytrace=False)
    return ServedRuns(argv=argv, config=config, first=report.latest_run(config),
                      returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


@pytest.fixture(scope="session")
def degraded_run(served_pipeline):
    """After :func:`served_pipeline`: the retrieval model retrained for zero steps, same
    output root and gates. Records the serving tree before the run."""
    import pipeline_runner

    runs = served_pipeline
    if runs.degraded is None:
        runs.serving_before_degraded = serving_tree(runs.config.serving_root)
        argv = runs.argv + ["--models", "retrieval", "--train-steps", "0",
                            *NO_TWO_STAGE]
        config = pipeline_runner.config_from_args(
            pipeline_runner.build_parser().parse_args(argv))
        runs.degraded_config = config
        runs.degraded = pipeline_runner.run(config)
    return runs


GROWN_RATINGS = 3000


def grow_data(data_dir: str, grown_dir: str, seed: int = 11) -> int:
    """Copies the 100K-layout ``data_dir`` and appends GROWN_RATINGS new ratings of known
    users and movies, later than every existing one. Returns how many lines were added."""
    import random

    shutil.copytree(data_dir, grown_dir)
    with open(os.path.join(grown_dir, "u.data")) as handle:
        rows = [line.split("\t") for line in handle.read().splitlines() if line]
    users = sorted({int(r[0]) for r in rows})
    movies = sorted({int(r[1]) for r in rows})
    seen = {(int(r[0]), int(r[1])) for r in rows}
    latest = max(int(r[3]) for r in rows)
    rng = random.Random(seed)
    added = []
    while len(added) < GROWN_RATINGS:
        pair = (rng.choice(users), rng.choice(movies))
        if pair not in seen:
            seen.add(pair)
            latest += rng.randint(1, 600)
            added.append(f"{pair[0]}\t{pair[1]}\t{rng.choice([3, 4, 4, 5, 5])}\t{latest}\n")
    with open(os.path.join(grown_dir, "u.data"), "a") as handle:
        handle.writelines(added)
    return len(added)


@pytest.fixture(scope="session")
def retrained(served_pipeline, tmp_path_factory):
    """Periodic retraining: a copy of the served pipeline's outputs (metadata, serving
    root), then ``run`` of the retrieval model on the grown data (GROWN_RATINGS more
    ratings) into that copy, so one metadata store holds both runs; the served
    pipeline's own outputs, which other tests check, stay as they were. Returns
    (served runs, the second run's config, its executions by node, the retrieval model's
    pushed versions before it). test_retraining and test_run_report read it."""
    import pipeline_runner
    from components.pusher import publishing

    runs = served_pipeline
    workdir = tmp_path_factory.mktemp("retrain")
    output_root = str(workdir / "outputs")
    shutil.copytree(runs.config.output_root, output_root)
    data_dir = runs.argv[runs.argv.index("--data-dir") + 1]
    grow_data(data_dir, str(workdir / "grown"))
    argv = list(runs.argv)
    argv[argv.index("--data-dir") + 1] = str(workdir / "grown")
    argv[argv.index("--output-root") + 1] = output_root
    argv += ["--models", "retrieval", *NO_TWO_STAGE]
    config = pipeline_runner.config_from_args(pipeline_runner.build_parser().parse_args(argv))
    serving_before = publishing.versions(os.path.join(config.serving_root, "retrieval"))
    executions = {e["node"]: e for e in pipeline_runner.run(config)}
    return runs, config, executions, serving_before


# ---------------------------------------------------------------------------------------
# Tiers: `make test-fast` runs `-m "not e2e and not real_data"`. A test is e2e when it
# runs the whole pipeline (LocalDagRunner, the Vertex emulator, a CLI run), directly or
# through one of these shared fixtures, or runs a component's work in a process of its
# own: a Vertex task, the Trainer on two logical devices, a pushed model loaded by a fresh
# interpreter (marked in its module). A test is real_data when it reads the real MovieLens-100K (the ml100k_dir
# fixture, directly or through ml100k_run): the unit tier runs on synthetic data alone,
# on a machine without the licensed data set. The rest are unit tests of functions and
# single Beam runs.
E2E_FIXTURES = {"served_pipeline", "degraded_run", "two_runs", "short_context_run",
                "retrained"}
REAL_DATA_FIXTURE = "ml100k_dir"
E2E_MODULES = {"test_pipeline", "test_retraining", "test_interruption",
               "test_vertex_entrypoint", "test_console_output"}

# Workers: `make test` runs two pytest-xdist workers. Tests are dealt out a module at a
# time (a module's fixtures run once), and the modules that read the served pipeline go
# together to one worker, so that its runs happen once. Slow modules are dealt first, so
# that no worker is left with one of them at the end.
SERVED_MODULES = {"test_batch_recommend", "test_console_output", "test_evaluator",
                  "test_pipeline", "test_pusher", "test_recommend", "test_retraining",
                  "test_run_report", "test_served_agreement", "test_settings",
                  "test_two_stage"}
SERVED_GROUP = "served_pipeline"
# The modules that read the session's example generations of ML-100K (ml100k_run) and of
# the doctored synthetic data (tricky_run).
EXAMPLE_GEN_FIXTURES = ("ml100k_run", "tricky_run")
ML100K_MODULES = {"test_example_gen", "test_validation"}
ML100K_GROUP = "ml100k_run"
_SLOW_FIRST = (SERVED_GROUP, "test_vertex_entrypoint", "test_models", ML100K_GROUP,
               "test_interruption", "test_dirty_data", "test_attention",
               "test_remote_example_gen", "test_kubeflow")


def _group(module: str) -> str:
    """The scheduling unit of a test module."""
    if module in SERVED_MODULES:
        return SERVED_GROUP
    return ML100K_GROUP if module in ML100K_MODULES else module


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        module = item.module.__name__
        if E2E_FIXTURES & fixtures or module in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)
        if REAL_DATA_FIXTURE in fixtures:
            item.add_marker(pytest.mark.real_data)
        if "served_pipeline" in fixtures and module not in SERVED_MODULES:
            raise pytest.UsageError(
                f"{item.nodeid} reads the served pipeline: add {module} to SERVED_MODULES "
                f"in tests/conftest.py (or each worker runs the pipeline again)")
        for shared in EXAMPLE_GEN_FIXTURES:
            if shared in fixtures and module not in ML100K_MODULES:
                raise pytest.UsageError(
                    f"{item.nodeid} reads {shared}: add {module} to ML100K_MODULES in "
                    f"tests/conftest.py (or each worker runs the example generator again)")

    def rank(item):
        group = _group(item.module.__name__)
        return _SLOW_FIRST.index(group) if group in _SLOW_FIRST else len(_SLOW_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order


def pytest_xdist_make_scheduler(config, log):
    """Under ``-n N`` (pytest-xdist): one unit of work per test module, the served
    modules forming one unit (see SERVED_MODULES), dealt in the collection's order (slow
    units first, see _SLOW_FIRST) to whichever worker has nothing left to run."""
    from xdist.scheduler import LoadScopeScheduling

    if config.getvalue("dist") == "each":
        return None
    # xdist's default (--loadscope-reorder) deals the units with the most tests first,
    # which put a few-test, minutes-long module (test_interruption, the Vertex runs)
    # last, on one worker, while the other had finished.
    config.option.loadscopereorder = False

    class ByModuleServedTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return _group(os.path.splitext(os.path.basename(path))[0])

        def _reschedule(self, node) -> None:
            # xdist hands a worker its next unit when two of its tests are left; a unit
            # runs after the worker's current one, however long that one's last tests
            # take, even if the other worker is idle by then. Here the next unit goes
            # to a worker at its last test: a worker runs an item only once it knows
            # the next one (or is told to shut down), so it waits there.
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
                return
            if self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    return ByModuleServedTogether(config, log)
