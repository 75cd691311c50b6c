"""Custom TFX components of the recommender pipeline."""
import os

# TFRS 0.7.7 needs Keras 2 (tf_keras). TensorFlow reads this variable at its first import,
# so every entry point (CLI, tests, Beam workers, Trainer modules) imports this package first.
os.environ["TF_USE_LEGACY_KERAS"] = "1"

# The custom artifact types, also as ``components.<Class>``: the names compiled Kubeflow v2
# / Vertex pipelines give them, which TFX's container entry point imports (see
# components/example_gen/component.py). Loaded on first use: importing this package must
# not import TensorFlow.
_ARTIFACT_TYPES = ("MovieLensVocabulary", "ExampleGenStatistics")


def __getattr__(name):
    if name in _ARTIFACT_TYPES:
        from components.example_gen import component  # pylint: disable=import-outside-toplevel

        return getattr(component, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
