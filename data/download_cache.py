"""The download cache's folders: which ones are complete and verified (they carry the marker
file), which ones may be replaced, and installing a new one in one rename.

Nothing this module did not make is ever deleted: see :func:`check_replaceable`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from data.download_errors import DownloadError

MARKER_NAME = ".movielens-sha256"


def check_replaceable(target: Path) -> None:
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


def is_verified(target: Path, digest: str) -> bool:
    marker = target / MARKER_NAME
    try:
        return (
            target.is_dir()
            and not target.is_symlink()
            and marker.read_text(encoding="ascii").strip().lower() == digest
        )
    except (OSError, UnicodeDecodeError):
        return False


def install(root: Path, target: Path, digest: str, cache: Path, name: str) -> None:
    """Atomically rename ``root`` to ``target``, replacing a ``target`` this tool made
    (one with the marker file, e.g. of another digest) or an empty folder, never other."""
    stale: Optional[Path] = None
    check_replaceable(target)  # again: something may have appeared during the download
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
        if is_verified(target, digest):  # another process installed it first: fine
            return
        raise DownloadError(f"cannot move extracted dataset into {target}: {exc}") from exc
    finally:
        if stale is not None:
            remove(stale)


def remove(path: Path) -> None:
    try:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    except FileNotFoundError:
        pass
