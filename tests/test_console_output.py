"""What ``pipeline_runner.py run`` prints: a line per component, each Trainer's epochs and
the summary; everything else in the log file (pipeline/console.py)."""

import io
import logging
import os
import re
import subprocess
import sys
import textwrap

from components import progress
from conftest import SERVED_EPOCHS
from pipeline import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 60


def test_bar_and_epoch_lines():
    assert console.bar(0, 8) == "[" + "." * 20 + "]"
    assert console.bar(3, 8, width=8) == "[###.....]"
    assert console.bar(9, 8, width=4) == "[####]"
    epoch = progress.Epoch("retrieval", 3, 8, 41.6, {"loss": 12.345678, "total_loss": 1.0})
    assert epoch.detail() == "epoch 3/8 loss=12.3457 42 s"
    assert epoch.text() == "retrieval epoch 3/8 loss=12.3457 42 s"
    assert epoch.text("RetrievalTrainer").startswith("RetrievalTrainer epoch 3/8")
    assert "rmse=0.9000" in progress.Epoch("ranking", 1, 1, 1.0, {"rmse": 0.9}).detail()


def test_epoch_lines_off_a_terminal_are_at_most_five_but_slow_epochs_all_show():
    def shown(epochs, seconds_each=1.0):
        lines, last = [], 0.0
        for epoch in range(1, epochs + 1):
            if console.shows_epoch(epoch, epochs, epoch * seconds_each - last):
                lines.append(epoch)
                last = epoch * seconds_each
        return lines

    assert shown(1) == [1] and shown(5) == [1, 2, 3, 4, 5]
    assert shown(6) == [2, 4, 6] and shown(10) == [2, 4, 6, 8, 10]
    assert shown(23) == [5, 10, 15, 20, 23]
    assert shown(10, seconds_each=console.EPOCH_LINE_SECONDS) == list(range(1, 11))


def _progress(tty):
    out, err = io.StringIO(), io.StringIO()
    return console.RunProgress(console.Console(out, err, tty=tty, width=80), total=3), out


def test_plain_lines_off_a_terminal():
    run, out = _progress(tty=False)
    run.started("MovieLensExampleGen")
    run.finished("ran", 12.34)
    run.started("RetrievalTrainer")
    run.epoch(progress.Epoch("retrieval", 1, 2, 5.0, {"loss": 3.0}))
    run.epoch(progress.Epoch("retrieval", 2, 2, 9.0, {"loss": 2.0}))
    run.finished("ran", 20.0)
    run.started("RetrievalPusher")
    run.finished("cached", 0.2)
    assert out.getvalue().splitlines() == [
        "[1/3] MovieLensExampleGen ... done in 12.3 s",
        "[2/3] RetrievalTrainer ...",
        "    RetrievalTrainer epoch 1/2 loss=3.0000 5 s",
        "    RetrievalTrainer epoch 2/2 loss=2.0000 9 s",
        "[2/3] RetrievalTrainer ... done in 20.0 s",
        "[3/3] RetrievalPusher ... cached",
    ]


def test_a_progress_bar_on_a_terminal_and_failures_named():
    run, out = _progress(tty=True)
    run.started("RetrievalTrainer")
    run.epoch(progress.Epoch("retrieval", 1, 4, 5.0, {"loss": 3.0}))
    run.finished("FAILED", 7.0)
    text = out.getvalue()
    assert "\r\x1b[K[1/3] RetrievalTrainer [#####...............] epoch 1/4" in text
    assert text.endswith("\r\x1b[K[1/3] RetrievalTrainer ... FAILED after 7.0 s\n")
    assert run.current == "RetrievalTrainer"  # what an error line names


def test_epoch_records_reach_the_run_progress():
    run, out = _progress(tty=False)
    handler = console._EpochHandler(run)
    logger = logging.getLogger(progress.LOGGER)
    logger.addHandler(handler)
    try:
        run.started("RankingTrainer")
        progress.report_epoch("ranking", 1, 1, 2.0, {"loss": 1.5, "rmse": 1.2})
    finally:
        logger.removeHandler(handler)
    assert "    RankingTrainer epoch 1/1 loss=1.5000 rmse=1.2000 2 s" in out.getvalue()


def test_session_sends_every_kind_of_output_to_the_log(tmp_path):
    """Python prints, logging, raw fd writes (as TensorFlow's C++ makes) and child
    processes go to the log; the console shows its lines; the fds come back, and
    finalizers failing at exit are reported in the log."""
    script = textwrap.dedent("""
        import os, subprocess, sys, warnings
        from absl import logging
        from pipeline import console
        with console.session(sys.argv[1]) as session:
            print("python stdout")
            logging.info("absl info")
            warnings.warn("a warning")
            os.write(2, b"c++ stderr\\n")
            subprocess.run([sys.executable, "-c", "print('child stdout')"], check=True)
            session.console.line("for a person")
            try:
                raise ValueError("it broke\\nsecond line")
            except ValueError as error:
                session.error(error, details=True)
        print("after the session")

        class Finalized:
            def __del__(self):
                raise TypeError("a finalizer failing as the interpreter exits")

        kept_until_exit = Finalized()
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (log,) = (tmp_path / console.LOG_DIR).glob("run-*.log")
    assert done.stdout.splitlines() == [f"Log: {log}", "for a person", f"Log: {log}",
                                        "after the session"]
    assert done.stderr.splitlines() == [f"error: ValueError: it broke (traceback in {log})"]
    text = log.read_text()
    for noise in ("python stdout", "absl info", "a warning", "c++ stderr", "child stdout",
                  "Traceback (most recent call last)", "second line",
                  "error: ValueError: it broke", "Exception ignored in",
                  "a finalizer failing as the interpreter exits"):
        assert noise in text


def test_run_prints_little_and_logs_the_rest(served_pipeline):
    """The real command on small data (conftest.py's ``served_pipeline``): under 60
    lines. (Beam runs in memory to save time; worker processes' output is the session
    test's child process.)"""
    run = served_pipeline
    output_root = run.output_root
    printed = run.printed
    assert run.returncode == 0, "\n".join(printed[-40:])
    assert len(printed) < MAX_LINES, "\n".join(printed)
    assert not run.stderr, run.stderr

    logs = [line.split(": ", 1)[1] for line in printed if line.startswith("Log: ")]
    assert len(logs) == 2 and logs[0] == logs[1], printed
    assert os.path.dirname(logs[0]) == os.path.join(output_root, console.LOG_DIR)
    with open(logs[0]) as handle:
        log = handle.read()
    assert "Component RetrievalTrainer is running." in log  # TFX's absl logging at INFO
    assert "Pipeline configuration:" in log and "      model_run: " in log  # full summary

    components = {re.match(r"\[\d+/(\d+)\] (\w+) \.\.\. (done in [\d.]+ s|cached)$", line)
                  for line in printed} - {None}
    names = {match.group(2) for match in components}
    assert len(names) == int(next(iter(components)).group(1)) == 25, printed
    assert {"MovieLensExampleGen", "RetrievalEvaluator", "SequentialPusher",
            "TwoStageBuilder", "BatchRecommender"} <= names
    epochs = SERVED_EPOCHS  # at most five epochs: a line for each
    for model in ("Retrieval", "Ranking", "Sequential"):
        for epoch in range(1, epochs + 1):
            line = rf"    {model}Trainer epoch {epoch}/{epochs} loss=\S+( rmse=\S+)? \d+ s"
            assert any(re.fullmatch(line, printed_line) for printed_line in printed), printed
    assert any(line.startswith("Pipeline ") and " finished in " in line for line in printed)
    assert any("eval: " in line for line in printed)
    reports = [line[len("Report: "):] for line in printed if line.startswith("Report: ")]
    assert len(reports) == 1 and os.path.isfile(reports[0]), printed  # run_report.py
    assert not any(line.startswith("warning:") for line in printed), printed
