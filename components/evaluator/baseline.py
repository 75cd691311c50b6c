"""The Evaluator's baseline: the latest model of the *same* Trainer blessed before the
candidate.

TFX's LatestBlessedModelStrategy takes the latest blessed Model of any producer: with a
retrieval, a ranking and a sequential Trainer in one pipeline, the ranking model could
become the retrieval model's baseline. :func:`baseline_resolver` feeds the strategy only
the blessings of one Evaluator (a Channel filtered by producer node id), whose models all
come from one Trainer, and the candidate model of the current run; the baseline Model
artifact is read from the store by the blessing's ``current_model_id``.

The baseline is the latest blessed model older than the candidate (lower MLMD id), not
merely the latest: when the Trainer's output comes from the cache, the candidate was
already evaluated against that same baseline, so the Evaluator's inputs are unchanged
and it (and the Pusher) come from the cache too, instead of comparing the model with
itself and pushing it again.

Kubeflow v2 / Vertex AI compile no custom strategy: :func:`latest_blessed_resolver` is
TFX's LatestBlessedModelStrategy, which pipeline/kubeflow.py restricts to one model's
blessings by their ``model_name`` (components/evaluator/component.py). It takes the
latest blessed model, so a cached candidate may be compared with itself: it is then
blessed again (not worse than itself) and the Pusher, seeing the same model already
pushed, writes nothing.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.common import resolver
from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy
from tfx.types import artifact_utils, standard_artifacts

MODEL_KEY = "model"
BLESSING_KEY = "model_blessing"
_CURRENT_MODEL_ID = "current_model_id"
_BLESSED = "blessed"


def previous_blessed_id(candidate_id: Optional[int], blessings: List[types.Artifact]):
    """(model id, blessing) of the highest-id blessed model below ``candidate_id`` (any
    id when None), or (None, None)."""
    blessed = {b.get_int_custom_property(_CURRENT_MODEL_ID): b for b in blessings
               if b.get_int_custom_property(_BLESSED) == 1}
    eligible = [model_id for model_id in blessed
                if candidate_id is None or model_id < candidate_id]
    if not eligible:
        return None, None
    return max(eligible), blessed[max(eligible)]


def _load_artifact(store, artifact_id: int) -> Optional[types.Artifact]:
    found = store.get_artifacts_by_id([artifact_id])
    if not found:
        return None
    [artifact_type] = store.get_artifact_types_by_id([found[0].type_id])
    return artifact_utils.deserialize_artifact(artifact_type, found[0])


class PreviousBlessedModelStrategy(resolver.ResolverStrategy):
    """Inputs: ``model`` (the current run's candidate) and ``model_blessing`` (every
    blessing of the Trainer's Evaluator). Outputs ``model`` and ``model_blessing``: the
    baseline and its blessing (empty lists: no baseline)."""

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        candidate_id = max((c.id for c in input_dict.get(MODEL_KEY) or []), default=None)
        model_id, blessing = previous_blessed_id(candidate_id,
                                                 input_dict.get(BLESSING_KEY) or [])
        model = _load_artifact(store, model_id) if model_id is not None else None
        logging.info("Baseline of model %s: %s", candidate_id,
                     f"model {model.id} ({model.uri})" if model else "none")
        if model is None:
            return {MODEL_KEY: [], BLESSING_KEY: []}
        return {MODEL_KEY: [model], BLESSING_KEY: [blessing]}


def baseline_resolver(candidate: types.BaseChannel, evaluator_id: str,
                      resolver_id: str) -> resolver.Resolver:
    """The Resolver node whose ``outputs["model"]`` is the Evaluator's baseline, given
    the Trainer's ``outputs["model"]`` and the Evaluator's node id."""
    return resolver.Resolver(
        strategy_class=PreviousBlessedModelStrategy,
        model=candidate,
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing,
                                     producer_component_id=evaluator_id,
                                     output_key="blessing"),
    ).with_id(resolver_id)


def latest_blessed_resolver(resolver_id: str) -> resolver.Resolver:
    """TFX's latest-blessed-model Resolver, the one Kubeflow v2 / Vertex AI compile.
    On its own it takes blessings of every Evaluator: see pipeline/kubeflow.py."""
    return resolver.Resolver(
        strategy_class=latest_blessed_model_strategy.LatestBlessedModelStrategy,
        model=types.Channel(type=standard_artifacts.Model),
        model_blessing=types.Channel(type=standard_artifacts.ModelBlessing),
    ).with_id(resolver_id)
