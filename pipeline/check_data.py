"""``pipeline_runner.py check-data``: the example generator alone, and whether the data passes.

  python pipeline_runner.py check-data --data-dir DIR [--max-bad-fraction F] [--output DIR] [--json]

Runs the example generator -- ``generate.generate``, then ``generate.write_statistics``
and ``generate.check_statistics``, the very code a pipeline run executes -- into a temporary directory (kept only with ``--output``), and prints what
it found: lines read, kept, dropped by reason with ``file:line`` samples, users, examples
per split. So a user learns before training whether, and why, a data set would fail.

Exit status: 0 the data passes; 1 it does not (a file's structure is wrong, or more lines
were dropped than ``--max-bad-fraction`` allows); 2 a usage error (bad option values, a
``--data-dir`` that is no directory, an unusable ``--output``). Every error is one line on
stderr, ``error: ...`` (with the file and line where there is one); a traceback only with
``--verbose``. With ``--json`` the last line of stdout is one JSON object: the statistics
(``dropped`` maps each reason to its count), plus ``passed`` and ``error``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Dict, List, Optional

from pipeline import configs, options, output_dirs

PASSED, FAILED, USAGE = 0, 1, 2
# In-process Beam: fastest for the data sizes a check is run on; --beam-arg changes it.
DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory",)


class UsageError(ValueError):
    """A command-line value that cannot be used (exit status 2)."""


def add_parser(commands) -> argparse.ArgumentParser:
    """Adds the ``check-data`` subcommand to pipeline_runner's subparsers."""
    parser = commands.add_parser(
        "check-data", help="run example generation alone and report on the data",
        description=__doc__.split("\n\n", 2)[2].split("\n\nExit status")[0].strip())
    parser.add_argument("--data-dir", default=os.environ.get("MOVIELENS_DATA_DIR"),
                        help="an extracted MovieLens directory (default: $MOVIELENS_DATA_DIR)")
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="keep the examples, vocabularies and statistics in DIR (a new "
                             "or empty directory; default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true",
                        help="end stdout with one JSON object holding the statistics")
    parser.add_argument("--verbose", action="store_true", help="tracebacks on errors")
    group = parser.add_argument_group("example generation (as in run)")
    options.add_dataclass_options(group, configs.ExampleGenConfig)
    group.add_argument("--keep-all-ratings", action="store_const", const=None,
                       dest="min_rating", default=argparse.SUPPRESS,
                       help="no minimum rating (the same as --min-rating none)")
    parser.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                        help="a Beam pipeline option, repeatable (default: "
                             f"{' '.join(DEFAULT_BEAM_ARGS)})")
    return parser


def _example_gen_config(args) -> configs.ExampleGenConfig:
    """The settings given (the rest: ExampleGenConfig's defaults, as in ``run``)."""
    try:
        return options.build(configs.ExampleGenConfig,
                             options.given_values(args, configs.ExampleGenConfig),
                             what="example_gen setting")
    except ValueError as failure:
        raise UsageError(str(failure).replace("max_bad_fraction", "--max-bad-fraction")) \
            from None


def _output_dir(path: str) -> str:
    absolute = output_dirs.ensure_writable_dir(path, "--output")
    if [name for name in os.listdir(absolute) if not name.startswith(".write-probe-")]:
        # Old shards would mix with new ones; deleting what is there is not ours to do.
        raise output_dirs.UnusableDirectory(
            f"--output {path} is not empty; give a new or empty directory")
    return absolute


def run_check(data_dir: str, out_dir: str, config: configs.ExampleGenConfig,
              beam_args: List[str]) -> Dict[str, Any]:
    """Example generation of ``data_dir`` into ``out_dir``; its statistics.

    Raises DataFormatError / BadInputError (from the executor) when the data fails.
    """
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel

    from components.example_gen import generate  # pylint: disable=import-outside-toplevel
    from data import movielens  # pylint: disable=import-outside-toplevel

    layout = movielens.detect_layout(data_dir)
    paths = generate.OutputPaths.under(out_dir)
    generate.generate(data_dir, config, paths, finish=False, make_pipeline=lambda: (
        beam.Pipeline(options=PipelineOptions(list(beam_args)))))
    statistics = generate.write_statistics(layout, paths.statistics)
    try:
        generate.check_statistics(layout, statistics, config.max_bad_fraction)
    except (movielens.DataFormatError, generate.BadInputError) as error:
        error.statistics = statistics  # the report still shows what was found
        raise
    return statistics


def report(statistics: Dict[str, Any], max_bad_fraction: float) -> List[str]:
    """The human-readable lines of a check's statistics."""
    lines_read = statistics["lines_read"]
    lines = [f"{statistics['data_dir']} ({statistics['layout']} layout)",
             f"  lines read         {lines_read:>10,}",
             f"  kept               {statistics['kept']:>10,}  (one rating example each)",
             f"  dropped            {statistics['dropped_total']:>10,}  "
             f"({100 * statistics['bad_fraction']:.4g}% of lines; "
             f"--max-bad-fraction {max_bad_fraction:g} allows {100 * max_bad_fraction:.4g}%)"]
    bound = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(statistics["max_timestamp"]))
    notes = {"future_timestamp": f"  (later than {bound})"}
    lines += [f"    {reason:<22} {count:>8,}{notes.get(reason, '')}"
              for reason, count in statistics["dropped"].items() if count]
    lines += [
        f"  below min_rating   {statistics['ratings_below_min_rating']:>10,}  "
        "(of the kept: rating examples, not in the timelines)",
        f"  users              {statistics['users']:>10,}  ("
        f"{statistics['users_skipped_short']:,} too short for a sequence, "
        f"{statistics['users_without_profile']:,} without a profile)",
        "  sequence examples  " + "  ".join(
            f"{split}={n:,}" for split, n in statistics["sequence_examples"].items()),
        "  rating examples    " + "  ".join(
            f"{split}={n:,}" for split, n in statistics["rating_examples"].items())]
    samples = statistics["bad_line_samples"]
    if samples:
        lines.append("  dropped lines (up to 5 of each reason):")
        lines += [f"    {s['file']}:{s['line']}: {s['reason']}: {s['text']}"
                  for s in sorted(samples, key=lambda s: (s["line"], s["reason"]))]
    return lines


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def main(args) -> int:
    """The subcommand (args from :func:`add_parser`'s parser); returns the exit status."""
    if not args.verbose:
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
    statistics: Optional[Dict[str, Any]] = None
    error: Optional[str] = None
    status = PASSED
    try:
        config = _example_gen_config(args)
        status, statistics, error = _check(args, config)
    except (UsageError, output_dirs.UnusableDirectory) as failure:
        status, error = USAGE, _first_line(failure)
        if args.verbose:
            traceback.print_exc()
    if statistics is not None:
        print("\n".join(report(statistics, config.max_bad_fraction)))
    if status != USAGE:
        print("PASSED" if status == PASSED else "FAILED")
    if error:
        print(f"error: {error}", file=sys.stderr)
    if args.json:
        print(json.dumps({**(statistics or {"data_dir": args.data_dir, "dropped": {}}),
                          "passed": status == PASSED, "error": error}))
    return status


def _check(args, config: configs.ExampleGenConfig):
    """(status, statistics or None, error line or None) of one check."""
    from components.example_gen import generate  # pylint: disable=import-outside-toplevel
    from data import movielens  # pylint: disable=import-outside-toplevel

    if not args.data_dir:
        raise UsageError("no data: pass --data-dir (or set $MOVIELENS_DATA_DIR)")
    if not movielens.is_directory(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir} does not exist or is not a directory")
    beam_args = list(args.beam_arg or DEFAULT_BEAM_ARGS)
    output = _output_dir(args.output) if args.output else None
    with tempfile.TemporaryDirectory(prefix="check-data-") as scratch:
        try:
            return PASSED, run_check(args.data_dir, output or scratch, config, beam_args), None
        except (movielens.DataFormatError, generate.BadInputError) as failure:
            if args.verbose:
                traceback.print_exc()
            statistics = getattr(failure, "statistics", None)
            if not isinstance(failure, generate.BadInputError):
                return FAILED, statistics, _first_line(failure)
            first = min(statistics["bad_line_samples"], key=lambda s: s["line"])  # sampled
            reasons = ", ".join(f"{r}={n}" for r, n in statistics["dropped"].items() if n)
            return FAILED, statistics, (
                f"{statistics['dropped_total']} of {statistics['lines_read']} rating lines "
                f"were dropped ({reasons}), more than --max-bad-fraction "
                f"{config.max_bad_fraction:g} allows; for example {first['file']}:"
                f"{first['line']}: {first['reason']}")
        except Exception as failure:  # pylint: disable=broad-except
            if args.verbose:
                traceback.print_exc()
            return FAILED, None, (f"example generation failed: {type(failure).__name__}: "
                                  f"{_first_line(failure)} (--verbose shows the traceback)")
