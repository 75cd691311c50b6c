"""The served SavedModels, and how a version is published.

Layout (TensorFlow Serving's: a base path per model, one integer directory per version)::

  <serving_root>/<model>/<version>/         brute force: the query tower + exact top-k
                                            (stock TF ops only: loads in stock TF Serving
                                            and in any process without ``import scann``)
  <serving_root>/<model>_scann/<version>/   the query tower + a ScaNN index (needs the
                                            ScaNN ops: ``import scann`` / the ScaNN
                                            TF Serving build)
  <serving_root>/ranking/<version>/         the ranking model as the Trainer exported it

Signatures of the retrieval-like variants (``B`` queries)::

  serving_default      the query tower's raw inputs -- ``user_id`` int64 [B] (retrieval)
                       or ``context_movie_id`` int64 [B, L] (sequential, oldest first,
                       0-padded) -- and ``k`` int32 scalar
  recommend_excluding  the same plus ``exclude_movie_ids`` int64 [B, E] (0-padded)
  both return          scores float32 [B, k], movie_ids int64 [B, k], titles string [B, k]
                       best first; k is clipped to [1, min(max_k, movies)]. When fewer
                       than k movies are left after exclusion the tail has score -inf.

``assets.extra/`` (ignored by TF Serving) carries ``serving.json`` (what this is: model,
variant, version, inputs, index parameters, source model), ``movies.tsv``, ``users.tsv``,
``rated.npz`` and ``metrics.json`` from the Trainer.

File systems: the serving root and the Trainer's export may be local or on an object
store (``gs://`` on Kubeflow / Vertex AI), so every file here is read and written through
TFX's ``fileio`` (which hands ``gs://`` to ``tf.io.gfile``). TensorFlow itself saves the
SavedModels (and the ScaNN index) into local directories only: a variant is always built
locally, then moved to where it is served.

Publishing (:func:`publish`): a server must never see a half-written version, and a
version that exists is never overwritten (FileExistsError). Versions are integers (Unix
seconds, or one more than the highest present if that is larger).

* Local serving root -- atomic: every variant is written beside its final place (a hidden
  ``.tmp-*`` directory under the same base path, which TF Serving ignores), then renamed
  to ``<version>``; a rename within one file system is atomic.
* Object store -- ``saved_model.pb`` last: there is no atomic rename of a directory, so
  every variant is built in a local temporary directory, then uploaded file by file into
  ``<base>/<version>``, every variant's other files first and each ``saved_model.pb``
  last. TF Serving treats a version as loadable only once its ``saved_model.pb`` is there
  (a load before that fails and is retried), so it never loads a partial one. A failed
  upload removes what it wrote of this version, in every variant (best effort: an
  interrupted process leaves it), and raises. Nothing locks the root against a second
  Pusher of the same model at the same moment (a pipeline runs one at a time).

Which versions count: :func:`versions` lists the loadable ones, integer directories that
hold ``saved_model.pb`` (locally that is each of them: they appear by rename; on an
object store not one an interrupted upload left behind), so the latest version is one a
server can load. :func:`next_version` counts every integer directory, complete or not:
reusing the number of a leftover would mix its files into the new version.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import components  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.io import fileio

from components import vocabulary_files
from components.pusher import ann

BRUTE_FORCE = "brute_force"
SCANN = "scann"
VARIANTS = (BRUTE_FORCE, SCANN)
SCANN_SUFFIX = "_scann"
EXTRA_ASSETS = "assets.extra"
SERVING_INFO = "serving.json"
RECOMMEND_SIGNATURE = "serving_default"
EXCLUDING_SIGNATURE = "recommend_excluding"
K_INPUT = "k"
EXCLUDE_INPUT = "exclude_movie_ids"
SCORES, MOVIE_IDS, TITLES = "scores", "movie_ids", "titles"
QUERY_SIGNATURE = "serving_default"  # of the Trainer's export
QUERY_OUTPUT = "query_embedding"
COPIED_ASSETS = ("movies.tsv", "users.tsv", "rated.npz", "metrics.json")
SAVED_MODEL_FILE = "saved_model.pb"  # TF Serving loads a version once this is there


def variant_base(serving_root: str, model_name: str, variant: str) -> str:
    """The TF Serving base path of one variant of a model."""
    return os.path.join(serving_root, model_name + (SCANN_SUFFIX if variant == SCANN else ""))


def is_local(path: str) -> bool:
    """A path of this machine's file system (no ``scheme://``)."""
    return "://" not in path


def _version_dirs(base: str) -> List[int]:
    """Every integer-named directory under ``base``, complete or not, ascending."""
    if not fileio.isdir(base):
        return []
    names = [name.rstrip("/") for name in fileio.listdir(base)]  # gs:// lists "1/"
    return sorted(int(name) for name in names
                  if name.isdigit() and fileio.isdir(os.path.join(base, name)))


def versions(base: str) -> List[int]:
    """The loadable versions under a base path (those holding ``saved_model.pb``; see
    the module docstring), ascending."""
    return [version for version in _version_dirs(base)
            if fileio.exists(os.path.join(base, str(version), SAVED_MODEL_FILE))]


def latest_version_dir(base: str) -> Optional[str]:
    found = versions(base)
    return os.path.join(base, str(found[-1])) if found else None


def next_version(bases: Iterable[str], now: Optional[float] = None) -> int:
    """Unix seconds, or one more than the highest version directory (loadable or left
    by an interrupted upload) under any of ``bases``."""
    highest = max((v for base in bases for v in _version_dirs(base)), default=0)
    return max(int(time.time() if now is None else now), highest + 1)


def publish(builders: Dict[str, Callable[[str], None]], version: int) -> Dict[str, str]:
    """Builds each ``{base path: build(directory)}`` (``directory`` does not exist yet)
    and publishes them all as ``<base>/<version>``: by rename on a local file system, by
    upload with ``saved_model.pb`` last elsewhere (module docstring). Raises
    FileExistsError (leaving every existing version as it was) when a
    ``<base>/<version>`` exists. Returns ``{base: final directory}``."""
    for base in builders:
        _refuse_existing(base, version)
    if all(is_local(base) for base in builders):
        return _publish_by_rename(builders, version)
    return _publish_by_upload(builders, version)


def _refuse_existing(base: str, version: int, when: str = "exists") -> str:
    final = os.path.join(base, str(version))
    if fileio.exists(final):
        raise FileExistsError(f"version {version} {when} under {base}")
    return final


def _publish_by_rename(builders: Dict[str, Callable[[str], None]],
                       version: int) -> Dict[str, str]:
    staged: Dict[str, str] = {}
    try:
        for base, build in builders.items():
            os.makedirs(base, exist_ok=True)
            staged[base] = os.path.join(base, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
            build(staged[base])
        published = {}
        for base, tmp in staged.items():
            final = _refuse_existing(base, version, "appeared")
            os.rename(tmp, final)
            published[base] = final
        return published
    finally:
        for tmp in staged.values():
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def _publish_by_upload(builders: Dict[str, Callable[[str], None]],
                       version: int) -> Dict[str, str]:
    staging = tempfile.mkdtemp(prefix=f"publish-{version}-")
    try:
        built = {}
        for number, (base, build) in enumerate(builders.items()):
            built[base] = os.path.join(staging, str(number))
            build(built[base])
        uploaded: List[str] = []
        try:
            for base, local in built.items():         # everything but saved_model.pb ...
                final = _refuse_existing(base, version, "appeared")
                uploaded.append(final)
                copy_tree(local, final, skip=(SAVED_MODEL_FILE,))
            for local, final in zip(built.values(), uploaded):  # ... then it: loadable
                fileio.copy(os.path.join(local, SAVED_MODEL_FILE),
                            os.path.join(final, SAVED_MODEL_FILE))
        except BaseException:
            for final in uploaded:
                _remove_quietly(final)
            raise
        logging.info("Uploaded version %d: %s", version, uploaded)
        return dict(zip(built, uploaded))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_quietly(directory: str) -> None:
    """Best effort: the error that made us clean up is the one to raise."""
    try:
        if fileio.exists(directory):
            fileio.rmtree(directory)
    except Exception as error:  # pylint: disable=broad-except
        logging.warning("Could not remove the partial upload %s: %s", directory, error)


def copy_tree(source: str, target: str, skip: Sequence[str] = ()) -> None:
    """Copies the directory ``source`` into ``target`` (created; each on any file system
    ``fileio`` knows) file by file, leaving out the top-level files named in ``skip``."""
    source = source.rstrip("/")
    for directory, _, files in fileio.walk(source):
        relative = directory[len(source):].strip("/")
        into = os.path.join(target, relative) if relative else target
        fileio.makedirs(into)
        for name in files:
            if not (relative == "" and name in skip):
                fileio.copy(os.path.join(directory, name), os.path.join(into, name))


def read_text(path: str) -> str:
    """A UTF-8 text file on any file system (``fileio``'s text mode would decode with
    the locale's encoding on some)."""
    with fileio.open(path, "rb") as handle:
        return handle.read().decode("utf-8")


def load_npz(path: str) -> Dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file on any file system."""
    with fileio.open(path, "rb") as handle:
        with np.load(io.BytesIO(handle.read())) as data:
            return {name: data[name] for name in data.files}


# ---------------------------------------------------------------------------------------
# The retrieval server module.


def query_input_spec(query_model) -> Dict[str, tf.TensorSpec]:
    """The raw inputs of the Trainer export's ``serving_default`` signature."""
    _, specs = query_model.signatures[QUERY_SIGNATURE].structured_input_signature
    return {name: tf.TensorSpec(spec.shape, spec.dtype, name) for name, spec in specs.items()}


class RetrievalServer(tf.Module):
    """Query tower + top-k over the catalogue (exact, or ScaNN with ``searcher``).

    Args:
      query_model: the Trainer's export, loaded with ``tf.saved_model.load``.
      movie_ids: int64 [M]; embeddings: float32 [M, D] (``candidates.npz``), same rows.
      titles: M strings, same rows.
      max_k: the largest k served.
      searcher: ``ann.build_searcher(embeddings, params)``'s result, or None for the
        exact (stock-ops) variant.
      params: the searcher's ``ann.ScannParams``.
    """

    def __init__(self, query_model, movie_ids: np.ndarray, embeddings: np.ndarray,
                 titles: Sequence[str], max_k: int = 100, searcher=None,
                 params: Optional[ann.ScannParams] = None):
        super().__init__()
        self.query_model = query_model
        self._query_fn = query_model.signatures[QUERY_SIGNATURE]
        self.movie_ids = tf.Variable(np.asarray(movie_ids, np.int64), trainable=False,
                                     name="movie_ids")
        self.titles = tf.Variable(tf.constant([str(t).encode("utf-8") for t in titles],
                                              tf.string), trainable=False, name="titles")
        self.rows = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(np.asarray(movie_ids, np.int64)),
            tf.range(len(movie_ids), dtype=tf.int64)), -1)
        self._max_k = int(min(max_k, len(movie_ids)))
        self._params = params or ann.ScannParams()
        if searcher is None:
            self.embeddings = tf.Variable(np.asarray(embeddings, np.float32),
                                          trainable=False, name="embeddings")
            self.scann = None
        else:
            self.scann = searcher.serialize_to_module()
        spec = query_input_spec(query_model)
        k_spec = tf.TensorSpec([], tf.int32, K_INPUT)
        exclude_spec = tf.TensorSpec([None, None], tf.int64, EXCLUDE_INPUT)

        @tf.function(input_signature=[{**spec, K_INPUT: k_spec}])
        def recommend(inputs):
            inputs = dict(inputs)
            k = inputs.pop(K_INPUT)
            return self._recommend(inputs, k, None)

        @tf.function(input_signature=[{**spec, K_INPUT: k_spec, EXCLUDE_INPUT: exclude_spec}])
        def recommend_excluding(inputs):
            inputs = dict(inputs)
            k, exclude = inputs.pop(K_INPUT), inputs.pop(EXCLUDE_INPUT)
            return self._recommend(inputs, k, exclude)

        self.recommend = recommend
        self.recommend_excluding = recommend_excluding

    def _recommend(self, inputs, k, exclude):
        query = self._query_fn(**inputs)[QUERY_OUTPUT]
        k = tf.clip_by_value(k, 1, self._max_k)
        if self.scann is None:
            values, rows = self._exact(query, k, exclude)
        else:
            values, rows = self._approximate(query, k, exclude)
        return {SCORES: values, MOVIE_IDS: tf.gather(self.movie_ids, rows),
                TITLES: tf.gather(self.titles, rows)}

    def _exact(self, query, k, exclude):
        scores = tf.matmul(query, self.embeddings, transpose_b=True)        # [B, M]
        if exclude is not None:
            rows = self.rows.lookup(exclude)                                # [B, E]
            batch = tf.broadcast_to(tf.range(tf.shape(rows, tf.int64)[0])[:, None],
                                    tf.shape(rows, tf.int64))
            known = rows >= 0
            index = tf.stack([tf.boolean_mask(batch, known),
                              tf.boolean_mask(rows, known)], axis=1)
            scores = tf.tensor_scatter_nd_update(
                scores, index, tf.fill([tf.shape(index)[0]], float("-inf")))
        return tf.math.top_k(scores, k)

    def _approximate(self, query, k, exclude):
        import scann  # pylint: disable=import-outside-toplevel

        searcher = scann.scann_ops.searcher_from_module(self.scann)
        extra = tf.shape(exclude)[1] if exclude is not None else 0
        fetch = tf.minimum(k + extra, tf.shape(self.movie_ids)[0])
        kwargs = {}
        if self._params.num_leaves:
            kwargs["leaves_to_search"] = self._params.num_leaves_to_search
        if self._params.reorder:
            kwargs["pre_reorder_num_neighbors"] = tf.maximum(fetch, self._params.reorder)
        result = searcher.search_batched(query, final_num_neighbors=fetch, **kwargs)
        rows = tf.cast(result.indices, tf.int64)
        values = result.distances
        drop = rows < 0
        if exclude is not None:
            ids = tf.gather(self.movie_ids, tf.maximum(rows, 0))
            drop |= tf.reduce_any(
                tf.equal(ids[:, :, None], exclude[:, None, :]) & (exclude[:, None, :] != 0),
                axis=-1)
        values = tf.where(drop, float("-inf"), values)
        values, best = tf.math.top_k(values, tf.minimum(k, tf.shape(values)[1]))
        return values, tf.maximum(tf.gather(rows, best, batch_dims=1), 0)

    def signatures(self):
        return {RECOMMEND_SIGNATURE: self.recommend.get_concrete_function(),
                EXCLUDING_SIGNATURE: self.recommend_excluding.get_concrete_function()}


def save_server(server: RetrievalServer, export_dir: str) -> None:
    options = (tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
               if server.scann is not None else None)
    tf.saved_model.save(server, export_dir, signatures=server.signatures(), options=options)


def copy_assets(source_model_dir: str, export_dir: str, info: Dict) -> None:
    """The Trainer's assets.extra files serving needs, plus ``serving.json``."""
    source = os.path.join(source_model_dir, EXTRA_ASSETS)
    target = os.path.join(export_dir, EXTRA_ASSETS)
    fileio.makedirs(target)
    for name in COPIED_ASSETS:
        if fileio.exists(os.path.join(source, name)):
            fileio.copy(os.path.join(source, name), os.path.join(target, name),
                        overwrite=True)
    with fileio.open(os.path.join(target, SERVING_INFO), "w") as handle:
        json.dump(info, handle, indent=2, sort_keys=True)


def read_serving_info(model_dir: str) -> Dict:
    with fileio.open(os.path.join(model_dir, EXTRA_ASSETS, SERVING_INFO)) as handle:
        return json.load(handle)


def read_movies(movies_tsv: str) -> List[Tuple[int, int, str]]:
    """``movies.tsv`` (the Trainer's vocabulary, most rated first): (movie id, rating
    count, title) rows."""
    rows = []
    for line in read_text(movies_tsv).split("\n"):
        fields = vocabulary_files.decode_fields(line.rstrip("\r"))
        if len(fields) >= 3:
            rows.append((int(fields[0]), int(fields[1]), fields[2]))
    return rows


def load_titles(movies_tsv: str) -> Dict[int, str]:
    return {movie_id: title for movie_id, _, title in read_movies(movies_tsv)}


class RatedMovies:
    """``rated.npz`` of a Trainer export (components/trainer/export.py): each user's
    movies and latest timestamp."""

    def __init__(self, path: str):
        data = load_npz(path)
        self.user_ids = data["user_ids"]
        self.row_splits = data["row_splits"]
        self.movie_ids = data["movie_ids"]
        self.last_timestamps = (data["last_timestamps"] if "last_timestamps" in data
                                else np.zeros(len(self.user_ids), np.int64))
        self._index = {int(user): i for i, user in enumerate(self.user_ids)}

    @classmethod
    def of_model(cls, model_dir: str) -> Optional["RatedMovies"]:
        path = os.path.join(model_dir, EXTRA_ASSETS, "rated.npz")
        return cls(path) if fileio.exists(path) else None

    def __contains__(self, user) -> bool:
        return int(user) in self._index

    def movies(self, user) -> np.ndarray:
        i = self._index.get(int(user))
        return (self.movie_ids[self.row_splits[i]:self.row_splits[i + 1]] if i is not None
                else np.zeros(0, np.int64))

    def last_timestamp(self, user) -> int:
        """The user's latest timestamp, or the latest of anyone for an unknown user."""
        i = self._index.get(int(user))
        if i is not None:
            return int(self.last_timestamps[i])
        return int(self.last_timestamps.max()) if len(self.last_timestamps) else 0


def query_inputs(names: Iterable[str], users: Optional[Sequence[int]] = None,
                 histories: Optional[Sequence[Sequence[int]]] = None,
                 rated: Optional[RatedMovies] = None,
                 timestamps: Optional[Sequence[int]] = None) -> Dict[str, np.ndarray]:
    """The raw query inputs ``names`` (a served model's ``serving.json["inputs"]`` or
    the Trainer export's) for users or watch histories. ``timestamp`` defaults to each
    user's latest timestamp in ``rated`` (the query time of the data), else now."""
    inputs: Dict[str, np.ndarray] = {}
    count = len(users) if users is not None else len(histories or [])
    for name in names:
        if name == "user_id":
            inputs[name] = np.asarray(users, np.int64)
        elif name == "context_movie_id":
            width = max([len(h) for h in histories] + [1])
            padded = np.zeros((len(histories), width), np.int64)
            for row, history in enumerate(histories):
                padded[row, :len(history)] = history
            inputs[name] = padded
        elif name == "timestamp":
            if timestamps is None:
                timestamps = ([rated.last_timestamp(u) for u in users]
                              if rated is not None and users is not None
                              else [int(time.time())] * count)
            inputs[name] = np.asarray(timestamps, np.int64)
        else:
            raise ValueError(f"no value for the query input {name!r}")
    return inputs


def calibration_queries(query_model, source_model_dir: str, size: int = 256,
                        seed: int = 0) -> Optional[np.ndarray]:
    """Query embeddings [Q, D] of sample users (retrieval: user ids at their latest
    timestamp; sequential: up to 10 of their movies as histories) from ``rated.npz``;
    None without it."""
    rated = RatedMovies.of_model(source_model_dir)
    if rated is None or len(rated.user_ids) == 0:
        return None
    users = rated.user_ids[ann.sample_rows(len(rated.user_ids), size, seed)]
    names = list(query_input_spec(query_model))
    if "context_movie_id" in names:
        inputs = query_inputs(names, histories=[rated.movies(u)[:10] for u in users],
                              rated=rated, users=None if "user_id" not in names else users)
    else:
        inputs = query_inputs(names, users=users, rated=rated)
    output = query_model.signatures[QUERY_SIGNATURE](
        **{name: tf.constant(value) for name, value in inputs.items()})[QUERY_OUTPUT]
    return output.numpy()
