"""Exact tests for HIF (LiSSA, Arnoldi) in untrac.methods.hif on tiny float64 models."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from untrac.methods.gradients import dataset_gradients, flatten, normalize_grads, unflatten
from untrac.methods.hif import (
    SolverDiverged,
    SolverNotConverged,
    SolverWarning,
    arnoldi,
    arnoldi_influence,
    hif_arnoldi,
    hif_lissa,
    hvp,
    lissa_inverse_hvp,
    make_hvp_fn,
    power_iteration,
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


@pytest.mark.filterwarnings("ignore::untrac.methods.hif.SolverWarning")  # indefinite H: reported as diverging
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


@pytest.mark.filterwarnings("ignore::untrac.methods.hif.SolverWarning")  # scale 50: the series barely starts
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


# ----------------------------------------------------------------------------- self-reporting solvers
def _data(n: int, seed: int, d_in: int, d_out: int, x_scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = x_scale * torch.randn(n, d_in, generator=g, dtype=torch.float64)
    return {"x": x, "y": torch.randn(n, d_out, generator=g, dtype=torch.float64)}


@pytest.fixture
def stiff() -> dict:
    """Least squares on a bias-free Linear(4, 2) with large inputs: H is positive definite with
    eigenvalues 12.4..58, so the preset's scale 10 (< lambda_max / 2) makes LiSSA diverge."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2, bias=False).double()
    hess = split(_data(16, 100, 4, 2, 6.0), [5, 7, 4])
    train = {"a": [_data(5, 1, 4, 2, 6.0)], "b": [_data(6, 2, 4, 2, 6.0)]}
    test = {"t1": [_data(4, 3, 4, 2, 6.0)], "t2": [_data(3, 4, 4, 2, 6.0)]}
    H = exact_hessian(model, cat(hess))
    eig = torch.linalg.eigvalsh(H)
    assert eig[0] > 10 and eig[-1] > 2 * 10  # PD, and the preset's scale 10 is below lambda_max / 2
    return dict(model=model, hess=hess, train=train, test=test, H=H, args=(model, sq_loss, train, test, hess))


def _exact_hif(H: torch.Tensor, g_train: dict, g_test: dict, damping: float) -> np.ndarray:
    A = H + damping * torch.eye(H.shape[0], dtype=H.dtype)
    g_train = normalize_grads(g_train)
    return np.array([[float(a @ torch.linalg.solve(A, b)) for b in g_test.values()] for a in g_train.values()])


def test_preset_scale_diverges_and_is_reported(stiff: dict) -> None:
    args = stiff["args"]
    with pytest.raises(SolverDiverged, match="diverged"):
        hif_lissa(*args, iterations=10, damping=0.01, scale=10.0, on_failure="raise")
    with pytest.warns(SolverWarning, match="2 of 2 solves diverged") as record:
        diag: dict = {}
        values = hif_lissa(*args, iterations=10, damping=0.01, scale=10.0, diagnostics=diag)
    assert len([w for w in record if issubclass(w.category, SolverWarning)]) == 1  # one per call, not per solve
    assert diag["diverged"] == 2 and diag["residual_max"] > 1e6 and diag["lambda_max"] is None
    assert np.abs(values).max() > 1e6  # what it used to return silently (exact values are below 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = hif_lissa(*args, iterations=10, damping=0.01, scale=10.0, on_failure="ignore")
    np.testing.assert_array_equal(again, values)
    assert issubclass(SolverDiverged, FloatingPointError) and issubclass(SolverWarning, RuntimeWarning)


def test_auto_scale_converges_to_the_exact_solve(stiff: dict) -> None:
    model, H = stiff["model"], stiff["H"]
    g_train = dataset_gradients(model, sq_loss, stiff["train"])
    g_test = dataset_gradients(model, sq_loss, stiff["test"])
    exact = _exact_hif(H, g_train, g_test, 0.01)
    lam = float(torch.linalg.eigvalsh(H)[-1]) + 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the preset's 10 iterations: no warning with the automatic scale
        diag: dict = {}
        short = hif_lissa(*stiff["args"], iterations=10, damping=0.01, diagnostics=diag)
        assert diag["diverged"] == 0 and diag["residual_max"] < 0.5
        assert diag["lissa_scale"] == pytest.approx(1.5 * diag["lambda_max"])
        assert diag["lambda_max"] == pytest.approx(lam, rel=0.02)
        np.testing.assert_allclose(short, exact, rtol=0.5)  # truncated, but the right order of magnitude
        got = hif_lissa(*stiff["args"], iterations=200, damping=0.01, diagnostics=diag)
    np.testing.assert_allclose(got, exact, rtol=1e-9)
    assert diag["residual_max"] < 1e-10 and 0 < diag["residual_mean"] <= diag["residual_max"]
    assert set(diag) == {"lissa_scale", "lambda_max", "residual_max", "residual_mean", "diverged"}
    assert all(isinstance(v, (int, float)) for v in diag.values())  # plain, JSON-able numbers


def test_auto_scale_lissa_on_indefinite_mlp(setup: dict) -> None:
    model, H = setup["model"], setup["H"]
    eig = torch.linalg.eigvalsh(H)
    assert eig[0] < -0.1  # indefinite: LiSSA with the preset's damping 0.01 diverges whatever the scale
    fn = make_hvp_fn(model, sq_loss, setup["hess"])
    g = setup["g_test"]["t1"]
    diag: dict = {}
    with pytest.raises(SolverDiverged):  # residual still below 1 after 10 iterations, but growing
        lissa_inverse_hvp(fn, g, iterations=10, damping=0.01, on_failure="raise", diagnostics=diag)
    assert diag["residual"] < 1 < diag["residual"] / diag["residual_min"] and diag["diverged"]
    # enough damping for a positive definite H + dI: converges to the exact solve
    damping = -float(eig[0]) + 0.5
    got = lissa_inverse_hvp(fn, g, iterations=300, damping=damping, on_failure="raise", diagnostics=diag)
    exact = torch.linalg.solve(H + damping * torch.eye(26, dtype=torch.float64), g)
    torch.testing.assert_close(got, exact, rtol=1e-8, atol=1e-10)
    assert diag["residual"] < 1e-9 and not diag["diverged"]


def test_non_convergence_is_reported(setup: dict) -> None:
    args = (setup["model"], sq_loss, setup["train"], setup["test"], setup["hess"])
    with pytest.raises(SolverNotConverged, match="tolerance 0.9") as err:  # scale far above lambda_max: GradDot
        hif_lissa(*args, iterations=3, damping=1.0, scale=1e3, on_failure="raise")
    assert not isinstance(err.value, SolverDiverged)
    with pytest.warns(SolverWarning, match="not converged"):
        hif_lissa(*args, iterations=3, damping=1.0, scale=1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hif_lissa(*args, iterations=3, damping=1.0, scale=1e3, tolerance=1.0)


def test_explicit_scale_is_the_plain_recursion_bit_for_bit(setup: dict) -> None:
    fn = make_hvp_fn(setup["model"], sq_loss, setup["hess"])
    v = setup["g_test"]["t2"]
    h = v.clone()
    for _ in range(7):
        h = v + h - (fn(h) + 0.3 * h) / 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(lissa_inverse_hvp(fn, v, 7, 0.3, 4.0), h / 4.0)


def test_power_iteration_estimates_the_top_eigenvalue(setup: dict, stiff: dict) -> None:
    for model, hess, H in ((setup["model"], setup["hess"], setup["H"]), (stiff["model"], stiff["hess"], stiff["H"])):
        fn = make_hvp_fn(model, sq_loss, hess)
        top = float(torch.linalg.eigvalsh(H).abs().max())
        like = torch.zeros(H.shape[0], dtype=torch.float64)
        est = power_iteration(fn, like, iterations=10)
        assert est <= top * (1 + 1e-12) and est == pytest.approx(top, rel=0.02)
        assert power_iteration(fn, like, iterations=10) == est  # fixed start vector
        assert power_iteration(fn, like, iterations=100) == pytest.approx(top, rel=1e-6)
    A = torch.diag(torch.tensor([-5.0, 3.0, 1.0], dtype=torch.float64))  # largest |eigenvalue| is negative
    assert power_iteration(lambda x: A @ x, torch.zeros(3, dtype=torch.float64), 60) == pytest.approx(5.0, rel=1e-9)


@pytest.fixture
def singular() -> dict:
    """Least squares on Linear(15, 1) (16 parameters) with 6 Hessian examples: H has rank 6."""
    torch.manual_seed(0)
    model = nn.Linear(15, 1).double()
    hess = [_data(6, 100, 15, 1)]
    train = {"a": [_data(5, 1, 15, 1)], "b": [_data(6, 2, 15, 1)]}
    test = {"t1": [_data(4, 3, 15, 1)], "t2": [_data(3, 4, 15, 1)]}
    return dict(model=model, hess=hess, train=train, test=test, H=exact_hessian(model, cat(hess)))


def test_arnoldi_cutoff_gives_the_pseudo_inverse(singular: dict) -> None:
    model, hess, H = singular["model"], singular["hess"], singular["H"]
    assert int(torch.linalg.matrix_rank(H)) == 6
    args = (model, sq_loss, singular["train"], singular["test"], hess)
    g_train = normalize_grads(dataset_gradients(model, sq_loss, singular["train"]))
    g_test = dataset_gradients(model, sq_loss, singular["test"])
    P = torch.linalg.pinv(H, hermitian=True)
    pinv = np.array([[float(a @ P @ b) for b in g_test.values()] for a in g_train.values()])
    diag: dict = {}
    got = hif_arnoldi(*args, n_iters=16, top_p=16, diagnostics=diag)  # default cutoff 1e-6
    np.testing.assert_allclose(got, pinv, rtol=1e-8)
    assert diag["arnoldi_kept"] == 6 and diag["arnoldi_dropped"] == 1 and diag["cutoff"] == 1e-6
    assert diag["eigenvalue_min_kept"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-6]), rel=1e-8)
    # cutoff=0: the old behaviour, dividing by a rounding-level Ritz value of the null space
    old = hif_arnoldi(*args, n_iters=16, top_p=16, cutoff=0.0, diagnostics=diag)
    vals, vecs = arnoldi(make_hvp_fn(model, sq_loss, hess), 16, 16, 16)
    np.testing.assert_array_equal(old, arnoldi_influence(vals, vecs, g_train, g_test))
    assert diag["arnoldi_dropped"] == 0 and diag["eigenvalue_min_kept"] < 1e-12
    assert np.abs(old - pinv).max() > 1e3 * np.abs(pinv).max()


def test_arnoldi_cutoff_keeps_well_conditioned_results(setup: dict) -> None:
    args = (setup["model"], sq_loss, setup["train"], setup["test"], setup["hess"])
    diag: dict = {}
    np.testing.assert_array_equal(hif_arnoldi(*args, n_iters=26, top_p=26, diagnostics=diag),
                                  hif_arnoldi(*args, n_iters=26, top_p=26, cutoff=0.0))
    assert diag["arnoldi_kept"] == 26 and diag["arnoldi_dropped"] == 0
    cut = hif_arnoldi(*args, n_iters=26, top_p=26, cutoff=0.5, diagnostics=diag)  # keeps |lambda| >= 0.92 only
    assert diag["arnoldi_kept"] == 2 and diag["arnoldi_dropped"] == 24
    np.testing.assert_allclose(cut, hif_arnoldi(*args, n_iters=26, top_p=2), rtol=1e-7)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda a, fn, v: lissa_inverse_hvp(fn, v, iterations=-1), "iterations"),
        (lambda a, fn, v: hif_lissa(*a, iterations=0), "iterations"),
        (lambda a, fn, v: hif_lissa(*a, damping=-0.1), "damping"),
        (lambda a, fn, v: hif_lissa(*a, damping=float("nan")), "damping"),
        (lambda a, fn, v: hif_lissa(*a, scale=0.0), "scale"),
        (lambda a, fn, v: lissa_inverse_hvp(fn, v, scale=-1.0), "scale"),
        (lambda a, fn, v: hif_lissa(*a, power_iterations=0), "power_iterations"),
        (lambda a, fn, v: hif_lissa(*a, tolerance=0.0), "tolerance"),
        (lambda a, fn, v: hif_lissa(*a, on_failure="loud"), "on_failure"),
        (lambda a, fn, v: lissa_inverse_hvp(fn, v, on_failure="error"), "on_failure"),
        (lambda a, fn, v: hif_arnoldi(*a, n_iters=0, top_p=1), "n_iters"),
        (lambda a, fn, v: hif_arnoldi(*a, n_iters=5, top_p=0), "top_p"),
        (lambda a, fn, v: hif_arnoldi(*a, n_iters=5, top_p=6), "top_p"),
        (lambda a, fn, v: arnoldi(fn, 26, n_iters=3, top_p=4), "top_p"),
        (lambda a, fn, v: hif_arnoldi(*a, cutoff=-1e-6), "cutoff"),
    ],
)
def test_bad_arguments_name_the_argument(setup: dict, call, name: str) -> None:
    args = (setup["model"], sq_loss, setup["train"], setup["test"], setup["hess"])
    calls = []
    fn = make_hvp_fn(setup["model"], sq_loss, setup["hess"])
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call(args, lambda x: calls.append(1) or fn(x), setup["g_test"]["t1"])
    assert not calls  # rejected before any Hessian-vector product
