"""The run report (pipeline/run_report.py, report_html.py, report_charts.py): one HTML
page per run, built from ML Metadata. The end-to-end test builds it from the `retrained`
fixture (two runs in one store, the second on grown data); the others check the pieces
on small hand-made inputs, and the example generator's distributions.json on one Beam
run."""

import base64
import html.parser
import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from components import contract
from conftest import SERVED_MIN_TOP_K
from components.example_gen import distributions
from components.trainer.progress import epoch_history
from pipeline import report_charts, report_html, run_report
from pipeline.run_report import ModelRun, RunRecord, RunReport

DATA_CHARTS = ("data-ratings_per_day", "data-users_by_ratings", "data-movies_by_ratings",
               "data-dropped_lines", "data-change")


class _Page(html.parser.HTMLParser):
    """The charts (data-chart -> PNG bytes) and the visible text of a report page."""

    def __init__(self, text: str):
        super().__init__()
        self.charts, self.text = {}, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and "chart" in attrs.get("class", ""):
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix), attrs["src"][:40]
            assert attrs["data-chart"] not in self.charts, attrs["data-chart"]
            self.charts[attrs["data-chart"]] = base64.b64decode(attrs["src"][len(prefix):])
        assert tag != "script" and not attrs.get("href", "").startswith("http")

    def handle_data(self, data):
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def _assert_chart(name: str, png: bytes) -> None:
    """A PNG that decodes, is chart-sized and is not blank."""
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG", name
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 400, (name, pixels.shape)
    assert (pixels < 200).mean() > 0.01 and len(np.unique(pixels)) > 10, name


def test_report_of_two_runs_from_the_metadata_store(retrained):
    """Both runs in the history with their verdicts and pushes, every chart present and
    drawn, the data's change since the first run, sample recommendations."""
    runs, config, executions, _ = retrained
    started = time.time()
    path = run_report.write_report(config)
    seconds = time.time() - started
    assert os.path.dirname(path) == os.path.join(config.output_root, contract.REPORT_DIR)
    with open(path, encoding="utf-8") as handle:
        page = _Page(handle.read())
    gathered = run_report.gather(config)
    first, current = gathered.runs[0], gathered.current
    assert len(gathered.runs) >= 2 and current.index == len(gathered.runs)
    assert first.statistics["lines_read"] + 3000 == current.statistics["lines_read"]

    # The history: every run, each model's verdict as its blessing says.
    words = page.words
    for run in gathered.runs:
        assert f"run {run.index} " in words and run.name in words
    assert set(first.models) == {"retrieval", "ranking", "sequential"}
    assert set(current.models) == {"retrieval"}
    for run in (first, current):
        for model in run.models.values():
            assert model.blessed is not None and model.verdict in words, (run.index, model)
    blessed_now = os.path.exists(os.path.join(
        executions["RetrievalEvaluator"]["outputs"]["blessing"][0], "BLESSED"))
    assert current.models["retrieval"].blessed is blessed_now
    assert all(model.blessed for model in first.models.values())  # gates they all clear
    assert all(model.pushed_version for model in first.models.values())
    assert f"pushed v{first.models['retrieval'].pushed_version}" in words
    assert f"top_100_accuracy >= {SERVED_MIN_TOP_K:g}" in words  # the thresholds applied
    assert "top_100_accuracy >= baseline -0.01" in words
    assert current.models["retrieval"].baseline_id == first.models["retrieval"].model_id

    # Every chart, drawn.
    expected = {f"{kind}-retrieval" for kind in ("comparison", "training", "slices")}
    expected |= {f"history-{name}" for name in ("retrieval", "ranking", "sequential")}
    expected |= set(DATA_CHARTS)
    assert expected <= set(page.charts), sorted(page.charts)
    for name, png in page.charts.items():
        _assert_chart(name, png)

    # Training curves from metrics.json, slices from TFMA, the data's change, samples.
    history = current.models["retrieval"].metrics[contract.METRICS_HISTORY]
    assert [row["epoch"] for row in history] == [1, 2, 3] and "loss" in history[0]
    slices = current.models["retrieval"].slices
    assert {"<=20", "21-100", ">100"} >= set(slices[contract.USER_ACTIVITY]) != set()
    assert list(slices[contract.MOVIE_POPULARITY]) == ["head", "torso", "tail"]
    assert "rating lines read" in words and "+3,000" in words
    samples = gathered.samples or run_report.sample_recommendations(config.serving_root)[0]
    assert "retrieval (pushed version" in words and "user 1" in words
    assert {"retrieval", "sequential"} <= set(samples)
    print(f"report built in {seconds:.1f} s: {path}")


# --- The pieces, on hand-made inputs ---------------------------------------------------------


def test_distributions_bin_counts_in_powers_of_two():
    assert [distributions.log2_bin(n) for n in (1, 2, 3, 4, 5, 8, 9)] == [0, 1, 2, 2, 3, 3, 4]
    assert [distributions.bin_range(i) for i in range(4)] == [(1, 1), (2, 2), (3, 4), (5, 8)]
    day = distributions.DAY_SECONDS
    first = distributions.user_counts(np.array([10, 11, 12]), np.array([5, 6, day + 1]))
    second = distributions.user_counts(np.array([10]), np.array([day * 3]))
    summed = {}
    for counts in (first, second):
        for key, value in counts.items():
            summed[key] = summed.get(key, 0) + value
    result = distributions.distributions(summed)
    assert result["ratings"] == 4 and result["users"] == 2 and result["movies"] == 3
    assert result["ratings_per_day"] == [[0, 2], [day, 1], [3 * day, 1]]
    assert result["users_by_ratings"] == [[1, 1, 1], [2, 2, 0], [3, 4, 1]]
    assert result["movies_by_ratings"] == [[1, 1, 2], [2, 2, 1]]
    assert distributions.distributions({})["users_by_ratings"] == []


def test_example_gen_writes_distributions_that_match_its_statistics(synthetic_data,
                                                                      run_example_gen):
    done = run_example_gen(synthetic_data("100k"))
    with open(os.path.join(done.paths.statistics, contract.DISTRIBUTIONS_FILE)) as handle:
        spread = json.load(handle)
    statistics = done.statistics
    assert spread["ratings"] == statistics["kept"]
    assert sum(count for _, count in spread["ratings_per_day"]) == statistics["kept"]
    assert sum(users for _, _, users in spread["users_by_ratings"]) == spread["users"] == 60
    assert sum(movies for _, _, movies in spread["movies_by_ratings"]) == spread["movies"]
    movies_rated = {line.split("\t")[0] for line in done.vocabulary(contract.MOVIES_FILE)
                    if int(line.split("\t")[1]) > 0}
    assert spread["movies"] >= len(movies_rated)  # the vocabulary counts timelines only


def test_epoch_history_is_one_row_per_epoch():
    assert epoch_history({"loss": [3.0, 2.0], "rmse": [1.5, 1.2]}) == [
        {"epoch": 1, "loss": 3.0, "rmse": 1.5}, {"epoch": 2, "loss": 2.0, "rmse": 1.2}]
    assert epoch_history({}) == []


def test_thresholds_read_from_the_evaluators_config(tmp_path):
    metric = {"className": "RankTopKAccuracy",
              "config": json.dumps({"k": 100, "name": "top_100_accuracy"}),
              "perSliceThresholds": [{"slicingSpecs": [{}], "threshold": {
                  "valueThreshold": {"lowerBound": 0.1},
                  "changeThreshold": {"direction": "HIGHER_IS_BETTER", "absolute": -0.01}}}]}
    (tmp_path / "eval_config.json").write_text(json.dumps(
        {"evalConfig": {"metricsSpecs": [{"metrics": [{"className": "ExampleCount"}, metric]}]}}))
    assert run_report.gate_thresholds(str(tmp_path)) == [
        "top_100_accuracy >= 0.1", "top_100_accuracy >= baseline -0.01"]
    assert run_report.model_name("RetrievalTrainer") == "retrieval"
    assert run_report.model_name("MovieLensExampleGen") is None


@pytest.mark.parametrize("draw", [
    lambda: report_charts.comparison("m", {"top_100": 0.5, "rmse": 1.1}, {"top_100": 0.4},
                                     ("top_100", "rmse")),
    lambda: report_charts.comparison("m", {"top_100": 0.5}, None, ("top_100",)),
    lambda: report_charts.history("m", [
        {"run": 1, "metrics": {"top_100": 0.5}, "blessed": True, "pushed_version": "7"},
        {"run": 3, "metrics": {"top_100": 0.3}, "blessed": False, "pushed_version": None}],
        ("top_100",), [1, 2, 3]),
    lambda: report_charts.slices("m", {"": {"all": {"acc": 0.5}}, "user_activity": {
        "<=20": {"acc": 0.4, "example_count": 10}, ">20": {"acc": 0.6}}}, "acc"),
    lambda: report_charts.training_curves("m", [{"epoch": 1, "loss": 3.0, "rmse": 1.4},
                                                {"epoch": 2, "loss": 2.0, "rmse": 1.1}]),
    lambda: report_charts.training_curves("m", []),
    lambda: report_charts.ratings_per_day([[0, 3], [86_400, 5], [5 * 86_400, 1]]),
    lambda: report_charts.long_tail([[1, 1, 5], [2, 2, 3], [3, 4, 1]], "user"),
    lambda: report_charts.dropped_lines({"non_numeric": 2, "duplicate_rating": 0}),
    lambda: report_charts.data_change([("ratings", 100, 150), ("users", 10, 9),
                                       ("movies", None, 4)]),
    lambda: report_charts.data_change([]),
], ids=["comparison", "comparison-no-baseline", "history", "slices", "training",
        "training-empty", "per-day", "long-tail", "dropped", "data-change",
        "data-change-empty"])
def test_each_chart_draws_a_png(draw):
    _assert_chart("chart", draw())


def _statistics(lines: int, kept: int, users: int, dropped: int) -> dict:
    """A statistics.json as the example generator writes it (the fields the page reads)."""
    return {"lines_read": lines, "kept": kept, "users": users, "users_skipped_short": 0,
            "dropped": {"non_numeric": dropped}, "ratings_below_min_rating": 0,
            "sequence_examples": {"train": 1, "eval": 1},
            "rating_examples": {"train": kept - 1, "eval": 1}}


def _hand_made_report() -> RunReport:
    metrics = {"top_100": 0.5, "top_10": 0.1, contract.METRICS_HISTORY: [
        {"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.5}]}
    first = RunRecord(1, "run-a", 1_700_000_000.0, {"retrieval": ModelRun(
        "retrieval", "ran", 1, metrics, True, "BLESSED", ["top_100_accuracy >= 0.1"],
        pushed_version="111")}, "ran", _statistics(10, 9, 2, 1), None)
    refused = ModelRun("retrieval", "ran", 2, dict(metrics, top_100=0.2), False,
                       "NOT blessed (top_100_accuracy 0.2000)", ["top_100_accuracy >= 0.3"],
                       baseline_id=1, baseline_metrics=metrics)
    refused.slices = {"": {"all": {"top_100_accuracy": 0.2, "top_100_accuracy_diff": -0.3,
                                   "example_count": 12.0}},
                      contract.USER_ACTIVITY: {"<=20": {"top_100_accuracy": 0.2}}}
    refused.baseline_slices = {"": {"all": {"top_100_accuracy": 0.5}},
                               contract.USER_ACTIVITY: {"<=20": {"top_100_accuracy": 0.5}}}
    spread = {"movies": 4, "ratings_per_day": [[0, 12]], "users_by_ratings": [[1, 1, 3]],
              "movies_by_ratings": [[1, 1, 1], [2, 2, 3]]}
    second = RunRecord(2, "run-b", 1_700_086_400.0, {"retrieval": refused}, "ran",
                       _statistics(12, 12, 3, 0), spread, failed=["RetrievalPusher"])
    return RunReport("p", [first, second], {"retrieval": [
        {"user": 1, "query": "user 1", "version": "111", "items": [("A <b>", 5)]}]})


def test_render_a_hand_made_report():
    gathered = _hand_made_report()
    page = _Page(report_html.render(gathered))
    assert {"comparison-retrieval", "training-retrieval", "history-retrieval",
            "slices-retrieval", *DATA_CHARTS} == set(page.charts)
    for name, png in page.charts.items():
        assert report_html.png_size(png) == Image.open(io.BytesIO(png)).size
    words = page.words
    assert "NOT blessed (top_100_accuracy 0.2000)" in words and "BLESSED" in words
    assert "pushed v111" in words and "FAILED at RetrievalPusher" in words
    assert "A <b> (5)" in words  # escaped, shown as text
    assert report_html.data_changes(gathered.previous, gathered.current) == [
        ("rating lines read", 10, 12), ("ratings kept", 9, 12), ("users", 2, 3),
        ("movies rated", None, 4)]
    assert [p["run"] for p in report_html.history_points(gathered.runs, "retrieval")] == [1, 2]
    names, current, baseline = report_html.compared_figures(gathered.current.models["retrieval"])
    assert names[0] == "top_100_accuracy (Evaluator)"  # both on this run's eval data
    assert (current[names[0]], baseline[names[0]]) == (0.2, 0.5)
    assert (current["top_100"], baseline["top_100"]) == (0.2, 0.5)  # metrics.json


def test_a_report_that_cannot_be_built_is_one_warning_line(tmp_path):
    """``run`` after a successful pipeline run: no report (here: no run in the store) is
    one warning line on the console, not a failure."""
    import pipeline_runner
    from pipeline import configs, console

    out = io.StringIO()
    session = console.Session(console.Console(out), log_path=str(tmp_path / "run.log"))
    config = configs.PipelineConfig(data_dir="", output_root=str(tmp_path))
    pipeline_runner.write_report(config, session)
    [line] = out.getvalue().splitlines()
    assert line.startswith("warning: the run report could not be built: ValueError: no "
                           "pipeline run in "), line
    assert line.endswith(f"(traceback in {tmp_path / 'run.log'})")


def test_the_page_says_when_a_budget_or_a_user_sample_applied():
    """A model trained on fewer examples than epochs x its split, and evaluated on a
    sample of users by its Trainer and Evaluator, is reported as such; a model without
    either gets no note."""
    metrics = {"train_examples": 800_000, "examples_seen": 1_001_472,
               "hparams": {"epochs": 6}, contract.EVAL_SAMPLED_USERS: 2_000,
               "eval_sample_seed": 0}
    sampled = ModelRun("retrieval", "ran", metrics=metrics, eval_sampled_users=2_000)
    notes = report_html.scale_notes(sampled)
    assert len(notes) == 3
    assert "2,000 users (seed 0)" in notes[0] and "Evaluator" in notes[1]
    assert "1,001,472 examples (1.25 passes over the 800,000" in notes[2]
    assert "6 segments" in notes[2]
    whole = ModelRun("ranking", "ran", metrics={"train_examples": 80_000,
                                                "examples_seen": 800_000,
                                                "hparams": {"epochs": 10}})
    assert report_html.scale_notes(whole) == []
    page = report_html.models_section(RunRecord(1, "run", 0.0, {"retrieval": sampled}))
    assert all(html.escape(note, quote=True) in page or note in page for note in notes)
