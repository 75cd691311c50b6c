"""MovieLens access: download, local layouts, parsing and a synthetic generator."""
import os

# TFRS 0.7.7 needs Keras 2 (tf_keras). TensorFlow reads this variable at its first import,
# so every entry point (CLI, tests, Beam workers, Trainer modules) imports this package first.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
