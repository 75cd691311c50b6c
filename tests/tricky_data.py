"""The doctored synthetic data sets of the example generator's tests (``make_tricky``):
synthetic MovieLens files of each layout, edited to hold the cases the reference
algorithm must survive. conftest.py's ``tricky_dir`` and ``tricky_run`` make them once per
session: test_example_gen compares their examples with the reference, test_validation's
curated schemas must accept them."""

from __future__ import annotations

import collections
import pathlib
import shutil

SEP = {"100k": "\t", "1m": "::", "csv": ","}
RATINGS_FILE = {"100k": "u.data", "1m": "ratings.dat", "csv": "ratings.csv"}
MOVIES_FILE = {"100k": "u.item", "1m": "movies.dat", "csv": "movies.csv"}

# The doctored synthetic data sets (see make_tricky).
EXTRA_USER = 61  # not in the user file; synthetic users are 1..60
UNRATED_MOVIE = 500  # added to the movie file, never rated
TIE_TIMESTAMP = 1_000_000_000
# Bytes per block of the ratings file in the synthetic runs: small, odd sizes spread the
# ~30 KB files over dozens of blocks, so lines straddle block boundaries and a user's
# ratings (and timestamp ties) arrive from many blocks.
BLOCK_SIZE = {"100k": 1000, "1m": 777, "csv": 4093}


def _rating_text(fmt: str, value: float) -> str:
    return f"{value:.1f}" if fmt == "csv" else str(int(value))


def _rating_line(fmt: str, user: int, movie: int, rating: float, timestamp: int) -> str:
    return SEP[fmt].join((str(user), str(movie), _rating_text(fmt, rating), str(timestamp)))


def make_tricky(source: pathlib.Path, destination: pathlib.Path, fmt: str) -> pathlib.Path:
    """A copy of a synthetic data set with the cases the reference algorithm must survive.

    * user 1 keeps 1 rating, user 2 keeps 2, all 4 stars (too short for
      min_timeline_length 3);
    * user 3 has 3 ratings, one of them 1 star (2 kept: too short once filtered);
    * user 4 has exactly 3 ratings, all kept (2 examples);
    * user 5's ratings are all 1 star (no kept rating at all);
    * user 61 is absent from the user file; 5 of its 6 ratings share one timestamp (one of
      them 1 star, filtered) and are spread over the file, so ties must keep file order;
    * movie 500 is in the movie file but never rated.
    The synthetic data itself (tie_prob 0.5) has many ties and 1-star ratings.
    """
    shutil.copytree(source, destination)
    path = destination / RATINGS_FILE[fmt]
    lines = path.read_text("ascii").splitlines()
    header, body = (lines[:1], lines[1:]) if fmt == "csv" else ([], lines)
    seen = collections.Counter()
    out = []
    for line in body:
        user, movie, rating, timestamp = line.split(SEP[fmt])
        user, rating = int(user), float(rating)
        seen[user] += 1
        limit = {1: 1, 2: 2, 3: 3, 4: 3}.get(user)
        if limit is not None and seen[user] > limit:
            continue
        if (user == 3 and seen[user] == 2) or user == 5:
            rating = 1.0
        elif user in (1, 2, 3, 4):
            rating = 4.0
        out.append(_rating_line(fmt, user, int(movie), rating, int(timestamp)))
    extra = [(10, 4.0, TIE_TIMESTAMP), (11, 1.0, TIE_TIMESTAMP), (12, 5.0, TIE_TIMESTAMP),
             (13, 3.0, TIE_TIMESTAMP - 1), (14, 2.0, TIE_TIMESTAMP),
             (15, 3.0, TIE_TIMESTAMP)]
    for k, (movie, rating, timestamp) in enumerate(extra):
        out.insert(len(out) * (k + 1) // (len(extra) + 1),
                   _rating_line(fmt, EXTRA_USER, movie, rating, timestamp))
    path.write_text("\n".join(header + out) + "\n", "ascii")

    movies_path = destination / MOVIES_FILE[fmt]
    if fmt == "100k":
        flags = ["0"] * 19
        flags[8] = "1"  # Drama
        line = (f"{UNRATED_MOVIE}|Never Rated (1990)|01-Jan-1990||"
                f"http://us.imdb.com/M/title-exact?Never|" + "|".join(flags))
    elif fmt == "1m":
        line = f"{UNRATED_MOVIE}::Never Rated (1990)::Drama"
    else:
        line = f"{UNRATED_MOVIE},Never Rated (1990),Drama"
    with open(movies_path, "ab") as handle:
        handle.write(line.encode("latin-1") + b"\n")
    return destination
