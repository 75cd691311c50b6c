"""Issue 11, "real data is dirty": every class of malformed or hostile input gives a counted
drop or one clear error, in the three layouts, through ``pipeline_runner.py check-data``.

Small synthetic data sets are doctored in temporary directories: rating lines the formats
forbid or that tripped the parsers, duplicate ratings, movies with awkward ids and titles,
structural faults (two layouts, CSV columns reordered or unknown, a user twice), and
unusable output directories. check-data runs the example generator's real Beam pipeline.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import shutil
import time

import pytest

import pipeline_runner
from components import vocabulary_files

FORMATS = ("100k", "1m", "csv")
SEP = {"100k": "\t", "1m": "::", "csv": ","}
RATINGS = {"100k": "u.data", "1m": "ratings.dat", "csv": "ratings.csv"}
MOVIES = {"100k": "u.item", "1m": "movies.dat", "csv": "movies.csv"}
USERS = {"100k": "u.user", "1m": "users.dat"}
SMALL = dict(users=20, movies=30, ratings=400, seed=11)
T = 978_300_760  # a plausible timestamp (2000-12-31)

BIG_MOVIE = 10 ** 13  # must be mapped, not used as an array index
TAB_MOVIE, TWO_YEARS_MOVIE, BREAK_MOVIE = 901, 902, 903
TITLES = {TAB_MOVIE: "Tab\tInside (1990)", TWO_YEARS_MOVIE: "Remake, The (1980) (2004)",
          BIG_MOVIE: "Huge Id (1995)", BREAK_MOVIE: "Back \\ slash\x0b (1991)"}
# A quoted CSV field may hold a line break; the line-based layouts cannot.
CSV_TITLES = {**TITLES, BREAK_MOVIE: "Line\nBreak \\ Backslash\r\n (1991)"}
EXACT_USER = 2 ** 53 + 1  # a float64 would round it to 2**53


def check(capsys, data_dir, *extra):
    """(exit status, the --json object, stdout, stderr) of one check-data run."""
    code = pipeline_runner.main(["check-data", "--data-dir", str(data_dir), "--json", *extra])
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    return code, result, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def rating(fmt, user, movie, stars, timestamp) -> str:
    stars = f"{stars:.1f}" if fmt == "csv" else str(stars)
    return SEP[fmt].join((str(user), str(movie), stars, str(timestamp)))


def add_movies(fmt, data_dir, titles):
    """Appends movies (id -> title) to the layout's movie file, genre Drama."""
    with open(data_dir / MOVIES[fmt], "ab") as handle:
        for movie_id, title in titles.items():
            if fmt == "100k":
                flags = ["0"] * 19
                flags[8] = "1"
                line = f"{movie_id}|{title}|01-Jan-1990||http://x|" + "|".join(flags) + "\n"
                handle.write(line.encode("latin-1"))
            elif fmt == "1m":
                handle.write(f"{movie_id}::{title}::Drama\n".encode("latin-1"))
            else:
                buffer = io.StringIO()
                csv.writer(buffer, lineterminator="\n").writerow([movie_id, title, "Drama"])
                handle.write(buffer.getvalue().encode("utf-8"))


def append_lines(path: pathlib.Path, lines):
    """Appends raw lines; returns the 1-based line number of each."""
    content = path.read_bytes()
    first = content.count(b"\n") + 1
    path.write_bytes(content + b"".join(
        (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines))
    return list(range(first, first + len(lines)))


@pytest.fixture
def small(synthetic_data, tmp_path):
    """A fresh, modifiable copy of a small synthetic data set of a layout."""
    def copy(fmt):
        target = tmp_path / f"data-{fmt}"
        shutil.copytree(synthetic_data(fmt, **SMALL), target)
        return target
    return copy


def dirty_lines(fmt):
    """(line, reason or None) of every rating-line class of the issue."""
    s = SEP[fmt]
    now = int(time.time())
    return [
        # Kept: exact big ids, awkward titles, and the latest of a duplicated pair.
        (rating(fmt, EXACT_USER, 1, 4, T), None),
        (rating(fmt, 101, BIG_MOVIE, 5, T), None),
        (rating(fmt, 102, TAB_MOVIE, 3, T), None),
        (rating(fmt, 102, TWO_YEARS_MOVIE, 4, T + 1), None),
        (rating(fmt, 102, BREAK_MOVIE, 4, T + 2), None),
        (rating(fmt, 103, 1, 2, T), "duplicate_rating"),   # rated again later: dropped
        (rating(fmt, 103, 2, 4, T + 50), None),
        (rating(fmt, 103, 1, 5, T + 100), None),           # the latest: kept
        (rating(fmt, 103, 3, 4, T + 200), None),
        (rating(fmt, 103, 4, 3, now - 3600), None),        # recent, not future
        # Values the formats forbid.
        (rating(fmt, 0, 1, 4, T), "invalid_id"),
        (rating(fmt, 104, 0, 4, T), "invalid_id"),         # 0 is the padding movie
        (rating(fmt, -5, 1, 4, T), "invalid_id"),
        (rating(fmt, "99999999999999999999", 1, 4, T), "invalid_id"),
        (rating(fmt, 104, "9" * 400, 4, T), "invalid_id"),
        (rating(fmt, 2 ** 63, 1, 4, T), "invalid_id"),
        (rating(fmt, 104, 1, 4, -1), "negative_timestamp"),
        (rating(fmt, 104, 2, 4, 99_999_999_999), "future_timestamp"),
        (rating(fmt, 104, 3, 4, 1_700_000_000_000), "future_timestamp"),  # milliseconds
        (rating(fmt, 104, 4, 4, "99999999999999999999"), "future_timestamp"),
        (rating(fmt, 104, 5, 4, now + 10 * 86400), "future_timestamp"),
        # What the old parsers accepted or turned into other values.
        (f"105{s}1\r3{s}{s}{T}", "non_numeric"),
        (rating(fmt, "1_0", 1, 4, T), "non_numeric"),
        (rating(fmt, "\uff11\uff12", 1, 4, T), "non_numeric"),
        (rating(fmt, " 7", 1, 4, T), "non_numeric"),
        (rating(fmt, 106, 10 ** 14, 4, T), "unknown_movie"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_rating_line_class_is_kept_or_dropped_with_its_reason(
        small, capsys, tmp_path, fmt):
    data = small(fmt)
    titles = CSV_TITLES if fmt == "csv" else TITLES
    add_movies(fmt, data, titles)
    cases = dirty_lines(fmt)
    numbers = append_lines(data / RATINGS[fmt], [line for line, _ in cases])
    out = tmp_path / "out"

    code, stats, stdout, err = check(capsys, data, "--max-bad-fraction", "0.5",
                                     "--output", str(out))
    assert code == 0, err
    expected = {}
    for _, reason in cases:
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    assert {r: n for r, n in stats["dropped"].items() if n} == expected
    original = SMALL["ratings"]
    assert stats["lines_read"] == original + len(cases)
    # The invariant: every line read is kept or dropped for one reason; one rating
    # example per kept rating.
    assert stats["lines_read"] == stats["kept"] + sum(stats["dropped"].values())
    assert stats["kept"] == original + sum(1 for _, reason in cases if reason is None)
    assert sum(stats["rating_examples"].values()) == stats["kept"]
    assert stats["passed"] is True and stats["error"] is None
    # Samples name the file and the line of dropped lines.
    path = str(data / RATINGS[fmt])
    located = {(s["line"], s["reason"]) for s in stats["bad_line_samples"]}
    assert all(s["file"] == path for s in stats["bad_line_samples"])
    assert located <= {(n, reason) for n, (_, reason) in zip(numbers, cases) if reason}
    assert {reason for _, reason in located} == set(expected)
    # (Up to five samples of each reason are kept, drawn at random: any of its lines.)
    assert any(f"{path}:{n}: invalid_id" in stdout
               for n, (_, reason) in zip(numbers, cases) if reason == "invalid_id")
    assert stdout.strip().splitlines()[-2] == "PASSED"

    written = _rating_examples(out)
    assert len(written) == stats["kept"]
    by_user = {}
    for example in written:
        by_user.setdefault(example["user_id"][0], []).append(example)
    assert [e["movie_id"][0] for e in by_user[EXACT_USER]] == [1]  # not rounded to 2**53
    assert [e["movie_id"][0] for e in by_user[101]] == [BIG_MOVIE]
    # Duplicates: the latest rating of (103, 1) only, and no sequence example whose label
    # movie is in its own context.
    ones = [e for e in by_user[103] if e["movie_id"][0] == 1]
    assert [(e["user_rating"][0], e["timestamp"][0]) for e in ones] == [(5.0, T + 100)]
    for example in _examples(out / "sequence_examples"):
        assert example["label_movie_id"][0] not in example["context_movie_id"]
    # Titles: a tab, a line break and a backslash survive movies.tsv; the year is the last.
    years = {e["movie_id"][0]: e["movie_year"][0] for e in written}
    assert years[TWO_YEARS_MOVIE] == 2004
    written_titles = {e["movie_id"][0]: e["movie_title"][0].decode() for e in written}
    assert all(written_titles[movie_id] == title for movie_id, title in titles.items())
    _assert_vocabulary_titles(out / "vocabulary", titles)


def _assert_vocabulary_titles(vocabulary: pathlib.Path, expected):
    """The Trainer's and the Pusher's readers get every title back exactly."""
    from components.pusher import serving
    from components.trainer import vocabulary as vocab_lib

    loaded = vocab_lib.load_vocabulary(str(vocabulary))
    by_id = dict(zip(loaded.movie_ids.tolist(), loaded.movie_titles))
    years = dict(zip(loaded.movie_ids.tolist(), loaded.movie_years.tolist()))
    served = serving.load_titles(str(vocabulary / "movies.tsv"))
    for movie_id, title in expected.items():
        assert by_id[movie_id] == title == served[movie_id]
    assert years[TWO_YEARS_MOVIE] == 2004
    assert len(loaded.movie_ids) == len(served) == SMALL["movies"] + len(expected)


def _examples(directory: pathlib.Path):
    from conftest import examples_to_dicts, read_tfrecords

    return examples_to_dicts(read_tfrecords(str(directory / "Split-*" / "*.gz")))


def _rating_examples(out: pathlib.Path):
    return _examples(out / "rating_examples")


def test_too_many_dropped_lines_fail_with_file_and_line(small, capsys):
    data = small("1m")
    [number] = append_lines(data / "ratings.dat", [rating("1m", 0, 1, 4, T)])
    code, stats, stdout, err = check(capsys, data)
    assert code == 1
    line = error_line(err)
    assert f"ratings.dat:{number}: invalid_id" in line and "--max-bad-fraction 0 " in line
    assert stats["passed"] is False and stats["dropped"]["invalid_id"] == 1
    assert stats["lines_read"] == stats["kept"] + 1
    assert stdout.strip().splitlines()[-2] == "FAILED"


# ---------------------------------------------------------------------------------------
# Structure: silently lost or misread data.


@pytest.mark.parametrize("other", ["ratings.dat", "ratings.csv"])
def test_two_layouts_in_one_directory_are_refused(small, capsys, other):
    data = small("100k")
    (data / other).write_bytes(b"1::1::5::978300760\n")
    code, stats, _, err = check(capsys, data)
    assert code == 1 and stats["passed"] is False
    line = error_line(err)
    assert "u.data" in line and other in line and "more than one MovieLens layout" in line


def test_csv_columns_are_read_by_header_name(small, capsys, tmp_path):
    data = small("csv")
    code, plain, _, _ = check(capsys, data)
    assert code == 0
    path = data / "ratings.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()]
    order = ["movieId", "timestamp", "userId", "rating"]
    index = [rows[0].index(name) for name in order]
    path.write_text("\n".join(",".join(row[i] for i in index) for row in rows) + "\n")
    code, permuted, _, err = check(capsys, data)
    assert code == 0, err
    for key in ("lines_read", "kept", "dropped", "users", "sequence_examples",
                "rating_examples", "ratings_below_min_rating"):
        assert permuted[key] == plain[key], key


@pytest.mark.parametrize("header", [
    "user,movie,rating,timestamp", "userId,movieId,rating", "1,2,3.0,978300760",
    "userId,movieId,rating,timestamp,extra", "userId,userId,rating,timestamp"])
def test_csv_header_without_the_expected_columns_is_refused(small, capsys, header):
    data = small("csv")
    path = data / "ratings.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([header] + lines[1:]) + "\n")
    code, _, _, err = check(capsys, data)
    assert code == 1
    assert "ratings.csv:1: expected a header naming the columns" in error_line(err)


@pytest.mark.parametrize("fmt", ["100k", "1m"])
def test_a_user_twice_in_the_user_file_is_an_error_naming_both_lines(small, capsys, fmt):
    data = small(fmt)
    path = data / USERS[fmt]
    lines = path.read_text("latin-1").splitlines()
    path.write_text("\n".join(lines + [lines[2]]) + "\n", "latin-1")
    code, _, _, err = check(capsys, data)
    assert code == 1
    line = error_line(err)
    assert f"{USERS[fmt]}:{len(lines) + 1}: user id 3 appears twice (first on line 3)" in line


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_directory_named_like_a_data_file_is_named(small, capsys, fmt):
    data = small(fmt)
    (data / MOVIES[fmt]).unlink()
    (data / MOVIES[fmt]).mkdir()
    code, _, _, err = check(capsys, data)
    assert code == 1
    assert error_line(err) == f"error: {data / MOVIES[fmt]} is a directory, not a MovieLens file"


@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_catalogue_ids_are_errors_with_file_and_line(small, capsys, fmt):
    data = small(fmt)
    add_movies(fmt, data, {0: "Padding (1990)"})
    code, _, _, err = check(capsys, data)
    assert code == 1
    assert f"{MOVIES[fmt]}:{SMALL['movies'] + 2 - (fmt != 'csv')}: movie id 0 is not a " \
           "positive 64-bit integer" in error_line(err)


# ---------------------------------------------------------------------------------------
# Usage errors and output directories.


def test_usage_errors_exit_2_with_one_line(small, capsys, tmp_path):
    data = small("100k")
    for extra, message in (
            (["--max-bad-fraction", "2"], "--max-bad-fraction must be within [0, 1]"),
            (["--output", str(data)], "is not empty"),
            (["--output", str(data / "u.data")], "is a file, not a directory"),
            (["--output", "/proc/self/check"], "under /proc")):
        code, stats, _, err = check(capsys, data, *extra)
        assert code == 2 and stats["passed"] is False
        assert message in error_line(err)
    code, _, _, err = check(capsys, tmp_path / "absent")
    assert code == 2 and "does not exist or is not a directory" in error_line(err)
    (tmp_path / "empty").mkdir()
    code, _, _, err = check(capsys, tmp_path / "empty")
    assert code == 1 and "holds no MovieLens ratings file" in error_line(err)


@pytest.mark.parametrize("where, message", [
    ("a-file", "is a file, not a directory"),
    ("a-file/below", "cannot be written"),
    ("/proc/self/outputs", "under /proc"),
    ("/proc", "under /proc"),
    ("/sys/kernel/outputs", "under /sys"),
])
def test_unusable_output_root_is_one_clear_line(small, capsys, tmp_path, where, message):
    (tmp_path / "a-file").write_text("not a directory")
    root = where if where.startswith("/") else str(tmp_path / where)
    code = pipeline_runner.main(["run", "--data-dir", str(small("100k")),
                                 "--output-root", root])
    err = capsys.readouterr().err
    assert code == 2
    assert error_line(err).startswith(f"error: --output-root {root} ")
    assert message in error_line(err)


def test_unwritable_output_root(small, capsys, tmp_path, monkeypatch):
    """Permissions do not stop root, so the probe write is made to fail."""
    from pipeline import output_dirs

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(output_dirs.tempfile, "mkstemp", refuse)
    code = pipeline_runner.main(["run", "--data-dir", str(small("100k")),
                                 "--output-root", str(tmp_path / "out")])
    assert code == 2
    assert "cannot be written: Permission denied" in error_line(capsys.readouterr().err)


def test_vocabulary_fields_round_trip():
    fields = ["1", "0", "a\tb\nc\rd\\e\\tf\u2028g\x0bh\x85i", "1995", "Drama|Comedy"]
    line = vocabulary_files.encode_fields(fields)
    assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1
    assert line.count("\t") == 4
    assert vocabulary_files.decode_fields(line) == fields


@pytest.mark.parametrize("fault", ["dropped_line", "user_twice"])
def test_run_refuses_bad_data_in_one_line(small, capsys, tmp_path, fault):
    """The pipeline itself (not only check-data): the example generator's refusal is one
    line naming the file and line, exit status 1."""
    data = small("1m")
    if fault == "dropped_line":
        [number] = append_lines(data / "ratings.dat", [rating("1m", 0, 1, 4, T)])
        expected = f"ratings.dat:{number}: invalid_id"
    else:
        lines = (data / "users.dat").read_text("latin-1").splitlines()
        (data / "users.dat").write_text("\n".join(lines + [lines[0]]) + "\n", "latin-1")
        expected = f"users.dat:{len(lines) + 1}: user id 1 appears twice"
    code = pipeline_runner.main([
        "run", "--data-dir", str(data), "--output-root", str(tmp_path / "out"),
        "--epochs", "1", "--beam-arg=--direct_running_mode=in_memory"])
    assert code == 1
    assert expected in error_line(capsys.readouterr().err)
