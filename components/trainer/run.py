"""The Trainer's ``run_fn``: train one model, evaluate it on the eval split, export it.

What lands where (file names from components/contract.py):
  <model>/Format-Serving/             SavedModel: the query tower (ranking: the model), with
                                      ``serving_default`` (raw tensors),
                                      ``serve_tf_examples``, and the Evaluator's
                                      ``transform_features`` and ``eval_ranks`` signatures
                                      (see components/trainer/export.py)
  <model>/Format-Serving/assets.extra/
      candidates.npz                  movie ids [M] and their embeddings [M, D], rows in
                                      vocabulary order (models that retrieve)
      movies.tsv, users.tsv,          the vocabulary the rows refer to, and the sequence
      sequence_shape.json             examples' padded lengths
      rated.npz                       each user's movies in the examples (both splits)
                                      and latest timestamp (what serving leaves out)
      eval_users.npz                  the seeded sample of eval users, when the
                                      figures are on one (``eval_sample_users``)
      metrics.json                    the eval-split metrics below, the hyperparameters
                                      and ``history``: the training loss and metrics of
                                      each epoch (contract.METRICS_HISTORY)
  <model_run>/                        TensorBoard logs and the same metrics.json

Files go through ``tf.io.gfile``: on Kubeflow / Vertex AI the artifacts are on ``gs://``.

Metrics: models that retrieve report top-K accuracy (``top_{k}``) and NDCG@k
(``ndcg_{k}``) over all movies (the tutorials' protocol) and ``*_excluding_rated`` (the
user's training movies masked, as serving does: HR@10 is ``top_10_excluding_rated``,
Recall@100 ``top_100_excluding_rated``); models that rate report RMSE in stars.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import components  # noqa: F401  (Keras 2 before TensorFlow)

import numpy as np
import tensorflow as tf
import tf_keras as keras
from absl import logging

from components import contract
from components.evaluator.slices import SliceSpec
from components.trainer import distribute, evaluation, histories, inputs
from components.trainer import export as export_lib
from components.trainer import progress
from components.trainer.component import (SLICES_CONFIG, TRAIN_STEPS_CONFIG,
                                          VOCABULARY_DIR_CONFIG)
from components.trainer.hparams import HParams
from components.trainer.vocabulary import Vocabulary, load_vocabulary

# The vocabulary files a served model carries beside its SavedModel.
_COPIED_VOCABULARY = (contract.MOVIES_FILE, contract.USERS_FILE, contract.SEQUENCE_SHAPE_FILE)


def training_movies(hparams: HParams, vocabulary: Vocabulary,
                    train_files) -> Optional[histories.UserHistory]:
    """Each user's training movies (vocabulary rows) for a model that retrieves -- what
    the ``*_excluding_rated`` figures and the export's excluded scores leave out --,
    else None. One streamed pass over ``train_files``."""
    if not hparams.kind.retrieves:
        return None
    return evaluation.user_history(
        inputs.input_dataset(hparams, vocabulary, train_files, training=False),
        vocabulary, hparams.kind.history_keys)


def eval_user_sample(hparams: HParams, vocabulary: Vocabulary) -> Optional[np.ndarray]:
    """The seeded sample of ``hparams.eval_sample_users`` user ids the figures are
    computed on, or None (every user: no sample set, or not fewer than the users)."""
    if not 0 < hparams.eval_sample_users < vocabulary.num_users:
        return None
    return np.random.default_rng(hparams.seed).choice(
        vocabulary.user_ids, hparams.eval_sample_users, replace=False)


def evaluate(model, hparams: HParams, vocabulary: Vocabulary,
             train_files, eval_files,
             seen: Optional[histories.UserHistory] = None) -> Dict[str, Any]:
    """The model's figures on the eval split (see the module docstring); on the seeded
    sample of :func:`eval_user_sample` when there is one (recorded in the figures as
    ``eval_sampled_users`` and ``eval_sample_seed``). ``seen``: the users'
    :func:`training_movies`, when the caller has them already (else read from
    ``train_files``)."""
    kind = hparams.kind
    eval_data = inputs.input_dataset(hparams, vocabulary, eval_files, training=False)
    metrics: Dict[str, Any] = {}
    users = eval_user_sample(hparams, vocabulary)
    if users is not None:
        eval_data = evaluation.sample_users(eval_data, users, hparams.eval_batch_size)
        metrics.update({contract.EVAL_SAMPLED_USERS: len(users),
                        "eval_sample_seed": hparams.seed})
    if kind.rates:
        metrics.update(evaluation.evaluate_ranking(model, eval_data))  # call() gives stars
    if kind.retrieves:
        # Only the eval users' entries are looked up: the sample's users, when sampled.
        if seen is None:
            seen = training_movies(hparams, vocabulary, train_files)
        metrics.update(evaluation.evaluate_retrieval(
            model, eval_data, vocabulary, hparams.top_ks, history=seen))
    return metrics


def export(model, hparams: HParams, vocabulary: Vocabulary, vocabulary_dir: str,
           serving_dir: str, metrics: Dict[str, Any],
           slices: Optional[SliceSpec] = None, history_files=None,
           seen: Optional[histories.UserHistory] = None) -> None:
    """The SavedModel (components/trainer/export.py: serving and Evaluator signatures;
    with ``seen``, the users' :func:`training_movies`, ``eval_ranks`` also ranks with
    each user's training movies excluded) plus the candidate embeddings the Pusher
    indexes and, with ``history_files``, each user's rated movies (``rated.npz``) that
    serving leaves out."""
    catalogue = None
    if hparams.kind.retrieves:
        catalogue = evaluation.catalogue_embeddings(model.candidate_tower, vocabulary)
    export_lib.save(export_lib.export_module(
        model, hparams, vocabulary, slices or SliceSpec(), catalogue, seen), serving_dir)
    extra = os.path.join(serving_dir, contract.EXTRA_ASSETS)
    tf.io.gfile.makedirs(extra)
    if catalogue is not None:
        export_lib.save_npz(os.path.join(extra, contract.CANDIDATES_FILE),
                            movie_ids=vocabulary.movie_ids, embeddings=catalogue)
    users = eval_user_sample(hparams, vocabulary)
    if users is not None:  # the Evaluator evaluates on the same users
        export_lib.save_npz(os.path.join(extra, contract.EVAL_USERS_FILE), user_ids=users)
    if history_files:
        export_lib.save_rated_movies(
            export_lib.rated_movies(hparams, vocabulary, history_files), extra)
    for name in _COPIED_VOCABULARY:
        if tf.io.gfile.exists(os.path.join(vocabulary_dir, name)):
            tf.io.gfile.copy(os.path.join(vocabulary_dir, name), os.path.join(extra, name),
                             overwrite=True)
    _write_metrics(extra, metrics)


def _write_metrics(directory: str, metrics: Dict[str, Any]) -> None:
    with tf.io.gfile.GFile(os.path.join(directory, contract.METRICS_FILE), "w") as handle:
        handle.write(json.dumps(metrics, indent=2, sort_keys=True))


def run_fn(fn_args) -> None:
    """TFX entry point (``Trainer(run_fn="components.trainer.run.run_fn")``)."""
    config = dict(fn_args.custom_config or {})
    vocabulary_dir = config[VOCABULARY_DIR_CONFIG]
    hparams = HParams.from_dict(config.get("hparams"))
    vocabulary = load_vocabulary(vocabulary_dir)
    logging.info("Training %s on %s with %s", hparams.model, fn_args.train_files,
                 hparams.to_dict())

    strategy = distribute.choose_strategy()
    started = time.time()
    train_steps = config.get(TRAIN_STEPS_CONFIG)  # the first N batches, once (0: untrained)
    model = distribute.build_and_fit(
        hparams, vocabulary, fn_args.train_files, strategy,
        train_steps=None if train_steps is None else int(train_steps), callbacks=[
            keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
            progress.EpochProgress(hparams.model)])
    # Keras' History callback, which fit() leaves on the model (none: not trained).
    history = getattr(getattr(model, "history", None), "history", None) or {}
    fitted = time.time()
    seen = training_movies(hparams, vocabulary, fn_args.train_files)  # read once, used twice
    metrics = evaluate(model, hparams, vocabulary, fn_args.train_files, fn_args.eval_files,
                       seen=seen)
    # train_seconds: fit and evaluation (what the run summary shows); then each part.
    metrics["train_seconds"] = round(time.time() - started, 1)
    metrics["fit_seconds"] = round(fitted - started, 1)
    metrics["evaluate_seconds"] = round(time.time() - fitted, 1)
    # The training split's size and what training saw (less than epochs x size when
    # the split is above hparams.train_example_budget).
    metrics["train_examples"] = int(model.train_examples)
    metrics["examples_seen"] = int(model.examples_seen)
    metrics["sparse_updates"] = bool(model.sparse_updates)  # HParams.sparse_updates_min_rows
    metrics[contract.METRICS_HISTORY] = progress.epoch_history(history)
    metrics["hparams"] = hparams.to_dict()
    metrics["replicas"] = strategy.num_replicas_in_sync
    logging.info("%s eval metrics: %s", hparams.model, json.dumps(metrics, sort_keys=True))
    _write_metrics(fn_args.model_run_dir, metrics)
    exporting = time.time()
    export(model, hparams, vocabulary, vocabulary_dir, fn_args.serving_model_dir, metrics,
           slices=SliceSpec.from_dict(config.get(SLICES_CONFIG)),
           history_files=[fn_args.train_files, fn_args.eval_files], seen=seen)
    logging.info("%s exported in %.1f s", hparams.model, time.time() - exporting)
