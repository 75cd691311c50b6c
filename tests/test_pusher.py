"""The Pusher: blessed models only, TF Serving's layout, atomic and never overwriting;
pushed models reload in a fresh process (the brute-force one without ScaNN). On an object
store (``remote://``, tests/remote_fs.py) the same layout, uploaded with saved_model.pb
last, and a failed upload leaves no loadable version."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import remote_fs
from tfx.dsl.io import fileio

from components.pusher import ann, executor, publishing, serving
from conftest import SERVED_MIN_TOP_K, serving_tree

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: loads pushed models, each (variant, path) in turn (the
# brute-force ones first, before anything imports ScaNN), and prints each one's top-k as
# a JSON list.
_LOAD_SCRIPT = r"""
import json, sys
import components  # Keras 2 first, as every entry point
import tensorflow as tf
loads, k = json.loads(sys.argv[1]), int(sys.argv[2])
inputs = {name: tf.constant(value, tf.int64) for name, value in json.loads(sys.argv[3]).items()}
results = []
for variant, path in loads:
    if variant == "scann":
        import scann  # noqa: F401  (registers the Scann ops the SavedModel holds)
    model = tf.saved_model.load(path)
    plain = model.signatures["serving_default"](k=tf.constant(k), **inputs)
    excluding = model.signatures["recommend_excluding"](
        k=tf.constant(k), exclude_movie_ids=plain["movie_ids"][:, :3], **inputs)
    results.append({
        "scann_imported": "scann" in sys.modules,
        "movie_ids": plain["movie_ids"].numpy().tolist(),
        "scores": plain["scores"].numpy().tolist(),
        "titles": [[t.decode() for t in row] for row in plain["titles"].numpy()],
        "excluding": excluding["movie_ids"].numpy().tolist()})
print(json.dumps(results))
"""


def _load_in_fresh_process(loads, k, inputs):
    """Each ``(variant, path)`` of ``loads`` loaded in one fresh interpreter, brute-force
    variants first: their results, in the order of ``loads``."""
    order = sorted(range(len(loads)), key=lambda i: loads[i][0] != "brute_force")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, json.dumps([loads[i] for i in order]), str(k),
         json.dumps({name: value.tolist() for name, value in inputs.items()})],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return [results[order.index(i)] for i in range(len(loads))]


def _push_result(runs, name, degraded=False):
    with open(os.path.join(runs.output(f"{name}Pusher", "pushed_model", degraded),
                           "push.json")) as handle:
        return json.load(handle)


def _trainer_export(runs, name):
    return os.path.join(runs.output(f"{name}Trainer", "model"), "Format-Serving")


def test_pushed_layout_is_tf_servings_with_both_variants(served_pipeline):
    root = served_pipeline.config.serving_root
    for name, bases in (("retrieval", ["retrieval", "retrieval_scann"]),
                        ("sequential", ["sequential", "sequential_scann"]),
                        ("ranking", ["ranking"])):
        push = _push_result(served_pipeline, name.capitalize())
        for base in bases:
            [version] = publishing.versions(os.path.join(root, base))
            assert version == push["version"]
            directory = os.path.join(root, base, str(version))
            assert os.path.exists(os.path.join(directory, "saved_model.pb"))
            info = serving.read_serving_info(directory)
            assert info["version"] == version and info["model_name"] == name
        # Nothing but version directories (the staging directories were renamed).
        for base in bases:
            assert [n for n in os.listdir(os.path.join(root, base))] == [str(push["version"])]
    info = serving.read_serving_info(os.path.join(
        root, "retrieval_scann", str(_push_result(served_pipeline, "Retrieval")["version"])))
    assert info["index"]["params"]["reorder"] > 0 and info["index"]["sample_recall"] >= 0.95


def test_degraded_model_is_neither_blessed_nor_pushed_and_the_pushed_version_stays(
        degraded_run):
    runs = degraded_run
    nodes = {e["node"]: e["state"] for e in runs.degraded}
    assert nodes["RetrievalTrainer"] == "ran" and nodes["RetrievalPusher"] == "ran"
    with open(os.path.join(runs.output("RetrievalTrainer", "model_run", True),
                           "metrics.json")) as handle:
        degraded = json.load(handle)
    assert degraded["top_100"] < SERVED_MIN_TOP_K   # untrained: about 100 / 400
    blessing = runs.output("RetrievalEvaluator", "blessing", degraded=True)
    assert os.path.exists(os.path.join(blessing, "NOT_BLESSED"))
    push = _push_result(runs, "Retrieval", degraded=True)
    assert push["pushed"] is False and "not blessed" in push["reason"]
    # Every pushed file is still there, unchanged; no new version, no staging left over.
    assert serving_tree(runs.config.serving_root) == runs.serving_before_degraded
    first = _push_result(runs, "Retrieval")["version"]
    assert publishing.versions(os.path.join(runs.config.serving_root, "retrieval")) == [first]


def _expected_top_k(export_dir, inputs, k):
    """Exact top-k in this process: the Trainer export's query embeddings against
    candidates.npz, and the ScaNN index built in memory with the pushed parameters."""
    import tensorflow as tf

    query_model = tf.saved_model.load(export_dir)
    queries = query_model.signatures["serving_default"](
        **{name: tf.constant(value) for name, value in inputs.items()}
    )["query_embedding"].numpy()
    candidates = np.load(os.path.join(export_dir, "assets.extra", "candidates.npz"))
    exact = candidates["movie_ids"][ann.exact_top_k(candidates["embeddings"], queries, k)]
    return queries, candidates, exact


@pytest.mark.parametrize("name", ["Retrieval", "Sequential"])
def test_pushed_model_reloads_in_a_fresh_process_with_the_in_memory_top_k(
        served_pipeline, name):
    runs = served_pipeline
    push = _push_result(runs, name)
    k = 20
    export_dir = _trainer_export(runs, name)
    names = serving.read_serving_info(push["destinations"]["brute_force"])["inputs"]
    if name == "Retrieval":   # user ids (and their latest timestamps, if the model reads one)
        inputs = serving.query_inputs(names, users=[1, 2, 3, 42, 150],
                                      rated=serving.RatedMovies.of_model(export_dir))
    else:                     # watch histories, 0-padded
        inputs = serving.query_inputs(names, histories=[[5, 17, 230], [44, 8], [1, 2, 3, 4, 5]])
    queries, candidates, exact = _expected_top_k(export_dir, inputs, k)

    # The ScaNN index in memory, built as the Pusher built it.
    info = serving.read_serving_info(push["destinations"]["scann"])
    params = ann.ScannParams(**info["index"]["params"])
    searcher = ann.build_searcher(candidates["embeddings"], params, info["max_k"])
    rows, _ = ann.search(searcher, queries, k, params)
    in_memory = candidates["movie_ids"][rows]

    scann, brute = _load_in_fresh_process(
        [(variant, push["destinations"][variant]) for variant in ("scann", "brute_force")],
        k, inputs)
    assert scann["movie_ids"] == in_memory.tolist()
    assert brute["movie_ids"] == exact.tolist()
    assert not brute["scann_imported"]                   # stock TF ops only
    assert np.all(np.diff(np.asarray(brute["scores"]), axis=1) <= 0)
    titles = serving.load_titles(os.path.join(push["destinations"]["brute_force"],
                                              "assets.extra", "movies.tsv"))
    assert brute["titles"] == [[titles[m] for m in row] for row in brute["movie_ids"]]
    for variant in (scann, brute):          # excluded movies are skipped, the rest shift
        for row, excluding in zip(variant["movie_ids"], variant["excluding"]):
            assert excluding[:len(row) - 3] == row[3:]
            assert not set(row[:3]) & set(excluding)


def _retrieval_inputs(export_dir, names):
    return serving.query_inputs(names, users=[1, 2, 3, 42, 150],
                                rated=serving.RatedMovies.of_model(export_dir))


def _failing_on(monkeypatch, fail):
    """fileio.copy raising OSError for destinations ``fail(destination)`` accepts;
    returns the refused destinations."""
    real_copy, refused = fileio.copy, []

    def copy(src, dst, overwrite=False):
        if fail(str(dst)):
            refused.append(str(dst))
            raise OSError(f"upload of {dst} failed")
        return real_copy(src, dst, overwrite)

    monkeypatch.setattr(fileio, "copy", copy)
    return refused


def test_push_to_an_object_store_serves_what_a_local_push_serves(
        served_pipeline, tmp_path, monkeypatch):
    runs = served_pipeline
    root = remote_fs.install(tmp_path / "bucket") + "serving"
    export_dir = _trainer_export(runs, "Retrieval")
    source = runs.output("RetrievalTrainer", "model")
    local_push = _push_result(runs, "Retrieval")

    def push(**kwargs):
        return executor.push(export_dir, root, "retrieval", "retrieval", blessed=True,
                             **{"source": source, **kwargs})

    pushed = push()
    version = pushed["version"]
    assert pushed["destinations"] == {"brute_force": f"{root}/retrieval/{version}",
                                      "scann": f"{root}/retrieval_scann/{version}"}
    for base in ("retrieval", "retrieval_scann"):   # TF Serving's layout, nothing else
        assert publishing.versions(f"{root}/{base}") == [version]
        local = remote_fs.local_path(f"{root}/{base}")
        assert os.listdir(local) == [str(version)]
        for name in ("saved_model.pb", "variables/variables.index",
                     "assets.extra/serving.json", "assets.extra/movies.tsv",
                     "assets.extra/rated.npz"):
            assert os.path.isfile(os.path.join(local, str(version), name)), name
        info = serving.read_serving_info(f"{root}/{base}/{version}")
        assert info["version"] == version and info["source_model"] == source

    # Loads from where the object store keeps it, with the local push's top-k.
    names = serving.read_serving_info(pushed["destinations"]["brute_force"])["inputs"]
    inputs = _retrieval_inputs(export_dir, names)
    variants = ("brute_force", "scann")
    loaded = _load_in_fresh_process(
        [(variant, remote_fs.local_path(pushed["destinations"][variant]))
         for variant in variants]
        + [(variant, local_push["destinations"][variant]) for variant in variants], 20, inputs)
    for variant, remote, local in zip(variants, loaded[:2], loaded[2:]):
        assert remote["movie_ids"] == local["movie_ids"], variant
        assert remote["excluding"] == local["excluding"], variant
        np.testing.assert_allclose(remote["scores"], local["scores"], rtol=1e-5, atol=1e-6)

    # The same source again: nothing new is written.
    before = serving_tree(remote_fs.local_path(root))
    again = push()
    assert again["already_pushed"] and again["version"] == version
    assert serving_tree(remote_fs.local_path(root)) == before

    # A new model whose upload fails at a saved_model.pb: no loadable new version, and
    # nothing of it is left; the next push gets a higher version.
    refused = _failing_on(monkeypatch, lambda dst: dst.endswith("/saved_model.pb"))
    with pytest.raises(OSError, match="upload of"):
        push(source=source + "-retrained")
    failed = int(refused[0].split("/")[-2])
    assert failed > version
    for base in ("retrieval", "retrieval_scann"):
        assert publishing.versions(f"{root}/{base}") == [version]
        assert os.listdir(remote_fs.local_path(f"{root}/{base}")) == [str(version)]
    monkeypatch.undo()
    retried = push(source=source + "-retrained")
    assert not retried.get("already_pushed") and retried["version"] > failed
    for base in ("retrieval", "retrieval_scann"):
        assert publishing.versions(f"{root}/{base}") == [version, retried["version"]]
        assert serving.read_serving_info(f"{root}/{base}/{retried['version']}")[
            "source_model"] == source + "-retrained"


# ---------------------------------------------------------------------------------------
# Publishing and tuning (no pipeline).


def _writer(content):
    def build(directory):
        os.makedirs(directory)
        with open(os.path.join(directory, "saved_model.pb"), "w") as handle:
            handle.write(content)
    return build


def test_publish_renames_into_place_and_never_overwrites(tmp_path):
    base = str(tmp_path / "retrieval")
    published = publishing.publish({base: _writer("one")}, 100)
    assert published == {base: os.path.join(base, "100")}
    with pytest.raises(FileExistsError):
        publishing.publish({base: _writer("two")}, 100)
    with open(os.path.join(base, "100", "saved_model.pb")) as handle:
        assert handle.read() == "one"
    assert os.listdir(base) == ["100"]                      # no staging left behind
    assert publishing.next_version([base], now=50) == 101      # monotonic past the clock
    assert publishing.next_version([base], now=1_000) == 1_000


def test_a_failed_build_publishes_nothing(tmp_path):
    bases = [str(tmp_path / "retrieval"), str(tmp_path / "retrieval_scann")]

    def broken(directory):
        os.makedirs(directory)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publishing.publish({bases[0]: _writer("ok"), bases[1]: broken}, 7)
    assert all(os.listdir(base) == [] for base in bases)


def _saved_model_writer(content):
    """A stand-in build: saved_model.pb, a variables file and an asset."""
    def build(directory):
        for name in ("variables/variables.index", "assets.extra/serving.json",
                     "saved_model.pb"):
            os.makedirs(os.path.dirname(os.path.join(directory, name)), exist_ok=True)
            with open(os.path.join(directory, name), "w") as handle:
                handle.write(content)
    return build


def _local_files(base):
    """{relative path: content} of every file under a remote:// base path."""
    local, files = remote_fs.local_path(base), {}
    for directory, _, names in os.walk(local):
        for name in names:
            with open(os.path.join(directory, name)) as handle:
                files[os.path.relpath(os.path.join(directory, name), local)] = handle.read()
    return files


def test_publish_to_an_object_store_uploads_saved_model_pb_last(tmp_path, monkeypatch):
    root = remote_fs.install(tmp_path / "bucket")
    bases = [root + "serving/retrieval", root + "serving/retrieval_scann"]
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))   # where variants are built
    uploads = []
    real_copy = fileio.copy
    monkeypatch.setattr(fileio, "copy", lambda src, dst, overwrite=False: (
        uploads.append(str(dst)), real_copy(src, dst, overwrite))[1])

    published = publishing.publish({base: _saved_model_writer("one") for base in bases}, 100)
    assert published == {base: base + "/100" for base in bases}
    assert len(uploads) == 6
    # Every other file of every variant first, then each saved_model.pb.
    assert [os.path.basename(u) for u in uploads[-2:]] == ["saved_model.pb"] * 2
    assert not any(u.endswith("saved_model.pb") for u in uploads[:-2])
    for base in bases:
        assert _local_files(base) == {f"100/{name}": "one" for name in (
            "saved_model.pb", "variables/variables.index", "assets.extra/serving.json")}
        assert publishing.versions(base) == [100]
        assert publishing.latest_version_dir(base) == base + "/100"
    assert os.listdir(staging) == []                      # the local builds are gone
    with pytest.raises(FileExistsError):
        publishing.publish({base: _saved_model_writer("two") for base in bases}, 100)
    assert all(set(_local_files(base).values()) == {"one"} for base in bases)
    assert publishing.next_version(bases, now=50) == 101


def test_a_failed_upload_removes_its_version_and_a_leftover_number_is_never_reused(
        tmp_path, monkeypatch):
    root = remote_fs.install(tmp_path / "bucket")
    bases = [root + "serving/retrieval", root + "serving/retrieval_scann"]
    publishing.publish({base: _saved_model_writer("one") for base in bases}, 100)
    before = {base: _local_files(base) for base in bases}

    # The last saved_model.pb fails: the other variant's complete version goes too.
    _failing_on(monkeypatch, lambda dst: dst == bases[1] + "/101/saved_model.pb")
    with pytest.raises(OSError):
        publishing.publish({base: _saved_model_writer("two") for base in bases}, 101)
    assert {base: _local_files(base) for base in bases} == before
    assert publishing.next_version(bases, now=0) == 101

    # An interrupted upload (the clean-up fails too) leaves a version directory without
    # saved_model.pb: not loadable, not the latest, and its number is never reused.
    monkeypatch.undo()
    _failing_on(monkeypatch, lambda dst: dst.endswith("/101/saved_model.pb"))
    monkeypatch.setattr(fileio, "rmtree", lambda path: (_ for _ in ()).throw(
        OSError("connection lost")))
    with pytest.raises(OSError, match="upload of"):
        publishing.publish({base: _saved_model_writer("two") for base in bases}, 101)
    for base in bases:
        assert sorted(os.listdir(remote_fs.local_path(base))) == ["100", "101"]
        assert "101/saved_model.pb" not in _local_files(base)
        assert publishing.versions(base) == [100]
        assert publishing.latest_version_dir(base) == base + "/100"
    assert publishing.next_version(bases, now=0) == 102
    with pytest.raises(FileExistsError):                  # never written into either
        publishing.publish({base: _saved_model_writer("three") for base in bases}, 101)


def test_variants_whose_latest_versions_differ_are_pushed_again(tmp_path, monkeypatch):
    """An upload interrupted between the variants' saved_model.pb: the brute-force
    variant has the model's version, the ScaNN variant does not; pushing the same model
    again publishes a new version of both instead of reporting it as pushed."""
    root = remote_fs.install(tmp_path / "bucket") + "serving"
    bases = {"brute_force": root + "/retrieval", "scann": root + "/retrieval_scann"}

    def with_source(source):
        def build(directory):
            _saved_model_writer("x")(directory)
            with open(os.path.join(directory, "assets.extra", "serving.json"), "w") as handle:
                json.dump({"source_model": source}, handle)
        return build

    publishing.publish({base: with_source("old") for base in bases.values()}, 100)
    publishing.publish({bases["brute_force"]: with_source("new")}, 101)
    built = []
    monkeypatch.setattr(executor, "_retrieval_builders", lambda model_dir, bases_, *_: (
        built.append(model_dir) or {b: with_source("new") for b in bases_.values()}, {}))

    result = executor.push("model", root, "retrieval", "retrieval", True, source="new",
                           now=0)
    assert built == ["model"] and not result.get("already_pushed")
    assert result["version"] == 102
    assert all(publishing.versions(base)[-1] == 102 for base in bases.values())
    again = executor.push("model", root, "retrieval", "retrieval", True, source="new")
    assert again["already_pushed"] and again["version"] == 102 and built == ["model"]


def test_push_refuses_a_model_that_is_not_blessed(tmp_path):
    result = executor.push(str(tmp_path / "model"), str(tmp_path / "serving"), "retrieval",
                           "retrieval", blessed=False)
    assert result["pushed"] is False
    assert not os.path.exists(tmp_path / "serving")


def test_scann_parameters_follow_the_catalogue_size():
    assert ann.tune(100).brute_force
    small = ann.tune(3_706)                               # ML-1M: no tree, AH + reorder
    assert small.num_leaves == 0 and small.reorder == 1000 and not small.brute_force
    large = ann.tune(1_000_000)
    assert large.num_leaves == 1000 and large.num_leaves_to_search == 100
    assert ann.tune(62_423).num_leaves == 250
    assert ann.tune(1_000_000, overrides={"num_leaves_to_search": 80}).num_leaves_to_search == 80
    with pytest.raises(ValueError):
        ann.tune(1_000, overrides={"leaves": 3})


def test_calibrated_scann_reaches_the_recall_target_on_clustered_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, 32)).astype(np.float32)
    embeddings = (centres[rng.integers(0, 200, 20_000)]
                  + 0.5 * rng.normal(size=(20_000, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 200, 100)]
               + 0.5 * rng.normal(size=(100, 32))).astype(np.float32)
    params = ann.tune(len(embeddings), 100)
    searcher = ann.build_searcher(embeddings, params, 100)
    params, reached = ann.calibrate(searcher, embeddings, queries, params, 100, target=0.95)
    rows, _ = ann.search(searcher, queries, 100, params)
    assert reached >= 0.95
    assert ann.recall(rows, ann.exact_top_k(embeddings, queries, 100)) >= 0.95


def test_a_model_reading_a_time_is_served_without_one_and_at_a_given_time(tmp_path):
    """serving_default(user_id, k) asks such a model at each user's latest known rating
    (rated.npz); recommend_at_time takes a query time."""
    import tensorflow as tf

    from components import contract
    from components.evaluator.slices import SliceSpec
    from components.trainer import evaluation, export, inputs, models
    from components.trainer import hparams as hp
    from components.trainer import vocabulary as vocab_lib

    movies = np.arange(10, 16, dtype=np.int64)
    vocab = vocab_lib.Vocabulary(
        movie_ids=movies, movie_counts=np.arange(6, 0, -1, dtype=np.int64),
        movie_titles=tuple(f"Movie {i} (1990)" for i in range(6)),
        movie_years=np.full(6, 1990, np.int64), movie_genres=(("Drama",),) * 6,
        user_ids=np.array([1, 2], np.int64), user_counts=np.ones(2, np.int64),
        genres=("UNK", "Drama"), years=(0, 1990))
    hparams = hp.HParams(model=hp.RETRIEVAL, embedding_dim=4, use_timestamps=True,
                         timestamp_buckets=10)
    stats = inputs.TimestampStats(9e8, 1e7, tuple(np.linspace(8.8e8, 9.2e8, 9)), (1, 2),
                                  (8.8e8, 8.9e8))
    model = models.build_model(hparams, vocab, stats)
    export_dir = export.save(export.export_module(model, hparams, vocab, SliceSpec()),
                             str(tmp_path / "export"))
    last = np.array([890_000_000, 915_000_000], np.int64)
    np.savez(tmp_path / "rated.npz", user_ids=np.array([1, 2]), row_splits=np.array([0, 1, 2]),
             movie_ids=np.array([10, 11]), last_timestamps=last)
    server = serving.RetrievalServer(
        tf.saved_model.load(export_dir), movies,
        evaluation.catalogue_embeddings(model.candidate_tower, vocab), [""] * 6, max_k=6,
        rated=serving.RatedMovies(str(tmp_path / "rated.npz")))
    serving.save_server(server, str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    _, spec = served.signatures[contract.RECOMMEND_SIGNATURE].structured_input_signature
    assert set(spec) == {contract.USER_ID, contract.K_INPUT}
    users, k = tf.constant([1, 2], tf.int64), tf.constant(6)
    default = served.signatures[contract.RECOMMEND_SIGNATURE](user_id=users, k=k)
    at_time = served.signatures[contract.QUERY_TIME_SIGNATURE]
    none = tf.zeros([2, 1], tf.int64)   # exclude_movie_ids, 0-padded: nothing
    known = at_time(user_id=users, timestamp=tf.constant(last), k=k, exclude_movie_ids=none)
    np.testing.assert_allclose(default["scores"].numpy(), known["scores"].numpy(), atol=1e-6)
    other = at_time(user_id=users, timestamp=tf.constant([0, 0], tf.int64), k=k,
                    exclude_movie_ids=none)
    assert not np.allclose(np.sort(other["scores"].numpy()), np.sort(known["scores"].numpy()))
