"""Tests for data/movielens.py: layout detection, catalogue loading, rating line parsing."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from data import movielens
import reference_sequences as reference  # tests/ is on sys.path (conftest.py)



def copy_dir(source, destination) -> pathlib.Path:
    shutil.copytree(source, destination)
    return pathlib.Path(destination)


_TINY = dict(users=12, movies=30, ratings=300, seed=5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny synthetic data set per layout (read-only: copy before modifying)."""
    from data import synthetic

    dirs = {}
    for fmt in ("100k", "1m", "csv"):
        out = tmp_path_factory.mktemp(f"tiny_{fmt}")
        synthetic.generate(out, _TINY["users"], _TINY["movies"], _TINY["ratings"], fmt,
                           _TINY["seed"])
        dirs[fmt] = out
    return dirs


# ---------------------------------------------------------------------------------------
# Layouts


@pytest.mark.parametrize("fmt, ratings, movies, users", [
    ("100k", "u.data", "u.item", "u.user"),
    ("1m", "ratings.dat", "movies.dat", "users.dat"),
    ("csv", "ratings.csv", "movies.csv", None),
])
def test_detect_layout(tiny, fmt, ratings, movies, users):
    layout = movielens.detect_layout(tiny[fmt])
    assert layout.name == fmt
    assert layout.root == pathlib.Path(tiny[fmt])
    assert layout.ratings_path == tiny[fmt] / ratings
    assert layout.movies_path == tiny[fmt] / movies
    assert layout.users_path == (tiny[fmt] / users if users else None)
    assert layout.has_header == (fmt == "csv")
    assert set(layout.files) == {p for p in (layout.ratings_path, layout.movies_path,
                                             layout.users_path) if p}


def test_detect_layout_on_real_100k(ml100k_dir):
    layout = movielens.detect_layout(ml100k_dir)
    assert layout.name == movielens.LAYOUT_100K
    assert layout.users_path == ml100k_dir / "u.user"


def test_detect_layout_100k_without_user_file(tiny, tmp_path):
    data = copy_dir(tiny["100k"], tmp_path / "d")
    (data / "u.user").unlink()
    layout = movielens.detect_layout(data)
    assert layout.name == "100k" and layout.users_path is None
    assert movielens.load_users(layout) == {}


@pytest.mark.parametrize("fmt, missing", [
    ("100k", "u.item"), ("1m", "movies.dat"), ("1m", "users.dat"), ("csv", "movies.csv")])
def test_detect_layout_missing_companion_file(tiny, tmp_path, fmt, missing):
    data = copy_dir(tiny[fmt], tmp_path / "d")
    (data / missing).unlink()
    with pytest.raises(movielens.DataFormatError, match=missing):
        movielens.detect_layout(data)


def test_detect_layout_not_movielens(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(movielens.DataFormatError, match="no MovieLens ratings file"):
        movielens.detect_layout(tmp_path)
    with pytest.raises(movielens.DataFormatError, match="not found"):
        movielens.detect_layout(tmp_path / "absent")


# ---------------------------------------------------------------------------------------
# Catalogues


@pytest.mark.parametrize("fmt", ["100k", "1m", "csv"])
def test_load_movies_matches_independent_parser(tiny, fmt):
    movies = movielens.load_movies(movielens.detect_layout(tiny[fmt]))
    expected = reference.load(tiny[fmt]).movies
    assert sorted(movies) == sorted(expected) == list(range(1, _TINY["movies"] + 1))
    for movie_id, movie in movies.items():
        assert movie.movie_id == movie_id
        assert (movie.title, movie.year, movie.genres) == (
            expected[movie_id].title, expected[movie_id].year, expected[movie_id].genres)
        assert movie.year > 1900  # synthetic titles all end with "(YYYY)"


def test_load_real_100k_movies_and_users(ml100k_dir):
    layout = movielens.detect_layout(ml100k_dir)
    movies = movielens.load_movies(layout)
    assert len(movies) == 1682
    assert movies[1].title == "Toy Story (1995)" and movies[1].year == 1995
    assert movies[1].genres == ("Animation", "Children's", "Comedy")
    assert movies[267].year == 0  # "unknown": no year in its title
    users = movielens.load_users(layout)
    # The shared copy's u.user has 944 lines: an extra first line "0|0|D|default_user|0000".
    lines = (ml100k_dir / "u.user").read_bytes().splitlines()
    assert len(users) == len(lines) == 944
    assert users[0] == movielens.User(0, 0, "D", "default_user", "0000")
    assert users[1] == movielens.User(1, 24, "M", "technician", "85711")
    assert sorted(users) == list(range(944))


def test_load_users_1m(tiny):
    layout = movielens.detect_layout(tiny["1m"])
    users = movielens.load_users(layout)
    expected = reference.load(tiny["1m"]).users
    assert sorted(users) == sorted(expected)
    for user_id, user in users.items():
        want = expected[user_id]
        assert (user.age, user.gender, user.occupation, user.zip_code) == (
            want.age, want.gender, want.occupation, want.zip_code)
        assert user.age in (1, 18, 25, 35, 45, 50, 56)
        assert user.occupation in movielens.OCCUPATIONS_1M


def test_load_users_csv_has_none(tiny):
    assert movielens.load_users(movielens.detect_layout(tiny["csv"])) == {}


def test_load_movies_missing_file_names_it(tiny, tmp_path):
    data = copy_dir(tiny["100k"], tmp_path / "d")
    layout = movielens.detect_layout(data)
    (data / "u.item").unlink()
    with pytest.raises(movielens.DataFormatError, match="u.item"):
        movielens.load_movies(layout)


def _replace_line(path: pathlib.Path, number: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = new
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("fmt, name, line, replacement, message", [
    ("100k", "u.item", 7, b"7|Too Few Fields (1990)|01-Jan-1990", "expected 24 fields"),
    ("100k", "u.item", 9, b"x9|" + b"|".join([b"0"] * 23), "non-numeric movie id"),
    ("1m", "movies.dat", 4, b"4::No Genres Field (1990)", "expected 3 fields"),
    ("1m", "movies.dat", 12, b"twelve::Title (1990)::Drama", "non-numeric movie id"),
    ("1m", "movies.dat", 13, b"1::Duplicate (1990)::Drama", "appears twice"),
    ("csv", "movies.csv", 5, b"4,Only Two Fields", "expected 3 fields"),
    ("csv", "movies.csv", 6, b"5,Caf\xff (1990),Drama", "undecodable"),
])
def test_malformed_movie_line_names_file_and_line(
        tiny, tmp_path, fmt, name, line, replacement, message):
    data = copy_dir(tiny[fmt], tmp_path / "d")
    _replace_line(data / name, line, replacement)
    with pytest.raises(movielens.DataFormatError) as raised:
        movielens.load_movies(movielens.detect_layout(data))
    assert f"{data / name}:{line}:" in str(raised.value)
    assert message in str(raised.value)


def test_movies_csv_without_header(tiny, tmp_path):
    data = copy_dir(tiny["csv"], tmp_path / "d")
    lines = (data / "movies.csv").read_bytes().split(b"\n")
    (data / "movies.csv").write_bytes(b"\n".join(lines[1:]))
    with pytest.raises(movielens.DataFormatError, match=r"movies\.csv:1: expected a header"):
        movielens.load_movies(movielens.detect_layout(data))


def test_movie_file_without_movies(tiny, tmp_path):
    data = copy_dir(tiny["1m"], tmp_path / "d")
    (data / "movies.dat").write_bytes(b"\n")
    with pytest.raises(movielens.DataFormatError, match="no movies"):
        movielens.load_movies(movielens.detect_layout(data))


def test_malformed_user_line_names_file_and_line(tiny, tmp_path):
    data = copy_dir(tiny["100k"], tmp_path / "d")
    _replace_line(data / "u.user", 3, b"3|old|M|writer|12345")
    with pytest.raises(movielens.DataFormatError, match=rf"u\.user:3: non-numeric"):
        movielens.load_users(movielens.detect_layout(data))
    _replace_line(data / "u.user", 3, b"3|30|M")
    with pytest.raises(movielens.DataFormatError, match=rf"u\.user:3: expected 5 fields"):
        movielens.load_users(movielens.detect_layout(data))


def test_latin1_titles_are_decoded(tiny, tmp_path):
    data = copy_dir(tiny["1m"], tmp_path / "d")
    _replace_line(data / "movies.dat", 2, "2::Misérables, Les (1995)::Drama".encode("latin-1"))
    movies = movielens.load_movies(movielens.detect_layout(data))
    assert movies[2].title == "Misérables, Les (1995)" and movies[2].year == 1995


def test_csv_no_genres_listed_means_no_genre(tiny, tmp_path):
    data = copy_dir(tiny["csv"], tmp_path / "d")
    _replace_line(data / "movies.csv", 2, b'1,"Quoted, Title (2001)",(no genres listed)')
    movies = movielens.load_movies(movielens.detect_layout(data))
    assert movies[1].title == "Quoted, Title (2001)"
    assert movies[1].genres == () and movies[1].year == 2001


# ---------------------------------------------------------------------------------------
# Rating lines


@pytest.mark.parametrize("layout, raw, expected", [
    ("100k", b"196\t242\t3\t881250949", movielens.Rating(196, 242, 3.0, 881250949)),
    ("100k", b"1\t2\t5\t0\r", movielens.Rating(1, 2, 5.0, 0)),
    ("1m", b"1::1193::5::978300760", movielens.Rating(1, 1193, 5.0, 978300760)),
    ("csv", b"1,296,0.5,1147880044", movielens.Rating(1, 296, 0.5, 1147880044)),
    ("csv", b"3,7,4.5,1147880044", movielens.Rating(3, 7, 4.5, 1147880044)),
])
def test_parse_rating_line_valid(layout, raw, expected):
    parsed = movielens.parse_rating_line(layout, raw)
    assert parsed == expected
    assert isinstance(parsed.rating, float)


@pytest.mark.parametrize("layout, raw, reason", [
    ("100k", b"196\t242\t3", movielens.WRONG_FIELD_COUNT),
    ("100k", b"196\t242\t3\t881250949\t7", movielens.WRONG_FIELD_COUNT),
    ("100k", b"196 242 3 881250949", movielens.WRONG_FIELD_COUNT),
    ("1m", b"1::1193::5", movielens.WRONG_FIELD_COUNT),
    ("1m", b"1\t1193\t5\t978300760", movielens.WRONG_FIELD_COUNT),
    ("csv", b"1,296,5.0", movielens.WRONG_FIELD_COUNT),
    ("100k", b"abc\t242\t3\t881250949", movielens.NON_NUMERIC),
    ("100k", b"196\tx\t3\t881250949", movielens.NON_NUMERIC),
    ("100k", b"196\t242\tthree\t881250949", movielens.NON_NUMERIC),
    ("100k", b"196\t242\t3\t88125.0949", movielens.NON_NUMERIC),
    ("1m", b"1::1193::5::", movielens.NON_NUMERIC),
    ("csv", b"userId,movieId,rating,timestamp", movielens.NON_NUMERIC),
    ("100k", b"196\t242\t6\t881250949", movielens.RATING_OUT_OF_RANGE),
    ("100k", b"196\t242\t0\t881250949", movielens.RATING_OUT_OF_RANGE),
    ("100k", b"196\t242\t-3\t881250949", movielens.RATING_OUT_OF_RANGE),
    ("100k", b"196\t242\t3.5\t881250949", movielens.RATING_OUT_OF_RANGE),
    ("1m", b"1::1193::10::978300760", movielens.RATING_OUT_OF_RANGE),
    ("csv", b"1,296,0.0,1147880044", movielens.RATING_OUT_OF_RANGE),
    ("csv", b"1,296,5.5,1147880044", movielens.RATING_OUT_OF_RANGE),
    ("csv", b"1,296,3.25,1147880044", movielens.RATING_OUT_OF_RANGE),
    ("csv", b"1,296,nan,1147880044", movielens.NON_NUMERIC),
    ("100k", b"196\t242\t3\t8812\xff0949", movielens.UNDECODABLE),
    ("csv", b"\xc3\x28,296,3.0,1147880044", movielens.UNDECODABLE),
    ("100k", b"", movielens.BLANK_LINE),
    ("1m", b"   ", movielens.BLANK_LINE),
    ("csv", b"\r", movielens.BLANK_LINE),
])
def test_parse_rating_line_reasons(layout, raw, reason):
    with pytest.raises(movielens.MalformedRecord) as raised:
        movielens.parse_rating_line(layout, raw)
    assert raised.value.reason == reason
    assert reason in movielens.DROP_REASONS
    assert str(raised.value)  # a human-readable message as well


def test_reference_classifies_like_the_loader():
    """The test oracle and the loader agree on a sample of lines (oracle sanity check)."""
    movies = {242: None, 1193: None, 296: None}
    cases = [("100k", b"196\t242\t3\t881250949"), ("100k", b"196\t242\t6\t1"),
             ("1m", b"1::1193::5"), ("csv", b"1,296,4.5,1"), ("csv", b"1,296,x,1"),
             ("100k", b"\xff"), ("1m", b"")]
    for layout, raw in cases:
        try:
            rating = movielens.parse_rating_line(layout, raw)
            expected = (rating.user_id, rating.movie_id, rating.rating, rating.timestamp)
        except movielens.MalformedRecord as error:
            expected = error.reason
        assert reference._classify(layout, raw, movies) == expected


# ---------------------------------------------------------------------------------------
# Small helpers


@pytest.mark.parametrize("title, year", [
    ("Toy Story (1995)", 1995),
    ("unknown", 0),
    ("Seven (Se7en) (1995)", 1995),
    ("Big Lebowski, The (1998) (1999)", 1999),  # MovieLens puts the release year last
    ("2001: A Space Odyssey (1968)", 1968),
    ("Title (95)", 0),
    ("Title (12345)", 0),
    ("Title (\uff11\uff19\uff19\uff15)", 0),  # full-width digits are no year
    ("Title 1995", 0),
    ("Ulysses (Ulisse) (1954)", 1954),
    ("", 0),
])
def test_extract_year(title, year):
    assert movielens.extract_year(title) == year


def test_line_number_at(tmp_path):
    lines = [b"first", b"", b"third line", b"\xff\xfe bytes", b"fifth"]
    path = tmp_path / "f.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    offset, expected = 0, {}
    for number, line in enumerate(lines, start=1):
        assert movielens.line_number_at(path, offset) == number
        expected[offset] = number
        offset += len(line) + 1
    assert movielens.line_number_at(path, 0) == 1
    # All at once, in any order and repeated: one pass over the file.
    assert movielens.line_numbers_at(path, [*reversed(expected), 0]) == expected
    assert movielens.line_numbers_at(path, []) == {}


def test_line_number_at_beyond_a_block(tmp_path):
    # More than the 1 MiB read block: counts across block boundaries.
    line = b"x" * 99 + b"\n"
    path = tmp_path / "big.txt"
    path.write_bytes(line * 30_000)
    for number in (1, 2, 10_486, 10_487, 29_999, 30_000):
        assert movielens.line_number_at(path, (number - 1) * len(line)) == number


def test_fingerprint_changes_with_content(tiny, tmp_path):
    data = copy_dir(tiny["csv"], tmp_path / "d")
    layout = movielens.detect_layout(data)
    before = movielens.fingerprint(layout)
    assert before == movielens.fingerprint(layout)
    with open(data / "ratings.csv", "ab") as handle:
        handle.write(b"1,1,4.0,1200000000\n")
    assert movielens.fingerprint(layout) != before
