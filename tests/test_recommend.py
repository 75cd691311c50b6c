"""``pipeline_runner.py recommend``: the latest pushed model, seen movies left out,
unknown users and movies."""

import numpy as np
import pytest

import pipeline_runner
from pipeline import recommend


def _recommend(runs, capsys, *args):
    code = pipeline_runner.main(["recommend", "--output-root", runs.config.output_root,
                                 *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rated(runs, user):
    path = recommend.model_dir(runs.config.serving_root, "retrieval", "brute_force")
    return set(recommend.Catalogue.load(path).rated_by(user))


def _listed_ids(output):
    return [int(line.split()[-1]) for line in output.splitlines()
            if line.strip() and line.split()[0].isdigit()]


@pytest.mark.parametrize("variant", ["scann", "brute_force"])
def test_recommend_for_a_user_leaves_out_rated_movies(served_pipeline, capsys, variant):
    code, out, _ = _recommend(served_pipeline, capsys, "--user", "42", "-k", "10",
                              "--variant", variant)
    assert code == 0
    ids = _listed_ids(out)
    assert len(ids) == 10 and not set(ids) & _rated(served_pipeline, 42)
    suffix = "_scann" if variant == "scann" else ""
    assert f"retrieval{suffix} version" in out and "leaving out the" in out
    catalogue = recommend.Catalogue.load(
        recommend.model_dir(served_pipeline.config.serving_root, "retrieval", variant))
    assert all(catalogue.titles[i] in out for i in ids)


def test_include_rated_can_return_rated_movies(served_pipeline, capsys):
    code, out, _ = _recommend(served_pipeline, capsys, "--user", "42", "-k", "100",
                              "--include-rated")
    assert code == 0
    assert set(_listed_ids(out)) & _rated(served_pipeline, 42)


def test_recommend_from_a_watch_history_uses_the_sequential_model(served_pipeline, capsys):
    code, out, _ = _recommend(served_pipeline, capsys, "--history", "1,50,172", "-k", "10")
    assert code == 0
    ids = _listed_ids(out)
    assert "sequential_scann version" in out
    assert len(ids) == 10 and not {1, 50, 172} & set(ids)


def test_unknown_user_is_a_clear_error_or_the_popularity_fallback(served_pipeline, capsys):
    code, out, err = _recommend(served_pipeline, capsys, "--user", "999999")
    assert code == 2 and "user 999999 is unknown" in err and "--fallback popular" in err
    code, out, _ = _recommend(served_pipeline, capsys, "--user", "999999", "-k", "5",
                              "--fallback", "popular")
    assert code == 0 and "most-rated" in out
    catalogue = recommend.Catalogue.load(
        recommend.model_dir(served_pipeline.config.serving_root, "retrieval"))
    top = catalogue.movie_ids[np.argsort(-catalogue.counts, kind="stable")][:5]
    assert _listed_ids(out) == top.tolist()


def test_unknown_movie_in_a_history(served_pipeline, capsys):
    code, _, err = _recommend(served_pipeline, capsys, "--history", "1,999999")
    assert code == 2 and "999999" in err and "not in the sequential model" in err
    code, out, _ = _recommend(served_pipeline, capsys, "--history", "1,999999", "-k", "5",
                              "--fallback", "popular")
    assert code == 0 and "ignoring unknown movie ids [999999]" in out
    assert len(_listed_ids(out)) == 5 and 1 not in _listed_ids(out)


def test_no_pushed_model_is_a_clear_error(tmp_path, capsys):
    code = pipeline_runner.main(["recommend", "--output-root", str(tmp_path), "--user", "1"])
    assert code == 2
    assert "no pushed 'retrieval' model" in capsys.readouterr().err


@pytest.mark.parametrize("args, limits", [
    (["--user", "42", "-k", "0"], "at least 1, not 0"),
    (["--user", "42", "-k", "-1"], "at least 1, not -1"),
    (["--user", "999999", "--fallback", "popular", "-k", "-1"], "at least 1, not -1"),
    (["--user", "42", "-k", "100000"], "between 1 and 100 (the most the pushed retrieval"),
    (["--history", "1,50", "-k", "101"], "between 1 and 100 (the most the pushed sequential"),
])
def test_k_outside_1_to_max_k_is_a_usage_error(served_pipeline, capsys, args, limits):
    code, out, err = _recommend(served_pipeline, capsys, *args)
    assert code == 2 and out == ""
    assert err.strip().startswith("error: -k must be") and limits in err
    assert len(err.strip().splitlines()) == 1


def test_k_below_1_is_refused_before_looking_for_a_model(tmp_path, capsys):
    code = pipeline_runner.main(["recommend", "--output-root", str(tmp_path), "--user", "1",
                                 "-k", "0"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: -k must be at least 1, not 0"


def test_ids_beyond_int64_are_refused_before_looking_for_a_model(tmp_path, capsys):
    for option in ("--user", "--timestamp"):
        args = ["--user", "1"] if option == "--timestamp" else []
        code = pipeline_runner.main(["recommend", "--output-root", str(tmp_path), *args,
                                     option, str(2 ** 63)])
        assert code == 2
        assert capsys.readouterr().err.strip() == (
            f"error: {option} {2 ** 63} is beyond a 64-bit integer")


def test_a_query_time_for_a_model_that_reads_none_is_refused(served_pipeline, capsys):
    code, _, err = _recommend(served_pipeline, capsys, "--user", "1", "--timestamp", "5")
    assert code == 2 and "reads no query time" in err
