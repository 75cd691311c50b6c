"""The TFX Trainer's model code, one concern per module.

* ``hparams``     every hyperparameter and each kind's tuned defaults (TensorFlow-free)
* ``vocabulary``  the example generator's vocabulary directory
* ``inputs``      parse specs and datasets over the gzipped TFRecords
* ``encoders``    movie side tables and time encodings
* ``towers``      user, movie and sequence towers
* ``tasks``       retrieval and rating losses and metrics
* ``sampling``    sampled softmax: training popularity and the shared negative pool
* ``models``      the four TFRS models, built from ``HParams``
* ``evaluation``  exact top-K over the catalogue (streamed), RMSE
* ``histories``   each user's movies as CSR arrays (evaluation exclusions, rated.npz)
* ``distribute``  the tf.distribute strategy, global batch and learning-rate scaling
* ``export``      the SavedModel's serving and Evaluator signatures
* ``run``         TFX's ``run_fn``; ``component`` the Trainer with a vocabulary input

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` (through :mod:`components`) before
TensorFlow loads, as TFRS 0.7.7 needs Keras 2 (``tf_keras``).
"""

import components  # noqa: F401
