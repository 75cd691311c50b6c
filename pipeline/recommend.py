"""``pipeline_runner.py recommend``: top-k movies from the latest pushed model.

  python pipeline_runner.py recommend --user 42 -k 10              # retrieval model
  python pipeline_runner.py recommend --history 1,50,172 -k 10     # sequential model
  python pipeline_runner.py recommend --user 42 -k 10 --two-stage  # retrieval + ranking

Loads ``<serving_root>/<model>[_scann]/<latest version>/`` (see
components/pusher/serving.py), leaves out the movies the user rated (``rated.npz``) or
the history's movies unless ``--include-rated``, and prints rank, score, title and id.
``--two-stage`` reads ``<serving_root>/two_stage[_scann]/`` (components/two_stage): the
retrieval model's candidates re-ranked by the ranking model, and prints both scores.
A user or movie the model does not know is a clear error, or with ``--fallback popular``
gets the most-rated movies (the user's rated movies still left out). The serving root
may be local or on ``gs://`` (files are read through components/pusher/serving.py's
``fileio`` helpers, the model by TensorFlow).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Dict, List, Optional, Sequence, TextIO

import numpy as np

from components import contract

SCANN, BRUTE_FORCE = contract.SCANN, contract.BRUTE_FORCE
FALLBACKS = ("error", "popular")


class RecommendError(Exception):
    """A request that cannot be served (no model, unknown user or movie)."""


@dataclasses.dataclass(frozen=True)
class Recommendation:
    movie_id: int
    title: str
    score: float  # the order: the retrieval score, or the two-stage model's ranking score
    retrieval_score: Optional[float] = None  # the two-stage model's first-stage score


@dataclasses.dataclass
class Catalogue:
    """A pushed model's assets.extra: the movies (most rated first), the users and their
    rated movies."""

    movie_ids: np.ndarray
    counts: np.ndarray
    titles: Dict[int, str]
    users: Optional[set]
    rated: object  # components.pusher.serving.RatedMovies, or None

    @classmethod
    def load(cls, model_dir: str) -> "Catalogue":
        from components.pusher import publishing, serving  # pylint: disable=import-outside-toplevel
        from tfx.dsl.io import fileio  # pylint: disable=import-outside-toplevel

        extra = os.path.join(model_dir, contract.EXTRA_ASSETS)
        movies = serving.read_movies(os.path.join(extra, contract.MOVIES_FILE))
        users = None
        users_file = os.path.join(extra, contract.USERS_FILE)
        if fileio.exists(users_file):
            users = {int(line.split("\t")[0]) for line
                     in publishing.read_text(users_file).splitlines() if line.strip()}
        return cls(np.asarray([m for m, _, _ in movies], np.int64),
                   np.asarray([c for _, c, _ in movies], np.int64),
                   {m: title for m, _, title in movies}, users,
                   serving.RatedMovies.of_model(model_dir))

    def rated_by(self, user: int) -> List[int]:
        return [] if self.rated is None else self.rated.movies(user).tolist()

    def recent_history(self, user: int) -> List[int]:
        """The user's most recent movies, oldest first (serving.RatedMovies.recent)."""
        return [] if self.rated is None else self.rated.recent(user).tolist()

    def popular(self, k: int, exclude: Sequence[int] = ()) -> List[Recommendation]:
        """The k most-rated movies not in ``exclude``; the score is the rating count."""
        excluded = set(int(m) for m in exclude)
        order = np.argsort(-self.counts, kind="stable")
        chosen = [row for row in order if int(self.movie_ids[row]) not in excluded][:k]
        return [Recommendation(int(self.movie_ids[r]), self.titles[int(self.movie_ids[r])],
                               float(self.counts[r])) for r in chosen]


def model_dir(serving_root: str, model_name: str, variant: str = SCANN) -> str:
    """The latest loadable version of ``model_name``'s variant; RecommendError if none."""
    from components.pusher import publishing, serving  # pylint: disable=import-outside-toplevel

    base = serving.variant_base(serving_root, model_name, variant)
    latest = publishing.latest_version_dir(base)
    if latest is None:
        raise RecommendError(
            f"no pushed {model_name!r} model under {base} (run the pipeline first; only "
            f"models the Evaluator blessed are pushed)")
    return latest


def check_k(k: int, max_k: Optional[int] = None, model_name: str = "") -> None:
    """RecommendError unless 1 <= k (<= max_k, the largest k the pushed model serves).

    Checked before any answer, the popularity fallback's included: the served model
    would silently clip k, and a slice would turn -1 into "all but one".
    """
    if k < 1 or (max_k is not None and k > int(max_k)):
        limits = "at least 1" if max_k is None else (
            f"between 1 and {int(max_k)} (the most the pushed {model_name} model serves)")
        raise RecommendError(f"-k must be {limits}, not {k}")


def load_model(path: str, variant: str):
    if variant == SCANN:
        importlib.import_module("scann")  # registers the ScaNN ops before loading
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return tf.saved_model.load(path)


def _input_names(info: Dict, timestamp: Optional[int], model_name: str) -> List[str]:
    """The served model's query inputs, plus the query time when ``--timestamp`` is given
    (its ``recommend_at_time`` signature; a model that reads no time has none)."""
    if timestamp is None:
        return list(info["inputs"])
    if contract.QUERY_TIME_SIGNATURE not in info.get("signatures", ()):
        raise RecommendError(f"the pushed {model_name} model reads no query time: leave "
                             f"out --timestamp")
    return [*info["inputs"], contract.TIMESTAMP]


def query(model, inputs: Dict[str, np.ndarray], k: int,
          exclude: Sequence[int] = ()) -> List[Recommendation]:
    """Calls the served model for one query; drops -inf (padding) results. With a
    ``timestamp`` among ``inputs``, its ``recommend_at_time`` signature."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    feeds = {name: tf.constant(value) for name, value in inputs.items()}
    feeds[contract.K_INPUT] = tf.constant(k, tf.int32)
    if contract.TIMESTAMP in inputs:
        feeds[contract.EXCLUDE_INPUT] = tf.constant(
            [list(exclude) or [contract.PAD_MOVIE_ID]], tf.int64)
        output = model.signatures[contract.QUERY_TIME_SIGNATURE](**feeds)
    elif len(exclude):
        feeds[contract.EXCLUDE_INPUT] = tf.constant([list(exclude)], tf.int64)
        output = model.signatures[contract.EXCLUDING_SIGNATURE](**feeds)
    else:
        output = model.signatures[contract.RECOMMEND_SIGNATURE](**feeds)
    two_stage = contract.RANKING_SCORES_OUTPUT in output
    scores = output[contract.RANKING_SCORES_OUTPUT if two_stage else contract.SCORES].numpy()[0]
    first = (output[contract.RETRIEVAL_SCORES_OUTPUT].numpy()[0] if two_stage
             else [None] * len(scores))
    ids = output[contract.MOVIE_IDS_OUTPUT].numpy()[0]
    titles = output[contract.TITLES_OUTPUT].numpy()[0]
    return [Recommendation(int(m), t.decode("utf-8"), float(s),
                           None if r is None else float(r))
            for m, t, s, r in zip(ids, titles, scores, first) if np.isfinite(s)]


def recommend(serving_root: str, k: int = 10, user: Optional[int] = None,
              history: Optional[Sequence[int]] = None, model_name: Optional[str] = None,
              variant: str = SCANN, include_rated: bool = False, fallback: str = "error",
              timestamp: Optional[int] = None, loaded: Optional[Dict[str, object]] = None,
              two_stage: bool = False):
    """(model directory, recommendations, notes) for a user or a watch history.

    ``two_stage``: from the two-stage model (a user only): it leaves out the user's
    rated movies itself, and reads no timestamp (its own: the user's latest rating).

    ``timestamp``: the query time, for models that read one (default: the user's latest
    rating in the data, so a historical data set is queried within its own time span).
    ``loaded``: models already loaded, by directory (filled here): several queries of one
    model load it once."""
    if (user is None) == (history is None):
        raise RecommendError("give either --user or --history")
    if fallback not in FALLBACKS:
        raise RecommendError(f"--fallback must be one of {FALLBACKS}")
    check_k(k)  # before looking for a model: a usage error whatever is pushed
    for name, value in (("--user", user), ("--timestamp", timestamp)):
        if value is not None and not -(1 << 63) <= int(value) < (1 << 63):
            raise RecommendError(f"{name} {value} is beyond a 64-bit integer")
    if two_stage:
        if user is None:
            raise RecommendError("--two-stage recommends for a --user (its retrieval stage "
                                 "takes a user id, not a history)")
        if model_name not in (None, contract.TWO_STAGE):
            raise RecommendError("--two-stage reads the two-stage model: leave out --model")
        if timestamp is not None:
            raise RecommendError("--two-stage queries at the user's latest rating: leave "
                                 "out --timestamp")
        model_name = contract.TWO_STAGE
    model_name = model_name or (contract.RETRIEVAL if user is not None else contract.SEQUENTIAL)
    from components.pusher import serving  # pylint: disable=import-outside-toplevel  (TF)

    path = model_dir(serving_root, model_name, variant)
    check_k(k, serving.read_serving_info(path).get("max_k"), model_name)
    catalogue = Catalogue.load(path)
    notes: List[str] = []
    if user is not None:
        seen = [] if include_rated else catalogue.rated_by(user)
        if catalogue.users is not None and int(user) not in catalogue.users:
            if fallback != "popular":
                raise RecommendError(
                    f"user {user} is unknown to the {model_name} model "
                    f"({len(catalogue.users)} known users); --fallback popular gives the "
                    f"most-rated movies instead")
            notes.append(f"user {user} is unknown: the most-rated movies instead")
            return path, catalogue.popular(k, seen), notes
        inputs = serving.query_inputs(
            _input_names(serving.read_serving_info(path), timestamp, model_name),
            users=[int(user)], rated=catalogue.rated,
            timestamps=None if timestamp is None else [timestamp])
        if seen:
            notes.append(f"leaving out the {len(seen)} movies user {user} rated")
        if two_stage:  # the model leaves the rated movies out itself (serving_default);
            # with --include-rated, recommend_excluding with nothing to leave out
            seen = [contract.PAD_MOVIE_ID] if include_rated else []
    else:
        history = [int(m) for m in history]
        unknown = [m for m in history if m not in catalogue.titles]
        known = [m for m in history if m in catalogue.titles]
        seen = [] if include_rated else known
        if unknown:
            if fallback != "popular":
                raise RecommendError(
                    f"movie ids {unknown} are not in the {model_name} model's catalogue "
                    f"({len(catalogue.titles)} movies); --fallback popular ignores them")
            notes.append(f"ignoring unknown movie ids {unknown}")
        if not known:
            notes.append("no known movie in the history: the most-rated movies instead")
            return path, catalogue.popular(k, seen), notes
        info = serving.read_serving_info(path)
        # The model read histories of at most this many movies (the example generator's
        # padded context length); older movies are left out, as in training.
        length = int(info[contract.MAX_CONTEXT_LENGTH])
        inputs = serving.query_inputs(
            _input_names(info, timestamp, model_name), histories=[known[-length:]],
            timestamps=None if timestamp is None else [timestamp])
        if seen:
            notes.append(f"leaving out the {len(seen)} movies of the history")
    loaded = {} if loaded is None else loaded
    if path not in loaded:
        loaded[path] = load_model(path, variant)
    return path, query(loaded[path], inputs, k, seen), notes


def print_recommendations(path: str, recommendations: List[Recommendation],
                          notes: Sequence[str], stream: Optional[TextIO] = None) -> None:
    stream = stream or sys.stdout
    version, base = os.path.basename(path), os.path.basename(os.path.dirname(path))
    print(f"{base} version {version} ({path})", file=stream)
    for note in notes:
        print(f"  ({note})", file=stream)
    width = max([len(r.title) for r in recommendations] + [5])
    two_stage = any(r.retrieval_score is not None for r in recommendations)
    scores = f"{'ranking':>8}  {'retrieval':>9}" if two_stage else f"{'score':>8}"
    print(f"  {'#':>3}  {scores}  {'title':<{width}}  movie id", file=stream)
    for rank, item in enumerate(recommendations, start=1):
        scores = (f"{item.score:>8.4f}  {item.retrieval_score:>9.4f}" if two_stage
                  else f"{item.score:>8.4f}")
        print(f"  {rank:>3}  {scores}  {item.title:<{width}}  {item.movie_id}",
              file=stream)


def parse_history(text: str) -> List[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise RecommendError(f"--history must be comma-separated movie ids, not {text!r}") \
            from None


def main(args) -> int:
    """The subcommand (args from pipeline_runner's ``recommend`` parser)."""
    serving_root = args.serving_root or os.path.join(args.output_root, "serving")
    try:
        history = parse_history(args.history) if args.history is not None else None
        path, items, notes = recommend(
            serving_root, args.k, user=args.user, history=history, model_name=args.model,
            variant=args.variant, include_rated=args.include_rated, fallback=args.fallback,
            timestamp=args.timestamp, two_stage=args.two_stage)
    except RecommendError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_recommendations(path, items, notes)
    return 0
