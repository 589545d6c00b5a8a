"""Hessian-based influence functions, HIF (paper Section 4.2, Eq. 8; Koh & Liang 2017).

``HIF[k, s] = g_train_k^T H^{-1} g_test_s`` where ``g`` are dataset gradients (see
:mod:`untrac.methods.gradients` for the conventions: per-example loss functions, datasets as
re-iterables of batches, mean losses, ``params`` subsets, ``[K, S]`` outputs) and ``H`` is the
Hessian of the mean training loss over ``hessian_batches`` (the paper uses 256 training examples).
Following the paper (and Koh & Liang / Schioppa et al.), training gradients are normalised.

Sign: removing training set ``k`` moves the parameters by about ``+H^{-1} g_train_k`` (a Newton
step of unlearning, paper Eq. 9), which changes the test loss by ``+g_test^T H^{-1} g_train``;
so a positive influence means that removing the training set increases the test loss.

Two approximations of ``H^{-1}``:

* :func:`hif_lissa` -- LiSSA (Agarwal et al. 2017), a truncated Neumann series of
  ``(H + damping I)^{-1}`` built from Hessian-vector products (10 iterations in the paper);
* :func:`hif_arnoldi` -- Arnoldi iteration with low-rank eigenvector projection (Schioppa et al.
  2022, "Scaling up influence functions"): ``H^{-1} ~ U_p diag(1/lambda_p) U_p^T`` from the top-p
  Ritz pairs of an n-step Krylov subspace (n = p = 25 in Section 5.1, n = 200, p = 100 in 5.2).

The Hessian is never materialised: every product ``H v`` is a double backward pass (:func:`hvp`).
LiSSA checks its residual and warns or raises (``on_failure``); Arnoldi drops Ritz values below a
relative ``cutoff``; a ``diagnostics`` dict passed to ``hif_*`` receives the numbers (JSON-able).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import concatenate_datasets
from torch import nn

from ..data.batching import batches
from ..models import is_encoder_decoder
from .gradients import LossFn, _dot, _progress, dataset_gradients, flat_params, normalize_grads
from .hessian import (  # noqa: F401  (re-exported: the solvers are part of HIF's surface)
    HvpFn, SolverDiverged, SolverNotConverged, SolverWarning, _check_lissa, _lissa_scale, _report,
    _require, arnoldi, arnoldi_influence, hvp, lissa_inverse_hvp, make_hvp_fn, power_iteration,
)
from .registry import GRADIENT_BATCH, Method, Problem
from .result import Cost, Influence, measure

__all__ = [
    "SolverWarning", "SolverNotConverged", "SolverDiverged", "HvpFn", "hvp", "make_hvp_fn", "power_iteration",
    "lissa_inverse_hvp", "hif_lissa", "arnoldi", "arnoldi_influence", "hif_arnoldi", "LissaSettings", "ArnoldiSettings",
]


def _gradients(
    model: nn.Module,
    loss_fn: LossFn,
    sets: Mapping[str, Iterable[Any]] | None,
    grads: Mapping[str, torch.Tensor] | None,
    params: Sequence[torch.Tensor] | None,
    progress: bool,
) -> dict[str, torch.Tensor]:
    if grads is not None:
        return dict(grads)
    if sets is None:
        raise ValueError("give either the datasets or their precomputed gradients")
    return dataset_gradients(model, loss_fn, sets, params, progress=progress)


def hif_lissa(
    model: nn.Module,
    loss_fn: LossFn,
    train_sets: Mapping[str, Iterable[Any]] | None,
    test_sets: Mapping[str, Iterable[Any]] | None,
    hessian_batches: Iterable[Any],
    params: Sequence[torch.Tensor] | None = None,
    iterations: int = 10,
    damping: float = 0.01,
    scale: float | None = None,
    normalize_train: bool = True,
    *,
    stochastic: bool = False,
    batches_per_call: int = 1,
    power_iterations: int = 10,
    tolerance: float = 0.9,
    on_failure: str = "warn",
    diagnostics: dict[str, Any] | None = None,
    train_grads: Mapping[str, torch.Tensor] | None = None,
    test_grads: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """HIF with LiSSA (paper Eq. 8, Section 5 "HIF (LISSA)"): ``[K, S]`` matrix of
    ``g_train_k^T (H + damping I)^{-1} g_test_s``, ``g_train_k`` normalised when ``normalize_train``.

    The inverse-HVP is computed once per *test* gradient with :func:`lissa_inverse_hvp`
    (``S * (iterations + 1)`` HVPs over ``hessian_batches``, plus ``power_iterations`` once when
    ``scale=None``; see :func:`make_hvp_fn` for ``stochastic``) and dotted with every training
    gradient. A failing solve (see ``tolerance``, ``on_failure`` there; no growth check when
    ``stochastic``) gives one warning per call, or raises at once. ``diagnostics`` gets
    ``lissa_scale``, ``lambda_max``, ``residual_max``, ``residual_mean`` and ``diverged`` (number of
    solves). Precomputed (unnormalised) dataset gradients may be passed as ``train_grads`` /
    ``test_grads`` instead of the datasets.
    """
    _require(iterations >= 1, "iterations", ">= 1", iterations)
    _check_lissa(iterations, damping, scale, power_iterations, tolerance, on_failure)
    g_train = _gradients(model, loss_fn, train_sets, train_grads, params, progress)
    g_test = _gradients(model, loss_fn, test_sets, test_grads, params, progress)
    if normalize_train:
        g_train = normalize_grads(g_train)
    lam = None
    if scale is None and g_test:
        power_fn = make_hvp_fn(model, loss_fn, hessian_batches, params, stochastic, batches_per_call)
        scale, lam = _lissa_scale(power_fn, next(iter(g_test.values())), damping, power_iterations)
    out = np.zeros((len(g_train), len(g_test)), dtype=np.float64)
    residuals: list[float] = []
    diverged, fail = 0, "raise" if on_failure == "raise" else "ignore"  # "warn": once, below
    for s, name in enumerate(_progress(list(g_test), progress, desc="HIF (LiSSA)")):
        hvp_fn = make_hvp_fn(model, loss_fn, hessian_batches, params, stochastic, batches_per_call)
        info: dict[str, Any] = {}
        ihvp = lissa_inverse_hvp(hvp_fn, g_test[name], iterations, damping, scale, tolerance=tolerance,
                                 on_failure=fail, check_growth=not stochastic, diagnostics=info)
        residuals.append(info["residual"])
        diverged += info["diverged"]
        for k, gk in enumerate(g_train.values()):
            out[k, s] = _dot(gk, ihvp)
    worst = max(residuals, default=0.0)
    if diagnostics is not None:
        diagnostics.update(lissa_scale=None if scale is None else float(scale), lambda_max=lam, residual_max=worst,
                           residual_mean=float(np.mean(residuals)) if residuals else 0.0, diverged=diverged)
    what = f"HIF (LiSSA) with scale {scale or 0:.3g}, {diverged} of {len(residuals)} solves diverged"
    _report(diverged > 0, worst, tolerance, on_failure, what)
    return out


def hif_arnoldi(
    model: nn.Module,
    loss_fn: LossFn,
    train_sets: Mapping[str, Iterable[Any]] | None,
    test_sets: Mapping[str, Iterable[Any]] | None,
    hessian_batches: Iterable[Any],
    params: Sequence[torch.Tensor] | None = None,
    n_iters: int = 25,
    top_p: int = 25,
    normalize_train: bool = True,
    seed: int = 0,
    *,
    cutoff: float = 1e-6,
    diagnostics: dict[str, Any] | None = None,
    stochastic: bool = False,
    batches_per_call: int = 1,
    dtype: torch.dtype | None = None,
    basis_device: torch.device | str | None = None,
    train_grads: Mapping[str, torch.Tensor] | None = None,
    test_grads: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """HIF with Arnoldi (paper Eq. 8, Section 5 "HIF (Arnoldi)"; Schioppa et al. 2022).

    ``[K, S]`` matrix of ``sum_{i<=p} (g_test_s . u_i)(g_train_k . u_i) / lambda_i`` with the top-p
    eigenpairs ``(lambda_i, u_i)`` (by ``|lambda|``) of the Hessian of the mean loss over
    ``hessian_batches`` found by :func:`arnoldi` in ``n_iters`` HVPs, and ``g_train_k`` normalised
    when ``normalize_train``. Paper settings: ``n_iters = top_p = 25`` (Section 5.1),
    ``n_iters = 200, top_p = 100`` (Section 5.2). ``dtype`` of the Krylov basis defaults to the
    parameters' dtype; see :func:`arnoldi` for memory and ``basis_device``. Precomputed dataset
    gradients may be passed as ``train_grads`` / ``test_grads``.

    Ritz values with ``|lambda| < cutoff * |lambda|_max`` (rounding noise, or null directions of a
    singular Hessian, found when ``top_p`` is near the subspace size) are dropped before inverting,
    which gives the pseudo-inverse on the kept span; ``cutoff=0`` keeps all. ``diagnostics`` gets
    ``arnoldi_kept``, ``arnoldi_dropped``, ``eigenvalue_max``, ``eigenvalue_min_kept`` (by ``|.|``)
    and ``cutoff``.
    """
    _require(cutoff >= 0, "cutoff", ">= 0", cutoff)
    ps = flat_params(model, params)
    dim = sum(p.numel() for p in ps)
    hvp_fn = make_hvp_fn(model, loss_fn, hessian_batches, params, stochastic, batches_per_call)
    eigenvalues, eigenvectors = arnoldi(
        hvp_fn,
        dim,
        n_iters,
        top_p,
        seed,
        dtype=dtype or ps[0].dtype,
        device=ps[0].device,
        basis_device=basis_device,
        progress=progress,
    )
    top = float(eigenvalues.abs().max())
    keep = (eigenvalues.abs() >= cutoff * top) & ((eigenvalues != 0) | (cutoff == 0))
    dropped = int((~keep).sum())
    if dropped:
        eigenvalues, eigenvectors = eigenvalues[keep], eigenvectors[keep.to(eigenvectors.device)]
    if diagnostics is not None:
        diagnostics.update(arnoldi_kept=len(eigenvalues), arnoldi_dropped=dropped, eigenvalue_max=top, cutoff=cutoff,
                           eigenvalue_min_kept=float(eigenvalues.abs().min()) if len(eigenvalues) else None)
    g_train = _gradients(model, loss_fn, train_sets, train_grads, params, progress)
    g_test = _gradients(model, loss_fn, test_sets, test_grads, params, progress)
    if normalize_train:
        g_train = normalize_grads(g_train)
    return arnoldi_influence(eigenvalues, eigenvectors, g_train, g_test)


# ----------------------------------------------------------------------------- the methods

@dataclass(frozen=True)
class _HessianSettings:
    """What both HIF methods share: ``hessian_examples`` training examples drawn evenly from the
    mixture with ``seed`` (256 in the paper) for the Hessian; gradients ``batch_size`` at a time."""

    hessian_examples: int = 256
    seed: int = 0
    batch_size: int = GRADIENT_BATCH
    normalize_train: bool = True

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("hessian_examples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{owner}.{name} must be an int >= 1, not {value!r}")


@dataclass(frozen=True)
class LissaSettings(_HessianSettings):
    """HIF (LiSSA): ``iterations`` Neumann terms of ``(H + damping I)^{-1}``; ``scale=None`` picks it
    from the top eigenvalue (:func:`lissa_inverse_hvp`); ``on_failure`` on divergence or a
    residual above ``tolerance``: ``"warn"``, ``"raise"`` or ``"ignore"``."""

    iterations: int = 10
    damping: float = 0.01
    scale: float | None = None
    power_iterations: int = 10
    tolerance: float = 0.9
    on_failure: str = "warn"
    stochastic: bool = False
    batches_per_call: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_lissa(self.iterations, self.damping, self.scale, self.power_iterations, self.tolerance, self.on_failure)


@dataclass(frozen=True)
class ArnoldiSettings(_HessianSettings):
    """HIF (Arnoldi): ``n_iters`` Hessian-vector products, the ``top_p`` Ritz pairs, those with
    ``|lambda| < cutoff * |lambda|_max`` dropped; the Krylov basis on ``basis_device`` if set."""

    n_iters: int = 25
    top_p: int = 25
    cutoff: float = 1e-6
    basis_device: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(isinstance(self.n_iters, int) and self.n_iters >= 1, "n_iters", "an int >= 1", self.n_iters)
        _require(isinstance(self.top_p, int) and 1 <= self.top_p <= self.n_iters, "top_p", "an int in [1, n_iters]", self.top_p)
        _require(self.cutoff >= 0, "cutoff", ">= 0", self.cutoff)


def hessian_sample(problem: Problem, settings: _HessianSettings) -> list:
    """``hessian_examples`` training examples drawn evenly from the mixture, in batches."""
    pool = concatenate_datasets([ds.select_columns(["input_ids", "labels"]) for ds in problem.train_sets.values()])
    idx = np.random.default_rng(settings.seed).choice(len(pool), min(settings.hessian_examples, len(pool)), replace=False)
    return batches(pool.select(sorted(idx)), settings.batch_size, problem.pad_id, is_encoder_decoder(problem.model),
                   by_length=True)


def _lissa(problem: Problem, settings: LissaSettings) -> Influence:
    cost, diagnostics = Cost(), {}
    with measure(cost, next(problem.model.parameters()).device):
        trains, tests = problem.batched(settings.batch_size)
        values = hif_lissa(problem.model, problem.counted_losses(cost), trains, tests, hessian_sample(problem, settings),
                           iterations=settings.iterations, damping=settings.damping, scale=settings.scale,
                           normalize_train=settings.normalize_train, stochastic=settings.stochastic,
                           batches_per_call=settings.batches_per_call, power_iterations=settings.power_iterations,
                           tolerance=settings.tolerance, on_failure=settings.on_failure, diagnostics=diagnostics)
    return problem.influence("HIF (LiSSA)", values, cost, settings, **diagnostics)


def _arnoldi(problem: Problem, settings: ArnoldiSettings) -> Influence:
    cost, diagnostics = Cost(), {}
    with measure(cost, next(problem.model.parameters()).device):
        trains, tests = problem.batched(settings.batch_size)
        values = hif_arnoldi(problem.model, problem.counted_losses(cost), trains, tests, hessian_sample(problem, settings),
                             n_iters=settings.n_iters, top_p=settings.top_p, normalize_train=settings.normalize_train,
                             cutoff=settings.cutoff, basis_device=settings.basis_device, diagnostics=diagnostics)
    return problem.influence("HIF (Arnoldi)", values, cost, settings, **diagnostics)


METHODS = (
    Method("HIF (LiSSA)", LissaSettings(), _lissa, order=60, version=2,
           summary="influence function, inverse Hessian by a LiSSA series (Eq. 8)"),
    Method("HIF (Arnoldi)", ArnoldiSettings(), _arnoldi, order=70, version=2,
           summary="influence function, inverse Hessian on the top Arnoldi eigenvectors (Eq. 8)"),
)
