"""Builds and publishes the two-stage model from the latest pushed retrieval and ranking
models: :func:`build` is the whole job (the executor, the tests and the benchmark call it).

Layout (TF Serving's, published like every pushed model: components/pusher/publishing.py)::

  <serving_root>/two_stage/<version>/        exact retrieval (stock TF ops only)
  <serving_root>/two_stage_scann/<version>/  retrieval by a ScaNN index (needs the ScaNN
                                             ops), with the pushed ScaNN variant's
                                             calibrated parameters, built for k = N

``assets.extra/`` holds the retrieval model's files (``movies.tsv``, ``users.tsv``,
``rated.npz``, ...) and ``serving.json``, whose ``stages`` record the pushed version of
each model combined (name, version, directory, the Trainer's model it came from). A
version is rebuilt when either model has a newer pushed version or ``num_candidates`` /
``max_k`` change; otherwise the latest version is reported as it is.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from absl import logging

from components import contract
from components.pusher import publishing

VARIANTS = (contract.BRUTE_FORCE, contract.SCANN)
DEFAULT_NUM_CANDIDATES = 200


def _stage(serving_root: str, model_name: str) -> Optional[Dict[str, Any]]:
    """The latest loadable pushed version of a model (exact variant), or None."""
    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    latest = publishing.latest_version_dir(
        serving.variant_base(serving_root, model_name, contract.BRUTE_FORCE))
    if latest is None:
        return None
    return {"model_name": model_name, "version": int(os.path.basename(latest)),
            "dir": latest,
            "source_model": serving.read_serving_info(latest).get("source_model")}


def _key(info: Dict[str, Any]) -> Dict[str, Any]:
    """What a two-stage version is built from: each stage's model and pushed version,
    N and max_k (not the directories: a copied serving root holds the same models)."""
    return {"stages": {name: [stage["model_name"], stage["version"]]
                       for name, stage in (info.get(contract.STAGES) or {}).items()},
            "settings": [info.get(contract.NUM_CANDIDATES), info.get("max_k")]}


def _built_version(bases: Dict[str, str], wanted: Dict[str, Any]) -> Optional[int]:
    """The latest version of every variant, if it is one version built from what
    ``wanted`` (a serving.json's content) says."""
    from components.pusher import serving  # pylint: disable=import-outside-toplevel

    latest = {max(publishing.versions(base), default=None) for base in bases.values()}
    if len(latest) != 1 or None in latest:
        return None
    (version,) = latest
    info = serving.read_serving_info(
        os.path.join(bases[contract.BRUTE_FORCE], str(version)))
    return version if _key(info) == _key(wanted) else None


def build(serving_root: str, retrieval_name: str = contract.RETRIEVAL,
          ranking_name: str = contract.RANKING,
          num_candidates: int = DEFAULT_NUM_CANDIDATES, max_k: int = 100,
          variants=VARIANTS, now: Optional[float] = None) -> Dict[str, Any]:
    """Publishes ``<serving_root>/two_stage[_scann]/<version>/`` from the latest pushed
    ``retrieval_name`` and ``ranking_name`` models; returns what happened, shaped as
    the Pusher's result (``pushed``, ``version``, ``destinations`` by variant,
    ``reason`` when nothing could be built, ``already_pushed``, ``stages``)."""
    from components.pusher import ann, serving  # pylint: disable=import-outside-toplevel
    from components.two_stage import model  # pylint: disable=import-outside-toplevel

    if num_candidates < 1 or max_k < 1:
        raise ValueError(f"num_candidates and max_k must be positive, not "
                         f"{num_candidates} and {max_k}")
    stages = {contract.RETRIEVAL: _stage(serving_root, retrieval_name),
              contract.RANKING: _stage(serving_root, ranking_name)}
    missing = [name for name, stage in zip((retrieval_name, ranking_name), stages.values())
               if stage is None]
    if missing:
        return {"pushed": False, "reason": f"no pushed {' or '.join(missing)} model under "
                                           f"{serving_root}"}
    scann_dir = publishing.latest_version_dir(
        serving.variant_base(serving_root, retrieval_name, contract.SCANN))
    variants = [v for v in variants if v != contract.SCANN or scann_dir is not None]
    bases = {v: serving.variant_base(serving_root, contract.TWO_STAGE, v) for v in variants}
    key = {contract.STAGES: stages, contract.NUM_CANDIDATES: int(num_candidates),
           "max_k": int(min(max_k, num_candidates))}
    built = _built_version(bases, key)
    if built is not None:
        return {"pushed": True, "already_pushed": True, "version": built,
                "destinations": {v: os.path.join(b, str(built)) for v, b in bases.items()},
                contract.STAGES: stages}
    version = publishing.next_version(bases.values(), now)
    retrieval_dir = stages[contract.RETRIEVAL]["dir"]
    ranking_dir = stages[contract.RANKING]["dir"]
    loaded: Dict[str, object] = {}
    info = {"model_name": contract.TWO_STAGE, "version": version,
            "pushed_at": int(time.time()), "inputs": [contract.USER_ID],
            "signatures": [contract.RECOMMEND_SIGNATURE, contract.EXCLUDING_SIGNATURE],
            **key}

    def builder(variant):
        def write(directory):
            searcher = params = None
            extra = {}
            if variant == contract.SCANN:
                index = serving.read_serving_info(scann_dir)["index"]
                params = ann.ScannParams(**index["params"])
                embeddings = model.pushed_embeddings(retrieval_dir, loaded)
                searcher = ann.build_searcher(embeddings, params, num_candidates)
                extra = {"index": {**index, "source": scann_dir}}
            server = model.from_pushed(retrieval_dir, ranking_dir, num_candidates, max_k,
                                       searcher, params, loaded)
            model.save(server, directory)
            serving.copy_assets(retrieval_dir, directory,
                                {**info, "variant": variant, **extra})
        return write

    published = publishing.publish({bases[v]: builder(v) for v in variants}, version)
    destinations = {variant: published[base] for variant, base in bases.items()}
    logging.info("Two-stage model version %d: %s", version, destinations)
    return {"pushed": True, "version": version, "destinations": destinations,
            contract.STAGES: stages}
