"""The two rating parsers agree on every line (components/example_gen/parsing.py).

``parse_block`` reads a clean block with numpy and anything else line by line with
``data.rating_lines.parse_line``. Whatever the block, each line must get the line
parser's answer: the same values, or the same reason for dropping it. Hypothesis feeds
both random well-formed lines and lines built to trip a float- or ``int()``-based parser:
ids beyond int64, 2^53 + 1, stray carriage returns, ``1_0``, full-width digits, signs,
blanks, wrong separators.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from components.example_gen import parsing
from data import movielens, rating_lines

MAX_TIMESTAMP = 2_000_000_000
BIG_IDS = (2 ** 53 + 1, 10 ** 13, 10 ** 17 + 3, 2 ** 63 - 1)
MOVIES = {movie_id: movielens.Movie(movie_id, f"Movie {movie_id} (1999)", 1999, ("Drama",))
          for movie_id in (*range(1, 40), *BIG_IDS)}
CATALOGUE = parsing.MovieCatalogue(MOVIES)
SEPARATOR = {"100k": "\t", "1m": "::", "csv": ","}

# Field texts a lenient parser gets wrong, and plain valid ones.
TRICKY_INTEGERS = [
    "0", "-1", "-0", "007", str(2 ** 53), str(2 ** 53 + 1), str(2 ** 63 - 1), str(2 ** 63),
    str(-2 ** 63), "99999999999999999999", "9" * 400, "1_0", "\uff11\uff12", "\u0661",
    "+5", " 5", "5 ", "", "1e3", "1.0", "0x1f", str(MAX_TIMESTAMP), str(MAX_TIMESTAMP + 1),
    "12\r3", "123456789012345678", "1234567890123456789", "10000000000000",
]
TRICKY_RATINGS = ["0", "6", "-3", "3.5", "3.0", "4.25", "3.", ".5", "nan", "inf", "1e0",
                  "\uff13", "3_0", " 3", "03", "05.0", "0.5", "5.0", "5.5", "", "3..0", "3.00"]
JUNK = "0123456789-_.+ \r\t:,e\uff11x"


def _integer(valid_values):
    return st.one_of(
        st.sampled_from(valid_values).map(str),
        st.integers(min_value=-10, max_value=10 ** 20).map(str),
        st.sampled_from(TRICKY_INTEGERS),
        st.text(JUNK, max_size=6),
    )


def _rating(fmt):
    valid = ["1", "2", "3", "4", "5"] + (["0.5", "1.5", "3.5", "4.0", "5.0"] if fmt == "csv"
                                          else [])
    return st.one_of(st.sampled_from(valid), st.sampled_from(TRICKY_RATINGS),
                     st.text(JUNK, max_size=4))


def _timestamp():
    return st.one_of(st.integers(min_value=0, max_value=MAX_TIMESTAMP).map(str),
                     _integer([0, 1, 881250949, MAX_TIMESTAMP]))


@st.composite
def rating_line(draw, fmt, columns):
    """Mostly well-formed lines (so that many blocks reach the numpy parser), some not."""
    movie_ids = list(MOVIES) + [0, 40, 10 ** 14]
    if draw(st.integers(0, 3)):  # well-formed in shape, values from the valid pools
        values = [str(draw(st.sampled_from(list(range(1, 50)) + list(BIG_IDS)))),
                  str(draw(st.sampled_from(movie_ids))),
                  draw(st.sampled_from(["1", "2", "3", "4", "5"] + (
                      ["0.5", "3.5", "4.0"] if fmt == "csv" else []))),
                  str(draw(st.integers(0, MAX_TIMESTAMP + 2)))]
        if draw(st.integers(0, 2)) == 0:  # one tricky field
            index = draw(st.integers(0, 3))
            values[index] = draw(_rating(fmt) if index == 2 else _integer(movie_ids))
    else:
        values = [draw(_integer(movie_ids)), draw(_integer(movie_ids)), draw(_rating(fmt)),
                  draw(_timestamp())]
    fields = [values[columns.index(k)] for k in range(4)]  # file order
    separator = SEPARATOR[fmt]
    shape = draw(st.integers(0, 9))
    if shape == 0:
        fields = fields[:draw(st.integers(0, 3))]
    elif shape == 1:
        fields.append(draw(st.text(JUNK, max_size=3)))
    elif shape == 2:
        separator = draw(st.sampled_from(["\t", "::", ",", ":", " "]))
    text = separator.join(fields)
    if shape == 3 and text:  # a stray carriage return somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + "\r" + text[at:]
    if draw(st.integers(0, 4)) == 0:
        text += "\r"
    raw = text.encode("utf-8")
    if draw(st.integers(0, 30)) == 0:
        raw += b"\xff"
    return raw


# Digit-only values: valid ones the numpy path reads (big, zero-padded, at the bounds),
# and odd ones: invalid, or valid but longer than it reads (19+ digits).
VALID_IDS = ["1", "007", "39", str(2 ** 53 + 1), "10000000000000", str(10 ** 17 + 3),
             "000000000000000001"]
VALID_TIMESTAMPS = ["0", "881250949", str(MAX_TIMESTAMP), "000000000000000001"]
ODD_DIGITS = ["0", "40", str(2 ** 63), "99999999999999999999", str(MAX_TIMESTAMP + 1),
              "1" * 19, "0000000000000000001", str(2 ** 63 - 1), "1.0", "5.5", "6", "4.2",
              "03", "10.0", "3.00", ""]


@st.composite
def digits_only_block(draw, fmt, columns):
    """Lines of ASCII digits, dots and separators only -- what the numpy parser examines
    closely -- all valid (big, zero-padded and boundary values) or with one bad field."""
    ratings = ["1", "3", "5", "3.0"] + (["0.5", "3.5", "5.0"] if fmt == "csv" else [])
    rows = draw(st.lists(st.tuples(
        st.sampled_from(VALID_IDS), st.sampled_from(VALID_IDS), st.sampled_from(ratings),
        st.sampled_from(VALID_TIMESTAMPS), st.booleans()), min_size=1, max_size=8))
    rows = [list(row) for row in rows]
    if draw(st.booleans()):
        row, field = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 3))
        rows[row][field] = draw(st.sampled_from(ODD_DIGITS))
    lines = []
    for *values, crlf in rows:
        text = SEPARATOR[fmt].join(values[columns.index(k)] for k in range(4))
        lines.append((text + ("\r" if crlf else "")).encode())
    return lines


@st.composite
def block(draw):
    fmt = draw(st.sampled_from(["100k", "1m", "csv"]))
    columns = (0, 1, 2, 3) if fmt != "csv" else tuple(draw(st.permutations([0, 1, 2, 3])))
    line_format = movielens.line_format(fmt, columns)
    if draw(st.booleans()):
        lines = draw(digits_only_block(fmt, columns))
    else:
        lines = draw(st.lists(rating_line(fmt, columns), min_size=1, max_size=8))
    # Without a final line break, a last empty line would not be a line at all.
    data = b"\n".join(lines) + (b"\n" if draw(st.booleans()) or not lines[-1] else b"")
    return line_format, lines, data


def expected_answers(line_format, lines, first):
    """What the line parser says of each line: (position, values or reason)."""
    answers, position = [], first
    for raw in lines:
        try:
            rating = rating_lines.parse_line(line_format, raw, MAX_TIMESTAMP)
            answer = (rating.user_id, rating.movie_id, np.float32(rating.rating),
                      rating.timestamp)
            if rating.movie_id not in MOVIES:
                answer = rating_lines.UNKNOWN_MOVIE
        except rating_lines.MalformedRecord as error:
            answer = error.reason
        answers.append((position, answer))
        position += len(raw) + 1
    return answers


def block_answers(parsed):
    answers = [(p, (u, m, r, t)) for u, m, r, t, p in zip(
        parsed.user.tolist(), parsed.events.movie.tolist(), parsed.events.rating.tolist(),
        parsed.events.timestamp.tolist(), parsed.events.position.tolist())]
    answers += [(line.position, line.reason) for line in parsed.dropped]
    return sorted(answers, key=lambda a: a[0])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(block())
def test_block_parser_agrees_with_line_parser(case):
    line_format, lines, data = case
    first = 1000
    parsed = parsing.parse_block(line_format, CATALOGUE, first, data, MAX_TIMESTAMP)
    expected = expected_answers(line_format, lines, first)
    assert parsed.lines == len(lines)
    assert block_answers(parsed) == [(p, a if isinstance(a, str) else (
        a[0], a[1], float(a[2]), a[3])) for p, a in expected]
    # The numpy path on its own: all or nothing, and only the line parser's values.
    clean = parsing._parse_clean_block(line_format, CATALOGUE, data, MAX_TIMESTAMP)
    event("numpy path" if clean is not None else "line parser")
    if clean is not None:
        assert all(not isinstance(answer, str) for _, answer in expected)
        assert [tuple(v) for v in zip(*(c.tolist() for c in clean))] == [
            (a[0], a[1], float(a[2]), a[3]) for _, a in expected]


def test_numpy_path_reads_clean_blocks_exactly():
    """The fast path is really taken for clean blocks (up to 18 digits per id), and big
    ids come out exact."""
    for fmt, columns in [("100k", (0, 1, 2, 3)), ("1m", (0, 1, 2, 3)), ("csv", (1, 0, 3, 2))]:
        line_format = movielens.line_format(fmt, columns)
        rows = [(2 ** 53 + 1, 2 ** 53 + 1, "5", 881250949), (7, 10 ** 13, "1", 0),
                (10 ** 18 - 1, 10 ** 17 + 3, "3", MAX_TIMESTAMP)]
        lines = []
        for row in rows:
            values = [str(v) for v in row]
            lines.append(SEPARATOR[fmt].join(values[columns.index(k)] for k in range(4)))
        data = ("\r\n".join(lines) + "\r\n").encode()
        clean = parsing._parse_clean_block(line_format, CATALOGUE, data, MAX_TIMESTAMP)
        assert clean is not None, fmt
        user, movie, rating, timestamp = (c.tolist() for c in clean)
        assert user == [2 ** 53 + 1, 7, 10 ** 18 - 1]
        assert movie == [2 ** 53 + 1, 10 ** 13, 10 ** 17 + 3]
        assert rating == [5.0, 1.0, 3.0] and timestamp == [881250949, 0, MAX_TIMESTAMP]


@pytest.mark.parametrize("raw, reason", [
    (b"99999999999999999999\t1\t3\t881250949", rating_lines.INVALID_ID),
    (b"1\t" + b"9" * 400 + b"\t3\t881250949", rating_lines.INVALID_ID),
    (b"1\t1\t3\t99999999999999999999", rating_lines.FUTURE_TIMESTAMP),
    (b"196\t242\r3\t\t881250949", rating_lines.NON_NUMERIC),
    (b"1_0\t1\t3\t881250949", rating_lines.NON_NUMERIC),
    ("\uff11\uff12\t1\t3\t881250949".encode(), rating_lines.NON_NUMERIC),
    (b"0\t1\t3\t881250949", rating_lines.INVALID_ID),
    (b"1\t0\t3\t881250949", rating_lines.INVALID_ID),
    (b"1\t1\t3\t-1", rating_lines.NEGATIVE_TIMESTAMP),
    (b"1\t1\t3\t" + str(MAX_TIMESTAMP + 1).encode(), rating_lines.FUTURE_TIMESTAMP),
])
def test_issue_examples_are_dropped_with_their_reason_in_any_block(raw, reason):
    """Each of the issue's lines, alone and among clean lines, gets its reason."""
    line_format = movielens.line_format("100k")
    clean = [b"1\t1\t3\t881250949", b"2\t2\t4\t881250950"]
    for lines in ([raw], clean + [raw], [raw] + clean):
        parsed = parsing.parse_block(line_format, CATALOGUE, 0, b"\n".join(lines) + b"\n",
                                     MAX_TIMESTAMP)
        assert [line.reason for line in parsed.dropped] == [reason]
        assert len(parsed.user) == len(lines) - 1
