"""Would recency help the retrieval model under the temporal split? The retrieval preset's
scores plus ``beta x log(1 + the movie's ratings in the last 30 days of training)``,
``beta`` chosen by validation NDCG@10, on ML-100K's temporal split.

    PYTHONPATH=. .venv/bin/python benchmarks/recency_blend.py --work-dir /tmp/recency

The protocol is ``quality.py``'s temporal one (``protocols.py``): example generation with
``split_strategy=honest``; validation = the last 10% in time of the training ratings.
The preset is trained twice: on the ratings before the validation cutoff (to choose
``beta`` on validation) and on the whole training split (the figures on the held-out
ratings of the eval users with training ratings). ``beta = 0`` is the preset alone and
reproduces ``quality.py``'s ``no_recency`` row (the preset without its recency prior,
which this blend sized before it was built into the model: components/trainer/
recency.py). A blend tuned outside the model: not what the pipeline serves.
Last line: one JSON object with the validation figure per ``beta`` and the eval figures
at ``beta = 0`` and at the chosen ``beta``.
"""

import json
import os
import sys
from typing import Dict

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

BETAS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
WINDOW_DAYS = 30


def main(argv=None) -> int:
    # pylint: disable=import-outside-toplevel
    import numpy as np
    import tensorflow as tf

    import components  # noqa: F401
    from benchmarks import baselines, protocols, training

    args = protocols.temporal_fit_args(__doc__.split("\n\n")[0], argv)
    from components import contract
    from components.trainer import evaluation as trainer_eval
    from components.trainer import hparams as hp

    data = protocols.temporal_fit(args.data_dir, args.work_dir)
    split, fit, fit_seen, validation = data.split, data.fit, data.fit_seen, data.validation
    vocabulary, train_set = split.vocabulary, split.train
    seen = protocols.history_of(train_set)
    eval_set = split.eval.take(protocols.warm(split.eval, seen))
    # The preset without its own recency prior: what the blend sized before the prior
    # was built into the model (components/trainer/recency.py).
    hparams = hp.HParams.from_dict({**hp.PRESETS[hp.RETRIEVAL], "recency_windows_days": ()})

    def blend(model, ratings):
        """``beta -> score_fn``: the model's scores plus ``beta`` x the prior, the
        catalogue embedded and the prior counted once."""
        catalogue = trainer_eval.catalogue_embeddings(model.candidate_tower, vocabulary)
        prior = np.log1p(baselines.recent_counts(ratings.movies, ratings.timestamps,
                                                 vocabulary.num_movies, WINDOW_DAYS * 86_400))

        def with_beta(beta):
            def scores(part):
                queries = model.query_tower(
                    {contract.USER_ID: tf.constant(part.users, tf.int64)})
                return queries.numpy() @ catalogue.T + beta * prior[None, :]
            return scores
        return with_beta

    fit_model, _ = training.train("fit split", hparams, vocabulary, data.fit_files)
    fit_blend = blend(fit_model, fit)
    tuning = {beta: protocols.score_metrics(fit_blend(beta), validation,
                                            fit_seen)["ndcg_10"] for beta in BETAS}
    best = max(tuning, key=lambda beta: (tuning[beta], -beta))
    training.log("validation NDCG@10 by beta: " + ", ".join(
        f"{beta:g}: {value:.4f}" for beta, value in tuning.items()) + f" -> {best:g}")
    model, _ = training.train("training split", hparams, vocabulary, split.train_files)
    train_blend = blend(model, train_set)
    results: Dict[str, Dict[str, float]] = {}
    for beta in sorted({0.0, best}):
        figures = protocols.score_metrics(train_blend(beta), eval_set, seen)
        results[f"beta_{beta:g}"] = {"hr_10": round(figures["top_10"], 4),
                                     "ndcg_10": round(figures["ndcg_10"], 4),
                                     "recall_100": round(figures["top_100"], 4)}
        training.log(f"eval, beta {beta:g}: {results[f'beta_{beta:g}']}")
    print(json.dumps({"window_days": WINDOW_DAYS, "validation_ndcg_10": tuning,
                      "beta": best, "eval": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
