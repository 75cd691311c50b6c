"""What a local run shows a person, and the log file that takes everything else.

``pipeline_runner.py run`` shows one line per component as it starts and ends, each
Trainer's epochs (a progress bar on a terminal; otherwise a line per epoch, thinned out
beyond five epochs, see :func:`shows_epoch`) and the run summary. Everything else --
absl / TFX / Beam logging, Python warnings, TensorFlow's C++ messages, Beam worker
processes' output, ``Exception ignored in ...`` tracebacks, also those of finalizers run
as the interpreter exits -- goes to ``<output-root>/logs/run-<timestamp>.log``, whose path
is printed first and last. ``--verbose`` leaves the terminal as it was (everything on it,
no log file).

How (see :func:`session`): the real stdout and stderr file descriptors are duplicated
into private handles (the console), then the log file is ``dup2``-ed onto fds 1 and 2.
Whatever writes to fds 1 and 2 -- Python's ``sys.stdout`` / ``sys.stderr`` and every
logging handler writing to them, TensorFlow's C++ runtime, Beam's DirectRunner worker
processes, which inherit both -- lands in the log without knowing it. The fds are restored
when the run ends, however it ends.

Which component runs (see :func:`watch_components`): LocalDagRunner runs the nodes one
after another in this process, each through ``Launcher.launch()``, which this module wraps
for the duration of the run. That method is the unit the runner executes per node (its
timing includes the driver, executor and publisher; an exception is the node failing),
and it keeps working whatever the log verbosity, unlike recognizing the runner's
"Component X is running" log messages. Whether a node ran or came from the cache is read
from its execution in ML Metadata (public API), not from log text either.

Epochs come from the ``movielens.progress`` logger (components/progress.py), which the
Trainer's Keras callback reports to wherever it runs.

TensorFlow-free: TFX and ML Metadata are imported only once a pipeline is being watched.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import io
import logging
import os
import sys
import threading
import time
import traceback
from typing import Iterator, List, Optional, TextIO

from components import progress as progress_lib

LOG_DIR = "logs"
BAR_WIDTH = 20
EPOCH_LINES = 5  # off a terminal, at most this many epoch lines per Trainer (see
EPOCH_LINE_SECONDS = 60.0  # shows_epoch), plus one per minute of slow epochs
_CLEAR = "\r\x1b[K"  # back to the line's start, erase it


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#######.............]``: ``done`` of ``total`` as a text progress bar."""
    filled = width if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def new_log_path(output_root: str, now: Optional[datetime.datetime] = None) -> str:
    """``<output_root>/logs/run-<YYYYmmdd-HHMMSS>.log``, not yet taken (created here)."""
    directory = os.path.join(output_root, LOG_DIR)
    os.makedirs(directory, exist_ok=True)
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{n}" for n in range(2, 100))]:
        path = os.path.join(directory, f"run-{stamp}{suffix}.log")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free log file name in {directory} for {stamp}")


class Console:
    """Lines for a person. A line begun with :meth:`begin` is completed by :meth:`finish`
    on the same line when nothing came in between; on a terminal, :meth:`status` redraws
    the open line in place (a progress bar) and :meth:`finish` replaces it."""

    def __init__(self, out: TextIO, err: Optional[TextIO] = None, tty: bool = False,
                 width: int = 120):
        self.out, self.err, self.tty, self.width = out, err or out, tty, width
        self._open: Optional[str] = None  # the begun line; None when none is open
        self._intact = False  # the begun line is still the last text written
        self._status = ""  # on a terminal: what the open line shows now
        self._lock = threading.RLock()

    def line(self, text: str = "", error: bool = False) -> None:
        """A whole line (``error``: to the console's stderr)."""
        with self._lock:
            stream = self.err if error else self.out
            if self._open is not None and self.tty:
                self._write(self.out, _CLEAR)
                self._write(stream, text + "\n")
                self._write(self.out, self._fit(self._status))
            else:
                self._break()
                self._write(stream, text + "\n")

    def begin(self, text: str) -> None:
        """Opens a line that :meth:`finish` completes."""
        with self._lock:
            self._break()
            self._open, self._intact, self._status = text, True, text
            self._write(self.out, self._fit(text) if self.tty else text)

    def status(self, text: str) -> None:
        """On a terminal: shows ``text`` in place of the open line. Elsewhere: nothing."""
        with self._lock:
            if self.tty and self._open is not None:
                self._status = text
                self._write(self.out, _CLEAR + self._fit(text))

    def finish(self, suffix: str) -> None:
        """Completes the open line with ``suffix`` (``<begun text> <suffix>``)."""
        with self._lock:
            text, self._open = self._open or "", None
            if self.tty:
                self._write(self.out, _CLEAR + f"{text} {suffix}\n")
            elif self._intact:
                self._write(self.out, f" {suffix}\n")
            else:
                self._write(self.out, f"{text} {suffix}\n")
            self._intact = False

    def _break(self) -> None:
        """Ends an open line before other text (its :meth:`finish` repeats its start)."""
        if self._open is not None and self._intact:
            self._write(self.out, "\n")
            self._intact = False

    def _fit(self, text: str) -> str:
        return text if len(text) < self.width else text[:self.width - 4] + "..."

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()


def shows_epoch(epoch: int, epochs: int, seconds_since_shown: float) -> bool:
    """Off a terminal, whether epoch ``epoch`` of ``epochs`` gets a line: every one up to
    :data:`EPOCH_LINES` epochs; beyond, evenly spaced ones (at most that many) and the
    last, plus any that ends :data:`EPOCH_LINE_SECONDS` after the last line shown. The
    output's length does not grow with the epochs; the log has every epoch."""
    step = -(-epochs // EPOCH_LINES)  # ceil
    return (epoch >= epochs or epoch % step == 0
            or seconds_since_shown >= EPOCH_LINE_SECONDS)


class RunProgress:
    """Components as they start and end, and the epochs of the one running."""

    def __init__(self, console: Console, total: int):
        self.console, self.total = console, total
        self.index = 0
        self.current: Optional[str] = None
        self._prefix = ""
        self._shown_at = 0.0  # the training seconds at the last epoch line shown

    def started(self, node: str) -> None:
        self.index += 1
        self.current = node
        self._prefix = f"[{self.index}/{self.total}] {node}"
        self._shown_at = 0.0
        self.console.begin(f"{self._prefix} ...")

    def epoch(self, epoch: progress_lib.Epoch) -> None:
        if self.console.tty:
            self.console.status(
                f"{self._prefix} {bar(epoch.epoch, epoch.epochs)} {epoch.detail()}")
        elif shows_epoch(epoch.epoch, epoch.epochs, epoch.seconds - self._shown_at):
            self._shown_at = epoch.seconds
            self.console.line("    " + epoch.text(name=self.current or ""))

    def finished(self, state: str, seconds: float) -> None:
        """``state``: "ran", "cached" or "FAILED"."""
        suffix = {"ran": f"done in {seconds:.1f} s", "cached": "cached",
                  "FAILED": f"FAILED after {seconds:.1f} s"}.get(state, state)
        self.console.finish(suffix)
        if state != "FAILED":  # a failed one stays current: the error names it
            self.current = None


class _EpochHandler(logging.Handler):
    """Hands the progress logger's epoch records to a :class:`RunProgress`."""

    def __init__(self, run_progress: RunProgress):
        super().__init__(logging.INFO)
        self._progress = run_progress

    def emit(self, record: logging.LogRecord) -> None:
        epoch = getattr(record, progress_lib.RECORD_ATTRIBUTE, None)
        if epoch is not None:
            try:
                self._progress.epoch(epoch)
            except Exception:  # pylint: disable=broad-except  (progress never fails a run)
                self.handleError(record)


@contextlib.contextmanager
def watch_components(run_progress: RunProgress, connection_config) -> Iterator[None]:
    """Reports each node LocalDagRunner launches to ``run_progress`` (see the module
    docstring); ``connection_config``: the pipeline's ML Metadata connection."""
    # pylint: disable=import-outside-toplevel,protected-access
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration.portable import launcher as launcher_lib

    original = launcher_lib.Launcher.launch
    stores: List[metadata_store.MetadataStore] = []

    def state(execution_info) -> str:
        if execution_info is None or execution_info.execution_id is None:
            return "skipped"
        if not stores:
            stores.append(metadata_store.MetadataStore(connection_config))
        executions = stores[0].get_executions_by_id([execution_info.execution_id])
        cached = bool(executions) and (executions[0].last_known_state
                                       == metadata_store_pb2.Execution.CACHED)
        return "cached" if cached else "ran"

    def launch(launcher, *args, **kwargs):
        run_progress.started(launcher._pipeline_node.node_info.id)
        started = time.time()
        try:
            execution_info = original(launcher, *args, **kwargs)
        except BaseException:
            run_progress.finished("FAILED", time.time() - started)
            raise
        run_progress.finished(state(execution_info), time.time() - started)
        return execution_info

    epochs = _EpochHandler(run_progress)
    progress_logger = logging.getLogger(progress_lib.LOGGER)
    launcher_lib.Launcher.launch = launch
    progress_logger.addHandler(epochs)
    try:
        yield
    finally:
        launcher_lib.Launcher.launch = original
        progress_logger.removeHandler(epochs)


class Session:
    """One run's console and log file (``log_path`` None: ``--verbose``, no log file)."""

    def __init__(self, console: Console, log_path: Optional[str] = None):
        self.console, self.log_path = console, log_path
        self.progress: Optional[RunProgress] = None

    @property
    def quiet(self) -> bool:
        return self.log_path is not None

    @contextlib.contextmanager
    def watch(self, pipeline) -> Iterator[None]:
        """Shows ``pipeline``'s (a ``tfx.dsl.Pipeline``) components and epochs while it
        runs with LocalDagRunner."""
        self.progress = RunProgress(self.console, len(pipeline.components))
        with watch_components(self.progress, pipeline.metadata_connection_config):
            yield

    def error(self, error: object, details: bool = False) -> None:
        """``error: ...`` on the console's stderr. ``details``: an unexpected error, raised
        by the component that was running: one line here, the traceback in the log."""
        if details:
            # into the log (or onto the terminal with --verbose)
            traceback.print_exception(type(error), error,
                                      getattr(error, "__traceback__", None))
        text = str(error).strip() or type(error).__name__
        if details:
            failed = self.progress.current if self.progress else None
            text = (f"{failed} failed: " if failed else "") + \
                f"{type(error).__name__}: {text.splitlines()[0]}"
            if self.quiet:
                text += f" (traceback in {self.log_path})"
        if self.quiet:
            print(f"error: {text}", file=sys.stderr)  # the log says how the run ended too
        self.console.line(f"error: {text}", error=True)


def _console_stream(fd: int, like: TextIO) -> TextIO:
    return io.open(fd, "w", buffering=1, closefd=False,
                   encoding=getattr(like, "encoding", None) or "utf-8", errors="replace")


def _terminal_width(fd: int) -> int:
    try:
        columns = os.get_terminal_size(fd).columns
    except OSError:
        columns = 0
    return columns if columns >= 40 else 80  # a pseudo-terminal may say 0


def _send_unraisable_to(log_fd: int) -> None:
    """From now on, "Exception ignored in ..." reports (``sys.unraisablehook``) go to the
    file ``log_fd`` (which this takes over) instead of stderr: objects that live until
    the interpreter exits (TensorFlow functions in caches) fail in ``__del__`` while it
    tears their modules down, after the session gave fds 1 and 2 back. The hook keeps what
    it needs in default arguments, which outlive module teardown."""
    log = os.fdopen(log_fd, "a", buffering=1, encoding="utf-8", errors="replace")

    def to_log(unraisable, _log=log, _sys=sys):
        real, _sys.stderr = _sys.stderr, _log
        try:
            _sys.__unraisablehook__(unraisable)
        finally:
            _sys.stderr = real

    sys.unraisablehook = to_log


@contextlib.contextmanager
def session(output_root: str, verbose: bool = False) -> Iterator[Session]:
    """The console of one run: with ``verbose`` the terminal as it is; otherwise fds 1
    and 2 go to a new log file under ``output_root`` until the block ends (see the module
    docstring), absl logging at INFO, and the console writes to the real ones."""
    if verbose:
        tty = sys.stdout.isatty()
        yield Session(Console(sys.stdout, sys.stderr, tty=tty,
                              width=_terminal_width(1) if tty else 120))
        return
    from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel

    local_root = output_root if "://" not in output_root else os.path.join(
        os.path.expanduser("~"), ".cache", "movielens-pipeline")  # a bucket takes no fd
    path = new_log_path(local_root)
    sys.stdout.flush()
    sys.stderr.flush()
    real = [os.dup(1), os.dup(2)]
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    tty = os.isatty(real[0])
    out, err = _console_stream(real[0], sys.stdout), _console_stream(real[1], sys.stderr)
    console = Console(out, err, tty=tty, width=_terminal_width(real[0]) if tty else 120)
    verbosity = absl_logging.get_verbosity()
    console.line(f"Log: {path}")
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        yield Session(console, path)
    finally:
        gc.collect()  # finalizers' "Exception ignored in ..." noise: into the log, now
        absl_logging.set_verbosity(verbosity)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(real[0], 1)
        os.dup2(real[1], 2)
        _send_unraisable_to(log_fd)
        console.line(f"Log: {path}")
        out.close()
        err.close()
        for fd in real:
            os.close(fd)
