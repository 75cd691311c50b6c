"""MovieLensExampleGen's spec: its parameters and outputs.

Outputs:
  sequence_examples: Examples, splits train/eval. One tf.Example per next-movie label:
    context_movie_id/rating/year/genre (padded lists), label_movie_id, user_id, timestamp.
  rating_examples: Examples, splits train/eval. One tf.Example per valid rating:
    user_id, movie_id, movie_title, movie_genres, movie_year, user_rating, timestamp
    (+ user_age, user_gender, user_occupation, user_zip_code where the layout has users).
  vocabulary: movies.tsv (by kept-rating count, with titles, years, genres), genres.txt,
    years.txt, users.tsv.
  statistics: statistics.json (lines read, ratings kept, dropped by reason with samples,
    users, users skipped, examples per split).
"""

from typing import Optional

from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx import types
from tfx.types import artifact, component_spec, standard_artifacts

from components import contract
from components.example_gen import executor
from components.example_gen import config as config_lib
from components.example_gen.config import ExampleGenConfig


# The artifact types' names are their import paths: a compiled Kubeflow v2 / Vertex
# pipeline carries a custom type as its TYPE_NAME alone (KFP's schema title,
# <namespace>.<Name>), and TFX's container entry point imports that path to rebuild the
# artifact. components/__init__.py makes both classes attributes of ``components``.


class MovieLensVocabulary(artifact.Artifact):
    """Vocabulary files of one example generation run (see the module docstring)."""

    TYPE_NAME = "components.MovieLensVocabulary"


class ExampleGenStatistics(artifact.Artifact):
    """statistics.json of one example generation run."""

    TYPE_NAME = "components.ExampleGenStatistics"


class MovieLensExampleGenSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        config_lib.DATA_DIR: component_spec.ExecutionParameter(type=str),
        # Changes with the data's content, so that the cache reruns only on new data.
        config_lib.INPUT_FINGERPRINT: component_spec.ExecutionParameter(type=str, optional=True),
        # ExampleGenConfig as JSON: the one definition of example generation's settings.
        config_lib.CONFIG: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {}
    OUTPUTS = {
        contract.SEQUENCE_EXAMPLES: component_spec.ChannelParameter(
            type=standard_artifacts.Examples),
        contract.RATING_EXAMPLES: component_spec.ChannelParameter(
            type=standard_artifacts.Examples),
        contract.VOCABULARY: component_spec.ChannelParameter(type=MovieLensVocabulary),
        contract.STATISTICS: component_spec.ChannelParameter(type=ExampleGenStatistics),
    }


class MovieLensExampleGen(base_beam_component.BaseBeamComponent):
    """Reads a MovieLens directory and writes the examples every model trains on.

    ``config`` (:class:`ExampleGenConfig`, validated when it is built) says how; see its
    fields. Fails when more than ``config.max_bad_fraction`` of the rating lines are
    unusable; below that, every dropped line is counted by reason.
    """

    SPEC_CLASS = MovieLensExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, data_dir: str, config: Optional[ExampleGenConfig] = None,
                 input_fingerprint: Optional[str] = None):
        spec = MovieLensExampleGenSpec(
            data_dir=data_dir,
            input_fingerprint=input_fingerprint,
            config=(config or ExampleGenConfig()).to_json(),
            sequence_examples=types.Channel(type=standard_artifacts.Examples),
            rating_examples=types.Channel(type=standard_artifacts.Examples),
            vocabulary=types.Channel(type=MovieLensVocabulary),
            statistics=types.Channel(type=ExampleGenStatistics),
        )
        super().__init__(spec=spec)
