"""Example generation as one plain function, :func:`generate`, and the Beam pipeline it runs.

The executor, ``check-data``, the tests and the benchmarks all call :func:`generate`; only
how the ``beam.Pipeline`` is made differs (TFX's configured runner, or options given).

The pipeline (:func:`build_pipeline`) runs on whatever Beam runner it is given. Its shape:

  ratings file --RatingBlocksSource--> blocks --ParseBlocksFn--> (user, events) | summary
  (user, events) --GroupByKey--> UserExamplesFn --> framed TFRecords per kind and split
  --> gzipped TFRecords under <output>/Split-train/ and Split-eval/
  summary pairs of both DoFns (counts, dropped lines, movie and user counts, per-user
  counts by day / movie / activity) --one combine (summary.py)--> statistics,
  movies.tsv, users.tsv, distributions.json

Every file, in the pipeline and after it (statistics, vocabulary text files), is reached
through Beam's ``FileSystems``, like the workers' reads in data/movielens.py: the data
directory and the outputs may be local or on an object store (``gs://`` on Vertex).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components import contract
from components.example_gen import parsing, records, summary, transforms, vocabularies
from components.example_gen.config import ExampleGenConfig
from data import movielens, rating_lines

STATISTICS_FILE = contract.STATISTICS_FILE


class BadInputError(movielens.DataFormatError):
    """More rating lines were unusable than ``max_bad_fraction`` allows."""


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    """Where each output goes: artifact URIs (directories)."""

    sequence_examples: str
    rating_examples: str
    vocabulary: str
    statistics: str

    @classmethod
    def under(cls, root: str) -> "OutputPaths":
        """Each output in its own directory under ``root`` (named by its output key)."""
        return cls(**{field.name: FileSystems.join(root, field.name)
                      for field in dataclasses.fields(cls)})


def build_pipeline(
    pipeline: beam.Pipeline,
    layout: movielens.Layout,
    config: ExampleGenConfig,
    paths: OutputPaths,
    block_size: int = parsing.DEFAULT_BLOCK_SIZE,
    max_timestamp: Optional[int] = None,
) -> None:
    """Adds the whole example generation to ``pipeline`` (see the module docstring).

    ``max_timestamp``: ratings later than this are dropped as ``future_timestamp``
    (default: now plus a day, data/rating_lines.py), fixed here for every worker.
    """
    if max_timestamp is None:
        max_timestamp = rating_lines.future_bound()
    blocks = pipeline | "ReadRatingBlocks" >> beam.io.Read(
        parsing.RatingBlocksSource(str(layout.ratings_path), block_size))
    parse = parsing.ParseBlocksFn(layout, max_timestamp)
    parsed = blocks | "ParseRatings" >> beam.ParDo(parse).with_outputs(
        parse.SUMMARY, main="events")

    cutoffs = None
    if transforms.SPLIT_TEMPORAL in (config.split_strategy_of(transforms.SEQUENCE),
                                     config.split_strategy_of(transforms.RATING)):
        # 1,001 boundaries: the cutoff lands within 0.1% of the requested fraction.
        # Module-level functions only: a lambda here would make every Beam worker import
        # this module, and with it TFX and TensorFlow.
        def cutoff_of(kind, fraction, kept_only):
            return (parsed.events
                    | f"{kind}Timestamps" >> beam.FlatMap(
                        transforms.event_timestamps, config, kept_only)
                    | f"{kind}Quantiles" >> beam.ApproximateQuantiles.Globally(1001)
                    | f"{kind}Cutoff" >> beam.Map(transforms.cutoff_entry, kind, fraction))
        cutoffs = beam.pvalue.AsDict(
            (cutoff_of(transforms.SEQUENCE, config.train_fraction, True),
             cutoff_of(transforms.RATING, config.rating_train_fraction, False))
            | "FlattenCutoffs" >> beam.Flatten())

    examples_fn = transforms.UserExamplesFn(layout, config)
    examples = (parsed.events
                | "GroupByUser" >> beam.GroupByKey()
                | "UserExamples" >> beam.ParDo(examples_fn, cutoffs=cutoffs).with_outputs(
                    examples_fn.SUMMARY, *examples_fn.OUTPUTS))
    for kind, uri in ((transforms.SEQUENCE, paths.sequence_examples),
                      (transforms.RATING, paths.rating_examples)):
        for split in transforms.SPLITS:
            _ = examples[f"{kind}_{split}"] | f"Write-{kind}-{split}" >> (
                records.WriteFramedTFRecords(
                    FileSystems.join(uri, f"Split-{split}", "data_tfrecord")))

    # Statistics, vocabularies and distributions: one combine of catalogue-sized sums,
    # one (user, count) per user and a few dropped lines per reason (summary.py).
    _ = ((parsed[parse.SUMMARY], examples[examples_fn.SUMMARY])
         | "FlattenSummaries" >> beam.Flatten()
         | "Summarize" >> beam.CombineGlobally(summary.SummaryFn())
         | "WriteSummary" >> beam.Map(summary.write_summary, layout, paths.vocabulary,
                                      paths.statistics, max_timestamp))


def write_statistics(layout: movielens.Layout, statistics_dir: str) -> Dict[str, Any]:
    """Turns the pipeline's raw counts into statistics.json and returns them.

    ``kept`` is the number of valid ratings after every policy, one rating example each;
    ``ratings_below_min_rating`` of them stay out of the timelines (they are still
    rating examples). Every rating line read is either kept or dropped with one reason,
    so ``lines_read == kept + dropped_total``: a RuntimeError if not (a bug, not bad data).
    """
    raw_path = FileSystems.join(statistics_dir, summary.RAW_STATISTICS)
    with FileSystems.open(raw_path) as handle:
        raw = json.loads(handle.read())
    counts: Dict[str, int] = raw["counts"]
    lines_read = counts.get("lines_read", 0)  # a CSV header is not counted
    kept = counts.get("kept", 0)
    dropped = {reason: counts.get(f"dropped_{reason}", 0) for reason in movielens.DROP_REASONS}
    line_numbers = movielens.line_numbers_at(
        layout.ratings_path, (sample["position"] for sample in raw["bad_line_samples"]))
    samples: List[Dict[str, Any]] = [
        {"reason": sample["reason"], "file": str(layout.ratings_path),
         "line": line_numbers[sample["position"]], "text": sample["text"]}
        for sample in raw["bad_line_samples"]]
    bad = sum(dropped.values())
    below = counts.get("ratings_below_min_rating", 0)
    statistics = {
        "data_dir": str(layout.root),
        "layout": layout.name,
        "lines_read": lines_read,
        "kept": kept,
        "dropped": dropped,
        "dropped_total": bad,
        "bad_fraction": bad / lines_read if lines_read else 0.0,
        "ratings_below_min_rating": below,
        "ratings_in_timelines": kept - below,
        "max_timestamp": raw["max_timestamp"],
        "bad_line_samples": samples,
        "users": counts.get("users_with_kept_ratings", 0),
        "users_skipped_short": counts.get("users_skipped_short", 0),
        "users_without_profile": counts.get("users_without_profile", 0),
        "sequence_examples": {s: counts.get(f"sequence_examples_{s}", 0)
                              for s in transforms.SPLITS},
        "rating_examples": {s: counts.get(f"rating_examples_{s}", 0) for s in transforms.SPLITS},
    }
    records.write_text(FileSystems.join(statistics_dir, STATISTICS_FILE),
                json.dumps(statistics, indent=2))
    FileSystems.delete([raw_path])
    if lines_read != kept + bad or sum(statistics["rating_examples"].values()) != kept:
        raise RuntimeError(
            f"example generation's statistics do not add up: lines_read={lines_read}, "
            f"kept={kept}, dropped={bad}, rating examples={statistics['rating_examples']}")
    return statistics


def check_statistics(
    layout: movielens.Layout, statistics: Dict[str, Any], max_bad_fraction: float,
) -> None:
    """Raises DataFormatError for a ratings file without a single rating line, and
    BadInputError when more than ``max_bad_fraction`` of the lines were dropped (one
    line: how many, why, and sample lines as ``file:line``)."""
    if statistics["lines_read"] <= 0:
        raise movielens.DataFormatError(f"{layout.ratings_path}: no rating lines (empty file)")
    if statistics["bad_fraction"] > max_bad_fraction:
        samples = sorted(statistics["bad_line_samples"], key=lambda s: s["line"])
        located = "; ".join(
            f"{s['file']}:{s['line']}: {s['reason']}: {s['text']!r}" for s in samples)
        reasons = ", ".join(f"{r}={n}" for r, n in statistics["dropped"].items() if n)
        raise BadInputError(
            f"{statistics['dropped_total']} of {statistics['lines_read']} rating lines are "
            f"unusable ({reasons}), more than max_bad_fraction={max_bad_fraction} allows "
            f"(for example {located})")


def finish_statistics(
    layout: movielens.Layout, statistics_dir: str, max_bad_fraction: float,
) -> Dict[str, Any]:
    """:func:`write_statistics`, then :func:`check_statistics`; returns the statistics."""
    statistics = write_statistics(layout, statistics_dir)
    check_statistics(layout, statistics, max_bad_fraction)
    return statistics


def summary_line(statistics: Dict[str, Any]) -> str:
    """One human-readable line of what example generation did."""
    dropped = ", ".join(f"{r}={n}" for r, n in statistics["dropped"].items() if n) or "none"
    seq, rat = statistics["sequence_examples"], statistics["rating_examples"]
    # A statistics.json from before 'kept' (a cached artifact) called it 'ratings_valid'.
    kept = statistics.get("kept", statistics.get("ratings_valid"))
    return (f"read {statistics['lines_read']} rating lines, kept {kept}"
            f" (dropped: {dropped}); {statistics['ratings_below_min_rating']} of the kept are"
            f" below min_rating (rating examples only);"
            f" {statistics['users']} users ({statistics['users_skipped_short']} too short);"
            f" sequence examples train={seq['train']} eval={seq['eval']};"
            f" rating examples train={rat['train']} eval={rat['eval']}")


def write_feature_vocabularies(movies, config: ExampleGenConfig, vocabulary_dir: str) -> None:
    """genres.txt, years.txt and the sequence examples' padded lengths (what the Trainer,
    the Pusher and ``recommend`` read instead of assuming a length)."""
    genres, years = vocabularies.feature_vocabularies(movies)
    for name, values in ((contract.GENRES_FILE, genres), (contract.YEARS_FILE, years)):
        records.write_text(FileSystems.join(vocabulary_dir, name),
                    "".join(f"{value}\n" for value in values))
    records.write_text(FileSystems.join(vocabulary_dir, contract.SEQUENCE_SHAPE_FILE),
                json.dumps(config.sequence_shape(), sort_keys=True))


def generate(
    data_dir: str,
    config: ExampleGenConfig,
    paths: OutputPaths,
    make_pipeline: Callable[[], beam.Pipeline] = beam.Pipeline,
    block_size: int = parsing.DEFAULT_BLOCK_SIZE,
    finish: bool = True,
    max_timestamp: Optional[int] = None,
) -> Optional[Dict[str, Any]]:
    """Reads the MovieLens directory ``data_dir`` and writes every output to ``paths``.

    ``make_pipeline()`` gives the ``beam.Pipeline`` to run on (default: Beam's default
    runner). ``max_timestamp``: later ratings are dropped as ``future_timestamp``
    (default: now plus a day). Returns the statistics (statistics.json), after enforcing
    ``config.max_bad_fraction``; with ``finish=False`` the raw counts are left for
    :func:`finish_statistics` and None is returned.

    Raises movielens.DataFormatError for unreadable catalogues or an empty ratings file,
    and BadInputError when too many rating lines are unusable.
    """
    layout = movielens.detect_layout(data_dir)
    # The catalogues first: a bad movie or user file fails fast with its file and line,
    # before any worker starts.
    movies = movielens.load_movies(layout)
    movielens.load_users(layout)
    [ratings_file] = FileSystems.match([str(layout.ratings_path)])[0].metadata_list
    if ratings_file.size_in_bytes == 0:
        raise movielens.DataFormatError(f"{layout.ratings_path}: empty ratings file")
    with make_pipeline() as pipeline:
        build_pipeline(pipeline, layout, config, paths, block_size, max_timestamp)
    write_feature_vocabularies(movies, config, paths.vocabulary)
    if not finish:
        return None
    return finish_statistics(layout, paths.statistics, config.max_bad_fraction)
