"""The Trainer's progress callback: one :func:`components.progress.report_epoch` per epoch
(the console of a local run shows it; see components/progress.py)."""

from __future__ import annotations

import time

import components  # noqa: F401  (Keras 2 before TensorFlow)

import tf_keras as keras

from components import progress


class EpochProgress(keras.callbacks.Callback):
    """Reports each finished epoch of ``model.fit``, with its training metrics."""

    def __init__(self, model_name: str):
        super().__init__()
        self._name, self._started = model_name, time.time()

    def on_train_begin(self, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        progress.report_epoch(self._name, epoch + 1, int(self.params.get("epochs") or 0),
                              time.time() - self._started, logs or {})
