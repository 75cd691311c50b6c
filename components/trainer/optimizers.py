"""The Trainer's optimizers: Keras' own, and :class:`LazyAdam` for large embedding tables.

Keras' Adam applies a sparse gradient (an embedding lookup's ``IndexedSlices``) densely:
every step decays both moment slots of every row of the table and moves every row. Its
cost per step grows with the table (users x dimension), not with the batch.
:class:`LazyAdam` (after TensorFlow Addons') updates only the rows the batch looked up;
dense gradients take Adam's own step. An L2 penalty on a whole table makes its gradient
dense again, so the benefit needs ``l2_regularization`` 0 (or a penalty on the looked-up
rows only). Step costs with each: benchmarks/README.md, "The pipeline at scale".
"""

from __future__ import annotations

import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import tensorflow as tf

from components.trainer.hparams import HParams

keras = tf.keras  # tf_keras (Keras 2) under TF_USE_LEGACY_KERAS=1


class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse updates touch only the looked-up rows.

    For a gradient ``IndexedSlices(values [N, D], indices [N])`` on a table ``[R, D]``:
    the rows' gradients are summed per distinct index (``g [U, D]``), then only those
    ``U`` rows of ``m``, ``v`` and the table change, by Adam's rule (bias-corrected step
    ``lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)``). A row's moments decay only on the
    steps that look it up, so they differ from Adam's for rows that miss steps.
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        slot = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[slot], self._velocities[slot]
        rows, position = tf.unique(gradient.indices)
        g = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * g
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(g)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def make_optimizer(hparams: HParams) -> keras.optimizers.Optimizer:
    """The optimizer ``hparams.optimizer`` at ``hparams.learning_rate``."""
    lr = hparams.learning_rate
    return {
        "adagrad": lambda: keras.optimizers.Adagrad(lr),
        "adam": lambda: keras.optimizers.Adam(lr),
        "lazy_adam": lambda: LazyAdam(lr),
        "sgd": lambda: keras.optimizers.SGD(lr),
        "rmsprop": lambda: keras.optimizers.RMSprop(lr),
    }[hparams.optimizer]()
