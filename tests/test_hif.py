"""Exact tests for HIF (LiSSA, Arnoldi) in untrac.methods.hif on tiny float64 models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from untrac.methods.gradients import dataset_gradients, flatten, normalize_grads, unflatten
from untrac.methods.hif import (
    arnoldi,
    arnoldi_influence,
    hif_arnoldi,
    hif_lissa,
    hvp,
    lissa_inverse_hvp,
    make_hvp_fn,
)


# ----------------------------------------------------------------------------- helpers
def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()  # 26 parameters


def sq_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return 0.5 * ((model(batch["x"]) - batch["y"]) ** 2).sum(-1)


def make_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(n, 3, generator=g, dtype=torch.float64), "y": torch.randn(n, 2, generator=g, dtype=torch.float64)}


def split(data: dict[str, torch.Tensor], sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    out, start = [], 0
    for s in sizes:
        out.append({k: v[start : start + s] for k, v in data.items()})
        start += s
    return out


def cat(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def exact_hessian(model: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Dense Hessian of the mean loss w.r.t. the flattened parameters (torch.autograd.functional)."""
    names = [n for n, _ in model.named_parameters()]
    ps = list(model.parameters())
    theta = flatten([p.detach() for p in ps], ps)

    def f(t: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, dict(zip(names, unflatten(t, ps))), (data["x"],))
        return (0.5 * ((out - data["y"]) ** 2).sum(-1)).mean()

    return torch.autograd.functional.hessian(f, theta)


def by_abs(values: torch.Tensor) -> torch.Tensor:
    return values[torch.argsort(values.abs(), descending=True)]


@pytest.fixture
def setup() -> dict:
    model = mlp(0)
    hess_batches = split(make_data(16, 100), [5, 7, 4])
    train = {"a": split(make_data(9, 1), [4, 5]), "b": split(make_data(6, 2), [6]), "c": split(make_data(5, 3), [2, 3])}
    test = {"t1": split(make_data(7, 4), [3, 4]), "t2": split(make_data(4, 5), [4])}
    H = exact_hessian(model, cat(hess_batches))
    g_train = dataset_gradients(model, sq_loss, train)
    g_test = dataset_gradients(model, sq_loss, test)
    return dict(model=model, hess=hess_batches, train=train, test=test, H=H, g_train=g_train, g_test=g_test)


# ----------------------------------------------------------------------------- HVP
def test_hvp_matches_exact_hessian(setup: dict) -> None:
    model, H = setup["model"], setup["H"]
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = hvp(model, sq_loss, setup["hess"], v)
    torch.testing.assert_close(got, H @ v, rtol=1e-10, atol=1e-12)
    assert torch.linalg.matrix_norm(H - H.T) < 1e-12
    # a parameter subset gives the corresponding block of the Hessian
    w = model[2].weight
    offset = sum(p.numel() for p in list(model.parameters())[:2])
    block = H[offset : offset + w.numel(), offset : offset + w.numel()]
    vs = v[: w.numel()]
    torch.testing.assert_close(hvp(model, sq_loss, setup["hess"], vs, params=[w]), block @ vs, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in model.parameters())


def test_hvp_of_loss_linear_in_params_is_zero() -> None:
    lin = nn.Linear(3, 1).double()
    batch = make_data(4, 0)
    v = torch.ones(4, dtype=torch.float64)
    out = hvp(lin, lambda m, b: m(b["x"]).squeeze(1), [batch], v)
    torch.testing.assert_close(out, torch.zeros(4, dtype=torch.float64))


def test_stochastic_hvp_fn_cycles_through_batches(setup: dict) -> None:
    model = setup["model"]
    b1, b2, b3 = setup["hess"]
    v = torch.randn(26, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fn = make_hvp_fn(model, sq_loss, [b1, b2, b3], stochastic=True)
    for batch in [b1, b2, b3, b1]:
        torch.testing.assert_close(fn(v), exact_hessian(model, batch) @ v, rtol=1e-10, atol=1e-12)
    fn2 = make_hvp_fn(model, sq_loss, [b1, b2, b3], stochastic=True, batches_per_call=2)
    torch.testing.assert_close(fn2(v), exact_hessian(model, cat([b1, b2])) @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fn2(v), exact_hessian(model, cat([b3, b1])) @ v, rtol=1e-10, atol=1e-12)
    full = make_hvp_fn(model, sq_loss, setup["hess"])
    torch.testing.assert_close(full(v), setup["H"] @ v, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- LiSSA
def _truncated_neumann(A: torch.Tensor, v: torch.Tensor, iterations: int, scale: float) -> torch.Tensor:
    """(1/scale) sum_{i=0}^{T} (I - A/scale)^i v, built with explicit matrices."""
    M = torch.eye(A.shape[0], dtype=A.dtype) - A / scale
    total, term = v.clone(), v.clone()
    for _ in range(iterations):
        term = M @ term
        total = total + term
    return total / scale


def test_lissa_on_matrix_converges_and_matches_series() -> None:
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.linspace(0.5, 4.0, 10, dtype=torch.float64)) @ Q.T
    v = torch.randn(10, generator=g, dtype=torch.float64)
    damping, scale = 0.1, 5.0
    solve = torch.linalg.solve(A + damping * torch.eye(10, dtype=torch.float64), v)
    got = lissa_inverse_hvp(lambda x: A @ x, v, iterations=400, damping=damping, scale=scale)
    torch.testing.assert_close(got, solve, rtol=1e-10, atol=1e-12)
    A_d = A + damping * torch.eye(10, dtype=torch.float64)
    for t in (0, 1, 10):
        got_t = lissa_inverse_hvp(lambda x: A @ x, v, iterations=t, damping=damping, scale=scale)
        torch.testing.assert_close(got_t, _truncated_neumann(A_d, v, t, scale), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(lissa_inverse_hvp(lambda x: A @ x, v, 0, damping, scale), v / scale)


def _lissa_settings(H: torch.Tensor) -> tuple[float, float, int]:
    """Damping making H + dI well-conditioned and PD, a scale putting its spectrum in (0, 1], and T."""
    eig = torch.linalg.eigvalsh(H)
    damping = max(0.0, -float(eig[0])) + 0.1 * float(eig[-1])
    scale = float(eig[-1]) + damping
    rate = 1.0 - (float(eig[0]) + damping) / scale
    iterations = math.ceil(math.log(1e-13) / math.log(rate))
    assert iterations < 2000
    return damping, scale, iterations


def test_lissa_on_mlp_matches_solve(setup: dict) -> None:
    model, H = setup["model"], setup["H"]
    damping, scale, iterations = _lissa_settings(H)
    g = setup["g_test"]["t1"]
    fn = make_hvp_fn(model, sq_loss, setup["hess"])
    got = lissa_inverse_hvp(fn, g, iterations=iterations, damping=damping, scale=scale)
    expected = torch.linalg.solve(H + damping * torch.eye(26, dtype=torch.float64), g)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-10)


def test_hif_lissa_equals_exact_formula(setup: dict) -> None:
    model, H = setup["model"], setup["H"]
    g_train = normalize_grads(setup["g_train"])
    g_test = setup["g_test"]
    A = H + 0.01 * torch.eye(26, dtype=torch.float64)
    # paper settings (10 iterations): exactly the truncated Neumann series
    scale = float(torch.linalg.eigvalsh(A)[-1]) * 1.5
    got = hif_lissa(model, sq_loss, setup["train"], setup["test"], setup["hess"], iterations=10, damping=0.01, scale=scale)
    expected = np.array(
        [[float(gk @ _truncated_neumann(A, gs, 10, scale)) for gs in g_test.values()] for gk in g_train.values()]
    )
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # converged: g_train^T (H + dI)^{-1} g_test with normalised training gradients
    damping, scale, iterations = _lissa_settings(H)
    A = H + damping * torch.eye(26, dtype=torch.float64)
    got = hif_lissa(
        model, sq_loss, setup["train"], setup["test"], setup["hess"], iterations=iterations, damping=damping, scale=scale
    )
    expected = np.array(
        [[float(gk @ torch.linalg.solve(A, gs)) for gs in g_test.values()] for gk in g_train.values()]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # unnormalised variant and precomputed gradients
    raw = hif_lissa(
        model, sq_loss, None, None, setup["hess"], iterations=iterations, damping=damping, scale=scale,
        normalize_train=False, train_grads=setup["g_train"], test_grads=g_test,
    )
    norms = np.array([float(torch.linalg.vector_norm(g)) for g in setup["g_train"].values()])
    np.testing.assert_allclose(raw, got * norms[:, None], rtol=1e-10)


def test_stochastic_hif_lissa_is_deterministic(setup: dict) -> None:
    args = (setup["model"], sq_loss, setup["train"], setup["test"], setup["hess"])
    a = hif_lissa(*args, iterations=5, scale=50.0, stochastic=True)
    b = hif_lissa(*args, iterations=5, scale=50.0, stochastic=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, hif_lissa(*args, iterations=5, scale=50.0))


# ----------------------------------------------------------------------------- Arnoldi
def _spectrum_matrix(dim: int, top: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    rest = torch.rand(dim - len(top), generator=g, dtype=torch.float64) * 2 - 1
    lam = torch.cat([torch.tensor(top, dtype=torch.float64), rest])
    return Q @ torch.diag(lam) @ Q.T, lam, Q


def test_arnoldi_on_matrix_top_eigenpairs() -> None:
    A, lam, Q = _spectrum_matrix(60, [50.0, -30.0, 20.0])
    vals, vecs = arnoldi(lambda v: A @ v, 60, n_iters=20, top_p=3, seed=0)
    torch.testing.assert_close(vals, torch.tensor([50.0, -30.0, 20.0], dtype=torch.float64), rtol=1e-8, atol=0)
    assert vecs.shape == (3, 60)
    overlaps = (vecs @ Q[:, :3]).abs()
    torch.testing.assert_close(overlaps, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-6)
    # full Krylov space: every eigenvalue
    all_vals, all_vecs = arnoldi(lambda v: A @ v, 60, n_iters=60, top_p=60, seed=1)
    torch.testing.assert_close(all_vals, by_abs(lam), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(all_vecs @ all_vecs.T, torch.eye(60, dtype=torch.float64), rtol=0, atol=1e-9)


def test_arnoldi_stops_on_invariant_subspace() -> None:
    A = torch.diag(torch.tensor([3.0, -2.0, 1.0, 1.0, 1.0], dtype=torch.float64))  # 3 distinct eigenvalues
    vals, vecs = arnoldi(lambda v: A @ v, 5, n_iters=5, top_p=5, seed=0)
    assert vals.shape == (3,) and vecs.shape == (3, 5)
    torch.testing.assert_close(vals, torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_arnoldi_on_mlp_hessian(setup: dict) -> None:
    model, H = setup["model"], setup["H"]
    exact = by_abs(torch.linalg.eigvalsh(H))
    fn = make_hvp_fn(model, sq_loss, setup["hess"])
    vals, vecs = arnoldi(fn, 26, n_iters=26, top_p=26, seed=0)
    torch.testing.assert_close(vals, exact, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(vecs @ H @ vecs.T, torch.diag(vals), rtol=0, atol=1e-9)
    top_vals, _ = arnoldi(fn, 26, n_iters=15, top_p=3, seed=0)
    torch.testing.assert_close(top_vals, exact[:3], rtol=1e-6, atol=0)


def test_hif_arnoldi_matches_exact_low_rank_formula(setup: dict) -> None:
    model, H = setup["model"], setup["H"]
    lam, U = torch.linalg.eigh(H)
    order = torch.argsort(lam.abs(), descending=True)
    p = 4
    assert abs(lam[order[p - 1]]) > 1.01 * abs(lam[order[p]])  # well-defined top-p subspace
    lam_p, U_p = lam[order[:p]], U[:, order[:p]]
    g_train = normalize_grads(setup["g_train"])
    expected = np.array(
        [[float((gk @ U_p) / lam_p @ (U_p.T @ gs)) for gs in setup["g_test"].values()] for gk in g_train.values()]
    )
    got = hif_arnoldi(model, sq_loss, setup["train"], setup["test"], setup["hess"], n_iters=26, top_p=p)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-7)
    # all eigenpairs: the exact inverse Hessian (H is invertible here)
    full = hif_arnoldi(model, sq_loss, setup["train"], setup["test"], setup["hess"], n_iters=26, top_p=26)
    inv = np.array(
        [[float(gk @ torch.linalg.solve(H, gs)) for gs in setup["g_test"].values()] for gk in g_train.values()]
    )
    np.testing.assert_allclose(full, inv, rtol=1e-5)
    # arnoldi_influence on precomputed gradients, unnormalised
    vals, vecs = arnoldi(make_hvp_fn(model, sq_loss, setup["hess"]), 26, 26, p)
    raw = arnoldi_influence(vals, vecs, setup["g_train"], setup["g_test"])
    norms = np.array([float(torch.linalg.vector_norm(g)) for g in setup["g_train"].values()])
    np.testing.assert_allclose(raw, expected * norms[:, None], rtol=1e-7)


def test_seeded_runs_are_deterministic(setup: dict) -> None:
    fn = make_hvp_fn(setup["model"], sq_loss, setup["hess"])
    v1, u1 = arnoldi(fn, 26, n_iters=10, top_p=4, seed=3)
    v2, u2 = arnoldi(fn, 26, n_iters=10, top_p=4, seed=3)
    assert torch.equal(v1, v2) and torch.equal(u1, u2)
    v3, _ = arnoldi(fn, 26, n_iters=10, top_p=4, seed=4)
    assert not torch.equal(v1, v3)
    args = (setup["model"], sq_loss, setup["train"], setup["test"], setup["hess"])
    np.testing.assert_array_equal(hif_arnoldi(*args, n_iters=10, top_p=4, seed=7), hif_arnoldi(*args, n_iters=10, top_p=4, seed=7))
