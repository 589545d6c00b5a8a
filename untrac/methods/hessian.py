"""The Hessian numerics behind HIF: Hessian-vector products, power iteration, LiSSA and Arnoldi.

Every product ``H v`` is a double backward pass (:func:`hvp`); the Hessian is never materialised.
The solvers report on themselves: :func:`lissa_inverse_hvp` picks its scale from a power-iteration
estimate of the top eigenvalue unless given one, tracks its residual and warns or raises
(``on_failure``) on divergence or non-convergence; :func:`arnoldi` returns Ritz pairs that
:func:`arnoldi_influence` inverts above a relative ``cutoff``. See :mod:`untrac.methods.hif`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch import nn

from .gradients import LossFn, _per_example_losses, _progress, eval_mode, flat_params, flatten, unflatten

__all__ = [
    "SolverWarning", "SolverNotConverged", "SolverDiverged", "HvpFn", "hvp", "make_hvp_fn", "power_iteration",
    "lissa_inverse_hvp", "arnoldi", "arnoldi_influence",
]

HvpFn = Callable[[torch.Tensor], torch.Tensor]
"""A map ``v -> H v`` on flat parameter-space vectors."""

LISSA_SAFETY = 1.5  # automatic LiSSA scale: LISSA_SAFETY * (power-iteration estimate of |lambda|_max)
ON_FAILURE = ("warn", "raise", "ignore")


class SolverWarning(RuntimeWarning):
    """A solver diverged or stopped above its tolerance (``on_failure="warn"``)."""


class SolverNotConverged(ArithmeticError):
    """A solver stopped with a residual above its tolerance (``on_failure="raise"``)."""


class SolverDiverged(SolverNotConverged, FloatingPointError):
    """A solver diverged: non-finite answer, residual above 1 or growing (``on_failure="raise"``)."""


def _require(ok: bool, name: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _report(diverged: bool, residual: float, tolerance: float, on_failure: str, what: str) -> None:
    """Warn or raise (``on_failure``) on divergence, or on a relative residual above ``tolerance``."""
    if on_failure == "ignore" or not (diverged or residual > tolerance):
        return
    message = (f"{what}: relative residual |(H + damping I) x - v| / |v| = {residual:.3g}; " + (
        "diverged (residual above 1 or growing): scale below lambda_max / 2, or H + damping I not positive "
        "definite (try scale=None or more damping)" if diverged else
        f"not converged (above tolerance {tolerance:g}): close to a scaled GradDot (try more iterations)"))
    if on_failure == "raise":
        raise (SolverDiverged if diverged else SolverNotConverged)(message)
    warnings.warn(message, SolverWarning, stacklevel=3)


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    vector: torch.Tensor,
    params: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Hessian-vector product ``H v`` of the mean per-example loss over ``batches``.

    Per batch, ``grad_theta <grad_theta sum_i L(z_i), v>`` by double backpropagation (Pearlmutter's
    trick), accumulated and divided by the number of examples, so the result is the HVP of the
    dataset's mean loss whatever the batching. The Hessian is never formed. The model is in eval
    mode during the computation (modes restored afterwards) and its parameters are not modified.

    ``vector`` is a flat vector over ``params`` (same order as
    :func:`~untrac.methods.gradients.dataset_gradient`); the product is returned with ``vector``'s
    dtype and device.
    """
    ps = flat_params(model, params)
    vs = unflatten(vector.detach(), ps)
    total: torch.Tensor | None = None
    n_examples = 0
    # Fused attention kernels (flash / memory-efficient SDPA) have no double backward: use the math one.
    with eval_mode(model), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        for batch in batches:
            losses = _per_example_losses(model, loss_fn, batch)
            if losses.numel() == 0:
                continue
            grads = torch.autograd.grad(losses.sum(), ps, create_graph=True, allow_unused=True)
            terms = [(g * v).sum() for g, v in zip(grads, vs) if g is not None and g.requires_grad]
            if terms:
                hv = torch.autograd.grad(torch.stack(terms).sum(), ps, allow_unused=True)
                flat = flatten([None if h is None else h.detach() for h in hv], ps)
            else:  # the loss is (at most) linear in the parameters: zero Hessian
                flat = flatten([None] * len(ps), ps)
            total = flat if total is None else total.add_(flat)
            n_examples += losses.numel()
    if total is None:
        raise ValueError("the Hessian dataset has no examples")
    return total.div_(n_examples).to(device=vector.device, dtype=vector.dtype)


def make_hvp_fn(
    model: nn.Module,
    loss_fn: LossFn,
    hessian_batches: Iterable[Any],
    params: Sequence[torch.Tensor] | None = None,
    stochastic: bool = False,
    batches_per_call: int = 1,
) -> HvpFn:
    """A ``v -> H v`` closure for :func:`lissa_inverse_hvp` and :func:`arnoldi`.

    * ``stochastic=False``: every call uses the full Hessian of the mean loss over all of
      ``hessian_batches`` (deterministic).
    * ``stochastic=True``: every call uses the next ``batches_per_call`` batches, cycling through
      ``hessian_batches`` (re-iterating it when exhausted, as the authors' code does), i.e. the
      stochastic LiSSA of Agarwal et al. / Koh & Liang with a fresh Hessian sample per iteration.
      Each returned closure starts from the first batch, so two closures made alike give the same
      sequence of products.
    """
    if not stochastic:

        def full_hvp(v: torch.Tensor) -> torch.Tensor:
            return hvp(model, loss_fn, hessian_batches, v, params)

        return full_hvp

    if batches_per_call < 1:
        raise ValueError("batches_per_call must be >= 1")
    iterator: list[Iterator[Any]] = [iter(hessian_batches)]

    def next_batch() -> Any:
        try:
            return next(iterator[0])
        except StopIteration:
            iterator[0] = iter(hessian_batches)
            try:
                return next(iterator[0])
            except StopIteration:
                raise ValueError("hessian_batches is empty") from None

    def stochastic_hvp(v: torch.Tensor) -> torch.Tensor:
        return hvp(model, loss_fn, [next_batch() for _ in range(batches_per_call)], v, params)

    return stochastic_hvp


def power_iteration(hvp_fn: HvpFn, like: torch.Tensor, iterations: int = 10, seed: int = 0) -> float:
    """Estimate ``|lambda|_max`` of a symmetric operator by ``iterations`` steps of power iteration.

    ``q <- A q / |A q|`` from a unit vector drawn in float64 from ``Generator().manual_seed(seed)``
    (cast to ``like``'s dtype and device); returns the last ``|A q|``, which never exceeds
    ``|lambda|_max`` and is at least the Rayleigh quotient ``|q^T A q|``.
    """
    _require(iterations >= 1, "power_iterations", ">= 1", iterations)
    q = torch.randn(like.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q = (q / torch.linalg.vector_norm(q)).to(device=like.device, dtype=like.dtype)
    estimate = 0.0
    for _ in range(iterations):
        w = hvp_fn(q)
        estimate = float(torch.linalg.vector_norm(w))
        if not math.isfinite(estimate) or estimate == 0.0:
            break
        q = w / estimate
    return estimate


def _lissa_scale(hvp_fn: HvpFn, like: torch.Tensor, damping: float, power_iterations: int) -> tuple[float, float]:
    """``(scale, lambda_max)``: the automatic scale rule of :func:`lissa_inverse_hvp`."""
    lam = power_iteration(lambda x: hvp_fn(x) + damping * x, like, power_iterations)
    return (LISSA_SAFETY * lam if math.isfinite(lam) and lam > 0 else 1.0), lam


def _check_lissa(iterations: int, damping: float, scale: float | None, power: int, tolerance: float, on_failure: str):
    _require(iterations >= 0, "iterations", ">= 0", iterations)  # hif_lissa: >= 1
    _require(power >= 1, "power_iterations", ">= 1", power)
    _require(damping >= 0, "damping", ">= 0", damping)  # also rejects NaN
    _require(scale is None or scale > 0, "scale", "> 0 or None", scale)
    _require(tolerance > 0, "tolerance", "> 0", tolerance)
    _require(on_failure in ON_FAILURE, "on_failure", f"one of {ON_FAILURE}", on_failure)


def lissa_inverse_hvp(
    hvp_fn: HvpFn,
    v: torch.Tensor,
    iterations: int = 10,
    damping: float = 0.01,
    scale: float | None = None,
    *,
    power_iterations: int = 10,
    tolerance: float = 0.9,
    on_failure: str = "warn",
    check_growth: bool = True,
    diagnostics: dict[str, Any] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Approximate ``(H + damping I)^{-1} v`` by the LiSSA recursion (Agarwal et al. 2017).

    With ``A = H + damping I``::

        h_0 = v
        h_t = v + (I - A / scale) h_{t-1}        t = 1..iterations
        return h_T / scale

    so that ``h_T / scale = (1/scale) sum_{i=0}^{T} (I - A/scale)^i v``, the truncated Neumann
    series of ``A^{-1} = (1/scale) (I - (I - A/scale))^{-1}``. It converges to ``A^{-1} v`` as
    ``T -> inf`` iff every eigenvalue of ``A / scale`` lies in ``(0, 2)``: ``H + damping I`` must be
    positive definite (damping can compensate small negative curvature) and ``scale`` must exceed
    ``lambda_max(A) / 2``; the error shrinks like ``max_i |1 - a_i/scale|^T``. ``iterations=0``
    gives ``v / scale``.

    ``scale=None`` (default): ``scale = LISSA_SAFETY * lambda_hat = 1.5 * lambda_hat``, where
    ``lambda_hat <= |lambda|_max(A)`` is :func:`power_iteration`'s estimate in ``power_iterations``
    products. The series then converges (for positive definite ``A``) as long as ``lambda_hat`` is
    above a third of ``lambda_max``, and with a good estimate the top eigendirection contracts by 1/3
    per iteration. An explicit ``scale`` is used as given (bit-identical to the plain recursion).

    Self-check: the relative residual ``r_t = |A x_t - v| / |v|`` of every iterate ``x_t = h_t /
    scale`` (free: ``A h_t`` is the next step's product) and of the answer (one more product). As
    ``A x_t - v = -(I - A/scale)^{t+1} v``, ``r_t`` never grows while the series converges, so a
    non-finite answer, ``r_T > 1`` (worse than ``x = 0``) or, with ``check_growth``, ``r_T > 1.1
    min_t r_t`` (above rounding level) is divergence; ``r_T > tolerance`` flags a series that has
    barely started (default 0.9: under 10% of ``v`` resolved, a scaled GradDot; a truncated series
    such as the paper's 10 iterations is not expected to reach a small residual). ``on_failure``:
    ``"warn"`` (:class:`SolverWarning`), ``"raise"`` (:class:`SolverDiverged` /
    :class:`SolverNotConverged`) or ``"ignore"``. ``diagnostics`` (if given) gets ``lissa_scale``,
    ``lambda_max`` (None for an explicit scale), ``residual``, ``residual_min`` and ``diverged``.

    The authors' code is this recursion with ``damping = 0`` and ``scale = 1 / decay_rate``. With a
    stochastic ``hvp_fn`` (see :func:`make_hvp_fn`) every iteration uses a different Hessian sample,
    as do the power iterations and the residuals, which then fluctuate: use ``check_growth=False``.
    """
    _check_lissa(iterations, damping, scale, power_iterations, tolerance, on_failure)
    v = v.detach()
    lam = None
    if scale is None:
        scale, lam = _lissa_scale(hvp_fn, v, damping, power_iterations)
    h, norms = v.clone(), []
    for _ in _progress(range(iterations), progress, desc="LiSSA", leave=False):
        step = (hvp_fn(h) + damping * h) / scale  # A x_t with x_t = h / scale
        norms.append(torch.dist(step, v))
        h = v + h - step
    x = h / scale
    norms.append(torch.dist(hvp_fn(x) + damping * x, v))
    v_norm = float(torch.linalg.vector_norm(v)) or 1.0
    residual, residual_min = float(norms[-1]) / v_norm, float(torch.stack(norms).min()) / v_norm
    floor = math.sqrt(torch.finfo(x.dtype).eps)  # residuals below it are rounding noise
    growing = check_growth and residual > max(1.1 * residual_min, floor)
    diverged = not (math.isfinite(residual) and bool(torch.isfinite(x).all())) or residual > 1.0 or growing
    residual = residual if math.isfinite(residual) else math.inf
    if diagnostics is not None:
        diagnostics.update(lissa_scale=float(scale), lambda_max=lam, residual=residual,
                           residual_min=residual_min, diverged=diverged)
    _report(diverged, residual, tolerance, on_failure, "LiSSA")
    return x


def arnoldi(
    hvp_fn: HvpFn,
    dim: int,
    n_iters: int,
    top_p: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    *,
    device: torch.device | str | None = None,
    basis_device: torch.device | str | None = None,
    stop_tol: float = 1e-10,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``top_p`` eigenpairs (by absolute eigenvalue) of a symmetric operator by Arnoldi iteration.

    Schioppa et al. (2022), Algorithm 1: starting from a random unit vector (drawn in float64 on the
    CPU from ``torch.Generator().manual_seed(seed)``, so a seed gives the same start vector for
    every device and dtype),
    build an orthonormal basis ``q_0..q_n`` of the Krylov subspace ``span{q_0, H q_0, ...}`` with
    ``n_iters`` products ``H q_j``, each orthogonalised against *all* previous basis vectors with
    modified Gram-Schmidt run twice (full re-orthogonalisation), which gives the ``(n+1) x n``
    upper-Hessenberg matrix of the projected operator. Its top ``n x n`` block is symmetrised (the
    Hessian is symmetric, so in exact arithmetic it is tridiagonal) and diagonalised with ``eigh``;
    the Ritz vectors ``U = Q V`` map the small eigenvectors back to parameter space. The iteration
    stops early, with a smaller subspace, when the Krylov subspace becomes invariant (residual
    norm below ``stop_tol`` times the largest ``|H q_j|`` seen). With ``n_iters = dim`` all
    eigenvalues are recovered (up to rounding); ``top_p`` is capped at the subspace size.

    Memory: the basis holds ``n_iters + 1`` vectors of the parameter size, i.e.
    ``(n_iters + 1) x dim`` floats of ``dtype`` (plus ``top_p x dim`` for the returned
    eigenvectors) -- e.g. 201 x 125M float32 = 100 GB for OPT-125M with n = 200, hence
    ``basis_device`` (e.g. ``"cpu"``) to keep the basis, and do the orthogonalisation, off the
    accelerator, and ``params`` subsets in the callers.

    ``hvp_fn`` receives vectors of ``dtype`` on ``device`` (default: CPU). Returns
    ``(eigenvalues [p], eigenvectors [p, dim])``, sorted by decreasing ``|eigenvalue|``, the
    eigenvectors orthonormal rows on ``basis_device`` (default ``device``).
    """
    _require(n_iters >= 1, "n_iters", ">= 1", n_iters)
    _require(1 <= top_p <= n_iters, "top_p", f"between 1 and n_iters = {n_iters}", top_p)
    compute = torch.device(device) if device is not None else torch.device("cpu")
    store = torch.device(basis_device) if basis_device is not None else compute

    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=generator, dtype=torch.float64)  # same start for every dtype
    basis = [(q / torch.linalg.vector_norm(q)).to(device=store, dtype=dtype)]
    hessenberg = torch.zeros(n_iters + 1, n_iters, dtype=torch.float64)
    op_norm = 0.0
    size = n_iters
    for j in _progress(range(n_iters), progress, desc="Arnoldi"):
        w = hvp_fn(basis[j].to(compute)).to(device=store, dtype=dtype)
        if w.shape != (dim,):
            raise ValueError(f"hvp_fn returned shape {tuple(w.shape)}, expected ({dim},)")
        op_norm = max(op_norm, float(torch.linalg.vector_norm(w)))
        for _ in range(2):  # MGS + one full re-orthogonalisation pass
            for i, qi in enumerate(basis):
                coef = torch.dot(qi, w)
                hessenberg[i, j] += float(coef)
                w.sub_(coef * qi)
        beta = float(torch.linalg.vector_norm(w))
        if beta <= stop_tol * op_norm:  # invariant subspace: the Ritz values are exact
            size = j + 1
            break
        hessenberg[j + 1, j] = beta
        basis.append(w / beta)

    small = hessenberg[:size, :size]
    small = 0.5 * (small + small.T)
    eigvals, eigvecs = torch.linalg.eigh(small)
    order = torch.argsort(eigvals.abs(), descending=True)[: min(top_p, size)]
    coeffs = eigvecs[:, order].to(device=store, dtype=dtype)  # [size, p]
    vectors = torch.zeros(len(order), dim, dtype=dtype, device=store)
    for i in range(size):
        vectors.addr_(coeffs[i], basis[i])
    return eigvals[order].to(dtype), vectors


def arnoldi_influence(
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    train_grads: Mapping[str, torch.Tensor],
    test_grads: Mapping[str, torch.Tensor],
) -> np.ndarray:
    """``[K, S]`` matrix of ``sum_i (g_test_s . u_i)(g_train_k . u_i) / lambda_i`` from eigenpairs.

    The low-rank HIF of Schioppa et al. (2022), ``g_train^T U_p diag(1/lambda_p) U_p^T g_test``.
    Gradients are used as given (normalise them beforehand if wanted).
    """
    u = eigenvectors
    lam = eigenvalues.to(torch.float64).cpu()

    def project(g: torch.Tensor) -> torch.Tensor:
        return (u @ g.to(device=u.device, dtype=u.dtype)).to(torch.float64).cpu()

    train = torch.stack([project(g) for g in train_grads.values()])  # [K, p]
    test = torch.stack([project(g) for g in test_grads.values()])  # [S, p]
    return ((train / lam) @ test.T).numpy()
