"""MovieLensExampleGen's settings: the one definition, TensorFlow- and TFX-free.

The component takes an :class:`ExampleGenConfig` as one parameter (JSON in its spec),
the executor and the Beam workers read the same object, and the command line builds its
options from the fields' ``help`` metadata (pipeline/options.py). Defaults are the
TensorFlow sequential-recommendation tutorial's flags.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from components import contract, typed_values

# The component's execution parameters (its spec, the executor and the Vertex driver).
DATA_DIR = "data_dir"
INPUT_FINGERPRINT = "input_fingerprint"  # changes with the data: reruns on new data only
CONFIG = "config"  # an ExampleGenConfig as JSON

SPLIT_RANDOM = "random"
SPLIT_TEMPORAL = "temporal"
SPLIT_LEAVE_LAST_OUT = "leave_last_out"
# The leakage-free protocols of each kind at once: rating examples by the global time
# cutoff (temporal), sequence examples leave-last-out.
SPLIT_HONEST = "honest"
SPLIT_STRATEGIES = (SPLIT_RANDOM, SPLIT_TEMPORAL, SPLIT_LEAVE_LAST_OUT, SPLIT_HONEST)
_HONEST_BY_KIND = {contract.RATING: SPLIT_TEMPORAL, contract.SEQUENCE: SPLIT_LEAVE_LAST_OUT}


def _setting(default, help_text: str, **metadata):
    return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


@dataclasses.dataclass(frozen=True)
class ExampleGenConfig:
    """How ratings become examples (each field's ``help`` says what it does)."""

    min_rating: Optional[float] = _setting(
        2.0, "keep ratings >= this in the timelines; 'none' keeps all")
    min_timeline_length: int = _setting(
        3, "skip users with fewer kept ratings")
    max_context_length: int = _setting(
        10, "previous movies per sequence example (the padded length)")
    max_context_movie_genre_length: int = _setting(
        10, "genres per sequence example (the padded length)")
    split_strategy: str = _setting(
        SPLIT_RANDOM, "how examples are split into train/eval: random (a seeded hash of "
        "user and position), temporal (a global time cutoff), leave_last_out (each "
        "user's last label / rating to eval) or honest (ratings temporal, sequences "
        "leave_last_out)", choices=SPLIT_STRATEGIES)
    train_fraction: float = _setting(0.9, "train share of sequence examples")
    rating_train_fraction: float = _setting(0.8, "train share of rating examples")
    seed: int = _setting(42, "seed of the splits")
    max_bad_fraction: float = _setting(
        0.0, "fail when a larger share of rating lines is unusable")

    def __post_init__(self):
        if self.split_strategy not in SPLIT_STRATEGIES:
            raise ValueError(f"split_strategy must be one of {SPLIT_STRATEGIES}, "
                             f"not {self.split_strategy!r}")
        for name in ("train_fraction", "rating_train_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1, "
                                 f"not {getattr(self, name)}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be within [0, 1], "
                             f"not {self.max_bad_fraction}")
        for name, least in (("min_timeline_length", 2), ("max_context_length", 1),
                            ("max_context_movie_genre_length", 1)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be at least {least}, not {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values) -> "ExampleGenConfig":
        return typed_values.build(cls, values, "example generation setting")

    def to_json(self) -> str:
        return json.dumps(typed_values.to_plain(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExampleGenConfig":
        return cls.from_dict(json.loads(text))

    def split_strategy_of(self, kind: str) -> str:
        """The split of one kind of examples (``contract.RATING`` / ``SEQUENCE``):
        ``split_strategy``, or under ``honest`` temporal for ratings and leave_last_out
        for sequences."""
        if self.split_strategy == SPLIT_HONEST:
            return _HONEST_BY_KIND[kind]
        return self.split_strategy

    def sequence_shape(self) -> dict:
        """The padded lengths the sequence examples have (written beside the vocabulary
        as ``contract.SEQUENCE_SHAPE_FILE``)."""
        return {contract.MAX_CONTEXT_LENGTH: self.max_context_length,
                contract.MAX_CONTEXT_MOVIE_GENRE_LENGTH: self.max_context_movie_genre_length}
