"""The TFX Trainer's model code: the input pipeline and the TFRS models.

* :mod:`components.trainer.features` -- parse specs, ``make_dataset`` over the example
  generator's gzipped TFRecords, the vocabulary directory loader.
* :mod:`components.trainer.models` -- the hyperparameters (``HParams.from_dict`` of the
  Trainer's ``custom_config``), the retrieval, ranking, multitask and sequential models,
  their evaluation and export helpers.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` (through :mod:`components`) before
TensorFlow loads, as TFRS 0.7.7 needs Keras 2 (``tf_keras``).
"""

import components  # noqa: F401
