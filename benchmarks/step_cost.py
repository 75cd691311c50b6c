"""What a training step costs with each optimizer and L2 setting, side by side in one run,
on a finished pipeline run's examples (``benchmarks/scale.py`` leaves one per size).

    PYTHONPATH=. .venv/bin/python benchmarks/step_cost.py --output-root /tmp/scale/run-10m \\
        --model ranking --configs adam:preset:dense,adam:preset:sparse,lazy_adam:0:dense

Each config ``OPTIMIZER:L2:UPDATES`` (``preset``: the preset's ``l2_regularization``;
``dense``: ``sparse_updates_min_rows`` 0, never sparse; ``sparse``: always, i.e. Adam is
LazyAdam and the id embeddings' penalty is on the looked-up rows) builds the preset's
model with those settings and trains ``--warmup`` steps (tracing,
the shuffle buffer); then ``--rounds`` rounds time ``--steps`` steps of each config in
turn, and each config's median round is its figure. One JSON line per config, then one
object with every row and each config's time over the first's. Only the step cost is measured
here, not what the setting does to quality.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


# A config's UPDATES -> sparse_updates_min_rows: never sparse, or from one row up.
UPDATES = {"dense": 0, "sparse": 1}


def step_costs(output_root: str, model: str, configs, warmup: int, steps: int,
               rounds: int):
    # pylint: disable=import-outside-toplevel
    import numpy as np

    from benchmarks.training_budget import run_examples
    from components.trainer import hparams as hp, inputs, models, recency

    outputs, vocabulary = run_examples(output_root)
    built = []
    for optimizer, l2, updates in configs:
        overrides = {"model": model, "optimizer": optimizer,
                     "sparse_updates_min_rows": UPDATES[updates]}
        if l2 != "preset":
            overrides["l2_regularization"] = float(l2)
        hparams = hp.HParams.from_dict(overrides)
        train = os.path.join(outputs[hparams.kind.examples_key][0], "Split-train")
        data = inputs.input_dataset(hparams, vocabulary, train, training=True).repeat()
        trained = models.compile_model(models.build_model(
            hparams, vocabulary, recency_table=recency.training_recency(
                hparams, vocabulary, train)), hparams)
        trained.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
        built.append((hparams, data, trained, []))
    # Rounds that alternate the configs, so that a slow spell of the machine falls on
    # each of them: the median round is reported.
    for _ in range(rounds):
        for hparams, data, trained, times in built:
            started = time.time()
            trained.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
            times.append((time.time() - started) / steps * 1000)
    rows = [{"optimizer": hparams.optimizer, "l2_regularization": hparams.l2_regularization,
             "sparse_updates": model.sparse_updates,
             "ms_per_step": round(float(np.median(times)), 1),
             "rounds_ms": [round(t, 1) for t in times]}
            for hparams, _, model, times in built]
    for row in rows:
        row["over_first"] = round(row["ms_per_step"] / rows[0]["ms_per_step"], 3)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-root", required=True)
    parser.add_argument("--model", default="ranking")
    parser.add_argument("--configs", default="adam:preset:dense,adam:preset:sparse")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    configs = [tuple(item.split(":")) for item in args.configs.split(",") if item]
    if any(len(item) != 3 or item[2] not in UPDATES for item in configs):
        parser.error("--configs: OPTIMIZER:L2:UPDATES items (UPDATES: dense or sparse), "
                     "e.g. adam:preset:dense,adam:preset:sparse")
    rows = step_costs(args.output_root, args.model, configs, args.warmup, args.steps,
                      args.rounds)
    print(json.dumps({"model": args.model, "output_root": args.output_root, "rows": rows}))


if __name__ == "__main__":
    sys.exit(main())
