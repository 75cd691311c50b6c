"""Training progress as log records: what a run's console shows while a Trainer works.

Components report through the standard ``logging`` logger :data:`LOGGER`; every record
carries an :class:`Epoch` as ``record.epoch_progress`` besides its plain text. Wherever
the Trainer runs, the text lands in the log (absl's handler on the root logger: the log
file of a local run, the container log on Kubeflow / Vertex AI); a local run's console
(pipeline/console.py) also listens to this logger and draws the records as progress.

TensorFlow-free (the Keras callback is components/trainer/progress.py), so the console can
import it without loading TensorFlow.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Mapping

LOGGER = "movielens.progress"
RECORD_ATTRIBUTE = "epoch_progress"
# The training metrics an epoch line shows, in this order, when Keras reports them.
SHOWN_METRICS = ("loss", "rmse")

_logger = logging.getLogger(LOGGER)
_logger.setLevel(logging.INFO)  # whatever the root level: the console needs every epoch


@dataclasses.dataclass(frozen=True)
class Epoch:
    """One finished epoch of one model's training."""

    model: str  # the model's name (its Trainer's name, when known, is the console's)
    epoch: int  # 1-based
    epochs: int
    seconds: float  # since training started
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)

    def detail(self) -> str:
        """``epoch 3/8 loss=12.3456 41 s``."""
        shown = [f"{key}={self.metrics[key]:.4f}" for key in SHOWN_METRICS
                 if key in self.metrics]
        return " ".join([f"epoch {self.epoch}/{self.epochs}", *shown, f"{self.seconds:.0f} s"])

    def text(self, name: str = "") -> str:
        """``<name, default: the model's> epoch 3/8 loss=12.3456 41 s``."""
        return f"{name or self.model} {self.detail()}"


def report_epoch(model: str, epoch: int, epochs: int, seconds: float,
                 metrics: Mapping[str, float]) -> Epoch:
    """Logs one finished epoch (all its metrics in the text, the chosen ones on screen)."""
    progress = Epoch(model, epoch, epochs, seconds,
                     {key: float(value) for key, value in metrics.items()})
    everything = ", ".join(f"{key}={value:.4f}"
                           for key, value in sorted(progress.metrics.items()))
    _logger.info("%s (%s)", progress.text(), everything,
                 extra={RECORD_ATTRIBUTE: progress})
    return progress
