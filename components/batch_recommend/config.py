"""BatchRecommender's settings, TensorFlow- and TFX-free: the command line builds its
options from the fields' ``help`` metadata (pipeline/options.py), the component takes
them as parameters."""

from __future__ import annotations

import dataclasses
from typing import Tuple


def _setting(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """Whether and how the pipeline writes batch recommendations."""

    batch_recommendations: bool = _setting(
        False, "after the two-stage model is pushed, write the top-k of every user with "
        "a Beam job (BatchRecommender: TFRecord and Parquet)")
    batch_k: int = _setting(10, "movies per user in the batch recommendations")
    batch_users: Tuple[int, ...] = _setting(
        (), "comma-separated user ids to recommend for in batch (default: every user "
        "the model knows)")
    batch_size: int = _setting(256, "users per call of the model in the batch job")

    def __post_init__(self):
        for name in ("batch_k", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
