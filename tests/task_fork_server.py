"""Runs ``python -m <module> <args>`` task commands in forks of one warm interpreter.

A deployed pipeline task is a fresh container process, and the Kubeflow emulator
(tests/kfp_emulator.py) used to start a fresh interpreter per task too: about 17 tasks a
run, each importing TensorFlow, TFX, Beam, TFDV and TFMA again before doing a few seconds
of work. This server imports those third-party libraries once, then forks a child per
task. The child runs the task's module as ``__main__`` with the task's argv, environment
and working directory, its output sent to the task's log, exactly as ``python -m`` would
from there on: the project's own modules are *not* preloaded, so each task still imports
them itself (an entry point that forgets an import still fails).

Protocol (one Unix-socket connection per task): the client sends one JSON line
``{"argv": [...], "env": {...}, "cwd": ..., "log": ...}``; the server forks, and the
child answers with its pid on one line and, when the task ends, its exit code on a second
line. A child that dies without answering closes the connection: the client reads that as
a failure.

The preloaded libraries start no Python thread, so nothing Python-level is half-done at
a fork; the task's own threads (Beam's, TensorFlow's pools) start in the child. (Importing
TensorFlow leaves two idle native threads and jemalloc's background thread; a fork copies
only the forking thread.) The children get SIGCHLD's default handling back: the server
ignores it to have the kernel reap them, and a task may wait for processes of its own.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from typing import Dict, List

# Third-party only: what every task would import and what dominates its start-up.
PRELOADED = (
    "tensorflow",
    "tf_keras",
    "tensorflow_recommenders",
    "apache_beam",
    "tensorflow_data_validation",
    "tensorflow_model_analysis",
    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
)
READY = "ready"


def _exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def _run_task(request: Dict, connection: socket.socket) -> None:
    """In the child: becomes the task's process, runs it, reports its pid, then its exit
    code. Never returns: whatever happens, the child ends here."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the task may wait for its children
        connection.sendall(f"{os.getpid()}\n".encode())
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _, module, *args = request["argv"]  # -m <module> <args>
        sys.argv = [module, *args]
        sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as error:
        code = _exit_code(error)
    except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            connection.sendall(f"{code}\n".encode())
        finally:
            os._exit(code)


def serve(path: str, preload=PRELOADED) -> None:
    """Imports ``preload``, listens on the Unix socket ``path``, forks a child per
    request."""
    for module in preload:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    print(READY, flush=True)
    while True:
        connection, _ = listener.accept()
        with connection.makefile("r") as lines:
            request = json.loads(lines.readline())
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _run_task(request, connection)
        connection.close()


class ForkServer:
    """A server process (the constructor returns once it has imported ``preload``);
    ``run`` is the client's side of one task, ``stop`` ends the server."""

    def __init__(self, env: Dict[str, str], cwd: str, preload=PRELOADED):
        self._dir = tempfile.mkdtemp(prefix="forkserver-")
        self.path = os.path.join(self._dir, "socket")
        self._log = open(os.path.join(self._dir, "server.log"), "w")
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.path, *preload], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._process.stdout.readline()  # blocks until READY, or "" if it died
        if self._process.poll() is not None or not os.path.exists(self.path):
            self._log.flush()
            with open(self._log.name) as handle:
                raise RuntimeError(f"the fork server did not start:\n{handle.read()[-3000:]}")

    def run(self, argv: List[str], env: Dict[str, str], cwd: str, log_path: str,
            timeout: float) -> int:
        """Runs ``python <argv>`` (``-m module ...``) in a fork; its exit code (-1: the
        task died without one)."""
        if argv[:1] != ["-m"] or len(argv) < 2:
            raise ValueError(f"only `python -m <module> ...` tasks are forked, not {argv}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(self.path)
            client.sendall((json.dumps({"argv": argv, "env": env, "cwd": cwd,
                                        "log": log_path}) + "\n").encode())
            with client.makefile("r") as lines:
                first = lines.readline()
                if not first.strip():
                    raise RuntimeError(f"the fork server did not run {argv}: see {self._log.name}")
                pid = int(first)
                try:
                    answer = lines.readline()
                except socket.timeout:
                    os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(argv, timeout) from None
        return int(answer) if answer.strip() else -1  # died without answering

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
