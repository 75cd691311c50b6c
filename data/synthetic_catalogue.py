"""The catalogue of the synthetic MovieLens data: vocabularies, movies, users.

GroupLens' vocabularies as each layout spells them (genres, occupations, 1M
age codes) with the marginal frequencies of the real data sets, and the two
catalogues drawn from them:

* **Movies** (:func:`build_movies`): titles in the shapes real MovieLens titles
  take (``"Name, The (1995)"``, sequels, Latin-1 foreign words, quotes; always
  unique and ending in the release year), release years skewed to recent,
  release dates, and genres drawn from the movie's taste-cluster profile
  (see data/synthetic_sampling.py).
* **Users** (:func:`build_users`): demographics (age, gender, occupation, zip
  code) following the marginal distributions of ML-100K / ML-1M.

Also the helpers every module of the generator uses: :func:`random_stream`
(one independent, seeded random stream per component) and
:func:`log_progress`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import List

import numpy as np

# ---------------------------------------------------------------------------
# Vocabularies as GroupLens spells them.
# ---------------------------------------------------------------------------

#: ml-100k genre order (``u.genre`` and the 19 flags of ``u.item``).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
#: ml-1m genres (``movies.dat``): the 100k list without ``unknown``.
GENRES_1M = GENRES_100K[1:]
#: ml-latest / ml-25m genres (``movies.csv``).
GENRES_CSV = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "IMAX",
)
NO_GENRES_CSV = "(no genres listed)"

#: Relative frequency of the 18 core genres (ML-100K counts, GENRES_1M order).
GENRE_FREQ = np.array([251, 135, 42, 122, 505, 109, 50, 725, 22, 24, 92, 56,
                       61, 247, 101, 251, 71, 27], dtype=np.float64)

#: ``u.occupation`` of ml-100k, with the number of ML-100K users in each.
OCCUPATIONS_100K = (
    "administrator", "artist", "doctor", "educator", "engineer",
    "entertainment", "executive", "healthcare", "homemaker", "lawyer",
    "librarian", "marketing", "none", "other", "programmer", "retired",
    "salesman", "scientist", "student", "technician", "writer",
)
_OCC_FREQ_100K = np.array([79, 28, 7, 95, 67, 18, 32, 16, 7, 12, 51, 26, 9,
                           105, 66, 14, 12, 31, 196, 27, 45], dtype=np.float64)

#: ml-1m occupation codes 0-20 (README of ml-1m), with ML-1M user counts.
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
_OCC_FREQ_1M = np.array([711, 528, 267, 173, 759, 112, 236, 679, 17, 92, 195,
                         129, 388, 142, 302, 144, 241, 502, 70, 72, 281],
                        dtype=np.float64)

#: ml-1m age codes and the number of ML-1M users in each bucket.
AGE_CODES_1M = (1, 18, 25, 35, 45, 50, 56)
_AGE_FREQ_1M = np.array([222, 1103, 2096, 1193, 550, 496, 380], np.float64)
_AGE_MID_1M = np.array([15, 21, 30, 40, 47, 53, 60], np.float64)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")

_ADJ = (
    "Midnight", "Silent", "Last", "Broken", "Golden", "Lost", "Hidden",
    "Wild", "Dark", "Crimson", "Frozen", "Electric", "Lonely", "Secret",
    "Eternal", "Burning", "Little", "Big", "Final", "Endless", "Savage",
    "Quiet", "Sweet", "Bitter", "Restless", "Strange", "Blue", "Iron",
    "Paper", "Glass", "Velvet", "Distant", "Fallen", "Brave", "Perfect",
    "Dangerous", "Invisible", "Forgotten", "Rising", "Twisted", "Red",
    "Northern", "Sudden", "Hollow", "Bright", "Crooked", "Gentle", "Lucky",
)
_NOUN = (
    "Harbor", "River", "Empire", "Garden", "Highway", "Kingdom", "Summer",
    "Winter", "Stranger", "Mirror", "Promise", "Frontier", "Horizon",
    "Shadow", "Heart", "Game", "Island", "City", "Witness", "Machine",
    "Dream", "Legacy", "Journey", "Storm", "Voyage", "Detective", "Circus",
    "Station", "Letter", "Angel", "Valley", "Desert", "Orchard", "Canyon",
    "Signal", "Planet", "Ballad", "Hotel", "Theory", "Affair", "Bridge",
    "Daughter", "Season", "Engine", "Lighthouse", "Verdict", "Outlaw", "Tide",
)
#: Latin-1 encodable, to exercise the encodings of the 100k/1m/csv files.
_FOREIGN = (
    "Misérables", "Café", "Señor", "Mañana", "Déjà Vu", "Fiancée", "Château",
    "Crème", "Rêve", "Naïve", "Élan", "Pêcheur", "Années", "Garçon",
)
_ARTICLES = ("The", "A", "An")
_FOREIGN_ARTICLES = ("Le", "La", "Les", "Il", "El")

#: Latest release year per format.
MAX_YEAR = {"100k": 1998, "1m": 2000, "csv": 2000}
_MIN_YEAR = 1920


def random_stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for ``(seed, key)``.

    Components draw from their own streams so that e.g. the titles do not
    depend on how many random numbers the latent model used.
    """
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(key))))


def log_progress(verbose: bool, msg: str) -> None:
    """``msg`` on stderr, prefixed ``[synthetic]``, when ``verbose``."""
    if verbose:
        print(f"[synthetic] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Users:
    age: np.ndarray          # 100k: years; 1m: index into AGE_CODES_1M
    age_years: np.ndarray    # numeric age used by the latent model
    gender: np.ndarray       # bool, True = F
    occupation: np.ndarray   # index into the format's occupation list
    zip_code: List[str]


@dataclasses.dataclass
class Movies:
    title: List[str]
    year: np.ndarray
    release_date: List[str]
    genres: np.ndarray       # (movies, 18) bool, GENRES_1M order
    imax: np.ndarray         # (movies,) bool, csv only


# ---------------------------------------------------------------------------
# Catalogues.
# ---------------------------------------------------------------------------


def build_movies(fmt: str, m: int, seed: int, movie_cluster: np.ndarray,
                 cluster_genre_prob: np.ndarray) -> Movies:
    """Titles, release years/dates and genres of the movies."""
    rng = random_stream(seed, 2)
    max_year = MAX_YEAR[fmt]
    # Release years skewed to recent, peaking a couple of years before the
    # data collection (like ML-100K: 1996 peak, few 1998 titles), with a
    # long tail back to _MIN_YEAR (old titles spread over 1920-1960).
    recent = rng.random(m) < 0.6
    back = np.where(recent, rng.gamma(2.0, 1.4, m), rng.exponential(22.0, m))
    year = (max_year - np.floor(back)).astype(np.int64)
    old = year < _MIN_YEAR
    year[old] = rng.integers(_MIN_YEAR, 1960, int(old.sum()))

    # Genres from the cluster's profile; a few movies have none.
    genres = rng.random((m, 18)) < cluster_genre_prob[movie_cluster]
    empty = ~genres.any(axis=1)
    allow_none = fmt != "1m"  # ml-1m movies always have a genre
    keep_empty = empty & (rng.random(m) < 0.02) & allow_none
    fix = empty & ~keep_empty
    primary = np.argmax(cluster_genre_prob[movie_cluster], axis=1)
    genres[np.flatnonzero(fix), primary[fix]] = True
    imax = (rng.random(m) < 0.01) & (year >= 1995) & (fmt == "csv")

    pattern = rng.random(m)
    adj = rng.integers(0, len(_ADJ), (m, 2))
    noun = rng.integers(0, len(_NOUN), (m, 3))
    foreign = rng.integers(0, len(_FOREIGN), m)
    art = rng.integers(0, len(_ARTICLES), m)
    fart = rng.integers(0, len(_FOREIGN_ARTICLES), m)
    sequel = rng.integers(2, 5, m)
    day = rng.integers(1, 29, m)
    month = rng.integers(0, 12, m)
    jan1 = rng.random(m) < 0.7

    titles: List[str] = []
    seen = set()
    for j in range(m):
        p = pattern[j]
        a0, a1 = _ADJ[adj[j, 0]], _ADJ[adj[j, 1]]
        n0, n1, n2 = (_NOUN[noun[j, 0]], _NOUN[noun[j, 1]],
                      _NOUN[noun[j, 2]])
        if p < 0.45:
            base = f"{a0} {n0}"
        elif p < 0.58:
            base = f"{a0} {n0}, {_ARTICLES[art[j]]}"
        elif p < 0.64:
            base = f"{n0}, {_ARTICLES[art[j]]}"
        elif p < 0.70:
            base = f"{n0}, {n1} and {n2}"
        elif p < 0.74:
            base = (f"{_FOREIGN[foreign[j]]}, {_FOREIGN_ARTICLES[fart[j]]} "
                    f"({a1} {n1})")
        elif p < 0.79:
            base = f"{a0} {n0} {sequel[j]}"
        elif p < 0.795:
            base = f'"{a0} {n0}" {n1}'
        elif p < 0.83:
            base = f"{_FOREIGN[foreign[j]]} {n1}"
        else:
            base = f"Synthetic Movie {j + 1}"
        title = f"{base} ({year[j]})"
        if title in seen:  # keep titles unique: pipelines key on them
            title = f"Synthetic Movie {j + 1} ({year[j]})"
        seen.add(title)
        titles.append(title)

    release = [
        f"01-Jan-{year[j]}" if jan1[j] else
        f"{day[j]:02d}-{_MONTHS[month[j]]}-{year[j]}" for j in range(m)]
    return Movies(title=titles, year=year, release_date=release,
                   genres=genres, imax=imax)


def build_users(fmt: str, n_users: int, seed: int) -> Users:
    """Demographics with the marginals of ML-100K (100k, csv) or ML-1M."""
    rng = random_stream(seed, 3)
    female = rng.random(n_users) < (0.28 if fmt == "1m" else 0.29)
    if fmt == "1m":
        age = rng.choice(len(AGE_CODES_1M), n_users,
                         p=_AGE_FREQ_1M / _AGE_FREQ_1M.sum())
        age_years = _AGE_MID_1M[age]
        occ = rng.choice(len(OCCUPATIONS_1M), n_users,
                         p=_OCC_FREQ_1M / _OCC_FREQ_1M.sum())
    else:
        age = np.clip(np.round(rng.gamma(5.5, 4.8, n_users) + 8), 7, 73
                      ).astype(np.int64)
        age_years = age.astype(np.float64)
        occ = rng.choice(len(OCCUPATIONS_100K), n_users,
                         p=_OCC_FREQ_100K / _OCC_FREQ_100K.sum())
    zips = rng.integers(0, 100_000, n_users)
    plus4 = rng.integers(0, 10_000, n_users)
    ext = (rng.random(n_users) < 0.04) & (fmt == "1m")
    zip_code = [f"{z:05d}-{p:04d}" if e else f"{z:05d}"
                for z, p, e in zip(zips.tolist(), plus4.tolist(),
                                   ext.tolist())]
    return Users(age=age, age_years=age_years, gender=female, occupation=occ,
                  zip_code=zip_code)
