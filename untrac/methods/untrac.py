"""UnTrac (Eq. 2-3) and UnTrac-Inv (Eq. 4): attribution by unlearning with gradient ascent.

* UnTrac unlearns each training set Z_k from theta_0 (gradient *ascent* on its loss, any torch
  optimizer, no gradient clipping) and reports the change in test loss:
  I(Z', Z_k) = L(Z', theta_T) - L(Z', theta_0).
* UnTrac-Inv unlearns the test set Z' instead and reports the change in each training set's loss:
  I'(Z', Z_k) = L(Z_k, theta_T') - L(Z_k, theta_0). One run serves all K training sets.

The paper writes both as sums over batches; we use means over examples (a constant factor that no
correlation sees). Influences are recorded at every evaluation point, so a trajectory over
unlearning steps (Figures 2 and 3) costs one run. The caller's model is never modified: one
working copy is restored from an in-memory snapshot before every run.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm

from ..data.batching import batches, check_nonempty, epoch_stream
from ..models import dataset_loss, example_losses, is_encoder_decoder
from ..training import make_optimizer
from .result import Cost, Influence, measure


class UnlearningDiverged(FloatingPointError):
    """Gradient ascent produced a non-finite loss (lower the learning rate or the steps)."""


@dataclass(frozen=True)
class UnlearnConfig:
    """How to unlearn (paper Sec. 5: Adam, lr 5e-5, betas 0.9/0.999, no clipping).

    UnTrac: ``batch_size=1``, ``epochs=1``. UnTrac-Inv: ``batch_size=None`` (the whole set in one
    batch), ``epochs=5``. ``steps`` overrides ``epochs``. ``eval_every`` sets the evaluation
    interval in steps (``None``: only before and after).
    """

    optimizer: str = "adam"
    lr: float = 5e-5
    batch_size: int | None = 1
    epochs: float = 1.0
    steps: int | None = None
    eval_every: int | None = None
    seed: int = 0
    eval_batch_size: int = 64
    optimizer_kwargs: tuple[tuple[str, Any], ...] = ()

    def num_steps(self, n_examples: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * math.ceil(n_examples / (self.batch_size or n_examples))))

    def eval_steps(self, n_examples: int) -> list[int]:
        total = self.num_steps(n_examples)
        every = self.eval_every or total
        return sorted({0, *range(every, total + 1, every), total})


@dataclass
class Unlearner:
    """A working copy of a model that can be unlearned again and again from the same snapshot."""

    model: nn.Module
    pad_id: int
    snapshot: dict[str, torch.Tensor] = field(init=False)
    work: nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.work = copy.deepcopy(self.model)
        self.snapshot = {k: v.detach().clone() for k, v in self.work.state_dict().items()}

    def restore(self) -> nn.Module:
        """Reset the working copy to the snapshot (bit-identical to the original weights)."""
        with torch.no_grad():
            for k, v in self.work.state_dict().items():
                v.copy_(self.snapshot[k])
        return self.work

    def run(
        self,
        forget: Dataset,
        config: UnlearnConfig,
        evaluate: Callable[[nn.Module], np.ndarray],
        cost: Cost | None = None,
        label: str = "",
        progress: bool = False,
    ) -> tuple[list[int], np.ndarray]:
        """Gradient ascent on ``forget`` from the snapshot (Eq. 3); ``evaluate`` at every eval step.

        Returns the evaluation steps and the stacked evaluations ``[n_evals, ...]``.
        """
        check_nonempty(label or "forget set", forget)
        model = self.restore()
        n = len(forget)
        total = config.num_steps(n)
        eval_at = config.eval_steps(n)
        bs = config.batch_size or n
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, **dict(config.optimizer_kwargs))
        stream = epoch_stream(forget, bs, self.pad_id, is_encoder_decoder(model), config.seed)
        results = [evaluate(model)]
        model.train()
        running = torch.zeros((), device=next(model.parameters()).device)
        for step in tqdm(range(1, total + 1), disable=not progress, desc=f"unlearn {label}", leave=False):
            batch = next(stream)
            loss = example_losses(model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            (-loss).backward()  # gradient ascent: maximise the forget set's loss
            optimizer.step()
            running += loss.detach()
            if cost is not None:
                cost.add_batch(batch, backward=True)
            if step in eval_at:
                if not torch.isfinite(running):
                    raise UnlearningDiverged(
                        f"unlearning {label!r}: loss became non-finite by step {step} "
                        f"(optimizer {config.optimizer}, lr {config.lr}); lower the learning rate or the steps"
                    )
                try:
                    results.append(evaluate(model))
                except FloatingPointError as err:
                    raise UnlearningDiverged(f"unlearning {label!r}: evaluation loss not finite at step {step}") from err
                model.train()
        model.eval()
        return eval_at, np.stack(results)


def _loss_vector(model: nn.Module, sets: Mapping[str, list], cost: Cost | None) -> np.ndarray:
    if cost is not None:
        for bs in sets.values():
            for b in bs:
                cost.add_batch(b, backward=False)
    return np.array([dataset_loss(model, bs) for bs in sets.values()])


def _eval_sets(model: nn.Module, sets: Mapping[str, Dataset], pad_id: int, batch_size: int) -> dict[str, list]:
    for name, ds in sets.items():
        check_nonempty(name, ds)
    return {name: batches(ds, batch_size, pad_id, is_encoder_decoder(model), by_length=True) for name, ds in sets.items()}


def untrac(
    model: nn.Module,
    train_sets: Mapping[str, Dataset],
    test_sets: Mapping[str, Dataset],
    config: UnlearnConfig,
    pad_id: int,
    progress: bool = True,
) -> Influence:
    """UnTrac (Eq. 2): unlearn each training set, measure the change of every test set's loss."""
    cost = Cost()
    device = next(model.parameters()).device
    with measure(cost, device):
        tests = _eval_sets(model, test_sets, pad_id, config.eval_batch_size)
        unlearner = Unlearner(model, pad_id)
        before = _loss_vector(unlearner.restore(), tests, cost)
        runs = []
        for name, ds in tqdm(train_sets.items(), disable=not progress, desc="UnTrac"):
            steps, losses = unlearner.run(ds, config, lambda m: _loss_vector(m, tests, cost), cost, name, progress)
            runs.append(losses - before)  # [n_evals, S]
    trajectory = np.stack(runs, axis=1)  # [n_evals, K, S]
    return Influence("UnTrac", list(train_sets), list(test_sets), trajectory[-1], steps, trajectory, cost, asdict(config))


def untrac_inv(
    model: nn.Module,
    train_sets: Mapping[str, Dataset],
    test_sets: Mapping[str, Dataset],
    config: UnlearnConfig,
    pad_id: int,
    progress: bool = True,
) -> Influence:
    """UnTrac-Inv (Eq. 4): unlearn each test set, measure the change of every training set's loss."""
    cost = Cost()
    device = next(model.parameters()).device
    with measure(cost, device):
        trains = _eval_sets(model, train_sets, pad_id, config.eval_batch_size)
        unlearner = Unlearner(model, pad_id)
        before = _loss_vector(unlearner.restore(), trains, cost)
        runs = []
        for name, ds in tqdm(test_sets.items(), disable=not progress, desc="UnTrac-Inv"):
            steps, losses = unlearner.run(ds, config, lambda m: _loss_vector(m, trains, cost), cost, name, progress)
            runs.append(losses - before)  # [n_evals, K]
    trajectory = np.stack(runs, axis=2)  # [n_evals, K, S]
    return Influence("UnTrac-Inv", list(train_sets), list(test_sets), trajectory[-1], steps, trajectory, cost, asdict(config))
