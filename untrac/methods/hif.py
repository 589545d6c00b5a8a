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
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch import nn

from untrac.methods.gradients import (
    LossFn,
    _dot,
    _per_example_losses,
    _progress,
    dataset_gradients,
    eval_mode,
    flat_params,
    flatten,
    normalize_grads,
    unflatten,
)

__all__ = [
    "HvpFn",
    "hvp",
    "make_hvp_fn",
    "lissa_inverse_hvp",
    "hif_lissa",
    "arnoldi",
    "arnoldi_influence",
    "hif_arnoldi",
]

HvpFn = Callable[[torch.Tensor], torch.Tensor]
"""A map ``v -> H v`` on flat parameter-space vectors."""


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


def lissa_inverse_hvp(
    hvp_fn: HvpFn,
    v: torch.Tensor,
    iterations: int = 10,
    damping: float = 0.01,
    scale: float = 10.0,
    *,
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

    The authors' code is this recursion with ``damping = 0`` and ``scale = 1 / decay_rate``. With a
    stochastic ``hvp_fn`` (see :func:`make_hvp_fn`) every iteration uses a different Hessian sample.
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    if iterations < 0:
        raise ValueError("iterations must be >= 0")
    v = v.detach()
    h = v.clone()
    for _ in _progress(range(iterations), progress, desc="LiSSA", leave=False):
        h = v + h - (hvp_fn(h) + damping * h) / scale
    return h / scale


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
    scale: float = 10.0,
    normalize_train: bool = True,
    *,
    stochastic: bool = False,
    batches_per_call: int = 1,
    train_grads: Mapping[str, torch.Tensor] | None = None,
    test_grads: Mapping[str, torch.Tensor] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """HIF with LiSSA (paper Eq. 8, Section 5 "HIF (LISSA)"): ``[K, S]`` matrix of
    ``g_train_k^T (H + damping I)^{-1} g_test_s``, ``g_train_k`` normalised when ``normalize_train``.

    The inverse-HVP is computed once per *test* gradient with :func:`lissa_inverse_hvp`
    (``S * iterations`` HVPs over ``hessian_batches``; see :func:`make_hvp_fn` for ``stochastic``)
    and dotted with every training gradient. Precomputed (unnormalised) dataset gradients may be
    passed as ``train_grads`` / ``test_grads`` instead of the datasets.
    """
    g_train = _gradients(model, loss_fn, train_sets, train_grads, params, progress)
    g_test = _gradients(model, loss_fn, test_sets, test_grads, params, progress)
    if normalize_train:
        g_train = normalize_grads(g_train)
    out = np.zeros((len(g_train), len(g_test)), dtype=np.float64)
    for s, name in enumerate(_progress(list(g_test), progress, desc="HIF (LiSSA)")):
        hvp_fn = make_hvp_fn(model, loss_fn, hessian_batches, params, stochastic, batches_per_call)
        ihvp = lissa_inverse_hvp(hvp_fn, g_test[name], iterations, damping, scale)
        for k, gk in enumerate(g_train.values()):
            out[k, s] = _dot(gk, ihvp)
    return out


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
    if n_iters < 1 or top_p < 1:
        raise ValueError("n_iters and top_p must be >= 1")
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
    """
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
    g_train = _gradients(model, loss_fn, train_sets, train_grads, params, progress)
    g_test = _gradients(model, loss_fn, test_sets, test_grads, params, progress)
    if normalize_train:
        g_train = normalize_grads(g_train)
    return arnoldi_influence(eigenvalues, eigenvectors, g_train, g_test)
