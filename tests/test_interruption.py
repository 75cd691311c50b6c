"""A local run killed during training resumes cleanly; two runs at once are refused."""

import glob
import os
import signal
import subprocess
import sys
import time

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

import pipeline_runner
from data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for(condition, timeout, what, process=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Run A is started, a concurrent run B is tried, A is SIGKILLed while training."""
    data_dir = str(tmp_path_factory.mktemp("data"))
    # 60 epochs of 6,000 ratings: run A is still training after run B (started after A
    # takes the lock; refused before it loads TFX) has ended, on a loaded machine too --
    # with 3,000, and B refused only once it had loaded TFX, A's Trainer finished first
    # under load -- and the resumed run, which trains them all again, stays cheap.
    synthetic.generate(data_dir, users=120, movies=150, ratings=6000, fmt="100k", seed=5)
    root = str(tmp_path_factory.mktemp("outputs"))
    argv = ["run", "--data-dir", data_dir, "--output-root", root, "--models", "retrieval",
            "--epochs", "60", "--beam-arg=--direct_running_mode=in_memory"]
    log = open(os.path.join(root, "run-a.log"), "w")
    run_a = subprocess.Popen([sys.executable, "pipeline_runner.py", *argv], cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        lock = os.path.join(root, ".run.lock")
        _wait_for(lambda: os.path.exists(lock) and open(lock).read().strip() == str(run_a.pid),
                  120, "run A to take the lock", run_a)
        run_b = subprocess.run([sys.executable, "pipeline_runner.py", *argv], cwd=REPO,
                               capture_output=True, text=True, timeout=300)
        events = os.path.join(root, "pipeline_root", "RetrievalTrainer", "model_run", "*",
                              "train")
        _wait_for(lambda: glob.glob(events), 300, "training to start", run_a)
        time.sleep(2)
    finally:
        os.killpg(run_a.pid, signal.SIGKILL)
        run_a.wait()
        log.close()
    config = pipeline_runner.config_from_args(pipeline_runner.build_parser().parse_args(argv))
    resumed = pipeline_runner.run(config)
    return config, run_b, resumed


def test_a_second_run_at_once_is_refused_clearly(interrupted):
    _, run_b, _ = interrupted
    assert run_b.returncode == 3, run_b.stderr[-2000:]
    assert "another pipeline run" in run_b.stderr and "--output-root" in run_b.stderr


def test_resumed_run_reuses_finished_work_and_retrains(interrupted):
    _, _, resumed = interrupted
    states = {execution["node"]: execution["state"] for execution in resumed}
    assert states["MovieLensExampleGen"] == "cached"
    assert states["RetrievalTrainer"] == "ran"
    assert set(states.values()) <= {"cached", "ran"}


def test_no_half_written_artifact_is_published_or_used(interrupted):
    config, _, resumed = interrupted
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(config.metadata_path))
    models = store.get_artifacts_by_type("Model")
    live = [a for a in models if a.state == metadata_store_pb2.Artifact.LIVE]
    assert len(live) == 1, "exactly the resumed run's model is published"
    assert os.path.exists(os.path.join(live[0].uri, "Format-Serving", "saved_model.pb"))
    (trainer,) = [e for e in resumed if e["node"] == "RetrievalTrainer"]
    assert trainer["outputs"]["model"] == [live[0].uri]
    # The killed execution never completed, and what it had written is not what was used.
    runs = store.get_executions_by_type(
        "components.trainer.component.RecommenderTrainer")
    killed = [e for e in runs if e.last_known_state != metadata_store_pb2.Execution.COMPLETE]
    assert len(runs) == 2 and len(killed) == 1
    started_dirs = glob.glob(os.path.join(
        config.pipeline_root, "RetrievalTrainer", "model_run", "*"))
    assert len(started_dirs) == 2  # the killed run's half-written output is left aside
    assert trainer["outputs"]["model_run"][0] in started_dirs
