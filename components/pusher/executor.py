"""RecommenderPusher's executor: check the blessing, build the served variants, publish.

:func:`push` is the whole job as a plain function (the tests and ``benchmarks/ann.py``
call it directly); :class:`Executor` adapts it to TFX artifacts. The Trainer's export,
the serving root and ``push.json`` may be local or on an object store (``gs://``): files
go through TFX's ``fileio``, and components/pusher/serving.py says how a version is
published on each.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import contract
from components.pusher import publishing

PUSH_FILE = "push.json"
PUSHED_PROPERTY = "pushed"  # custom properties of the pushed_model artifact (as TFX's
PUSHED_VERSION_PROPERTY = "pushed_version"  # Pusher's; the run report reads them)
PUSHED_DESTINATION = "pushed_destination"
_BLESSED = "blessed"


def is_blessed(blessing: types.Artifact) -> bool:
    return blessing.get_int_custom_property(_BLESSED) == 1


def push(model_dir: str, serving_root: str, model_name: str, model_kind: str,
         blessed: bool, max_k: int = 100, scann_overrides: Optional[Mapping] = None,
         source: Optional[str] = None, now: Optional[float] = None) -> Dict[str, Any]:
    """Publishes the Trainer export ``model_dir`` if ``blessed``; returns what happened:
    ``{"pushed": bool, "version", "destinations": {variant: dir}, "reason", ...}``.

    ``source`` identifies the model (its artifact URI): if every variant's latest
    loadable version is one version that holds the same source, nothing new is written
    and that version is reported.
    """
    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    source = source or model_dir
    if not blessed:
        return {"pushed": False, "reason": "the model is not blessed", "source": source}
    retrieves = contract.model_kind(model_kind).retrieves
    variants = [serving.BRUTE_FORCE, serving.SCANN] if retrieves else [serving.BRUTE_FORCE]
    bases = {variant: serving.variant_base(serving_root, model_name, variant)
             for variant in variants}
    latest = _served_version_of(bases, source)
    if latest is not None:
        return {"pushed": True, "already_pushed": True, "version": latest,
                "destinations": {v: os.path.join(b, str(latest)) for v, b in bases.items()},
                "source": source}
    version = publishing.next_version(bases.values(), now)
    info = {"model_name": model_name, "model_kind": model_kind, "version": version,
            "source_model": source, "pushed_at": int(time.time()), "max_k": max_k}
    if retrieves:
        builders, details = _retrieval_builders(model_dir, bases, info, max_k,
                                                scann_overrides)
    else:  # a model that only rates is served as exported
        builders = {bases[serving.BRUTE_FORCE]: lambda d: _copy_model(
            model_dir, d, {**info, "variant": "as_exported"})}
        details: Dict[str, Any] = {}
    published = publishing.publish(builders, version)
    destinations = {variant: published[base] for variant, base in bases.items()}
    logging.info("Pushed %s version %d: %s", model_name, version, destinations)
    return {"pushed": True, "version": version, "destinations": destinations,
            "source": source, **details}


def _served_version_of(bases: Dict[str, str], source: str) -> Optional[int]:
    """The latest loadable version of every variant, if that is one version and it holds
    ``source``. (An upload interrupted between two variants' ``saved_model.pb`` leaves the
    variants' latest versions apart: then the model is pushed again, as a new version.)"""
    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    latest = {max(publishing.versions(base), default=None) for base in bases.values()}
    if len(latest) != 1 or None in latest:
        return None
    (version,) = latest
    brute_force = os.path.join(bases[serving.BRUTE_FORCE], str(version))
    return version if _source_of(brute_force) == source else None


def _source_of(version_dir: str) -> Optional[str]:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    try:
        return serving.read_serving_info(version_dir).get("source_model")
    except (OSError, ValueError, tf.errors.OpError):  # tf.io.gfile: OpError, not OSError
        return None


def _copy_model(model_dir: str, target: str, info: Dict) -> None:
    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    publishing.copy_tree(model_dir, target)
    serving.copy_assets(model_dir, target, info)


def _retrieval_builders(model_dir: str, bases: Dict[str, str], info: Dict, max_k: int,
                        scann_overrides: Optional[Mapping]):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from components.pusher import ann, serving  # pylint: disable=import-outside-toplevel

    extra = os.path.join(model_dir, contract.EXTRA_ASSETS)
    candidates = publishing.load_npz(os.path.join(extra, contract.CANDIDATES_FILE))
    movie_ids, embeddings = candidates["movie_ids"], candidates["embeddings"]
    titles_by_id = serving.load_titles(os.path.join(extra, contract.MOVIES_FILE))
    titles = [titles_by_id.get(int(movie_id), "") for movie_id in movie_ids]
    query_model = tf.saved_model.load(model_dir)
    inputs = sorted(serving.served_input_spec(query_model))
    if contract.CONTEXT_MOVIE_ID in inputs:  # how much of a history the model reads
        info = {**info, contract.MAX_CONTEXT_LENGTH: serving.context_length(model_dir)}

    params = ann.tune(len(movie_ids), max_k, scann_overrides)
    started = time.time()
    searcher = ann.build_searcher(embeddings, params, max_k)
    reached = None
    queries = serving.calibration_queries(query_model, model_dir)
    if queries is not None:
        params, reached = ann.calibrate(searcher, embeddings, queries, params, max_k)
    index = {"params": params.to_dict(), "description": ann.describe(params, reached),
             "sample_recall": reached, "build_seconds": round(time.time() - started, 2),
             "movies": int(len(movie_ids))}
    logging.info("ScaNN index: %s", index["description"])

    def build(variant, searcher_or_none):
        def write(directory):
            server = serving.RetrievalServer(query_model, movie_ids, embeddings, titles,
                                             max_k, searcher_or_none, params,
                                             serving.RatedMovies.of_model(model_dir))
            serving.save_server(server, directory)
            serving.copy_assets(model_dir, directory, {
                **info, "variant": variant, "inputs": inputs,
                "signatures": sorted(server.signatures()),
                **({"index": index} if searcher_or_none is not None else {})})
        return write

    builders = {bases[serving.BRUTE_FORCE]: build(serving.BRUTE_FORCE, None),
                bases[serving.SCANN]: build(serving.SCANN, searcher)}
    return builders, {"index": index}


class Executor(base_executor.BaseExecutor):
    """Marks ``pushed_model`` the way TFX's Pusher does (``pushed``, ``pushed_version``,
    ``pushed_destination``) and writes ``push.json`` into it."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        pushed_model = artifact_utils.get_single_instance(output_dict["pushed_model"])
        result = push(
            model_dir=path_utils.serving_model_path(model.uri),
            serving_root=exec_properties["serving_root"],
            model_name=exec_properties["model_name"],
            model_kind=exec_properties["model_kind"],
            blessed=is_blessed(blessing),
            max_k=int(exec_properties["max_k"]),
            scann_overrides=json.loads(exec_properties.get("scann_overrides") or "{}"),
            source=model.uri)
        record_push(pushed_model, result)


def record_push(pushed_model: types.Artifact, result: Dict[str, Any]) -> None:
    """Marks a PushedModel artifact with :func:`push`'s ``result`` (or a result of the
    same shape) and writes it as ``push.json`` into the artifact's directory."""
    pushed_model.set_int_custom_property(PUSHED_PROPERTY, int(result["pushed"]))
    if result["pushed"]:
        pushed_model.set_string_custom_property(PUSHED_VERSION_PROPERTY,
                                                str(result["version"]))
        pushed_model.set_string_custom_property(
            PUSHED_DESTINATION, result["destinations"][contract.BRUTE_FORCE])
    else:
        logging.info("Not pushed: %s", result["reason"])
    fileio.makedirs(pushed_model.uri)
    with fileio.open(os.path.join(pushed_model.uri, PUSH_FILE), "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
