"""Which windows for the retrieval model's recency prior, and how strongly to serve it?
Chosen on validation, not on the eval split: the retrieval preset with each set of
``recency_windows_days`` trained on ML-100K's temporal training ratings before the
validation cutoff, scored on the validation ratings (the last 10% in time of the
training split: ``quality.py``'s temporal protocol, whose baselines are tuned the same
way), with the prior's trained weights times each of ``SERVING_SCALES``
(``recency_serving_scale``: the model is trained once per set, the scale changes only
the served query's prior coordinates).

    PYTHONPATH=. .venv/bin/python benchmarks/recency_windows.py --work-dir /tmp/windows

One line per set and scale (HR@10, NDCG@10, Recall@100 over the whole catalogue, the
user's earlier movies excluded), then one JSON object with every figure and the set and
scale with the best validation NDCG@10. About a minute per set on 2 cores.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# pylint: disable=wrong-import-position
import tensorflow as tf  # noqa: E402

from benchmarks import protocols, training  # noqa: E402
from components import contract  # noqa: E402
from components.trainer import evaluation as trainer_eval  # noqa: E402
from components.trainer import hparams as hp  # noqa: E402

# The sets compared: none, one month, the month and the year, and with a week added.
WINDOW_SETS = ((), (30,), (30, 365), (7, 30, 365), (7, 30))
# The served prior's weights over the trained ones (recency_serving_scale).
SERVING_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)


def main(argv=None) -> int:
    args = protocols.temporal_fit_args(__doc__.split("\n\n")[0], argv)
    data = protocols.temporal_fit(args.data_dir, args.work_dir)
    split, validation = data.split, data.validation
    results = {}
    for windows in WINDOW_SETS:
        hparams = hp.HParams.from_dict({**hp.PRESETS[hp.RETRIEVAL],
                                        "recency_windows_days": windows,
                                        "recency_serving_scale": 1.0})
        model, _ = training.train(f"windows {windows}", hparams, split.vocabulary,
                                  data.fit_files)
        catalogue = trainer_eval.catalogue_embeddings(model.candidate_tower, split.vocabulary)
        for scale in SERVING_SCALES if windows else (1.0,):

            def scores(part, model=model, catalogue=catalogue, scale=scale, k=len(windows)):
                queries = model.query_tower(
                    {contract.USER_ID: tf.constant(part.users, tf.int64)}).numpy()
                if k:  # the prior's coordinates, last (recency.PriorQueryTower)
                    queries[:, -k:] *= scale
                return queries @ catalogue.T

            figures = protocols.score_metrics(scores, validation, data.fit_seen)
            name = ",".join(map(str, windows)) or "none"
            name += f" x{scale:g}" if windows else ""
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
