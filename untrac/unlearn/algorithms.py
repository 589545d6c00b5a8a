"""Unlearning algorithms behind one interface (Attribute-to-Delete; SPEC section 5).

:func:`unlearn` / :func:`unlearn_trajectory` over ``ALGORITHMS``: do nothing; gradient ascent on
the forget set (UnTrac's unlearning, Eq. 3); ascent on the forget set plus descent on the
retained data; **Oracle Matching** (fine-tune on the forget set plus a small retain sample so
that the model's outputs match an oracle's: squared error of every target token's log-probability);
**Datamodel Matching** (the same fine-tuning, to token log-probabilities predicted by a linear
datamodel, :mod:`untrac.unlearn.datamodels`). Every
algorithm steps through :func:`untrac.ascent.loop`, the loop UnTrac itself runs.

Choices (documented here once):

* **Retained data** is every training set but the forget set, concatenated in order
  (:func:`untrac.training.mixture` with ``exclude=forget``).
* **Matching loss**: both matching algorithms minimise the mean squared error between the
  model's and the target's log-probability of every target token (token-level outputs, as
  Attribute-to-Delete matches a model's outputs rather than one summary per example) on the
  matched examples: the forget set plus ``retain_sample`` retained examples, A2D's recipe. Oracle
  and Datamodel Matching differ *only* in where their targets come from. (Until 2026-11-27 they
  matched one scalar margin per sequence.)
* **Datamodel Matching targets** are the original model's own token log-probabilities minus the
  coefficient of the forget set in a linear datamodel of each token's log-probability (the
  predicted effect of having trained on it), i.e. A2D's "original output minus the forget set's
  attribution"; the seed-specific part of the original model's outputs is kept.
* **Compute** is a fraction of the cost of retraining: examples through a forward+backward pass
  during unlearning (steps x batch, x2 for ascent+descent), over those of the training run
  (steps x batch). The targets' cost is not counted: an oracle is a cheat, and the subset-trained
  models of a datamodel are an up-front cost shared by every forget set (reported separately).
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from torch import nn

from .. import ascent
from ..data.batching import check_nonempty, epoch_stream
from ..models import example_losses, is_encoder_decoder
from ..training import OPTIMIZERS, TrainConfig, make_optimizer
from .margins import split_tokens, token_logprobs, token_scores

ALGORITHMS = ("do nothing", "gradient ascent", "ascent+descent", "oracle matching", "datamodel matching")
MATCHING = ("oracle matching", "datamodel matching")
PASSES = {"do nothing": 0, "gradient ascent": 1, "ascent+descent": 2, "oracle matching": 1, "datamodel matching": 1}


@dataclass(frozen=True)
class DeletionConfig:
    """How to unlearn to delete data: optimizer, learning rate, batch size (examples per stream per
    step), gradient clipping (``None``: none).

    ``retain_sample``: retained examples matched alongside the forget set by the matching
    algorithms. ``seed`` orders the batches and draws the retain sample. (UnTrac's attribution
    unlearning has its own :class:`untrac.methods.untrac.UnlearnConfig`.)
    """

    optimizer: str = "adam"
    lr: float = 5e-4
    batch_size: int = 16
    clip: float | None = None
    retain_sample: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        def integer(v: object) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def positive(v: object) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0

        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"DeletionConfig.optimizer: unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if not positive(self.lr):
            raise ValueError(f"DeletionConfig.lr must be a finite positive number, got {self.lr!r}")
        if not (integer(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"DeletionConfig.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.clip is not None and not positive(self.clip):
            raise ValueError(f"DeletionConfig.clip must be None or a finite positive number, got {self.clip!r}")
        if not (integer(self.retain_sample) and self.retain_sample >= 0):
            raise ValueError(f"DeletionConfig.retain_sample must be an integer >= 0, got {self.retain_sample!r}")


@dataclass
class MatchTargets:
    """Examples to match (encoded) and, per example, the target log-probability of each of its target
    tokens (Oracle / Datamodel Matching): ``tokens[i]`` is a 1-d array in the order of
    :func:`untrac.unlearn.margins.token_scores`."""

    examples: Dataset
    tokens: Sequence[np.ndarray]

    def __post_init__(self) -> None:
        tokens = np.empty(len(self.tokens), dtype=object)
        for i, t in enumerate(self.tokens):
            tokens[i] = np.asarray(t, dtype=np.float64)
            if tokens[i].ndim != 1 or not len(tokens[i]):
                raise ValueError(f"MatchTargets.tokens[{i}] must be a non-empty 1-d array of token log-probabilities")
        self.tokens = tokens
        if len(self.examples) != len(self.tokens):
            raise ValueError(f"{len(self.examples)} examples but target tokens of {len(self.tokens)}")
        if not all(np.isfinite(t).all() for t in self.tokens):
            raise ValueError("target token log-probabilities must be finite")

    def flat(self) -> np.ndarray:
        """Every target, example after example (what fingerprints them)."""
        return np.concatenate(list(self.tokens))


def retain_sample_indices(n_retain: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` retained examples drawn without replacement (all if fewer)."""
    size = min(size, n_retain)
    return np.sort(np.random.default_rng(seed).choice(n_retain, size, replace=False))


def matched_examples(forget: Dataset, retain: Dataset, retain_idx: Sequence[int]) -> Dataset:
    """The forget set followed by the retained examples at ``retain_idx`` (what matching trains on)."""
    parts = [forget.select_columns(["input_ids", "labels"])]
    if len(retain_idx):
        parts.append(retain.select_columns(["input_ids", "labels"]).select(list(map(int, retain_idx))))
    return concatenate_datasets(parts)


def matched_values(per_set: Mapping[str, np.ndarray], forget: str, retain_idx: np.ndarray,
                   names: Sequence[str]) -> np.ndarray:
    """Values of the matched examples (forget set, then the retain sample) from per-set arrays, in
    the order of :func:`matched_examples` over the retained data (the sets ``names`` but ``forget``)."""
    pool = np.concatenate([per_set[n] for n in names if n != forget])
    return np.concatenate([per_set[forget], pool[retain_idx]])


def oracle_targets(oracle: nn.Module, forget: Dataset, retain: Dataset, pad_id: int, retain_sample: int = 64,
                   seed: int = 0) -> MatchTargets:
    """Oracle Matching targets: the oracle's token log-probabilities on the forget set plus a retain sample."""
    examples = matched_examples(forget, retain, retain_sample_indices(len(retain), retain_sample, seed))
    return MatchTargets(examples, split_tokens(*token_scores(oracle, examples, pad_id)))


def compute_fraction(algorithm: str, steps: int, batch_size: int, train_config: TrainConfig) -> float:
    """Unlearning cost as a fraction of retraining: forward+backward examples over the training run's."""
    if algorithm not in PASSES:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
    return PASSES[algorithm] * steps * batch_size / (train_config.steps * train_config.batch_size)


def unlearn_trajectory(
    algorithm: str,
    model: nn.Module,
    forget: Dataset,
    retain: Dataset | None,
    budgets: Sequence[int],
    pad_id: int,
    config: DeletionConfig = DeletionConfig(),
    targets: MatchTargets | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, nn.Module]]:
    """Unlearn a working copy of ``model``, yielding ``(steps, model)`` at every budget (in steps).

    The yielded model is the working copy, which later steps keep modifying: evaluate it (or copy
    it) before advancing. With a constant learning rate, the model yielded at budget ``b`` is
    exactly the model of a ``b``-step run. ``model`` is never modified.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose from {ALGORITHMS}")
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 0:
        raise ValueError(f"budgets must be non-negative step counts, got {budgets}")
    check_nonempty("forget set", forget)
    if algorithm == "ascent+descent" and (retain is None or len(retain) == 0):
        raise ValueError("ascent+descent needs retained data")
    if algorithm in MATCHING and targets is None:
        raise ValueError(f"{algorithm} needs targets (oracle_targets / datamodel targets)")
    work = copy.deepcopy(model)
    encdec = is_encoder_decoder(work)
    if algorithm == "do nothing":
        for b in budgets:
            yield b, work.eval()
        return
    optimizer = make_optimizer(config.optimizer, work.parameters(), config.lr)
    bs = config.batch_size
    if algorithm in MATCHING:
        stream = epoch_stream(targets.examples, bs, pad_id, encdec, config.seed, with_indices=True)
        device = next(work.parameters()).device

        def objective() -> torch.Tensor:  # squared error of every target token's log-probability
            batch, idx = next(stream)
            token_lp, keep = token_logprobs(work, batch)
            target = torch.as_tensor(np.concatenate([targets.tokens[int(i)] for i in idx])).to(device)
            if target.numel() != int(keep.sum()):
                raise ValueError(f"targets hold {target.numel()} token log-probabilities for a batch of "
                                 f"{int(keep.sum())} target tokens: they were computed on other examples")
            return (token_lp[keep] - target).pow(2).mean()
    else:
        ascend = ascent.ascent_objective(work, epoch_stream(forget, bs, pad_id, encdec, config.seed))
        retain_stream = epoch_stream(retain, bs, pad_id, encdec, config.seed + 1) if algorithm == "ascent+descent" else None

        def objective() -> torch.Tensor:
            loss = ascend()  # ascent: maximise the forget loss
            if retain_stream is not None:
                loss = loss + example_losses(work, next(retain_stream)).mean()  # descent on the retained data
            return loss
    for step in ascent.loop(work, optimizer, objective, budgets[-1], budgets, clip=config.clip, label=algorithm,
                            progress=progress):
        yield step, work


def unlearn(
    algorithm: str,
    model: nn.Module,
    forget: Dataset,
    retain: Dataset | None,
    steps: int,
    pad_id: int,
    config: DeletionConfig = DeletionConfig(),
    targets: MatchTargets | None = None,
    progress: bool = False,
) -> nn.Module:
    """Unlearn ``forget`` from a copy of ``model`` with ``algorithm`` in ``steps`` steps; return the copy.

    ``retain`` is the retained training data (ascent+descent descends on it); the matching
    algorithms fine-tune on ``targets`` (:func:`oracle_targets`, :meth:`Datamodel.removal_targets`).
    """
    out = None
    for _, out in unlearn_trajectory(algorithm, model, forget, retain, [steps], pad_id, config, targets, progress):
        pass
    return out


__all__ = [
    "ALGORITHMS", "MATCHING", "PASSES", "DeletionConfig", "MatchTargets", "compute_fraction", "matched_examples",
    "matched_values", "oracle_targets", "retain_sample_indices", "unlearn", "unlearn_trajectory",
]
