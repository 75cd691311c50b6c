"""The example generator's small outputs from one global combine.

Statistics (counts and samples of dropped lines), the movie and user vocabularies and
distributions.json all come from catalogue-sized sums and lists over the pipeline's
elements. The two DoFns that see the data (``ParseBlocksFn``, ``UserExamplesFn``) each
emit them on one output as ``(tag, value)`` pairs; :class:`SummaryFn` combines the
flattened pairs once, and :func:`write_summary` writes the four files from the result.

Why one combine: each ``CombineGlobally`` or ``ToList`` adds nine transforms to a Beam
pipeline (the default for an empty input included), and five of them, with their
writes, were about a third of a small run's transforms, which is what a small run's
time goes to. What meets in one process is what met before: sums keyed by movie, day or
activity bin, one ``(user, count)`` per user, and at most ``BAD_LINE_SAMPLES`` lines per
reason, never the ratings themselves.

TensorFlow-free; module-level functions only (Beam workers import this module).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from components import contract
from components.example_gen import distributions, records, vocabularies
from data import movielens

# The tags of the (tag, value) pairs.
COUNTS = "counts"  # {name: count}: statistics (lines read, kept, dropped by reason, ...)
MOVIE_COUNTS = "movie_counts"  # {movie id: ratings in the timelines}
DISTRIBUTION = "distribution"  # distributions.user_counts's dict
USER_COUNTS = "user_counts"  # (user id, kept ratings), one per user
DROPPED = "dropped"  # a parsing.DroppedLine
_SUMMED = (COUNTS, MOVIE_COUNTS, DISTRIBUTION)

# How many bad lines of each reason the statistics quote: the first ones in the file.
BAD_LINE_SAMPLES = 5
RAW_STATISTICS = "raw_statistics.json"


def _add_counts(total: Dict, counts: Mapping) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def _keep_sample(samples: Dict[str, List[Any]], line) -> None:
    """Keeps the ``BAD_LINE_SAMPLES`` earliest lines (by byte position) of each reason."""
    kept = samples.setdefault(line.reason, [])
    kept.append(line)
    if len(kept) > BAD_LINE_SAMPLES:
        kept.sort(key=lambda sample: sample.position)
        del kept[BAD_LINE_SAMPLES:]


class SummaryFn(beam.CombineFn):
    """``(tag, value)`` pairs -> ``{tag: combined}``: the ``_SUMMED`` tags' dicts summed
    key by key, ``USER_COUNTS`` listed, ``DROPPED`` sampled per reason ({reason: lines})."""

    def create_accumulator(self) -> Dict[str, Any]:
        return {COUNTS: {}, MOVIE_COUNTS: {}, DISTRIBUTION: {}, USER_COUNTS: [], DROPPED: {}}

    def add_input(self, accumulator, element):
        tag, value = element
        if tag == USER_COUNTS:
            accumulator[USER_COUNTS].append(value)
        elif tag == DROPPED:
            _keep_sample(accumulator[DROPPED], value)
        else:
            _add_counts(accumulator[tag], value)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for tag in _SUMMED:
                _add_counts(merged[tag], accumulator[tag])
            merged[USER_COUNTS].extend(accumulator[USER_COUNTS])
            for lines in accumulator[DROPPED].values():
                for line in lines:
                    _keep_sample(merged[DROPPED], line)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def raw_statistics(summary: Mapping[str, Any], max_timestamp: int) -> str:
    """The statistics JSON written by the pipeline (before line numbers are resolved)."""
    samples = [line for lines in summary[DROPPED].values() for line in lines]
    return json.dumps({
        "counts": dict(sorted(summary[COUNTS].items())),
        "max_timestamp": max_timestamp,
        "bad_line_samples": [sample._asdict() for sample in sorted(
            samples, key=lambda s: (s.reason, s.position))],
    })


def write_summary(summary: Mapping[str, Any], layout: movielens.Layout, vocabulary_dir: str,
                  statistics_dir: str, max_timestamp: int) -> None:
    """Writes movies.tsv and users.tsv under ``vocabulary_dir``, distributions.json and
    the raw statistics under ``statistics_dir`` (newline-terminated, each whole)."""
    files = {
        FileSystems.join(vocabulary_dir, contract.MOVIES_FILE):
            vocabularies.movie_vocabulary_text(summary[MOVIE_COUNTS], layout),
        FileSystems.join(vocabulary_dir, contract.USERS_FILE):
            vocabularies.user_vocabulary_text(summary[USER_COUNTS]),
        FileSystems.join(statistics_dir, contract.DISTRIBUTIONS_FILE):
            distributions.distributions_json(summary[DISTRIBUTION]),
        FileSystems.join(statistics_dir, RAW_STATISTICS):
            raw_statistics(summary, max_timestamp),
    }
    for path, text in files.items():
        records.write_text(path, text + "\n")
