"""The Evaluators' settings: blessing thresholds and slices (TensorFlow-free).

components/evaluator/config.py turns an :class:`EvaluationConfig` into each Evaluator's
TFMA EvalConfig; the Trainer's export reads its ``slices``.
"""

from __future__ import annotations

import dataclasses

from components import typed_values
from components.evaluator.slices import SliceSpec


def _setting(default, help_text: str):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """The gates (TFMA thresholds) and slices of every Evaluator.

    A retrieval or sequential model is blessed only if its top-``top_k`` accuracy over
    the whole movie vocabulary (eval split) is >= ``min_top_k_accuracy`` and not lower
    than the baseline's by more than ``top_k_tolerance``; a ranking model only if its
    RMSE (stars) is <= ``max_rmse`` and not higher than the baseline's by more than
    ``rmse_tolerance``. The baseline is the latest blessed model of the same Trainer
    (none on the first run: then only the absolute thresholds apply). The gates apply to
    the whole eval split; ``slices`` only break the figures down.

    With ``exclude_rated`` the top-k accuracy (and the NDCG@10 reported beside it) is
    computed with each user's training movies excluded, as serving recommends: at k=10
    that is HR@10, at k=100 Recall@100 (the honest protocols' figures, with
    ``--split-strategy temporal`` or ``leave_last_out``); without it, over all movies
    (the tutorials' top-K accuracy). Which split the gate runs on is the example
    generator's ``split_strategy``.
    """

    top_k: int = _setting(100, "the k of the gated top-k accuracy")
    exclude_rated: bool = _setting(
        False, "gate (and report NDCG@10) with each user's training movies excluded "
        "(HR@k / Recall@k as served) instead of over all movies")
    min_top_k_accuracy: float = _setting(
        0.1, "bless retrieval-like models only at top-k accuracy >= this")
    top_k_tolerance: float = _setting(
        0.01, "... and at most this much below the last blessed model of the same Trainer")
    max_rmse: float = _setting(1.0, "bless ranking models only at RMSE <= this ...")
    rmse_tolerance: float = _setting(
        0.0, "... and at most this much above the last blessed one")
    slices: SliceSpec = dataclasses.field(default_factory=SliceSpec)

    def __post_init__(self):
        if self.top_k < 1:
            raise ValueError(f"top_k must be positive, not {self.top_k}")
        for name in ("top_k_tolerance", "rmse_tolerance"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, not {getattr(self, name)}")

    @classmethod
    def from_dict(cls, values) -> "EvaluationConfig":
        return typed_values.build(cls, values, "evaluation setting")
