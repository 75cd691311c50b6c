"""Training our models inside the quality benchmark: what every protocol shares.

:func:`train` builds, compiles and fits one preset (or recipe) on a set of training
files, printing one line per epoch (:class:`Progress`), exactly as the Trainer builds
the model (``models.build_model`` / ``compile_model``).
"""

from __future__ import annotations

import time

# components first: it sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads.
from components.trainer import hparams as hp
from components.trainer import inputs
from components.trainer import models as M
from components.trainer import recency

import numpy as np
import tensorflow as tf


def log(message: str) -> None:
    print(message, flush=True)


class Progress(tf.keras.callbacks.Callback):
    """Prints one line per epoch."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.epoch_start, self.losses = time.time(), []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start, self.losses = time.time(), []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float((logs or {}).get("loss", np.nan)))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        # tfrs logs the last batch's loss: average the batches' instead.
        parts = [f"mean batch loss {np.mean(self.losses):.4g}"]
        if "regularization_loss" in logs:
            parts.append(f"L2 penalty {logs['regularization_loss']:.4g}")
        if "rmse" in logs:
            parts.append(f"train RMSE {logs['rmse']:.4f}")
        log(f"  [{self.name}] epoch {epoch + 1}: {', '.join(parts)} "
            f"({time.time() - self.epoch_start:.0f} s)")


def describe(hparams) -> str:
    """The model kind and what differs from the field defaults."""
    base = hp.HParams(model=hparams.model)
    changed = {key: value for key, value in hparams.to_dict().items()
               if key != "model" and value != base.to_dict()[key]}
    return f"{hparams.model} " + ", ".join(f"{key}={value}" for key, value in changed.items())


def train(name: str, hparams, vocabulary, train_files: str):
    """Builds, compiles and fits ``hparams.model`` on ``train_files``; returns
    ``(model, seconds)``."""
    log(f"[{name}] training: {describe(hparams)}")
    start = time.time()
    stats = inputs.training_timestamp_stats(hparams, train_files)
    table = recency.training_recency(hparams, vocabulary, train_files)
    model = M.compile_model(M.build_model(hparams, vocabulary, stats, recency_table=table),
                            hparams)
    model.fit(inputs.input_dataset(hparams, vocabulary, train_files, training=True),
              epochs=hparams.epochs, verbose=0, callbacks=[Progress(name)])
    return model, time.time() - start
