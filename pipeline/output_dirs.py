"""Local directories a command is about to write into: usable, or one clear error.

Checked before any work starts, so that ``--output-root`` (or check-data's ``--output``)
naming a file, an unwritable place or a kernel pseudo file system gives one line saying
so, not a traceback from deep inside TFX or Beam. Standard library only.
"""

from __future__ import annotations

import os
import tempfile

# Kernel pseudo file systems: nothing a pipeline writes belongs there (writing a file
# under /proc/sys or /sys can even change the kernel's settings when run as root).
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys")


class UnusableDirectory(ValueError):
    """A directory to write into cannot be used; the message names the option and path."""


def ensure_writable_dir(path: str, option: str) -> str:
    """Creates ``path`` if needed and proves it writable; returns its absolute path.

    Raises UnusableDirectory when ``path`` (or a parent) is a file, is under /proc or
    /sys, or cannot be created or written (a probe file is created and removed).
    """
    absolute = os.path.abspath(os.path.expanduser(path))
    real = os.path.realpath(absolute)
    for pseudo in PSEUDO_FILE_SYSTEMS:
        if real == pseudo or real.startswith(pseudo + os.sep):
            raise UnusableDirectory(
                f"{option} {path} is under {pseudo}, a kernel pseudo file system; "
                "choose a directory on a disk")
    if os.path.exists(real) and not os.path.isdir(real):
        raise UnusableDirectory(f"{option} {path} is a file, not a directory")
    try:
        os.makedirs(real, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=real, prefix=".write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UnusableDirectory(f"{option} {path} cannot be written: {reason}") from None
    return absolute
