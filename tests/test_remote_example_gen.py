"""Example generation on an object store, through the ``remote://`` stand-in (remote_fs.py).

The data directory and every output URI are ``remote://`` paths, which builtin ``open``,
``os`` and ``pathlib`` cannot see: what passes here reads and writes only through Beam's
``FileSystems`` (or TFX's ``fileio``), as it must on ``gs://`` for Vertex AI. Each run is
compared, parsed content against parsed content, with the same run on local paths.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import pytest
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts

import pipeline_runner
from components import contract
from components.example_gen import component, executor, generate
from components.example_gen.config import ExampleGenConfig
from data import download, movielens, synthetic
from pipeline.pipeline import beam_pipeline_args
import reference_sequences as reference  # tests/ is on sys.path (conftest.py)
import remote_fs
from conftest import examples_to_dicts, read_tfrecords

ARTIFACT_TYPES = dict(
    sequence_examples=standard_artifacts.Examples, rating_examples=standard_artifacts.Examples,
    vocabulary=component.MovieLensVocabulary, statistics=component.ExampleGenStatistics)
VOCABULARIES = ("movies.tsv", "users.tsv", "genres.txt", "years.txt")
BAD_LINE = 37  # of u.data: a line with three fields, which the statistics must locate
MAX_BAD_FRACTION = 0.01


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> pathlib.Path:
    """A small 100K-layout data set (with u.genre and u.user) holding one bad line."""
    out = tmp_path_factory.mktemp("local") / "data"
    synthetic.generate(out, 30, 50, 900, "100k", 11)
    ratings = out / "u.data"
    lines = ratings.read_bytes().split(b"\n")
    lines.insert(BAD_LINE - 1, b"3\t4\t5")
    ratings.write_bytes(b"\n".join(lines))
    return out


@pytest.fixture(scope="module")
def remote(tmp_path_factory, local_data) -> str:
    """``remote://`` backed by a fresh directory; returns ``remote://bucket/``, holding a
    copy of ``local_data`` at ``remote://bucket/data``.

    Everything lives one level down, as on gs://bucket/...: remote_fs's Beam file system
    cannot glob directly under ``remote://`` (its ``_url_dirname("remote://data/")`` is
    ``remote:/``)."""
    root = remote_fs.install(tmp_path_factory.mktemp("store")) + "bucket/"
    shutil.copytree(local_data, remote_fs.local_path(root + "data"))
    return root


def _run_executor(data_dir: str, out_root: str, max_bad_fraction=MAX_BAD_FRACTION) -> dict:
    """Executor.Do on in-memory Beam into ``<out_root>/<output>``; returns the URIs.

    The output directories are not created first: on an object store there are none."""
    output_dict = {name: [artifact_type()] for name, artifact_type in ARTIFACT_TYPES.items()}
    for name, (artifact,) in output_dict.items():
        artifact.uri = f"{out_root}/{name}"
    # The pipeline's own Beam options (pipeline.beam_pipeline_args): on the DirectRunner,
    # no TFX sdist is built and staged for workers that already have it (~3 s a run).
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=beam_pipeline_args(["--direct_running_mode=in_memory"]))
    executor.Executor(context).Do(
        {}, output_dict, {"data_dir": data_dir, "config": ExampleGenConfig(
            max_bad_fraction=max_bad_fraction).to_json()})
    return {name: artifact.uri for name, (artifact,) in output_dict.items()}


def _read_outputs(uris: dict) -> dict:
    """Everything a run wrote, parsed: examples as multisets, text files as text."""
    def local(uri):
        return remote_fs.local_path(uri) if uri.startswith(remote_fs.PREFIX) else uri

    content = {}
    for kind in ("sequence_examples", "rating_examples"):
        for split in ("train", "eval"):
            records = read_tfrecords(os.path.join(local(uris[kind]), f"Split-{split}", "*.gz"))
            content[kind, split] = reference.multiset(examples_to_dicts(records))
    for name in VOCABULARIES:
        with open(os.path.join(local(uris["vocabulary"]), name), encoding="utf-8") as handle:
            content[name] = handle.read()
    statistics_dir = local(uris["statistics"])
    content["statistics_files"] = sorted(os.listdir(statistics_dir))
    with open(os.path.join(statistics_dir, contract.STATISTICS_FILE)) as handle:
        content["statistics"] = json.load(handle)
    return content


@pytest.fixture(scope="module")
def runs(remote, local_data, tmp_path_factory):
    """The same example generation on local paths and on remote:// paths, read back.

    Runs from an empty working directory, so that a remote path mistaken for a local
    one (``remote:/...`` created relative to it) shows up."""
    workdir = tmp_path_factory.mktemp("workdir")
    previous = os.getcwd()
    os.chdir(workdir)
    try:
        local_uris = _run_executor(str(local_data), str(tmp_path_factory.mktemp("local_out")))
        remote_uris = _run_executor(remote + "data", remote + "out")
    finally:
        os.chdir(previous)
    return {"local": _read_outputs(local_uris), "remote": _read_outputs(remote_uris),
            "workdir": workdir}


def test_remote_run_writes_only_through_the_file_systems(runs):
    assert os.listdir(runs["workdir"]) == []
    written = sorted([contract.DISTRIBUTIONS_FILE, contract.STATISTICS_FILE])
    assert runs["remote"]["statistics_files"] == written
    assert runs["local"]["statistics_files"] == written


@pytest.mark.parametrize("kind", ["sequence_examples", "rating_examples"])
@pytest.mark.parametrize("split", ["train", "eval"])
def test_remote_examples_equal_local(runs, kind, split):
    expected = runs["local"][kind, split]
    assert sum(expected.values()) > 0
    assert runs["remote"][kind, split] == expected


@pytest.mark.parametrize("name", VOCABULARIES)
def test_remote_vocabularies_equal_local(runs, name):
    assert runs["local"][name].strip()
    assert runs["remote"][name] == runs["local"][name]


def test_remote_statistics_equal_local_and_name_remote_files(runs, remote):
    local, remote_stats = runs["local"]["statistics"], runs["remote"]["statistics"]
    assert remote_stats["data_dir"] == remote + "data"
    [sample] = remote_stats["bad_line_samples"]
    assert (sample["file"], sample["line"], sample["reason"]) == (
        remote + "data/u.data", BAD_LINE, movielens.WRONG_FIELD_COUNT)

    def without_paths(statistics):  # and without the run's future-timestamp bound
        return {**statistics, "data_dir": None, "max_timestamp": None, "bad_line_samples": [
            {**s, "file": os.path.basename(s["file"])} for s in statistics["bad_line_samples"]]}

    assert local["dropped_total"] == 1 and local["kept"] > 0
    assert without_paths(remote_stats) == without_paths(local)


def test_remote_bad_lines_fail_naming_remote_file_and_line(remote):
    with pytest.raises(generate.BadInputError) as raised:
        _run_executor(remote + "data", remote + "out_strict", max_bad_fraction=0.0)
    assert f"{remote}data/u.data:{BAD_LINE}: {movielens.WRONG_FIELD_COUNT}" in str(
        raised.value)


def test_remote_fingerprint_equals_local(remote, local_data, tmp_path):
    expected = movielens.fingerprint(movielens.detect_layout(local_data))
    assert movielens.fingerprint(movielens.detect_layout(remote + "data")) == expected

    def config(data_dir):
        args = pipeline_runner.build_parser().parse_args(
            ["run", "--data-dir", data_dir, "--output-root", str(tmp_path)])
        return pipeline_runner.config_from_args(args)

    assert config(str(local_data)).input_fingerprint == expected
    remote_config = config(remote + "data")
    assert remote_config.data_dir == remote + "data"
    assert remote_config.input_fingerprint == expected

    # A change of content, not of place, changes the fingerprint.
    grown = remote + "grown"
    shutil.copytree(local_data, remote_fs.local_path(grown))
    with open(remote_fs.local_path(grown + "/u.data"), "ab") as handle:
        handle.write(b"1\t1\t4\t1200000000\n")
    assert config(grown).input_fingerprint != expected


def test_missing_remote_data_dir_is_named(remote, tmp_path, capsys):
    absent = remote + "absent"
    with pytest.raises(movielens.DataFormatError, match=f"not found: {absent}$"):
        movielens.detect_layout(absent)
    with pytest.raises(FileNotFoundError, match=f"--data-dir {absent} does not exist"):
        download.resolve_data_dir(absent)
    code = pipeline_runner.main(["run", "--data-dir", absent, "--output-root", str(tmp_path)])
    assert code == 2
    assert f"--data-dir {absent} does not exist" in capsys.readouterr().err
    with pytest.raises(movielens.DataFormatError, match=f"not found: {absent}$"):
        _run_executor(absent, remote + "out_absent")


def test_remote_catalogue_errors_name_file_and_line(remote, local_data):
    bad = remote + "bad_movies"
    shutil.copytree(local_data, remote_fs.local_path(bad))
    movie_file = pathlib.Path(remote_fs.local_path(bad + "/u.item"))
    lines = movie_file.read_bytes().split(b"\n")
    lines[2] = b"3|Too Few Fields (1990)"
    movie_file.write_bytes(b"\n".join(lines))
    layout = movielens.detect_layout(bad)
    assert layout.movies_path == bad + "/u.item"
    with pytest.raises(movielens.DataFormatError, match=f"{bad}/u.item:3: expected 24 fields"):
        movielens.load_movies(layout)
    movie_file.unlink()
    with pytest.raises(movielens.DataFormatError, match=f"{bad}: found u.data .* not u.item"):
        movielens.detect_layout(bad)
