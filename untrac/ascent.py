"""The one optimisation loop of unlearning: UnTrac, UnTrac-Inv and every algorithm of notebook 04.

UnTrac and UnTrac-Inv (:mod:`untrac.methods.untrac`, gradient ascent, Eq. 3), and gradient ascent,
ascent+descent, Oracle Matching and Datamodel Matching (:mod:`untrac.unlearn.algorithms`) differ
only in the *objective* of a step; they all step through :func:`loop`::

    for step in loop(model, optimizer, ascent_objective(model, stream), steps, at=[0, 10, 20]):
        record(step, evaluate(model))  # the model is in eval mode here

One step: forward the objective (a scalar to *minimise*: gradient ascent returns minus the forget
loss) under the :class:`~untrac.accel.Accel`'s autocast, zero the gradients, backward (through a
gradient scaler for fp16), clip the gradient norm if asked (after unscaling), optimizer step.

* **Pauses**: at every step of ``at`` (0 is before the first step) the loop yields the step with
  the model in eval mode; the caller evaluates (under ``accel.autocast(device, evaluation=True)``
  for the fast paths' evaluation autocast), or copies, the model, then advances the loop (which
  puts the model back in training mode). No context is held open across a pause.
* **Divergence**: the objective is checked for non-finite values at every pause and at the end,
  never between two pauses (the inner loop never waits on the device); a non-finite objective
  raises :class:`UnlearningDiverged`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from .accel import Accel, resolve
from .models import example_losses
from .progress import bar
from .training import optimizer_step


class UnlearningDiverged(FloatingPointError):
    """Unlearning produced a non-finite loss (lower the learning rate or the steps)."""


def ascent_objective(
    model: nn.Module,
    stream: Iterator[Mapping[str, torch.Tensor]],
    on_batch: Callable[[Mapping[str, torch.Tensor]], None] | None = None,
) -> Callable[[], torch.Tensor]:
    """Gradient ascent on a stream of batches: minus the mean example loss of the next batch.

    ``on_batch`` (e.g. a cost counter) sees every batch drawn.
    """

    def objective() -> torch.Tensor:
        batch = next(stream)
        if on_batch is not None:
            on_batch(batch)
        return -example_losses(model, batch).mean()

    return objective


def loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Callable[[], torch.Tensor],
    steps: int,
    at: Iterable[int] = (),
    *,
    clip: float | None = None,
    accel: Accel | None = None,
    label: str = "unlearning",
    progress: bool = False,
) -> Iterator[int]:
    """``steps`` optimizer steps on ``objective``; pause (yield the step) at every step of ``at``.

    ``model`` is the module the objective runs through (a working copy, or a compiled view
    sharing its parameters); ``optimizer`` holds its parameters. ``at``: steps in ``[0, steps]``
    to pause at, in any order (duplicates ignored). ``clip``: maximum gradient norm (``None``:
    no clipping). ``accel``: autocast and loss scaling (``None``: the plain path). The model is
    left in eval mode. Raises :class:`UnlearningDiverged` when the objective is non-finite at a
    pause or at the end (``label`` names the run in the message).
    """
    pauses = sorted({int(s) for s in at})
    if pauses and (pauses[0] < 0 or pauses[-1] > steps):
        raise ValueError(f"pause steps must lie in [0, {steps}], got {pauses}")
    accel = resolve(accel)
    device = next(model.parameters()).device
    scaler = accel.grad_scaler(device)
    due = set(pauses)  # O(1) membership: there can be thousands of pauses
    bad = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite objective so far (no host sync)

    def check(step: int) -> None:
        if bool(bad):
            lr = optimizer.param_groups[0]["lr"]
            raise UnlearningDiverged(
                f"{label}: loss became non-finite by step {step} ({type(optimizer).__name__}, lr {lr:g}); "
                "lower the learning rate or the steps"
            )

    def pause(step: int) -> Iterator[int]:
        check(step)
        model.eval()
        yield step
        model.train()

    model.train()
    if 0 in due:
        yield from pause(0)
    for step in bar(range(1, steps + 1), enabled=progress, desc=label, leave=False):
        with accel.autocast(device):
            loss = objective()
        optimizer_step(model, optimizer, loss, clip, scaler)
        bad |= ~torch.isfinite(loss.detach())
        if step in due:
            yield from pause(step)
    check(steps)
    model.eval()


__all__ = ["UnlearningDiverged", "ascent_objective", "loop"]
