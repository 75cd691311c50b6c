"""Benchmark: the self-attention sequential model (``attention``) against the GRU
(``sequential``) and last-item Markov, under leave-last-out, on MovieLens-100K.

Protocol: the example generator (``generate.generate`` in-process) with
``split_strategy=leave_last_out`` (each user's last label to eval, the rest to train;
``min_rating`` 2, 10 context movies: ExampleGenConfig's defaults). Each model trains on
the train split with its preset (components/trainer/hparams.py) plus any ``--hparam``
overrides, and is scored on each user's held-out next movie over the whole catalogue,
the user's movies in the training examples (labels and contexts: every movie they saw
before) left out. HR@10: the share of users whose movie ranks in the first 10; NDCG@10:
``1 / log2(rank + 2)`` for those, 0 otherwise, averaged. Last-item Markov: the movies
that most often follow the history's last movie in the training examples, ties by
popularity.

Usage (a few minutes per model on 2 cores)::

    PYTHONPATH=. .venv/bin/python benchmarks/attention.py
    PYTHONPATH=. .venv/bin/python benchmarks/attention.py --models attention \\
        --hparam attention.epochs=10 --variant every_position_weight=0,epochs=8

``--variant`` trains the ``attention`` kind once more with those overrides (repeatable).
``--max-context-length`` generates the examples with that many context movies.
``--seeds 0,1,2`` trains every model once per seed (initialization, shuffling and
dropout draws) and reports each seed's figures, their mean and standard deviation, and
the attention model's mean HR@10 over the GRU's: one seed's difference between the two
is within their spread from seed to seed.
Prints HR@10 / NDCG@10 after every epoch and one line per model and, last, a JSON
object of every figure.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
from typing import Callable, Dict

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import components  # noqa: E402,F401  (TF_USE_LEGACY_KERAS=1 before TensorFlow)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import protocols, training  # noqa: E402
from benchmarks.tutorial_protocol import Data  # noqa: E402
from components import contract  # noqa: E402
from components.example_gen.config import ExampleGenConfig  # noqa: E402
from components.trainer import evaluation as trainer_eval  # noqa: E402
from components.trainer import hparams as hp  # noqa: E402
from components.trainer import inputs  # noqa: E402
from components.trainer import models as M  # noqa: E402
from pipeline import options  # noqa: E402

K = 10


def generate_leave_last_out(data_dir: str, out: pathlib.Path, max_context_length: int):
    """The example generator's outputs for ``data_dir`` split leave-last-out, with up to
    ``max_context_length`` context movies per example."""
    return protocols.generate_examples(data_dir, str(out), "leave_last_out",
                                       max_context_length=max_context_length)[0]


def hit_rate_and_ndcg(figures: Dict[str, float], users: int,
                     k: int = K) -> Dict[str, float]:
    """This script's names for ``rank_metrics``' HR@k and NDCG@k (one held-out movie per
    user)."""
    return {f"hr@{k}": figures[f"top_{k}"], f"ndcg@{k}": figures[f"ndcg_{k}"],
            "users": int(users)}


def ranks_excluding_seen(query_fn: Callable, catalogue: np.ndarray, data: Data,
                         history) -> np.ndarray:
    """Each eval example's label rank over ``catalogue`` (``query_fn(batch)`` -> ``[b,
    D]``), the user's training movies left out."""
    ranks = []
    for batch in data.sequence_eval:
        labels = trainer_eval.movie_rows(data.vocabulary,
                                         batch[contract.LABEL_MOVIE_ID].numpy())
        excluded = history.pairs_of(batch[contract.USER_ID].numpy())
        ranks.append(trainer_eval.label_ranks(np.asarray(query_fn(batch), np.float32),
                                              catalogue, labels, excluded))
    return np.concatenate(ranks)


def score(model, data: Data, history) -> Dict[str, float]:
    """HR@10 and NDCG@10 of a sequence model on the eval split (seen movies left out)."""
    catalogue = trainer_eval.catalogue_embeddings(model.candidate_tower, data.vocabulary)
    ranks = ranks_excluding_seen(lambda batch: model.query_tower(batch).numpy(), catalogue,
                                 data, history)
    return hit_rate_and_ndcg(trainer_eval.rank_metrics(ranks, (K,)), len(ranks))


class EpochScore(tf.keras.callbacks.Callback):
    """Prints the eval figures after each epoch (the curve, to choose ``epochs``)."""

    def __init__(self, name: str, data: Data, history):
        super().__init__()
        self.name, self.data, self.history = name, data, history

    def on_epoch_end(self, epoch, logs=None):
        training.log(f"  [{self.name}] after epoch {epoch + 1}: "
                    f"{score(self.model, self.data, self.history)}")


def train(name: str, hparams, data: Data, history):
    """``quality.train``'s model and time, scoring the eval split after each epoch."""
    training.log(f"[{name}] training: {training.describe(hparams)}")
    started = time.time()
    model = M.compile_model(M.build_model(hparams, data.vocabulary), hparams)
    model.fit(inputs.input_dataset(hparams, data.vocabulary,
                                   data.files["sequence"]["train"], training=True),
              epochs=hparams.epochs, verbose=0,
              callbacks=[training.Progress(name), EpochScore(name, data, history)])
    return model, time.time() - started


def over_seeds(figures: Dict[int, Dict[str, float]]) -> Dict[str, object]:
    """One model's figures at several seeds: each seed's, and per metric the mean and
    the sample standard deviation (0 for one seed)."""
    summary: Dict[str, object] = {"seeds": {str(seed): f for seed, f in figures.items()}}
    for metric in (f"hr@{K}", f"ndcg@{K}", "train_seconds"):
        values = np.array([f[metric] for f in figures.values()], np.float64)
        summary[metric] = float(values.mean())
        summary[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=protocols.default_ml100k_dir())
    parser.add_argument("--models", default=f"{contract.SEQUENTIAL},{contract.ATTENTION}")
    parser.add_argument("--hparam", action="append", default=None,
                        metavar="MODEL.NAME=VALUE")
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME=VALUE,...")
    parser.add_argument("--seeds", default="0",
                        help="comma-separated seeds: every model trains once per seed "
                        "(default %(default)s)")
    parser.add_argument("--max-context-length", type=int,
                        default=ExampleGenConfig.max_context_length,
                        help="context movies per example, for every model (default "
                        "%(default)s: the example generator's)")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    if not seeds:
        parser.error("--seeds needs at least one seed")
    overrides = options.parse_hparams(args.hparam)
    runs = [(name, {**overrides.get(name, {}), "model": name})
            for name in args.models.split(",") if name]
    for number, variant in enumerate(args.variant, start=1):
        runs.append((f"{contract.ATTENTION}-{number}", {
            **overrides.get(contract.ATTENTION, {}), "model": contract.ATTENTION,
            **options.parse_hparams([f"{contract.ATTENTION}.{pair}" for pair in
                                     variant.split(",")])[contract.ATTENTION]}))
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        data = Data(generate_leave_last_out(args.data_dir, pathlib.Path(work),
                                                args.max_context_length))
        spec = inputs.select(inputs.sequence_feature_spec(*data.vocabulary.sequence_shape()),
                             [contract.USER_ID, contract.CONTEXT_MOVIE_ID,
                              contract.LABEL_MOVIE_ID])
        data.sequence_train, data.sequence_eval = (
            inputs.make_dataset(data.files["sequence"][split], spec, 4096, shuffle=False)
            for split in contract.SPLITS)
        history = trainer_eval.user_history(
            data.sequence_train, data.vocabulary,
            (contract.LABEL_MOVIE_ID, contract.CONTEXT_MOVIE_ID))
        eval_set = data.sequences[contract.EVAL]
        results = {"markov": hit_rate_and_ndcg(protocols.last_item_markov(
            data.sequences[contract.TRAIN], eval_set, history, data.label_counts, (K,)),
            len(eval_set))}
        training.log(f"[markov] {results['markov']}")
        for name, config in runs:
            figures, described = {}, None
            for seed in seeds:
                hparams = hp.HParams.from_dict({**config, "seed": seed})
                described = described or training.describe(hparams)
                label = name if len(seeds) == 1 else f"{name} seed {seed}"
                model, seconds = train(label, hparams, data, history)
                figures[seed] = {**score(model, data, history),
                                 "train_seconds": round(seconds)}
                training.log(f"[{label}] {figures[seed]}")
            results[name] = ({**figures[seeds[0]]} if len(seeds) == 1
                             else over_seeds(figures))
            results[name]["hparams"] = described
    if contract.SEQUENTIAL in results and contract.ATTENTION in results:
        results["attention_over_gru_hr@10"] = (results[contract.ATTENTION][f"hr@{K}"]
                                               / results[contract.SEQUENTIAL][f"hr@{K}"])
    results["seeds"] = seeds
    results["max_context_length"] = args.max_context_length
    results["wall_seconds"] = round(time.time() - started)
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
