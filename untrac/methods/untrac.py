"""UnTrac (Eq. 2-3) and UnTrac-Inv (Eq. 4): attribution by unlearning with gradient ascent.

* UnTrac unlearns each training set Z_k from theta_0 (gradient *ascent* on its loss, any torch
  optimizer, no gradient clipping) and reports the change in test loss:
  I(Z', Z_k) = L(Z', theta_T) - L(Z', theta_0).
* UnTrac-Inv unlearns the test set Z' instead and reports the change in each training set's loss:
  I'(Z', Z_k) = L(Z_k, theta_T') - L(Z_k, theta_0). One run serves all K training sets.

With ``per_example=True``, UnTrac-Inv also reports every training example's loss change
(``Influence.example_values``), evaluated in the batches of the set-level value: the mean over a
set's examples is that set's influence. UnTrac unlearns whole sets and has no per-example variant
(it would take one unlearning run per example).

The paper writes both as sums over batches; we use means over examples (a constant factor that no
correlation sees). Influences are recorded at every evaluation point, so a trajectory over
unlearning steps (Figures 2 and 3) costs one run. The caller's model is never modified: one
working copy is restored from an in-memory snapshot before every run, and the step-0 evaluation
of every run is the one made before the first run (the restored copy is bit-identical).

Fast paths (autocast, TF32, fused optimizers, ``torch.compile``) are opt-in through an
:class:`untrac.accel.Accel`; without one, or with ``Accel()``, nothing changes. The inner loop
never waits on the device: the loss is checked for finiteness at evaluation points only (the
step loop is :func:`untrac.ascent.loop`, shared with the unlearning algorithms of notebook 04).
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from .. import ascent
from ..accel import Accel, resolve
from ..ascent import UnlearningDiverged
from ..data.batching import batches, check_nonempty, epoch_stream
from ..models import dataset_loss, is_encoder_decoder
from ..training import OPTIMIZERS, make_optimizer
from .per_example import example_loss_vector, indexed_eval_batches, split_examples
from .registry import Method, Problem
from .result import Cost, Influence, measure
from ..progress import bar


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class UnlearnConfig:
    """How to unlearn (paper Sec. 5: Adam, lr 5e-5, betas 0.9/0.999, no clipping).

    UnTrac: ``batch_size=1``, ``epochs=1``. UnTrac-Inv: ``batch_size=None`` (the whole set in one
    batch), ``epochs=5``. ``steps`` overrides ``epochs``. ``eval_every`` sets the evaluation
    interval in steps (``None``: only before and after). ``per_example`` (UnTrac-Inv only): also
    the loss change of every training example.
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
    per_example: bool = field(default=False, kw_only=True, metadata={"fingerprint": "omit-default"})

    def __post_init__(self) -> None:
        if not isinstance(self.per_example, bool):
            raise ValueError(f"UnlearnConfig.per_example must be True or False, got {self.per_example!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"UnlearnConfig.optimizer: unknown optimizer {self.optimizer!r}; choose from {OPTIMIZERS}")
        if not (isinstance(self.lr, numbers.Real) and not isinstance(self.lr, bool) and math.isfinite(self.lr)
                and self.lr > 0):
            raise ValueError(f"UnlearnConfig.lr must be a finite positive number, got {self.lr!r}")
        if not (isinstance(self.epochs, numbers.Real) and not isinstance(self.epochs, bool)
                and math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(f"UnlearnConfig.epochs must be a finite positive number, got {self.epochs!r}")
        for name in ("batch_size", "steps", "eval_every"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                raise ValueError(f"UnlearnConfig.{name} must be a positive integer or None, got {value!r}")
        if not _positive_int(self.eval_batch_size):
            raise ValueError(f"UnlearnConfig.eval_batch_size must be a positive integer, got {self.eval_batch_size!r}")

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
    """A working copy of a model that can be unlearned again and again from the same snapshot.

    ``accel`` (optional) selects fast paths; the working copy is compiled once, here, if asked.
    """

    model: nn.Module
    pad_id: int
    accel: Accel | None = None
    snapshot: dict[str, torch.Tensor] = field(init=False)
    work: nn.Module = field(init=False)
    runner: nn.Module = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.work = copy.deepcopy(self.model)
        self.snapshot = {k: v.detach().clone() for k, v in self.work.state_dict().items()}
        self.runner = resolve(self.accel).prepare(self.work)  # the working copy, or a compiled view of it

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
        initial: np.ndarray | None = None,
    ) -> tuple[list[int], np.ndarray]:
        """Gradient ascent on ``forget`` from the snapshot (Eq. 3); ``evaluate`` at every eval step.

        ``initial``: the evaluation of the snapshot, if the caller already has it (it is then
        not recomputed at step 0). Returns the evaluation steps and the stacked evaluations
        ``[n_evals, ...]``.
        """
        check_nonempty(label or "forget set", forget)
        accel = resolve(self.accel)
        self.restore()
        model = self.runner  # self.work, or a compiled view sharing its parameters
        device = next(model.parameters()).device
        n = len(forget)
        eval_at = config.eval_steps(n)
        opt_kwargs = {**accel.optimizer_kwargs(config.optimizer), **dict(config.optimizer_kwargs)}
        optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, **opt_kwargs)
        stream = epoch_stream(forget, config.batch_size or n, self.pad_id, is_encoder_decoder(model), config.seed)
        count = None if cost is None else (lambda batch: cost.add_batch(batch, backward=True))
        results = []
        for step in ascent.loop(model, optimizer, ascent.ascent_objective(model, stream, count), config.num_steps(n),
                                eval_at, accel=accel, label=f"unlearning {label!r}",
                                progress=progress):
            if step == 0 and initial is not None:
                results.append(initial)
                continue
            try:
                with accel.autocast(device, evaluation=True):
                    results.append(evaluate(model))
            except FloatingPointError as err:
                raise UnlearningDiverged(f"unlearning {label!r}: evaluation loss not finite at step {step}") from err
        return eval_at, np.stack(results)


def _loss_vector(model: nn.Module, sets: Mapping[str, list], cost: Cost | None) -> np.ndarray:
    if cost is not None:
        for bs in sets.values():
            for b in bs:
                cost.add_batch(b, backward=False)
    return np.array([dataset_loss(model, bs) for bs in sets.values()])


def _config(config: UnlearnConfig, accel: Accel) -> dict[str, Any]:
    """The result's config record: the unlearning config, plus the fast paths if any were on."""
    out = asdict(config)
    if not accel.is_plain:
        out["accel"] = accel.describe()
    return out


def _eval_sets(model: nn.Module, sets: Mapping[str, Dataset], pad_id: int, batch_size: int) -> dict[str, list]:
    for name, ds in sets.items():
        check_nonempty(name, ds)
    return {name: batches(ds, batch_size, pad_id, is_encoder_decoder(model), by_length=True) for name, ds in sets.items()}


def _unlearn_each(
    model: nn.Module,
    forget_sets: Mapping[str, Dataset],
    eval_sets: Mapping[str, Dataset],
    config: UnlearnConfig,
    pad_id: int,
    progress: bool,
    accel: Accel | None,
    label: str,
    per_example: bool = False,
) -> tuple[list[int], np.ndarray, Cost, Accel]:
    """Unlearn every forget set in turn from the same snapshot; losses of every eval set at every
    evaluation step, minus their value before unlearning: ``[n_evals, n_forget, n_eval]``
    (``per_example``: then every eval example's, ``[..., n_eval + sum of the eval sets' sizes]``)."""
    cost = Cost()
    device = next(model.parameters()).device
    accel = resolve(accel)
    with measure(cost, device), accel.runtime(device):
        if per_example:
            evals, orders = indexed_eval_batches(model, eval_sets, pad_id, config.eval_batch_size)
            evaluate = lambda m: example_loss_vector(m, evals, orders, cost)  # noqa: E731
        else:
            evals = _eval_sets(model, eval_sets, pad_id, config.eval_batch_size)
            evaluate = lambda m: _loss_vector(m, evals, cost)  # noqa: E731
        unlearner = Unlearner(model, pad_id, accel)
        with accel.autocast(device, evaluation=True):
            unlearner.restore()
            before = evaluate(unlearner.runner)  # through the same (compiled?) module as later
        runs = []
        for name, ds in bar(forget_sets.items(), enabled=progress, desc=label):
            steps, losses = unlearner.run(ds, config, evaluate, cost, name, progress, before)
            runs.append(losses - before)  # [n_evals, n_eval]
    return steps, np.stack(runs, axis=1), cost, accel


def untrac(
    model: nn.Module,
    train_sets: Mapping[str, Dataset],
    test_sets: Mapping[str, Dataset],
    config: UnlearnConfig,
    pad_id: int,
    progress: bool = True,
    accel: Accel | None = None,
) -> Influence:
    """UnTrac (Eq. 2): unlearn each training set, measure the change of every test set's loss.

    ``accel``: optional fast paths (:class:`untrac.accel.Accel`), recorded in the result's config.
    No per-example scores (``config.per_example`` is an error): those would take one unlearning run
    per training example; UnTrac-Inv, GradDot, GradCos and TracIn give them.
    """
    if config.per_example:
        raise ValueError("UnTrac gives no per-example scores: it unlearns whole training sets, and a per-example "
                         "score would take one unlearning run per example; per-example scores come from UnTrac-Inv, "
                         "GradDot, GradCos and TracIn (per_example=True)")
    steps, trajectory, cost, accel = _unlearn_each(model, train_sets, test_sets, config, pad_id, progress, accel, "UnTrac")
    return Influence("UnTrac", list(train_sets), list(test_sets), trajectory[-1], steps, trajectory, cost, _config(config, accel))


def untrac_inv(
    model: nn.Module,
    train_sets: Mapping[str, Dataset],
    test_sets: Mapping[str, Dataset],
    config: UnlearnConfig,
    pad_id: int,
    progress: bool = True,
    accel: Accel | None = None,
) -> Influence:
    """UnTrac-Inv (Eq. 4): unlearn each test set, measure the change of every training set's loss.

    ``accel``: optional fast paths (:class:`untrac.accel.Accel`), recorded in the result's config.
    ``config.per_example``: also every training example's loss change at the last step
    (``example_values``, ``[n_k, S]`` per training set; their mean over a set is its influence).
    """
    steps, by_test, cost, accel = _unlearn_each(model, test_sets, train_sets, config, pad_id, progress, accel,
                                                "UnTrac-Inv", config.per_example)
    k = len(train_sets)
    trajectory = by_test[..., :k].transpose(0, 2, 1)  # [n_evals, S, K] -> [n_evals, K, S]
    examples = None
    if config.per_example:
        per_set = split_examples(by_test[-1, :, k:], {name: len(ds) for name, ds in train_sets.items()})
        examples = {name: v.T for name, v in per_set.items()}  # [S, n_k] -> [n_k, S]
    return Influence("UnTrac-Inv", list(train_sets), list(test_sets), trajectory[-1], steps, trajectory, cost,
                     _config(config, accel), examples)


# ----------------------------------------------------------------------------- the methods

def _untrac(problem: "Problem", settings: UnlearnConfig) -> Influence:
    return untrac(problem.model, problem.train_sets, problem.test_sets, settings, problem.pad_id, problem.progress,
                  problem.accel)


def _untrac_inv(problem: "Problem", settings: UnlearnConfig) -> Influence:
    return untrac_inv(problem.model, problem.train_sets, problem.test_sets, settings, problem.pad_id, problem.progress,
                      problem.accel)


METHODS = (
    Method("UnTrac", UnlearnConfig(), _untrac, order=10,
           summary="unlearn each training set by gradient ascent; the rise of each test loss (Eq. 2-3)"),
    Method("UnTrac-Inv", UnlearnConfig(batch_size=None, epochs=5), _untrac_inv, order=20,
           summary="unlearn each test set; the rise of each training set's loss (Eq. 4)"),
)
