"""Every attribution method behind one entry point, returning one result type (:class:`Influence`).

``attribute(name, model, train_sets, test_sets, pad_id, **settings)`` runs any of
``METHODS`` — UnTrac, UnTrac-Inv, GradDot, GradCos, TracIn, HIF (LiSSA), HIF (Arnoldi) — and
:func:`ground_truth` evaluates the leave-dataset-out counterfactuals (Eq. 1).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from torch import nn

from ..data.batching import batches, check_nonempty
from ..models import dataset_loss, example_losses, is_encoder_decoder
from .result import Cost, Influence, measure
from ..accel import Accel
from .untrac import UnlearnConfig, Unlearner, UnlearningDiverged, untrac, untrac_inv

METHODS = ("UnTrac", "UnTrac-Inv", "GradDot", "GradCos", "TracIn", "HIF (LiSSA)", "HIF (Arnoldi)")
GRADIENT_BATCH = 16


def _batched(model: nn.Module, sets: Mapping[str, Dataset], pad_id: int, batch_size: int = GRADIENT_BATCH) -> dict[str, list]:
    for name, ds in sets.items():
        check_nonempty(name, ds)
    return {n: batches(ds, batch_size, pad_id, is_encoder_decoder(model), by_length=True) for n, ds in sets.items()}


def _hessian_batches(model: nn.Module, train_sets: Mapping[str, Dataset], pad_id: int, examples: int, seed: int) -> list:
    """``examples`` training examples drawn evenly from the mixture (256 in the paper) for the Hessian."""
    pool = concatenate_datasets([ds.select_columns(["input_ids", "labels"]) for ds in train_sets.values()])
    idx = np.random.default_rng(seed).choice(len(pool), min(examples, len(pool)), replace=False)
    return batches(pool.select(sorted(idx)), GRADIENT_BATCH, pad_id, is_encoder_decoder(model), by_length=True)


def attribute(
    name: str,
    model: nn.Module,
    train_sets: Mapping[str, Dataset],
    test_sets: Mapping[str, Dataset],
    pad_id: int,
    *,
    config: UnlearnConfig | None = None,
    checkpoints: Sequence[Mapping[str, torch.Tensor]] | None = None,
    learning_rates: Sequence[float] | None = None,
    hessian_examples: int = 256,
    seed: int = 0,
    progress: bool = True,
    accel: Accel | None = None,
    **settings: Any,
) -> Influence:
    """Influence of each training set on each test set by method ``name``.

    ``config`` is the unlearning config of UnTrac / UnTrac-Inv; ``checkpoints`` (state dicts)
    feed TracIn; HIF draws ``hessian_examples`` training examples for its Hessian; remaining
    ``settings`` go to the method (e.g. ``iterations``, ``damping``, ``n_iters``, ``top_p``).
    ``accel`` selects fast paths for UnTrac / UnTrac-Inv (:class:`untrac.accel.Accel`).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    if name == "UnTrac":
        return untrac(model, train_sets, test_sets, config or UnlearnConfig(), pad_id, progress, accel)
    if name == "UnTrac-Inv":
        return untrac_inv(model, train_sets, test_sets, config or UnlearnConfig(batch_size=None, epochs=5), pad_id, progress, accel)

    from . import gradients, hif

    cost = Cost()
    device = next(model.parameters()).device
    with measure(cost, device):
        trains, tests = _batched(model, train_sets, pad_id), _batched(model, test_sets, pad_id)

        def counted_losses(m: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
            cost.add_batch(batch, backward=True)  # every pass: gradients, checkpoints, Hessian-vector products
            return example_losses(m, batch)
        if name in ("GradDot", "GradCos"):
            g_train = gradients.dataset_gradients(model, counted_losses, trains)
            g_test = gradients.dataset_gradients(model, counted_losses, tests)
            values = (gradients.grad_dot if name == "GradDot" else gradients.grad_cos)(g_train, g_test)
        elif name == "TracIn":
            if not checkpoints:
                raise ValueError("TracIn needs the checkpoints saved during training (Trained.checkpoint_states())")
            values = gradients.tracin(checkpoints, model, counted_losses, trains, tests, learning_rates=learning_rates, **settings)
        else:
            hess = _hessian_batches(model, train_sets, pad_id, hessian_examples, seed)
            fn = hif.hif_lissa if name == "HIF (LiSSA)" else hif.hif_arnoldi
            values = fn(model, counted_losses, trains, tests, hess, **settings)
    config_out = {"hessian_examples": hessian_examples, **settings} if name.startswith("HIF") else dict(settings)
    return Influence(name, list(train_sets), list(test_sets), values, cost=cost, config=config_out)


def ground_truth(
    base: nn.Module,
    counterfactuals: Mapping[str, nn.Module],
    test_sets: Mapping[str, Dataset],
    pad_id: int,
    batch_size: int = 64,
    name: str = "Ground truth",
) -> Influence:
    """Leave-dataset-out influence (Eq. 1): L(Z', theta_{-k}) - L(Z', theta_0) for every k and Z'."""
    tests = _batched(base, test_sets, pad_id, batch_size)
    before = np.array([dataset_loss(base, bs) for bs in tests.values()])
    values = np.stack([[dataset_loss(m, bs) for bs in tests.values()] for m in counterfactuals.values()]) - before
    return Influence(name, list(counterfactuals), list(test_sets), values)


__all__ = [
    "METHODS", "Influence", "Cost", "UnlearnConfig", "Unlearner", "UnlearningDiverged",
    "attribute", "ground_truth", "untrac", "untrac_inv",
]
