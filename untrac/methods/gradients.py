"""Gradient-similarity baselines: GradDot, GradCos and TracIn (paper Section 4.1, Eq. 7).

Conventions shared with :mod:`untrac.methods.hif` and the rest of the package:

* A *loss function* is ``loss_fn(model, batch) -> Tensor`` returning **per-example** losses of
  shape ``[B]``; batches are whatever the caller's ``loss_fn`` understands.
* A *dataset* is a re-iterable of batches (a list, a ``DataLoader``...). The loss of a dataset is
  the mean of the per-example losses over all its examples, so batches are weighted by their size
  and batching never changes the result.
* ``params`` selects the parameters the gradients are taken with respect to (default: every
  parameter of the model with ``requires_grad``); gradients are flattened in the order of
  ``params`` into one 1-D vector.
* Influence matrices have shape ``[K, S]``: rows follow the insertion order of the training
  mapping, columns that of the test mapping.
* Sign: a **positive** influence means that removing (unlearning) training set ``k`` *increases*
  the loss on test set ``s``. One gradient-ascent step of size ``lr`` on the training loss moves
  the parameters by ``+lr * g_train`` and so changes the test loss by ``lr * <g_train, g_test>`` to
  first order (paper Eq. 9), which is GradDot.

Note that the paper writes Eq. (7)-(8) with *sums* over examples; with mean losses the scores differ
by the factor ``N_k * N'_s``, which is irrelevant when the training sets have equal sizes (as in the
paper's experiments) and for the normalised variants.

The methods themselves (settings, registration) are in :mod:`.similarity`. With
``per_example=True`` they also score every training example (``Influence.example_values``,
:mod:`.per_example`): GradDot ``<g_i, g_s>`` with example i's own loss gradient (the set's GradDot is
the mean of its examples'), GradCos the cosine, TracIn the cosines summed over the checkpoints.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import bar

__all__ = [
    "LossFn",
    "flat_params",
    "flatten",
    "unflatten",
    "eval_mode",
    "dataset_gradient",
    "dataset_gradients",
    "normalize_grads",
    "grad_dot",
    "grad_cos",
    "tracin",
]

LossFn = Callable[[nn.Module, Any], torch.Tensor]
"""``loss_fn(model, batch) -> per-example losses of shape [B]``."""


def _progress(iterable: Iterable[Any], enabled: bool, **kwargs: Any) -> Iterable[Any]:
    """Wrap ``iterable`` in a tqdm bar when ``enabled`` (tqdm is imported lazily)."""
    return bar(iterable, enabled=enabled, **kwargs) if enabled else iterable


def flat_params(model: nn.Module, params: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The parameters gradients are taken with respect to.

    ``params`` if given (checked to be non-empty and to require gradients), otherwise every
    parameter of ``model`` with ``requires_grad`` in ``model.parameters()`` order.
    """
    if params is None:
        selected = [p for p in model.parameters() if p.requires_grad]
    else:
        selected = list(params)
        for p in selected:
            if not p.requires_grad:
                raise ValueError("every tensor in `params` must require gradients")
    if not selected:
        raise ValueError("no parameters to differentiate: none requires grad")
    return selected


def flatten(tensors: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``tensors`` into one 1-D vector; ``None`` entries become zeros shaped as ``like``."""
    parts = [
        (torch.zeros_like(ref) if t is None else t).reshape(-1) for t, ref in zip(tensors, like, strict=True)
    ]
    return torch.cat(parts)


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a 1-D ``vector`` into tensors shaped, typed and placed like ``like`` (inverse of :func:`flatten`)."""
    numel = sum(p.numel() for p in like)
    if vector.dim() != 1 or vector.numel() != numel:
        raise ValueError(f"expected a 1-D vector of {numel} entries, got shape {tuple(vector.shape)}")
    out: list[torch.Tensor] = []
    offset = 0
    for p in like:
        n = p.numel()
        out.append(vector[offset : offset + n].view(p.shape).to(device=p.device, dtype=p.dtype))
        offset += n
    return out


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (every submodule) in eval mode, restoring each submodule's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def _per_example_losses(model: nn.Module, loss_fn: LossFn, batch: Any) -> torch.Tensor:
    losses = loss_fn(model, batch)
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(f"loss_fn must return per-example losses of shape [B], got {shape}")
    return losses


def dataset_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    params: Sequence[torch.Tensor] | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Gradient of the mean per-example loss over a whole dataset, as one flat vector.

    ``grad (1/N) sum_i L(z_i, theta)`` with respect to ``params`` (the ``grad L(Z, theta)`` of paper
    Eq. 7-9), accumulated batch by batch with ``torch.autograd.grad`` and weighted by batch size,
    so the result does not depend on how the dataset is batched.

    The model is put in eval mode (no dropout) during the computation and every submodule's mode is
    restored afterwards; parameters and their ``.grad`` fields are left untouched.

    Returns a 1-D tensor of the parameters' dtype, on the parameters' device or on ``device``.
    """
    ps = flat_params(model, params)
    total: torch.Tensor | None = None
    n_examples = 0
    with eval_mode(model), torch.enable_grad():
        for batch in batches:
            losses = _per_example_losses(model, loss_fn, batch)
            if losses.numel() == 0:
                continue
            grads = torch.autograd.grad(losses.sum(), ps, allow_unused=True)
            flat = flatten([None if g is None else g.detach() for g in grads], ps)
            total = flat if total is None else total.add_(flat)
            n_examples += losses.numel()
    if total is None:
        raise ValueError("the dataset has no examples")
    grad = total.div_(n_examples)
    return grad if device is None else grad.to(device)


def dataset_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    datasets: Mapping[str, Iterable[Any]],
    params: Sequence[torch.Tensor] | None = None,
    *,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """One :func:`dataset_gradient` per named dataset (computed once each, in mapping order)."""
    out: dict[str, torch.Tensor] = {}
    for name in _progress(list(datasets), progress, desc="gradients"):
        out[name] = dataset_gradient(model, loss_fn, datasets[name], params, device=device)
    return out


def normalize_grads(grads: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each gradient divided by its Euclidean norm (a zero gradient stays zero)."""
    out: dict[str, torch.Tensor] = {}
    for name, g in grads.items():
        norm = torch.linalg.vector_norm(g)
        out[name] = g / norm if norm > 0 else torch.zeros_like(g)
    return out


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """``<a, b>`` in at least float32 precision, on ``a``'s device."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return float(torch.dot(a.to(dtype), b.to(device=a.device, dtype=dtype)))


def grad_dot(train_grads: Mapping[str, torch.Tensor], test_grads: Mapping[str, torch.Tensor]) -> np.ndarray:
    """GradDot: ``[K, S]`` matrix of ``<g_train_k, g_test_s>`` (Eq. 7 with a single checkpoint, eta = 1).

    Rows follow ``train_grads``' order, columns ``test_grads``'. Positive = removing the training
    set raises the test loss (Eq. 9 with an SGD step).
    """
    train = list(train_grads.values())
    test = list(test_grads.values())
    out = np.zeros((len(train), len(test)), dtype=np.float64)
    for k, gk in enumerate(train):
        for s, gs in enumerate(test):
            out[k, s] = _dot(gk, gs)
    return out


def grad_cos(train_grads: Mapping[str, torch.Tensor], test_grads: Mapping[str, torch.Tensor]) -> np.ndarray:
    """GradCos: ``[K, S]`` matrix of cosine similarities ``<g_k, g_s> / (|g_k| |g_s|)``.

    The GradDot of normalised gradients (Section 4.1); invariant to rescaling either loss by a
    positive constant. A zero gradient gives 0.
    """
    return grad_dot(normalize_grads(train_grads), normalize_grads(test_grads))


def _resolve_checkpoint(checkpoint: Mapping[str, torch.Tensor] | str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, (str, os.PathLike)):
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    return checkpoint


def tracin(
    checkpoints: Sequence[Mapping[str, torch.Tensor] | str | os.PathLike[str]],
    model: nn.Module,
    loss_fn: LossFn,
    train_sets: Mapping[str, Iterable[Any]],
    test_sets: Mapping[str, Iterable[Any]],
    params: Sequence[torch.Tensor] | None = None,
    learning_rates: Sequence[float] | None = None,
    normalize: bool = True,
    *,
    strict: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """TracIn over checkpoints (Pruthi et al. 2020; paper Eq. 7), extended to whole datasets.

    ``TracIn[k, s] = sum_t eta_t <g_train_k(theta_t), g_test_s(theta_t)>`` over the checkpoints
    ``theta_t`` (state_dicts, or paths to ``torch.save``-d state_dicts loaded one at a time).

    * ``learning_rates=None``: unweighted sum (``eta_t = 1``); otherwise one rate per checkpoint.
    * ``normalize=True`` (the authors' code): gradients are normalised at every checkpoint, so each
      term is a cosine similarity (:func:`grad_cos`); ``False`` gives raw dot products
      (:func:`grad_dot`; with one checkpoint and no rates this is GradDot).

    Each checkpoint is loaded into one deep copy of ``model``; the caller's model is never modified.
    ``params`` are parameters *of* ``model`` and are mapped by name onto the copy.
    """
    if learning_rates is not None and len(learning_rates) != len(checkpoints):
        raise ValueError(f"{len(learning_rates)} learning rates for {len(checkpoints)} checkpoints")
    if not checkpoints:
        raise ValueError("no checkpoints")
    work, work_params = _work_copy(model, params)

    total = np.zeros((len(train_sets), len(test_sets)), dtype=np.float64)
    for t, checkpoint in enumerate(_progress(checkpoints, progress, desc="checkpoints")):
        work.load_state_dict(_resolve_checkpoint(checkpoint), strict=strict)
        g_train = dataset_gradients(work, loss_fn, train_sets, work_params)
        g_test = dataset_gradients(work, loss_fn, test_sets, work_params)
        term = grad_cos(g_train, g_test) if normalize else grad_dot(g_train, g_test)
        eta = 1.0 if learning_rates is None else float(learning_rates[t])
        total += eta * term
        del g_train, g_test
    return total


def _work_copy(model: nn.Module, params: Sequence[torch.Tensor] | None) -> tuple[nn.Module, list[torch.Tensor] | None]:
    """A deep copy of ``model`` to load checkpoints into, and ``params`` (of ``model``) mapped onto it by name."""
    work = copy.deepcopy(model)
    if params is None:
        return work, None
    names = {id(p): name for name, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(f"params at positions {missing} are not parameters of `model`")
    copied = dict(work.named_parameters())
    return work, [copied[names[id(p)]] for p in params]
