"""The Trainer's optimizers: Keras' own, and :class:`LazyAdam` for large embedding tables.

Keras' Adam applies a sparse gradient (an embedding lookup's ``IndexedSlices``) densely:
every step decays both moment slots of every row of the table and moves every row. Its
cost per step grows with the table (users x dimension), not with the batch.
:class:`LazyAdam` (after TensorFlow Addons') updates only the rows the batch looked up;
dense gradients take Adam's own step. An L2 penalty on a whole table makes its gradient
dense again, so sparse updates (``HParams.sparse_updates_min_rows``, which chooses it for
``adam`` on large tables) also put the penalty on the looked-up rows only. Step costs with
each: benchmarks/README.md, "The pipeline at scale".
"""

from __future__ import annotations

from typing import Optional

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import numpy as np
import tensorflow as tf

from components.trainer.hparams import HParams

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


# Missed steps a row catches up on term by term (LazyAdam): the next term would be
# below (beta_1 / sqrt(beta_2))**100, 3e-5, of the first.
CATCH_UP_TERMS = 100


class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse updates touch only the looked-up rows, and that catches a row up
    on the steps it missed when it is next looked up.

    For a gradient ``IndexedSlices(values [N, D], indices [N])`` on a table ``[R, D]``:
    the rows' gradients are summed per distinct index (``g [U, D]``), then only those
    ``U`` rows of ``m``, ``v`` and the table change. A row last updated at step ``l``,
    ``k`` steps before this one (``t``), first takes in one go what Adam would have done
    on those steps, where its gradient was zero: ``m`` and ``v`` decay by ``beta_1**k``
    and ``beta_2**k``, and the row moves by
    ``sum_{j=1..k} alpha_{l+j} * r**j * m / (sqrt(v) + epsilon)``, where
    ``r = beta_1 / sqrt(beta_2)`` and ``alpha_s = lr * sqrt(1 - beta_2**s) / (1 -
    beta_1**s)`` is step ``s``'s bias-corrected rate (the first ``CATCH_UP_TERMS``
    terms). Then this step's gradient takes Adam's rule. Without the catch-up a row seen
    once in many steps would move about ten times less per look-up than under Adam,
    whose momentum keeps moving it. It is exact but for the learning rate and
    ``epsilon`` of the missed steps, taken as this step's, and for the rows not looked
    up since, which catch up at their next look-up. Dense gradients take Adam's own
    step (and bring every row up to date). Steps are counted in float32 (exact to 2**24).
    """

    def build(self, var_list):
        super().build(var_list)
        if getattr(self, "_lazy_built", False):
            return
        self._lazy_built = True
        # The step at which each row (first dimension) of each variable was last updated.
        self._last_steps = [self.add_variable_from_reference(
            model_variable=var, variable_name="last_step", shape=var.shape[:1])
            for var in var_list]

    def update_step(self, gradient, variable):
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        slot = self._index_dict[self._var_key(variable)]
        last = self._last_steps[slot]
        if not isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable)
            last.assign(tf.fill(tf.shape(last), step))
            return
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        lr = tf.cast(self.learning_rate, dtype)

        def bias_correction(at):  # of Adam's step at step ``at``
            return tf.sqrt(1 - tf.pow(beta_2, at)) / (1 - tf.pow(beta_1, at))

        m, v = self._momentums[slot], self._velocities[slot]
        rows, position = tf.unique(gradient.indices)
        g = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        last_rows = tf.gather(last, rows)                                     # [U]
        m_rows, v_rows = tf.gather(m, rows), tf.gather(v, rows)
        # Missed step l + j (j = 1..missed) would have moved the row by
        # alpha_{l+j} * ratio**j * m / sqrt(v); the terms past CATCH_UP_TERMS are below
        # ratio**CATCH_UP_TERMS of the first and are left out.
        ratio = beta_1 / tf.sqrt(beta_2)
        j = tf.range(1, CATCH_UP_TERMS + 1, dtype=dtype)                      # [J]
        missed = step - 1 - last_rows                                         # [U]
        rates = tf.reduce_sum(
            bias_correction(last_rows[:, None] + j) * tf.pow(ratio, j)
            * tf.cast(j <= missed[:, None], dtype), axis=1)                   # [U]
        per_row = [-1] + [1] * (len(variable.shape) - 1)  # [U] over a row's shape
        missed = tf.reshape(missed, per_row)
        catch_up = (lr * tf.reshape(rates, per_row)
                    * m_rows / (tf.sqrt(v_rows) + self.epsilon))
        m_rows = tf.pow(beta_1, missed + 1) * m_rows + (1 - beta_1) * g
        v_rows = tf.pow(beta_2, missed + 1) * v_rows + (1 - beta_2) * tf.square(g)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        last.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), step), rows))
        variable.scatter_sub(tf.IndexedSlices(
            catch_up + lr * bias_correction(step) * m_rows / (tf.sqrt(v_rows) + self.epsilon),
            rows))


def make_optimizer(hparams: HParams, sparse_updates: bool = False
                   ) -> keras.optimizers.Optimizer:
    """The optimizer ``hparams.optimizer`` at ``hparams.learning_rate``; with
    ``sparse_updates`` (``HParams.sparse_updates``), ``adam`` is :class:`LazyAdam`."""
    lr = hparams.learning_rate
    if sparse_updates and hparams.optimizer == "adam":
        return LazyAdam(lr)
    return {
        "adagrad": lambda: keras.optimizers.Adagrad(lr),
        "adam": lambda: keras.optimizers.Adam(lr),
        "lazy_adam": lambda: LazyAdam(lr),
        "sgd": lambda: keras.optimizers.SGD(lr),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr),
    }[hparams.optimizer]()


def learning_rate_callback(hparams: HParams, epochs: int
                           ) -> Optional[keras.callbacks.Callback]:
    """The callback that sets each epoch's learning rate (None for a constant one).

    ``"cosine"``: epoch ``e`` of ``epochs`` trains at
    ``learning_rate * (1 + cos(pi * e / epochs)) / 2`` -- the full rate first, then
    smaller steps, which settle the evaluation figures that a constant Adam rate leaves
    fluctuating from epoch to epoch.
    """
    if hparams.learning_rate_schedule == "constant":
        return None
    epochs = max(int(epochs), 1)

    def rate(epoch, _current=None):
        return float(hparams.learning_rate * 0.5 * (1.0 + np.cos(np.pi * epoch / epochs)))

    return keras.callbacks.LearningRateScheduler(rate)
