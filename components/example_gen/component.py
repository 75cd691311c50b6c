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

from components.example_gen import executor


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
        "data_dir": component_spec.ExecutionParameter(type=str),
        # Changes with the data's content, so that the cache reruns only on new data.
        "input_fingerprint": component_spec.ExecutionParameter(type=str, optional=True),
        "min_rating": component_spec.ExecutionParameter(type=float, optional=True),
        "min_timeline_length": component_spec.ExecutionParameter(type=int),
        "max_context_length": component_spec.ExecutionParameter(type=int),
        "max_context_movie_genre_length": component_spec.ExecutionParameter(type=int),
        "split_strategy": component_spec.ExecutionParameter(type=str),
        "train_fraction": component_spec.ExecutionParameter(type=float),
        "rating_train_fraction": component_spec.ExecutionParameter(type=float),
        "seed": component_spec.ExecutionParameter(type=int),
        "max_bad_fraction": component_spec.ExecutionParameter(type=float),
    }
    INPUTS = {}
    OUTPUTS = {
        "sequence_examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "rating_examples": component_spec.ChannelParameter(type=standard_artifacts.Examples),
        "vocabulary": component_spec.ChannelParameter(type=MovieLensVocabulary),
        "statistics": component_spec.ChannelParameter(type=ExampleGenStatistics),
    }


class MovieLensExampleGen(base_beam_component.BaseBeamComponent):
    """Reads a MovieLens directory and writes the examples every model trains on.

    Defaults are the sequential tutorial's flags. ``min_rating=None`` keeps every rating.
    ``split_strategy``: ``random`` (per example, seeded hash), ``temporal`` (a global time
    cutoff at the train fraction; later events to eval) or ``leave_last_out`` (each user's
    last label / rating to eval). Fails when more than ``max_bad_fraction`` of the rating
    lines are unusable; below that, every dropped line is counted by reason.
    """

    SPEC_CLASS = MovieLensExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        data_dir: str,
        input_fingerprint: Optional[str] = None,
        min_rating: Optional[float] = 2,
        min_timeline_length: int = 3,
        max_context_length: int = 10,
        max_context_movie_genre_length: int = 10,
        split_strategy: str = "random",
        train_fraction: float = 0.9,
        rating_train_fraction: float = 0.8,
        seed: int = 42,
        max_bad_fraction: float = 0.0,
    ):
        executor.validate_parameters(
            split_strategy, train_fraction, rating_train_fraction, max_bad_fraction,
            min_timeline_length, max_context_length, max_context_movie_genre_length)
        spec = MovieLensExampleGenSpec(
            data_dir=data_dir,
            input_fingerprint=input_fingerprint,
            min_rating=None if min_rating is None else float(min_rating),
            min_timeline_length=min_timeline_length,
            max_context_length=max_context_length,
            max_context_movie_genre_length=max_context_movie_genre_length,
            split_strategy=split_strategy,
            train_fraction=train_fraction,
            rating_train_fraction=rating_train_fraction,
            seed=seed,
            max_bad_fraction=max_bad_fraction,
            sequence_examples=types.Channel(type=standard_artifacts.Examples),
            rating_examples=types.Channel(type=standard_artifacts.Examples),
            vocabulary=types.Channel(type=MovieLensVocabulary),
            statistics=types.Channel(type=ExampleGenStatistics),
        )
        super().__init__(spec=spec)
