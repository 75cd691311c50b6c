"""The Evaluator on the Trainer's seeded sample of eval users.

A Trainer with ``eval_sample_users`` computes its figures on a seeded sample of users and
writes their ids beside the model (``assets.extra/eval_users.npz``,
``contract.EVAL_USERS_FILE``). The Evaluator then narrows the eval split to the same
users before TFMA reads it, so that its cost is bounded the same way and its figures,
the baseline's included, are on the same examples as the Trainer's.

:func:`narrowed_examples` streams each split once (records read in batches, only
``user_id`` parsed) and writes the kept records, gzipped, under a directory of the
executor's; nothing holds the split in memory.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
from tfx import types
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components import contract

_READ_BATCH = 8192


def sampled_users(model_uri: str) -> Optional[np.ndarray]:
    """The user ids the Trainer evaluated ``model_uri``'s model on, or None (all)."""
    path = os.path.join(path_utils.serving_model_path(model_uri), contract.EXTRA_ASSETS,
                        contract.EVAL_USERS_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as handle:
        return np.load(handle)["user_ids"].astype(np.int64)


def narrow_split(files: Sequence[str], user_ids: np.ndarray, out_prefix: str,
                 shards: Optional[int] = None) -> int:
    """Writes the records of ``files`` (gzipped tf.Examples, read in this order) whose
    ``user_id`` is in ``user_ids``, in their order, dealt round-robin over ``shards``
    (default: as many as ``files``) gzipped files ``<out_prefix>-<i>-of-<shards>.gz``
    (several, so that Beam's workers share the evaluation: one gzipped file is read, and
    evaluated, by one worker); returns how many."""
    spec = {contract.USER_ID: tf.io.FixedLenFeature([], tf.int64)}
    records = tf.data.TFRecordDataset(list(files), compression_type="GZIP").batch(_READ_BATCH)
    wanted = np.unique(np.asarray(user_ids, np.int64))
    shards = max(1, int(len(files) if shards is None else shards))
    writers = [tf.io.TFRecordWriter(f"{out_prefix}-{i:05d}-of-{shards:05d}.gz",
                                    options="GZIP") for i in range(shards)]
    kept = 0
    try:
        for batch in records:
            users = tf.io.parse_example(batch, spec)[contract.USER_ID].numpy()
            serialized = batch.numpy()
            for index in np.flatnonzero(np.isin(users, wanted)):
                writers[kept % shards].write(serialized[index])
                kept += 1
    finally:
        for writer in writers:
            writer.close()
    return kept


def narrowed_examples(examples: types.Artifact, splits: Sequence[str],
                      user_ids: np.ndarray, out_dir: str) -> types.Artifact:
    """A copy of the Examples artifact ``examples`` whose ``splits`` hold only the
    records of ``user_ids``, written under ``out_dir``."""
    narrowed = type(examples)()
    narrowed.uri = out_dir
    # Field by field: Artifact.copy_from's proto map merge aborts the process (a
    # protobuf CHECK failure) on artifacts read back from the store.
    for name in ("split_names", "span", "version"):
        if examples.has_property(name):
            setattr(narrowed, name, getattr(examples, name))
    for name, value in examples.mlmd_artifact.custom_properties.items():
        if value.HasField("string_value"):
            narrowed.set_string_custom_property(name, value.string_value)
        elif value.HasField("int_value"):
            narrowed.set_int_custom_property(name, value.int_value)
    for split in splits:
        split_dir = artifact_utils.get_split_uri([narrowed], split)
        tf.io.gfile.makedirs(split_dir)
        files = sorted(tf.io.gfile.glob(io_utils.all_files_pattern(
            artifact_utils.get_split_uri([examples], split))))
        kept = narrow_split(files, user_ids, os.path.join(split_dir, "sample"))
        if not kept:
            raise ValueError(f"none of the {len(user_ids)} sampled users has an example "
                             f"in the {split!r} split")
    return narrowed
