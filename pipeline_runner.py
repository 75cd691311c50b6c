"""Command line of the MovieLens recommender pipeline.

  python pipeline_runner.py run --data-dir ../shared/data/ml-100k
  python pipeline_runner.py run --dataset ml-1m          # download from GroupLens
  python pipeline_runner.py run --help                   # every option
  python pipeline_runner.py recommend --user 42 -k 10    # from the latest pushed model
  python pipeline_runner.py report                       # the latest run's HTML report

``run`` builds the TFX pipeline (pipeline/pipeline.py) from one PipelineConfig and runs it
with LocalDagRunner: SQLite metadata and Beam's DirectRunner in multi-processing mode on
all cores, with caching on, everything under ``--output-root``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import warnings
from typing import List, Optional, Sequence

import components  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# TensorFlow's C++ start-up chatter (no GPU found, plugin registration) is noise here;
# an explicit TF_CPP_MIN_LOG_LEVEL still wins. Beam workers inherit the setting.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")
from components import contract, validation
from data import download, movielens
from pipeline import check_data, configs, console, local_lock, options, output_dirs


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "data (one of; default: $MOVIELENS_DATA_DIR if set, else --dataset ml-100k)")
    group.add_argument(
        "--data-dir", default=os.environ.get("MOVIELENS_DATA_DIR"),
        help="an extracted MovieLens directory (100K: u.data + u.item; 1M: ratings.dat, "
             "movies.dat, users.dat; CSV: ratings.csv + movies.csv). Also how to use "
             "synthetic data: python -m data.synthetic --out DIR, then --data-dir DIR.")
    group.add_argument(
        "--dataset", choices=sorted(download.DATASETS), default=None,
        help="download this MovieLens set from GroupLens (SHA-256 checked, cached)")
    group.add_argument(
        "--cache-dir", default=None,
        help="download cache (default: $MOVIELENS_CACHE or ~/.cache/movielens)")


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    defaults = configs.PipelineConfig(data_dir="")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="settings by section (example_gen, training, evaluation, "
                             "serving), JSON or YAML; command-line options win over it "
                             "(see pipeline/options.py)")
    parser.add_argument("--output-root", default=defaults.output_root,
                        help="where artifacts (pipeline_root/), the metadata store "
                             "(metadata.sqlite) and pushed models (serving/) go "
                             "(default: %(default)s)")
    parser.add_argument("--pipeline-name", default=defaults.pipeline_name,
                        help="TFX pipeline name (default: %(default)s)")
    parser.add_argument("--no-cache", action="store_true",
                        help="rerun every component even when its inputs are unchanged")
    parser.add_argument("--beam-arg", action="append", default=None, metavar="ARG",
                        help="a Beam pipeline option, repeatable; replaces the default "
                             f"{' '.join(defaults.beam_pipeline_args)}")
    group = parser.add_argument_group("example generation")
    options.add_dataclass_options(group, configs.ExampleGenConfig)
    group.add_argument("--keep-all-ratings", action="store_const", const=None,
                       dest="min_rating", default=argparse.SUPPRESS,
                       help="no minimum rating (the same as --min-rating none)")
    training = configs.TrainingConfig()
    group = parser.add_argument_group("training")
    group.add_argument("--models", default=None,
                       help="comma-separated models to train, one Trainer each; "
                            f"known: {', '.join(contract.MODEL_KINDS)} "
                            f"(default: {','.join(training.models)})")
    group.add_argument("--hparam", action="append", default=None, metavar="MODEL.NAME=VALUE",
                       help="set one hyperparameter of one model, repeatable, e.g. "
                            "retrieval.embedding_dim=64 (every name and default: "
                            "components/trainer/hparams.py)")
    group.add_argument("--epochs", type=int, default=None,
                       help="override every model's epochs (e.g. 1 for a quick run)")
    group.add_argument("--train-steps", type=int, default=None,
                       help="train every model on its first N batches only (0: export "
                            "untrained models, which the Evaluators should refuse)")
    group = parser.add_argument_group("evaluation gates (Evaluator)")
    options.add_dataclass_options(group, configs.EvaluationConfig)
    options.add_dataclass_options(
        parser.add_argument_group("batch recommendations (BatchRecommender)"),
        configs.BatchConfig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline_runner.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the pipeline locally (LocalDagRunner)",
        description="Run the whole pipeline locally with LocalDagRunner, SQLite metadata "
                    "and Beam's DirectRunner (multi-processing, all cores), caching on.")
    _add_data_options(run)
    _add_pipeline_options(run)
    run.add_argument("--verbose", action="store_true",
                     help="show all logging, warnings and TensorFlow / Beam output here, as "
                          "they come, instead of in the run's log file "
                          f"(<output-root>/{console.LOG_DIR}/run-<time>.log)")

    compile_ = commands.add_parser(
        "compile", help="compile the pipeline for Kubeflow Pipelines v2 or Vertex AI",
        description="Write the pipeline spec JSON (KubeflowV2DagRunner). --data-dir and "
                    "--output-root may be gs:// paths; --beam-arg passes Beam options "
                    "(e.g. --beam-arg=--runner=DataflowRunner --beam-arg=--project=P ...).")
    compile_.add_argument("--target", choices=configs.KUBEFLOW_TARGETS, required=True,
                          help="where the spec will run (both read the same KFP v2 JSON)")
    compile_.add_argument("--image", required=True,
                          help="container image holding this repository and its locked "
                               "dependencies (see Dockerfile)")
    compile_.add_argument("--output", default=None,
                          help="spec path (default: <output-root>/<pipeline-name>.json, or "
                               "./<pipeline-name>.json for a remote output root)")
    _add_data_options(compile_)
    _add_pipeline_options(compile_)
    options.add_dataclass_options(
        compile_.add_argument_group("Vertex AI Training (--target vertex)"),
        configs.VertexTrainingConfig)

    schedule = commands.add_parser(
        "schedule", help="schedule periodic retraining on Vertex AI",
        description="Create a Vertex AI pipeline schedule for a compiled spec. Without "
                    "Google Cloud credentials nothing is created: the schedule request is "
                    "written to --request-out instead, and the command says so.")
    schedule.add_argument("--cron", required=True, help='e.g. "0 3 * * 1" (Mondays 03:00)')
    schedule.add_argument("--pipeline-json", required=True, help="the compiled spec")
    schedule.add_argument("--pipeline-root", required=True,
                          help="gs:// root for the scheduled runs' artifacts")
    schedule.add_argument("--project", default=None,
                          help="Google Cloud project (default: the credentials' project)")
    schedule.add_argument("--region", default="us-central1", help="(default: %(default)s)")
    schedule.add_argument("--display-name", default=configs.DEFAULT_PIPELINE_NAME,
                          help="(default: %(default)s)")
    schedule.add_argument("--request-out", default="outputs/schedule_request.json",
                          help="where the request goes without credentials "
                               "(default: %(default)s)")

    recommend = commands.add_parser(
        "recommend", help="top-k movies from the latest pushed model",
        description="Load the latest pushed model (<output-root>/serving/<model>[_scann]/"
                    "<version>/) and print titles and scores for a user (retrieval model) "
                    "or a watch history (sequential model), leaving out what was already "
                    "seen unless --include-rated.")
    who = recommend.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=int, help="a user id (the retrieval model)")
    who.add_argument("--history", metavar="IDS",
                     help="comma-separated movie ids watched, oldest first (the "
                          "sequential model)")
    recommend.add_argument("-k", type=int, default=10, help="how many (default: %(default)s)")
    recommend.add_argument("--model", default=None,
                           help="the pushed model's name (default: retrieval for --user, "
                                "sequential for --history)")
    recommend.add_argument("--variant", choices=["scann", "brute_force"], default="scann",
                           help="the ScaNN index or exact scoring (default: %(default)s)")
    recommend.add_argument("--two-stage", action="store_true",
                           help="the two-stage model (--user only): the retrieval model's "
                                "candidates re-ranked by the ranking model; prints both "
                                "scores")
    recommend.add_argument("--include-rated", action="store_true",
                           help="do not leave out the user's rated / the history's movies")
    recommend.add_argument("--fallback", choices=["error", "popular"],
                           default=configs.ServingConfig().fallback,
                           help="an unknown user or movie: a clear error, or the most-rated "
                                "movies (default: %(default)s)")
    recommend.add_argument("--timestamp", type=int, default=None,
                           help="query time (Unix seconds) for models that read one "
                                "(default: the user's latest rating in the data)")
    recommend.add_argument("--output-root", default=configs.DEFAULT_OUTPUT_ROOT,
                           help="the pipeline's output root (default: %(default)s)")
    recommend.add_argument("--serving-root", default=None,
                           help="the pushed models (default: <output-root>/serving)")
    report = commands.add_parser(
        "report", help="write the latest run's HTML report (history of every run)",
        description="Write one self-contained HTML page for the latest run in the metadata "
                    "store (<output-root>/" + contract.REPORT_DIR + "/run-<n>-<run>.html): "
                    "each model beside its baseline with its verdict, the history of every "
                    "run, the Evaluators' slices, training curves, the data and sample "
                    "recommendations of the pushed models. `run` writes it too.")
    report.add_argument("--output-root", default=configs.DEFAULT_OUTPUT_ROOT,
                        help="the pipeline's output root (default: %(default)s)")
    report.add_argument("--pipeline-name", default=configs.DEFAULT_PIPELINE_NAME,
                        help="(default: %(default)s)")
    check_data.add_parser(commands)
    return parser



def _is_remote(path: Optional[str]) -> bool:
    return bool(path) and "://" in path


def settings_from_args(args: argparse.Namespace):
    """The components' settings from their defaults, ``--config`` and the options given
    (in that order of precedence). ValueError names a bad value or name."""
    file = options.load_config_file(args.config) if args.config else {}
    example_gen = options.build(
        configs.ExampleGenConfig, file.get("example_gen"),
        options.given_values(args, configs.ExampleGenConfig), what="example_gen setting")
    evaluation = options.build(
        configs.EvaluationConfig, file.get("evaluation"),
        options.given_values(args, configs.EvaluationConfig), what="evaluation setting")
    training_file = dict(file.get("training") or {})
    given = {name: getattr(args, name) for name in ("models", "epochs", "train_steps")
             if getattr(args, name) is not None}
    given["hparams"] = options.merge_hparams(training_file.pop("hparams", {}),
                                             options.parse_hparams(args.hparam))
    training = options.build(configs.TrainingConfig, training_file, given,
                             what="training setting")
    serving = options.build(configs.ServingConfig, file.get("serving"), what="serving setting")
    return example_gen, training, evaluation, serving


def config_from_args(args: argparse.Namespace) -> configs.PipelineConfig:
    """Resolves the data (download if asked) and builds the one PipelineConfig."""
    example_gen, training, evaluation, serving = settings_from_args(args)  # fail first
    batch = options.build(configs.BatchConfig,
                          options.load_config_file(args.config).get("batch") if args.config
                          else None, options.given_values(args, configs.BatchConfig),
                          what="batch setting")
    vertex_training = configs.VertexTrainingConfig(
        **options.given_values(args, configs.VertexTrainingConfig))
    if vertex_training.vertex_training and getattr(args, "target", None) != "vertex":
        raise ValueError("--vertex-training needs compile --target vertex")
    if not _is_remote(args.output_root):  # a file, unwritable, /proc: one clear line
        output_dirs.ensure_writable_dir(args.output_root, "--output-root")
    if _is_remote(args.data_dir) and args.command == "compile":
        # A bucket path for Kubeflow / Vertex runs: not necessarily readable here; the
        # pipeline's cache is then keyed on the path, not on the content.
        data_dir, fingerprint = args.data_dir, None
    else:
        # A URL (gs://...) is checked and fingerprinted through Beam's file systems.
        dataset = args.dataset or (None if args.data_dir else "ml-100k")
        layout = movielens.detect_layout(
            download.resolve_data_dir(args.data_dir, dataset, args.cache_dir))
        data_dir = args.data_dir if _is_remote(args.data_dir) else str(layout.root.resolve())
        fingerprint = movielens.fingerprint(layout)
    fields = dict(
        data_dir=data_dir,
        pipeline_name=args.pipeline_name,
        output_root=(args.output_root if _is_remote(args.output_root)
                     else os.path.abspath(args.output_root)),
        input_fingerprint=fingerprint,
        enable_cache=not args.no_cache,
        example_gen=example_gen,
        training=training,
        evaluation=evaluation,
        serving=serving,
        vertex_training=vertex_training,
        batch=batch,
    )
    if args.beam_arg:
        fields["beam_pipeline_args"] = tuple(args.beam_arg)
    return configs.PipelineConfig(**fields)


def run(config: configs.PipelineConfig,
        session: Optional[console.Session] = None) -> List[dict]:
    """Runs the pipeline with LocalDagRunner; returns what each component did.
    ``session``: shows the components and epochs as they run (pipeline/console.py)."""
    started = time.time()
    # The lock first: a second run on the same output root is refused in a moment, not
    # after TFX and TensorFlow have loaded.
    with local_lock.exclusive_run(config.output_root):
        from tfx import v1 as tfx  # pylint: disable=import-outside-toplevel

        from pipeline import pipeline as pipeline_module, report  # pylint: disable=import-outside-toplevel

        pipeline = pipeline_module.create_pipeline(config)
        with session.watch(pipeline) if session else contextlib.nullcontext():
            tfx.orchestration.LocalDagRunner().run(pipeline)
            executions = report.latest_run(config)
    seconds = time.time() - started
    report.print_summary(config, executions, seconds)  # a quiet session's: into the log
    if session and session.quiet:  # and the short one on its console
        report.print_summary(config, executions, seconds, stream=session.console.out,
                             outputs=False)
    return executions


def write_report(config: configs.PipelineConfig, session: console.Session) -> None:
    """After a successful run: its HTML report (pipeline/run_report.py) and one line with
    its path; if the report cannot be built, one warning line (the traceback in the log)
    and the run still succeeds."""
    import traceback  # pylint: disable=import-outside-toplevel

    from pipeline import run_report  # pylint: disable=import-outside-toplevel

    try:
        path = run_report.write_report(config)
    except Exception as error:  # pylint: disable=broad-except  (the run itself succeeded)
        traceback.print_exc()  # into the run's log (onto the terminal with --verbose)
        text = (str(error).strip().splitlines() or [""])[0]
        where = f" (traceback in {session.log_path})" if session.quiet else ""
        session.console.line(f"warning: the run report could not be built: "
                             f"{type(error).__name__}: {text}{where}")
        return
    session.console.line(f"Report: {path}")


def report_main(args: argparse.Namespace) -> int:
    """``report``: the latest run's HTML page; prints its path."""
    import logging  # pylint: disable=import-outside-toplevel

    from pipeline import run_report  # pylint: disable=import-outside-toplevel

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TFMA's deprecation notes
    config = configs.PipelineConfig(data_dir="", pipeline_name=args.pipeline_name,
                                    output_root=args.output_root)
    if not _is_remote(config.output_root) and not os.path.exists(config.metadata_path):
        print(f"error: no metadata store at {config.metadata_path}: run the pipeline "
              f"first (or give its --output-root)", file=sys.stderr)
        return 2
    try:
        path = run_report.write_report(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Report: {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-data":
        return check_data.main(args)
    if args.command == "report":
        return report_main(args)
    if args.command == "recommend":
        from pipeline import recommend  # pylint: disable=import-outside-toplevel

        return recommend.main(args)
    if args.command == "schedule":
        from pipeline import kubeflow  # pylint: disable=import-outside-toplevel

        request = kubeflow.schedule_request(
            args.pipeline_json, args.cron, args.display_name, args.pipeline_root,
            args.project, args.region)
        print(kubeflow.schedule(request, args.request_out))
        return 0
    try:
        config = config_from_args(args)
    except (download.DownloadError, movielens.DataFormatError, FileNotFoundError,
            ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "run":
        with console.session(config.output_root, verbose=args.verbose) as session:
            print("Pipeline configuration:\n" + json.dumps(  # into the run's log
                dataclasses.asdict(config), indent=2, default=str), file=sys.stderr)
            try:
                run(config, session)
            except local_lock.OutputRootBusy as error:
                session.error(error)
                return 3
            except (validation.DataValidationError,  # anomalies: no Trainer ran
                    movielens.DataFormatError) as error:  # data the example generator refused
                session.error(error)
                return 1
            except Exception as error:  # pylint: disable=broad-except  (a component failed)
                session.error(error, details=True)
                return 1
            write_report(config, session)
    elif args.command == "compile":
        from pipeline import kubeflow  # pylint: disable=import-outside-toplevel

        output = args.output or os.path.join(
            "." if _is_remote(config.output_root) else config.output_root,
            f"{config.pipeline_name}.json")
        path = kubeflow.compile_pipeline(config, args.image, output)
        print(f"Compiled the pipeline for {args.target}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
