"""Every hyperparameter of the Trainer, and each model kind's tuned defaults: the one place.

TensorFlow-free, so the command line validates ``--hparam`` and config files before
anything runs. Defaults come in two layers, both here: the :class:`HParams` field
defaults (shared by every kind) and :data:`PRESETS` (what each kind changes, as tuned by
``benchmarks/quality.py``). ``HParams.from_dict`` lays a user's overrides on top.
The sequence examples' padded lengths are not hyperparameters: the Trainer reads them
from the example generator's vocabulary output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

from components import contract, typed_values

RETRIEVAL, RANKING = contract.RETRIEVAL, contract.RANKING
MULTITASK, SEQUENTIAL = contract.MULTITASK, contract.SEQUENTIAL
ATTENTION = contract.ATTENTION
MODELS = tuple(contract.MODEL_KINDS)

OPTIMIZERS = ("adagrad", "adam", "lazy_adam", "sgd", "rmsprop")
TIMESTAMP_FEATURES = ("global", "user_relative")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class HParams:
    """Every hyperparameter of the trainer; built from TFX ``custom_config`` by
    :meth:`from_dict`, which starts from the model's tuned preset (:data:`PRESETS`).

    The field defaults below are generic starting points (and what ``HParams()`` gives);
    the presets are what ``benchmarks/quality.py`` measured on MovieLens-100K.

    Attributes:
      model: one of ``MODELS``.
      embedding_dim: ``D``, the width of every tower's output.
      epochs, batch_size, eval_batch_size: the training loop. In-batch softmax costs
        ``batch_size**2`` per step: 1024 trains faster per example than the tutorials'
        8192, and no worse (figures from an earlier run: benchmarks/README.md).
      learning_rate, optimizer: one of ``OPTIMIZERS`` (the tutorials use Adagrad 0.1;
        ``lazy_adam``: Adam updating only the looked-up rows of an embedding table,
        components/trainer/optimizers.py).
        ``learning_rate`` is the rate of one replica's batch: with ``R`` replicas the
        optimizer runs at ``learning_rate x R`` (linear scaling with the global batch).
        The retrieval losses are sums over the batch, not means: with plain SGD their
        step grows by about ``R**2``, not ``R`` (Adam and Adagrad, which the presets
        use, normalise the gradient's scale away).
      rating_weight, retrieval_weight: the multitask loss weights.
      use_timestamps: the user tower adds the ``timestamp_features``.
      use_title, use_genres: the movie tower adds pooled title-token and genre embeddings.
      full_softmax: retrieval loss over the whole catalogue instead of in-batch negatives
        (the presets' choice; on MovieLens-100K it beat in-batch softmax with log-Q).
        Its cost per step grows with the catalogue (``batch_size x M`` logits and the
        candidate tower over all ``M`` movies): see ``sampled_softmax_min_catalogue``.
      sampled_softmax_min_catalogue: from this many movies up, models that retrieve train
        with sampled softmax even when ``full_softmax`` is set: in-batch negatives plus a
        pool of ``num_sampled_negatives`` shared negatives, log-Q corrected with the
        movies' popularity in the training data (components/trainer/sampling.py), so a
        step costs ``batch_size x (batch_size + num_sampled_negatives)`` whatever ``M``.
        Default 5,000, by ``benchmarks/sampled_softmax.py`` (benchmarks/README.md): a
        full-softmax step of the retrieval preset costs 74 ms at 1,682 movies, 239 ms at
        3,706, 426 ms at 5,000 and 881 ms at 10,000, a sampled one ~190-330 ms at any
        size; at 3,706 (ML-1M) the per-step gain did not show in the training time, so
        from 5,000 up. Quality: top-100 within 0.003 of the full softmax on ML-100K and
        on ML-1M-shaped data. ML-100K and ML-1M keep the full softmax.
      num_sampled_negatives: ``N``, the shared negatives drawn per step (with
        replacement, in proportion to training popularity) whenever the model trains
        with sampled softmax (``full_softmax`` off, or the catalogue is large); 0: in-batch
        negatives only.
      logq_correction: subtract log(sampling probability) from in-batch logits. On by
        default: without it in-batch negatives over-penalize popular movies, and top-10
        falls below the popularity baseline's (figures from an earlier run:
        benchmarks/README.md). (No effect with ``full_softmax``.)
      remove_accidental_hits: ignore in-batch negatives that are the positive movie.
      temperature: divides the retrieval logits.
      tower_layers: hidden ReLU layers between a tower's concatenated features and its
        final linear ``D`` projection (only used when a tower has more than its id).
      rating_layers: hidden layers of the rating head (the tutorial's 256-64).
      share_embeddings: the sequence query towers (the GRU's, the attention's) embed
        context movies with the candidate tower instead of a separate embedding.
      attention_blocks, attention_heads, attention_dropout: the self-attention
        sequential model (``attention``): causal transformer blocks, heads per block,
        and the dropout rate of its inputs, attention weights and block outputs.
      every_position_weight: the sequence models that can (``attention``) add, with this
        weight, the loss of predicting each context movie from the ones before it
        (SASRec's training on every position of the history) to the label's loss;
        0: the label's loss only.
      recency_windows_days: the retrieval model adds to each logit, per window, a learned
        weight times log(1 + the movie's training ratings in that many days before the
        query's time): the example's time in training, the end of training at evaluation
        and serving (components/trainer/recency.py; the served signature stays
        ``user_id``). Empty: off.
      recency_serving_scale: at evaluation and serving the prior's weights are the trained
        ones times this (training keeps them as trained). Training fits them to a prior
        of the example's own day; served, the prior is the end of training's, for the
        weeks after it. The preset's 2: with its windows, the best validation NDCG@10
        on ML-100K and on the synthetic CSV-layout data alike
        (benchmarks/recency_windows.py, benchmarks/README.md). 0: the prior is left
        out of what is served.
      train_example_budget: caps the examples a model trains on when ``epochs`` passes
        over the training split would exceed it (0: no cap): training then sees
        ``max(budget, one pass)`` examples, cut into the same ``epochs`` segments (Keras
        epochs of equal steps over the repeated data), so the learning-rate schedule
        keeps its shape. Below the budget (every preset on MovieLens-100K) nothing
        changes; above it, training cost grows with the data (one pass at least), not
        with data x epochs (benchmarks/README.md, scale.py). The ranking preset's
        budget is larger, as its examples are cheaper.
      top_ks: the ``k`` of the top-K metrics.
      eval_sample_users: evaluate on the eval examples of at most this many users, drawn
        with ``seed`` from the user vocabulary (0: every user): the Trainer's figures,
        and the Evaluator's, which evaluates the same users (eval_users.npz beside the
        model). When it applies, metrics.json, the blessing and the run report say so
        (``eval_sampled_users``). The default bounds the cost of evaluation whatever the
        data's size (TFMA spends ~0.3 ms per eval example on 2 cores) and leaves every
        user in on MovieLens-100K (943) and on the tests' data; a sample of 2,000 users
        holds ~60,000 eval ratings at ML-1M's density.
      train_top_k_metrics: also compute the (slow) catalogue top-K metrics while
        training; otherwise only in evaluation.
      timestamp_buckets: equal-width buckets of the timestamp.
      title_max_tokens: title token vocabulary size (most frequent first).
      rating_min, rating_max: the served rating is clipped to this range.
      seed: initialization and shuffling seed.
      l2_regularization: L2 penalty (times the sum of squares) on every embedding table
        of the towers. Relative to the loss: the retrieval loss is summed over the batch,
        the rating loss averaged. With sparse updates (``sparse_updates_min_rows``) the
        id embeddings' penalty is on the rows each batch looks up instead, each row's
        sum of squares weighted by one over its expected lookups per example (from the
        vocabulary's counts), over the batch size: the same penalty in expectation
        (``encoders.RowPenalizedEmbedding``).
      sparse_updates_min_rows: from this many rows in the user or the movie table up,
        embedding tables train with sparse updates: ``adam`` updates only the rows a
        batch looks up (``LazyAdam``, which catches a row up on the momentum steps it
        missed) and the id embeddings' L2 penalty is on those rows, not on whole tables.
        Adam's dense step and a whole-table penalty cost (rows x D) every step, whatever
        the batch. 0 (never) by default; the retrieval preset sets 50,000: at 70,000
        users retrieval then trained 2.7x faster to better top-K, while ranking trained
        2.4x faster but lost RMSE against Adam with the whole-table penalty, so it stays
        off (benchmarks/README.md, "The pipeline at scale"). metrics.json records
        ``sparse_updates``.
      mask_padding: the sequential GRU skips the padding (0) at the end of short
        histories. The tutorial does not (``False`` reproduces it): its GRU reads up to
        nine padding steps after the last movie.
      timestamp_features: with ``use_timestamps``, which encodings the user tower adds:
        ``"global"`` (normalized timestamp and its equal-width bucket, as in the
        featurization tutorial) and ``"user_relative"`` (time since the user's first
        training rating, log-scaled and bucketized; needs ``timestamp_stats`` computed
        with user ids).
      rating_biases: the rating adds a learned bias per user and per movie.
      rating_bias_l2: L2 penalty on those biases (the rating loss is a batch mean).
      rating_dot: the rating adds the dot product of the user and movie embeddings.
      learning_rate_schedule: ``"constant"`` or ``"cosine"`` (per epoch, over the
        ``epochs`` of the ``fit`` call; see ``optimizers.learning_rate_callback``).
    """

    model: str = RETRIEVAL
    embedding_dim: int = 64
    epochs: int = 5
    batch_size: int = 1024
    eval_batch_size: int = 4096
    learning_rate: float = 0.1
    optimizer: str = "adagrad"
    rating_weight: float = 1.0
    retrieval_weight: float = 1.0
    use_timestamps: bool = False
    use_title: bool = False
    use_genres: bool = False
    full_softmax: bool = False
    sampled_softmax_min_catalogue: int = 5_000
    num_sampled_negatives: int = 1024
    logq_correction: bool = True
    remove_accidental_hits: bool = True
    temperature: float = 1.0
    tower_layers: Tuple[int, ...] = ()
    rating_layers: Tuple[int, ...] = (256, 64)
    share_embeddings: bool = False
    train_example_budget: int = 1_000_000
    top_ks: Tuple[int, ...] = (1, 5, 10, 50, 100)
    eval_sample_users: int = 2_000
    train_top_k_metrics: bool = False
    timestamp_buckets: int = 1000
    title_max_tokens: int = 10_000
    rating_min: float = 1.0
    rating_max: float = 5.0
    seed: int = 0
    l2_regularization: float = 0.0
    sparse_updates_min_rows: int = 0
    mask_padding: bool = True
    timestamp_features: Tuple[str, ...] = TIMESTAMP_FEATURES
    rating_biases: bool = False
    rating_bias_l2: float = 0.0
    rating_dot: bool = False
    learning_rate_schedule: str = "constant"
    attention_blocks: int = 2
    attention_heads: int = 2
    attention_dropout: float = 0.2
    every_position_weight: float = 0.0
    recency_windows_days: Tuple[int, ...] = ()
    recency_serving_scale: float = 1.0

    def __post_init__(self):
        kind = contract.model_kind(self.model)  # ValueError naming the known kinds
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ValueError(f"learning_rate_schedule must be one of "
                             f"{LEARNING_RATE_SCHEDULES}, not {self.learning_rate_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        for name in ("embedding_dim", "epochs", "batch_size", "eval_batch_size",
                     "timestamp_buckets", "title_max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("num_sampled_negatives", "eval_sample_users", "train_example_budget",
                     "sampled_softmax_min_catalogue", "sparse_updates_min_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, not {getattr(self, name)}")
        if self.attention_blocks < 0 or self.attention_heads < 1:
            raise ValueError("attention_blocks must be non-negative and attention_heads "
                             "positive")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be within [0, 1), "
                             f"not {self.attention_dropout}")
        if self.every_position_weight < 0:
            raise ValueError("every_position_weight must be non-negative")
        if self.recency_windows_days and (min(self.recency_windows_days) < 1 or len(
                set(self.recency_windows_days)) < len(self.recency_windows_days)):
            raise ValueError(f"recency_windows_days must be distinct positive days, not "
                             f"{self.recency_windows_days}")
        if self.recency_windows_days and self.model != RETRIEVAL:
            raise ValueError(f"recency_windows_days applies to the {RETRIEVAL} model only, "
                             f"not to {self.model!r}")
        if self.recency_serving_scale < 0:
            raise ValueError(f"recency_serving_scale must be non-negative, not "
                             f"{self.recency_serving_scale}")
        if self.l2_regularization < 0 or self.rating_bias_l2 < 0:
            raise ValueError("L2 penalties must be non-negative")
        unknown = sorted(set(self.timestamp_features) - set(TIMESTAMP_FEATURES))
        if unknown:
            raise ValueError(f"unknown timestamp_features {unknown}; known: "
                             f"{TIMESTAMP_FEATURES}")
        if self.rating_weight < 0 or self.retrieval_weight < 0:
            raise ValueError("loss weights must be non-negative")
        if kind.rates and kind.retrieves and self.rating_weight + self.retrieval_weight == 0:
            raise ValueError("at least one multitask loss weight must be positive")
        if not self.top_ks or min(self.top_ks) < 1:
            raise ValueError(f"top_ks must be positive integers, not {self.top_ks}")
        if not self.rating_min < self.rating_max:
            raise ValueError("rating_min must be below rating_max")

    @classmethod
    def from_dict(cls, config: Optional[Mapping[str, Any]],
                  preset: bool = True) -> "HParams":
        """Builds the hyperparameters from a plain dict (TFX ``custom_config``).

        With ``preset`` (the default), missing keys take the tuned values of
        ``PRESETS[config["model"]]`` (``"retrieval"`` when no model is given), then the
        field defaults; without it, the field defaults only. Values are coerced to the
        field's type (JSON lists become tuples, "true"/"false" strings become
        booleans). Unknown keys raise ValueError, so that a misspelt knob does not
        silently train the default.
        """
        config = dict(config or {})
        if preset:
            model = str(config.get("model", RETRIEVAL))
            contract.model_kind(model)
            config = {**PRESETS[model], **config}
        return typed_values.build(cls, config, "hyperparameter")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly dict that :meth:`from_dict` turns back into these values."""
        return typed_values.to_plain(self)

    def samples_softmax(self, num_movies: int) -> bool:
        """Whether retrieval trains with sampled softmax (in-batch negatives plus the
        shared pool) rather than the full softmax, on a catalogue of ``num_movies``."""
        return not self.full_softmax or num_movies >= self.sampled_softmax_min_catalogue

    def sparse_updates(self, num_users: int, num_movies: int) -> bool:
        """Whether the embedding tables train with sparse updates (see
        ``sparse_updates_min_rows``) with ``num_users`` users and ``num_movies`` movies."""
        return (self.sparse_updates_min_rows > 0
                and max(num_users, num_movies) >= self.sparse_updates_min_rows)

    def steps_per_epoch(self, num_examples: int) -> Optional[int]:
        """With ``num_examples`` training examples (and ``batch_size`` the global batch):
        None when the ``epochs`` are whole passes over the data, else the steps of each
        of the ``epochs`` segments that together see ``train_example_budget`` examples
        (one pass at least)."""
        budget = self.train_example_budget
        if not budget or self.epochs * num_examples <= budget:
            return None
        seen = max(budget, num_examples)
        return max(1, -(-seen // (self.epochs * self.batch_size)))

    @property
    def kind(self) -> contract.ModelKind:
        """What this model reads and does (components/contract.py)."""
        return contract.model_kind(self.model)


# The tuned hyperparameters of each model (on top of the field defaults), as measured by
# benchmarks/quality.py on MovieLens-100K (random 80/20 ratings; the sequential
# tutorial's 90/10 sequence examples). What they buy, against the tutorials' recipes:
#
# * retrieval: a full softmax over the catalogue (what top-K measures; in-batch negatives
#   without log-Q push popular movies down), 128 dimensions, Adam, L2 on the embeddings
#   (top-K over *all* movies falls as the model memorizes each user's training movies),
#   and title and genres on the movie side. No time features: on the tutorials' random
#   split they lifted top-100 (0.39 -> 0.49 with ids only) by reading the held-out
#   rating's own timestamp, which a client cannot know; under the temporal split, fed the
#   time a server knows (the user's latest rating), they lost to the same towers without
#   them (Recall@100 0.280 against 0.304, HR@10 0.052 against 0.055 on ML-100K:
#   benchmarks/quality.py --protocol temporal). So the served ``serving_default`` takes
#   ``user_id`` and ``k`` only. The recency prior of the last 30 and 365 days
#   (components/trainer/recency.py): under the temporal split the eval period follows
#   training, and what was rated lately is the signal ids and features lack (HR@10 0.055
#   -> 0.067, NDCG@10 0.027 -> 0.035, Recall@100 0.304 -> 0.353 on ML-100K, and
#   Recall@100 0.223 -> 0.256 on synthetic CSV data: benchmarks/quality.py), served at
#   twice its trained weights (trained on each example's own day, the prior is served
#   for the weeks after training, where it is worth more). The windows and the x2 by
#   validation NDCG@10 on both data sets: benchmarks/recency_windows.py. On the
#   tutorials' random split, whose eval ratings span the whole period, it costs a little
#   (top-100 excluding seen movies 0.622 -> 0.607): the served model serves the period
#   after training, which the temporal split measures.
# * ranking: user and movie biases beside the 256-64 head, Adam for 10 epochs instead
#   of 3 of Adagrad (the tutorial's RMSE is mostly under-training), light L2.
# * multitask: the retrieval preset's towers (no time either), Adam, and the ranking
#   preset's rating biases; the loss weights (1, 1) over the tutorial's losses: the retrieval loss is
#   summed over the batch and the rating loss averaged, so the shared towers follow
#   retrieval and the rating head and biases fit the ratings on top of them.
# * sequential: full softmax, padding masked, context movies embedded by the candidate
#   tower (shared), Adagrad 0.1 for 6 epochs.
# * attention: the sequential preset's full softmax and shared embeddings, two causal
#   self-attention blocks of two heads, dropout 0.2, Adam 0.003 for 8 epochs, and the
#   loss of every context position beside the label's (weight 1). Chosen with
#   benchmarks/attention.py (leave-last-out ML-100K, HR@10 excluding seen movies): the
#   every-position loss was worth ~0.02 over the label's alone (0.19 -> 0.21); dropout
#   0.5, batch 128 and the other settings tried landed within the run-to-run noise
#   (~0.01 on 943 users); none beat the GRU by the 10% (benchmarks/README.md).
# All decay the learning rate per epoch along a cosine: with a constant Adam rate the
# figures swing from one epoch to the next (benchmarks/README.md, quality.py).
PRESETS: Dict[str, Dict[str, Any]] = {
    RETRIEVAL: dict(
        model=RETRIEVAL, embedding_dim=128, epochs=6, batch_size=1024, optimizer="adam",
        learning_rate=0.003, learning_rate_schedule="cosine", full_softmax=True,
        l2_regularization=0.05, use_title=True, use_genres=True,
        recency_windows_days=(30, 365), recency_serving_scale=2.0,
        # Above ML-1M's 6,040 users sparse updates buy nothing (the step costs the same);
        # at 70,000 they trained 2.7x faster, to better top-K: benchmarks/README.md.
        sparse_updates_min_rows=50_000),
    RANKING: dict(
        model=RANKING, embedding_dim=64, epochs=10, batch_size=1024, optimizer="adam",
        learning_rate=0.001, learning_rate_schedule="cosine", l2_regularization=0.003,
        rating_biases=True, use_title=True, use_genres=True,
        # A ranking example costs about a quarter of a retrieval one (no softmax over the
        # catalogue), and one pass at ML-1M's size leaves RMSE far above full epochs':
        # benchmarks/README.md, "The pipeline at scale".
        train_example_budget=3_000_000),
    MULTITASK: dict(
        model=MULTITASK, embedding_dim=128, epochs=6, batch_size=1024, optimizer="adam",
        learning_rate=0.003, learning_rate_schedule="cosine", full_softmax=True,
        l2_regularization=0.05, use_title=True, use_genres=True,
        rating_biases=True, rating_bias_l2=1e-4, rating_weight=1.0, retrieval_weight=1.0),
    SEQUENTIAL: dict(
        model=SEQUENTIAL, embedding_dim=64, epochs=6, batch_size=1024,
        optimizer="adagrad", learning_rate=0.1, learning_rate_schedule="cosine",
        full_softmax=True, share_embeddings=True, mask_padding=True),
    ATTENTION: dict(
        model=ATTENTION, embedding_dim=64, epochs=8, batch_size=256, optimizer="adam",
        learning_rate=0.003, learning_rate_schedule="cosine", full_softmax=True,
        share_embeddings=True, attention_blocks=2, attention_heads=2,
        attention_dropout=0.2, every_position_weight=1.0),
}


def preset(model: str) -> HParams:
    """The tuned hyperparameters of one model kind."""
    return HParams.from_dict({"model": model})
