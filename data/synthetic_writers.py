"""Writers of the synthetic MovieLens files, in the three GroupLens layouts.

:func:`write_100k`, :func:`write_1m` and :func:`write_csv` write the files
described in data/synthetic.py's docstring from the catalogues
(data/synthetic_catalogue.py) and the sampled ratings.  The ratings files are
formatted by :func:`_encode_rows`, a vectorised integer formatter.
"""

from __future__ import annotations

import csv
import io
import os
from typing import List, Sequence, Union
from urllib.parse import quote

import numpy as np

from data.synthetic_catalogue import (AGE_CODES_1M, GENRES_1M, GENRES_100K,
                                      GENRES_CSV, NO_GENRES_CSV,
                                      OCCUPATIONS_100K, Movies, Users,
                                      log_progress, random_stream)

#: Rows per chunk when formatting the ratings file.
_WRITE_CHUNK = 1_000_000


def _encode_rows(parts: Sequence[Union[bytes, np.ndarray]]) -> bytes:
    """Format rows of non-negative integer columns and literal separators.

    ``parts`` alternates freely between ``bytes`` (written on every row) and
    integer arrays (written in decimal without leading zeros).  Done with a
    ``(rows, width)`` uint8 matrix in which padding bytes are 0 and dropped,
    much faster than ``np.savetxt`` / ``DataFrame.to_csv`` (benchmarks/README.md).
    """
    n = next(len(p) for p in parts if not isinstance(p, bytes))
    widths = []
    for p in parts:
        if isinstance(p, bytes):
            widths.append(len(p))
        else:
            widths.append(len(str(int(p.max()))) if n else 1)
    mat = np.zeros((n, sum(widths)), dtype=np.uint8)
    col = 0
    for p, w in zip(parts, widths):
        if isinstance(p, bytes):
            mat[:, col:col + w] = np.frombuffer(p, dtype=np.uint8)
        else:
            v = np.asarray(p, dtype=np.int64)
            for i in range(w):
                div = 10 ** (w - 1 - i)
                digit = (48 + (v // div) % 10).astype(np.uint8)
                if i < w - 1:
                    digit[v < div] = 0  # leading zero: padding
                mat[:, col + i] = digit
        col += w
    flat = mat.ravel()
    return flat[flat != 0].tobytes()


def _write_bytes_chunks(path: str, n: int, make_parts, header: bytes = b"",
                        verbose: bool = False) -> None:
    with open(path, "wb") as f:
        f.write(header)
        for s in range(0, n, _WRITE_CHUNK):
            e = min(n, s + _WRITE_CHUNK)
            f.write(_encode_rows(make_parts(s, e)))
            if verbose and n > _WRITE_CHUNK:
                log_progress(verbose, f"wrote {e}/{n} rows of "
                                      f"{os.path.basename(path)}")


def write_100k(out: str, users: Users, movies: Movies, u, m, r, ts,
               seed: int, verbose: bool) -> List[str]:
    n = u.shape[0]
    perm = random_stream(seed, 4).permutation(n)  # real u.data is shuffled
    u, m, r, ts = u[perm], m[perm], r[perm], ts[perm]
    paths = []
    p = os.path.join(out, "u.data")
    _write_bytes_chunks(
        p, n, lambda s, e: [u[s:e] + 1, b"\t", m[s:e] + 1, b"\t", r[s:e],
                            b"\t", ts[s:e], b"\n"], verbose=verbose)
    paths.append(p)

    lines = []
    for j, title in enumerate(movies.title):
        flags = np.concatenate([[not movies.genres[j].any()],
                                movies.genres[j]]).astype(int)
        url = "http://us.imdb.com/M/title-exact?" + quote(
            title, safe="()',!&:;", encoding="latin-1")
        lines.append(f"{j + 1}|{title}|{movies.release_date[j]}||{url}|"
                     + "|".join(map(str, flags)) + "\n")
    paths.append(_write_text(out, "u.item", "".join(lines), "latin-1"))

    lines = [f"{i + 1}|{users.age[i]}|{'F' if users.gender[i] else 'M'}|"
             f"{OCCUPATIONS_100K[users.occupation[i]]}|{users.zip_code[i]}\n"
             for i in range(len(users.zip_code))]
    paths.append(_write_text(out, "u.user", "".join(lines), "latin-1"))
    # u.genre ends with an empty line in the GroupLens distribution.
    paths.append(_write_text(
        out, "u.genre",
        "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)) + "\n",
        "latin-1"))
    paths.append(_write_text(
        out, "u.occupation", "".join(o + "\n" for o in OCCUPATIONS_100K),
        "latin-1"))
    paths.append(_write_text(
        out, "u.info",
        f"{len(users.zip_code)} users\n{len(movies.title)} items\n"
        f"{n} ratings\n", "latin-1"))
    return paths


def write_1m(out: str, users: Users, movies: Movies, u, m, r, ts,
             verbose: bool) -> List[str]:
    n = u.shape[0]
    paths = []
    p = os.path.join(out, "ratings.dat")
    _write_bytes_chunks(
        p, n, lambda s, e: [u[s:e] + 1, b"::", m[s:e] + 1, b"::", r[s:e],
                            b"::", ts[s:e], b"\n"], verbose=verbose)
    paths.append(p)
    lines = [f"{j + 1}::{title}::"
             + "|".join(GENRES_1M[g] for g in np.flatnonzero(movies.genres[j]))
             + "\n" for j, title in enumerate(movies.title)]
    paths.append(_write_text(out, "movies.dat", "".join(lines), "latin-1"))
    lines = [f"{i + 1}::{'F' if users.gender[i] else 'M'}::"
             f"{AGE_CODES_1M[users.age[i]]}::{users.occupation[i]}::"
             f"{users.zip_code[i]}\n" for i in range(len(users.zip_code))]
    paths.append(_write_text(out, "users.dat", "".join(lines), "latin-1"))
    return paths


def write_csv(out: str, movies: Movies, u, m, half, ts,
              verbose: bool) -> List[str]:
    n = u.shape[0]
    paths = []
    p = os.path.join(out, "ratings.csv")
    _write_bytes_chunks(
        p, n, lambda s, e: [u[s:e] + 1, b",", m[s:e] + 1, b",",
                            half[s:e] // 2, b".", (half[s:e] % 2) * 5, b",",
                            ts[s:e], b"\n"],
        header=b"userId,movieId,rating,timestamp\n", verbose=verbose)
    paths.append(p)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["movieId", "title", "genres"])
    for j, title in enumerate(movies.title):
        g = [GENRES_CSV[i] for i in np.flatnonzero(movies.genres[j])]
        if movies.imax[j]:
            g.append("IMAX")
        w.writerow([j + 1, title, "|".join(g) if g else NO_GENRES_CSV])
    paths.append(_write_text(out, "movies.csv", buf.getvalue(), "utf-8"))
    return paths


def _write_text(out: str, name: str, text: str, encoding: str) -> str:
    path = os.path.join(out, name)
    with open(path, "wb") as f:
        f.write(text.encode(encoding))
    return path
