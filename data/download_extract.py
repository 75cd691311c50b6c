"""Extracting a downloaded zip safely: no entry outside the target, no symlinks, and no more
bytes or entries than allowed.

Used by :func:`data.download.fetch`, which owns the caps (:func:`data.download.extraction_limit`,
:data:`data.download.MAX_ZIP_ENTRIES`, :data:`data.download.CHUNK_SIZE`) and passes them on
every call.
"""
from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path

from data.download_errors import DownloadError


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


def _copy_capped(source, destination, limit: int, name: str, chunk_size: int) -> int:
    """Copies at most ``limit`` bytes; DownloadError beyond (entry sizes can lie)."""
    copied = 0
    for chunk in iter(lambda: source.read(chunk_size), b""):
        copied += len(chunk)
        if copied > limit:
            raise DownloadError(
                f"refusing to extract the archive: {name!r} expands beyond the "
                f"{limit:,}-byte limit (a zip bomb?); nothing was kept")
        destination.write(chunk)
    return copied


def safe_extract(
    zip_path: Path, dest: Path, *, limit: int, max_entries: int, chunk_size: int
) -> None:
    """Extract every entry of ``zip_path`` under ``dest`` after checking all of them, and
    no more than ``limit`` bytes in all nor more than ``max_entries`` entries."""
    dest_resolved = dest.resolve()
    budget = limit
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
            if len(infos) > max_entries:
                raise DownloadError(
                    f"refusing to extract the archive: {len(infos):,} entries, more than "
                    f"{max_entries:,}")
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
                    budget -= _copy_capped(src, dst, budget, info.filename, chunk_size)
    except DownloadError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise DownloadError(f"{zip_path.name} is not a valid zip archive: {exc}") from exc
    except OSError as exc:
        raise DownloadError(f"extracting the archive failed: {exc}") from exc


def dataset_root(extracted: Path, folder: str) -> Path:
    """The folder to install: the expected top-level folder, else the single top-level
    folder, else everything that was extracted."""
    expected = extracted / folder
    if expected.is_dir():
        return expected
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return extracted
