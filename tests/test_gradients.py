"""Exact tests for GradDot / GradCos / TracIn (untrac.methods.gradients) on tiny float64 models."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from untrac.methods.gradients import (
    dataset_gradient,
    dataset_gradients,
    flat_params,
    flatten,
    grad_cos,
    grad_dot,
    normalize_grads,
    tracin,
    unflatten,
)


# ----------------------------------------------------------------------------- helpers
def mlp(seed: int, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers).double()


def sq_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example squared error, shape [B]."""
    return 0.5 * ((model(batch["x"]) - batch["y"]) ** 2).sum(-1)


def make_data(n: int, seed: int, d_in: int = 3, d_out: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(n, d_in, generator=g, dtype=torch.float64),
        "y": torch.randn(n, d_out, generator=g, dtype=torch.float64),
    }


def split(data: dict[str, torch.Tensor], sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    assert sum(sizes) == len(data["x"])
    out, start = [], 0
    for s in sizes:
        out.append({k: v[start : start + s] for k, v in data.items()})
        start += s
    return out


def exact_grad(model: nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """Gradient of the mean loss via torch.func on the flattened parameter vector."""
    names = [n for n, _ in model.named_parameters()]
    ps = list(model.parameters())
    theta = flatten([p.detach() for p in ps], ps)

    def f(t: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, unflatten(t, ps)))
        out = functional_call(model, params, (data["x"],))
        return (0.5 * ((out - data["y"]) ** 2).sum(-1)).mean()

    return torch.func.grad(f)(theta)


@pytest.fixture
def sets() -> tuple[dict, dict]:
    train = {
        "a": split(make_data(9, 1), [4, 5]),
        "b": split(make_data(6, 2), [1, 2, 3]),
        "c": split(make_data(5, 3), [5]),
    }
    test = {"t1": split(make_data(7, 4), [3, 4]), "t2": split(make_data(4, 5), [2, 2])}
    return train, test


# ----------------------------------------------------------------------------- dataset gradients
def test_dataset_gradient_matches_analytic_least_squares() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 1).double()
    data = make_data(16, 7, d_in=4, d_out=1)
    batches = split(data, [3, 5, 1, 7])
    # L_i = 0.5 (w.x_i + b - y_i)^2  ->  grad = mean_i r_i [x_i, 1]
    r = (data["x"] @ lin.weight.detach().T + lin.bias.detach() - data["y"]).squeeze(1)
    expected = torch.cat([(r[:, None] * data["x"]).mean(0), r.mean()[None]])
    got = dataset_gradient(lin, sq_loss, batches)
    assert got.dtype == torch.float64 and got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_unequal_batches_equal_full_batch_mean_gradient() -> None:
    model = mlp(0)
    data = make_data(16, 11)
    full = dataset_gradient(model, sq_loss, [data])
    uneven = dataset_gradient(model, sq_loss, split(data, [1, 4, 2, 9]))
    torch.testing.assert_close(uneven, full, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(full, exact_grad(model, data), rtol=1e-12, atol=1e-14)
    # a batch that is not the mean of batch means: weighting by size matters
    naive = torch.stack([dataset_gradient(model, sq_loss, [b]) for b in split(data, [1, 15])]).mean(0)
    assert not torch.allclose(naive, full)


def test_params_subset_is_a_slice_of_the_full_gradient() -> None:
    model = mlp(0)
    batches = split(make_data(8, 3), [5, 3])
    full = dataset_gradient(model, sq_loss, batches)
    last_w = model[2].weight
    sub = dataset_gradient(model, sq_loss, batches, params=[last_w])
    offset = sum(p.numel() for p in list(model.parameters())[:2])
    torch.testing.assert_close(sub, full[offset : offset + last_w.numel()], rtol=0, atol=0)
    assert len(flat_params(model)) == 4


def test_eval_mode_restored_and_model_untouched() -> None:
    model = mlp(0, dropout=0.9)
    model.train()
    model[1].eval()  # a submodule with its own mode must keep it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = split(make_data(8, 3), [5, 3])
    with torch.no_grad():  # the caller's no_grad must not break the computation
        g1 = dataset_gradient(model, sq_loss, batches)
    g2 = dataset_gradient(model, sq_loss, batches)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)  # no dropout noise: eval mode
    no_dropout = mlp(0)
    no_dropout.load_state_dict(model.state_dict())
    torch.testing.assert_close(g1, dataset_gradient(no_dropout, sq_loss, batches), rtol=0, atol=0)
    assert model.training and model[0].training and not model[1].training and model[3].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_bad_inputs_raise() -> None:
    model = mlp(0)
    with pytest.raises(ValueError, match="per-example"):
        dataset_gradient(model, lambda m, b: sq_loss(m, b).mean(), [make_data(4, 0)])
    with pytest.raises(ValueError, match="no examples"):
        dataset_gradient(model, sq_loss, [])


# ----------------------------------------------------------------------------- GradDot / GradCos
def test_grad_dot_and_cos_hand_computed() -> None:
    train = {"a": torch.tensor([1.0, 2.0, 0.0]), "b": torch.tensor([0.0, -1.0, 3.0])}
    test = {"x": torch.tensor([2.0, 0.0, 1.0]), "y": torch.tensor([1.0, 1.0, 1.0]), "z": torch.zeros(3)}
    dot = grad_dot(train, test)
    assert dot.shape == (2, 3)
    np.testing.assert_allclose(dot, [[2.0, 3.0, 0.0], [3.0, 2.0, 0.0]], rtol=0, atol=1e-6)
    cos = grad_cos(train, test)
    expected = np.array(
        [[2 / (5**0.5 * 5**0.5), 3 / (5**0.5 * 3**0.5), 0.0], [3 / (10**0.5 * 5**0.5), 2 / (10**0.5 * 3**0.5), 0.0]]
    )
    np.testing.assert_allclose(cos, expected, rtol=1e-6)
    unit = normalize_grads(train)
    torch.testing.assert_close(torch.linalg.vector_norm(unit["a"]), torch.tensor(1.0))


def test_grad_dot_from_models(sets: tuple[dict, dict]) -> None:
    train, test = sets
    model = mlp(0)
    g_train = dataset_gradients(model, sq_loss, train)
    g_test = dataset_gradients(model, sq_loss, test)
    assert list(g_train) == ["a", "b", "c"] and list(g_test) == ["t1", "t2"]
    full = lambda batches: {k: torch.cat([b[k] for b in batches]) for k in ("x", "y")}  # noqa: E731
    dot = grad_dot(g_train, g_test)
    for k, tk in enumerate(train.values()):
        for s, ts in enumerate(test.values()):
            assert dot[k, s] == pytest.approx(float(exact_grad(model, full(tk)) @ exact_grad(model, full(ts))), rel=1e-12)


def test_grad_cos_is_scale_invariant_grad_dot_scales(sets: tuple[dict, dict]) -> None:
    train, test = sets
    model = mlp(0)
    c = 3.7
    scaled_loss = lambda m, b: c * sq_loss(m, b)  # noqa: E731
    g_train = dataset_gradients(model, sq_loss, train)
    g_test = dataset_gradients(model, sq_loss, test)
    g_train_c = dataset_gradients(model, scaled_loss, train)
    np.testing.assert_allclose(grad_cos(g_train_c, g_test), grad_cos(g_train, g_test), rtol=1e-12)
    np.testing.assert_allclose(grad_dot(g_train_c, g_test), c * grad_dot(g_train, g_test), rtol=1e-12)
    cos = grad_cos(g_train, g_test)
    assert np.all(np.abs(cos) <= 1.0)
    np.testing.assert_allclose(np.diag(grad_cos(g_train, g_train)), 1.0, rtol=1e-12)


def test_graddot_sign_is_first_order_unlearning_effect(sets: tuple[dict, dict]) -> None:
    """Eq. 9: one gradient-ascent step of size lr on Z_k raises the test loss by lr * GradDot."""
    train, test = sets
    model = mlp(0)
    g_train = dataset_gradients(model, sq_loss, train)
    g_test = dataset_gradients(model, sq_loss, test)
    dot = grad_dot(g_train, g_test)
    lr = 1e-6

    def mean_loss(m: nn.Module, batches: list) -> float:
        with torch.no_grad():
            losses = torch.cat([sq_loss(m, b) for b in batches])
        return float(losses.mean())

    for k, name in enumerate(train):
        unlearned = mlp(0)
        with torch.no_grad():
            for p, g in zip(unlearned.parameters(), unflatten(g_train[name], list(unlearned.parameters()))):
                p.add_(lr * g)  # ascent on the training loss
        for s, tname in enumerate(test):
            delta = mean_loss(unlearned, test[tname]) - mean_loss(model, test[tname])
            assert delta / lr == pytest.approx(dot[k, s], rel=1e-4, abs=1e-8)


# ----------------------------------------------------------------------------- TracIn
def _at(state: dict) -> nn.Module:
    m = mlp(0)
    m.load_state_dict(state)
    return m


def test_tracin_single_checkpoint_and_weighting(sets: tuple[dict, dict], tmp_path) -> None:
    train, test = sets
    model = mlp(0)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    c1, c2 = mlp(1).state_dict(), mlp(2).state_dict()

    def cos_at(state: dict) -> np.ndarray:
        m = _at(state)
        return grad_cos(dataset_gradients(m, sq_loss, train), dataset_gradients(m, sq_loss, test))

    def dot_at(state: dict) -> np.ndarray:
        m = _at(state)
        return grad_dot(dataset_gradients(m, sq_loss, train), dataset_gradients(m, sq_loss, test))

    t1 = tracin([c1], model, sq_loss, train, test)
    assert t1.shape == (3, 2)
    np.testing.assert_allclose(t1, cos_at(c1), rtol=1e-12)
    np.testing.assert_allclose(
        tracin([c1], model, sq_loss, train, test, learning_rates=[0.3], normalize=False), 0.3 * dot_at(c1), rtol=1e-12
    )
    t2 = tracin([c2], model, sq_loss, train, test)
    np.testing.assert_allclose(tracin([c1, c2], model, sq_loss, train, test), t1 + t2, rtol=1e-12)
    np.testing.assert_allclose(
        tracin([c1, c2], model, sq_loss, train, test, learning_rates=[0.5, 2.0]), 0.5 * t1 + 2.0 * t2, rtol=1e-12
    )
    np.testing.assert_allclose(
        tracin([c1, c2], model, sq_loss, train, test, learning_rates=[0.5, 2.0], normalize=False),
        0.5 * dot_at(c1) + 2.0 * dot_at(c2),
        rtol=1e-12,
    )
    # checkpoints given as paths to saved state_dicts
    torch.save(c1, tmp_path / "c1.pt")
    np.testing.assert_allclose(tracin([tmp_path / "c1.pt"], model, sq_loss, train, test), t1, rtol=1e-12)
    # the caller's model is never modified
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="learning rates"):
        tracin([c1, c2], model, sq_loss, train, test, learning_rates=[1.0])


def test_tracin_params_subset_maps_onto_checkpoint(sets: tuple[dict, dict]) -> None:
    train, test = sets
    model = mlp(0)
    c1 = mlp(1).state_dict()
    got = tracin([c1], model, sq_loss, train, test, params=[model[2].weight], normalize=False)
    m = _at(c1)
    expected = grad_dot(
        dataset_gradients(m, sq_loss, train, params=[m[2].weight]),
        dataset_gradients(m, sq_loss, test, params=[m[2].weight]),
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="not parameters"):
        tracin([c1], model, sq_loss, train, test, params=[mlp(3)[0].weight])
