"""The Kubeflow emulator's fork server: a forked task behaves as ``python -m`` would."""

import os
import sys

import pytest

import task_fork_server

TASK = '''
import os, subprocess, sys
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("TASK_VALUE"))
# A task may wait for children of its own (the server ignores SIGCHLD, the task must not).
print("child exit", subprocess.run([sys.executable, "-c", "raise SystemExit(3)"]).returncode)
outcome = sys.argv[1]
if outcome == "raise":
    raise RuntimeError("boom")
if outcome == "crash":
    os.abort()
sys.exit(int(outcome))
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = task_fork_server.ForkServer(dict(os.environ), str(tmp_path_factory.mktemp("s")),
                                          preload=("json",))
    yield running
    running.stop()


@pytest.mark.parametrize("outcome, code", [("0", 0), ("5", 5), ("raise", 1), ("crash", -1)])
def test_a_forked_task_runs_as_python_m_would(server, tmp_path, outcome, code):
    log = tmp_path / "log.txt"
    env = {**os.environ, "TASK_VALUE": "from-the-request"}
    work = tmp_path / "work"
    work.mkdir()
    (work / "a_task.py").write_text(TASK)  # importable only from the task's directory
    assert server.run(["-m", "a_task", outcome], env, str(work), str(log), 60) == code
    text = log.read_text()
    assert f"argv ['{outcome}'] cwd {work} env from-the-request" in text
    assert "child exit 3" in text
    if outcome == "raise":
        assert "RuntimeError: boom" in text


def test_only_python_m_tasks_are_forked(server, tmp_path):
    with pytest.raises(ValueError, match="only `python -m <module> ...` tasks are forked"):
        server.run([sys.executable, "-c", "pass"], dict(os.environ), str(tmp_path),
                    str(tmp_path / "log.txt"), 60)
