"""Benchmark: MovieLensExampleGen's Beam pipeline against a single-process pandas reference.

Both sides read the same synthetic MovieLens data (``data.synthetic``, ML-1M layout) and
write the same tf.Examples (sequence examples and rating examples, train/eval splits) as
gzipped TFRecords:

* ``beam``: ``generate.generate`` (what the component's executor runs) on the
  DirectRunner with ``--direct_running_mode=multi_processing --direct_num_workers=0``
  (one worker per core). Timed end to end, pipeline start-up and worker start-up
  included; examples counted from statistics.json.
* ``pandas``: the sequential tutorial's algorithm in one process: ``pandas.read_csv``,
  keep valid ratings, stable sort by (user, timestamp) with file order for ties, group by
  user, sliding windows, the project's split rule (``transforms.is_eval``), and
  ``tf.io.TFRecordWriter`` with GZIP.

Each side runs in its own subprocess; a thread samples the summed RSS of that process
tree (Beam's workers included) for the peak memory. After a run of a size listed in
``--check-sizes`` both outputs are read back and compared as multisets of examples per
output and split. Examples are compared in canonical form (parsed, re-serialized with
``deterministic=True``): protobuf's C++ map serialization order is randomized, so the
raw bytes of one and the same tf.Example differ from call to call.

Sizes (all in the ML-1M layout, user features included, so every size produces the same
kinds of examples): ``100k`` = 943 users x 1,682 movies x 100,000 ratings (ML-100K's
shape), ``1m`` = 6,040 x 3,706 x 1,000,000 (ML-1M's), ``10m`` = 70,000 x 10,000 x
10,000,000 (about ML-10M's 71,567 x 10,681). Data is cached under ``--work-dir``.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/example_gen.py --sizes 100k,1m
    PYTHONPATH=. .venv/bin/python benchmarks/example_gen.py --sizes 1m,10m --profile 1m

The last stdout line is one JSON object: ``speedup_1m``, ``speedup_10m`` (Beam examples/s
over pandas examples/s), ``cost_growth`` (Beam seconds per example at 10M over at 1M),
null for a size not run, plus per-side figures. Targets: ``speedup_1m >= 2``,
``cost_growth <= 1.25``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# name: (users, movies, ratings); all written in the ML-1M layout.
SIZES = {
    "100k": (943, 1_682, 100_000),
    "1m": (6_040, 3_706, 1_000_000),
    "10m": (70_000, 10_000, 10_000_000),
}
DATA_FORMAT = "1m"
SIDES = ("beam", "pandas")
KINDS = ("sequence_examples", "rating_examples")
SPLITS = ("train", "eval")

# The component's defaults (the sequential tutorial's flags, random split).
MIN_RATING = 2.0
MIN_TIMELINE_LENGTH = 3
MAX_CONTEXT_LENGTH = 10
MAX_CONTEXT_MOVIE_GENRE_LENGTH = 10
SEQUENCE_TRAIN_FRACTION = 0.9
RATING_TRAIN_FRACTION = 0.8

BEAM_ARGS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing",
             "--direct_num_workers=0"]


def _log(message: str) -> None:
    print(f"[example_gen bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


# ---------------------------------------------------------------------------------------
# Data.


def ensure_data(work_dir: pathlib.Path, size: str, seed: int) -> pathlib.Path:
    """Generates the synthetic data set of ``size`` once; later runs reuse it."""
    from data import synthetic  # pylint: disable=import-outside-toplevel

    users, movies, ratings = SIZES[size]
    data_dir = work_dir / "data" / f"{size}-{DATA_FORMAT}-seed{seed}"
    marker = data_dir / "summary.json"
    if marker.is_file():
        _log(f"{size}: reusing {data_dir}")
        return data_dir
    _log(f"{size}: generating {users} users x {movies} movies x {ratings} ratings "
         f"({DATA_FORMAT} layout) in {data_dir}")
    summary = synthetic.generate(data_dir, users, movies, ratings, DATA_FORMAT, seed,
                                 verbose=True)
    marker.write_text(json.dumps(summary, indent=2, default=str))
    return data_dir


# ---------------------------------------------------------------------------------------
# Side 1: the project's Beam pipeline.


def run_beam(data_dir: str, out_dir: str, seed: int, beam_args: List[str]) -> Dict:
    """The project's ``generate.generate``; returns seconds and example counts."""
    # pylint: disable=import-outside-toplevel
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.example_gen import generate
    from components.example_gen.config import ExampleGenConfig

    config = ExampleGenConfig(
        min_rating=MIN_RATING, min_timeline_length=MIN_TIMELINE_LENGTH,
        max_context_length=MAX_CONTEXT_LENGTH,
        max_context_movie_genre_length=MAX_CONTEXT_MOVIE_GENRE_LENGTH, seed=seed,
        train_fraction=SEQUENCE_TRAIN_FRACTION, rating_train_fraction=RATING_TRAIN_FRACTION)
    paths = generate.OutputPaths.under(out_dir)
    started = time.perf_counter()
    statistics = generate.generate(
        data_dir, config, paths, make_pipeline=lambda: beam.Pipeline(
            options=PipelineOptions(beam_args)))
    seconds = time.perf_counter() - started
    counts = {f"{kind}/{split}": statistics[kind][split] for kind in KINDS for split in SPLITS}
    return {"seconds": seconds, "examples": sum(counts.values()), "counts": counts}


def _shorten_paths(stats) -> None:
    """Like ``pstats.Stats.strip_dirs``, but keeps the path below site-packages or the
    repository, so the many ``__init__.py`` modules stay apart."""
    import sysconfig  # pylint: disable=import-outside-toplevel

    prefixes = sorted({sysconfig.get_paths()["purelib"] + os.sep,
                       sysconfig.get_paths()["platlib"] + os.sep, str(REPO) + os.sep},
                      key=len, reverse=True)

    def short(key):
        file_name, line, function = key
        for prefix in prefixes:
            if file_name.startswith(prefix):
                return file_name[len(prefix):], line, function
        return key

    stats.stats = {
        short(key): (cc, nc, tt, ct, {short(caller): value for caller, value in callers.items()})
        for key, (cc, nc, tt, ct, callers) in stats.stats.items()}
    stats.top_level = {short(key) for key in stats.top_level}
    stats.fcn_list = None
    stats.all_callees = None
    stats.max_name_len = max((len(pstats_label(key)) for key in stats.stats), default=0)


def pstats_label(key) -> str:
    import pstats  # pylint: disable=import-outside-toplevel

    return pstats.func_std_string(key)


def profile_beam(data_dir: str, out_dir: str, seed: int, prof_path: str, top: int) -> Dict:
    """The same pipeline on the single-process in-memory runner, under cProfile."""
    import cProfile  # pylint: disable=import-outside-toplevel
    import pstats  # pylint: disable=import-outside-toplevel

    profiler = cProfile.Profile()
    profiler.enable()
    result = run_beam(data_dir, out_dir, seed,
                      ["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    profiler.disable()
    profiler.dump_stats(prof_path)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    _shorten_paths(stats)
    print(f"\n=== cProfile of the Beam side, in-memory DirectRunner, one process "
          f"({result['seconds']:.1f} s under the profiler, {result['examples']} examples); "
          f"full profile: {prof_path}")
    print(f"--- top {top} by cumulative time")
    stats.sort_stats("cumulative").print_stats(top)
    print(f"--- top {top} by own time (tottime)")
    stats.sort_stats("tottime").print_stats(top)
    print(f"--- top {top} of the example generator's own functions by cumulative time")
    stats.sort_stats("cumulative").print_stats(r"components/example_gen/", top)
    sys.stdout.flush()
    return result


# ---------------------------------------------------------------------------------------
# Side 2: the reference algorithm, single process, pandas.


def _read_catalogues(data_dir: pathlib.Path):
    """Per movie id: (title bytes, year, genre bytes); per user id: the four features."""
    # pylint: disable=import-outside-toplevel
    import csv

    import pandas as pd

    from data.movielens import OCCUPATIONS_1M

    movies = pd.read_csv(
        data_dir / "movies.dat", sep="::", engine="python", header=None,
        names=["movie_id", "title", "genres"], encoding="latin-1", quoting=csv.QUOTE_NONE,
        dtype={"movie_id": "int64", "title": str, "genres": str}, keep_default_na=False)
    years = movies["title"].str.extract(r"\((\d{4})\)", expand=False).fillna(0).astype(int)
    movie_features = {
        movie_id: (title.encode(), year,
                   [g.encode() for g in genres.split("|") if g and g != "(no genres listed)"])
        for movie_id, title, year, genres in zip(
            movies["movie_id"].tolist(), movies["title"].tolist(), years.tolist(),
            movies["genres"].tolist())}

    users = pd.read_csv(
        data_dir / "users.dat", sep="::", engine="python", header=None,
        names=["user_id", "gender", "age", "occupation", "zip_code"], encoding="latin-1",
        quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    user_features = {}
    for user_id, gender, age, occupation, zip_code in users.itertuples(index=False):
        code = int(occupation)
        name = OCCUPATIONS_1M[code] if 0 <= code < len(OCCUPATIONS_1M) else str(code)
        user_features[int(user_id)] = (int(age), gender.encode(), name.encode(),
                                       zip_code.encode())
    return movie_features, user_features


def _read_ratings(path: pathlib.Path):
    """The ratings file as a DataFrame (user_id, movie_id, rating, timestamp), file order."""
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import pandas as pd

    # "a::b::c::d": split on ":" with the C parser; the empty fields between are skipped.
    return pd.read_csv(
        path, sep=":", header=None, usecols=[0, 2, 4, 6],
        names=["user_id", "_1", "movie_id", "_2", "rating", "_3", "timestamp"],
        dtype={"user_id": np.int64, "movie_id": np.int64, "rating": np.float64,
               "timestamp": np.int64})


def _eval_mask(seed: int, kind: str, user_id: int, keys, timestamps):
    """The project's random split rule (``transforms.is_eval``): True where eval.

    Keys as the project hashes them: the movie id for a rating example, the label's
    position in the kept timeline for a sequence example.
    """
    from components.example_gen import transforms  # pylint: disable=import-outside-toplevel

    fraction = (SEQUENCE_TRAIN_FRACTION if kind == transforms.SEQUENCE
                else RATING_TRAIN_FRACTION)
    return transforms.is_eval(transforms.SPLIT_RANDOM, seed, fraction, kind, user_id, keys,
                              timestamps, None).tolist()


def run_pandas(data_dir: str, out_dir: str, seed: int) -> Dict:
    """The reference algorithm; writes <out>/<kind>/Split-<split>/data_tfrecord-...gz."""
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    from components.example_gen.transforms import RATING, SEQUENCE

    data_dir = pathlib.Path(data_dir)
    started = time.perf_counter()
    movie_features, user_features = _read_catalogues(data_dir)
    frame = _read_ratings(data_dir / "ratings.dat")
    valid = (frame["movie_id"].isin(list(movie_features))
             & frame["rating"].between(1.0, 5.0) & (frame["rating"] % 1 == 0))
    frame = frame[valid]
    users = frame["user_id"].to_numpy()
    stamps = frame["timestamp"].to_numpy()
    order = np.lexsort((stamps, users))  # stable: equal timestamps keep file order
    users, stamps = users[order], stamps[order]
    movies = frame["movie_id"].to_numpy()[order]
    ratings = frame["rating"].to_numpy()[order]
    del frame, valid, order
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    starts = np.concatenate(([0], cuts)).tolist()
    ends = np.concatenate((cuts, [len(users)])).tolist()
    _log(f"pandas: read and sorted {len(users)} valid ratings of {len(starts)} users in "
         f"{time.perf_counter() - started:.1f} s")

    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers, counts = {}, {}
    for kind in KINDS:
        for split in SPLITS:
            directory = os.path.join(out_dir, kind, f"Split-{split}")
            os.makedirs(directory, exist_ok=True)
            writers[kind, split] = tf.io.TFRecordWriter(
                os.path.join(directory, "data_tfrecord-00000-of-00001.gz"), options)
            counts[f"{kind}/{split}"] = 0
    write = {key: writer.write for key, writer in writers.items()}
    Example = example_pb2.Example  # pylint: disable=invalid-name
    length, genre_length = MAX_CONTEXT_LENGTH, MAX_CONTEXT_MOVIE_GENRE_LENGTH
    pad_genre, no_user = b"UNK", (0, b"", b"", b"")
    rating_counts = {"train": 0, "eval": 0}
    sequence_counts = {"train": 0, "eval": 0}
    next_report = time.perf_counter() + 15

    for number, (start, end) in enumerate(zip(starts, ends)):
        user_id = int(users[start])
        timeline_movies = movies[start:end].tolist()
        timeline_ratings = ratings[start:end].tolist()
        timeline_stamps = stamps[start:end].tolist()
        age, gender, occupation, zip_code = user_features.get(user_id, no_user)

        # Rating examples: one per valid rating.
        rating_eval = _eval_mask(seed, RATING, user_id, movies[start:end], stamps[start:end])
        for movie_id, rating, stamp, is_eval in zip(
                timeline_movies, timeline_ratings, timeline_stamps, rating_eval):
            title, year, genres = movie_features[movie_id]
            example = Example()
            feature = example.features.feature
            feature["user_id"].int64_list.value.append(user_id)
            feature["movie_id"].int64_list.value.append(movie_id)
            feature["movie_title"].bytes_list.value.append(title)
            feature["movie_genres"].bytes_list.value.extend(genres)
            feature["movie_year"].int64_list.value.append(year)
            feature["user_rating"].float_list.value.append(rating)
            feature["timestamp"].int64_list.value.append(stamp)
            feature["user_age"].int64_list.value.append(age)
            feature["user_gender"].bytes_list.value.append(gender)
            feature["user_occupation"].bytes_list.value.append(occupation)
            feature["user_zip_code"].bytes_list.value.append(zip_code)
            split = "eval" if is_eval else "train"
            write["rating_examples", split](example.SerializeToString())
            rating_counts[split] += 1

        # Sequence examples: the kept timeline, one example per label position >= 1.
        kept = [i for i, rating in enumerate(timeline_ratings) if rating >= MIN_RATING]
        if len(kept) < MIN_TIMELINE_LENGTH:
            continue
        kept_movies = [timeline_movies[i] for i in kept]
        kept_ratings = [timeline_ratings[i] for i in kept]
        kept_stamps = [timeline_stamps[i] for i in kept]
        kept_years = [movie_features[m][1] for m in kept_movies]
        kept_genres = [movie_features[m][2] for m in kept_movies]
        sequence_eval = _eval_mask(seed, SEQUENCE, user_id, np.arange(1, len(kept)),
                                   np.array(kept_stamps[1:], dtype=np.int64))
        for label in range(1, len(kept)):
            low = max(0, label - length)
            pad = length - (label - low)
            genres = [g for movie_genres in kept_genres[low:label] for g in movie_genres]
            genres = genres[:genre_length] + [pad_genre] * (genre_length - len(genres))
            example = Example()
            feature = example.features.feature
            feature["user_id"].int64_list.value.append(user_id)
            feature["timestamp"].int64_list.value.append(kept_stamps[label])
            feature["context_movie_id"].int64_list.value.extend(
                kept_movies[low:label] + [0] * pad)
            feature["context_movie_rating"].float_list.value.extend(
                kept_ratings[low:label] + [0.0] * pad)
            feature["context_movie_year"].int64_list.value.extend(
                kept_years[low:label] + [0] * pad)
            feature["context_movie_genre"].bytes_list.value.extend(genres)
            feature["label_movie_id"].int64_list.value.append(kept_movies[label])
            split = "eval" if sequence_eval[label - 1] else "train"
            write["sequence_examples", split](example.SerializeToString())
            sequence_counts[split] += 1

        if time.perf_counter() > next_report:
            next_report += 15
            _log(f"pandas: {number + 1}/{len(starts)} users, "
                 f"{sum(rating_counts.values()) + sum(sequence_counts.values())} examples")

    for writer in writers.values():
        writer.close()
    seconds = time.perf_counter() - started
    for split in SPLITS:
        counts[f"sequence_examples/{split}"] = sequence_counts[split]
        counts[f"rating_examples/{split}"] = rating_counts[split]
    return {"seconds": seconds, "examples": sum(counts.values()), "counts": counts}


# ---------------------------------------------------------------------------------------
# Running a side in a subprocess, with the peak RSS of its process tree.


class TreeMemorySampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants."""

    # One sample costs ~15 ms of CPU (psutil walks /proc): once a second keeps the
    # sampler's own load near 1% of a core; memory peaks here last far longer.
    def __init__(self, pid: int, label: str, interval: float = 1.0, heartbeat: float = 30):
        super().__init__(daemon=True)
        self._pid, self._label = pid, label
        self._interval, self._heartbeat = interval, heartbeat
        self._stop_event = threading.Event()
        self.peak_bytes = 0
        self.window_peak_bytes = 0  # since the last take_window()
        self.peak_processes = 0
        self._cpu: Dict[int, float] = {}  # pid -> latest user + system CPU seconds

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the tree (each process as last sampled, so a slight undercount)."""
        return sum(self._cpu.values())

    def run(self):
        import psutil  # pylint: disable=import-outside-toplevel

        try:
            root = psutil.Process(self._pid)
        except psutil.NoSuchProcess:
            return
        started = last_report = time.monotonic()
        while not self._stop_event.is_set():
            total, processes = 0, 0
            try:
                tree = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for process in tree:
                try:
                    with process.oneshot():
                        total += process.memory_info().rss
                        times = process.cpu_times()
                    self._cpu[process.pid] = times.user + times.system
                    processes += 1
                except psutil.Error:
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            self.window_peak_bytes = max(self.window_peak_bytes, total)
            self.peak_processes = max(self.peak_processes, processes)
            now = time.monotonic()
            if now - last_report >= self._heartbeat:
                last_report = now
                _log(f"{self._label}: {now - started:.0f} s, {processes} processes, "
                     f"RSS {total / 2**20:.0f} MB (peak {self.peak_bytes / 2**20:.0f} MB)")
            self._stop_event.wait(self._interval)

    def take_window(self) -> int:
        """The peak RSS since the previous call (bytes), and a new window."""
        peak, self.window_peak_bytes = self.window_peak_bytes, 0
        return peak

    def stop(self):
        self._stop_event.set()
        self.join()


def run_side(side: str, data_dir: pathlib.Path, out_dir: pathlib.Path, seed: int,
             label: str) -> Dict:
    """Runs one side in a fresh interpreter; returns its result with ``peak_rss_mb``."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    result_path = out_dir / "result.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--_side", side,
               "--_data", str(data_dir), "--_out", str(out_dir), "--_result",
               str(result_path), "--seed", str(seed)]
    log_path = out_dir / "side.log"
    code = code_fingerprint()
    _log(f"{label}: starting (log: {log_path}; example generator sources {code})")
    wall_started = time.perf_counter()
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=str(REPO), env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        sampler = TreeMemorySampler(process.pid, label)
        sampler.start()
        return_code = process.wait()
        sampler.stop()
    wall = time.perf_counter() - wall_started
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Reaped descendants (exact, if every process waited for its children) or the
    # sampled tree (misses the last second of each process): whichever saw more.
    reaped_cpu = (usage_after.ru_utime - usage_before.ru_utime
                  + usage_after.ru_stime - usage_before.ru_stime)
    if return_code != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{label} failed (exit {return_code}); end of {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["peak_rss_mb"] = sampler.peak_bytes / 2**20
    result["peak_processes"] = sampler.peak_processes
    result["process_wall_seconds"] = wall
    result["cpu_seconds"] = max(sampler.cpu_seconds, reaped_cpu)
    result["code"] = code
    result["load_average_1min"] = os.getloadavg()[0]
    _log(f"{label}: {result['examples']} examples in {result['seconds']:.1f} s "
         f"({result['examples'] / result['seconds']:.0f}/s), {result['cpu_seconds']:.0f} CPU s "
         f"(whole process, start-up included), peak RSS {result['peak_rss_mb']:.0f} MB over "
         f"{sampler.peak_processes} processes, load average {result['load_average_1min']:.1f}")
    return result


# ---------------------------------------------------------------------------------------
# Checking that both sides wrote the same examples.


def _digested_examples(pattern: str):
    """Yields ``(digest, example)`` for every record of ``pattern``: the digest is 64 bits
    of the example's canonical serialization (equal examples, equal digests, whatever
    map order the writer used). The example object is reused between records."""
    # pylint: disable=import-outside-toplevel
    import glob
    import hashlib
    import warnings

    warnings.simplefilter("ignore")  # import-time FutureWarnings of google.api_core
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    tf.get_logger().setLevel("ERROR")
    example = example_pb2.Example()
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for path in sorted(glob.glob(pattern)):
        for record in tf.compat.v1.io.tf_record_iterator(path, options):
            example.ParseFromString(record)
            canonical = example.SerializeToString(deterministic=True)
            yield (int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(),
                                  "little"), example)


def _canonical_digests(pattern: str):
    """Sorted 64-bit digests of the canonical serialization of every record of ``pattern``."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    digests = [digest for digest, _ in _digested_examples(pattern)]
    return np.sort(np.array(digests, dtype=np.uint64))


def _example_text(pattern: str, digest: int) -> str:
    """The first example of ``pattern`` with that digest, as text (for a mismatch report)."""
    for found, example in _digested_examples(pattern):
        if found == digest:
            return str(example).replace("\n", " ")[:1500]
    return "(not found)"


def compare_outputs(run_dir: pathlib.Path, label: str) -> Dict:
    """Per output and split: whether both sides wrote the same multiset of examples."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    patterns = {(side, kind, split): str(run_dir / side / kind / f"Split-{split}" / "*.gz")
                for side in SIDES for kind in KINDS for split in SPLITS}
    _log(f"{label}: comparing outputs ({len(patterns)} record sets, canonical form)")
    started = time.perf_counter()
    workers = max(1, min(len(patterns), os.cpu_count() or 1))
    # The pool's processes import TensorFlow: keep its start-up chatter off stderr.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        futures = {key: pool.submit(_canonical_digests, pattern)
                   for key, pattern in patterns.items()}
        digests = {key: future.result() for key, future in futures.items()}
    report = {"match": True, "parts": {}}
    for kind in KINDS:
        for split in SPLITS:
            beam, pandas = digests["beam", kind, split], digests["pandas", kind, split]
            same = len(beam) == len(pandas) and bool(np.array_equal(beam, pandas))
            part = {"beam": int(len(beam)), "pandas": int(len(pandas)), "match": same}
            if not same:
                report["match"] = False
                only_beam = np.setdiff1d(beam, pandas)
                only_pandas = np.setdiff1d(pandas, beam)
                part["only_beam"], part["only_pandas"] = len(only_beam), len(only_pandas)
                if len(only_beam):
                    part["beam_example"] = _example_text(
                        patterns["beam", kind, split], int(only_beam[0]))
                if len(only_pandas):
                    part["pandas_example"] = _example_text(
                        patterns["pandas", kind, split], int(only_pandas[0]))
            report["parts"][f"{kind}/{split}"] = part
    _log(f"{label}: outputs {'MATCH' if report['match'] else 'DIFFER'} "
         f"({time.perf_counter() - started:.0f} s)")
    return report


# ---------------------------------------------------------------------------------------
# Driver.


def _profile_in_subprocess(data_dir: pathlib.Path, out_dir: pathlib.Path, seed: int,
                           top: int) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--_side",
               "beam-profile", "--_data", str(data_dir), "--_out", str(out_dir),
               "--_result", str(out_dir / "result.json"), "--seed", str(seed),
               "--profile-top", str(top)]
    _log(f"profiling the Beam side (in-memory runner) on {data_dir.name}")
    completed = subprocess.run(command, cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, check=False)
    sys.stdout.write(completed.stdout.decode(errors="replace"))
    sys.stdout.flush()
    if completed.returncode != 0:
        _log(f"profiling failed (exit {completed.returncode})")


def code_fingerprint() -> str:
    """A short hash of the example generator's sources, to tie figures to a code version."""
    import hashlib  # pylint: disable=import-outside-toplevel

    digest = hashlib.sha256()
    for path in sorted((REPO / "components" / "example_gen").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _rate(result: Optional[Dict]) -> Optional[float]:
    return result["examples"] / result["seconds"] if result else None


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1m,10m",
                        help=f"comma-separated sizes out of {', '.join(SIZES)}")
    parser.add_argument("--work-dir", default=os.path.join(
        tempfile.gettempdir(), "movielens-example-gen-benchmark"),
        help="synthetic data (cached between runs) and outputs")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic data and of the split hash")
    parser.add_argument("--check-sizes", default="100k,1m",
                        help="sizes whose outputs are compared side by side ('' for none)")
    parser.add_argument("--sides", default="beam,pandas",
                        help="which sides to run (both are needed for a ratio)")
    parser.add_argument("--profile", default="", metavar="SIZE",
                        help="also print a cProfile of the Beam side on the in-memory "
                             "runner for this size (e.g. 1m)")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep the written examples under --work-dir/runs")
    parser.add_argument("--_side", help=argparse.SUPPRESS)
    parser.add_argument("--_data", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    parser.add_argument("--_result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._side:  # pylint: disable=protected-access
        # A child: run one side and write its result.
        if args._side == "beam":
            result = run_beam(args._data, args._out, args.seed, BEAM_ARGS)
        elif args._side == "pandas":
            result = run_pandas(args._data, args._out, args.seed)
        elif args._side == "beam-profile":
            result = profile_beam(args._data, args._out, args.seed,
                                  os.path.join(args._out, "beam.prof"), args.profile_top)
        else:
            parser.error(f"unknown side {args._side}")
        pathlib.Path(args._result).write_text(json.dumps(result))
        return 0

    sizes = [s for s in args.sizes.split(",") if s]
    checks = {s for s in args.check_sizes.split(",") if s}
    sides = [s for s in args.sides.split(",") if s]
    for size in sizes + list(checks) + ([args.profile] if args.profile else []):
        if size not in SIZES:
            parser.error(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    for side in sides:
        if side not in SIDES:
            parser.error(f"unknown side {side!r}; choose from {', '.join(SIDES)}")
    work_dir = pathlib.Path(args.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    _log(f"work dir {work_dir}; {os.cpu_count()} CPUs; sizes {', '.join(sizes)}")

    fingerprint = code_fingerprint()
    _log(f"example generator sources: {fingerprint}")
    results: Dict[str, Dict[str, Dict]] = {}
    matches: Dict[str, Optional[bool]] = {}
    mismatch_details = {}
    for size in sizes:
        data_dir = ensure_data(work_dir, size, args.seed)
        run_dir = work_dir / "runs" / size
        results[size] = {side: run_side(side, data_dir, run_dir / side, args.seed,
                                        f"{side} {size}") for side in sides}
        if size in checks and set(sides) == set(SIDES):
            report = compare_outputs(run_dir, size)
            matches[size] = report["match"]
            if not report["match"]:
                mismatch_details[size] = report
            print(f"outputs {size}: " + ("MATCH" if report["match"] else "DIFFER") + " — "
                  + "; ".join(f"{part}: beam {v['beam']} / pandas {v['pandas']}"
                              + ("" if v["match"] else " DIFFER")
                              for part, v in report["parts"].items()), flush=True)
        else:
            matches[size] = None
        if not args.keep_outputs:
            shutil.rmtree(run_dir, ignore_errors=True)

    if args.profile:
        data_dir = ensure_data(work_dir, args.profile, args.seed)
        profile_dir = work_dir / "runs" / f"profile-{args.profile}"
        _profile_in_subprocess(data_dir, profile_dir, args.seed, args.profile_top)
        if not args.keep_outputs:  # keep the profile itself
            for path in profile_dir.iterdir():
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.name != "beam.prof":
                    path.unlink()

    # The table.
    print()
    print(f"MovieLensExampleGen benchmark — {os.cpu_count()} CPUs, DirectRunner "
          "multi_processing (all cores) vs single-process pandas; peak RSS summed over "
          "the process tree")
    header = (f"{'size':>5} {'side':>7} {'examples':>10} {'seconds':>9} {'examples/s':>11} "
              f"{'CPU s':>7} {'peak RSS MB':>12} {'procs':>5} {'load':>5} {'beam/pandas':>12} "
              f"{'outputs':>8}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        rates = {side: _rate(results[size].get(side)) for side in SIDES}
        ratio = (rates["beam"] / rates["pandas"]
                 if rates["beam"] and rates["pandas"] else None)
        for side in sides:
            result = results[size][side]
            match = matches.get(size)
            print(f"{size:>5} {side:>7} {result['examples']:>10} {result['seconds']:>9.1f} "
                  f"{rates[side]:>11.0f} {result['cpu_seconds']:>7.0f} "
                  f"{result['peak_rss_mb']:>12.0f} {result['peak_processes']:>5} "
                  f"{result['load_average_1min']:>5.1f} "
                  f"{(f'{ratio:.2f}x' if ratio and side == 'beam' else ''):>12} "
                  f"{('' if match is None else 'match' if match else 'DIFFER'):>8}")
    for size, report in mismatch_details.items():
        print(f"\nMISMATCH {size}: {json.dumps(report, indent=1)}")

    def speedup(size):
        if size not in results or len(results[size]) < 2:
            return None
        return _rate(results[size]["beam"]) / _rate(results[size]["pandas"])

    def growth(side):
        if not all(s in results and side in results[s] for s in ("1m", "10m")):
            return None
        per = {s: results[s][side]["seconds"] / results[s][side]["examples"]
               for s in ("1m", "10m")}
        return per["10m"] / per["1m"]

    summary = {
        "speedup_1m": _round(speedup("1m")),
        "speedup_10m": _round(speedup("10m")),
        "cost_growth": _round(growth("beam")),
        "cost_growth_pandas": _round(growth("pandas")),
        "examples_per_second": {
            size: {side: _round(_rate(r), 1) for side, r in results[size].items()}
            for size in sizes},
        "seconds": {size: {side: _round(r["seconds"], 2) for side, r in results[size].items()}
                    for size in sizes},
        "examples": {size: {side: r["examples"] for side, r in results[size].items()}
                     for size in sizes},
        "peak_rss_mb": {size: {side: _round(r["peak_rss_mb"], 0)
                               for side, r in results[size].items()} for size in sizes},
        "cpu_seconds": {size: {side: _round(r["cpu_seconds"], 1)
                               for side, r in results[size].items()} for size in sizes},
        "outputs_match": matches,
        "cpus": os.cpu_count(),
        "code": fingerprint,
    }
    codes = {r["code"] for size in sizes for r in results[size].values()}
    if codes != {fingerprint}:
        summary["code"] = sorted(codes | {fingerprint})
        _log("the example generator's sources changed during the benchmark: "
             f"{', '.join(summary['code'])}")
    for size in sizes:
        if size not in ("1m", "10m"):
            summary[f"speedup_{size}"] = _round(speedup(size))
    print(json.dumps(summary, sort_keys=False))
    return 0 if all(m is not False for m in matches.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
