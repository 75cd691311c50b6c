"""Download, verify and extract the MovieLens datasets from GroupLens.

Standard library only, except :func:`resolve_data_dir`, which checks a given ``--data-dir``
through Apache Beam's file systems so that it may be a ``gs://`` URL. Usage::

    python -m data.download ml-100k [--cache-dir D] [--url U] [--sha256 H]

prints the path of the extracted dataset directory (e.g. ``~/.cache/movielens/ml-100k``).

Guarantees of :func:`fetch`:

* The archive is streamed into a temporary file inside the cache directory and its SHA-256 is
  checked before anything is extracted. On any failure (HTTP error, connection error, truncated
  body, digest mismatch, unsafe or corrupt zip) no zip, temporary file or half-extracted folder
  is left behind, and a :class:`DownloadError` says why.
* Extraction happens in a temporary folder next to the target and is renamed into place in one
  step, with a marker file holding the verified digest written *before* the rename: a folder at
  ``<cache_dir>/<name>`` that carries the marker is complete and verified, and is returned later
  without touching the network.
* Nothing the tool did not make is ever deleted: an existing ``<cache_dir>/<name>`` without the
  marker file (a user's own copy, say) is refused before any download, and left as it is. Only
  a folder carrying the marker (an older or unfinished download of this tool) or an empty one
  is replaced.
* Sizes are capped: a response is never read past its Content-Length, nor, when it declares
  none, past the registry's size of the archive (:data:`MAX_ARCHIVE_BYTES` for archives the
  registry does not know); extraction stops at :func:`extraction_limit` bytes (a zip bomb)
  and at :data:`MAX_ZIP_ENTRIES` entries.
* Zip entries with absolute paths, ``..`` components or symlinks are refused.

A process killed in the middle (SIGKILL, power loss) can leave a ``.<name>.*`` temporary entry in
the cache directory; it is never mistaken for a dataset and can be deleted by hand.

This module holds the registry, the caps and the steps of :func:`fetch`; the mechanisms are in
:mod:`data.download_http` (streaming with a size cap), :mod:`data.download_extract` (safe
extraction), :mod:`data.download_cache` (marker files, replacing and installing folders) and
:mod:`data.download_errors`. The caps are read here on each call and passed on, so setting
``data.download.CHUNK_SIZE`` and the like takes effect.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Optional

from data import download_cache, download_extract, download_http
from data.download_cache import MARKER_NAME
from data.download_errors import DownloadError

__all__ = [
    "DATASETS",
    "Dataset",
    "DownloadError",
    "default_cache_dir",
    "fetch",
    "resolve_data_dir",
    "main",
]

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"
CACHE_ENV_VAR = "MOVIELENS_CACHE"
CHUNK_SIZE = 1 << 20
DEFAULT_TIMEOUT = 60.0  # seconds per socket operation, not for the whole download
# Caps against hostile or broken servers and archives. MovieLens zips hold CSV-like text,
# which deflates about 4-5x (ml-25m: 262 MB -> 1.2 GB): 20x leaves room, a bomb does not fit.
MAX_ARCHIVE_BYTES = 2 << 30  # a download the registry has no size for
EXTRACTION_RATIO = 20
MIN_EXTRACTION_LIMIT = 64 << 20
MAX_ZIP_ENTRIES = 10_000

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    url: str
    sha256: Optional[str]  # None = unknown: fetch() refuses to run without an explicit digest
    folder: str  # top-level folder inside the zip
    size: Optional[int] = None  # bytes, informational (progress total if no Content-Length)


# SHA-256 digests of the GroupLens zips.
#
# Source for all four: TensorFlow Datasets, tensorflow/datasets
#   tensorflow_datasets/url_checksums/movielens.txt
#   (lines "<url>\t<size>\t<sha256>\t<filename>"; the sizes below come from the same file).
# Independent corroboration found in other public code:
#   ml-100k  - several projects pin the same digest next to GroupLens' published MD5
#              0e33842e24a9c977be4e0107933c0723 (4,924,029 bytes).
#   ml-1m    - TensorFlow's on-device recommendation example (example_generation_movielens.py,
#              MOVIELENS_ZIP_HASH, used with keras get_file(hash_algorithm="sha256")).
#   ml-25m   - several projects; one notes it cross-checked GroupLens' ml-25m.zip.md5
#              (6b51fb2759a8657d3bfcbfc42b592ada).
#   ml-latest-small - the Julia DataDeps GroupLens registrations and other projects.
#
# RISK: ml-latest-small is a "latest" snapshot that GroupLens regenerates from time to time
# (the pinned archive is the 2018-09 build: 100,836 ratings, 610 users, 9,742 movies). When it is
# re-uploaded, the download fails with a digest mismatch rather than silently changing the data;
# pass --sha256 <new digest> (or use a stable dataset such as ml-100k / ml-1m / ml-25m) after
# checking the new archive deliberately.
DATASETS: dict[str, Dataset] = {
    "ml-100k": Dataset(
        "ml-100k",
        f"{GROUPLENS_BASE_URL}/ml-100k.zip",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "ml-100k",
        4_924_029,
    ),
    "ml-1m": Dataset(
        "ml-1m",
        f"{GROUPLENS_BASE_URL}/ml-1m.zip",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "ml-1m",
        5_917_549,
    ),
    "ml-latest-small": Dataset(
        "ml-latest-small",
        f"{GROUPLENS_BASE_URL}/ml-latest-small.zip",
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "ml-latest-small",
        978_202,
    ),
    "ml-25m": Dataset(
        "ml-25m",
        f"{GROUPLENS_BASE_URL}/ml-25m.zip",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        "ml-25m",
        261_978_986,
    ),
}


def default_cache_dir() -> Path:
    """``$MOVIELENS_CACHE`` if set, else ``~/.cache/movielens``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "movielens"


def extraction_limit(zip_size: int) -> int:
    """The most bytes an archive of ``zip_size`` bytes may extract to."""
    return max(MIN_EXTRACTION_LIMIT, EXTRACTION_RATIO * zip_size)


# --------------------------------------------------------------------------------------------
# fetch
# --------------------------------------------------------------------------------------------


def fetch(
    name: str,
    cache_dir: "os.PathLike[str] | str | None" = None,
    *,
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Path:
    """Return ``<cache_dir>/<name>``, downloading, verifying and extracting it if needed.

    ``url`` overrides the registry URL (mirrors, ``file://`` archives, tests); ``sha256``
    overrides the registry digest. A name outside the registry is accepted only with both.
    """
    spec = _spec_for(name, url=url, sha256=sha256)
    digest = spec.sha256
    assert digest is not None
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / spec.name

    if download_cache.is_verified(target, digest):
        return target
    download_cache.check_replaceable(target)

    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create cache directory {cache}: {exc}") from exc

    try:
        zip_fd, zip_tmp = tempfile.mkstemp(dir=cache, prefix=f".{spec.name}.",
                                           suffix=".zip.part")
    except OSError as exc:
        raise DownloadError(f"cannot write into the cache directory {cache}: {exc}") from exc
    extract_tmp: Optional[Path] = None
    try:
        with os.fdopen(zip_fd, "wb") as out:
            actual, _ = download_http.stream_archive(
                spec.url, out, name=spec.name, size=spec.size, progress=progress,
                timeout=timeout, chunk_size=CHUNK_SIZE, max_bytes=MAX_ARCHIVE_BYTES)
        if actual != digest:
            raise DownloadError(
                f"SHA-256 mismatch for {spec.name} downloaded from {spec.url}: "
                f"expected {digest}, got {actual}. The file was deleted. If the archive changed "
                "upstream on purpose, check it and pass --sha256 <new digest>.",
                url=spec.url,
                expected=digest,
                actual=actual,
            )
        extract_tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{spec.name}.extract-"))
        download_extract.safe_extract(
            Path(zip_tmp), extract_tmp, limit=extraction_limit(Path(zip_tmp).stat().st_size),
            max_entries=MAX_ZIP_ENTRIES, chunk_size=CHUNK_SIZE)
        root = download_extract.dataset_root(extract_tmp, spec.folder)
        (root / MARKER_NAME).write_text(digest + "\n", encoding="ascii")
        download_cache.install(root, target, digest, cache, spec.name)
        return target
    finally:
        download_cache.remove(Path(zip_tmp))
        if extract_tmp is not None:
            download_cache.remove(extract_tmp)


def _spec_for(name: str, *, url: Optional[str], sha256: Optional[str]) -> Dataset:
    if not _SAFE_NAME.match(name or ""):
        raise ValueError(f"invalid dataset name {name!r}")
    known = DATASETS.get(name)
    if known is None and url is None:
        raise ValueError(
            f"unknown MovieLens dataset {name!r}; known: {', '.join(sorted(DATASETS))} "
            "(other archives need --url and --sha256)"
        )
    digest = sha256 if sha256 is not None else (known.sha256 if known else None)
    if digest is None:
        where = f"the registry has no verified SHA-256 for {name!r}" if known else (
            f"{name!r} is not in the registry"
        )
        raise DownloadError(
            f"refusing to download {name!r} without a checksum: {where}. Pass --sha256 "
            "<64-hex digest> (sha256= in Python) after obtaining the digest from a source you "
            "trust.",
            url=url or (known.url if known else None),
        )
    digest = digest.strip().lower()
    if not _HEX64.match(digest):
        raise ValueError(f"sha256 must be 64 hexadecimal characters, got {sha256!r}")
    return Dataset(
        name=name,
        url=url or known.url,  # type: ignore[union-attr]
        sha256=digest,
        folder=known.folder if known else name,
        # The registry's archive, wherever it comes from, when its digest is the registry's.
        size=known.size if (known and digest == known.sha256) else None,
    )


# --------------------------------------------------------------------------------------------
# resolve_data_dir
# --------------------------------------------------------------------------------------------


def resolve_data_dir(
    data_dir: "os.PathLike[str] | str | None" = None,
    dataset: Optional[str] = None,
    cache_dir: "os.PathLike[str] | str | None" = None,
    *,
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    progress: bool = True,
) -> "Path | str":
    """An existing ``data_dir`` wins; otherwise ``dataset`` is fetched into ``cache_dir``
    (default :func:`default_cache_dir`). Download failures are re-raised as one
    :class:`DownloadError` that points at ``--data-dir``.

    ``data_dir`` may be a URL (``gs://...``): it is checked, and returned as the string
    it is, through the same file systems the example generator reads it with. The
    download cache is always local."""
    if data_dir is not None:
        from data import movielens  # Beam's file systems, for local paths and URLs alike

        path = str(data_dir) if movielens.is_url(data_dir) else Path(data_dir).expanduser()
        if not movielens.is_directory(path):
            raise FileNotFoundError(
                f"--data-dir {path} does not exist or is not a directory; pass an extracted "
                "MovieLens directory (e.g. the ml-100k folder containing u.data)"
            )
        return path
    if dataset is None:
        raise ValueError(
            "no MovieLens data given: pass --data-dir pointing at an extracted MovieLens "
            f"directory, or --dataset NAME ({', '.join(sorted(DATASETS))}) to download it"
        )
    try:
        return fetch(dataset, cache_dir, url=url, sha256=sha256, progress=progress)
    except DownloadError as exc:
        hint = (
            " This machine looks offline or cannot reach the download server."
            if exc.network
            else ""
        )
        cause = str(exc).rstrip(".")
        raise DownloadError(
            f"downloading MovieLens {dataset!r} failed: {cause}.{hint} To run without "
            "downloading, pass --data-dir pointing at an extracted MovieLens directory.",
            url=exc.url,
            expected=exc.expected,
            actual=exc.actual,
            network=exc.network,
        ) from exc


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.download",
        description="Download, verify (SHA-256) and extract a MovieLens dataset; "
        "print the extracted directory.",
    )
    parser.add_argument("name", help=f"dataset: {', '.join(DATASETS)}")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help=f"where datasets are kept (default: ${CACHE_ENV_VAR} or ~/.cache/movielens)",
    )
    parser.add_argument("--url", default=None, help="download from this URL instead (mirror)")
    parser.add_argument("--sha256", default=None, help="expected SHA-256 of the zip")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    try:
        path = fetch(
            args.name, args.cache_dir, url=args.url, sha256=args.sha256, progress=not args.quiet
        )
    except (DownloadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
