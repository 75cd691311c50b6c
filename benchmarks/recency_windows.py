"""Which windows for the retrieval model's recency prior? Chosen on validation, not on the
eval split: the retrieval preset with each set of ``recency_windows_days`` trained on
ML-100K's temporal training ratings before the validation cutoff, scored on the
validation ratings (the last 10% in time of the training split: ``quality.py``'s
temporal protocol, whose baselines are tuned the same way).

    PYTHONPATH=. .venv/bin/python benchmarks/recency_windows.py --work-dir /tmp/windows

One line per set (HR@10, NDCG@10, Recall@100 over the whole catalogue, the user's
earlier movies excluded), then one JSON object with every figure and the set with the
best validation NDCG@10. About a minute per set on 2 cores.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# The sets compared: none, one month, the month and the year, and with a week added.
WINDOW_SETS = ((), (30,), (30, 365), (7, 30, 365), (7, 30))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get(
        "MOVIELENS_100K_DIR", "/work/shared/data/ml-100k"))
    parser.add_argument("--work-dir", required=True)
    args = parser.parse_args(argv)

    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    import components  # noqa: F401
    from benchmarks import protocols, training
    from benchmarks.recency_blend import _fit_split_file
    from components import contract
    from components.trainer import evaluation as trainer_eval
    from components.trainer import hparams as hp

    os.makedirs(args.work_dir, exist_ok=True)
    paths, _ = protocols.generate_examples(args.data_dir,
                                           os.path.join(args.work_dir, "examples"), "honest")
    split = protocols.load_split(paths, contract.RATING)
    fit, validation = protocols.temporal_validation(split.train)
    fit_seen = protocols.history_of(fit)
    validation = validation.take(protocols.warm(validation, fit_seen))
    fit_files = _fit_split_file(split.train_files, int(fit.timestamps.max()),
                                os.path.join(args.work_dir, "fit.tfrecord.gz"))
    results = {}
    for windows in WINDOW_SETS:
        hparams = hp.HParams.from_dict({**hp.PRESETS[hp.RETRIEVAL],
                                        "recency_windows_days": windows})
        model, _ = training.train(f"windows {windows}", hparams, split.vocabulary, fit_files)
        catalogue = trainer_eval.catalogue_embeddings(model.candidate_tower, split.vocabulary)

        def scores(part, model=model, catalogue=catalogue):
            queries = model.query_tower({contract.USER_ID: tf.constant(part.users, tf.int64)})
            return queries.numpy() @ catalogue.T

        figures = protocols.score_metrics(scores, validation, fit_seen)
        name = ",".join(map(str, windows)) or "none"
        results[name] = {"hr_10": round(figures["top_10"], 4),
                         "ndcg_10": round(figures["ndcg_10"], 4),
                         "recall_100": round(figures["top_100"], 4)}
        training.log(f"validation, windows {name}: {results[name]}")
    best = max(results, key=lambda name: results[name]["ndcg_10"])
    print(json.dumps({"validation_ratings": len(validation), "figures": results,
                      "best_ndcg_10": best}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
