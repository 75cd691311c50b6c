"""The Trainer's progress callback: one :func:`components.progress.report_epoch` per epoch
(the console of a local run shows it; see components/progress.py), and the per-epoch
figures as metrics.json records them."""

from __future__ import annotations

import time
from typing import Dict, List, Mapping, Sequence

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


def epoch_history(history: Mapping[str, Sequence[float]]) -> List[Dict[str, float]]:
    """Keras' ``History.history`` ({metric: [value per epoch]}) as one dict per epoch:
    ``[{"epoch": 1, "loss": ..., ...}, ...]`` (metrics.json's ``history``)."""
    epochs = max((len(values) for values in history.values()), default=0)
    return [{"epoch": epoch + 1, **{name: float(values[epoch])
                                    for name, values in sorted(history.items())
                                    if epoch < len(values)}}
            for epoch in range(epochs)]
