"""One local run per output root at a time.

LocalDagRunner's SQLite metadata store and pipeline root are not meant for two
orchestrators at once, so a run holds an exclusive lock on ``<output_root>/.run.lock``.
The kernel releases it when the process ends, however it ends (a SIGKILLed run leaves no
stale lock behind), and a second run is refused at once with a message that says why.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os


class OutputRootBusy(RuntimeError):
    """Another run holds the output root."""


@contextlib.contextmanager
def exclusive_run(output_root: str):
    """Holds the output root's run lock for the duration of the block."""
    os.makedirs(output_root, exist_ok=True)
    path = os.path.join(output_root, ".run.lock")
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise OutputRootBusy(
                f"another pipeline run (pid {holder}) is using {output_root}; wait for it "
                "to finish or pass another --output-root") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()
