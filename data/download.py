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
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

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
MARKER_NAME = ".movielens-sha256"
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


class DownloadError(RuntimeError):
    """A MovieLens archive could not be downloaded, verified or extracted.

    ``network`` is True when the cause is that the server could not be reached at all
    (no route, DNS failure, connection refused, timeout) -- i.e. probably an offline machine.
    """

    def __init__(
        self,
        message: str,
        *,
        url: Optional[str] = None,
        expected: Optional[str] = None,
        actual: Optional[str] = None,
        network: bool = False,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.expected = expected
        self.actual = actual
        self.network = network


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

    if _is_verified(target, digest):
        return target
    _check_replaceable(target)

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
            actual, _ = _download(spec, out, progress=progress, timeout=timeout)
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
        _safe_extract(Path(zip_tmp), extract_tmp)
        root = _dataset_root(extract_tmp, spec.folder)
        (root / MARKER_NAME).write_text(digest + "\n", encoding="ascii")
        _install(root, target, digest, cache, spec.name)
        return target
    finally:
        _remove(Path(zip_tmp))
        if extract_tmp is not None:
            _remove(extract_tmp)


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


def _check_replaceable(target: Path) -> None:
    """Raises DownloadError unless ``target`` is absent, empty, or a folder this tool made.

    A folder without the marker file may be a user's own data: it is never moved or
    deleted, and the download is refused before it starts.
    """
    if not os.path.lexists(target):
        return
    if target.is_dir() and not target.is_symlink():
        if (target / MARKER_NAME).is_file() or not any(target.iterdir()):
            return
        what = f"a folder without this tool's marker file ({MARKER_NAME})"
    else:
        what = "a symlink" if target.is_symlink() else "a file"
    raise DownloadError(
        f"{target} already exists and is {what}: refusing to replace what this tool did not "
        "make (nothing was changed). Move it away, or pass another --cache-dir; to use that "
        "copy as it is, pass --data-dir instead.")


def _is_verified(target: Path, digest: str) -> bool:
    marker = target / MARKER_NAME
    try:
        return (
            target.is_dir()
            and not target.is_symlink()
            and marker.read_text(encoding="ascii").strip().lower() == digest
        )
    except (OSError, UnicodeDecodeError):
        return False


def _download(spec: Dataset, out, *, progress: bool, timeout: float) -> tuple[str, int]:
    """Stream ``spec.url`` into ``out``; return (sha256 hex, byte count)."""
    url = spec.url
    request = urllib.request.Request(url, headers={"User-Agent": "movielens-download/1.0"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (URL is ours)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}", url=url) from exc
    except urllib.error.URLError as exc:
        remote = not url.lower().startswith("file:")
        raise DownloadError(f"cannot reach {url}: {exc.reason}", url=url, network=remote) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status line
        raise DownloadError(f"cannot reach {url}: {exc}", url=url, network=True) from exc
    except ValueError as exc:  # malformed / unsupported URL
        raise DownloadError(f"invalid URL {url!r}: {exc}", url=url) from exc

    hasher = hashlib.sha256()
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        # Never read more than announced, nor, unannounced, more than the archive's size.
        cap = declared if declared is not None else (spec.size or MAX_ARCHIVE_BYTES)
        reporter = _Progress(spec.name, declared or spec.size) if progress else None
        try:
            while True:
                chunk = response.read(min(CHUNK_SIZE, cap + 1 - received))
                if not chunk:
                    break
                if received + len(chunk) > cap:
                    raise DownloadError(
                        f"download from {url} is larger than the {cap:,} bytes expected"
                        f"{'' if declared is not None else ' of ' + spec.name}; stopped and "
                        "deleted", url=url)
                out.write(chunk)
                hasher.update(chunk)
                received += len(chunk)
                if reporter:
                    reporter.update(received)
        except http.client.IncompleteRead as exc:
            raise DownloadError(
                f"truncated download from {url}: connection closed after "
                f"{received + len(exc.partial)} of {declared} bytes",
                url=url,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download from {url} failed after {received} bytes: {exc}", url=url,
                network=isinstance(exc, (TimeoutError, ConnectionError)),
            ) from exc
        finally:
            if reporter:
                reporter.done(received)
    if declared is not None and received != declared:
        raise DownloadError(
            f"truncated download from {url}: received {received} of {declared} bytes", url=url
        )
    return hasher.hexdigest(), received


class _Progress:
    """``name: 1,234,567/4,924,029 bytes (25%)`` on stderr; redrawn in place on a terminal,
    otherwise one line per 10%."""

    def __init__(self, name: str, total: Optional[int]) -> None:
        self.name = name
        self.total = total
        self.tty = sys.stderr.isatty()
        self.last_time = 0.0
        self.last_decile = -1

    def _line(self, received: int) -> str:
        if self.total:
            pct = min(100, received * 100 // self.total)
            return f"{self.name}: {received:,}/{self.total:,} bytes ({pct}%)"
        return f"{self.name}: {received:,} bytes"

    def update(self, received: int) -> None:
        if self.tty:
            now = time.monotonic()
            if now - self.last_time >= 0.2:
                self.last_time = now
                sys.stderr.write("\r" + self._line(received))
                sys.stderr.flush()
        elif self.total:
            decile = min(10, received * 10 // self.total)
            if decile > self.last_decile and decile < 10:
                self.last_decile = decile
                sys.stderr.write(self._line(received) + "\n")

    def done(self, received: int) -> None:
        sys.stderr.write(("\r" if self.tty else "") + self._line(received) + "\n")
        sys.stderr.flush()


def _member_parts(info: zipfile.ZipInfo) -> list[str]:
    """Relative path components of a zip entry; DownloadError if it could escape the target."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise DownloadError(f"refusing zip entry with a NUL byte: {raw!r}")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"refusing zip entry with an absolute path: {raw!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(f"refusing zip entry that escapes the target folder: {raw!r}")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DownloadError(f"refusing symlink zip entry: {raw!r}")
    return parts


def extraction_limit(zip_size: int) -> int:
    """The most bytes an archive of ``zip_size`` bytes may extract to."""
    return max(MIN_EXTRACTION_LIMIT, EXTRACTION_RATIO * zip_size)


def _copy_capped(source, destination, limit: int, name: str) -> int:
    """Copies at most ``limit`` bytes; DownloadError beyond (entry sizes can lie)."""
    copied = 0
    for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
        copied += len(chunk)
        if copied > limit:
            raise DownloadError(
                f"refusing to extract the archive: {name!r} expands beyond the "
                f"{limit:,}-byte limit (a zip bomb?); nothing was kept")
        destination.write(chunk)
    return copied


def _safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract every entry of ``zip_path`` under ``dest`` after checking all of them, and
    no more than :func:`extraction_limit` bytes in all."""
    dest_resolved = dest.resolve()
    budget = extraction_limit(zip_path.stat().st_size)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise DownloadError(
                    f"refusing to extract the archive: {len(infos):,} entries, more than "
                    f"{MAX_ZIP_ENTRIES:,}")
            declared = sum(info.file_size for info in infos)
            if declared > budget:
                raise DownloadError(
                    f"refusing to extract the archive: it declares {declared:,} bytes, more "
                    f"than the {budget:,}-byte limit for a {zip_path.stat().st_size:,}-byte "
                    "zip (a zip bomb?)")
            plan = []
            for info in infos:
                parts = _member_parts(info)
                if not parts:
                    continue
                path = dest.joinpath(*parts)
                if not path.resolve().is_relative_to(dest_resolved):
                    raise DownloadError(f"refusing zip entry outside the target: {info.filename!r}")
                plan.append((info, path))
            for info, path in plan:
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(path, "xb") as dst:
                    budget -= _copy_capped(src, dst, budget, info.filename)
    except DownloadError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DownloadError(f"{zip_path.name} is not a valid zip archive: {exc}") from exc
    except OSError as exc:
        raise DownloadError(f"extracting the archive failed: {exc}") from exc


def _dataset_root(extracted: Path, folder: str) -> Path:
    """The folder to install: the expected top-level folder, else the single top-level
    folder, else everything that was extracted."""
    expected = extracted / folder
    if expected.is_dir():
        return expected
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted


def _install(root: Path, target: Path, digest: str, cache: Path, name: str) -> None:
    """Atomically rename ``root`` to ``target``, replacing a ``target`` this tool made
    (one with the marker file, e.g. of another digest) or an empty folder, never other."""
    stale: Optional[Path] = None
    _check_replaceable(target)  # again: something may have appeared during the download
    if target.is_dir() and not (target / MARKER_NAME).is_file():
        try:
            target.rmdir()  # empty, as checked; fails if something was just put there
        except OSError as exc:
            raise DownloadError(f"cannot replace the empty folder {target}: {exc}") from exc
    elif target.exists():
        stale = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}.stale-"))
        os.rename(target, stale / "old")
    try:
        os.rename(root, target)
    except OSError as exc:
        if _is_verified(target, digest):  # another process installed it first: fine
            return
        raise DownloadError(f"cannot move extracted dataset into {target}: {exc}") from exc
    finally:
        if stale is not None:
            _remove(stale)


def _remove(path: Path) -> None:
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    except FileNotFoundError:
        pass


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
